//! The broker's error type and its one mapping to gRPC status codes.
//!
//! Every failure a client can see passes through [`BrokerError`]; `From<BrokerError> for Status`
//! below is the only place that picks a gRPC code, and it has no catch-all arm, so a new variant
//! forces a decision. The code tells the client what to do: INVALID_ARGUMENT, NOT_FOUND,
//! ALREADY_EXISTS and FAILED_PRECONDITION mean "retrying the same call will not help";
//! UNAVAILABLE means "the deployment had a problem, retry (maybe elsewhere)".

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, PoisonError};

use tonic::{Code, Status};

use crate::store::StoreError;

/// A failure of a broker operation, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The request itself is malformed; `field` names the offending request field.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// Request field path, e.g. `messages[2].fields[0].name`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The consumer group the request names does not exist on that stream (NOGROUP): what a
    /// member that may create its group recovers from.
    #[error("consumer group `{group}` does not exist on stream `{stream}`")]
    NoSuchGroup {
        /// Stream named by the request.
        stream: String,
        /// Group named by the request.
        group: String,
    },
    /// A stream, topic or consumer the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request would create something that exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well-formed but the data is not in a state that allows it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The stream the request names does not exist.
    #[error("stream `{stream}` does not exist")]
    NoSuchStream {
        /// The stream, as the client named it.
        stream: String,
    },
    /// The caller's principal lacks a permission: on `stream`, or (`None`) on every stream.
    #[error("principal `{principal}` lacks `{permission}` on {}", on_what(.stream.as_deref()))]
    NotPermitted {
        /// The principal's name.
        principal: String,
        /// The permission, as the principals file spells it.
        permission: String,
        /// The stream it was needed on; `None`: a listing needing it somewhere.
        stream: Option<String>,
    },
    /// Redis's ACL refused a command (NOPERM): keeps the store's error, which names the Redis
    /// user and command the operator must grant.
    #[error(transparent)]
    RedisDenied(StoreError),
    /// The call carries no credentials, or ones no principal has.
    #[error("{0}")]
    Unauthenticated(String),
    /// The client's deadline (`grpc-timeout`) passed before the call finished.
    #[error("the call's deadline ({0:?}) passed before it finished")]
    DeadlineExceeded(std::time::Duration),
    /// A limit on open subscriptions was reached: the broker's (`principal` `None`) or one
    /// principal's.
    #[error("{}", subscription_limit(*.open, .principal.as_deref()))]
    SubscriptionLimit {
        /// Subscriptions open now, the limit.
        open: usize,
        /// Whose limit: `None` for the broker's (`--max-subscriptions`).
        principal: Option<String>,
    },
    /// A feature of an API we serve (Pub/Sub's) that streamgate does not offer; the message
    /// names the field or call.
    #[error("{0}")]
    Unimplemented(String),
    /// Redis could not be reached or is not ready; the call may be retried. Keeps the store's
    /// error and its source chain for the logs.
    #[error(transparent)]
    Unavailable(StoreError),
    /// The server is shutting down; reconnect (to another instance).
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// Something that should not happen (an unexpected Redis reply); details are in the logs.
    #[error("{0}")]
    Internal(String),
}

fn on_what(stream: Option<&str>) -> String {
    match stream {
        Some(stream) => format!("stream `{stream}`"),
        None => "every stream".to_owned(),
    }
}

fn subscription_limit(open: usize, principal: Option<&str>) -> String {
    match principal {
        None => {
            format!("this broker has {open} subscriptions open, its limit (--max-subscriptions)")
        }
        Some(principal) => format!(
            "principal `{principal}` has {open} subscriptions open, its limit \
             (--max-subscriptions-per-principal)"
        ),
    }
}

