//! A stub of API Gateway's IAM authorization: it checks each request's SigV4 signature the
//! way API Gateway does, and forwards what passes to a local `task-scheduler serve` with a
//! bearer token. The signature is recomputed with the `aws-sigv4` crate from the request as
//! it arrived (method, path, query, the headers it says it signed, the body) and the stub's
//! known credentials, and compared in constant time. A missing, malformed, wrong or expired
//! signature is `403`, with API Gateway's kind of body (`{"message": ...}`), and nothing is
//! forwarded.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use aws_credential_types::Credentials;
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};
use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{NaiveDateTime, TimeDelta, Utc};
use subtle::ConstantTimeEq;

/// The stub's one principal.
pub const ACCESS_KEY_ID: &str = "AKIDSTUBEXAMPLE00001";
pub const SECRET_ACCESS_KEY: &str = "stub/secret/key/that/the/signer/must/know";
/// How far a request's `X-Amz-Date` may be from now, either way (API Gateway: 5 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// What the stub did with one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Every header as it arrived.
    pub headers: HeaderMap,
    /// `None` when verified and forwarded; else why it was refused (403).
    pub refused: Option<String>,
}

struct State {
    region: String,
    secret: String,
    upstream: String,
    token: Option<String>,
    client: reqwest::Client,
    seen: Mutex<Vec<Seen>>,
}

/// The stub on 127.0.0.1:0.
pub struct SigV4Stub {
    addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl SigV4Stub {
    /// Verifies signatures for `region` made with [`ACCESS_KEY_ID`] and [`SECRET_ACCESS_KEY`],
    /// and forwards to `upstream` (`http://127.0.0.1:PORT`) with `Bearer token`.
    pub async fn start(region: &str, upstream: &str, token: Option<&str>) -> Self {
        Self::start_with_secret(region, SECRET_ACCESS_KEY, upstream, token).await
    }

    /// The same, believing the principal's secret is `secret`.
    pub async fn start_with_secret(
        region: &str,
        secret: &str,
        upstream: &str,
        token: Option<&str>,
    ) -> Self {
        let state = Arc::new(State {
            region: region.to_owned(),
            secret: secret.to_owned(),
            upstream: upstream.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            seen: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stub");
        let addr = listener.local_addr().expect("stub address");
        let app = {
            let state = state.clone();
            axum::Router::new().fallback(move |req: Request| {
                let state = state.clone();
                async move { handle(&state, req).await }
            })
        };
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("stub serves");
        });
        Self {
            addr,
            state,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The requests it verified and forwarded.
    pub fn forwarded(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.refused.is_none())
            .collect()
    }
}

impl Drop for SigV4Stub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn forbidden(message: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "message": message }).to_string(),
    )
        .into_response()
}

/// `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=a;b, Signature=hex`.
struct Authorization<'a> {
    credential: Vec<&'a str>,
    signed_headers: Vec<&'a str>,
}

fn parse_authorization(v: &str) -> Result<Authorization<'_>, String> {
    let rest = v
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("Authorization is not AWS4-HMAC-SHA256")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", c)) => credential = Some(c),
            Some(("SignedHeaders", s)) => signed = Some(s),
            Some(("Signature", s)) => signature = Some(s),
            _ => return Err(format!("Authorization: unexpected {part:?}")),
        }
    }
    let credential: Vec<&str> = credential.ok_or("no Credential")?.split('/').collect();
    signature.ok_or("no Signature")?;
    Ok(Authorization {
        credential,
        signed_headers: signed.ok_or("no SignedHeaders")?.split(';').collect(),
    })
}

/// `Ok(())` when the request carries a valid signature of the stub's principal.
fn verify(
    state: &State,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let given = headers
        .get(header::AUTHORIZATION)
        .ok_or("Missing Authentication Token")?
        .to_str()
        .map_err(|_| "Authorization is not text")?;
    let auth = parse_authorization(given)?;
    let [akid, date, region, service, "aws4_request"] = auth.credential[..] else {
        return Err("Credential is not AKID/date/region/service/aws4_request".into());
    };
    if akid != ACCESS_KEY_ID {
        return Err("The security token included in the request is invalid.".into());
    }
    if region != state.region || service != "execute-api" {
        return Err(format!(
            "Credential should be scoped to a valid region and service ({region}/{service})"
        ));
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or("no X-Amz-Date")?;
    let time = NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| "X-Amz-Date is not yyyyMMddTHHmmssZ")?
        .and_utc();
    if !amz_date.starts_with(date) {
        return Err("the Credential's date is not X-Amz-Date's".into());
    }
    let skew = TimeDelta::from_std(MAX_SKEW).expect("small");
    let now = Utc::now();
    if time < now - skew || time > now + skew {
        return Err(format!(
            "Signature expired: {amz_date} is now earlier than the allowed window"
        ));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.contains(&required) {
            return Err(format!("{required} is not signed"));
        }
    }
    // The headers it says it signed, as they arrived.
    let mut signed = Vec::new();
    for name in &auth.signed_headers {
        for v in headers.get_all(*name) {
            signed.push((
                *name,
                v.to_str().map_err(|_| format!("{name} is not text"))?,
            ));
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or("no Host")?;
    let identity = Credentials::new(ACCESS_KEY_ID, &state.secret, None, None, "sigv4-stub").into();
    let mut settings = SigningSettings::default();
    // Sign exactly what the request says it signed.
    settings.excluded_headers = None;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&state.region)
        .name("execute-api")
        .time(SystemTime::from(time))
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        method,
        format!("http://{host}{path}"),
        signed.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (expected_headers, _) = instructions.into_parts();
    let expected = expected_headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case("authorization"))
        .map(|h| h.value().to_owned())
        .ok_or("the signer made no Authorization")?;
    if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        Ok(())
    } else {
        Err("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".into())
    }
}

async fn handle(state: &State, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 10 * 1024 * 1024).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "too large").into_response();
    };
    let method = parts.method.as_str().to_owned();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let verdict = verify(state, &method, &path, &parts.headers, &body);
    state.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        headers: parts.headers.clone(),
        refused: verdict.clone().err(),
    });
    if let Err(why) = verdict {
        return forbidden(&why);
    }
    let mut out = state
        .client
        .request(parts.method.clone(), format!("{}{path}", state.upstream))
        .body(body);
    for name in [
        header::CONTENT_TYPE,
        header::ACCEPT,
        header::HeaderName::from_static("idempotency-key"),
    ] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v);
        }
    }
    if let Some(t) = &state.token {
        out = out.bearer_auth(t);
    }
    match out.send().await {
        Ok(resp) => {
            let status = resp.status();
            let mut headers = HeaderMap::new();
            for name in [header::CONTENT_TYPE, header::LOCATION] {
                if let Some(v) = resp.headers().get(&name) {
                    headers.insert(name, v.clone());
                }
            }
            let bytes: Bytes = resp.bytes().await.unwrap_or_default();
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            *r.headers_mut() = headers;
            r
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            e.to_string(),
        )
            .into_response(),
    }
}
