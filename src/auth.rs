//! Who is calling, and what they may do: bearer tokens and client certificates map to
//! principals (from `--principals-file`), and each principal has allow rules per permission on
//! stream name patterns.
//!
//! Authentication happens once per call, in a tower layer in front of every service
//! ([`AuthLayer`]): it scopes the call's [`Caller`] (the task-local that
//! [`Caller::current`] reads; a copy also goes into the request's extensions), or answers
//! UNAUTHENTICATED itself. Authorization happens in the handlers, which know the streams a call
//! touches: [`Caller::require`] answers PERMISSION_DENIED naming the permission and the stream.
//! Without a principals file every call is allowed (and the broker says so at start).
//!
//! Tokens are stored as SHA-256 hashes and never logged; the file holds no secret.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::error::BrokerError;

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// Produce, ProduceStream.
    Produce,
    /// Subscribe, Fetch, Ack, Nack, ExtendDeadline.
    Consume,
    /// Admin calls that only look.
    AdminRead,
    /// Admin calls that change or delete.
    AdminWrite,
}

impl Permission {
    /// Every permission, in the order they are listed to callers.
    pub const ALL: [Permission; 4] = [
        Self::Produce,
        Self::Consume,
        Self::AdminRead,
        Self::AdminWrite,
    ];
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Produce => "produce",
            Self::Consume => "consume",
            Self::AdminRead => "admin-read",
            Self::AdminWrite => "admin-write",
        })
    }
}

/// The principals file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalsFile {
    #[serde(rename = "principal", default)]
    principals: Vec<PrincipalEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    name: String,
    /// SHA-256 (hex) of each bearer token that identifies this principal.
    #[serde(default)]
    token_sha256: Vec<String>,
    /// The Common Name of a client certificate (mTLS) that identifies this principal.
    #[serde(default)]
    cert_cn: Option<String>,
    #[serde(default)]
    allow: Vec<RuleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    permissions: Vec<Permission>,
    streams: Vec<String>,
}

/// A known caller and its rules.
#[derive(Debug)]
pub struct Principal {
    name: String,
    rules: Vec<(Vec<Permission>, Vec<glob::Pattern>)>,
}

impl Principal {
    fn allows(&self, permission: Permission, stream: &str) -> bool {
        self.rules.iter().any(|(permissions, patterns)| {
            permissions.contains(&permission) && patterns.iter().any(|p| p.matches(stream))
        })
    }

    fn allows_any(&self, permission: Permission) -> bool {
        self.rules
            .iter()
            .any(|(permissions, _)| permissions.contains(&permission))
    }
}

/// Every principal, indexed by how they identify.
#[derive(Debug, Default)]
pub struct Principals {
    by_token: HashMap<String, Arc<Principal>>,
    by_cert_cn: HashMap<String, Arc<Principal>>,
}

/// The hex SHA-256 of a token, as the principals file stores it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Principals {
    /// Reads and checks a principals file (TOML); the error names the file and the problem.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        Self::parse(&text).map_err(|err| format!("{}: {err}", path.display()))
    }

    /// Parses the TOML text of a principals file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PrincipalsFile = toml::from_str(text).map_err(|err| err.to_string())?;
        let mut principals = Self::default();
        for entry in file.principals {
            let rules = entry
                .allow
                .into_iter()
                .map(|rule| {
                    let patterns = rule
                        .streams
                        .iter()
                        .map(|p| {
                            glob::Pattern::new(p).map_err(|err| {
                                format!(
                                    "principal `{}`: bad stream pattern `{p}`: {err}",
                                    entry.name
                                )
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    Ok((rule.permissions, patterns))
                })
                .collect::<Result<_, String>>()?;
            let principal = Arc::new(Principal {
                name: entry.name.clone(),
                rules,
            });
            for hash in entry.token_sha256 {
                let hash = hash.to_ascii_lowercase();
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "principal `{}`: token_sha256 must be 64 hex digits (sha256sum of the token)",
                        entry.name
                    ));
                }
                if principals
                    .by_token
                    .insert(hash, principal.clone())
                    .is_some()
                {
                    return Err(format!(
                        "principal `{}`: a token hash is listed twice",
                        entry.name
                    ));
                }
            }
            if let Some(cn) = entry.cert_cn {
                principals.by_cert_cn.insert(cn, principal.clone());
            }
        }
        Ok(principals)
    }

    /// How many principals can sign in (for the start-up log line).
    pub fn count(&self) -> usize {
        let mut names: Vec<&str> = self
            .by_token
            .values()
            .chain(self.by_cert_cn.values())
            .map(|p| p.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }
}

