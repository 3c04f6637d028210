//! Logging. Logs go to stderr (stdout carries the CLI's answers); JSON in production, human
//! readable in a terminal. Request headers are never logged; `Authorization`, `Cookie` and
//! `Set-Cookie` are also marked sensitive by the HTTP middleware.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    // sqlx reports server notices ("relation already exists, skipping") at info.
    let filter = EnvFilter::try_new(format!("sqlx::postgres::notice=warn,{}", config.level))
        .map_err(|err| anyhow::anyhow!("key `log.level`: {err}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Human => builder.try_init(),
    };
    result.map_err(|err| anyhow::anyhow!("installing the log subscriber: {err}"))
}
