//! Orders a person confirms: the per-account policy that says which tool calls wait for a
//! person's decision, the words a confirmation is recorded with, the built-in point values used
//! to estimate an order's notional, and the canonical JSON its arguments are hashed in.
//!
//! Everything here is pure: the MCP gate measures the order, the store keeps the rows.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Defines a fieldless enum stored and shown as fixed snake-case names.
macro_rules! named {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named! {
    /// Which order-affecting calls wait for a person.
    Mode {
        /// Every gated call (the default, also for an account with no stored policy).
        Every = "every",
        /// Only calls whose size or estimated notional is above the account's limits.
        Above = "above",
        /// None: the model trades on its own.
        Never = "never",
    }
}

named! {
    /// Where a confirmation stands. `pending` → `approved` → `used`; the others are final.
    ConfirmationState {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
        Expired = "expired",
        Abandoned = "abandoned",
        Used = "used",
    }
}

impl ConfirmationState {
    /// No decision or claim moves a confirmation out of a final state.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            ConfirmationState::Rejected
                | ConfirmationState::Expired
                | ConfirmationState::Abandoned
                | ConfirmationState::Used
        )
    }
}

named! {
    /// How the person is asked.
    Channel {
        /// A form the AI client shows (MCP elicitation, form mode).
        ElicitationForm = "elicitation_form",
        /// The client opens the CrossTrade confirmation page for the person (URL mode).
        ElicitationUrl = "elicitation_url",
        /// The model is handed the confirmation page's address to pass on.
        Link = "link",
    }
}

impl Channel {
    /// The person decides on the CrossTrade page, not inside the AI client.
    pub const fn is_page(self) -> bool {
        matches!(self, Channel::ElicitationUrl | Channel::Link)
    }
}

named! {
    /// Why a call was held for confirmation.
    Reason {
        PolicyEvery = "policy_every",
        QuantityAbove = "quantity_above",
        NotionalAbove = "notional_above",
        /// A limit is set but the size could not be estimated: held rather than guessed.
        SizeUnknown = "size_unknown",
        /// Strategies and their flattening have no size to compare: held under `above`.
        AlwaysConfirmed = "always_confirmed",
        CancelPolicy = "cancel_policy",
    }
}

named! {
    /// What the person answered: `accept`/`decline`/`cancel` in an elicitation,
    /// `approve`/`reject` on the page.
    Decision {
        Accept = "accept",
        Decline = "decline",
        Cancel = "cancel",
        Approve = "approve",
        Reject = "reject",
    }
}

named! {
    /// What ended the wait for a decision.
    DecidedVia {
        Page = "page",
        Elicitation = "elicitation",
        Expiry = "expiry",
        ClientGone = "client_gone",
    }
}

/// Which kind of tool a call is, as far as confirmation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gate {
    /// Opens, changes, reverses or closes positions (PlaceOrder, ModifyOrder, ReversePosition,
    /// FlattenPosition, FlattenAll): compared with the limits under `above`.
    Order,
    /// Starts a strategy (DeployStrategy): its orders are unknown in advance.
    Deploy,
    /// Stops a strategy and closes its positions (StopStrategy with `flatten`).
    StopFlatten,
    /// Only removes resting orders or stops automation: confirmed only with `confirm_cancels`.
    Cancel,
}

/// How big a gated call is, as far as it could be estimated. `None` is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Size {
    /// Contracts or shares the call may trade.
    pub quantity: Option<u64>,
    /// quantity × price × point value, in the account currency.
    pub notional: Option<f64>,
}

impl Size {
    pub const UNKNOWN: Size = Size {
        quantity: None,
        notional: None,
    };
}

/// The largest `max_quantity`.
pub const MAX_QUANTITY_LIMIT: u32 = 10_000;

