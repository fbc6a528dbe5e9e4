//! Pub/Sub resource names and the streamgate names they map to.
//!
//! - topic `projects/{project}/topics/{topic}` is the stream `{project}/{topic}`: plain stream
//!   entries any client reads, under the same permissions as a stream of that name;
//! - subscription `projects/{project}/subscriptions/{sub}` is the consumer group `{sub}` on its
//!   topic's stream, with a stored subscription (the delivery policy) and a Pub/Sub record
//!   (which topic, labels, the Pub/Sub settings kept as given).
//!
//! Ids follow Pub/Sub's rules (a letter first, then letters, digits and `-_.~+%`, 3 to 255
//! characters, not starting with `goog`), so names valid here are valid on Google's service
//! and the reverse; a `/` cannot occur in an id, so the mapping is one to one.

use std::fmt;

use crate::error::{BrokerError, BrokerResult};

/// What kind of resource a name names, as Pub/Sub's error messages call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Topic,
    Subscription,
}

impl Kind {
    fn collection(self) -> &'static str {
        match self {
            Kind::Topic => "topics",
            Kind::Subscription => "subscriptions",
        }
    }
}

/// A parsed resource name: its project and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Name {
    pub(super) kind: Kind,
    pub(super) project: String,
    pub(super) id: String,
}

impl Name {
    /// Parses `projects/{project}/{topics|subscriptions}/{id}`; INVALID_ARGUMENT naming the
    /// request field and the rule otherwise.
    pub(super) fn parse(kind: Kind, field: &str, text: &str) -> BrokerResult<Self> {
        let invalid = |why: &str| {
            BrokerError::invalid(
                field,
                format!(
                    "`{text}` is not a valid {} name: {why} (expected projects/{{project}}/{}/{{id}})",
                    kind.collection().trim_end_matches('s'),
                    kind.collection()
                ),
            )
        };
        let mut parts = text.split('/');
        let (Some("projects"), Some(project), Some(collection), Some(id), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid("wrong shape"));
        };
        if collection != kind.collection() {
            return Err(invalid(&format!(
                "`{collection}` where `{}` belongs",
                kind.collection()
            )));
        }
        check_project(project).map_err(|why| invalid(&why))?;
        check_id(id).map_err(|why| invalid(&why))?;
        Ok(Self {
            kind,
            project: project.to_owned(),
            id: id.to_owned(),
        })
    }

    /// The project of `projects/{project}` (List calls).
    pub(super) fn project(field: &str, text: &str) -> BrokerResult<String> {
        let project = text.strip_prefix("projects/").unwrap_or_default();
        check_project(project).map_err(|why| {
            BrokerError::invalid(
                field,
                format!(
                    "`{text}` is not a valid project name: {why} (expected projects/{{project}})"
                ),
            )
        })?;
        Ok(project.to_owned())
    }

    /// The stream a topic maps to; for a subscription, the key of its records.
    pub(super) fn stream(&self) -> String {
        format!("{}/{}", self.project, self.id)
    }

    /// The name of the topic whose stream is `stream` (the reverse of [`Name::stream`]).
    pub(super) fn of_stream(kind: Kind, stream: &str) -> Option<Self> {
        let (project, id) = stream.split_once('/')?;
        (check_project(project).is_ok() && check_id(id).is_ok()).then(|| Self {
            kind,
            project: project.to_owned(),
            id: id.to_owned(),
        })
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "projects/{}/{}/{}",
            self.project,
            self.kind.collection(),
            self.id
        )
    }
}

/// Project ids: not empty, at most 100 characters of letters, digits, `-`, `_`, `.` and `:`
/// (Google's ids are narrower; the emulator takes these, and so do we).
fn check_project(project: &str) -> Result<(), String> {
    if project.is_empty() {
        return Err("the project is empty".into());
    }
    if project.len() > 100 {
        return Err("the project is over 100 characters".into());
    }
    match project
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        Some(c) => Err(format!("the project holds {c:?}")),
        None => Ok(()),
    }
}

/// Pub/Sub's rule for topic and subscription ids.
fn check_id(id: &str) -> Result<(), String> {
    if !(3..=255).contains(&id.len()) {
        return Err("an id is 3 to 255 characters".into());
    }
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err("an id starts with a letter".into());
    }
    if id.starts_with("goog") {
        return Err("an id must not start with `goog`".into());
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '%')))
    {
        Some(c) => Err(format!(
            "an id holds {c:?}; allowed: letters, digits, -_.~+%"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_map_to_streams_and_back() {
        let name = Name::parse(Kind::Topic, "name", "projects/p-1/topics/orders.v2").unwrap();
        assert_eq!(name.stream(), "p-1/orders.v2");
        assert_eq!(name.to_string(), "projects/p-1/topics/orders.v2");
        assert_eq!(Name::of_stream(Kind::Topic, "p-1/orders.v2"), Some(name));
        assert_eq!(Name::of_stream(Kind::Topic, "plain-stream"), None);
    }

    #[test]
    fn bad_names_are_refused_with_the_rule() {
        for (text, why) in [
            ("projects/p/topics", "wrong shape"),
            (
                "projects/p/subscriptions/abc",
                "`subscriptions` where `topics` belongs",
            ),
            ("projects//topics/abc", "the project is empty"),
            ("projects/p/topics/ab", "3 to 255"),
            ("projects/p/topics/1abc", "starts with a letter"),
            ("projects/p/topics/google", "`goog`"),
            ("projects/p/topics/a b c", "holds ' '"),
            ("projects/p/topics/a/b", "wrong shape"),
        ] {
            let err = Name::parse(Kind::Topic, "name", text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains("name"), "{text}: {err}");
        }
    }
}
