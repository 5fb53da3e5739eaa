//! The rows of the report: each figure beside its raw baseline, the ratio
//! between them, and the target for it. Scenarios that do not exist
//! yet are rows too, saying so, never numbers.

use std::borrow::Cow;

use serde::Serialize;

use crate::report::Results;
use crate::stats::{Summary, ratio};

/// What a value counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    PerSec,
    Ms,
    MiB,
    Us,
}

/// A goal from the benchmark issue, on the value or on the ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "limit", rename_all = "snake_case")]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    RatioAtLeast(f64),
    RatioAtMost(f64),
}

impl Target {
    /// Whether the goal is met; `None` when the needed figure is missing.
    pub fn met(self, value: Option<f64>, ratio: Option<f64>) -> Option<bool> {
        match self {
            Self::AtLeast(t) => value.map(|v| v >= t),
            Self::AtMost(t) => value.map(|v| v <= t),
            Self::RatioAtLeast(t) => ratio.map(|r| r >= t),
            Self::RatioAtMost(t) => ratio.map(|r| r <= t),
        }
    }
}

/// Whether a row holds a measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "why")]
pub enum Status {
    Measured,
    NotYetImplemented,
    Skipped(Option<String>),
    Failed(String),
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Stable key, e.g. `p1.writes`.
    pub id: Cow<'static, str>,
    pub scenario: &'static str,
    pub figure: Cow<'static, str>,
    pub value: Option<f64>,
    pub unit: Unit,
    /// Extra percentiles of a latency row, e.g. `p95 9.1 / p99 14.0`.
    pub detail: Option<String>,
    pub baseline: Option<&'static str>,
    pub baseline_value: Option<f64>,
    /// `value / baseline_value`.
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    pub met: Option<bool>,
    pub status: Status,
}

impl Row {
    fn new(
        id: impl Into<Cow<'static, str>>,
        scenario: &'static str,
        figure: impl Into<Cow<'static, str>>,
        unit: Unit,
    ) -> Self {
        Self {
            id: id.into(),
            scenario,
            figure: figure.into(),
            value: None,
            unit,
            detail: None,
            baseline: None,
            baseline_value: None,
            ratio: None,
            target: None,
            met: None,
            status: Status::Skipped(None),
        }
    }

    fn value(mut self, v: Option<f64>) -> Self {
        self.value = v;
        if v.is_some() {
            self.status = Status::Measured;
        }
        self
    }

    fn latency(self, s: Option<&Summary>) -> Self {
        let mut row = self.value(s.filter(|s| s.count > 0).map(|s| s.p50_ms));
        row.detail = s.filter(|s| s.count > 0).map(|s| format!("p95 {} / p99 {}", ms(s.p95_ms), ms(s.p99_ms)));
        row
    }

    fn against(mut self, name: &'static str, v: Option<f64>) -> Self {
        self.baseline = Some(name);
        self.baseline_value = v;
        self
    }

    fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }

    /// Fills in the ratio and whether the target is met.
    fn settle(mut self) -> Self {
        self.ratio = ratio(self.value, self.baseline_value);
        self.met = self.target.and_then(|t| t.met(self.value, self.ratio));
        self
    }
}

fn ms(v: f64) -> String {
    super::table::number(v)
}

