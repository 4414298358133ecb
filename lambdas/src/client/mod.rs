//! The command-line client, `task-scheduler tasks ...`: the API over HTTP, as any client
//! calls it. Nothing here uses the service's own code; [`upstream`] (the endpoint and its
//! authentication) is shared with the console proxy.
//!
//! Exit codes: 0 success; 1 an API error (its code and message on stderr) or no connection;
//! 2 a usage error (clap's).

mod output;
pub(crate) mod schedules;
#[cfg(feature = "aws")]
mod sigv4;
pub(crate) mod upstream;
mod when;

use std::{io::Read, process::ExitCode};

use anyhow::Context;
use axum::body::Bytes;
use clap::{ArgGroup, Args, Subcommand};
use http::{HeaderMap, HeaderValue, Method, header};
use serde_json::{Map, Value, json};

use upstream::{EndpointArgs, Upstream};

/// `task-scheduler tasks`.
#[derive(Args, Debug)]
pub(crate) struct TasksArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Print the API's JSON as it came, for scripts
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: TasksCommand,
}

#[derive(Subcommand, Debug)]
enum TasksCommand {
    /// Create a task: call URL at a time (--at, --in or --at-local with --tz)
    Create(CreateArgs),
    /// List your tasks by run_at
    List(ListArgs),
    /// Show a task with its attempts
    Get { task_id: String },
    /// Cancel a scheduled task
    Cancel { task_id: String },
    /// Re-arm a failed task now, with a fresh attempt budget
    Retry { task_id: String },
    /// Run a scheduled task now
    Run { task_id: String },
    /// Move a scheduled task to another time
    Reschedule {
        task_id: String,
        #[command(flatten)]
        when: When,
    },
}

/// When a task runs: exactly one of the three.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("when").required(true).args(["at", "in_", "at_local"])))]
struct When {
    /// An RFC 3339 time with an offset, e.g. 2026-12-01T09:00:00+01:00
    #[arg(long, value_parser = when::at)]
    at: Option<String>,
    /// A delay from now: 90s, 10m, 1h30m, 2d
    #[arg(long = "in", value_name = "DURATION", value_parser = when::seconds)]
    in_: Option<u64>,
    /// A wall-clock time in --tz: 2027-03-28T09:00, or 09:00 for the next 09:00 there
    #[arg(long, value_parser = when::local, requires = "tz")]
    at_local: Option<when::Local>,
    /// The IANA time zone of --at-local, e.g. Europe/Paris
    #[arg(long, requires = "at_local")]
    tz: Option<String>,
}

impl When {
    fn into_json(self, body: &mut Map<String, Value>) {
        if let Some(at) = self.at {
            body.insert("run_at".into(), at.into());
        }
        if let Some(n) = self.in_ {
            body.insert("delay_seconds".into(), n.into());
        }
        if let (Some(local), Some(tz)) = (&self.at_local, &self.tz) {
            body.insert(
                "run_at_local".into(),
                local.resolve(tz, chrono::Utc::now()).into(),
            );
        }
        if let Some(tz) = self.tz {
            body.insert("timezone".into(), tz.into());
        }
    }
}

/// What a task does: its webhook and retry policy. `tasks create` and `schedules create`
/// (each occurrence's template) take the same options.
#[derive(Args, Debug)]
struct TaskTemplate {
    /// The webhook's URL (http or https)
    #[arg(long)]
    url: String,
    /// The HTTP method [default: POST]
    #[arg(short = 'X', long)]
    method: Option<String>,
    /// A header sent with the webhook, 'Name: value' (repeatable)
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// The JSON body sent to the webhook, or @FILE (@- for stdin)
    #[arg(short = 'd', long, value_name = "JSON|@FILE", value_parser = parse_data)]
    data: Option<Value>,
    /// Attempts in all, the first included [default: 3]
    #[arg(long)]
    max_attempts: Option<u32>,
    /// The first retry's backoff, e.g. 10s [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = when::seconds)]
    backoff: Option<u64>,
    /// The backoff's cap, e.g. 1h [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = when::seconds)]
    max_backoff: Option<u64>,
    /// How long one webhook call may take, e.g. 10s [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = when::seconds)]
    timeout: Option<u64>,
}

