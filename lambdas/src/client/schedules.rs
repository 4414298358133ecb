//! `task-scheduler schedules ...`: recurring schedules over the API, with the task template
//! options of `tasks create` ([`TaskTemplate`]) and the same output and exit codes.

use clap::{ArgGroup, Args, Subcommand};
use http::{HeaderMap, Method};
use serde_json::{Map, Value, json};

use super::{
    Collection, Failure, Paging, TASKS, TaskTemplate, call, item_path, output,
    upstream::{EndpointArgs, Upstream},
    when,
};

/// `task-scheduler schedules`.
#[derive(Args, Debug)]
pub(crate) struct SchedulesArgs {
    #[command(flatten)]
    pub(super) endpoint: EndpointArgs,
    /// Print the API's JSON as it came, for scripts
    #[arg(long, global = true)]
    pub(super) json: bool,
    #[command(subcommand)]
    pub(super) command: SchedulesCommand,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SchedulesCommand {
    /// Create a schedule: call URL on a cron expression (--cron) or a period (--every)
    Create(CreateArgs),
    /// List your schedules, in creation order
    List(ListArgs),
    /// Show a schedule: its plan, next runs (in its zone and in UTC) and last occurrence
    Get { schedule_id: String },
    /// Change a schedule's plan, zone or end; the next occurrence is planned after now
    Update(UpdateArgs),
    /// Pause a schedule: its pending occurrence is cancelled, no other is made
    Pause { schedule_id: String },
    /// Resume a paused schedule: the next occurrence is planned after now
    Resume { schedule_id: String },
    /// Run a schedule's task once now, outside its plan
    Trigger { schedule_id: String },
    /// Delete a schedule; the occurrences that ran keep their history
    Delete { schedule_id: String },
}

/// The plan: exactly one of the two.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("plan").required(true).args(["cron", "every"])))]
pub(crate) struct Plan {
    /// A cron expression, 5 fields or 6 with seconds first, e.g. '0 9 * * MON-FRI'
    #[arg(long)]
    cron: Option<String>,
    /// A fixed period: a whole number and one unit, e.g. 90s, 15m, 1h, 1d
    #[arg(long)]
    every: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    plan: Plan,
    /// The IANA time zone the cron expression is read in [default: UTC]
    #[arg(long)]
    tz: Option<String>,
    /// No occurrence before this RFC 3339 time; --every counts from it
    #[arg(long, value_parser = when::at)]
    start_at: Option<String>,
    /// No occurrence after this RFC 3339 time
    #[arg(long, value_parser = when::at)]
    end_at: Option<String>,
    /// Create it paused: no occurrence until `schedules resume`
    #[arg(long)]
    paused: bool,
    #[command(flatten)]
    task: TaskTemplate,
    /// A repeat with the same key and body returns the first schedule instead of a new one
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)
    .args(["cron", "every", "tz", "end_at", "no_end"])))]
pub(crate) struct UpdateArgs {
    schedule_id: String,
    /// A new cron expression (replaces --every)
    #[arg(long, conflicts_with = "every")]
    cron: Option<String>,
    /// A new period (replaces --cron); counts from now
    #[arg(long)]
    every: Option<String>,
    /// A new IANA time zone
    #[arg(long)]
    tz: Option<String>,
    /// A new end: no occurrence after this RFC 3339 time
    #[arg(long, value_parser = when::at, conflicts_with = "no_end")]
    end_at: Option<String>,
    /// Remove the end
    #[arg(long)]
    no_end: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    paging: Paging,
}

const SCHEDULES: Collection = Collection {
    path: "/schedules",
    key: "schedules",
    noun: "schedule",
    table: output::schedules,
    detail: output::schedule,
};

fn path(id: &str, suffix: &str) -> String {
    item_path("/schedules", id, suffix)
}

async fn patch(up: &Upstream, json: bool, id: &str, body: Value) -> Result<(), Failure> {
    let (_, resp) = call(
        up,
        Method::PATCH,
        &path(id, ""),
        Some(&body),
        HeaderMap::new(),
    )
    .await?;
    SCHEDULES.print_row(json, &resp)
}

pub(super) async fn execute(
    up: &Upstream,
    json: bool,
    command: SchedulesCommand,
) -> Result<(), Failure> {
    match command {
        SchedulesCommand::Create(c) => {
            let mut body = Map::new();
            if let Some(cron) = c.plan.cron {
                body.insert("cron".into(), cron.into());
            }
            if let Some(every) = c.plan.every {
                body.insert("every".into(), every.into());
            }
            if let Some(tz) = c.tz {
                body.insert("timezone".into(), tz.into());
            }
            if let Some(t) = c.start_at {
                body.insert("start_at".into(), t.into());
            }
            if let Some(t) = c.end_at {
                body.insert("end_at".into(), t.into());
            }
            if c.paused {
                body.insert("paused".into(), true.into());
            }
            body.insert("task".into(), c.task.into_json().into());
            SCHEDULES.create(up, json, body, c.idempotency_key).await
        }
        SchedulesCommand::List(l) => SCHEDULES.list(up, json, &[], l.paging).await,
        SchedulesCommand::Get { schedule_id } => SCHEDULES.show(up, json, &schedule_id).await,
        SchedulesCommand::Update(u) => {
            let mut body = Map::new();
            if let Some(cron) = u.cron {
                body.insert("cron".into(), cron.into());
            }
            if let Some(every) = u.every {
                body.insert("every".into(), every.into());
            }
            if let Some(tz) = u.tz {
                body.insert("timezone".into(), tz.into());
            }
            if let Some(t) = u.end_at {
                body.insert("end_at".into(), t.into());
            }
            if u.no_end {
                body.insert("end_at".into(), Value::Null);
            }
            patch(up, json, &u.schedule_id, Value::Object(body)).await
        }
        SchedulesCommand::Pause { schedule_id } => {
            patch(up, json, &schedule_id, json!({"paused": true})).await
        }
        SchedulesCommand::Resume { schedule_id } => {
            patch(up, json, &schedule_id, json!({"paused": false})).await
        }
        SchedulesCommand::Trigger { schedule_id } => {
            let (_, resp) = call(
                up,
                Method::POST,
                &path(&schedule_id, "/trigger"),
                None,
                HeaderMap::new(),
            )
            .await?;
            TASKS.print_row(json, &resp)
        }
        SchedulesCommand::Delete { schedule_id } => {
            let (_, resp) = call(
                up,
                Method::DELETE,
                &path(&schedule_id, ""),
                None,
                HeaderMap::new(),
            )
            .await?;
            SCHEDULES.print_row(json, &resp)
        }
    }
}
