//! The simulated chart windows and workspace: open charts with their template, indicators and
//! horizontal price levels, the saved chart templates, and the current workspace.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

type Answer = Result<Value, String>;

/// An indicator the simulated NinjaTrader 8 has.
struct IndicatorKind {
    name: &'static str,
    /// Parameters and their defaults.
    defaults: &'static [(&'static str, i64)],
    panel: u64,
}

const INDICATORS: [IndicatorKind; 4] = [
    IndicatorKind {
        name: "SMA",
        defaults: &[("Period", 14)],
        panel: 1,
    },
    IndicatorKind {
        name: "EMA",
        defaults: &[("Period", 14)],
        panel: 1,
    },
    IndicatorKind {
        name: "VWAP",
        defaults: &[],
        panel: 1,
    },
    IndicatorKind {
        name: "ATR",
        defaults: &[("Period", 14)],
        panel: 2,
    },
];

/// A saved chart template: the indicators (name, period) it puts on a chart.
struct Template {
    name: &'static str,
    indicators: &'static [(&'static str, Option<i64>)],
}

const TEMPLATES: [Template; 2] = [
    Template {
        name: "Default",
        indicators: &[],
    },
    Template {
        name: "Scalping",
        indicators: &[("EMA", Some(9)), ("EMA", Some(21)), ("VWAP", None)],
    },
];

const WORKSPACES: &str = r"C:\Users\trader\Documents\NinjaTrader 8\workspaces";

#[derive(Debug)]
struct Indicator {
    id: String,
    name: String,
    parameters: Map<String, Value>,
    panel: u64,
}

#[derive(Debug)]
struct Level {
    id: String,
    price: f64,
    label: Option<String>,
    color: String,
    style: String,
}

#[derive(Debug)]
struct Chart {
    id: String,
    instrument: String,
    timeframe: Value,
    days_back: u64,
    template: Option<String>,
    indicators: Vec<Indicator>,
    levels: Vec<Level>,
}

impl Chart {
    fn json(&self) -> Value {
        json!({
            "chart_id": self.id, "instrument": self.instrument, "timeframe": self.timeframe,
            "days_back": self.days_back, "template": self.template,
            "indicators": self.indicators.iter().map(|i| json!({"indicator_id": i.id,
                "name": i.name, "parameters": i.parameters, "panel": i.panel})).collect::<Vec<_>>(),
            "price_levels": self.levels.iter().map(|l| json!({"drawing_id": l.id,
                "price": l.price, "label": l.label, "color": l.color, "style": l.style}))
                .collect::<Vec<_>>(),
        })
    }
}

/// Open charts, in the order they were opened, and the workspace they belong to.
#[derive(Debug)]
pub(super) struct Charts {
    open: Vec<Chart>,
    workspace: String,
    counter: u64,
}

