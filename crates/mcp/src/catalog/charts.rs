//! Chart and workspace tools ("workspace and chart writes", product doc 003): relayed to the
//! Add-On like every NinjaTrader 8 tool, listed only while it announces the `charts` feature.
//! The writes change the user's own NinjaTrader 8 windows, never an account or the market, so
//! they are not open-world; those that remove or overwrite are destructive.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    Args, DEFAULT_DEADLINE, Effect, IdempotencyKey, NoArgs, Route, ToolDef, check_as, read,
    schema_of,
};
use crate::auth::Scope;

/// The Add-On feature (its `hello.features`) that offers these tools.
pub(super) const CHARTS_FEATURE: &str = "charts";
/// Opening a chart loads its data series; saving a workspace writes every window's state.
const OPEN_CHART_DEADLINE: Duration = Duration::from_secs(30);
const SAVE_WORKSPACE_DEADLINE: Duration = Duration::from_secs(30);

/// A chart write taking `A`, answering a `O`.
fn write<A: Args, O: JsonSchema>(
    name: &'static str,
    title: &'static str,
    description: &'static str,
    deadline: Duration,
    destructive: bool,
    idempotent: bool,
) -> ToolDef {
    ToolDef {
        name,
        title,
        description,
        scope: Scope::Trade,
        route: Route::Addon { deadline },
        effect: Effect::Write {
            destructive,
            idempotent,
            open_world: false,
        },
        needs_feature: Some(CHARTS_FEATURE),
        confirm: None,
        input_schema: schema_of::<A>(),
        check: check_as::<A>,
        output_schema: Some(schema_of::<O>()),
    }
}

pub(super) fn definitions() -> Vec<ToolDef> {
    vec![
        ToolDef {
            needs_feature: Some(CHARTS_FEATURE),
            confirm: None,
            ..read::<NoArgs, ChartsOutput>(
                "GetCharts",
                "List open charts",
                "List the charts open in NinjaTrader 8: for each its `chart_id`, instrument, \
                 timeframe (bar type and value), template, indicators (id, name, parameters, \
                 panel) and horizontal price levels (id, price, label, color, style). The ids \
                 are the `chart_id`, `indicator_id` and `drawing_id` of the other chart tools.",
                Route::Addon {
                    deadline: DEFAULT_DEADLINE,
                },
            )
        },
        write::<OpenChartArgs, ChartOutput>(
            "OpenChart",
            "Open a chart",
            "Open a new chart window in NinjaTrader 8 for one instrument and timeframe (for \
             example {\"type\":\"Minute\",\"value\":5}), optionally with a chart template (such \
             as Default or one the user saved) and the days of data to load. Returns the chart \
             with its `chart_id`. Every call opens another window: pass an `idempotency_key` so \
             a retry does not open the chart twice.",
            OPEN_CHART_DEADLINE,
            false,
            false,
        ),
        write::<ApplyTemplateArgs, ChartOutput>(
            "ApplyChartTemplate",
            "Apply a chart template",
            "Apply a saved chart template (for example \"Scalping\") to an open chart, by the \
             `chart_id` from GetCharts. The template replaces the chart's indicators and \
             removes its price levels; applying it again changes nothing more. Returns the \
             chart as it now is.",
            DEFAULT_DEADLINE,
            true,
            true,
        ),
        write::<AddIndicatorArgs, IndicatorAdded>(
            "AddIndicator",
            "Add an indicator",
            "Add an indicator to an open chart: a NinjaScript indicator class name such as SMA, \
             EMA, VWAP or ATR (or one of the user's own), its parameters by name (for example \
             {\"Period\":20}) and the panel (1, the default, is the price panel; 2 and up are \
             panels below it). Returns the new `indicator_id`. Every call adds another copy: \
             pass an `idempotency_key` so a retry does not add it twice.",
            DEFAULT_DEADLINE,
            false,
            false,
        ),
        write::<RemoveIndicatorArgs, Removed>(
            "RemoveIndicator",
            "Remove an indicator",
            "Remove one indicator from a chart, by the `indicator_id` from AddIndicator or \
             GetCharts.",
            DEFAULT_DEADLINE,
            true,
            true,
        ),
        write::<DrawPriceLevelArgs, PriceLevelDrawn>(
            "DrawPriceLevel",
            "Draw a price level",
            "Draw a horizontal line at a price on an open chart (a stop, a target, a key level), \
             with an optional label, color (#RRGGBB) and line style (Solid, Dash or Dot). It \
             places no order. Returns the `drawing_id`. Every call draws another line: pass an \
             `idempotency_key` so a retry does not draw it twice.",
            DEFAULT_DEADLINE,
            false,
            false,
        ),
        write::<RemovePriceLevelArgs, Removed>(
            "RemovePriceLevel",
            "Remove a price level",
            "Remove one horizontal line from a chart, by the `drawing_id` from DrawPriceLevel \
             or GetCharts.",
            DEFAULT_DEADLINE,
            true,
            true,
        ),
        write::<SaveWorkspaceArgs, WorkspaceSaved>(
            "SaveWorkspace",
            "Save the workspace",
            "Save NinjaTrader 8's current workspace (its charts and other windows), overwriting \
             its saved file, or save it as a new workspace under `name`. Returns the workspace \
             name and the file it was saved to.",
            SAVE_WORKSPACE_DEADLINE,
            true,
            true,
        ),
    ]
}