/// Who is making a call.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is off: everything is allowed.
    Anyone,
    /// An authenticated principal.
    Principal(Arc<Principal>),
    /// Code running outside any call's scope (a task spawned from a handler that did not carry
    /// its caller along): allowed nothing, so that such a slip fails closed rather than open.
    Unscoped,
}

/// What an unscoped caller is told: a bug of the broker's, not of the client's.
fn unscoped() -> BrokerError {
    BrokerError::Internal(
        "this code runs outside the scope of the call it serves, so it has no caller to \
         authorize; this is a bug in streamgate"
            .into(),
    )
}

impl Caller {
    /// The name for logs and per-principal limits.
    pub fn name(&self) -> &str {
        match self {
            Self::Anyone | Self::Unscoped => "",
            Self::Principal(p) => &p.name,
        }
    }

    /// PERMISSION_DENIED unless this caller has `permission` on every one of `streams`.
    pub fn require<'a>(
        &self,
        permission: Permission,
        streams: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), BrokerError> {
        let principal = match self {
            Self::Anyone => return Ok(()),
            Self::Unscoped => return Err(unscoped()),
            Self::Principal(principal) => principal,
        };
        for stream in streams {
            if !principal.allows(permission, stream) {
                return Err(BrokerError::NotPermitted {
                    principal: principal.name.clone(),
                    permission: permission.to_string(),
                    stream: Some(stream.to_owned()),
                });
            }
        }
        Ok(())
    }

    /// For listings: whether `stream` is visible with `permission`.
    pub fn may(&self, permission: Permission, stream: &str) -> bool {
        match self {
            Self::Anyone => true,
            Self::Principal(p) => p.allows(permission, stream),
            Self::Unscoped => false,
        }
    }

    /// Whether some rule grants `permission` on some stream.
    pub fn may_any(&self, permission: Permission) -> bool {
        match self {
            Self::Anyone => true,
            Self::Principal(p) => p.allows_any(permission),
            Self::Unscoped => false,
        }
    }

    /// PERMISSION_DENIED unless some rule grants `permission` at all (a listing that would
    /// otherwise come back empty).
    pub fn require_any(&self, permission: Permission) -> Result<(), BrokerError> {
        match self {
            Self::Principal(p) if !p.allows_any(permission) => Err(BrokerError::NotPermitted {
                principal: p.name.clone(),
                permission: permission.to_string(),
                stream: None,
            }),
            Self::Unscoped => Err(unscoped()),
            _ => Ok(()),
        }
    }

    /// The caller of the call being served. [`AuthLayer`] sets it around every call the server
    /// handles (`Anyone` when authentication is off); outside that scope it is
    /// [`Unscoped`](Self::Unscoped), which may do nothing.
    pub fn current() -> Caller {
        CALLER.try_with(Caller::clone).unwrap_or(Caller::Unscoped)
    }
}

tokio::task_local! {
    /// The caller of the call whose future is being polled (set by [`AuthLayer`]).
    static CALLER: Caller;
}

/// How calls are authenticated: the principals (if any) and whether the probes need a
/// credential too.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    principals: Option<Arc<Principals>>,
    protect_probes: bool,
    public_prefix: Option<&'static str>,
}

impl AuthLayer {
    /// `principals` `None` turns authentication off.
    pub fn new(principals: Option<Principals>, protect_probes: bool) -> Self {
        Self {
            principals: principals.map(Arc::new),
            protect_probes,
            public_prefix: None,
        }
    }

    /// The same authentication, except that requests for paths under `prefix` (the console's
    /// page and scripts, which hold no data) pass without credentials. No gRPC method lives
    /// there: their paths start with a package name.
    pub fn with_public_prefix(mut self, prefix: &'static str) -> Self {
        self.public_prefix = Some(prefix);
        self
    }

    /// Whether authentication is on at all.
    pub fn is_on(&self) -> bool {
        self.principals.is_some()
    }

