//! What each AI client did, as the AI Clients page shows it: totals and counts by tool for the
//! last 7 days (trade tools marked, as the catalog said when the call was recorded), the latest
//! calls with their outcome, and a per-day bar chart drawn on the server as inline SVG (no
//! script; colours come from the stylesheet through classes, so the dark theme applies).

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use store::activity::{CallRow, DAYS, DayRow, Outcome, first_day};
use uuid::Uuid;

use super::pages::when;

/// Latest calls shown per client.
pub(super) const RECENT_SHOWN: i64 = 5;

pub(super) struct Activity {
    pub calls: i64,
    pub trade_calls: i64,
    pub errors: i64,
    /// Most called first.
    pub tools: Vec<ToolRow>,
    /// Newest first.
    pub recent: Vec<RecentCall>,
    pub chart: Chart,
}

pub(super) struct ToolRow {
    pub name: String,
    pub trade: bool,
    pub calls: i64,
    pub errors: i64,
}

pub(super) struct RecentCall {
    pub tool: String,
    pub trade: bool,
    pub outcome: &'static str,
    /// The badge's class: `ok`, `held` or `bad`.
    pub tone: &'static str,
    pub ago: String,
    pub exact: String,
}

/// Seven bars, oldest day first, each split into read calls below and trade calls on top.
pub(super) struct Chart {
    pub width: u32,
    pub height: u32,
    /// The baseline's y.
    pub base: u32,
    pub day_y: u32,
    pub bar_width: u32,
    /// Every number the chart shows, in words: its accessible name.
    pub label: String,
    pub bars: Vec<Bar>,
}

pub(super) struct Bar {
    pub x: u32,
    pub center: u32,
    pub read_y: u32,
    pub read_height: u32,
    pub trade_y: u32,
    pub trade_height: u32,
    pub count_y: u32,
    pub calls: i64,
    pub day: String,
    pub today: bool,
}

const SLOT: u32 = 44;
const BAR_WIDTH: u32 = 26;
const TALLEST: u32 = 60;
const BASE: u32 = 78;

/// Each grant's activity from the rows of all of them.
pub(super) fn by_grant(
    now: DateTime<Utc>,
    days: Vec<DayRow>,
    recent: Vec<CallRow>,
) -> HashMap<Uuid, Activity> {
    let mut days_of: HashMap<Uuid, Vec<DayRow>> = HashMap::new();
    for row in days {
        days_of.entry(row.grant_id).or_default().push(row);
    }
    let mut recent_of: HashMap<Uuid, Vec<CallRow>> = HashMap::new();
    for row in recent {
        recent_of.entry(row.grant_id).or_default().push(row);
    }
    let mut grants: Vec<Uuid> = days_of.keys().chain(recent_of.keys()).copied().collect();
    grants.sort_unstable();
    grants.dedup();
    grants
        .into_iter()
        .map(|grant_id| {
            let days = days_of.remove(&grant_id).unwrap_or_default();
            let recent = recent_of.remove(&grant_id).unwrap_or_default();
            (grant_id, activity(now, &days, &recent))
        })
        .collect()
}

/// One grant's activity: `days` within the window, `recent` newest first.
pub(super) fn activity(now: DateTime<Utc>, days: &[DayRow], recent: &[CallRow]) -> Activity {
    let first = first_day(now);
    let mut tools: Vec<ToolRow> = Vec::new();
    let mut per_day = [(0_i64, 0_i64); DAYS as usize];
    for row in days {
        let Some(index) = day_index(first, row.day) else {
            continue;
        };
        per_day[index].0 += row.calls;
        if row.trade {
            per_day[index].1 += row.calls;
        }
        match tools.iter_mut().find(|tool| tool.name == row.tool) {
            Some(tool) => {
                tool.calls += row.calls;
                tool.errors += row.errors;
            }
            None => tools.push(ToolRow {
                name: row.tool.clone(),
                trade: row.trade,
                calls: row.calls,
                errors: row.errors,
            }),
        }
    }
    tools.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.name.cmp(&b.name)));
    let recent = recent
        .iter()
        .map(|call| {
            let (ago, exact) = when(now, call.at);
            RecentCall {
                tool: call.tool.clone(),
                trade: call.trade,
                outcome: call.outcome.label(),
                tone: match call.outcome {
                    Outcome::Ok => "ok",
                    Outcome::Held => "held",
                    _ => "bad",
                },
                ago,
                exact,
            }
        })
        .collect();
    Activity {
        calls: tools.iter().map(|tool| tool.calls).sum(),
        trade_calls: tools.iter().filter(|t| t.trade).map(|t| t.calls).sum(),
        errors: tools.iter().map(|tool| tool.errors).sum(),
        tools,
        recent,
        chart: chart(first, &per_day),
    }
}

fn day_index(first: NaiveDate, day: NaiveDate) -> Option<usize> {
    let offset = (day - first).num_days();
    usize::try_from(offset).ok().filter(|&i| i < DAYS as usize)
}

