//! Long work NinjaTrader 8 does for a user (a backtest, a compile, a strategy deployment): a job
//! the server records in PostgreSQL, started by one tool call and reported by the Add-On's
//! events, so it outlives the client's request, its connection and the replica that started it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What a job does. Stored and shown as its snake-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Backtest,
    Compile,
    Deploy,
}

impl JobKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            JobKind::Backtest => "backtest",
            JobKind::Compile => "compile",
            JobKind::Deploy => "deploy",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "backtest" => Some(JobKind::Backtest),
            "compile" => Some(JobKind::Compile),
            "deploy" => Some(JobKind::Deploy),
            _ => None,
        }
    }
}

/// Where a job stands. `starting` until the Add-On confirms it; the last three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Starting,
    Running,
    Cancelling,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Starting => "starting",
            JobState::Running => "running",
            JobState::Cancelling => "cancelling",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "starting" => JobState::Starting,
            "running" => JobState::Running,
            "cancelling" => JobState::Cancelling,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// No event changes a job in a final state.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A job as tools show it. `version` grows with every change, so a waiter can tell news.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: Uuid,
    pub kind: JobKind,
    /// The tool that started it, e.g. `RunStrategyBacktest`.
    pub tool: String,
    pub state: JobState,
    /// From 0 to 1, as last reported by the Add-On.
    pub progress: Option<f64>,
    /// The Add-On's last progress message, e.g. "Backtesting 2026-03-02".
    pub message: Option<String>,
    /// What was asked (strategy, instrument, dates, account), never file contents.
    pub summary: Value,
    /// The outcome once completed (backtest statistics, compiler errors, strategy id).
    pub result: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub version: i64,
}

/// A job to start.
#[derive(Debug, Clone)]
pub struct JobStart {
    pub user_id: Uuid,
    pub kind: JobKind,
    pub tool: String,
    /// The tool's arguments as the Add-On receives them (the server adds `job_id`).
    pub arguments: Value,
    pub summary: Value,
    /// With a key, a repeat returns the job the first call started.
    pub idempotency_key: Option<String>,
}

/// Which jobs a listing covers, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub kind: Option<JobKind>,
    /// `Some(true)`: only jobs still open; `Some(false)`: only finished ones.
    pub open: Option<bool>,
    pub since: Option<DateTime<Utc>>,
    pub limit: u32,
}

/// Why a job request got no job: the model's mistake (told back as a tool error) or the
/// Add-On's absence (the relay's errors, HTTP-level).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Call(#[from] crate::CallError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_final_states_are_exactly_three() {
        for kind in [JobKind::Backtest, JobKind::Compile, JobKind::Deploy] {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                Value::String(kind.as_str().to_owned())
            );
        }
        let states = [
            JobState::Starting,
            JobState::Running,
            JobState::Cancelling,
            JobState::Completed,
            JobState::Failed,
            JobState::Cancelled,
        ];
        for state in states {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                Value::String(state.as_str().to_owned())
            );
        }
        let finals: Vec<_> = states.iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            [
                &JobState::Completed,
                &JobState::Failed,
                &JobState::Cancelled
            ]
        );
        assert_eq!(JobKind::parse("Backtest"), None);
        assert_eq!(JobState::parse("done"), None);
    }
}
