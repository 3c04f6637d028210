//! Watermarks of an account's net liquidation value (cash plus open profit), computed from the
//! snapshots the Add-On reported: latest, all-time and current-session high and low, drawdown,
//! and a caller-stated trailing-drawdown threshold.
//!
//! The arithmetic is pure ([`compute`]); SQL only fetches each account's snapshots in time order.
//! Sessions come from the snapshot's `session_start` when the Add-On reports one, else from the
//! CME Globex trading day ([`cme_session_start`]).

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc, Weekday};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;
pub use vocabulary::{TrailingMode, TrailingRule};

/// One stored snapshot, as the computation reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub taken_at: DateTime<Utc>,
    pub value: f64,
    /// The start of the Add-On's trading-hours session, when it reported one.
    pub session_start: Option<DateTime<Utc>>,
}

/// A value and when it was seen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub value: f64,
    pub at: DateTime<Utc>,
}

/// The highest and lowest values over a span, with when each was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    pub high: f64,
    pub high_at: DateTime<Utc>,
    pub low: f64,
    pub low_at: DateTime<Utc>,
}

/// Where a session's start came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionSource {
    /// The snapshot's `session_start` (the Add-On's trading hours).
    Addon,
    /// 17:00 America/Chicago, Sunday to Thursday (CME Globex trading day).
    CmeGlobex,
}

/// The current session: the one of the latest snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Session {
    pub start: DateTime<Utc>,
    pub source: SessionSource,
    /// The first value at or after the session start.
    pub open: f64,
    pub open_at: DateTime<Utc>,
    #[serde(flatten)]
    pub range: Range,
}

/// Drawdown from running peaks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Drawdown {
    /// The all-time high minus the latest value (0 at a new high).
    pub from_high: f64,
    /// The largest fall from a running peak to a later value.
    pub max: f64,
    /// The peak and the trough of that fall (absent while there was none).
    pub max_peak_at: Option<DateTime<Utc>>,
    pub max_trough_at: Option<DateTime<Utc>>,
}

/// A trailing-drawdown threshold under the caller's rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trailing {
    pub mode: TrailingModeName,
    pub amount: f64,
    pub stop_at: Option<f64>,
    /// The peak the threshold trails now.
    pub peak: f64,
    /// `min(peak - amount, stop_at)`.
    pub threshold: f64,
    /// The latest value minus the threshold (negative once below).
    pub remaining: f64,
    /// The first snapshot at or below the threshold as it stood then.
    pub breached_at: Option<DateTime<Utc>>,
}

/// [`TrailingMode`] as the tool output spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrailingModeName {
    Intraday,
    EndOfDay,
}

impl From<TrailingMode> for TrailingModeName {
    fn from(mode: TrailingMode) -> Self {
        match mode {
            TrailingMode::Intraday => TrailingModeName::Intraday,
            TrailingMode::EndOfDay => TrailingModeName::EndOfDay,
        }
    }
}

/// Everything known about one account's net liquidation value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Watermark {
    pub account: String,
    /// What the values are: always "net_liquidation".
    pub basis: &'static str,
    pub latest: Point,
    pub all_time: Range,
    pub session: Session,
    pub drawdown: Drawdown,
    /// Present when the caller gave a trailing-drawdown amount.
    pub trailing: Option<Trailing>,
}

/// 17:00 America/Chicago on `date`, in UTC. US daylight saving time runs from the second Sunday
/// of March to the first Sunday of November (switching at 02:00 local, so 17:00 on a switch day
/// already has the new offset): CDT is UTC-5, CST UTC-6.
fn chicago_1700(date: NaiveDate) -> Option<DateTime<Utc>> {
    let year = date.year();
    let dst_from = NaiveDate::from_weekday_of_month_opt(year, 3, Weekday::Sun, 2)?;
    let dst_until = NaiveDate::from_weekday_of_month_opt(year, 11, Weekday::Sun, 1)?;
    let utc_hour = if date >= dst_from && date < dst_until {
        22
    } else {
        23
    };
    Some(Utc.from_utc_datetime(&date.and_hms_opt(utc_hour, 0, 0)?))
}

/// The start of the CME Globex trading day holding `at`: the latest 17:00 America/Chicago at or
/// before it on a Sunday to Thursday (Friday's close runs until Sunday's open). Exchange
/// holidays are not known here.
pub fn cme_session_start(at: DateTime<Utc>) -> DateTime<Utc> {
    let mut date = at.date_naive();
    // At most a week back: every week has a Sunday.
    for _ in 0..8 {
        if !matches!(date.weekday(), Weekday::Fri | Weekday::Sat)
            && let Some(start) = chicago_1700(date)
            && start <= at
        {
            return start;
        }
        match date.pred_opt() {
            Some(previous) => date = previous,
            None => break,
        }
    }
    at
}

