//! Where the client and the console proxy send their requests, and how they authenticate:
//! a bearer token from `TASK_SCHEDULER_TOKEN` for a local server, SigV4 (service
//! `execute-api`) for API Gateway.

use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::Bytes;
use clap::Args;
use http::{HeaderMap, HeaderValue, Method, header};
use url::Url;

/// How long a request may take in all (API Gateway's own limit is 30 s), and to connect.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The options every client command shares.
#[derive(Args, Debug, Clone)]
pub(crate) struct EndpointArgs {
    /// The API's base URL: a local server, or https://<api-id>.execute-api.<region>.amazonaws.com
    #[arg(
        long,
        env = "TASK_SCHEDULER_ENDPOINT",
        default_value = "http://127.0.0.1:3000",
        value_parser = parse_endpoint,
        global = true
    )]
    pub(crate) endpoint: Url,
    /// Sign requests with SigV4 (service execute-api) using the default AWS credential chain;
    /// implied when the endpoint is an API Gateway URL
    #[arg(long, global = true)]
    pub(crate) aws: bool,
    /// The region to sign for [default: the endpoint's, else AWS_REGION or the profile's]
    #[arg(long, env = "AWS_REGION", global = true)]
    pub(crate) region: Option<String>,
}

fn parse_endpoint(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("an http or https URL with a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("a base URL without query, fragment or credentials".into());
    }
    Ok(url)
}

/// The region of an API Gateway host, `<api-id>.execute-api.<region>.amazonaws.com`.
pub(crate) fn execute_api_region(url: &Url) -> Option<&str> {
    let host = url.host_str()?;
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [id, "execute-api", region, "amazonaws", "com"] if !id.is_empty() && !region.is_empty() => {
            Some(region)
        }
        _ => None,
    }
}

/// How requests are authenticated.
enum Auth {
    None,
    Bearer(HeaderValue),
    #[cfg(feature = "aws")]
    SigV4(super::sigv4::Signer),
}

/// The API: its base URL, an HTTP client, and the authentication.
pub(crate) struct Upstream {
    base: String,
    http: reqwest::Client,
    auth: Auth,
}

impl Upstream {
    /// From the options and the environment (`TASK_SCHEDULER_TOKEN`, the AWS credential chain).
    pub(crate) async fn new(args: &EndpointArgs) -> anyhow::Result<Self> {
        let host_region = execute_api_region(&args.endpoint);
        let auth = if args.aws || host_region.is_some() {
            #[cfg(feature = "aws")]
            {
                let region = host_region
                    .map(str::to_owned)
                    .or_else(|| args.region.clone());
                Auth::SigV4(super::sigv4::Signer::from_chain(region).await?)
            }
            #[cfg(not(feature = "aws"))]
            {
                let _ = &args.region;
                bail!("SigV4 signing needs a build with the `aws` feature");
            }
        } else {
            match std::env::var("TASK_SCHEDULER_TOKEN") {
                Ok(t) if !t.is_empty() => {
                    let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                        .context("TASK_SCHEDULER_TOKEN is not a valid header value")?;
                    v.set_sensitive(true);
                    Auth::Bearer(v)
                }
                _ => Auth::None,
            }
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: args.endpoint.as_str().trim_end_matches('/').to_owned(),
            http,
            auth,
        })
    }

    /// The base URL, for messages.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method path_and_query` with `headers` and `body`, authenticated. `headers` must
    /// not carry authentication: it is added here.
    pub(crate) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> anyhow::Result<reqwest::Response> {
        if !path_and_query.starts_with('/') {
            bail!("a path must start with /: {path_and_query}");
        }
        let url = format!("{}{path_and_query}", self.base);
        let mut req = http::Request::builder()
            .method(method)
            .uri(&url)
            .body(body)
            .context("building the request")?;
        *req.headers_mut() = headers;
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(v) => {
                req.headers_mut().insert(header::AUTHORIZATION, v.clone());
            }
            #[cfg(feature = "aws")]
            Auth::SigV4(signer) => signer.sign(&mut req).await?,
        }
        let req = reqwest::Request::try_from(req).context("building the request")?;
        Ok(self.http.execute(req).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_comes_from_an_api_gateway_host_only() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            execute_api_region(&u("https://a1b2c3.execute-api.eu-west-3.amazonaws.com")),
            Some("eu-west-3")
        );
        assert_eq!(
            execute_api_region(&u(
                "https://a1b2c3.execute-api.us-east-1.amazonaws.com/prod"
            )),
            Some("us-east-1")
        );
        assert_eq!(execute_api_region(&u("http://127.0.0.1:3000")), None);
        assert_eq!(
            execute_api_region(&u(
                "https://execute-api.us-east-1.amazonaws.com.evil.example"
            )),
            None
        );
        assert_eq!(
            execute_api_region(&u("https://x.lambda-url.us-east-1.on.aws")),
            None
        );
    }

    #[test]
    fn an_endpoint_is_a_plain_base_url() {
        assert!(parse_endpoint("http://127.0.0.1:3000").is_ok());
        assert!(parse_endpoint("https://a.execute-api.us-east-1.amazonaws.com/prod").is_ok());
        assert!(parse_endpoint("127.0.0.1:3000").is_err());
        assert!(parse_endpoint("ftp://example.com").is_err());
        assert!(parse_endpoint("http://u:p@example.com").is_err());
        assert!(parse_endpoint("http://example.com/?a=1").is_err());
    }
}