impl Charts {
    pub(super) fn new() -> Self {
        Self {
            open: Vec::new(),
            workspace: "Untitled1".to_owned(),
            counter: 0,
        }
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}", self.counter)
    }

    /// Answers a chart tool; `None` for every other tool. `instruments` are the ones the
    /// simulated data feed knows.
    pub(super) fn answer(
        &mut self,
        tool: &str,
        args: &Value,
        instruments: &BTreeMap<String, f64>,
    ) -> Option<Answer> {
        Some(match tool {
            "GetCharts" => Ok(json!({
                "workspace": self.workspace,
                "charts": self.open.iter().map(Chart::json).collect::<Vec<_>>(),
            })),
            "OpenChart" => self.open(args, instruments),
            "ApplyChartTemplate" => self.apply_template(args),
            "AddIndicator" => self.add_indicator(args),
            "RemoveIndicator" => self.remove_indicator(args),
            "DrawPriceLevel" => self.draw(args),
            "RemovePriceLevel" => self.remove_level(args),
            "SaveWorkspace" => Ok(self.save(args)),
            _ => return None,
        })
    }

    fn chart(&mut self, args: &Value) -> Result<&mut Chart, String> {
        let id = args["chart_id"].as_str().unwrap_or_default();
        self.open
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| format!("no chart {id} is open; GetCharts lists the open charts"))
    }

    fn template_indicators(&mut self, name: &str) -> Result<Vec<Indicator>, String> {
        let Some(template) = TEMPLATES.iter().find(|t| t.name == name) else {
            let names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
            return Err(format!(
                "unknown template '{name}'. Templates: {}",
                names.join(", ")
            ));
        };
        Ok(template
            .indicators
            .iter()
            .map(|(indicator, period)| {
                let panel = INDICATORS
                    .iter()
                    .find(|kind| kind.name == *indicator)
                    .map_or(1, |kind| kind.panel);
                let mut parameters = Map::new();
                if let Some(period) = period {
                    parameters.insert("Period".to_owned(), json!(period));
                }
                Indicator {
                    id: self.next_id("i"),
                    name: (*indicator).to_owned(),
                    parameters,
                    panel,
                }
            })
            .collect())
    }

    fn open(&mut self, args: &Value, instruments: &BTreeMap<String, f64>) -> Answer {
        let instrument = args["instrument"].as_str().unwrap_or_default();
        if !instruments.contains_key(instrument) {
            let known: Vec<&str> = instruments.keys().map(String::as_str).collect();
            return Err(format!(
                "unknown instrument '{instrument}'. Instruments: {}",
                known.join(", ")
            ));
        }
        let template = args["template"].as_str().unwrap_or("Default").to_owned();
        let indicators = self.template_indicators(&template)?;
        let chart = Chart {
            id: self.next_id("c"),
            instrument: instrument.to_owned(),
            timeframe: args["timeframe"].clone(),
            days_back: args["days_back"].as_u64().unwrap_or(5),
            template: Some(template),
            indicators,
            levels: Vec::new(),
        };
        let json = chart.json();
        self.open.push(chart);
        Ok(json)
    }

    fn apply_template(&mut self, args: &Value) -> Answer {
        self.chart(args)?;
        let template = args["template"].as_str().unwrap_or_default().to_owned();
        let indicators = self.template_indicators(&template)?;
        let chart = self.chart(args)?;
        chart.indicators = indicators;
        chart.levels.clear();
        chart.template = Some(template);
        Ok(chart.json())
    }

    fn add_indicator(&mut self, args: &Value) -> Answer {
        self.chart(args)?;
        let name = args["indicator"].as_str().unwrap_or_default();
        let Some(kind) = INDICATORS.iter().find(|kind| kind.name == name) else {
            let names: Vec<&str> = INDICATORS.iter().map(|kind| kind.name).collect();
            return Err(format!(
                "unknown indicator '{name}'. Indicators: {}",
                names.join(", ")
            ));
        };
        let mut parameters: Map<String, Value> = kind
            .defaults
            .iter()
            .map(|(p, v)| ((*p).to_owned(), json!(v)))
            .collect();
        if let Some(given) = args["parameters"].as_object() {
            for (key, value) in given {
                if !parameters.contains_key(key) {
                    let names: Vec<&str> = kind.defaults.iter().map(|(p, _)| *p).collect();
                    return Err(if names.is_empty() {
                        format!("{name} has no parameter '{key}'; it takes none")
                    } else {
                        format!(
                            "{name} has no parameter '{key}'. Parameters: {}",
                            names.join(", ")
                        )
                    });
                }
                // Periods are whole bar counts.
                if !value.as_u64().is_some_and(|n| (1..=10_000).contains(&n)) {
                    return Err(format!(
                        "{name} {key} must be a whole number from 1 to 10000, not {value}"
                    ));
                }
                parameters.insert(key.clone(), value.clone());
            }
        }
        let panel = args["panel"].as_u64().unwrap_or(kind.panel);
        let id = self.next_id("i");
        let chart = self.chart(args)?;
        chart.indicators.push(Indicator {
            id: id.clone(),
            name: name.to_owned(),
            parameters,
            panel,
        });
        Ok(json!({"chart_id": chart.id, "indicator_id": id}))
    }

    fn remove_indicator(&mut self, args: &Value) -> Answer {
        let chart = self.chart(args)?;
        let id = args["indicator_id"].as_str().unwrap_or_default();
        let before = chart.indicators.len();
        chart.indicators.retain(|i| i.id != id);
        if chart.indicators.len() == before {
            return Err(format!("no indicator {id} on chart {}", chart.id));
        }
        Ok(json!({"removed": true}))
    }

    fn draw(&mut self, args: &Value) -> Answer {
        self.chart(args)?;
        let id = self.next_id("d");
        let chart = self.chart(args)?;
        chart.levels.push(Level {
            id: id.clone(),
            price: args["price"].as_f64().unwrap_or_default(),
            label: args["label"].as_str().map(str::to_owned),
            color: args["color"]
                .as_str()
                .unwrap_or("#1E90FF")
                .to_ascii_uppercase(),
            style: args["style"].as_str().unwrap_or("Solid").to_owned(),
        });
        Ok(json!({"chart_id": chart.id, "drawing_id": id}))
    }

    fn remove_level(&mut self, args: &Value) -> Answer {
        let chart = self.chart(args)?;
        let id = args["drawing_id"].as_str().unwrap_or_default();
        let before = chart.levels.len();
        chart.levels.retain(|l| l.id != id);
        if chart.levels.len() == before {
            return Err(format!("no price level {id} on chart {}", chart.id));
        }
        Ok(json!({"removed": true}))
    }

    fn save(&mut self, args: &Value) -> Value {
        if let Some(name) = args["name"].as_str() {
            name.clone_into(&mut self.workspace);
        }
        json!({
            "workspace": self.workspace,
            "path": format!(r"{WORKSPACES}\{}.xml", self.workspace),
            "charts": self.open.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(
        clippy::needless_pass_by_value,
        reason = "the tests pass json! literals"
    )]
    fn call(charts: &mut Charts, tool: &str, args: Value) -> Answer {
        let instruments = BTreeMap::from([("ES 12-26".to_owned(), 5000.0)]);
        charts
            .answer(tool, &args, &instruments)
            .expect("a chart tool")
    }

    #[test]
    fn charts_keep_their_indicators_levels_and_template() {
        let mut charts = Charts::new();
        assert!(
            charts
                .answer("GetAccounts", &json!({}), &BTreeMap::new())
                .is_none()
        );
        let minute = json!({"type": "Minute", "value": 5});
        let chart = call(
            &mut charts,
            "OpenChart",
            json!({"instrument": "ES 12-26", "timeframe": minute}),
        )
        .unwrap();
        assert_eq!(chart["chart_id"], "c-1");
        assert_eq!(chart["template"], "Default");
        let added = call(
            &mut charts,
            "AddIndicator",
            json!({"chart_id": "c-1", "indicator": "ATR", "parameters": {"Period": 20}}),
        )
        .unwrap();
        assert_eq!(added, json!({"chart_id": "c-1", "indicator_id": "i-2"}));
        let drawn = call(
            &mut charts,
            "DrawPriceLevel",
            json!({"chart_id": "c-1", "price": 4990.5, "color": "#ff0000"}),
        )
        .unwrap();
        assert_eq!(drawn, json!({"chart_id": "c-1", "drawing_id": "d-3"}));
        let listed = call(&mut charts, "GetCharts", json!({})).unwrap();
        let chart = &listed["charts"][0];
        assert_eq!(
            chart["indicators"],
            json!([{"indicator_id": "i-2", "name": "ATR", "parameters": {"Period": 20}, "panel": 2}])
        );
        assert_eq!(
            chart["price_levels"],
            json!([{"drawing_id": "d-3", "price": 4990.5, "label": null, "color": "#FF0000", "style": "Solid"}])
        );

        let applied = call(
            &mut charts,
            "ApplyChartTemplate",
            json!({"chart_id": "c-1", "template": "Scalping"}),
        )
        .unwrap();
        assert_eq!(applied["template"], "Scalping");
        assert_eq!(applied["price_levels"], json!([]));
        let names: Vec<&Value> = applied["indicators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &i["name"])
            .collect();
        assert_eq!(names, [&json!("EMA"), &json!("EMA"), &json!("VWAP")]);

        let saved = call(&mut charts, "SaveWorkspace", json!({"name": "Morning"})).unwrap();
        assert_eq!(saved["workspace"], "Morning");
        assert_eq!(
            saved["path"],
            r"C:\Users\trader\Documents\NinjaTrader 8\workspaces\Morning.xml"
        );
        let listed = call(&mut charts, "GetCharts", json!({})).unwrap();
        assert_eq!(listed["workspace"], "Morning");
    }

    #[test]
    fn unknown_ids_and_names_are_tool_errors_that_say_what_exists() {
        let mut charts = Charts::new();
        let minute = json!({"type": "Minute", "value": 1});
        for (tool, args, error) in [
            (
                "OpenChart",
                json!({"instrument": "ZZ 12-26", "timeframe": minute}),
                "unknown instrument 'ZZ 12-26'. Instruments: ES 12-26",
            ),
            (
                "OpenChart",
                json!({"instrument": "ES 12-26", "timeframe": minute, "template": "Swing"}),
                "unknown template 'Swing'. Templates: Default, Scalping",
            ),
            (
                "AddIndicator",
                json!({"chart_id": "c-9", "indicator": "SMA"}),
                "no chart c-9 is open; GetCharts lists the open charts",
            ),
        ] {
            assert_eq!(call(&mut charts, tool, args), Err(error.to_owned()));
        }
        call(
            &mut charts,
            "OpenChart",
            json!({"instrument": "ES 12-26", "timeframe": minute}),
        )
        .unwrap();
        for (tool, args, error) in [
            (
                "AddIndicator",
                json!({"chart_id": "c-1", "indicator": "MACDX"}),
                "unknown indicator 'MACDX'. Indicators: SMA, EMA, VWAP, ATR",
            ),
            (
                "AddIndicator",
                json!({"chart_id": "c-1", "indicator": "SMA", "parameters": {"Length": 5}}),
                "SMA has no parameter 'Length'. Parameters: Period",
            ),
            (
                "AddIndicator",
                json!({"chart_id": "c-1", "indicator": "SMA", "parameters": {"Period": 0}}),
                "SMA Period must be a whole number from 1 to 10000, not 0",
            ),
            (
                "RemoveIndicator",
                json!({"chart_id": "c-1", "indicator_id": "i-7"}),
                "no indicator i-7 on chart c-1",
            ),
            (
                "RemovePriceLevel",
                json!({"chart_id": "c-1", "drawing_id": "d-7"}),
                "no price level d-7 on chart c-1",
            ),
            (
                "ApplyChartTemplate",
                json!({"chart_id": "c-1", "template": "Swing"}),
                "unknown template 'Swing'. Templates: Default, Scalping",
            ),
        ] {
            assert_eq!(call(&mut charts, tool, args), Err(error.to_owned()));
        }
    }
}