/// The session a snapshot belongs to.
fn session_of(snapshot: &Snapshot) -> (DateTime<Utc>, SessionSource) {
    match snapshot.session_start {
        Some(start) => (start, SessionSource::Addon),
        None => (
            cme_session_start(snapshot.taken_at),
            SessionSource::CmeGlobex,
        ),
    }
}

fn range_of<'a>(series: impl IntoIterator<Item = &'a Snapshot>) -> Option<Range> {
    let mut range: Option<Range> = None;
    for s in series {
        let r = range.get_or_insert(Range {
            high: s.value,
            high_at: s.taken_at,
            low: s.value,
            low_at: s.taken_at,
        });
        if s.value > r.high {
            r.high = s.value;
            r.high_at = s.taken_at;
        }
        if s.value < r.low {
            r.low = s.value;
            r.low_at = s.taken_at;
        }
    }
    range
}

fn drawdown_of(series: &[Snapshot], high: f64, latest: f64) -> Drawdown {
    let mut drawdown = Drawdown {
        from_high: high - latest,
        max: 0.0,
        max_peak_at: None,
        max_trough_at: None,
    };
    let mut peak: Option<Point> = None;
    for s in series {
        let p = match peak {
            Some(p) if p.value >= s.value => p,
            _ => {
                peak = Some(Point {
                    value: s.value,
                    at: s.taken_at,
                });
                continue;
            }
        };
        let fall = p.value - s.value;
        if fall > drawdown.max {
            drawdown.max = fall;
            drawdown.max_peak_at = Some(p.at);
            drawdown.max_trough_at = Some(s.taken_at);
        }
    }
    drawdown
}

fn trailing_of(series: &[Snapshot], rule: TrailingRule) -> Option<Trailing> {
    let first = series.first()?;
    let latest = series.last()?;
    let cap = |peak: f64| {
        let trailed = peak - rule.amount;
        rule.stop_at.map_or(trailed, |stop| trailed.min(stop))
    };
    let mut peak = first.value;
    let mut breached_at = None;
    let mut previous: Option<&Snapshot> = None;
    for s in series {
        match rule.mode {
            TrailingMode::Intraday => peak = peak.max(s.value),
            TrailingMode::EndOfDay => {
                // A session is complete once a snapshot of a later session arrives; its last
                // value is its end-of-day value.
                if let Some(p) = previous
                    && session_of(p).0 != session_of(s).0
                {
                    peak = peak.max(p.value);
                }
            }
        }
        if breached_at.is_none() && s.value <= cap(peak) {
            breached_at = Some(s.taken_at);
        }
        previous = Some(s);
    }
    let threshold = cap(peak);
    Some(Trailing {
        mode: rule.mode.into(),
        amount: rule.amount,
        stop_at: rule.stop_at,
        peak,
        threshold,
        remaining: latest.value - threshold,
        breached_at,
    })
}

/// The watermarks of one account's snapshots, given oldest first; `None` without snapshots.
pub fn compute(
    account: &str,
    series: &[Snapshot],
    trailing: Option<TrailingRule>,
) -> Option<Watermark> {
    let latest = *series.last()?;
    let all_time = range_of(series)?;
    let (start, source) = session_of(&latest);
    let in_session: Vec<Snapshot> = series
        .iter()
        .filter(|s| s.taken_at >= start)
        .copied()
        .collect();
    // The latest snapshot is in its own session unless its reported start lies after it.
    let opening = in_session.first().copied().unwrap_or(latest);
    let session_range = range_of(&in_session).unwrap_or(Range {
        high: latest.value,
        high_at: latest.taken_at,
        low: latest.value,
        low_at: latest.taken_at,
    });
    Some(Watermark {
        account: account.to_owned(),
        basis: "net_liquidation",
        latest: Point {
            value: latest.value,
            at: latest.taken_at,
        },
        all_time,
        session: Session {
            start,
            source,
            open: opening.value,
            open_at: opening.taken_at,
            range: session_range,
        },
        drawdown: drawdown_of(series, all_time.high, latest.value),
        trailing: trailing.and_then(|rule| trailing_of(series, rule)),
    })
}