    fn authenticate<B>(
        &self,
        request: &tonic::codegen::http::Request<B>,
    ) -> Result<Caller, BrokerError> {
        let Some(principals) = &self.principals else {
            return Ok(Caller::Anyone);
        };
        let path = request.uri().path();
        if self.public_prefix.is_some_and(|prefix| {
            path == "/" || path.starts_with(prefix) || path == prefix.trim_end_matches('/')
        }) {
            return Ok(Caller::Anyone);
        }
        let is_probe =
            path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.");
        if is_probe && !self.protect_probes {
            return Ok(Caller::Anyone);
        }
        if let Some(header) = request.headers().get("authorization") {
            let token = header
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    BrokerError::Unauthenticated(
                        "the authorization header must be `Bearer <token>`".into(),
                    )
                })?;
            return principals
                .by_token
                .get(&hash_token(token))
                .cloned()
                .map(Caller::Principal)
                .ok_or_else(|| BrokerError::Unauthenticated("unknown token".into()));
        }
        if let Some(cn) = client_cert_cn(request) {
            return principals
                .by_cert_cn
                .get(&cn)
                .cloned()
                .map(Caller::Principal)
                .ok_or_else(|| {
                    BrokerError::Unauthenticated(format!(
                        "no principal for client certificate CN `{cn}`"
                    ))
                });
        }
        Err(BrokerError::Unauthenticated(
            "credentials required: `authorization: Bearer <token>` metadata or a client certificate"
                .into(),
        ))
    }
}

/// The Common Name of the client certificate of a TLS connection, if it sent one.
fn client_cert_cn<B>(request: &tonic::codegen::http::Request<B>) -> Option<String> {
    let info = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            auth: self.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: AuthLayer,
}

type HttpRequest<B> = tonic::codegen::http::Request<B>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S, B> tower_service::Service<HttpRequest<B>> for Authenticated<S>
where
    S: tower_service::Service<HttpRequest<B>, Response = HttpResponse>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: HttpRequest<B>) -> Self::Future {
        match self.auth.authenticate(&request) {
            Ok(caller) => {
                request.extensions_mut().insert(caller.clone());
                Box::pin(CALLER.scope(caller, self.inner.call(request)))
            }
            Err(err) => {
                tracing::info!(method = %request.uri().path(), reason = %err, "call refused: not authenticated");
                let status = tonic::Status::from(err);
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[principal]]
        name = "orders-service"
        token_sha256 = ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]
        allow = [
          { permissions = ["produce", "consume"], streams = ["orders.*"] },
          { permissions = ["admin-read"], streams = ["orders.*", "shared"] },
        ]
    "#;

    #[test]
    fn rules_allow_only_what_they_name() {
        let principals = Principals::parse(FILE).unwrap();
        // sha256("test")
        let principal = principals.by_token[&hash_token("test")].clone();
        let caller = Caller::Principal(principal);
        assert!(caller.require(Permission::Produce, ["orders.eu"]).is_ok());
        let denied = caller
            .require(Permission::Consume, ["orders.eu", "payments"])
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "principal `orders-service` lacks `consume` on stream `payments`"
        );
        assert!(
            caller
                .require(Permission::AdminWrite, ["orders.eu"])
                .is_err()
        );
        assert!(caller.may(Permission::AdminRead, "shared"));
        assert!(caller.require_any(Permission::AdminWrite).is_err());
    }

    #[test]
    fn a_bad_file_says_what_is_wrong() {
        let err = Principals::parse("[[principal]]\nname = \"x\"\ntoken_sha256 = [\"abc\"]\n")
            .unwrap_err();
        assert!(err.contains("64 hex digits"), "{err}");
        let err = Principals::parse("[[principal]]\nnme = \"x\"\n").unwrap_err();
        assert!(err.contains("nme"), "{err}");
    }

    #[tokio::test]
    async fn outside_a_call_the_caller_may_do_nothing() {
        let caller = Caller::current();
        assert!(matches!(caller, Caller::Unscoped));
        let err = caller.require(Permission::Produce, ["orders"]).unwrap_err();
        assert!(matches!(err, BrokerError::Internal(_)), "{err}");
        assert!(!caller.may(Permission::AdminRead, "orders"));
        assert!(!caller.may_any(Permission::AdminRead));
        assert!(caller.require_any(Permission::AdminRead).is_err());
        // Within a call's scope it is the call's caller.
        let inside = CALLER
            .scope(Caller::Anyone, async { Caller::current() })
            .await;
        assert!(matches!(inside, Caller::Anyone));
    }
}
