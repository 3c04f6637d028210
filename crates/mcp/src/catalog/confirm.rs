//! The tools of orders a person confirms: which tools the account's policy may hold, the tool
//! that runs a call once the person approved it, and the account's confirmation history.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use vocabulary::confirm::Gate;

use super::{Args, BackendTool, Effect, Route, ToolDef, check_as, read, schema_of};
use crate::auth::Scope;

/// The gate of each tool the policy covers. Cancels only remove resting orders or stop
/// automation (they never add exposure, and a person getting out must not wait for a page), so
/// they are held only when the account asks for it.
pub(super) fn gate_of(name: &str) -> Option<Gate> {
    Some(match name {
        "PlaceOrder" | "ModifyOrder" | "ReversePosition" | "FlattenPosition" | "FlattenAll" => {
            Gate::Order
        }
        "DeployStrategy" => Gate::Deploy,
        "StopStrategy" => Gate::StopFlatten,
        "CancelOrder" | "CancelAllOrders" => Gate::Cancel,
        _ => return None,
    })
}

pub(super) fn definitions() -> Vec<ToolDef> {
    vec![
        ToolDef {
            name: "ConfirmTrade",
            title: "Send an approved order",
            description: "Send an order (or other held trade call) after the person approved it \
                on the CrossTrade confirmation page. When the account's policy holds a call, the \
                tool answers with status confirmation_required, a confirmation_id and a \
                confirm_url: show the URL to the person and ask them to open it and approve; then \
                call this with the confirmation_id. `wait_seconds` (up to 50) waits for their \
                decision. Runs the call exactly once; you cannot approve it yourself, and a \
                rejected or expired confirmation sends nothing.",
            scope: Scope::Trade,
            route: Route::Backend(BackendTool::ConfirmTrade),
            effect: Effect::trade(false),
            input_schema: schema_of::<ConfirmTradeArgs>(),
            check: check_as::<ConfirmTradeArgs>,
            output_schema: None,
            needs_feature: None,
            confirm: None,
        },
        read::<ConfirmationsQuery, ConfirmationsOutput>(
            "GetTradeConfirmations",
            "Read trade confirmations",
            "List this account's trade confirmations, newest first: the held call and its \
             preview, why it was held, the person's decision and when, and what NinjaTrader 8 \
             answered once it was sent. Filter by `state`.",
            Route::Backend(BackendTool::TradeConfirmations),
        ),
    ]
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTradeArgs {
    /// The confirmation_id a held call returned.
    #[schemars(length(min = 36, max = 36))]
    pub confirmation_id: String,
    /// Wait up to this many seconds (default 0) for the person's decision.
    #[schemars(range(min = 0, max = 50))]
    pub wait_seconds: Option<u32>,
}
impl Args for ConfirmTradeArgs {}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateArg {
    Pending,
    Approved,
    Rejected,
    Expired,
    Abandoned,
    Used,
}

impl StateArg {
    pub fn state(self) -> vocabulary::confirm::ConfirmationState {
        use vocabulary::confirm::ConfirmationState as S;
        match self {
            StateArg::Pending => S::Pending,
            StateArg::Approved => S::Approved,
            StateArg::Rejected => S::Rejected,
            StateArg::Expired => S::Expired,
            StateArg::Abandoned => S::Abandoned,
            StateArg::Used => S::Used,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationsQuery {
    /// Only confirmations in this state.
    pub state: Option<StateArg>,
    /// At most this many (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
}
impl Args for ConfirmationsQuery {}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ConfirmationsOutput {
    confirmations: Vec<Map<String, Value>>,
}

/// ConfirmTrade's confirmation and wait.
pub fn confirm_args(arguments: Value) -> Result<(uuid::Uuid, std::time::Duration), String> {
    let args: ConfirmTradeArgs =
        serde_json::from_value(arguments).map_err(|err| format!("invalid arguments: {err}"))?;
    let id = uuid::Uuid::parse_str(&args.confirmation_id).map_err(|_| {
        format!(
            "confirmation_id {:?} is not one: use the confirmation_id a held call returned",
            args.confirmation_id
        )
    })?;
    let wait = args.wait_seconds.unwrap_or(0).min(50);
    Ok((id, std::time::Duration::from_secs(u64::from(wait))))
}

/// GetTradeConfirmations' filter and limit.
pub fn confirmations_args(
    arguments: Value,
) -> Result<(Option<vocabulary::confirm::ConfirmationState>, u32), String> {
    let args: ConfirmationsQuery =
        serde_json::from_value(arguments).map_err(|err| format!("invalid arguments: {err}"))?;
    Ok((args.state.map(StateArg::state), args.limit.unwrap_or(20)))
}