/// The bars of `per_day` (calls, of which trade), from `first` to today.
fn chart(first: NaiveDate, per_day: &[(i64, i64); DAYS as usize]) -> Chart {
    let tallest = per_day
        .iter()
        .map(|&(calls, _)| calls)
        .max()
        .unwrap_or(0)
        .max(1);
    let height_of = |calls: i64| -> u32 {
        if calls <= 0 {
            return 0;
        }
        // Rounded up, so a single call still shows.
        let scaled = (calls * i64::from(TALLEST) + tallest - 1) / tallest;
        u32::try_from(scaled).unwrap_or(TALLEST).clamp(2, TALLEST)
    };
    let mut said = Vec::with_capacity(DAYS as usize);
    let mut bars = Vec::with_capacity(DAYS as usize);
    for (slot, &(calls, trade)) in (0_u32..).zip(per_day) {
        let day = first + TimeDelta::days(i64::from(slot));
        let today = slot + 1 == DAYS;
        let total = height_of(calls);
        let trade_height = if trade >= calls {
            total
        } else {
            height_of(trade).min(total.saturating_sub(1))
        };
        let read_height = total - trade_height;
        let x = slot * SLOT + (SLOT - BAR_WIDTH) / 2;
        bars.push(Bar {
            x,
            center: x + BAR_WIDTH / 2,
            read_y: BASE - read_height,
            read_height,
            trade_y: BASE - total,
            trade_height,
            count_y: BASE - total - 4,
            calls,
            day: if today {
                "Today".to_owned()
            } else {
                day.format("%a").to_string()
            },
            today,
        });
        let name = day.format("%a %-d %b");
        let trade_part = if trade > 0 {
            format!(" ({trade} trade)")
        } else {
            String::new()
        };
        let today_part = if today { " (today)" } else { "" };
        said.push(format!("{name}{today_part}: {calls}{trade_part}"));
    }
    Chart {
        width: SLOT * DAYS,
        height: BASE + 22,
        base: BASE,
        day_y: BASE + 16,
        bar_width: BAR_WIDTH,
        label: format!("Calls per day, last {DAYS} days: {}", said.join(", ")),
        bars,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-07T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn row(day: u32, tool: &str, trade: bool, calls: i64, errors: i64) -> DayRow {
        DayRow {
            grant_id: Uuid::nil(),
            day: NaiveDate::from_ymd_opt(2026, 12, day).unwrap(),
            tool: tool.to_owned(),
            trade,
            calls,
            errors,
        }
    }

    #[test]
    fn tools_are_summed_over_the_window_most_called_first() {
        let mut before_the_window = row(1, "GetAccounts", false, 9, 0);
        before_the_window.day = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let days = [
            row(1, "GetPositions", false, 3, 0),
            row(7, "GetPositions", false, 2, 1),
            row(7, "PlaceOrder", true, 4, 2),
            before_the_window,
        ];
        let activity = activity(now(), &days, &[]);
        let tools: Vec<_> = activity
            .tools
            .iter()
            .map(|t| (t.name.as_str(), t.trade, t.calls, t.errors))
            .collect();
        assert_eq!(
            tools,
            [("GetPositions", false, 5, 1), ("PlaceOrder", true, 4, 2)]
        );
        assert_eq!(
            (activity.calls, activity.trade_calls, activity.errors),
            (9, 4, 3)
        );
    }

    #[test]
    fn the_chart_has_seven_bars_scaled_to_the_busiest_day_and_says_its_numbers() {
        let days = [
            row(1, "GetPositions", false, 1, 0),
            row(7, "GetPositions", false, 6, 0),
            row(7, "PlaceOrder", true, 2, 0),
        ];
        let chart = activity(now(), &days, &[]).chart;
        assert_eq!(chart.bars.len(), 7);
        let heights: Vec<_> = chart
            .bars
            .iter()
            .map(|b| (b.read_height, b.trade_height))
            .collect();
        // 8 calls is the tallest bar; 1 call still shows; empty days draw nothing.
        assert_eq!(
            heights,
            [(8, 0), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (45, 15)]
        );
        let today = &chart.bars[6];
        assert!(today.today && today.day == "Today");
        assert_eq!(today.trade_y + today.trade_height, today.read_y);
        assert_eq!(today.read_y + today.read_height, chart.base);
        assert_eq!(
            chart.label,
            "Calls per day, last 7 days: Tue 1 Dec: 1, Wed 2 Dec: 0, Thu 3 Dec: 0, \
             Fri 4 Dec: 0, Sat 5 Dec: 0, Sun 6 Dec: 0, Mon 7 Dec (today): 8 (2 trade)"
        );
    }

    #[test]
    fn an_idle_client_has_an_empty_chart() {
        let activity = activity(now(), &[], &[]);
        assert_eq!(activity.calls, 0);
        assert!(
            activity
                .chart
                .bars
                .iter()
                .all(|b| b.read_height == 0 && b.trade_height == 0)
        );
    }

    #[test]
    fn recent_calls_keep_their_order_and_say_how_they_ended() {
        let call = |minutes: i64, outcome| CallRow {
            grant_id: Uuid::nil(),
            at: now() - TimeDelta::minutes(minutes),
            tool: "PlaceOrder".to_owned(),
            trade: true,
            outcome,
        };
        let activity = activity(
            now(),
            &[],
            &[call(1, Outcome::Held), call(5, Outcome::AddonUnavailable)],
        );
        let seen: Vec<_> = activity
            .recent
            .iter()
            .map(|c| (c.ago.as_str(), c.outcome, c.tone))
            .collect();
        assert_eq!(
            seen,
            [
                ("1 minute ago", "Held for your confirmation", "held"),
                ("5 minutes ago", "Add-On unavailable", "bad")
            ]
        );
    }
}
