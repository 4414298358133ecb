//! The operator console (`/console`) in a real browser: Debian's `chromium`, headless, driven
//! through `chromedriver` (WebDriver, the fantoccini client), against the real
//! `task-scheduler serve` and a real webhook receiver on loopback.
//!
//! The browser tests need chromium and chromedriver, so a plain `cargo test` reports them as
//! ignored; `make test-console` installs both (apt) and runs them with `--ignored`, where a
//! missing browser or driver fails the test instead of skipping it. `CHROMIUM` and
//! `CHROMEDRIVER` name other binaries. Screenshots go to `$CONSOLE_SCREENSHOTS`, by default
//! `$TMPDIR/task-scheduler-console/` (each run overwrites the last one's).
//!
//! The security headers are checked without a browser, in every run.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use integration_tests::{App, Receiver, Reply, in_ms, rfc3339};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// How long the page gets for anything to appear: a few of its refresh periods (2 to 5 s).
const PAGE_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// The browser

struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn executable(var: &str, default: &str) -> PathBuf {
    let name = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if name.components().count() > 1 {
        return name;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file())
        .unwrap_or(name)
}

impl Browser {
    /// chromedriver on a port of its choosing, and a headless chromium session through it.
    async fn start() -> Browser {
        let driver_bin = executable("CHROMEDRIVER", "chromedriver");
        let chromium = executable("CHROMIUM", "chromium");
        for (what, path) in [("chromedriver", &driver_bin), ("chromium", &chromium)] {
            assert!(
                path.is_file(),
                "{what} not found ({}): install Debian's chromium and chromium-driver \
                 (`make test-console` does), or set {}",
                path.display(),
                what.to_uppercase()
            );
        }
        let mut cmd = Command::new(&driver_bin);
        cmd.arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group: on drop the driver and the browsers it started are
            // killed together, by that group's id.
            .process_group(0)
            .kill_on_drop(true);
        let mut driver = cmd.spawn().expect("start chromedriver");
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(line) = lines.next_line().await.expect("chromedriver output") {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').parse::<u16>().expect("a port");
                }
            }
            panic!("chromedriver exited before it listened");
        })
        .await
        .expect("chromedriver listens within 15 s");
        // Keep reading its output, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let profile = tempfile::Builder::new()
            .prefix("task-scheduler-chromium-")
            .tempdir()
            .expect("a profile directory");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // As root, chromium refuses to start with its sandbox.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session");
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// Polls `script` (a `return ...;` body) until it returns true.
    async fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() >= deadline {
                let text = self.js("return document.body.innerText;").await;
                panic!(
                    "the page did not show {what} within {PAGE_WAIT:?}; it shows:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Saves a PNG of the window as `name`.png in the screenshot directory.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = std::env::var_os("CONSOLE_SCREENSHOTS").map_or_else(
            || std::env::temp_dir().join("task-scheduler-console"),
            PathBuf::from,
        );
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await.unwrap()).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browsers chromedriver started are in its process group (close() ended them
        // already, unless a test failed before it).
        if let Some(pid) = self.driver.id() {
            // SAFETY: kill(2) on a process group this test created.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn task_due(url: &str, run_at: chrono::DateTime<chrono::Utc>) -> Value {
    json!({"action": "webhook", "payload": {"url": url, "data": {"n": 1}}, "run_at": rfc3339(run_at)})
}

fn id_of(task: &Value) -> String {
    task["task_id"].as_str().expect("task_id").to_owned()
}

/// A row of a table on the page, by task id, in `status` (the row's `data-status`).
fn row_in_status(id: &str, status: &str) -> String {
    format!(
        "return !!document.querySelector('#tasks-table tr[data-task-id=\"{id}\"][data-status=\"{status}\"]');"
    )
}

/// Whether the API's OpenAPI document lists `method` on `path`: the page shows the matching
/// control exactly then.
async fn api_has(app: &App, path: &str, method: &str) -> bool {
    let doc = app
        .api()
        .send(app.api().request(reqwest::Method::GET, "/openapi.json"))
        .await
        .expect(200);
    doc["paths"][path][method].is_object()
}

// ---------------------------------------------------------------------------------------
// Without a browser: the headers, on the real binary

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_by_the_local_host_without_a_token_and_with_its_security_headers() {
    let token = "console-test-token-0123456789";
    let app = App::builder()
        .env("SCHEDULER_API_TOKENS", format!("alice:{token}"))
        .token(token)
        .spawn()
        .await
        .expect("server starts");
    let anonymous = app.api_as(None);
    for (path, media_type) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console/", "text/html; charset=utf-8"),
        ("/console/assets/app.js", "text/javascript; charset=utf-8"),
        ("/console/assets/style.css", "text/css; charset=utf-8"),
    ] {
        let resp = anonymous
            .send(anonymous.request(reqwest::Method::GET, path))
            .await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
        let h = |name: &str| {
            resp.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(h("content-type").as_deref(), Some(media_type), "{path}");
        let csp = h("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} not in {csp:?}"
            );
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(h("x-frame-options").as_deref(), Some("DENY"), "{path}");
        assert_eq!(h("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(h("referrer-policy").as_deref(), Some("no-referrer"));
    }
    // The page is static; the data behind it still needs the token.
    anonymous.list("").await.expect_error(401, "unauthorized");
    app.api().list("").await.expect(200);
}

// ---------------------------------------------------------------------------------------
// In the browser

/// With tokens configured, the page asks for one on the API's 401, keeps it in
/// sessionStorage only, and then shows a task created through the API become completed
/// without a reload; the task's page shows its attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: make test-console"]
async fn a_task_becomes_completed_on_the_page_and_shows_its_attempt() {
    let recv = Receiver::start().await;
    let token = "console-test-token-0123456789";
    let app = App::builder()
        .env("SCHEDULER_API_TOKENS", format!("alice:{token}"))
        .token(token)
        .spawn()
        .await
        .expect("server starts");
    let b = Browser::start().await;
    b.client
        .goto(&format!("{}/console#/tasks", app.base_url()))
        .await
        .unwrap();
    // 401: the prompt.
    b.wait_for(
        "the token prompt",
        "return !document.getElementById('login').hidden;",
    )
    .await;
    b.client
        .find(Locator::Css("#token-input"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    b.click("#login-form button[type=submit]").await;
    b.wait_for(
        "the tasks list",
        "return !!document.querySelector('#task-results') && document.getElementById('login').hidden;",
    )
    .await;
    // A marker that a reload would lose.
    b.js("window.__same_page = 42; return null;").await;

    let task = app
        .api()
        // Due after a few of the list's 3-second refreshes, so that it is seen scheduled first.
        .create_ok(&task_due(&recv.url("/hook"), in_ms(8_000)))
        .await;
    let id = id_of(&task);
    b.wait_for("the new task, scheduled", &row_in_status(&id, "scheduled"))
        .await;
    b.wait_for("the task completed", &row_in_status(&id, "completed"))
        .await;
    assert_eq!(b.js("return window.__same_page;").await, json!(42));
    assert_eq!(recv.arrivals_at("/hook").len(), 1);
    b.screenshot("tasks").await;

    // The token: in this tab's sessionStorage, never in a cookie or the URL.
    assert_eq!(
        b.js("return sessionStorage.getItem('task-scheduler.console.token');")
            .await,
        json!(token)
    );
    assert_eq!(b.js("return document.cookie;").await, json!(""));
    assert!(
        !b.client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains(token)
    );

    // Its page: the attempt, with its status code, duration and lateness.
    b.click(&format!("#tasks-table tr[data-task-id=\"{id}\"] a"))
        .await;
    b.wait_for(
        "the attempts table",
        "return !!document.querySelector('#attempts-table tr[data-attempt=\"1\"]');",
    )
    .await;
    let row = b.text("#attempts-table tr[data-attempt=\"1\"]").await;
    assert!(row.contains("succeeded") && row.contains("200"), "{row}");
    assert!(row.contains(" ms"), "duration and lateness in ms: {row}");
    assert_eq!(b.text("#task-status").await, "completed");
    assert!(b.text("#payload-data").await.contains("\"n\": 1"));
    b.screenshot("task").await;

    // The overview counts it, and refreshes by itself.
    b.click("nav a[data-nav=overview]").await;
    b.wait_for(
        "one completed task in the overview",
        "const t = document.querySelector('#status-counts [data-status=completed] .tile-n'); return !!t && t.textContent === '1';",
    )
    .await;
    let first = b.text("#overview-updated").await;
    b.wait_for(
        "the overview refreshed",
        &format!(
            "const e = document.getElementById('overview-updated'); return !!e && e.textContent !== {};",
            json!(first)
        ),
    )
    .await;
    assert!(b.text("#lateness").await.contains('1'));
    b.screenshot("overview").await;
    b.close().await;
}

/// Without tokens (loopback), the page needs none; a scheduled task is cancelled from its
/// page. Run now and reschedule are offered exactly when the API lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: make test-console"]
async fn a_pending_task_is_cancelled_from_its_page() {
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let task = app
        .api()
        .create_ok(&task_due(
            &recv.url("/later"),
            chrono::Utc::now() + chrono::TimeDelta::hours(1),
        ))
        .await;
    let id = id_of(&task);
    let b = Browser::start().await;
    b.client
        .goto(&format!("{}/console#/task/{id}", app.base_url()))
        .await
        .unwrap();
    b.wait_for(
        "the task, scheduled",
        "const s = document.getElementById('task-status'); return !!s && s.textContent === 'scheduled';",
    )
    .await;
    for (control, path, method) in [
        ("#action-run", "/tasks/{task_id}/run", "post"),
        ("#action-reschedule", "/tasks/{task_id}", "patch"),
    ] {
        let shown = b
            .js(&format!("return !!document.querySelector('{control}');"))
            .await;
        assert_eq!(
            shown,
            json!(api_has(&app, path, method).await),
            "{control} is shown exactly when the API has {method} {path}"
        );
    }
    b.click("#action-cancel").await;
    b.wait_for(
        "the task, cancelled",
        "const s = document.getElementById('task-status'); return !!s && s.textContent === 'cancelled';",
    )
    .await;
    assert_eq!(app.api().get(&id).await.expect(200)["status"], "cancelled");
    assert!(
        b.js("return !!document.querySelector('#action-cancel');")
            .await
            == json!(false),
        "no cancel button on a cancelled task"
    );
    b.close().await;
}

/// A task whose receiver failed is in the dead letters with its error; retried from there,
/// it completes. "Retry all matching" retries exactly the failed tasks the filter shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: make test-console"]
async fn a_failed_task_is_retried_from_the_dead_letters_and_completes() {
    let recv = Receiver::start().await;
    // Each path fails once, then succeeds.
    for path in ["/flaky", "/batch-a", "/batch-b", "/other"] {
        recv.script(
            path,
            [Reply::status(500).body(&format!("down for maintenance at {path}"))],
            Reply::ok(),
        );
    }
    let app = App::spawn().await;
    let api = app.api();
    let mut ids = Vec::new();
    for path in ["/flaky", "/batch-a", "/batch-b", "/other"] {
        let mut body = task_due(&recv.url(path), in_ms(0));
        body["retry"] = json!({"max_attempts": 1});
        ids.push(id_of(&api.create_ok(&body).await));
    }
    for id in &ids {
        api.wait_status(id, "failed", PAGE_WAIT).await;
    }
    let b = Browser::start().await;
    b.client
        .goto(&format!("{}/console#/dead", app.base_url()))
        .await
        .unwrap();
    let row = |id: &str| format!("#dead-table tr[data-task-id=\"{id}\"]");
    b.wait_for(
        "four dead letters",
        "return document.querySelectorAll('#dead-table tbody tr').length === 4;",
    )
    .await;
    assert!(
        b.text(&row(&ids[0]))
            .await
            .contains("down for maintenance at /flaky")
    );
    b.screenshot("dead-letters").await;

    // One.
    b.click(&format!("{} button.retry-one", row(&ids[0]))).await;
    api.wait_status(&ids[0], "completed", PAGE_WAIT).await;
    b.wait_for(
        "the retried task gone from the dead letters",
        &format!(
            "return !document.querySelector('{}');",
            row(&ids[0]).replace('\'', "\\'")
        ),
    )
    .await;
    assert_eq!(recv.arrivals_at("/flaky").len(), 2);

    // All that match a filter: the two /batch- tasks, not /other.
    b.client
        .find(Locator::Css("#dead-url"))
        .await
        .unwrap()
        .send_keys("/batch-")
        .await
        .unwrap();
    b.click("#dead-filters button[type=submit]").await;
    b.wait_for(
        "two matching dead letters",
        "return document.querySelectorAll('#dead-table tbody tr').length === 2;",
    )
    .await;
    b.click("#retry-all").await;
    b.wait_for(
        "the confirmation",
        "const b = document.getElementById('retry-all'); return !!b && b.textContent.startsWith('Confirm');",
    )
    .await;
    b.click("#retry-all").await;
    for id in &ids[1..3] {
        api.wait_status(id, "completed", PAGE_WAIT).await;
    }
    assert_eq!(api.get(&ids[3]).await.expect(200)["status"], "failed");
    b.wait_for(
        "no matching dead letters left",
        "return !document.querySelector('#dead-table');",
    )
    .await;
    b.close().await;
}

/// Attacker-controlled text (payload data, headers, the URL, the receiver's error) holding
/// `<script>`, `"><img onerror=...>` and `javascript:` is shown as text on every page that
/// shows it, and none of it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: make test-console"]
async fn hostile_text_is_shown_as_text_and_never_runs() {
    const SCRIPT: &str = "<script>window.__pwned='script';document.title='pwned'</script>";
    const IMG: &str = "\"><img src=x onerror=\"window.__pwned='img';document.title='pwned'\">";
    const JS_URL: &str = "javascript:window.__pwned='link';document.title='pwned'";
    let recv = Receiver::start().await;
    let error_body = format!("{IMG}{SCRIPT}");
    // A permanent failure whose error text is the receiver's hostile body.
    recv.script("/evil", [], Reply::status(400).body(&error_body));
    let app = App::spawn().await;
    let url = format!(
        "{}?q={}&next={}",
        recv.url("/evil"),
        "%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
        "javascript:alert(1)"
    );
    let task = app
        .api()
        .create_ok(&json!({
            "action": "webhook",
            "payload": {
                "url": url,
                "headers": {"X-Script": SCRIPT, "X-Img": IMG, "X-Link": JS_URL},
                "data": {"script": SCRIPT, "img": IMG, "link": JS_URL, SCRIPT: IMG},
            },
            "delay_seconds": 0,
        }))
        .await;
    let id = id_of(&task);
    let failed = app.api().wait_status(&id, "failed", PAGE_WAIT).await;
    let shown_url = failed["payload"]["url"].as_str().unwrap().to_owned();

    let b = Browser::start().await;
    let unharmed = "return window.__pwned === undefined && document.title === 'task-scheduler console' \
         && document.querySelectorAll('main img, main script, main iframe').length === 0 \
         && document.querySelectorAll('script').length === 1 \
         && [...document.querySelectorAll('a[href]')].every(a => /^(https?:|#\\/)/.test(a.getAttribute('href')));";
    let body_text = "return document.body.innerText;";

    // The task's page: payload, headers, URL, the attempt's error.
    b.client
        .goto(&format!("{}/console#/task/{id}", app.base_url()))
        .await
        .unwrap();
    b.wait_for(
        "the failed attempt",
        "return !!document.querySelector('#attempts-table tr[data-attempt=\"1\"]');",
    )
    .await;
    let text = b.js(body_text).await;
    let text = text.as_str().unwrap();
    for needle in [SCRIPT, IMG, JS_URL, shown_url.as_str()] {
        assert!(
            text.contains(needle),
            "{needle:?} not shown as text in:\n{text}"
        );
    }
    assert!(
        b.text("#attempts-table tr[data-attempt=\"1\"]")
            .await
            .contains(SCRIPT)
    );
    b.screenshot("hostile-task").await;
    assert_eq!(b.js(unharmed).await, json!(true), "task page");
    // The target link is the http URL itself, opened without opener or referrer.
    let link = b
        .client
        .find(Locator::Css("#task-detail a.url"))
        .await
        .unwrap();
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some(shown_url.as_str())
    );
    assert_eq!(
        link.attr("rel").await.unwrap().as_deref(),
        Some("noopener noreferrer")
    );

    // From here on, anything the page even tries that the policy forbids (an inline script
    // or handler, a foreign source) is recorded: none may happen. The views below, and the
    // task's page again, render in this same document.
    b.js(
        "window.__violations = []; document.addEventListener('securitypolicyviolation', \
          e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI)); return null;",
    )
    .await;

    // The list and the dead letters show the URL and the error as text too.
    let again = format!("#/task/{id}");
    for (hash, ready) in [
        ("#/tasks", "#tasks-table"),
        ("#/dead", "#dead-table"),
        ("#/overview", "#status-counts"),
        (again.as_str(), "#attempts-table"),
    ] {
        b.js(&format!("location.hash = {}; return null;", json!(hash)))
            .await;
        b.wait_for(
            ready,
            &format!(
                "return location.hash === {} && !!document.querySelector('{ready}');",
                json!(hash)
            ),
        )
        .await;
        if hash == "#/tasks" || hash == "#/dead" {
            let text = b.js(body_text).await;
            let text = text.as_str().unwrap();
            assert!(text.contains(&shown_url), "{hash}: the URL as text");
            assert!(text.contains(SCRIPT), "{hash}: the error as text");
        }
        assert_eq!(b.js(unharmed).await, json!(true), "{hash}");
    }
    assert_eq!(
        b.js("return window.__violations;").await,
        json!([]),
        "policy violations"
    );
    b.close().await;
}

/// The list pages with the API's cursor, filters by status on the API and by URL substring in
/// the page, and a whole task id opens that task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: make test-console"]
async fn the_list_pages_with_the_cursor_and_filters_by_status_url_and_id() {
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let api = app.api();
    let later = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    for i in 0..52 {
        api.create_ok(&task_due(
            &recv.url(&format!("/page-{i:02}")),
            later + chrono::TimeDelta::seconds(i),
        ))
        .await;
    }
    let special = id_of(
        &api.create_ok(&task_due(&recv.url("/special"), in_ms(0)))
            .await,
    );
    api.wait_status(&special, "completed", PAGE_WAIT).await;

    let b = Browser::start().await;
    let rows = |n: usize| {
        format!("return document.querySelectorAll('#tasks-table tbody tr').length === {n};")
    };
    b.client
        .goto(&format!(
            "{}/console#/tasks?status=scheduled",
            app.base_url()
        ))
        .await
        .unwrap();
    b.wait_for("a first page of 50", &rows(50)).await;
    assert_eq!(
        b.js("return [...document.querySelectorAll('#tasks-table tbody tr')].every(r => r.dataset.status === 'scheduled');")
            .await,
        json!(true)
    );
    b.client
        .find(Locator::LinkText("next page »"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_for("the second page: the last 2", &rows(2)).await;
    assert!(b.text("#tasks-table").await.contains("/page-51"));
    b.client
        .find(Locator::LinkText("« first page"))
        .await
        .unwrap();

    // A URL substring, any status: the one completed task.
    b.client
        .goto(&format!("{}/console#/tasks", app.base_url()))
        .await
        .unwrap();
    b.wait_for("the list", &rows(50)).await;
    b.client
        .find(Locator::Css("#filter-url"))
        .await
        .unwrap()
        .send_keys("/special")
        .await
        .unwrap();
    b.click("#task-filters button[type=submit]").await;
    b.wait_for(
        "one match",
        &format!("{} && !!document.querySelector('#tasks-table tr[data-task-id=\"{special}\"][data-status=completed]');",
            rows(1).trim_end_matches(';')),
    )
    .await;
    assert!(b.text("#scan-note").await.contains("of 53 tasks read"));

    // A whole id opens the task.
    let id = b.client.find(Locator::Css("#filter-id")).await.unwrap();
    id.send_keys(&special).await.unwrap();
    b.click("#task-filters button[type=submit]").await;
    b.wait_for(
        "the task's page",
        &format!(
            "const e = document.getElementById('task-id'); return !!e && e.textContent === '{special}';"
        ),
    )
    .await;
    b.close().await;
}

// ---------------------------------------------------------------------------------------
// Moving a task from its page: run now, reschedule

/// The task's page for `id`, once it shows the task scheduled with both move controls (this
/// API has both routes).
async fn open_scheduled(b: &Browser, app: &App, id: &str) {
    b.client
        .goto(&format!("{}/console#/task/{id}", app.base_url()))
        .await
        .unwrap();
    b.wait_for(
        "the task, scheduled, with run now and reschedule",
        "const s = document.getElementById('task-status'); return !!s && s.textContent === 'scheduled' \
         && !!document.querySelector('#action-run') && !!document.querySelector('#action-reschedule');",
    )
    .await;
}

const COMPLETED: &str = "const s = document.getElementById('task-status'); return !!s && s.textContent === 'completed';";

/// The flash message once it shows `what` (a substring), as an error or not.
async fn flash_shows(b: &Browser, what: &str, error: bool) -> String {
    b.wait_for(
        &format!("the message {what:?}"),
        &format!(
            "const f = document.getElementById('flash'); return !f.hidden && f.textContent.includes({}) \
             && f.classList.contains('error') === {error};",
            json!(what)
        ),
    )
    .await;
    b.text("#flash").await
}

/// Sets an input's text the way a person does: cleared, then typed.
async fn type_into(b: &Browser, css: &str, text: &str) {
    let input = b.client.find(Locator::Css(css)).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(text).await.unwrap();
}

/// A task due in an hour, "Run now" on its page: the page shows it completed, and the receiver
/// got it once, between the click and the moment the page showed it done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: make test-console"]
async fn run_now_on_the_page_delivers_a_task_due_in_an_hour_once_at_once() {
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let in_an_hour = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let id = id_of(
        &app.api()
            .create_ok(&task_due(&recv.url("/run-now"), in_an_hour))
            .await,
    );
    let b = Browser::start().await;
    open_scheduled(&b, &app, &id).await;

    let clicked = chrono::Utc::now();
    b.click("#action-run").await;
    let msg = flash_shows(&b, "run now: due at", false).await;
    b.wait_for("the task completed", COMPLETED).await;
    let seen = chrono::Utc::now();
    let arrivals = recv.arrivals_at("/run-now");
    assert_eq!(arrivals.len(), 1, "delivered once");
    assert!(
        clicked <= arrivals[0].wall && arrivals[0].wall <= seen,
        "delivered between the click ({clicked}) and the page showing it done ({seen}), not at \
         {in_an_hour}: {}",
        arrivals[0].wall
    );
    let task = app.api().get(&id).await.expect(200);
    assert_eq!(task["attempts"].as_array().unwrap().len(), 1);
    let run_at = integration_tests::parse_time(task["run_at"].as_str().unwrap());
    // (run_at is kept to the millisecond.)
    assert!(
        clicked - chrono::TimeDelta::milliseconds(1) <= run_at && run_at <= arrivals[0].wall,
        "run_at moved to the click ({clicked}): {run_at}"
    );
    assert!(msg.contains(&shown_time(&task["run_at"])), "{msg}");
    for control in ["#action-run", "#action-reschedule", "#action-cancel"] {
        assert_eq!(
            b.js(&format!("return !!document.querySelector('{control}');"))
                .await,
            json!(false),
            "no {control} on a completed task"
        );
    }
    b.screenshot("run-now").await;
    b.close().await;
}

/// A time the API returned as the page shows it (`when()`): UTC, without its `T` and `Z`.
fn shown_time(api_time: &Value) -> String {
    api_time
        .as_str()
        .expect("a time")
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// A task due in an hour, rescheduled on its page to a time a few seconds ahead, typed as a
/// local time in Asia/Kolkata (UTC+05:30, no daylight saving): it is delivered once, at that
/// instant (not before it, and soon after it), not at the old time, and the page shows it
/// completed with the local time it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: make test-console"]
async fn reschedule_on_the_page_moves_a_task_to_the_typed_local_time() {
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let in_an_hour = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let id = id_of(
        &app.api()
            .create_ok(&task_due(&recv.url("/moved"), in_an_hour))
            .await,
    );
    let b = Browser::start().await;
    open_scheduled(&b, &app, &id).await;

    // Whole seconds, as a person types them; far enough ahead to be typed and sent first.
    let new_at = chrono::DateTime::<chrono::Utc>::from_timestamp(
        (chrono::Utc::now() + chrono::TimeDelta::seconds(8)).timestamp(),
        0,
    )
    .unwrap();
    let kolkata = chrono::FixedOffset::east_opt(5 * 3600 + 30 * 60).unwrap();
    let typed = new_at
        .with_timezone(&kolkata)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    type_into(&b, "#reschedule-tz", "Asia/Kolkata").await;
    type_into(&b, "#reschedule-at", &typed).await;
    b.click("#action-reschedule").await;
    let msg = flash_shows(&b, "reschedule: due at", false).await;
    let task = app.api().get(&id).await.expect(200);
    assert_eq!(
        integration_tests::parse_time(task["run_at"].as_str().unwrap()),
        new_at
    );
    assert_eq!(task["timezone"], "Asia/Kolkata");
    assert!(msg.contains(&shown_time(&task["run_at"])), "{msg}");
    // The page shows the task as the API now has it: the new instant and the local time.
    b.wait_for(
        "the new run_at",
        &format!(
            "const e = document.getElementById('task-run-at'); return !!e && e.textContent === {};",
            json!(shown_time(&task["run_at"]))
        ),
    )
    .await;
    assert_eq!(
        b.text("#task-run-at-local").await,
        format!("{} Asia/Kolkata", typed.replace(' ', "T"))
    );
    b.screenshot("rescheduled").await;

    b.wait_for("the task completed", COMPLETED).await;
    let arrivals = recv.arrivals_at("/moved");
    assert_eq!(arrivals.len(), 1, "delivered once");
    let late = arrivals[0].wall - new_at;
    assert!(
        late >= chrono::TimeDelta::zero() && late < chrono::TimeDelta::seconds(10),
        "delivered at the new time {new_at} (within 10 s after it, on a loaded machine), not \
         before it and not at the old time {in_an_hour}: {}",
        arrivals[0].wall
    );
    assert_eq!(
        app.api().get(&id).await.expect(200)["attempts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    b.close().await;
}

/// The API's refusals are shown as it words them, and change nothing: a time it cannot read
/// (a 400 naming the field), and a move of a task that is no longer scheduled (a 409 naming
/// its status; here the page still showed it scheduled, its refresh held back). After the
/// refusal the page shows the task completed, with neither control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: make test-console"]
async fn refused_moves_show_the_apis_message_and_a_completed_task_has_no_move_controls() {
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let api = app.api();
    let in_an_hour = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let task = api
        .create_ok(&task_due(&recv.url("/refused"), in_an_hour))
        .await;
    let id = id_of(&task);
    let b = Browser::start().await;
    open_scheduled(&b, &app, &id).await;

    // 400: the API's message, naming the field; the typed text stays to be corrected.
    type_into(&b, "#reschedule-at", "next tuesday").await;
    b.click("#action-reschedule").await;
    let msg = flash_shows(&b, "reschedule: run_at_local: ", true).await;
    assert_eq!(
        b.js("return document.getElementById('reschedule-at').value;")
            .await,
        json!("next tuesday"),
        "{msg}"
    );
    let unchanged = api.get(&id).await.expect(200);
    assert_eq!(unchanged["status"], "scheduled");
    assert_eq!(unchanged["run_at"], task["run_at"]);

    // 409: the page's refresh held back, the task is run and completes behind its back.
    b.js("Object.defineProperty(document, 'hidden', { configurable: true, get: () => true }); return null;")
        .await;
    api.send(api.request(reqwest::Method::POST, &format!("/tasks/{id}/run")))
        .await
        .expect(200);
    api.wait_status(&id, "completed", PAGE_WAIT).await;
    assert!(
        b.js("return !!document.querySelector('#action-reschedule');")
            .await
            == json!(true),
        "the page still shows the task as it was"
    );
    type_into(&b, "#reschedule-at", "2030-01-01T09:00:00Z").await;
    b.click("#action-reschedule").await;
    flash_shows(
        &b,
        "reschedule: task is completed; only a scheduled task can be rescheduled or run now",
        true,
    )
    .await;
    b.wait_for("the task completed", COMPLETED).await;
    for control in ["#action-run", "#action-reschedule", "#reschedule-form"] {
        assert_eq!(
            b.js(&format!("return !!document.querySelector('{control}');"))
                .await,
            json!(false),
            "no {control} on a completed task"
        );
    }
    let after = api.get(&id).await.expect(200);
    assert_eq!(after["status"], "completed");
    assert_eq!(after["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(recv.arrivals_at("/refused").len(), 1);
    b.screenshot("refused-move").await;
    b.close().await;
}

// ---------------------------------------------------------------------------------------
// Schedules

fn every(url: &str, period: &str) -> Value {
    json!({"every": period, "task": {"action": "webhook", "payload": {"url": url, "data": {"n": 1}}}})
}

async fn create_schedule(app: &App, body: &Value) -> Value {
    app.api()
        .post_json("/schedules", body, None)
        .await
        .expect(201)
}

/// The schedule's occurrences, as the API lists them.
async fn occurrences(app: &App, id: &str) -> Vec<Value> {
    app.api()
        .list(&format!("schedule_id={id}&limit=100"))
        .await
        .expect(200)["tasks"]
        .as_array()
        .unwrap()
        .clone()
}

const PAUSED: &str = "const s = document.getElementById('schedule-state'); return !!s && s.textContent === 'paused' && !!document.getElementById('action-resume');";
const ACTIVE: &str = "const s = document.getElementById('schedule-state'); return !!s && s.textContent === 'active' && !!document.getElementById('action-pause');";

/// A schedule every 2 s: listed with its plan, zone, state and next run; its page shows its
/// next 5 runs in both forms and its occurrences. Paused from the page, nothing more is
/// delivered; triggered, exactly one more is; resumed, they come again; deleted (after a
/// confirming second click), the API has it no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: make test-console"]
async fn a_schedule_is_listed_and_paused_triggered_resumed_and_deleted_from_its_page() {
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let s = create_schedule(&app, &every(&recv.url("/tick"), "2s")).await;
    let id = s["schedule_id"].as_str().unwrap().to_owned();
    let b = Browser::start().await;

    // The list: the tab is there (the API has schedules), the row with plan, zone, state.
    b.client
        .goto(&format!("{}/console#/schedules", app.base_url()))
        .await
        .unwrap();
    let row = format!("#schedules-table tr[data-schedule-id=\"{id}\"]");
    b.wait_for(
        "the schedule's row",
        &format!("return !!document.querySelector('{row}');"),
    )
    .await;
    assert_eq!(
        b.js("return document.getElementById('nav-schedules').hidden;")
            .await,
        json!(false)
    );
    assert_eq!(b.text(&format!("{row} td.plan")).await, "every 2s");
    assert_eq!(b.text(&format!("{row} td.paused")).await, "active");
    assert!(b.text(&row).await.contains("UTC"));
    assert_ne!(b.text(&format!("{row} td.next-run")).await, "—");

    // Its page: the next 5 runs in its zone and in UTC, as the API has them.
    b.click(&format!("{row} a")).await;
    b.wait_for("the schedule, active", ACTIVE).await;
    b.wait_for(
        "an occurrence listed",
        "return !!document.querySelector('#occurrences-table tr[data-status=\"completed\"]');",
    )
    .await;
    let runs = b
        .js("return [...document.querySelectorAll('#next-runs tbody tr')].map(r => [...r.cells].map(c => c.textContent));")
        .await;
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 5, "{runs:?}");
    let api = app
        .api()
        .send(
            app.api()
                .request(reqwest::Method::GET, &format!("/schedules/{id}")),
        )
        .await
        .expect(200);
    // The page refreshes every 2 s, as the plan moves on: its first run is one of the API's.
    let api_runs: Vec<String> = api["next_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["local"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        runs.iter()
            .any(|r| api_runs.contains(&r[0].as_str().unwrap().to_owned())),
        "{runs:?} vs {api_runs:?}"
    );
    for r in runs {
        let local = r[0].as_str().unwrap();
        let utc = r[1].as_str().unwrap();
        assert!(local.ends_with("+00:00"), "{local}");
        assert_eq!(
            local.replace('T', " ").trim_end_matches("+00:00"),
            utc,
            "the same instant in both forms"
        );
    }
    assert!(
        b.text("#last-occurrence").await.contains("completed")
            || b.text("#last-occurrence").await.contains("running")
            || b.text("#last-occurrence").await.contains("scheduled")
    );
    b.screenshot("schedule").await;

    // Pause: nothing more is delivered (once an occurrence already running has finished).
    b.click("#action-pause").await;
    b.wait_for("the schedule, paused", PAUSED).await;
    b.wait_for(
        "no next runs",
        "return !!document.getElementById('next-runs-none');",
    )
    .await;
    let deadline = Instant::now() + PAGE_WAIT;
    while occurrences(&app, &id)
        .await
        .iter()
        .any(|t| t["status"] == "running" || t["status"] == "scheduled")
    {
        assert!(
            Instant::now() < deadline,
            "an occurrence still pending after the pause"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = recv.counts().get("/tick").copied().unwrap_or(0);
    // Three periods: an active schedule would deliver at least one more.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        recv.counts().get("/tick").copied().unwrap_or(0),
        before,
        "nothing delivered while paused"
    );

    // Trigger (still paused): exactly one more, the triggered task.
    b.click("#action-trigger").await;
    let msg = flash_shows(&b, "due now", false).await;
    let triggered = msg
        .split_whitespace()
        .find(|w| w.len() == 26)
        .expect("the task id in the message")
        .to_owned();
    recv.wait_for("/tick", before + 1, PAGE_WAIT).await;
    let t = app
        .api()
        .wait_status(&triggered, "completed", PAGE_WAIT)
        .await;
    assert_eq!(t["occurrence"]["schedule_id"], id.as_str());
    assert_eq!(t["occurrence"]["triggered"], true);
    b.wait_for("the triggered occurrence listed", &format!("return !!document.querySelector('#occurrences-table tr[data-task-id=\"{triggered}\"]');")).await;

    // The tasks page's schedule filter: this schedule's occurrences only.
    let other = app
        .api()
        .create_ok(&task_due(
            &recv.url("/other"),
            chrono::Utc::now() + chrono::TimeDelta::hours(1),
        ))
        .await;
    b.client
        .goto(&format!(
            "{}/console#/tasks?schedule_id={id}",
            app.base_url()
        ))
        .await
        .unwrap();
    b.wait_for(
        "the triggered task in the filtered list",
        &row_in_status(&triggered, "completed"),
    )
    .await;
    assert_eq!(
        b.js("return document.getElementById('filter-schedule').value;")
            .await,
        json!(id)
    );
    assert_eq!(
        b.js(&format!(
            "return !!document.querySelector('#tasks-table tr[data-task-id=\"{}\"]');",
            id_of(&other)
        ))
        .await,
        json!(false)
    );
    let shown = b
        .js("return document.querySelectorAll('#tasks-table tbody tr').length;")
        .await;
    assert_eq!(shown, json!(occurrences(&app, &id).await.len()));

    // Resume: deliveries again.
    b.client
        .goto(&format!("{}/console#/schedule/{id}", app.base_url()))
        .await
        .unwrap();
    b.wait_for("the schedule, paused", PAUSED).await;
    b.click("#action-resume").await;
    b.wait_for("the schedule, active", ACTIVE).await;
    b.wait_for(
        "5 next runs",
        "return document.querySelectorAll('#next-runs tbody tr').length === 5;",
    )
    .await;
    recv.wait_for("/tick", before + 2, PAGE_WAIT).await;

    // Delete: the first click only asks; the second deletes.
    b.click("#action-delete").await;
    b.wait_for(
        "the confirmation",
        "return document.getElementById('action-delete').textContent === 'Confirm: delete';",
    )
    .await;
    app.api()
        .send(
            app.api()
                .request(reqwest::Method::GET, &format!("/schedules/{id}")),
        )
        .await
        .expect(200);
    b.click("#action-delete").await;
    flash_shows(&b, "deleted", false).await;
    b.wait_for(
        "the list without it",
        &format!("return location.hash === '#/schedules' && !document.querySelector('{row}');"),
    )
    .await;
    app.api()
        .send(
            app.api()
                .request(reqwest::Method::GET, &format!("/schedules/{id}")),
        )
        .await
        .expect_error(404, "not_found");
    b.close().await;
}

/// `<script>`, `"><img onerror=...>` and `javascript:` in a schedule's task template (URL,
/// headers, payload) are shown as text on its page and in the list, and none of it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver: make test-console"]
async fn hostile_text_in_a_schedules_template_is_shown_as_text() {
    const SCRIPT: &str = "<script>window.__pwned='script';document.title='pwned'</script>";
    const IMG: &str = "\"><img src=x onerror=\"window.__pwned='img';document.title='pwned'\">";
    const JS_URL: &str = "javascript:window.__pwned='link';document.title='pwned'";
    let recv = Receiver::start().await;
    let app = App::spawn().await;
    let url = format!(
        "{}?q=%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E&next=javascript:alert(1)",
        recv.url("/evil")
    );
    let s = create_schedule(
        &app,
        &json!({
            "cron": "0 9 * * *", "timezone": "Europe/Paris",
            "task": {"action": "webhook", "payload": {
                "url": url,
                "headers": {"X-Script": SCRIPT, "X-Img": IMG, "X-Link": JS_URL},
                "data": {"script": SCRIPT, "img": IMG, "link": JS_URL, SCRIPT: IMG},
            }},
        }),
    )
    .await;
    let id = s["schedule_id"].as_str().unwrap().to_owned();
    let shown_url = s["task"]["payload"]["url"].as_str().unwrap().to_owned();
    let b = Browser::start().await;
    let unharmed = "return window.__pwned === undefined && document.title === 'task-scheduler console' \
         && document.querySelectorAll('main img, main script, main iframe').length === 0 \
         && document.querySelectorAll('script').length === 1 \
         && [...document.querySelectorAll('a[href]')].every(a => /^(https?:|#\\/)/.test(a.getAttribute('href')));";

    b.client
        .goto(&format!("{}/console#/schedule/{id}", app.base_url()))
        .await
        .unwrap();
    b.wait_for("the schedule", ACTIVE).await;
    let text = b.js("return document.body.innerText;").await;
    let text = text.as_str().unwrap();
    for needle in [SCRIPT, IMG, JS_URL, shown_url.as_str()] {
        assert!(text.contains(needle), "{needle} shown as text:\n{text}");
    }
    assert_eq!(
        b.js(unharmed).await,
        json!(true),
        "nothing ran on the schedule's page"
    );
    b.screenshot("schedule-hostile").await;

    b.client
        .goto(&format!("{}/console#/schedules", app.base_url()))
        .await
        .unwrap();
    b.wait_for(
        "the row",
        &format!(
            "return !!document.querySelector('#schedules-table tr[data-schedule-id=\"{id}\"]');"
        ),
    )
    .await;
    let text = b.js("return document.body.innerText;").await;
    assert!(text.as_str().unwrap().contains(&shown_url), "{text}");
    assert_eq!(b.js(unharmed).await, json!(true), "nothing ran on the list");
    b.close().await;
}
