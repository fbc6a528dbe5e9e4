//! Subscription filters: a small expression language over a message's fields. Messages that
//! do not match are acknowledged for the group without being delivered.
//!
//! ```text
//! filter     = or
//! or         = and { "OR" and }
//! and        = unary { "AND" unary }
//! unary      = ( "NOT" | "-" ) unary | "(" or ")" | condition
//! condition  = name "=" string          equality
//!            | name "!=" string         inequality (a missing field is not equal)
//!            | "hasPrefix(" name "," string ")"
//!            | "has(" name ")"          presence
//! name       = identifier | string      identifier: letters, digits, `_`, `.`, `-`,
//!                                       not starting with a digit or `-`
//! string     = '"' { character | '\"' | '\\' } '"'
//! ```
//! Keywords are upper case, as in Pub/Sub's filter syntax. Values are compared as bytes with
//! the field's value (the first field of that name). Example:
//! `type = "order" AND (region = "eu" OR hasPrefix(sku, "X-")) AND NOT has(test)`.

use super::Field;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `name = "value"`.
    Equals(String, String),
    /// `name != "value"`.
    NotEquals(String, String),
    /// `hasPrefix(name, "prefix")`.
    HasPrefix(String, String),
    /// `has(name)`.
    Has(String),
    /// `NOT x`.
    Not(Box<Filter>),
    /// `x AND y AND ...`.
    All(Vec<Filter>),
    /// `x OR y OR ...`.
    Any(Vec<Filter>),
}

/// Why a filter does not parse, and where (a 1-based character position).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {expected}")]
pub struct FilterError {
    /// 1-based position of the character where parsing failed.
    pub position: usize,
    /// What was expected there.
    pub expected: String,
}

/// Most nesting of parentheses and NOTs: a filter is small; a deep one is a mistake or an attack.
const MAX_DEPTH: usize = 32;