/// An account's confirmation policy. Build it with [`Policy::new`] or deserialize it; both
/// validate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PolicyFields")]
pub struct Policy {
    pub mode: Mode,
    /// Under `above`: confirm when the quantity is above this (1..=10000).
    pub max_quantity: Option<u32>,
    /// Under `above`: confirm when the estimated notional is above this (> 0).
    pub max_notional: Option<f64>,
    /// Also confirm cancels (a cancelled protective stop leaves a position unprotected).
    pub confirm_cancels: bool,
    /// Never accept an answer given inside the AI client; only the CrossTrade page decides.
    pub page_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFields {
    mode: Mode,
    #[serde(default)]
    max_quantity: Option<u32>,
    #[serde(default)]
    max_notional: Option<f64>,
    #[serde(default)]
    confirm_cancels: bool,
    #[serde(default)]
    page_only: bool,
}

impl TryFrom<PolicyFields> for Policy {
    type Error = InvalidPolicy;

    fn try_from(fields: PolicyFields) -> Result<Self, Self::Error> {
        Policy::new(
            fields.mode,
            fields.max_quantity,
            fields.max_notional,
            fields.confirm_cancels,
            fields.page_only,
        )
    }
}

/// Why a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPolicy {
    #[error("unknown mode {0:?}: expected every, above or never")]
    Mode(String),
    #[error("max_quantity must be between 1 and {MAX_QUANTITY_LIMIT}")]
    MaxQuantity,
    #[error("max_notional must be a number above 0")]
    MaxNotional,
    #[error("mode above needs max_quantity or max_notional")]
    AboveWithoutLimit,
}

impl Default for Policy {
    /// Every order waits for a person: the policy of an account that never chose one.
    fn default() -> Self {
        Policy {
            mode: Mode::Every,
            max_quantity: None,
            max_notional: None,
            confirm_cancels: false,
            page_only: false,
        }
    }
}

impl Policy {
    /// A validated policy. Limits are kept under `every` and `never` (they return with `above`).
    pub fn new(
        mode: Mode,
        max_quantity: Option<u32>,
        max_notional: Option<f64>,
        confirm_cancels: bool,
        page_only: bool,
    ) -> Result<Self, InvalidPolicy> {
        let policy = Policy {
            mode,
            max_quantity,
            max_notional,
            confirm_cancels,
            page_only,
        };
        policy.validate()?;
        Ok(policy)
    }

    /// Parses the mode's name, then validates like [`Policy::new`].
    pub fn parse(
        mode: &str,
        max_quantity: Option<u32>,
        max_notional: Option<f64>,
        confirm_cancels: bool,
        page_only: bool,
    ) -> Result<Self, InvalidPolicy> {
        let mode = Mode::parse(mode.trim()).ok_or_else(|| InvalidPolicy::Mode(mode.to_owned()))?;
        Policy::new(mode, max_quantity, max_notional, confirm_cancels, page_only)
    }

    /// The rules the database's CHECKs also hold.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        if self
            .max_quantity
            .is_some_and(|limit| !(1..=MAX_QUANTITY_LIMIT).contains(&limit))
        {
            return Err(InvalidPolicy::MaxQuantity);
        }
        if self
            .max_notional
            .is_some_and(|limit| !limit.is_finite() || limit <= 0.0)
        {
            return Err(InvalidPolicy::MaxNotional);
        }
        if self.mode == Mode::Above && self.max_quantity.is_none() && self.max_notional.is_none() {
            return Err(InvalidPolicy::AboveWithoutLimit);
        }
        Ok(())
    }

    /// Whether a call of kind `gate` and size `size` waits for a person, and why. A limit
    /// that cannot be checked because the size is unknown holds the call (fail closed).
    pub fn requires(&self, gate: Gate, size: &Size) -> Option<Reason> {
        if self.mode == Mode::Never {
            return None;
        }
        match gate {
            Gate::Cancel => self.confirm_cancels.then_some(Reason::CancelPolicy),
            _ if self.mode == Mode::Every => Some(Reason::PolicyEvery),
            Gate::Deploy | Gate::StopFlatten => Some(Reason::AlwaysConfirmed),
            Gate::Order => self.above(size),
        }
    }

    fn above(&self, size: &Size) -> Option<Reason> {
        if let Some(limit) = self.max_quantity {
            match size.quantity {
                None => return Some(Reason::SizeUnknown),
                Some(quantity) if quantity > u64::from(limit) => {
                    return Some(Reason::QuantityAbove);
                }
                Some(_) => {}
            }
        }
        if let Some(limit) = self.max_notional {
            match size.notional.filter(|notional| notional.is_finite()) {
                None => return Some(Reason::SizeUnknown),
                Some(notional) if notional.abs() > limit => return Some(Reason::NotionalAbove),
                Some(_) => {}
            }
        }
        None
    }
}