/// The table's rows, in reading order.
pub fn build(r: &Results) -> Vec<Row> {
    let p1 = r.p1.as_ref();
    let pub_lat = r.raw_publish.as_ref().map(|p| &p.latency).filter(|s| s.count > 0);
    let low_pub_lat = r.raw_publish_p5.as_ref().map(|p| &p.latency).filter(|s| s.count > 0);
    let sel_lat = r.raw_select.as_ref().map(|p| &p.latency).filter(|s| s.count > 0);
    let pipeline = r.raw_pipeline.as_ref().and_then(|p| p.events_per_sec);
    let select = r.raw_select.as_ref().and_then(|p| p.reads_per_sec);
    let copy = r.raw_copy.as_ref().and_then(|c| c.rows_per_sec);
    // What one imported resource costs end to end: the budget validation
    // must stay within a tenth of.
    let p2_us = r.p2.as_ref().and_then(|p| p.resources_per_sec).filter(|v| *v > 0.0).map(|v| 1e6 / v);
    let failed = |key: &str| r.failures.get(key).map(|why| Status::Failed(why.clone()));
    let mut rows = vec![
        Row::new("p1.ops", "P1 CRUD mix", "operations/s", Unit::PerSec)
            .value(p1.and_then(|p| p.ops_per_sec))
            .target(Target::AtLeast(4000.0)),
        Row::new("p1.writes", "P1 CRUD mix", "writes/s", Unit::PerSec)
            .value(p1.and_then(|p| p.writes_per_sec))
            .against("raw write pipeline", pipeline)
            .target(Target::RatioAtLeast(0.5)),
        Row::new("p1.create", "P1 CRUD mix", "create p50", Unit::Ms)
            .latency(p1.map(|p| &p.create))
            .against("raw publish p50", pub_lat.map(|s| s.p50_ms)),
        // No baseline: in the mix only some users read at any moment, so a
        // select at full concurrency would not be the same load.
        Row::new("p1.read", "P1 CRUD mix", "read p50", Unit::Ms).latency(p1.map(|p| &p.read)),
        Row::new("p1.update", "P1 CRUD mix", "update p50", Unit::Ms)
            .latency(p1.map(|p| &p.update))
            .against("raw publish p50", pub_lat.map(|s| s.p50_ms)),
        Row::new("p1.delete", "P1 CRUD mix", "delete p50", Unit::Ms)
            .latency(p1.map(|p| &p.delete))
            .against("raw publish p50", pub_lat.map(|s| s.p50_ms)),
        Row::new("p1.rss", "P1 CRUD mix", "server peak RSS", Unit::MiB)
            .value(r.p1_server.as_ref().and_then(|s| s.after.map(|m| m.hwm_mib).or(s.max_rss_mib)))
            .target(Target::AtMost(150.0)),
        Row::new("p2.import", "P2 import", "resources/s", Unit::PerSec)
            .value(r.p2.as_ref().and_then(|p| p.resources_per_sec))
            .against("raw COPY", copy)
            .target(Target::RatioAtLeast(0.5)),
        Row::new("p2.rate", "P2 import", "resources/s (absolute)", Unit::PerSec)
            .value(r.p2.as_ref().and_then(|p| p.resources_per_sec))
            .target(Target::AtLeast(10_000.0)),
        Row::new("p2.bundle", "P2 import", "transaction p50", Unit::Ms)
            .latency(r.p2.as_ref().map(|p| &p.bundle_latency)),
        Row::new("p3.reads", "P3 read by id", "reads/s", Unit::PerSec)
            .value(r.p3.as_ref().and_then(|p| p.reads_per_sec))
            .against("raw select", select)
            .target(Target::RatioAtLeast(0.5)),
        Row::new("p3.latency", "P3 read by id", "read p50", Unit::Ms)
            .latency(r.p3.as_ref().map(|p| &p.latency))
            .against("raw select p50", sel_lat.map(|s| s.p50_ms)),
        Row::new("p4.isolation", "P4 isolation", "read p50, big neighbour", Unit::Ms)
            .latency(r.p4.as_ref().map(|p| &p.big_neighbour.read))
            .against("empty neighbour", r.p4.as_ref().map(|p| p.empty_neighbour.read.p50_ms))
            .target(Target::RatioAtMost(1.1)),
        Row::new("p4.search", "P4 isolation", "search p50, big neighbour", Unit::Ms)
            .latency(r.p4.as_ref().map(|p| &p.big_neighbour.search))
            .against("empty neighbour", r.p4.as_ref().map(|p| p.empty_neighbour.search.p50_ms))
            .target(Target::RatioAtMost(1.1)),
        Row::new("p5.ryw", "P5 write latency", "read-your-writes p50", Unit::Ms)
            .latency(r.p5.as_ref().map(|p| &p.read_your_writes))
            .against("eventual p50", r.p5.as_ref().map(|p| p.eventual.p50_ms).filter(|v| *v > 0.0))
            .target(Target::RatioAtMost(1.3)),
        Row::new("p5.eventual", "P5 write latency", "eventual p50", Unit::Ms)
            .latency(r.p5.as_ref().map(|p| &p.eventual))
            .against("raw publish p50 (same conc.)", low_pub_lat.map(|s| s.p50_ms)),
        Row::new("p6.replay", "P6 replay", "events/s", Unit::PerSec)
            .value(r.p6.as_ref().and_then(|p| p.replay_events_per_sec))
            .against("raw consume, same subjects", r.p6.as_ref().and_then(|p| p.raw_consume_events_per_sec)),
        Row::new("v1.p1", "V1 validation", "P1 ops/s, validating", Unit::PerSec)
            .value(p1.and_then(|p| p.ops_per_sec))
            .against("P1 without validation", r.p1_unvalidated.as_ref().and_then(|p| p.ops_per_sec))
            .target(Target::RatioAtLeast(0.9)),
        Row::new("v1.p2", "V1 validation", "P2 resources/s, validating", Unit::PerSec)
            .value(r.p2.as_ref().and_then(|p| p.resources_per_sec))
            .against("P2 without validation", r.p2_unvalidated.as_ref().and_then(|p| p.resources_per_sec))
            .target(Target::RatioAtLeast(0.9)),
        Row::new("v1.mean", "V1 validation", "µs per resource (Synthea mean)", Unit::Us)
            .value(r.v1.as_ref().map(|v| v.mean_us))
            .against("P2 µs per resource", p2_us)
            .target(Target::RatioAtMost(0.1)),
        Row::new("v1.patient", "V1 validation", "µs per Patient", Unit::Us)
            .value(r.v1.as_ref().and_then(|v| v.patient_us)),
        Row::new("v1.observation", "V1 validation", "µs per Observation", Unit::Us)
            .value(r.v1.as_ref().and_then(|v| v.observation_us)),
        Row::new("raw.publish", "raw baseline", "JetStream publish+ack", Unit::PerSec)
            .value(r.raw_publish.as_ref().and_then(|p| p.events_per_sec)),
        Row::new("raw.publish.latency", "raw baseline", "publish+ack p50", Unit::Ms).latency(pub_lat),
        Row::new("raw.publish.low", "raw baseline", "publish+ack p50, P5 conc.", Unit::Ms).latency(low_pub_lat),
        Row::new("raw.pipeline", "raw baseline", "write pipeline (events/s)", Unit::PerSec)
            .value(pipeline)
            .against("raw publish", r.raw_publish.as_ref().and_then(|p| p.events_per_sec)),
        Row::new("raw.copy", "raw baseline", "COPY (rows/s)", Unit::PerSec).value(copy),
        Row::new("raw.select", "raw baseline", "PK select (selects/s)", Unit::PerSec).value(select),
        Row::new("raw.select.latency", "raw baseline", "PK select p50", Unit::Ms).latency(sel_lat),
    ];
    rows.extend(search_rows(r));
    for row in &mut rows {
        let key = row.id.split('.').next().unwrap_or_default();
        let scenario = match key {
            "raw" => row.id.split('.').nth(1).map(|s| format!("raw-{s}")).unwrap_or_default(),
            other => other.to_owned(),
        };
        if row.status == Status::Skipped(None) {
            if let Some(f) = failed(&scenario) {
                row.status = f;
            } else if let Some(why) = r.skipped.get(&scenario) {
                row.status = Status::Skipped(Some(why.clone()));
            }
        }
    }
    rows.into_iter().map(Row::settle).collect()
}

