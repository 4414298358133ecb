//! The one binary. `serve` runs the scheduler locally; in AWS Lambda the same binary is the
//! function's bootstrap. Thin on purpose: logging, configuration, run. Beside them, the
//! API's clients: `tasks` (the command line, [`client`]) and `console` (the console's page
//! with a signing proxy, [`console`]), which call the API over HTTP like any client.

mod client;
mod console;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "task-scheduler",
    version,
    about = "A durable \"call this webhook at that time\" service"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scheduler on this machine (SQLite store, in-process timer).
    Serve {
        /// Address to listen on [default: 127.0.0.1:$PORT, or 127.0.0.1:3000]
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run as the AWS Lambda function (DynamoDB, EventBridge Scheduler, SQS). Chosen
    /// automatically when AWS_LAMBDA_RUNTIME_API is set and no subcommand is given.
    #[cfg(feature = "aws")]
    Lambda,
    /// Call the API: create, list, get, cancel, retry, run and reschedule tasks
    Tasks(Box<client::TasksArgs>),
    /// Call the API: create, list, get, update, pause, resume, trigger and delete recurring
    /// schedules
    Schedules(Box<client::schedules::SchedulesArgs>),
    /// Serve the operator console on loopback, forwarding its API calls to --endpoint with
    /// your credentials (SigV4 for API Gateway, TASK_SCHEDULER_TOKEN for a local server)
    Console(console::ConsoleArgs),
}

/// JSON logs (with the span's task id and attempt) when `LOG_FORMAT=json`, and always in
/// Lambda, where CloudWatch Logs Insights queries them.
fn init_tracing(lambda: bool) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = lambda || std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    if json {
        fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        fmt().with_env_filter(filter).init();
    }
}

/// Cancels the token on SIGINT or SIGTERM.
fn on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            let mut s = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            s.recv().await;
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutdown requested");
        token.cancel();
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The client prints its own errors and exit codes (1: the API said no, or no answer).
    let cli = match cli.command {
        Some(Command::Tasks(args)) => return client::run(args),
        Some(Command::Schedules(args)) => return client::run_schedules(args),
        command => Cli { command },
    };
    match host(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

fn host(cli: Cli) -> anyhow::Result<()> {
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    let command = match cli.command {
        Some(command) => command,
        #[cfg(feature = "aws")]
        None if in_lambda => Command::Lambda,
        #[cfg(not(feature = "aws"))]
        None if in_lambda => anyhow::bail!(
            "AWS_LAMBDA_RUNTIME_API is set, but this build has no Lambda host (build with the `aws` feature)"
        ),
        None => Command::Serve { listen: None },
    };
    #[cfg(feature = "aws")]
    init_tracing(matches!(command, Command::Lambda));
    #[cfg(not(feature = "aws"))]
    init_tracing(false);
    match command {
        Command::Serve { listen } => {
            let config = shared::local::LocalConfig::from_env(listen)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let token = CancellationToken::new();
                    on_signal(token.clone());
                    shared::local::serve(config, token).await
                })
        }
        // One thread: Lambda hands an instance one invocation at a time (an SQS batch's
        // wake-ups still run concurrently, on I/O) and at 256 MB grants a fraction of a
        // vCPU, so worker threads would only add cross-thread wake-ups. Measured with
        // `make bench-aws`: about a quarter less CPU per request than the multi-threaded runtime
        // (create 0.75 → 0.55 ms, fire 0.88 → 0.63 ms).
        #[cfg(feature = "aws")]
        Command::Lambda => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(shared::lambda::run())
            .map_err(anyhow::Error::from_boxed),
        Command::Console(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let token = CancellationToken::new();
                on_signal(token.clone());
                console::run(args, token).await
            }),
        Command::Tasks(_) | Command::Schedules(_) => unreachable!("handled in main"),
    }
}
