//! Questions about what was stored from the Add-On (its events and the calls relayed to it),
//! answered whether or not it is connected now. The MCP catalog builds them from a tool's
//! arguments and the Add-On bridge answers them, so both speak these types.

use chrono::{DateTime, Utc};

/// One stored-history question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryRequest {
    /// Completed round-trip trades, newest first.
    Journal(HistoryFilter),
    /// The calls this server relayed to the Add-On, newest first.
    Activity { limit: u32 },
    /// Per-account watermarks, for one account or all.
    Watermarks { account: Option<String> },
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