impl TaskTemplate {
    /// `POST /tasks`'s body without its time: `action`, `payload`, `retry`, `timeout_seconds`.
    fn into_json(self) -> Map<String, Value> {
        let mut payload = Map::new();
        payload.insert("url".into(), self.url.into());
        if let Some(m) = self.method {
            payload.insert("method".into(), m.to_ascii_uppercase().into());
        }
        if !self.headers.is_empty() {
            let h: Map<String, Value> = self
                .headers
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect();
            payload.insert("headers".into(), h.into());
        }
        if let Some(d) = self.data {
            payload.insert("data".into(), d);
        }
        let mut body = Map::new();
        body.insert("action".into(), "webhook".into());
        body.insert("payload".into(), payload.into());
        let mut retry = Map::new();
        if let Some(n) = self.max_attempts {
            retry.insert("max_attempts".into(), n.into());
        }
        if let Some(n) = self.backoff {
            retry.insert("initial_backoff_seconds".into(), n.into());
        }
        if let Some(n) = self.max_backoff {
            retry.insert("max_backoff_seconds".into(), n.into());
        }
        if !retry.is_empty() {
            body.insert("retry".into(), retry.into());
        }
        if let Some(n) = self.timeout {
            body.insert("timeout_seconds".into(), n.into());
        }
        body
    }
}

#[derive(Args, Debug)]
struct CreateArgs {
    #[command(flatten)]
    task: TaskTemplate,
    #[command(flatten)]
    when: When,
    /// A repeat with the same key and body returns the first task instead of a new one
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Only tasks in this status: scheduled, running, completed, failed, cancelled
    #[arg(long)]
    status: Option<String>,
    /// Only the occurrences of this schedule
    #[arg(long, value_name = "ID")]
    schedule: Option<String>,
    #[command(flatten)]
    paging: Paging,
}

/// How much of a list: one page (from `--cursor`) or, with `--all`, every page.
#[derive(Args, Debug)]
struct Paging {
    /// Items per page (1 to 100) [default: 50]
    #[arg(long)]
    limit: Option<u32>,
    /// Start at this page (a next_cursor the previous page printed)
    #[arg(long, conflicts_with = "all")]
    cursor: Option<String>,
    /// Follow next_cursor to the last page
    #[arg(long)]
    all: bool,
}

/// A collection of the API as the client shows it: its path, the key of its items in a
/// page, and its table.
struct Collection {
    path: &'static str,
    key: &'static str,
    noun: &'static str,
    table: fn(&[Value]) -> String,
    detail: fn(&Value) -> String,
}

const TASKS: Collection = Collection {
    path: "/tasks",
    key: "tasks",
    noun: "task",
    table: output::tasks,
    detail: output::task,
};

impl Collection {
    /// `POST` a new item, with its idempotency key; a repeat (`200`) is said on stderr.
    async fn create(
        &self,
        up: &Upstream,
        json: bool,
        body: Map<String, Value>,
        idempotency_key: Option<String>,
    ) -> Result<(), Failure> {
        let headers = idempotency(idempotency_key)?;
        let (status, resp) = call(
            up,
            Method::POST,
            self.path,
            Some(&Value::Object(body)),
            headers,
        )
        .await?;
        if status == 200 && !json {
            eprintln!(
                "an earlier request with this idempotency key created this {}",
                self.noun
            );
        }
        self.print_row(json, &resp)
    }

    /// `GET` one item: the API's JSON, or its detail view.
    async fn show(&self, up: &Upstream, json: bool, id: &str) -> Result<(), Failure> {
        let path = item_path(self.path, id, "");
        let (_, resp) = call(up, Method::GET, &path, None, HeaderMap::new()).await?;
        if json {
            println!("{}", String::from_utf8_lossy(&resp));
        } else {
            println!("{}", (self.detail)(&parse(&resp)?));
        }
        Ok(())
    }

    /// An item the API answered with: its JSON as it came, or a one-row table.
    fn print_row(&self, json: bool, body: &Bytes) -> Result<(), Failure> {
        if json {
            println!("{}", String::from_utf8_lossy(body));
        } else {
            println!("{}", (self.table)(&[parse(body)?]));
        }
        Ok(())
    }

