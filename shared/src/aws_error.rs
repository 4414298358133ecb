//! One way to turn an AWS SDK error into a `PortError`: the operation's name, then the
//! service's error code and message (or the transport's error chain). SDK types stay here
//! and in the adapters; the use cases see `PortError` only.

// Every SDK crate re-exports the same smithy types; any one of them names them for all.
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::ports::PortError;

pub(crate) fn sdk_error<E, R>(op: &str, e: &SdkError<E, R>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("error"),
            s.message().unwrap_or_default()
        ),
        None => DisplayErrorContext(e).to_string(),
    };
    PortError::Unavailable(format!("{op}: {detail}"))
}