// ---- argument types -----------------------------------------------------------------------

/// A chart template or workspace name: it becomes a file name in NinjaTrader 8's folders, so no
/// path separators or dots.
const NAME_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9 _-]*$";
/// A NinjaScript class or property name (a C# identifier).
const IDENTIFIER_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";
/// `#RRGGBB`.
const COLOR_PATTERN: &str = r"^#[0-9A-Fa-f]{6}$";

/// NinjaTrader 8's bar types a chart can be opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum BarType {
    Tick,
    Volume,
    Range,
    Second,
    Minute,
    Day,
    Week,
    Month,
    Renko,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeframe {
    /// Tick, Volume, Range, Second, Minute, Day, Week, Month or Renko.
    #[serde(rename = "type")]
    pub bar_type: BarType,
    /// Units per bar (ticks, contracts, seconds, minutes, days, …); Renko: brick size in ticks.
    #[schemars(range(min = 1, max = 100_000))]
    pub value: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenChartArgs {
    /// The instrument, as NinjaTrader 8 names it (for example "ES 12-26").
    #[schemars(length(min = 1, max = 100))]
    pub instrument: String,
    /// The bar type and value, for example {"type":"Minute","value":5}.
    pub timeframe: Timeframe,
    /// A saved chart template to apply (for example "Default").
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub template: Option<String>,
    /// Days of data to load (default 5).
    #[schemars(range(min = 1, max = 365))]
    pub days_back: Option<u32>,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for OpenChartArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyTemplateArgs {
    /// The chart (a `chart_id` from GetCharts or OpenChart).
    #[schemars(length(min = 1, max = 100))]
    pub chart_id: String,
    /// The saved chart template (for example "Scalping").
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub template: String,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for ApplyTemplateArgs {}

/// Indicator parameters by property name: numbers, strings or booleans.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct IndicatorParameters(pub Map<String, Value>);

impl JsonSchema for IndicatorParameters {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IndicatorParameters".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "Parameters by their NinjaScript property name, for example \
                {\"Period\":20}; numbers, strings or booleans. Left out, the indicator's \
                defaults.",
            "maxProperties": 30,
            "propertyNames": { "pattern": IDENTIFIER_PATTERN, "maxLength": 64 },
            "additionalProperties": { "type": ["number", "string", "boolean"], "maxLength": 200 }
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddIndicatorArgs {
    /// The chart (a `chart_id` from GetCharts or OpenChart).
    #[schemars(length(min = 1, max = 100))]
    pub chart_id: String,
    /// The indicator's NinjaScript class name (for example "SMA", "EMA", "VWAP", "ATR").
    #[schemars(length(min = 1, max = 100), regex(pattern = IDENTIFIER_PATTERN))]
    pub indicator: String,
    pub parameters: Option<IndicatorParameters>,
    /// The panel: 1 (default) is the price panel, 2 and up are panels below it.
    #[schemars(range(min = 1, max = 10))]
    pub panel: Option<u32>,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for AddIndicatorArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveIndicatorArgs {
    /// The chart (a `chart_id` from GetCharts).
    #[schemars(length(min = 1, max = 100))]
    pub chart_id: String,
    /// The indicator (an `indicator_id` from AddIndicator or GetCharts).
    #[schemars(length(min = 1, max = 100))]
    pub indicator_id: String,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for RemoveIndicatorArgs {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum LineStyle {
    Solid,
    Dash,
    Dot,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrawPriceLevelArgs {
    /// The chart (a `chart_id` from GetCharts or OpenChart).
    #[schemars(length(min = 1, max = 100))]
    pub chart_id: String,
    /// The price of the line.
    #[schemars(range(min = 0.0))]
    pub price: f64,
    /// A short label shown on the line.
    #[schemars(length(min = 1, max = 40))]
    pub label: Option<String>,
    /// The line's color as #RRGGBB (for example "#FF0000").
    #[schemars(regex(pattern = COLOR_PATTERN))]
    pub color: Option<String>,
    /// Solid (default), Dash or Dot.
    pub style: Option<LineStyle>,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for DrawPriceLevelArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemovePriceLevelArgs {
    /// The chart (a `chart_id` from GetCharts).
    #[schemars(length(min = 1, max = 100))]
    pub chart_id: String,
    /// The line (a `drawing_id` from DrawPriceLevel or GetCharts).
    #[schemars(length(min = 1, max = 100))]
    pub drawing_id: String,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for RemovePriceLevelArgs {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveWorkspaceArgs {
    /// Save as a new workspace with this name; without it, the current workspace is saved
    /// under its own name.
    #[schemars(length(min = 1, max = 64), regex(pattern = NAME_PATTERN))]
    pub name: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
}
impl Args for SaveWorkspaceArgs {}

// ---- output types (for `outputSchema`) ----------------------------------------------------
// Lenient where NinjaTrader 8 decides: a chart the user opened may use a bar type, template or
// style these tools cannot set.

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ChartTimeframe {
    /// The bar type, for example "Minute".
    #[schemars(rename = "type")]
    bar_type: String,
    /// Bars of how many units of the bar type.
    value: u32,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ChartIndicator {
    /// The `indicator_id` of RemoveIndicator.
    indicator_id: String,
    /// The NinjaScript class name, for example "SMA".
    name: String,
    /// Parameters by property name.
    parameters: Map<String, Value>,
    /// 1 is the price panel.
    panel: u32,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ChartPriceLevel {
    /// The `drawing_id` of RemovePriceLevel.
    drawing_id: String,
    price: f64,
    label: Option<String>,
    /// The color, as #RRGGBB.
    color: String,
    /// Solid, Dash or Dot.
    style: String,
}

/// One open chart.
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ChartOutput {
    /// The `chart_id` of the other chart tools.
    chart_id: String,
    instrument: String,
    timeframe: ChartTimeframe,
    /// The chart template applied last, if any.
    template: Option<String>,
    indicators: Vec<ChartIndicator>,
    price_levels: Vec<ChartPriceLevel>,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct ChartsOutput {
    /// The current workspace's name.
    workspace: Option<String>,
    charts: Vec<ChartOutput>,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct IndicatorAdded {
    chart_id: String,
    indicator_id: String,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct PriceLevelDrawn {
    chart_id: String,
    drawing_id: String,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct Removed {
    /// Always true: an id that is not there is a tool error.
    removed: bool,
}

#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
struct WorkspaceSaved {
    /// The workspace's name.
    workspace: String,
    /// The file it was saved to.
    path: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::catalog;
    use super::*;
    use crate::protocol::Revision;

    /// (tool, scope, (destructive, idempotent) or `None` for read-only, deadline in seconds).
    type Row = (&'static str, Scope, Option<(bool, bool)>, u64);

    const TABLE: [Row; 8] = [
        ("GetCharts", Scope::Read, None, 10),
        ("OpenChart", Scope::Trade, Some((false, false)), 30),
        ("ApplyChartTemplate", Scope::Trade, Some((true, true)), 10),
        ("AddIndicator", Scope::Trade, Some((false, false)), 10),
        ("RemoveIndicator", Scope::Trade, Some((true, true)), 10),
        ("DrawPriceLevel", Scope::Trade, Some((false, false)), 10),
        ("RemovePriceLevel", Scope::Trade, Some((true, true)), 10),
        ("SaveWorkspace", Scope::Trade, Some((true, true)), 30),
    ];

    #[test]
    fn each_tool_has_its_scope_deadline_and_annotations() {
        let names: Vec<&str> = definitions().iter().map(|def| def.name).collect();
        assert_eq!(names, TABLE.map(|row| row.0));
        for (name, scope, write, deadline) in TABLE {
            let tool = catalog().get(name).expect("listed");
            assert_eq!(tool.def.scope, scope, "{name}");
            assert_eq!(tool.def.needs_feature, Some("charts"), "{name}");
            assert_eq!(
                tool.def.route,
                Route::Addon {
                    deadline: Duration::from_secs(deadline)
                },
                "{name}"
            );
            let listed = tool.to_json(Revision::V2025_11_25);
            let expected = match write {
                None => json!({"readOnlyHint": true, "openWorldHint": false}),
                Some((destructive, idempotent)) => json!({"readOnlyHint": false,
                    "destructiveHint": destructive, "idempotentHint": idempotent,
                    "openWorldHint": false}),
            };
            assert_eq!(listed["annotations"], expected, "{name}");
            assert!(listed["outputSchema"].is_object(), "{name}");
            assert_eq!(listed["outputSchema"]["type"], "object", "{name}");
            let key = &listed["inputSchema"]["properties"]["idempotency_key"];
            if scope == Scope::Trade {
                assert_eq!(key["minLength"], 8, "{name}");
            } else {
                assert!(key.is_null(), "{name}");
            }
        }
    }

    #[test]
    fn descriptions_ask_for_a_key_where_a_retry_would_repeat_the_effect() {
        for (name, _, write, _) in TABLE {
            let def = &catalog().get(name).expect("listed").def;
            let asks = def.description.contains("pass an `idempotency_key`");
            assert_eq!(asks, write == Some((false, false)), "{name}");
        }
    }

    #[test]
    fn output_schemas_state_the_chart_shape() {
        let open = catalog()
            .get("OpenChart")
            .expect("listed")
            .to_json(Revision::V2025_06_18);
        let output = &open["outputSchema"];
        assert_eq!(
            output["required"],
            json!([
                "chart_id",
                "instrument",
                "timeframe",
                "indicators",
                "price_levels"
            ])
        );
        assert_eq!(
            output["properties"]["timeframe"]["required"],
            json!(["type", "value"])
        );
        assert_eq!(
            output["properties"]["price_levels"]["items"]["required"],
            json!(["drawing_id", "price", "color", "style"])
        );
        let charts = catalog().get("GetCharts").expect("listed");
        let chart = json!({"chart_id": "c-1", "instrument": "ES 12-26",
            "timeframe": {"type": "HeikenAshi", "value": 5}, "template": null,
            "indicators": [{"indicator_id": "i-2", "name": "SMA",
                "parameters": {"Period": 20}, "panel": 1}],
            "price_levels": [{"drawing_id": "d-3", "price": 5000.25, "label": null,
                "color": "#FF0000", "style": "Dash"}]});
        assert_eq!(
            charts.validate_output(&json!({ "charts": [chart.clone()] })),
            Ok(())
        );
        assert!(charts.validate_output(&chart).is_err());
        let removed = catalog().get("RemoveIndicator").expect("listed");
        assert_eq!(removed.validate_output(&json!({"removed": true})), Ok(()));
        let saved = catalog().get("SaveWorkspace").expect("listed");
        assert!(
            saved
                .validate_output(&json!({"workspace": "Main"}))
                .is_err()
        );
    }

    #[test]
    fn arguments_are_checked_against_their_rules() {
        let draw = catalog().get("DrawPriceLevel").expect("listed");
        let ok = json!({"chart_id": "c-1", "price": 5000.25, "label": "Stop",
            "color": "#ff8800", "style": "Dot", "idempotency_key": "draw-0000-1"});
        assert_eq!(draw.validate_arguments(&ok), Ok(()));
        for (field, value, rule) in [
            ("color", json!("red"), "pattern"),
            ("color", json!("#FF88001"), "pattern"),
            ("style", json!("Dashed"), "enum"),
            ("price", json!(-1.0), "minimum"),
            ("label", json!("x".repeat(41)), "maxLength"),
        ] {
            let mut bad = ok.clone();
            bad[field] = value;
            let message = draw.validate_arguments(&bad).unwrap_err();
            assert!(
                message.contains(&format!("{field}:"))
                    && message.contains(&format!("rule: {rule}")),
                "{message}"
            );
        }

        let open = catalog().get("OpenChart").expect("listed");
        let ok = json!({"instrument": "ES 12-26", "timeframe": {"type": "Minute", "value": 5},
            "template": "Scalping", "days_back": 10});
        assert_eq!(open.validate_arguments(&ok), Ok(()));
        let schema = &open.to_json(Revision::V2025_11_25)["inputSchema"];
        assert_eq!(
            schema["properties"]["timeframe"]["properties"]["type"]["enum"],
            json!([
                "Tick", "Volume", "Range", "Second", "Minute", "Day", "Week", "Month", "Renko"
            ])
        );
        for (timeframe, rule) in [
            (json!({"type": "Hour", "value": 1}), "enum"),
            (json!({"type": "Minute", "value": 0}), "minimum"),
            (json!({"type": "Minute"}), "required"),
            (
                json!({"type": "Minute", "value": 5, "session": "ETH"}),
                "additionalProperties",
            ),
        ] {
            let mut bad = ok.clone();
            bad["timeframe"] = timeframe;
            let message = open.validate_arguments(&bad).unwrap_err();
            assert!(message.contains("timeframe"), "{message}");
            assert!(message.contains(&format!("rule: {rule}")), "{message}");
        }
        let mut bad = ok.clone();
        bad["template"] = json!("../Default");
        assert!(
            open.validate_arguments(&bad)
                .unwrap_err()
                .contains("template:")
        );

        let add = catalog().get("AddIndicator").expect("listed");
        let ok = json!({"chart_id": "c-1", "indicator": "SMA",
            "parameters": {"Period": 20, "Smooth": true, "Input": "Close"}, "panel": 2});
        assert_eq!(add.validate_arguments(&ok), Ok(()));
        for parameters in [
            json!({"Period": {"value": 20}}),
            json!({"Period": [20]}),
            json!({"bad name": 1}),
        ] {
            let mut bad = ok.clone();
            bad["parameters"] = parameters;
            assert!(add.validate_arguments(&bad).is_err(), "{bad}");
        }

        let save = catalog().get("SaveWorkspace").expect("listed");
        assert_eq!(save.validate_arguments(&json!({})), Ok(()));
        assert_eq!(
            save.validate_arguments(&json!({"name": "Morning ES"})),
            Ok(())
        );
        assert!(
            save.validate_arguments(&json!({"name": "C:/Windows/x"}))
                .is_err()
        );
    }
}