    /// One page (its JSON as it came, or a table and the next cursor on stderr), or with
    /// `--all` every page, gathered. `filters` are the query's pairs besides the paging.
    async fn list(
        &self,
        up: &Upstream,
        json: bool,
        filters: &[(&str, &str)],
        paging: Paging,
    ) -> Result<(), Failure> {
        let mut cursor = paging.cursor;
        let mut all = Vec::new();
        loop {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.extend_pairs(filters);
            if let Some(n) = paging.limit {
                query.append_pair("limit", &n.to_string());
            }
            if let Some(c) = &cursor {
                query.append_pair("cursor", c);
            }
            let query = query.finish();
            let path = if query.is_empty() {
                self.path.to_owned()
            } else {
                format!("{}?{query}", self.path)
            };
            let (_, resp) = call(up, Method::GET, &path, None, HeaderMap::new()).await?;
            if !paging.all && json {
                println!("{}", String::from_utf8_lossy(&resp));
                return Ok(());
            }
            let page = parse(&resp)?;
            let items = page[self.key].as_array().cloned().unwrap_or_default();
            if !paging.all {
                println!("{}", (self.table)(&items));
                if let Some(next) = page["next_cursor"].as_str() {
                    eprintln!("more: --cursor {next}");
                }
                return Ok(());
            }
            all.extend(items);
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        if json {
            println!("{}", json!({ self.key: all, "next_cursor": null }));
        } else {
            println!("{}", (self.table)(&all));
        }
        Ok(())
    }
}

/// The `Idempotency-Key` header, when one is given.
fn idempotency(key: Option<String>) -> Result<HeaderMap, Failure> {
    let mut headers = HeaderMap::new();
    if let Some(k) = key {
        headers.insert(
            "idempotency-key",
            HeaderValue::from_str(&k).context("--idempotency-key: not a valid header value")?,
        );
    }
    Ok(headers)
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| "give a header as 'Name: value'".to_owned())?;
    let k = k.trim();
    if k.is_empty() {
        return Err("a header needs a name: 'Name: value'".into());
    }
    Ok((k.to_owned(), v.trim().to_owned()))
}

fn parse_data(s: &str) -> Result<Value, String> {
    let text = match s.strip_prefix('@') {
        Some("-") => {
            let mut t = String::new();
            std::io::stdin()
                .read_to_string(&mut t)
                .map_err(|e| format!("reading stdin: {e}"))?;
            t
        }
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
        None => s.to_owned(),
    };
    serde_json::from_str(&text)
        .map_err(|e| format!("not JSON ({e}); the body is JSON, so quote a string: '\"text\"'"))
}

/// Why a command failed: both are exit code 1.
enum Failure {
    /// The API answered with an error status.
    Api(u16, Bytes),
    /// No answer (connection, timeout, ...), or anything else.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

impl Failure {
    fn report(&self, base: &str) {
        match self {
            Self::Api(status, body) => {
                let v: Option<Value> = serde_json::from_slice(body).ok();
                match v.as_ref().and_then(|v| v.get("error")) {
                    Some(e) => {
                        let code = e["code"].as_str().unwrap_or("error");
                        let message = e["message"].as_str().unwrap_or("");
                        let mut line =
                            format!("error: {status} {code}: {}", output::clean(message, 500));
                        if let Some(field) = e["field"].as_str() {
                            line.push_str(&format!(" (field: {})", output::clean(field, 100)));
                        }
                        eprintln!("{line}");
                    }
                    // API Gateway's own answers: {"message": "Forbidden"}.
                    None => match v.as_ref().and_then(|v| v["message"].as_str()) {
                        Some(m) => eprintln!("error: {status}: {}", output::clean(m, 500)),
                        None => eprintln!(
                            "error: {status}: {}",
                            output::clean(&String::from_utf8_lossy(body), 500)
                        ),
                    },
                }
            }
            Self::Other(e) => {
                let connect = e
                    .chain()
                    .filter_map(|c| c.downcast_ref::<reqwest::Error>())
                    .any(|r| r.is_connect());
                if connect {
                    eprintln!("error: cannot connect to {base}: {e:#}");
                } else {
                    eprintln!("error: {e:#}");
                }
            }
        }
    }
}

/// Sends one request; the body of a 2xx answer, else a [`Failure`].
async fn call(
    up: &Upstream,
    method: Method,
    path: &str,
    body: Option<&Value>,
    extra: HeaderMap,
) -> Result<(u16, Bytes), Failure> {
    let mut headers = extra;
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let bytes = match body {
        Some(v) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Bytes::from(serde_json::to_vec(v).context("encoding the request")?)
        }
        None => Bytes::new(),
    };
    let resp = up.send(method, path, headers, bytes).await?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.context("reading the answer")?;
    if (200..300).contains(&status) {
        Ok((status, body))
    } else {
        Err(Failure::Api(status, body))
    }
}

fn parse(body: &Bytes) -> Result<Value, Failure> {
    Ok(serde_json::from_slice(body).context("the answer is not JSON")?)
}