/// S1: one row per search and tenant, beside the same statements run
/// straight on PostgreSQL; p50/p99 and the answer's total in the detail.
fn search_rows(r: &Results) -> Vec<Row> {
    let Some(s1) = r.s1.as_ref() else {
        return vec![Row::new("s1.search", "S1 search", "requests/s", Unit::PerSec)];
    };
    s1.rows
        .iter()
        .map(|row| {
            let target = if row.date_range { 1000.0 } else { 1500.0 };
            let mut out = Row::new(
                format!("s1.{}.{}", row.tenant, row.key),
                "S1 search",
                format!("{} tenant: {}", row.tenant, row.query),
                Unit::PerSec,
            )
            .value(row.requests_per_sec)
            .against("raw SQL, same statements", row.raw_per_sec)
            .target(Target::AtLeast(target));
            out.detail = Some(format!(
                "p50 {} / p99 {} ms, total {}",
                ms(row.latency.p50_ms),
                ms(row.latency.p99_ms),
                row.total.map_or("-".into(), |t| t.to_string())
            ));
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_checked_on_the_value_or_the_ratio() {
        assert_eq!(Target::AtLeast(4000.0).met(Some(4100.0), None), Some(true));
        assert_eq!(Target::AtMost(150.0).met(Some(151.0), None), Some(false));
        assert_eq!(Target::RatioAtLeast(0.5).met(Some(1.0), Some(0.49)), Some(false));
        assert_eq!(Target::RatioAtMost(1.3).met(None, Some(1.2)), Some(true));
        assert_eq!(Target::RatioAtLeast(0.5).met(Some(1.0), None), None);
    }

    #[test]
    fn without_results_nothing_is_invented() {
        let rows = build(&Results::default());
        assert!(rows.iter().all(|r| r.value.is_none() && r.ratio.is_none() && r.met.is_none()));
        let p4 = rows.iter().find(|r| r.id == "p4.isolation").unwrap();
        assert_eq!(p4.status, Status::Skipped(None));
        let p1 = rows.iter().find(|r| r.id == "p1.ops").unwrap();
        assert_eq!(p1.status, Status::Skipped(None));
    }

    #[test]
    fn a_failed_scenario_says_why_on_its_rows() {
        let mut r = Results::default();
        r.failures.insert("raw-pipeline".into(), "boom".into());
        let rows = build(&r);
        let row = rows.iter().find(|r| r.id == "raw.pipeline").unwrap();
        assert_eq!(row.status, Status::Failed("boom".into()));
    }

    #[test]
    fn a_skipped_scenario_says_why() {
        let mut r = Results::default();
        r.skipped.insert("p2".into(), "no bundles".into());
        let rows = build(&r);
        let row = rows.iter().find(|r| r.id == "p2.import").unwrap();
        assert_eq!(row.status, Status::Skipped(Some("no bundles".into())));
    }
}