/// Currency per point per contract of common futures roots (NinjaTrader's
/// `MasterInstrument.PointValue`), for instruments whose quote does not carry one.
pub const POINT_VALUES: &[(&str, f64)] = &[
    // Equity indices (CME, CBOT).
    ("ES", 50.0),
    ("MES", 5.0),
    ("NQ", 20.0),
    ("MNQ", 2.0),
    ("YM", 5.0),
    ("MYM", 0.5),
    ("RTY", 50.0),
    ("M2K", 5.0),
    ("EMD", 100.0),
    // Energy (NYMEX).
    ("CL", 1000.0),
    ("MCL", 100.0),
    ("QM", 500.0),
    ("NG", 10_000.0),
    ("QG", 2500.0),
    ("HO", 42_000.0),
    ("RB", 42_000.0),
    // Metals (COMEX, NYMEX).
    ("GC", 100.0),
    ("MGC", 10.0),
    ("SI", 5000.0),
    ("SIL", 1000.0),
    ("HG", 25_000.0),
    ("PL", 50.0),
    ("PA", 100.0),
    // Interest rates (CBOT).
    ("ZB", 1000.0),
    ("UB", 1000.0),
    ("ZN", 1000.0),
    ("TN", 1000.0),
    ("ZF", 1000.0),
    ("ZT", 2000.0),
    // Grains and livestock (CBOT, CME), quoted in cents.
    ("ZC", 50.0),
    ("ZS", 50.0),
    ("ZW", 50.0),
    ("ZM", 100.0),
    ("ZL", 600.0),
    ("LE", 400.0),
    ("HE", 400.0),
    ("GF", 500.0),
    // Currencies (CME).
    ("6E", 125_000.0),
    ("M6E", 12_500.0),
    ("6B", 62_500.0),
    ("6J", 12_500_000.0),
    ("6A", 100_000.0),
    ("6C", 100_000.0),
    ("6S", 125_000.0),
    // Crypto (CME).
    ("BTC", 5.0),
    ("MBT", 0.1),
    ("ETH", 50.0),
    ("MET", 0.1),
    // Eurex.
    ("FDAX", 25.0),
    ("FDXM", 5.0),
    ("FESX", 10.0),
    ("FGBL", 1000.0),
];

/// The point value of an instrument named as NinjaTrader names it (`"ES 03-26"`: root, space,
/// contract month): the table's value for a known root, 1 for a name without a contract month
/// (a stock), and unknown for any other future.
pub fn point_value(instrument: &str) -> Option<f64> {
    let name = instrument.trim();
    let (root, month) = match name.split_once(' ') {
        Some((root, month)) => (root, Some(month)),
        None => (name, None),
    };
    if root.is_empty() {
        return None;
    }
    let known = POINT_VALUES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(root))
        .map(|&(_, value)| value);
    match (known, month) {
        (Some(value), _) => Some(value),
        (None, None) => Some(1.0),
        (None, Some(_)) => None,
    }
}

/// `value` as JSON with every object's keys sorted (by their UTF-8 bytes) and no whitespace:
/// the same arguments always give the same text, whatever order they arrived in.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(text) => write_string(text, out),
        // Numbers, booleans and null print the same wherever they sit.
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

