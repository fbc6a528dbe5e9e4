//! How names become keys under a prefix, and keys names again (see the module docs of
//! [`namespaced`](super)): the prefix in front, and on a Redis Cluster inside the hash tag too.

/// The prefix and where it goes.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
    /// A Redis Cluster: the prefix goes inside hash tags too.
    in_tags: bool,
}

/// Where the hash tag of `key` is, as Redis finds it: the first `{`, the first `}` after it,
/// something between them. `(open, close)` byte offsets of the braces.
fn hash_tag(key: &str) -> Option<(usize, usize)> {
    let open = key.find('{')?;
    let close = open + 1 + key[open + 1..].find('}')?;
    (close > open + 1).then_some((open, close))
}

/// Escapes glob metacharacters so that the prefix matches only itself in SCAN MATCH.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Keys {
    /// `prefix` (may be empty) in front of every key; on a `cluster`, inside tags as well.
    pub(super) fn new(prefix: String, cluster: bool) -> Self {
        Self {
            in_tags: cluster && !prefix.is_empty(),
            prefix,
        }
    }

    /// The prefix.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of `name`.
    pub(super) fn key(&self, name: &str) -> String {
        self.prefixed(name, &self.prefix)
    }

    /// A SCAN MATCH pattern for the keys whose names match `pattern`.
    pub(super) fn pattern(&self, pattern: &str) -> String {
        self.prefixed(pattern, &glob_escape(&self.prefix))
    }

    /// `name` under `prefix` (the prefix itself, or its escaped form for a pattern).
    fn prefixed(&self, name: &str, prefix: &str) -> String {
        match hash_tag(name) {
            Some((open, _)) if self.in_tags => {
                format!("{prefix}{}{prefix}{}", &name[..=open], &name[open + 1..])
            }
            _ => format!("{prefix}{name}"),
        }
    }

    /// The name of `key` (itself when it is not under the prefix).
    pub(super) fn name(&self, key: String) -> String {
        let Some(name) = key.strip_prefix(&self.prefix) else {
            return key;
        };
        match hash_tag(name) {
            Some((open, close))
                if self.in_tags
                    && name[open + 1..close].starts_with(&self.prefix)
                    && close > open + 1 + self.prefix.len() =>
            {
                format!(
                    "{}{}",
                    &name[..=open],
                    &name[open + 1 + self.prefix.len()..]
                )
            }
            _ => name.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_the_prefix_match_only_themselves() {
        assert_eq!(glob_escape("team[a]*"), "team\\[a\\]\\*");
        assert_eq!(glob_escape("plain:"), "plain:");
    }

    #[test]
    fn on_a_cluster_the_prefix_goes_inside_hash_tags_and_comes_out_again() {
        let cluster = Keys::new("team:".into(), true);
        for (name, key) in [
            ("orders", "team:orders"),
            ("{orders}:dlq", "team:{team:orders}:dlq"),
            (
                "{orders}:ordering:billing",
                "team:{team:orders}:ordering:billing",
            ),
            ("a.{shop}.b", "team:a.{team:shop}.b"),
            // No tag (empty, or unclosed): the prefix only in front.
            ("a{}b", "team:a{}b"),
            ("x{team:", "team:x{team:"),
            // A tag that starts like the prefix keeps it.
            ("{team:x}", "team:{team:team:x}"),
        ] {
            assert_eq!(cluster.key(name), key);
            assert_eq!(cluster.name(key.to_owned()), name);
        }
        // What the broker derives from an untagged stream shares the stream's slot.
        let slot = crate::store::key_slot(&cluster.key("orders"));
        for derived in ["{orders}:dlq", "{orders}:ordering-held:billing"] {
            assert_eq!(crate::store::key_slot(&cluster.key(derived)), slot);
        }
        // Off a cluster (and without a prefix) names only get the prefix in front.
        let single = Keys::new("team:".into(), false);
        assert_eq!(single.key("{orders}:dlq"), "team:{orders}:dlq");
        let bare = Keys::new(String::new(), true);
        assert_eq!(bare.key("{orders}:dlq"), "{orders}:dlq");
    }
}