/// The id as a path segment: anything but a plain id is percent-encoded, so the server
/// answers for the segment (`400` naming `task_id`) instead of another route.
fn task_path(id: &str, suffix: &str) -> String {
    item_path("/tasks", id, suffix)
}

/// `collection/{id}suffix`, the id percent-encoded as in [`task_path`].
fn item_path(collection: &str, id: &str, suffix: &str) -> String {
    let seg: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    format!("{collection}/{seg}{suffix}")
}

/// A command of either family, run the same way.
enum Family {
    Tasks(TasksCommand),
    Schedules(schedules::SchedulesCommand),
}

/// `task-scheduler tasks ...`.
pub(crate) fn run(args: Box<TasksArgs>) -> ExitCode {
    let TasksArgs {
        endpoint,
        json,
        command,
    } = *args;
    drive(&endpoint, json, Family::Tasks(command))
}

/// `task-scheduler schedules ...`.
pub(crate) fn run_schedules(args: Box<schedules::SchedulesArgs>) -> ExitCode {
    let schedules::SchedulesArgs {
        endpoint,
        json,
        command,
    } = *args;
    drive(&endpoint, json, Family::Schedules(command))
}

fn drive(endpoint: &EndpointArgs, json: bool, command: Family) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let up = match Upstream::new(endpoint).await {
            Ok(up) => up,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        let done = match command {
            Family::Tasks(c) => execute(&up, json, c).await,
            Family::Schedules(c) => schedules::execute(&up, json, c).await,
        };
        match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => {
                f.report(up.base());
                ExitCode::FAILURE
            }
        }
    })
}

async fn execute(up: &Upstream, json: bool, command: TasksCommand) -> Result<(), Failure> {
    match command {
        TasksCommand::Create(c) => {
            let mut body = c.task.into_json();
            c.when.into_json(&mut body);
            TASKS.create(up, json, body, c.idempotency_key).await
        }
        TasksCommand::List(l) => {
            let mut filters = Vec::new();
            if let Some(s) = &l.status {
                filters.push(("status", s.as_str()));
            }
            if let Some(s) = &l.schedule {
                filters.push(("schedule_id", s.as_str()));
            }
            TASKS.list(up, json, &filters, l.paging).await
        }
        TasksCommand::Get { task_id } => TASKS.show(up, json, &task_id).await,
        TasksCommand::Cancel { task_id } => {
            let path = task_path(&task_id, "");
            let (_, resp) = call(up, Method::DELETE, &path, None, HeaderMap::new()).await?;
            TASKS.print_row(json, &resp)
        }
        TasksCommand::Retry { task_id } => {
            let path = task_path(&task_id, "/retry");
            let (_, resp) = call(up, Method::POST, &path, None, HeaderMap::new()).await?;
            TASKS.print_row(json, &resp)
        }
        TasksCommand::Run { task_id } => {
            let path = task_path(&task_id, "/run");
            let (_, resp) = call(up, Method::POST, &path, None, HeaderMap::new()).await?;
            TASKS.print_row(json, &resp)
        }
        TasksCommand::Reschedule { task_id, when } => {
            let mut body = Map::new();
            when.into_json(&mut body);
            let path = task_path(&task_id, "");
            let (_, resp) = call(
                up,
                Method::PATCH,
                &path,
                Some(&Value::Object(body)),
                HeaderMap::new(),
            )
            .await?;
            TASKS.print_row(json, &resp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_data_as_typed() {
        assert_eq!(
            parse_header("X-Tenant: acme"),
            Ok(("X-Tenant".into(), "acme".into()))
        );
        assert_eq!(
            parse_header("Authorization: Bearer a:b"),
            Ok(("Authorization".into(), "Bearer a:b".into()))
        );
        assert!(parse_header("X-Tenant").is_err());
        assert!(parse_header(": v").is_err());
        assert_eq!(parse_data(r#"{"n":1}"#), Ok(json!({"n": 1})));
        assert!(parse_data("hello").is_err());
        assert!(parse_data("@/nonexistent/file.json").is_err());
    }

    #[test]
    fn an_id_is_one_path_segment() {
        assert_eq!(
            task_path("01JF3Q8R5V2Z6X4W9YH7K1M0NB", "/retry"),
            "/tasks/01JF3Q8R5V2Z6X4W9YH7K1M0NB/retry"
        );
        assert_eq!(task_path("../health", ""), "/tasks/..%2Fhealth");
    }
}
