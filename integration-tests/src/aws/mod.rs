//! Support for the cloud rehearsal: the AWS resources on moto server ([`AwsRig`]), the real
//! binary on cargo lambda's Lambda Runtime API ([`Function`]), API Gateway v2 events with an
//! IAM authorizer context ([`api_event`]), and the test playing EventBridge Scheduler and the
//! SQS event source ([`AwsRig::pump_delay_queue`], [`AwsRig::fire_schedule`]).
//!
//! - [`rig`]: the resources on moto, and the test playing Scheduler and SQS;
//! - [`events`]: the events Lambda's sources send, and the API's answers inside them;
//! - [`function`]: the binary on a Runtime API, its clock moved by libfaketime when asked;
//! - [`recorder`]: which AWS operations the function made, from moto's request recorder;
//! - [`proxy`]: faults on the function's AWS calls (the fault-injection rehearsal);
//! - [`killable`]: a function killed mid-invocation and restarted.
//!
//! Needs `AWS_ENDPOINT_URL` (moto), `cargo-lambda` (`$CARGO_LAMBDA`, else on PATH) and, for
//! a moved clock, libfaketime; `make test-aws` provides all three.

pub mod events;
pub mod function;
pub mod killable;
pub mod proxy;
pub mod recorder;
pub mod rig;

use std::time::{Duration, Instant};

pub use events::{api_event, api_response, at_time, sqs_event};
pub use function::{
    Function, bootstrap_command, cargo_lambda, metric_values, moved_clock_env, runtime_emulator,
    start_bootstrap,
};
pub use killable::{Fleet, Invoked, Killable};
pub use proxy::{FaultProxy, FaultRates};
pub use recorder::Recorder;
pub use rig::AwsRig;
pub use testkit::{emulator_endpoint, unique};

/// The function's name on cargo lambda's Runtime API (`--only-lambda-apis` serves `_`).
pub const FUNCTION: &str = "_";
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/task-scheduler-scheduler";
/// The SDK's app id in the function's User-Agent: tells its AWS calls from the test's.
pub const FUNCTION_APP_ID: &str = "task-scheduler-fn";

/// Waits until `f` returns `Some`, polling every 50 ms, up to `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
