//! `task-scheduler console`: the operator console's page on loopback, and a forwarding
//! proxy for every other path (the API calls the page makes), authenticated with the
//! operator's credentials: SigV4 from the default AWS credential chain for API Gateway, or
//! `TASK_SCHEDULER_TOKEN` for a local server. The credentials stay in this process: the
//! browser's own `Authorization` (and cookies) are never forwarded, and the page never sees
//! what is sent in their place.
//!
//! Because anything it forwards is signed, only requests from the page itself are
//! forwarded: the `Host` must be the address it listens on (a page of another site whose
//! name was rebound to 127.0.0.1 is refused), and a browser's cross-site request (`Origin`
//! of another site, `Sec-Fetch-Site` other than `same-origin`) is refused with `403`.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::Request,
    response::{IntoResponse, Response},
};
use clap::Args;
use http::{HeaderMap, HeaderName, StatusCode, header};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::client::upstream::{EndpointArgs, REQUEST_TIMEOUT, Upstream};

/// The largest request body forwarded: the API's own cap (256 KiB) and room for its
/// JSON escaping; anything larger is refused here with `413`, not sent.
const MAX_REQUEST_BODY: usize = 512 * 1024;
/// The largest answer forwarded: a page of tasks is at most 5,000,000 bytes.
const MAX_RESPONSE_BODY: usize = 8 * 1024 * 1024;
/// The request headers the API reads; nothing else of the browser's goes out (its
/// `Authorization`, cookies, hop-by-hop headers and the rest stay here).
const FORWARDED_REQUEST_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("idempotency-key"),
];
/// The response headers the page may need; hop-by-hop headers and cookies are not passed back.
const FORWARDED_RESPONSE_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::LOCATION,
    header::RETRY_AFTER,
    header::CACHE_CONTROL,
    header::WWW_AUTHENTICATE,
];

/// `task-scheduler console`.
#[derive(Args, Debug)]
pub(crate) struct ConsoleArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// The loopback address to serve the console on (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:3001", value_parser = loopback)]
    listen: SocketAddr,
}

fn loopback(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|e| format!("{e}: give an address such as 127.0.0.1:3001"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{}: the console listens on loopback only (127.0.0.1 or ::1): it forwards with your credentials",
            addr.ip()
        ));
    }
    Ok(addr)
}

struct Proxy {
    upstream: Upstream,
    /// `127.0.0.1:PORT` etc.: the `Host` values a request from the page carries.
    hosts: Vec<String>,
}

pub(crate) async fn run(args: ConsoleArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let upstream = Upstream::new(&args.endpoint).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let port = addr.port();
    let hosts = vec![
        addr.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ];
    info!(
        %addr,
        endpoint = upstream.base(),
        "listening on http://{addr}: open http://{addr}/console"
    );
    let proxy = Arc::new(Proxy { upstream, hosts });
    let app = shared::console::router().fallback(move |req: Request| {
        let proxy = proxy.clone();
        async move { forward(&proxy, req).await }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn header_str<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Why a request is not one of the page's own, if it is not.
fn refusal(proxy: &Proxy, headers: &HeaderMap) -> Option<&'static str> {
    let Some(host) = header_str(headers, &header::HOST) else {
        return Some("no Host");
    };
    if !proxy.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return Some("Host is not the console's address");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = format!("http://{host}");
        if origin.as_bytes() != own.as_bytes() {
            return Some("a request from another origin");
        }
    }
    if let Some(site) = header_str(headers, &HeaderName::from_static("sec-fetch-site"))
        && site != "same-origin"
        && site != "none"
    {
        return Some("a cross-site request");
    }
    None
}

async fn forward(proxy: &Proxy, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(why) = refusal(proxy, &parts.headers) {
        warn!(path = parts.uri.path(), why, "refused");
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("console proxy: {why}"),
        );
    }
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("console proxy: a request body is at most {MAX_REQUEST_BODY} bytes"),
            );
        }
    };
    let mut headers = HeaderMap::new();
    for name in FORWARDED_REQUEST_HEADERS {
        for v in parts.headers.get_all(&name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let resp = match proxy
        .upstream
        .send(parts.method.clone(), &path, headers, body)
        .await
    {
        Ok(r) => r,
        Err(e) => return unreachable_upstream(&e),
    };
    let status = resp.status();
    let mut out_headers = HeaderMap::new();
    for name in FORWARDED_RESPONSE_HEADERS {
        for v in resp.headers().get_all(&name) {
            out_headers.append(name.clone(), v.clone());
        }
    }
    let body = match read_capped(resp).await {
        Ok(b) => b,
        Err(e) => return unreachable_upstream(&e),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    response
}

async fn read_capped(mut resp: reqwest::Response) -> anyhow::Result<Bytes> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > MAX_RESPONSE_BODY {
            anyhow::bail!("the API's answer is over {MAX_RESPONSE_BODY} bytes");
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.into())
}

fn unreachable_upstream(e: &anyhow::Error) -> Response {
    let timeout = e
        .chain()
        .filter_map(|c| c.downcast_ref::<reqwest::Error>())
        .any(reqwest::Error::is_timeout);
    warn!(error = format!("{e:#}"), "forwarding failed");
    if timeout {
        error(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            format!("console proxy: the API did not answer within {REQUEST_TIMEOUT:?}"),
        )
    } else {
        error(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("console proxy: {e:#}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listens() {
        assert!(loopback("127.0.0.1:0").is_ok());
        assert!(loopback("[::1]:3001").is_ok());
        assert!(loopback("0.0.0.0:3001").is_err());
        assert!(loopback("192.168.1.2:3001").is_err());
        assert!(loopback("localhost").is_err());
    }
}