fn write_string(text: &str, out: &mut String) {
    let _ = write!(out, "{}", Value::String(text.to_owned()));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn above(max_quantity: Option<u32>, max_notional: Option<f64>) -> Policy {
        Policy::new(Mode::Above, max_quantity, max_notional, false, false).expect("valid")
    }

    fn size(quantity: Option<u64>, notional: Option<f64>) -> Size {
        Size { quantity, notional }
    }

    #[test]
    fn requires_follows_the_policy_table() {
        use Reason::{
            AlwaysConfirmed, CancelPolicy, NotionalAbove, PolicyEvery, QuantityAbove, SizeUnknown,
        };

        let every = Policy::default();
        let never = Policy::new(Mode::Never, Some(1), None, true, false).expect("valid");
        let cancels = Policy {
            confirm_cancels: true,
            ..Policy::default()
        };
        let qty = above(Some(2), None);
        let notional = above(None, Some(10_000.0));
        let both = above(Some(2), Some(10_000.0));
        let small = size(Some(1), Some(5000.0));
        let unknown = Size::UNKNOWN;
        let cases: &[(&Policy, Gate, Size, Option<Reason>)] = &[
            (&every, Gate::Order, small, Some(PolicyEvery)),
            (&every, Gate::Order, unknown, Some(PolicyEvery)),
            (&every, Gate::Deploy, unknown, Some(PolicyEvery)),
            (&every, Gate::StopFlatten, unknown, Some(PolicyEvery)),
            (&every, Gate::Cancel, unknown, None),
            (&cancels, Gate::Cancel, unknown, Some(CancelPolicy)),
            (&never, Gate::Order, size(Some(500), None), None),
            (&never, Gate::Deploy, unknown, None),
            (&never, Gate::Cancel, unknown, None),
            (&qty, Gate::Order, size(Some(2), None), None),
            (&qty, Gate::Order, size(Some(3), None), Some(QuantityAbove)),
            (&qty, Gate::Order, size(None, Some(1.0)), Some(SizeUnknown)),
            (&qty, Gate::Deploy, small, Some(AlwaysConfirmed)),
            (&qty, Gate::StopFlatten, small, Some(AlwaysConfirmed)),
            (&qty, Gate::Cancel, small, None),
            (
                &notional,
                Gate::Order,
                size(Some(100), Some(10_000.0)),
                None,
            ),
            (
                &notional,
                Gate::Order,
                size(Some(1), Some(10_000.5)),
                Some(NotionalAbove),
            ),
            (
                &notional,
                Gate::Order,
                size(Some(1), Some(-20_000.0)),
                Some(NotionalAbove),
            ),
            (
                &notional,
                Gate::Order,
                size(Some(1), None),
                Some(SizeUnknown),
            ),
            (
                &notional,
                Gate::Order,
                size(Some(1), Some(f64::NAN)),
                Some(SizeUnknown),
            ),
            (&both, Gate::Order, small, None),
            (&both, Gate::Order, size(Some(3), None), Some(QuantityAbove)),
            (
                &both,
                Gate::Order,
                size(Some(1), Some(20_000.0)),
                Some(NotionalAbove),
            ),
            (&both, Gate::Order, size(Some(1), None), Some(SizeUnknown)),
            (&both, Gate::Order, size(None, Some(1.0)), Some(SizeUnknown)),
        ];
        for (index, (policy, gate, size, expected)) in cases.iter().enumerate() {
            assert_eq!(
                policy.requires(*gate, size),
                *expected,
                "case {index}: {policy:?} {gate:?} {size:?}"
            );
        }
    }

    #[test]
    fn a_policy_is_validated_however_it_is_built() {
        assert_eq!(Policy::default().mode, Mode::Every);
        assert_eq!(
            Policy::parse("above", None, None, false, false),
            Err(InvalidPolicy::AboveWithoutLimit)
        );
        assert_eq!(
            Policy::parse("sometimes", None, None, false, false),
            Err(InvalidPolicy::Mode("sometimes".to_owned()))
        );
        assert_eq!(
            Policy::parse("above", Some(0), None, false, false),
            Err(InvalidPolicy::MaxQuantity)
        );
        assert_eq!(
            Policy::parse("every", Some(10_001), None, false, false),
            Err(InvalidPolicy::MaxQuantity)
        );
        for bad in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert_eq!(
                Policy::parse("above", None, Some(bad), false, false),
                Err(InvalidPolicy::MaxNotional)
            );
        }
        let policy = Policy::parse("above", Some(10_000), Some(0.5), true, true).expect("valid");
        let text = serde_json::to_value(policy).expect("serializes");
        assert_eq!(
            text,
            json!({"mode": "above", "max_quantity": 10000, "max_notional": 0.5,
                   "confirm_cancels": true, "page_only": true})
        );
        assert_eq!(
            serde_json::from_value::<Policy>(text).expect("round trip"),
            policy
        );
        assert!(serde_json::from_value::<Policy>(json!({"mode": "above"})).is_err());
        assert!(serde_json::from_value::<Policy>(json!({"mode": "every", "x": 1})).is_err());
        assert_eq!(
            serde_json::from_value::<Policy>(json!({"mode": "never"})).expect("defaults"),
            Policy {
                mode: Mode::Never,
                ..Policy::default()
            }
        );
    }

    #[test]
    fn names_are_fixed_snake_case() {
        let names: Vec<&str> = ConfirmationState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "pending",
                "approved",
                "rejected",
                "expired",
                "abandoned",
                "used"
            ]
        );
        let names: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["elicitation_form", "elicitation_url", "link"]);
        let names: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "policy_every",
                "quantity_above",
                "notional_above",
                "size_unknown",
                "always_confirmed",
                "cancel_policy"
            ]
        );
        for state in ConfirmationState::ALL {
            assert_eq!(ConfirmationState::parse(state.as_str()), Some(*state));
            assert_eq!(
                serde_json::to_value(state).expect("serializes"),
                json!(state.as_str())
            );
        }
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
            assert_eq!(
                serde_json::to_value(reason).expect("serializes"),
                json!(reason.as_str())
            );
        }
        for channel in Channel::ALL {
            assert_eq!(
                serde_json::to_value(channel).expect("serializes"),
                json!(channel.as_str())
            );
        }
        for via in DecidedVia::ALL {
            assert_eq!(
                serde_json::to_value(via).expect("serializes"),
                json!(via.as_str())
            );
        }
        assert_eq!(Mode::parse("Every"), None);
        assert!(Channel::Link.is_page() && Channel::ElicitationUrl.is_page());
        assert!(!Channel::ElicitationForm.is_page());
        assert!(!ConfirmationState::Approved.is_final());
        assert!(ConfirmationState::Used.is_final());
    }

    #[test]
    fn point_values_come_from_the_root() {
        assert_eq!(point_value("ES 03-26"), Some(50.0));
        assert_eq!(point_value("MES 12-26"), Some(5.0));
        assert_eq!(point_value("nq 03-26"), Some(20.0));
        assert_eq!(point_value("MYM 06-26"), Some(0.5));
        assert_eq!(point_value("CL 02-26"), Some(1000.0));
        assert_eq!(point_value("6E 03-26"), Some(125_000.0));
        assert_eq!(point_value("ZT 03-26"), Some(2000.0));
        assert_eq!(point_value("ES"), Some(50.0));
        // A stock: one share moves one unit of currency per point.
        assert_eq!(point_value("AAPL"), Some(1.0));
        // An unknown future is unknown, never guessed.
        assert_eq!(point_value("XYZ 03-26"), None);
        assert_eq!(point_value(""), None);
        assert_eq!(point_value("  "), None);
        // Every root appears once.
        let mut roots: Vec<&str> = POINT_VALUES.iter().map(|(root, _)| *root).collect();
        roots.sort_unstable();
        roots.dedup();
        assert_eq!(roots.len(), POINT_VALUES.len());
        assert!(POINT_VALUES.iter().all(|(_, value)| *value > 0.0));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a: Value = serde_json::from_str(
            r#"{"quantity": 1, "action": "Buy", "nested": {"z": [ {"b": 2, "a": 1} ], "a": null},
                "Émile": "é\"\n", "B": true, "idempotency_key": "k-1", "price": 5012.25}"#,
        )
        .expect("json");
        let b = json!({
            "price": 5012.25, "idempotency_key": "k-1", "B": true, "Émile": "é\"\n",
            "nested": {"a": null, "z": [{"a": 1, "b": 2}]}, "action": "Buy", "quantity": 1
        });
        let text = canonical_json(&a);
        assert_eq!(text, canonical_json(&b));
        assert_eq!(
            text,
            r#"{"B":true,"action":"Buy","idempotency_key":"k-1","nested":{"a":null,"z":[{"a":1,"b":2}]},"price":5012.25,"quantity":1,"Émile":"é\"\n"}"#
        );
        // The text is JSON for the same value.
        assert_eq!(serde_json::from_str::<Value>(&text).expect("json"), b);
        // Array order is meaning, so it is kept.
        assert_ne!(
            canonical_json(&json!([1, 2])),
            canonical_json(&json!([2, 1]))
        );
    }
}
