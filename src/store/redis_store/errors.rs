//! Redis errors into [`StoreError`], classified once, by what the caller can do next: retry
//! (UNAVAILABLE), fix the request, or ask the operator (an ACL refusal).

use redis::{Cmd, RedisError};

use crate::store::StoreError;

/// What a command was about, so that Redis's terse errors can name the user's objects.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub(super) stream: &'a str,
    pub(super) group: &'a str,
}

impl<'a> Ctx<'a> {
    pub(super) fn stream(stream: &'a str) -> Self {
        Self { stream, group: "" }
    }
    pub(super) fn group(stream: &'a str, group: &'a str) -> Self {
        Self { stream, group }
    }
}

/// The command's name (its first argument), for error messages and logs.
pub(super) fn command_name(command: &Cmd) -> String {
    match command.args_iter().next() {
        Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).into_owned(),
        _ => String::new(),
    }
}

/// True for failures of the connection itself rather than of the command.
pub(super) fn is_connection_failure(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
}

/// The one place where a Redis error becomes a [`StoreError`], by what the caller can do next.
pub(super) fn classify(err: &RedisError, ctx: Ctx<'_>) -> StoreError {
    if is_connection_failure(err) {
        return StoreError::unavailable_from(err.clone());
    }
    let detail = err.detail().unwrap_or_default();
    match err.code() {
        Some("NOGROUP") => StoreError::NoSuchGroup {
            stream: ctx.stream.to_owned(),
            group: ctx.group.to_owned(),
        },
        Some("BUSYGROUP") => StoreError::GroupExists {
            stream: ctx.stream.to_owned(),
            group: ctx.group.to_owned(),
        },
        // The command and user are filled in by `RedisStore::failed`, which knows them. A script
        // whose user may not touch a key fails with ERR, not NOPERM: the same refusal.
        Some(code)
            if code == "NOPERM"
                || (code == "ERR" && detail.contains("can't access at least one of the keys")) =>
        {
            StoreError::PermissionDenied {
                user: String::new(),
                command: String::new(),
                detail: detail.to_owned(),
            }
        }
        Some("CROSSSLOT") => StoreError::Rejected(format!(
            "{detail}: on a Redis Cluster every key one request touches must share a slot; give \
             streams read or written together one hash tag (`{{shop}}.orders`, `{{shop}}.payments`)"
        )),
        Some("WRONGTYPE") => StoreError::WrongType {
            key: ctx.stream.to_owned(),
        },
        // The deployment, not the request: retrying (later, or after failover) can succeed.
        Some("LOADING" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "BUSY") => {
            StoreError::unavailable_from(err.clone())
        }
        Some("ERR") if detail.contains("equal or smaller than the target stream top item") => {
            StoreError::IdNotIncreasing {
                stream: ctx.stream.to_owned(),
            }
        }
        Some("ERR") if detail.contains("requires the key to exist") || detail == "no such key" => {
            StoreError::NoSuchStream {
                stream: ctx.stream.to_owned(),
            }
        }
        Some("ERR") => StoreError::Rejected(detail.to_owned()),
        _ => StoreError::Unexpected(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;

    #[test]
    fn server_errors_are_classified_by_code() {
        let ctx = Ctx::group("s", "g");
        // Built from the wire form, exactly as a reply from Redis would arrive.
        let err = |text: &str| -> RedisError {
            match redis::parse_redis_value(format!("-{text}\r\n").as_bytes()) {
                Ok(Value::ServerError(err)) => err.into(),
                other => panic!("not an error reply: {other:?}"),
            }
        };
        assert!(matches!(
            classify(&err("NOGROUP No such key 's' or consumer group 'g'"), ctx),
            StoreError::NoSuchGroup { .. }
        ));
        assert!(matches!(
            classify(&err("BUSYGROUP Consumer Group name already exists"), ctx),
            StoreError::GroupExists { .. }
        ));
        assert!(matches!(
            classify(
                &err(
                    "ERR The ID specified in XADD is equal or smaller than the target stream top item"
                ),
                ctx
            ),
            StoreError::IdNotIncreasing { .. }
        ));
        assert!(matches!(
            classify(&err("LOADING Redis is loading the dataset in memory"), ctx),
            StoreError::Unavailable { .. }
        ));
        assert!(matches!(
            classify(
                &err("ERR syntax error, LIMIT cannot be used without the special ~ option"),
                ctx
            ),
            StoreError::Rejected(_)
        ));
        assert!(matches!(
            classify(
                &err(
                    "ERR The user executing the script can't access at least one of the keys mentioned in the command arguments script: 4e69, on @user_script:35."
                ),
                ctx
            ),
            StoreError::PermissionDenied { .. }
        ));
        match classify(
            &err("CROSSSLOT Keys in request don't hash to the same slot"),
            ctx,
        ) {
            StoreError::Rejected(text) => assert!(text.contains("hash tag"), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}