impl Filter {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let mut parser = Parser {
            chars: text.chars().collect(),
            at: 0,
            depth: 0,
        };
        let filter = parser.or()?;
        parser.skip_space();
        if parser.at < parser.chars.len() {
            return Err(parser.error("AND, OR or the end of the filter"));
        }
        Ok(filter)
    }

    /// Whether a message with `fields` matches.
    pub fn matches(&self, fields: &[Field]) -> bool {
        let value = |name: &str| fields.iter().find(|f| f.name == name).map(|f| &f.value[..]);
        match self {
            Self::Equals(name, v) => value(name) == Some(v.as_bytes()),
            Self::NotEquals(name, v) => value(name).is_some_and(|f| f != v.as_bytes()),
            Self::HasPrefix(name, p) => value(name).is_some_and(|f| f.starts_with(p.as_bytes())),
            Self::Has(name) => value(name).is_some(),
            Self::Not(inner) => !inner.matches(fields),
            Self::All(all) => all.iter().all(|f| f.matches(fields)),
            Self::Any(any) => any.iter().any(|f| f.matches(fields)),
        }
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn error(&self, expected: &str) -> FilterError {
        let found = match self.chars.get(self.at) {
            Some(c) => format!("`{c}`"),
            None => "the end".into(),
        };
        FilterError {
            position: self.at + 1,
            expected: format!("expected {expected}, found {found}"),
        }
    }

    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    /// Consumes `word` if it comes next (a keyword must not run on into a name).
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_space();
        let end = self.at + word.chars().count();
        let matches = self
            .chars
            .get(self.at..end)
            .is_some_and(|s| s.iter().copied().eq(word.chars()));
        let boundary = !word.chars().all(char::is_alphabetic)
            || self.chars.get(end).is_none_or(|c| !is_name_char(*c));
        if matches && boundary {
            self.at = end;
        }
        matches && boundary
    }

    fn expect(&mut self, word: &str) -> Result<(), FilterError> {
        if self.keyword(word) {
            Ok(())
        } else {
            Err(self.error(&format!("`{word}`")))
        }
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut any = vec![self.and()?];
        while self.keyword("OR") {
            any.push(self.and()?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Filter::Any(any)
        })
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut all = vec![self.unary()?];
        while self.keyword("AND") {
            all.push(self.unary()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Filter::All(all)
        })
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(&format!("at most {MAX_DEPTH} levels of nesting")));
        }
        let filter = if self.keyword("NOT") || self.keyword("-") {
            Filter::Not(Box::new(self.unary()?))
        } else if self.keyword("(") {
            let inner = self.or()?;
            self.expect(")")?;
            inner
        } else {
            self.condition()?
        };
        self.depth -= 1;
        Ok(filter)
    }

    fn condition(&mut self) -> Result<Filter, FilterError> {
        if self.keyword("hasPrefix(") {
            let name = self.name()?;
            self.expect(",")?;
            let prefix = self.string()?;
            self.expect(")")?;
            return Ok(Filter::HasPrefix(name, prefix));
        }
        if self.keyword("has(") {
            let name = self.name()?;
            self.expect(")")?;
            return Ok(Filter::Has(name));
        }
        let name = self.name()?;
        if self.keyword("!=") {
            return Ok(Filter::NotEquals(name, self.string()?));
        }
        if self.keyword("=") {
            return Ok(Filter::Equals(name, self.string()?));
        }
        Err(self.error("`=` or `!=`"))
    }

    fn name(&mut self) -> Result<String, FilterError> {
        self.skip_space();
        match self.chars.get(self.at) {
            Some('"') => self.string(),
            Some(c) if is_name_char(*c) && !c.is_ascii_digit() && *c != '-' => {
                let start = self.at;
                while self.chars.get(self.at).is_some_and(|c| is_name_char(*c)) {
                    self.at += 1;
                }
                Ok(self.chars[start..self.at].iter().collect())
            }
            _ => Err(self.error("a field name")),
        }
    }

    fn string(&mut self) -> Result<String, FilterError> {
        self.skip_space();
        if self.chars.get(self.at) != Some(&'"') {
            return Err(self.error("a quoted string"));
        }
        self.at += 1;
        let mut out = String::new();
        loop {
            match self.chars.get(self.at) {
                None => return Err(self.error("a closing `\"`")),
                Some('"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some('\\') => match self.chars.get(self.at + 1) {
                    Some(c @ ('"' | '\\')) => {
                        out.push(*c);
                        self.at += 2;
                    }
                    _ => {
                        self.at += 1;
                        return Err(self.error("`\\\"` or `\\\\` after a backslash"));
                    }
                },
                Some(c) => {
                    out.push(*c);
                    self.at += 1;
                }
            }
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<Field> {
        pairs
            .iter()
            .map(|(n, v)| Field {
                name: (*n).into(),
                value: v.as_bytes().to_vec().into(),
            })
            .collect()
    }

    #[test]
    fn conditions_combine_with_and_or_not_and_parentheses() {
        let filter = Filter::parse(
            r#"type = "order" AND (region = "eu" OR hasPrefix(sku, "X-")) AND NOT has(test)"#,
        )
        .unwrap();
        assert!(filter.matches(&fields(&[("type", "order"), ("region", "eu")])));
        assert!(filter.matches(&fields(&[("type", "order"), ("sku", "X-1")])));
        assert!(!filter.matches(&fields(&[("type", "order"), ("sku", "Y-1")])));
        assert!(!filter.matches(&fields(&[
            ("type", "order"),
            ("region", "eu"),
            ("test", "")
        ])));
        assert!(!filter.matches(&fields(&[("type", "refund"), ("region", "eu")])));
        // AND binds tighter than OR; `-` is NOT; a quoted name may hold anything.
        let filter = Filter::parse(r#"a = "1" OR b = "2" AND -"odd name" != "x""#).unwrap();
        assert!(filter.matches(&fields(&[("a", "1")])));
        assert!(filter.matches(&fields(&[("b", "2"), ("odd name", "x")])));
        assert!(filter.matches(&fields(&[("b", "2")])));
        assert!(!filter.matches(&fields(&[("b", "2"), ("odd name", "y")])));
        // A missing field is neither equal nor unequal.
        let unequal = Filter::parse(r#"k != "v""#).unwrap();
        assert!(!unequal.matches(&[]));
        assert!(
            Filter::parse(r#"q = "say \"hi\" \\ ok""#)
                .unwrap()
                .matches(&fields(&[("q", r#"say "hi" \ ok"#)]))
        );
    }

    #[test]
    fn a_malformed_filter_names_the_position_and_what_was_expected() {
        let cases = [
            ("", 1, "a field name"),
            ("a =", 4, "a quoted string"),
            (r#"a = "x" AND"#, 12, "a field name"),
            (r#"a = "x" b = "y""#, 9, "AND, OR"),
            (r#"(a = "x""#, 9, "`)`"),
            (r#"a = "x"#, 7, "closing"),
            (r#"a ~ "x""#, 3, "`=` or `!=`"),
            (r#"ANDROID = "x" and b = "y""#, 15, "AND, OR"),
        ];
        for (text, position, expected) in cases {
            let err = Filter::parse(text).unwrap_err();
            assert_eq!(err.position, position, "{text}: {err}");
            assert!(err.expected.contains(expected), "{text}: {err}");
        }
        // A keyword-like prefix is still a name.
        assert!(Filter::parse(r#"ANDROID = "x""#).is_ok());
        let deep = format!("{}a = \"x\"{}", "(".repeat(40), ")".repeat(40));
        assert!(
            Filter::parse(&deep)
                .unwrap_err()
                .expected
                .contains("nesting")
        );
    }
}
