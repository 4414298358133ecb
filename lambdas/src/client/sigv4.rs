//! SigV4 for API Gateway (service `execute-api`), with the SDK's signer and the default
//! credential chain (environment, `AWS_PROFILE` and the shared files, web identity, the
//! container and instance roles), so the credentials an operator uses for the AWS CLI work.

use std::time::SystemTime;

use anyhow::{Context, anyhow};
use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use axum::body::Bytes;

/// API Gateway's signing name.
const SERVICE: &str = "execute-api";

/// Signs requests for one region with the chain's credentials (refreshed as they expire:
/// the chain's provider caches them).
pub(crate) struct Signer {
    credentials: SharedCredentialsProvider,
    region: String,
}

impl Signer {
    /// `region`, else the chain's (`AWS_REGION`, the profile's `region`).
    pub(crate) async fn from_chain(region: Option<String>) -> anyhow::Result<Self> {
        let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let region = region
            .or_else(|| config.region().map(|r| r.to_string()))
            .context(
                "SigV4 needs a region: an execute-api endpoint, --region, AWS_REGION or the profile's region",
            )?;
        let credentials = config
            .credentials_provider()
            .context("no AWS credential provider configured")?;
        Ok(Self {
            credentials,
            region,
        })
    }

    /// Adds `Authorization`, `X-Amz-Date` (and `X-Amz-Security-Token` for temporary
    /// credentials) to `req`, signing its method, path, query, headers and body.
    pub(crate) async fn sign(&self, req: &mut http::Request<Bytes>) -> anyhow::Result<()> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| anyhow!("no AWS credentials: {e}"))?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .context("SigV4 parameters")?
            .into();
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| Ok((k.as_str(), v.to_str()?)))
            .collect::<Result<Vec<_>, http::header::ToStrError>>()
            .context("a header that is not text cannot be signed")?;
        let uri = req.uri().to_string();
        let signable = SignableRequest::new(
            req.method().as_str(),
            uri,
            headers.into_iter(),
            SignableBody::Bytes(req.body()),
        )
        .context("SigV4: the request")?;
        let (instructions, _signature) = sign(signable, &params)
            .context("SigV4 signing")?
            .into_parts();
        instructions.apply_to_request_http1x(req);
        Ok(())
    }
}