impl BrokerError {
    /// An INVALID_ARGUMENT naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl ToString) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<StoreError> for BrokerError {
    fn from(err: StoreError) -> Self {
        crate::ops::metrics::store_error(err.kind());
        match err {
            StoreError::NoSuchGroup { stream, group } => Self::NoSuchGroup { stream, group },
            StoreError::NoSuchStream { stream } => Self::NoSuchStream { stream },
            StoreError::GroupExists { .. } | StoreError::TopicExists { .. } => {
                Self::AlreadyExists(err.to_string())
            }
            StoreError::WrongType { .. } | StoreError::IdNotIncreasing { .. } => {
                Self::FailedPrecondition(err.to_string())
            }
            StoreError::Rejected(_) => Self::InvalidArgument {
                field: "request".into(),
                reason: err.to_string(),
            },
            StoreError::PermissionDenied {
                ref user,
                ref command,
                ref detail,
            } => {
                log_acl_refusal_once(user, command, detail);
                Self::RedisDenied(err)
            }
            StoreError::Unavailable { .. } => {
                // Not a warning per failed call: during an outage that would be one line per
                // request. Operators learn of the outage from the health check's log line (once
                // per change) and from each waiting subscription (at most once a second).
                tracing::debug!(error = %chain(&err), "redis unavailable");
                Self::Unavailable(err)
            }
            StoreError::Unexpected(_) => {
                tracing::error!(error = %err, "unexpected redis reply");
                Self::Internal(err.to_string())
            }
        }
    }
}

/// An error and its sources, `: `-separated, for a log line that says everything.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // redis-rs repeats a cause's text in its own; say it once.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Logs an ACL refusal the first time each (user, command) pair is refused: an operator needs to
/// hear of it, once, not once per call.
fn log_acl_refusal_once(user: &str, command: &str, detail: &str) {
    static LOGGED: LazyLock<Mutex<HashSet<(String, String)>>> = LazyLock::new(Mutex::default);
    let first = LOGGED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert((user.to_owned(), command.to_owned()));
    if first {
        tracing::warn!(
            redis_user = user,
            command,
            detail,
            "redis refused a command for lack of permission (NOPERM); grant it in the user's ACL (ACL SETUSER) or calls that need it fail with PERMISSION_DENIED (logged once per command)"
        );
    }
}

impl From<BrokerError> for Status {
    fn from(err: BrokerError) -> Self {
        let code = match &err {
            BrokerError::InvalidArgument { .. } => Code::InvalidArgument,
            BrokerError::NoSuchGroup { .. }
            | BrokerError::NoSuchStream { .. }
            | BrokerError::NotFound(_) => Code::NotFound,
            BrokerError::AlreadyExists(_) => Code::AlreadyExists,
            BrokerError::FailedPrecondition(_) => Code::FailedPrecondition,
            BrokerError::SubscriptionLimit { .. } => Code::ResourceExhausted,
            BrokerError::Unimplemented(_) => Code::Unimplemented,
            BrokerError::NotPermitted { .. } | BrokerError::RedisDenied(_) => {
                Code::PermissionDenied
            }
            BrokerError::Unauthenticated(_) => Code::Unauthenticated,
            BrokerError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            BrokerError::Unavailable(_) | BrokerError::ShuttingDown => Code::Unavailable,
            BrokerError::Internal(_) => Code::Internal,
        };
        // Inside the call's `rpc` span, so the line names the method, stream and group.
        tracing::debug!(code = ?code, error = %err, "call failed");
        Status::new(code, err.to_string())
    }
}

impl From<StoreError> for Status {
    /// Through [`BrokerError`], so that the code is still chosen in one place.
    fn from(err: StoreError) -> Self {
        BrokerError::from(err).into()
    }
}

/// Shorthand for broker results.
pub type BrokerResult<T> = Result<T, BrokerError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_actionable_codes() {
        let cases = [
            (
                StoreError::NoSuchGroup {
                    stream: "s".into(),
                    group: "g".into(),
                },
                Code::NotFound,
            ),
            (
                StoreError::NoSuchStream { stream: "s".into() },
                Code::NotFound,
            ),
            (
                StoreError::GroupExists {
                    stream: "s".into(),
                    group: "g".into(),
                },
                Code::AlreadyExists,
            ),
            (
                StoreError::WrongType { key: "s".into() },
                Code::FailedPrecondition,
            ),
            (
                StoreError::IdNotIncreasing { stream: "s".into() },
                Code::FailedPrecondition,
            ),
            (
                StoreError::Rejected("ERR syntax".into()),
                Code::InvalidArgument,
            ),
            (StoreError::Unexpected("odd".into()), Code::Internal),
            (
                StoreError::PermissionDenied {
                    user: "team-a".into(),
                    command: "XADD".into(),
                    detail: "no permissions to access one of the keys".into(),
                },
                Code::PermissionDenied,
            ),
        ];
        for (err, code) in cases {
            let status = Status::from(BrokerError::from(err));
            assert_eq!(status.code(), code, "{status:?}");
        }
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(BrokerError::invalid(
            "messages[1].fields",
            "must not be empty",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid messages[1].fields: must not be empty"
        );
    }
}
