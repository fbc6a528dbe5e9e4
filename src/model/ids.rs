//! Stream entry ids and positions: `<ms>-<seq>`, `*`, `$`, range bounds. Parsing is strict, so
//! malformed input is refused before any command is sent.

use std::fmt;
use std::str::FromStr;

/// A stream entry id, `<milliseconds>-<sequence>`, ordered the way Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EntryId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// The smallest id, `0-0`: "from the beginning" as a start position.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// Builds an id from its two parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why a piece of text is not a valid id or position; shown to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {expected}")]
pub struct ParseIdError {
    text: String,
    expected: &'static str,
}

impl ParseIdError {
    fn new(text: &str, expected: &'static str) -> Self {
        // Long garbage is cut so that an error message stays readable.
        let text: String = text.chars().take(64).collect();
        Self { text, expected }
    }
}

const ID_EXPECTED: &str = "a stream id (`<ms>-<seq>` or `<ms>`, decimal)";

fn parse_part(part: &str) -> Option<u64> {
    // `u64::from_str` accepts a leading `+`; Redis does not, and neither do we.
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

impl FromStr for EntryId {
    type Err = ParseIdError;

    /// Accepts `<ms>-<seq>` and `<ms>` (sequence 0), as Redis does in ranges and XADD.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError::new(text, ID_EXPECTED);
        match text.split_once('-') {
            Some((ms, seq)) => Ok(Self::new(
                parse_part(ms).ok_or_else(err)?,
                parse_part(seq).ok_or_else(err)?,
            )),
            None => Ok(Self::new(parse_part(text).ok_or_else(err)?, 0)),
        }
    }
}

/// The id a producer asks for when appending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NewEntryId {
    /// `*`: Redis generates the whole id.
    #[default]
    Auto,
    /// `<ms>-*`: the producer fixes the time, Redis picks the sequence.
    AutoSequence(u64),
    /// A fully explicit id.
    Explicit(EntryId),
}

impl FromStr for NewEntryId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "an entry id to append (empty or `*`, `<ms>-<seq>`, `<ms>` or `<ms>-*`, greater than 0-0)";
        match text {
            "" | "*" => Ok(Self::Auto),
            _ => {
                if let Some(ms) = text.strip_suffix("-*") {
                    return parse_part(ms)
                        .map(Self::AutoSequence)
                        .ok_or_else(|| ParseIdError::new(text, EXPECTED));
                }
                match text.parse::<EntryId>() {
                    Ok(EntryId::ZERO) | Err(_) => Err(ParseIdError::new(text, EXPECTED)),
                    Ok(id) => Ok(Self::Explicit(id)),
                }
            }
        }
    }
}

impl fmt::Display for NewEntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("*"),
            Self::AutoSequence(ms) => write!(f, "{ms}-*"),
            Self::Explicit(id) => id.fmt(f),
        }
    }
}

/// A position that may be "the stream's current end" (`$`): where a group starts, or where a
/// tailing subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartId {
    /// `$` (or empty): only entries added from now on.
    Latest,
    /// After this id (`0` means the whole stream).
    After(EntryId),
}

impl FromStr for StartId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "" | "$" => Ok(Self::Latest),
            _ => text
                .parse()
                .map(Self::After)
                .map_err(|_| ParseIdError::new(text, "a start position (`$`, `0` or a stream id)")),
        }
    }
}

impl fmt::Display for StartId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("$"),
            Self::After(id) => id.fmt(f),
        }
    }
}

/// One end of an id range (XRANGE, XPENDING).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeBound {
    /// `-` or `+`: open on this side.
    Unbounded,
    /// This id is included.
    Inclusive(EntryId),
    /// `(<id>`: this id is excluded.
    Exclusive(EntryId),
}

impl RangeBound {
    /// Parses a bound; `open` is the Redis token for "unbounded" on this side (`-` or `+`).
    pub fn parse(text: &str, open: &'static str) -> Result<Self, ParseIdError> {
        let err = || ParseIdError::new(text, "a range bound (`-`, `+`, a stream id or `(<id>`)");
        if text.is_empty() || text == open {
            return Ok(Self::Unbounded);
        }
        match text.strip_prefix('(') {
            Some(rest) => rest.parse().map(Self::Exclusive).map_err(|_| err()),
            None => text.parse().map(Self::Inclusive).map_err(|_| err()),
        }
    }

    /// The Redis argument for this bound; `open` is `-` or `+`.
    pub fn to_arg(self, open: &str) -> String {
        match self {
            Self::Unbounded => open.to_owned(),
            Self::Inclusive(id) => id.to_string(),
            Self::Exclusive(id) => format!("({id}"),
        }
    }
}

/// An id range, both ends included unless marked exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// Lower end.
    pub min: RangeBound,
    /// Upper end.
    pub max: RangeBound,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse_strictly() {
        assert_eq!("1-2".parse(), Ok(EntryId::new(1, 2)));
        assert_eq!("17".parse(), Ok(EntryId::new(17, 0)));
        for bad in [
            "",
            "1-x",
            "abc",
            "-5",
            "+5",
            "1-",
            "-",
            "1-2-3",
            "1 -2",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<EntryId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ids_order_like_redis() {
        assert!(EntryId::new(1, 9) < EntryId::new(2, 0));
        assert!(EntryId::new(2, 1) > EntryId::new(2, 0));
    }

    #[test]
    fn new_entry_ids() {
        assert_eq!("".parse(), Ok(NewEntryId::Auto));
        assert_eq!("*".parse(), Ok(NewEntryId::Auto));
        assert_eq!("5-*".parse(), Ok(NewEntryId::AutoSequence(5)));
        assert_eq!("5-1".parse(), Ok(NewEntryId::Explicit(EntryId::new(5, 1))));
        for bad in ["0-0", "0", "x-*", "5-x", "-5"] {
            assert!(bad.parse::<NewEntryId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn start_ids() {
        assert_eq!("$".parse(), Ok(StartId::Latest));
        assert_eq!("".parse(), Ok(StartId::Latest));
        assert_eq!("0".parse(), Ok(StartId::After(EntryId::ZERO)));
        assert!("latest".parse::<StartId>().is_err());
    }

    #[test]
    fn range_bounds() {
        assert_eq!(RangeBound::parse("-", "-"), Ok(RangeBound::Unbounded));
        assert_eq!(RangeBound::parse("", "+"), Ok(RangeBound::Unbounded));
        assert_eq!(
            RangeBound::parse("(3-1", "-"),
            Ok(RangeBound::Exclusive(EntryId::new(3, 1)))
        );
        assert_eq!(
            RangeBound::Exclusive(EntryId::new(3, 1)).to_arg("-"),
            "(3-1"
        );
        assert!(RangeBound::parse("+", "-").is_err());
        assert!(RangeBound::parse("((1", "-").is_err());
    }

    #[test]
    fn parse_errors_name_the_text_and_stay_short() {
        let err = "1-x".parse::<EntryId>().unwrap_err().to_string();
        assert!(err.contains("`1-x`"), "{err}");
        let long = "x".repeat(10_000);
        assert!(long.parse::<EntryId>().unwrap_err().to_string().len() < 200);
    }
}
