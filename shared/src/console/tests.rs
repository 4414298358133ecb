//! The console's routes through the real Router: what each serves, its security headers, and
//! rules on the assets themselves (no inline script or style, no HTML built from strings,
//! API calls by relative path only, within the size budget).

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{ASSETS, CONTENT_SECURITY_POLICY, INDEX, router};

async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = router()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn assert_secured(path: &str, headers: &axum::http::HeaderMap) {
    for (name, want) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        assert_eq!(
            headers.get(&name).and_then(|v| v.to_str().ok()),
            Some(want),
            "{path}: {name}"
        );
    }
}

#[tokio::test]
async fn the_page_and_every_asset_are_served_with_their_type_and_security_headers() {
    for path in ["/console", "/console/"] {
        let (status, headers, body) = get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(body, INDEX);
        assert_secured(path, &headers);
    }
    for (name, media_type, content) in ASSETS {
        let path = format!("/console/assets/{name}");
        let (status, headers, body) = get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], *media_type, "{path}");
        assert_eq!(body, *content, "{path}");
        assert_secured(&path, &headers);
    }
    let (status, headers, _) = get("/console/assets/nope.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_secured("/console/assets/nope.js", &headers);
}

#[test]
fn the_policy_allows_nothing_inline_and_nothing_from_elsewhere() {
    let directives: Vec<&str> = CONTENT_SECURITY_POLICY.split("; ").collect();
    for d in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ] {
        assert!(directives.contains(&d), "{d}");
    }
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    assert!(!CONTENT_SECURITY_POLICY.contains("http"));
}

/// Every asset the page and its modules name is served, and every served asset is named.
#[test]
fn the_assets_are_exactly_those_the_page_loads() {
    let mut named: Vec<String> = Vec::new();
    let mut scan = |text: &str, prefix: &str| {
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + prefix.len()..];
            let end = rest.find(['"', '\'']).unwrap();
            named.push(rest[..end].to_owned());
        }
    };
    scan(INDEX, "/console/assets/");
    for (_, _, content) in ASSETS {
        scan(content, "from './");
    }
    named.sort();
    named.dedup();
    let mut served: Vec<String> = ASSETS.iter().map(|(n, _, _)| (*n).to_owned()).collect();
    served.sort();
    assert_eq!(named, served);
}

#[test]
fn nothing_inline_and_no_html_built_from_strings() {
    let index = INDEX.to_ascii_lowercase();
    assert_eq!(
        index.matches("<script").count(),
        index
            .matches("<script type=\"module\" src=\"/console/assets/")
            .count(),
        "every script of the page is an asset"
    );
    assert!(!index.contains("style="), "no style attribute");
    assert!(!index.contains("<style"), "no style element");
    for (i, _) in index.match_indices(" on") {
        let attr: String = index[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        assert!(
            !index[i + 1 + attr.len()..].starts_with('='),
            "inline handler {attr}"
        );
    }
    for (name, _, content) in ASSETS {
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setAttribute('style'",
            "setAttribute('on",
            "localStorage",
            "document.cookie",
        ] {
            assert!(!content.contains(banned), "{name} uses {banned}");
        }
    }
}

/// The page calls the API with relative same-origin paths, from one module: it works on the
/// local host and behind the forwarding console command alike.
#[test]
fn only_the_api_module_calls_the_api_and_by_relative_path() {
    for (name, _, content) in ASSETS {
        let fetches = content.matches("fetch(").count();
        if *name == "api.js" {
            assert_eq!(fetches, 1, "{name}");
            assert!(content.contains("fetch(path, init)"));
        } else {
            assert_eq!(fetches, 0, "{name} calls fetch");
        }
        for line in content.lines() {
            if line.contains("http://") || line.contains("https://") {
                assert!(
                    line.contains("http://www.w3.org/2000/svg"),
                    "{name}: an absolute URL: {line}"
                );
            }
        }
    }
}

#[test]
fn all_assets_together_stay_within_200_kb() {
    let total = INDEX.len() + ASSETS.iter().map(|(_, _, c)| c.len()).sum::<usize>();
    assert!(total <= 200_000, "{total} bytes");
}
