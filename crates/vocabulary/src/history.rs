//! Questions about what was stored from the Add-On (its events and the calls relayed to it),
//! answered whether or not it is connected now. The MCP catalog builds them from a tool's
//! arguments and the Add-On bridge answers them, so both speak these types.

use chrono::{DateTime, Utc};

/// One stored-history question.
#[derive(Debug, Clone, PartialEq)]
pub enum HistoryRequest {
    /// Completed round-trip trades, newest first.
    Journal(HistoryFilter),
    /// The calls this server relayed to the Add-On, newest first.
    Activity { limit: u32 },
    /// Per-account watermarks of net liquidation value, for one account or all; with a
    /// trailing-drawdown rule also its threshold.
    Watermarks {
        account: Option<String>,
        trailing: Option<TrailingRule>,
    },
    /// Webhook signals the Add-On received, newest first, one page.
    WebhookSignals(SignalFilter),
    /// What the trade copier did per leader fill and follower, newest first, one page.
    CopierActions(SignalFilter),
}

/// A trailing-drawdown rule as funded-account firms state it: the account fails when its value
/// falls to `amount` below its peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrailingRule {
    /// How far below the peak the threshold trails (positive).
    pub amount: f64,
    pub mode: TrailingMode,
    /// The threshold never rises above this value (often the starting balance).
    pub stop_at: Option<f64>,
}

/// Which values move the peak a trailing threshold follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrailingMode {
    /// Every snapshot, as it happens.
    #[default]
    Intraday,
    /// The last snapshot of each completed session.
    EndOfDay,
}

/// Which stored entries a history request covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub account: Option<String>,
    pub instrument: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// At most this many entries (the reader's default when absent).
    pub limit: Option<u32>,
}

/// Which webhook signals or copier actions a request covers, and where its page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalFilter {
    /// Only this account (for copier actions: as leader or follower).
    pub account: Option<String>,
    /// Only this outcome (one of the kind's outcomes, as the Add-On reports them).
    pub outcome: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// At most this many entries on the page.
    pub limit: u32,
    /// The `next_cursor` of the previous page, as the reader returned it (opaque here).
    pub cursor: Option<String>,
}