/// Watermarks per account (or for one account), by account name.
pub async fn watermarks(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    account: Option<&str>,
    trailing: Option<TrailingRule>,
) -> Result<Vec<Watermark>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT account, taken_at, net_liquidation, session_start FROM addon_account_snapshots
         WHERE user_id = $1 AND ($2::text IS NULL OR account = $2)
         ORDER BY account, taken_at, id",
        user_id,
        account,
    )
    .fetch_all(db)
    .await?;
    let mut marks = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while let Some(first) = rows.next() {
        let account = first.account;
        let mut series = vec![Snapshot {
            taken_at: first.taken_at,
            value: first.net_liquidation,
            session_start: first.session_start,
        }];
        while let Some(row) = rows.next_if(|row| row.account == account) {
            series.push(Snapshot {
                taken_at: row.taken_at,
                value: row.net_liquidation,
                session_start: row.session_start,
            });
        }
        marks.extend(compute(&account, &series, trailing));
    }
    Ok(marks)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::float_cmp,
        reason = "tests fail by panicking; values are compared as written"
    )]

    use super::*;

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn series(points: &[(&str, f64)]) -> Vec<Snapshot> {
        points
            .iter()
            .map(|(at, value)| Snapshot {
                taken_at: t(at),
                value: *value,
                session_start: None,
            })
            .collect()
    }

    /// A rule as the catalog builds one: only for a positive amount.
    fn rule(amount: f64, mode: TrailingMode, stop_at: Option<f64>) -> Option<TrailingRule> {
        let rule = TrailingRule {
            amount,
            mode,
            stop_at,
        };
        (amount > 0.0).then_some(rule)
    }

    #[test]
    fn cme_sessions_start_at_1700_chicago_across_both_dst_switches() {
        let table = [
            // Winter (CST, UTC-6): 17:00 is 23:00Z; summer (CDT, UTC-5): 22:00Z.
            ("2026-01-13T15:00:00Z", "2026-01-12T23:00:00Z"),
            ("2026-01-13T23:00:00Z", "2026-01-13T23:00:00Z"),
            ("2026-01-13T22:59:59Z", "2026-01-12T23:00:00Z"),
            ("2026-07-14T22:00:00Z", "2026-07-14T22:00:00Z"),
            ("2026-07-14T21:59:59Z", "2026-07-13T22:00:00Z"),
            // Sunday 8 March 2026 (second Sunday): DST from 02:00, so its 17:00 is CDT.
            ("2026-03-08T22:00:00Z", "2026-03-08T22:00:00Z"),
            ("2026-03-08T21:59:59Z", "2026-03-05T23:00:00Z"),
            ("2026-03-09T14:00:00Z", "2026-03-08T22:00:00Z"),
            // Sunday 1 November 2026 (first Sunday): back to CST, 17:00 is 23:00Z.
            ("2026-11-01T22:30:00Z", "2026-10-29T22:00:00Z"),
            ("2026-11-01T23:00:00Z", "2026-11-01T23:00:00Z"),
            ("2026-11-02T15:00:00Z", "2026-11-01T23:00:00Z"),
            // Friday after the close and Saturday belong to the day that began Thursday.
            ("2026-11-20T23:30:00Z", "2026-11-19T23:00:00Z"),
            ("2026-11-21T12:00:00Z", "2026-11-19T23:00:00Z"),
            // 2027: DST from 14 March to 7 November.
            ("2027-03-14T22:00:00Z", "2027-03-14T22:00:00Z"),
            ("2027-11-07T23:00:00Z", "2027-11-07T23:00:00Z"),
            ("2027-11-07T22:00:00Z", "2027-11-04T22:00:00Z"),
        ];
        for (at, start) in table {
            assert_eq!(cme_session_start(t(at)), t(start), "{at}");
        }
    }

    #[test]
    fn no_snapshots_no_watermark() {
        assert_eq!(compute("Sim101", &[], None), None);
        assert_eq!(
            compute("Sim101", &[], rule(100.0, TrailingMode::Intraday, None)),
            None
        );
    }

    #[test]
    fn a_single_snapshot_is_its_own_high_low_and_session() {
        let one = series(&[("2026-11-20T14:00:00Z", 50_000.0)]);
        let mark = compute("Sim101", &one, rule(2_500.0, TrailingMode::Intraday, None)).unwrap();
        let at = t("2026-11-20T14:00:00Z");
        assert_eq!(mark.basis, "net_liquidation");
        assert_eq!(
            mark.latest,
            Point {
                value: 50_000.0,
                at
            }
        );
        let range = Range {
            high: 50_000.0,
            high_at: at,
            low: 50_000.0,
            low_at: at,
        };
        assert_eq!(mark.all_time, range);
        assert_eq!(
            mark.session,
            Session {
                start: t("2026-11-19T23:00:00Z"),
                source: SessionSource::CmeGlobex,
                open: 50_000.0,
                open_at: at,
                range,
            }
        );
        assert_eq!(
            mark.drawdown,
            Drawdown {
                from_high: 0.0,
                max: 0.0,
                max_peak_at: None,
                max_trough_at: None
            }
        );
        let trailing = mark.trailing.unwrap();
        assert_eq!(
            (trailing.peak, trailing.threshold, trailing.remaining),
            (50_000.0, 47_500.0, 2_500.0)
        );
        assert_eq!(trailing.breached_at, None);
        assert_eq!(compute("Sim101", &one, None).unwrap().trailing, None);
    }

    /// Two CME sessions: Thursday 19 Nov (from 18 Nov 23:00Z) and Friday 20 Nov (from 19 Nov
    /// 23:00Z).
    fn two_sessions() -> Vec<Snapshot> {
        series(&[
            ("2026-11-19T14:00:00Z", 50_000.0),
            ("2026-11-19T15:00:00Z", 50_800.0),
            ("2026-11-19T16:00:00Z", 49_900.0),
            ("2026-11-19T20:00:00Z", 50_300.0),
            ("2026-11-20T00:30:00Z", 50_200.0),
            ("2026-11-20T14:00:00Z", 50_600.0),
            ("2026-11-20T15:00:00Z", 49_600.0),
            ("2026-11-20T16:00:00Z", 50_100.0),
        ])
    }

    #[test]
    fn all_time_and_session_highs_and_lows() {
        let mark = compute("Sim101", &two_sessions(), None).unwrap();
        assert_eq!(
            mark.all_time,
            Range {
                high: 50_800.0,
                high_at: t("2026-11-19T15:00:00Z"),
                low: 49_600.0,
                low_at: t("2026-11-20T15:00:00Z"),
            }
        );
        assert_eq!(
            mark.session,
            Session {
                start: t("2026-11-19T23:00:00Z"),
                source: SessionSource::CmeGlobex,
                open: 50_200.0,
                open_at: t("2026-11-20T00:30:00Z"),
                range: Range {
                    high: 50_600.0,
                    high_at: t("2026-11-20T14:00:00Z"),
                    low: 49_600.0,
                    low_at: t("2026-11-20T15:00:00Z"),
                },
            }
        );
        assert_eq!(mark.latest.value, 50_100.0);
        assert_eq!(mark.drawdown.from_high, 700.0);
    }

    #[test]
    fn equal_highs_keep_the_first_time() {
        let flat = series(&[
            ("2026-11-20T14:00:00Z", 100.0),
            ("2026-11-20T15:00:00Z", 100.0),
        ]);
        let mark = compute("Sim101", &flat, None).unwrap();
        assert_eq!(mark.all_time.high_at, t("2026-11-20T14:00:00Z"));
        assert_eq!(mark.all_time.low_at, t("2026-11-20T14:00:00Z"));
        assert_eq!(mark.drawdown.max, 0.0);
    }

    #[test]
    fn the_addons_session_start_wins_over_the_cme_day() {
        let mut snapshots = two_sessions();
        let start = t("2026-11-20T14:30:00Z");
        for s in &mut snapshots[6..] {
            s.session_start = Some(start);
        }
        let session = compute("Sim101", &snapshots, None).unwrap().session;
        assert_eq!(
            (session.start, session.source),
            (start, SessionSource::Addon)
        );
        assert_eq!(
            (session.open, session.open_at),
            (49_600.0, t("2026-11-20T15:00:00Z"))
        );
        assert_eq!(
            (session.range.high, session.range.low),
            (50_100.0, 49_600.0)
        );
    }

    #[test]
    fn max_drawdown_names_its_peak_and_trough() {
        let mark = compute("Sim101", &two_sessions(), None).unwrap();
        // 50 800 (19 Nov 15:00) down to 49 600 (20 Nov 15:00), not the first dip to 49 900.
        assert_eq!(
            mark.drawdown,
            Drawdown {
                from_high: 700.0,
                max: 1_200.0,
                max_peak_at: Some(t("2026-11-19T15:00:00Z")),
                max_trough_at: Some(t("2026-11-20T15:00:00Z")),
            }
        );
        // A later, higher peak with a smaller fall does not replace it.
        let mut more = two_sessions();
        more.extend(series(&[
            ("2026-11-20T17:00:00Z", 51_000.0),
            ("2026-11-20T18:00:00Z", 50_000.0),
        ]));
        let drawdown = compute("Sim101", &more, None).unwrap().drawdown;
        assert_eq!(drawdown.max, 1_200.0);
        assert_eq!(drawdown.from_high, 1_000.0);
    }

    #[test]
    fn intraday_trails_every_value_end_of_day_only_session_closes() {
        let snapshots = two_sessions();
        let intraday = compute(
            "Sim101",
            &snapshots,
            rule(1_000.0, TrailingMode::Intraday, None),
        )
        .unwrap()
        .trailing
        .unwrap();
        // Peak 50 800 → threshold 49 800; 49 600 on 20 Nov 15:00 is the first at or below.
        assert_eq!(
            intraday,
            Trailing {
                mode: TrailingModeName::Intraday,
                amount: 1_000.0,
                stop_at: None,
                peak: 50_800.0,
                threshold: 49_800.0,
                remaining: 300.0,
                breached_at: Some(t("2026-11-20T15:00:00Z")),
            }
        );
        let eod = compute(
            "Sim101",
            &snapshots,
            rule(1_000.0, TrailingMode::EndOfDay, None),
        )
        .unwrap()
        .trailing
        .unwrap();
        // Start 50 000, Thursday closed at 50 300: peak 50 300 → threshold 49 300, never hit.
        assert_eq!(
            eod,
            Trailing {
                mode: TrailingModeName::EndOfDay,
                amount: 1_000.0,
                stop_at: None,
                peak: 50_300.0,
                threshold: 49_300.0,
                remaining: 800.0,
                breached_at: None,
            }
        );
    }

    #[test]
    fn the_stop_at_caps_the_threshold() {
        let snapshots = two_sessions();
        let capped = compute(
            "Sim101",
            &snapshots,
            rule(1_000.0, TrailingMode::Intraday, Some(49_500.0)),
        )
        .unwrap()
        .trailing
        .unwrap();
        assert_eq!(
            (capped.peak, capped.threshold, capped.remaining),
            (50_800.0, 49_500.0, 600.0)
        );
        assert_eq!(capped.stop_at, Some(49_500.0));
        assert_eq!(capped.breached_at, None);
        // A cap above the trailed level changes nothing.
        let loose = compute(
            "Sim101",
            &snapshots,
            rule(1_000.0, TrailingMode::Intraday, Some(60_000.0)),
        )
        .unwrap()
        .trailing
        .unwrap();
        assert_eq!(loose.threshold, 49_800.0);
    }

    #[test]
    fn a_value_exactly_at_the_threshold_is_a_breach() {
        let snapshots = series(&[
            ("2026-11-20T14:00:00Z", 50_000.0),
            ("2026-11-20T14:10:00Z", 52_000.0),
            ("2026-11-20T14:20:00Z", 49_500.25),
            ("2026-11-20T14:30:00Z", 49_500.0),
            ("2026-11-20T14:40:00Z", 49_400.0),
            ("2026-11-20T14:50:00Z", 51_000.0),
        ]);
        let trailing = compute(
            "Sim101",
            &snapshots,
            rule(2_500.0, TrailingMode::Intraday, None),
        )
        .unwrap()
        .trailing
        .unwrap();
        assert_eq!(trailing.threshold, 49_500.0);
        assert_eq!(trailing.breached_at, Some(t("2026-11-20T14:30:00Z")));
        // Recovering later does not undo the breach.
        assert_eq!(trailing.remaining, 1_500.0);
    }

    #[test]
    fn end_of_day_breaches_against_the_threshold_of_their_day() {
        // Thursday closes at 52 000 (threshold 50 000 from Friday on); Thursday's own dip to
        // 49 000 is above its threshold 48 000 (start 50 000 − 2 000).
        let snapshots = series(&[
            ("2026-11-19T14:00:00Z", 50_000.0),
            ("2026-11-19T15:00:00Z", 48_000.5),
            ("2026-11-19T20:00:00Z", 52_000.0),
            ("2026-11-20T14:00:00Z", 50_000.0),
            ("2026-11-20T15:00:00Z", 53_000.0),
        ]);
        let trailing = compute(
            "Sim101",
            &snapshots,
            rule(2_000.0, TrailingMode::EndOfDay, None),
        )
        .unwrap()
        .trailing
        .unwrap();
        assert_eq!((trailing.peak, trailing.threshold), (52_000.0, 50_000.0));
        assert_eq!(trailing.breached_at, Some(t("2026-11-20T14:00:00Z")));
        assert_eq!(trailing.remaining, 3_000.0);
    }
}
