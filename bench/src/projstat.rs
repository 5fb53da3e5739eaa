//! The projector's own counters around a phase, read from the server's
//! `/metrics`: how many batches it applied, how large they were, how long
//! one took (and how much of that was planning in the server and the
//! statement in PostgreSQL), and how much of the phase it was busy. A
//! write figure that misses its target is read from here first: a busy
//! projector is the bottleneck, an idle one points elsewhere.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::http::Fhir;

/// Runs `work` and reports the projector's activity during it.
pub async fn around<T>(fhir: &Fhir, work: impl Future<Output = T>) -> (T, Option<ProjectorRates>) {
    let before = take(fhir).await;
    let started = Instant::now();
    let out = work.await;
    let elapsed = started.elapsed();
    let after = take(fhir).await;
    let rates = before.zip(after).and_then(|(b, a)| b.rates_over(&a, elapsed));
    (out, rates)
}

async fn take(fhir: &Fhir) -> Option<ProjectorCounters> {
    ProjectorCounters::parse(&fhir.metrics().await.ok()?)
}

/// Cumulative projector counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProjectorCounters {
    batches: f64,
    events: f64,
    batch_seconds: f64,
    plans: f64,
    plan_seconds: f64,
    statements: f64,
    statement_seconds: f64,
}

impl ProjectorCounters {
    /// Reads the counters from Prometheus text, summing over label sets;
    /// `None` when the server exports no projector batches at all.
    pub fn parse(text: &str) -> Option<Self> {
        let mut c = Self::default();
        let mut seen = false;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.trim().parse::<f64>() else { continue };
            let name = name.split('{').next().unwrap_or(name);
            let slot = match name {
                "fhirstream_projector_batch_seconds_count" => {
                    seen = true;
                    &mut c.batches
                }
                "fhirstream_projector_batch_events_sum" => &mut c.events,
                "fhirstream_projector_batch_seconds_sum" => &mut c.batch_seconds,
                "fhirstream_projector_plan_seconds_count" => &mut c.plans,
                "fhirstream_projector_plan_seconds_sum" => &mut c.plan_seconds,
                "fhirstream_projector_statement_seconds_count" => &mut c.statements,
                "fhirstream_projector_statement_seconds_sum" => &mut c.statement_seconds,
                _ => continue,
            };
            *slot += value;
        }
        seen.then_some(c)
    }

    /// What changed from `self` to `later`, over `elapsed`; `None` when no
    /// batch was applied in between.
    pub fn rates_over(&self, later: &Self, elapsed: Duration) -> Option<ProjectorRates> {
        let batches = later.batches - self.batches;
        let secs = elapsed.as_secs_f64();
        if batches <= 0.0 || secs <= 0.0 {
            return None;
        }
        let per = |sum: f64, count: f64| if count > 0.0 { sum / count * 1000.0 } else { 0.0 };
        Some(ProjectorRates {
            batches: batches as u64,
            events_per_batch: (later.events - self.events) / batches,
            batch_ms: per(later.batch_seconds - self.batch_seconds, batches),
            plan_ms: per(later.plan_seconds - self.plan_seconds, later.plans - self.plans),
            statement_ms: per(later.statement_seconds - self.statement_seconds, later.statements - self.statements),
            busy: ((later.batch_seconds - self.batch_seconds) / secs).min(1.0),
        })
    }
}

/// The projector during a phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProjectorRates {
    pub batches: u64,
    pub events_per_batch: f64,
    /// A whole batch: plan, statement, ack and announcement.
    pub batch_ms: f64,
    /// Turning events into rows (bodies parsed, search values extracted).
    pub plan_ms: f64,
    /// The PostgreSQL round trip.
    pub statement_ms: f64,
    /// Share of the phase spent applying batches (1.0: never idle).
    pub busy: f64,
}

impl ProjectorRates {
    /// `7,616 batches of 12.6 events, 4.79 ms each (plan 0.07, statement
    /// 4.64), busy 91%` for the text report.
    pub fn describe(&self) -> String {
        let n = crate::report::table::number;
        format!(
            "{} batches of {} events, {} ms each (plan {}, statement {}), busy {:.0}%",
            n(self.batches as f64),
            n(self.events_per_batch),
            n(self.batch_ms),
            n(self.plan_ms),
            n(self.statement_ms),
            self.busy * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# TYPE fhirstream_projector_batch_seconds histogram
fhirstream_projector_batch_seconds_bucket{projector=\"main\",le=\"0.005\"} 3
fhirstream_projector_batch_seconds_sum{projector=\"main\"} 1.5
fhirstream_projector_batch_seconds_count{projector=\"main\"} 100
fhirstream_projector_batch_events_sum{projector=\"main\"} 1000
fhirstream_projector_plan_seconds_sum{projector=\"main\"} 0.1
fhirstream_projector_plan_seconds_count{projector=\"main\"} 100
fhirstream_projector_statement_seconds_sum{projector=\"main\"} 1.2
fhirstream_projector_statement_seconds_count{projector=\"main\"} 100
fhirstream_http_requests_total{method=\"GET\"} 7
";

    #[test]
    fn counters_come_from_the_sums_and_counts_and_ignore_buckets_and_other_metrics() {
        let c = ProjectorCounters::parse(BEFORE).unwrap();
        assert_eq!(c.batches, 100.0);
        assert_eq!(c.events, 1000.0);
        assert_eq!(c.batch_seconds, 1.5);
        assert_eq!(c.statement_seconds, 1.2);
        assert_eq!(ProjectorCounters::parse("fhirstream_http_requests_total 3\n"), None);
    }

    #[test]
    fn rates_are_per_batch_and_busy_is_the_share_of_the_phase() {
        let before = ProjectorCounters::parse(BEFORE).unwrap();
        let after = ProjectorCounters {
            batches: 300.0,
            events: 5000.0,
            batch_seconds: 5.5,
            plans: 300.0,
            plan_seconds: 0.5,
            statements: 300.0,
            statement_seconds: 4.2,
        };
        let r = before.rates_over(&after, Duration::from_secs(8)).unwrap();
        assert_eq!(r.batches, 200);
        assert_eq!(r.events_per_batch, 20.0);
        assert!((r.batch_ms - 20.0).abs() < 1e-9, "{}", r.batch_ms);
        assert!((r.plan_ms - 2.0).abs() < 1e-9 && (r.statement_ms - 15.0).abs() < 1e-9);
        assert!((r.busy - 0.5).abs() < 1e-9);
        assert!(before.rates_over(&before, Duration::from_secs(1)).is_none(), "no batch, no rates");
    }
}
