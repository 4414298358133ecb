//! Who is calling. Locally: bearer tokens (`SCHEDULER_API_TOKENS`, `name:token` pairs; the
//! name is the owner). On AWS: API Gateway has already verified the IAM signature and the
//! Lambda host puts the principal in a [`Caller`] extension.

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiState, error::ApiError};
use crate::domain::{Owner, ValidationError};

/// The authenticated principal, inserted into request extensions.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub Owner);

/// A bearer token; only its SHA-256 is kept, so comparisons are constant-time over
/// equal-length digests and the token itself never sits in memory longer than parsing.
#[derive(Clone)]
pub(crate) struct ApiToken {
    owner: Owner,
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl ApiToken {
    /// Parses `SCHEDULER_API_TOKENS`: comma-separated `name:token`, tokens ≥ 16 characters.
    pub(crate) fn parse_list(s: &str) -> Result<Vec<Self>, ValidationError> {
        let field = "SCHEDULER_API_TOKENS";
        let mut out: Vec<Self> = Vec::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, token) = pair
                .split_once(':')
                .ok_or_else(|| ValidationError::new(field, "each entry must be name:token"))?;
            let owner = Owner::parse(name.trim())
                .map_err(|_| ValidationError::new(field, "a token name is empty or invalid"))?;
            if token.len() < 16 {
                return Err(ValidationError::new(
                    field,
                    format!("the token of {name} is shorter than 16 characters"),
                ));
            }
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if out
                .iter()
                .any(|t| t.owner == owner || bool::from(t.digest.ct_eq(&digest)))
            {
                return Err(ValidationError::new(
                    field,
                    format!("{name} or its token is listed twice"),
                ));
            }
            out.push(Self { owner, digest });
        }
        Ok(out)
    }
}

/// How the router authenticates requests.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// No tokens configured: every caller is the owner `local`. The local host allows this
    /// only while it listens on loopback.
    Open,
    Bearer(Vec<ApiToken>),
    /// The host (Lambda behind IAM-authorized API Gateway) supplies the [`Caller`].
    #[cfg(any(feature = "aws", test))]
    Host,
}

impl Auth {
    pub(crate) const OPEN_OWNER: &'static str = "local";

    fn authenticate(&self, req: &Request) -> Result<Owner, ApiError> {
        match self {
            Self::Open => Ok(Owner::parse(Self::OPEN_OWNER).expect("valid owner")),
            #[cfg(any(feature = "aws", test))]
            Self::Host => req
                .extensions()
                .get::<Caller>()
                .map(|c| c.0.clone())
                .ok_or_else(|| {
                    ApiError::unauthorized("missing caller identity (IAM authorization required)")
                }),
            Self::Bearer(tokens) => {
                let presented = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>"))?;
                let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
                // Compare against every token without stopping early.
                let mut found = None;
                for t in tokens {
                    if bool::from(t.digest.ct_eq(&digest)) {
                        found = Some(t.owner.clone());
                    }
                }
                found.ok_or_else(|| ApiError::unauthorized("invalid token"))
            }
        }
    }
}

pub(crate) async fn authenticate(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    let owner = match state.auth.authenticate(&req) {
        Ok(owner) => owner,
        Err(e) => return e.into_response(),
    };
    if let Some(limit) = &state.rate_limit
        && let Err(wait) = limit.check(owner.as_str())
    {
        return ApiError::rate_limited(wait).into_response();
    }
    req.extensions_mut().insert(Caller(owner));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_list_parsing() {
        let t = ApiToken::parse_list("alice:0123456789abcdef, bob:fedcba9876543210").unwrap();
        assert_eq!(t.len(), 2);
        assert!(ApiToken::parse_list("alice").is_err());
        assert!(ApiToken::parse_list("alice:short").is_err());
        assert!(ApiToken::parse_list(":0123456789abcdef").is_err());
        assert!(ApiToken::parse_list("a:0123456789abcdef,a:0123456789abcdeg").is_err());
        assert!(ApiToken::parse_list("a:0123456789abcdef,b:0123456789abcdef").is_err());
        assert!(ApiToken::parse_list("").unwrap().is_empty());
        // The token never shows in Debug output.
        assert!(!format!("{t:?}").contains("0123456789abcdef"));
    }
}
