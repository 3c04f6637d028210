//! Logging, and traces when configured. Logs go to stderr (stdout carries the CLI's answers;
//! batched per runtime worker, [`crate::log_writer`]);
//! JSON in production, human readable in a terminal. Request headers are never logged;
//! `Authorization`, `Cookie` and `Set-Cookie` are also marked sensitive by the HTTP middleware.
//! Traces: [`crate::otel`].

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogConfig, LogFormat, TracesConfig};

pub fn init(config: &LogConfig, traces: &TracesConfig) -> anyhow::Result<()> {
    init_writing_to(config, traces, crate::log_writer::BatchedStderr)
}

/// [`init`] with the log lines written to `writer` instead of stderr.
pub fn init_writing_to<W>(
    config: &LogConfig,
    traces: &TracesConfig,
    writer: W,
) -> anyhow::Result<()>
where
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    // sqlx reports server notices ("relation already exists, skipping") at info.
    let filter = EnvFilter::try_new(format!("sqlx::postgres::notice=warn,{}", config.level))
        .map_err(|err| anyhow::anyhow!("key `log.level`: {err}"))?;
    let spans = match traces.otlp_endpoint.trim() {
        "" => None,
        endpoint => Some(crate::otel::layer(
            crate::otel::Endpoint::parse(endpoint)?,
            &traces.service_name,
        )?),
    };
    let logs = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(crate::json_log::JsonMembers)
            .event_format(crate::json_log::JsonLines)
            .with_writer(writer)
            .boxed(),
        LogFormat::Human => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(spans)
        .with(logs)
        .try_init()
        .map_err(|err| anyhow::anyhow!("installing the log subscriber: {err}"))
}
