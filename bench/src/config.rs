//! Command-line configuration of the harness: where the stack is, how hard
//! to push it and for how long, and which scenarios to run.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;

/// Measures a running fhirstream (and the raw NATS and PostgreSQL under it)
/// and writes a table, a JSON file and a PNG chart.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "fhirstream-bench", version, about)]
pub struct BenchArgs {
    /// Base URL of the fhirstream server under test (started with --auth-disabled).
    #[arg(long, env = "FHIRSTREAM_BENCH_BASE_URL", default_value = "http://127.0.0.1:8080")]
    pub base_url: String,
    /// The server's NATS: its version is recorded and the raw baselines
    /// use a scratch stream there.
    #[arg(long, env = "FHIRSTREAM_BENCH_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The server's database: versions, the raw select, and the scratch
    /// schema `bench_raw` (created and dropped by the harness).
    #[arg(
        long,
        env = "FHIRSTREAM_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/fhirstream"
    )]
    #[serde(skip)]
    pub database_url: String,
    /// Concurrent virtual users (P1, P3 and the raw baselines).
    #[arg(long, env = "FHIRSTREAM_BENCH_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// Unmeasured P1 load before P1, to warm pools and caches.
    #[arg(long, env = "FHIRSTREAM_BENCH_WARMUP", default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    /// How long P1 (CRUD mix) runs.
    #[arg(long, env = "FHIRSTREAM_BENCH_DURATION", default_value = "60s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
    /// How long P3 (read by id) and the raw select each run.
    #[arg(long, env = "FHIRSTREAM_BENCH_READ_DURATION", default_value = "20s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub read_duration: Duration,
    /// Resources created for P3 and the raw select to read.
    #[arg(long, env = "FHIRSTREAM_BENCH_READ_SET", default_value_t = 1800)]
    pub read_set: usize,
    /// How long P5 (read-your-writes vs eventual) runs.
    #[arg(long, env = "FHIRSTREAM_BENCH_P5_DURATION", default_value = "20s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub p5_duration: Duration,
    /// Concurrent writers in P5: low, so it measures latency, not queueing.
    #[arg(long, env = "FHIRSTREAM_BENCH_P5_CONCURRENCY", default_value_t = 4)]
    pub p5_concurrency: usize,
    /// Directory of Synthea transaction Bundles (`*.json` or `*.json.gz`)
    /// for P2; P2 is skipped when it does not exist.
    #[arg(long, env = "FHIRSTREAM_BENCH_SYNTHEA_DIR", default_value = "../shared/data/synthea-r4")]
    pub synthea_dir: PathBuf,
    /// Bundles P2 posts in parallel.
    #[arg(long, env = "FHIRSTREAM_BENCH_P2_CONCURRENCY", default_value_t = 4)]
    pub p2_concurrency: usize,
    /// Resources of P4's big neighbour (copies of P2's tenant).
    #[arg(long, env = "FHIRSTREAM_BENCH_P4_NEIGHBOUR", default_value_t = 1_000_000)]
    pub p4_neighbour: u64,
    /// Resources of P4's small tenant.
    #[arg(long, env = "FHIRSTREAM_BENCH_P4_SMALL", default_value_t = 450)]
    pub p4_small: usize,
    /// How long P4 probes the small tenant, each time.
    #[arg(long, env = "FHIRSTREAM_BENCH_P4_DURATION", default_value = "15s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub p4_duration: Duration,
    /// Concurrent users of P4's probe: low, so it measures latency.
    #[arg(long, env = "FHIRSTREAM_BENCH_P4_CONCURRENCY", default_value_t = 4)]
    pub p4_concurrency: usize,
    /// S1: clients per search.
    #[arg(long, env = "FHIRSTREAM_BENCH_S1_CONCURRENCY", default_value_t = 8)]
    pub s1_concurrency: usize,
    /// S1: how long each search runs (over HTTP, then raw).
    #[arg(long, env = "FHIRSTREAM_BENCH_S1_DURATION", default_value = "4s", value_parser = parse_duration)]
    #[serde(serialize_with = "secs")]
    pub s1_duration: Duration,
    /// The server's binary, which P6 runs as `fhirstream replay`.
    #[arg(long, env = "FHIRSTREAM_BENCH_SERVER_BIN", default_value = "target/release/fhirstream")]
    pub server_bin: PathBuf,
    /// Events the raw publish and raw pipeline baselines each write
    /// (rounded up to whole CRUD chains of 27 events).
    #[arg(long, env = "FHIRSTREAM_BENCH_RAW_EVENTS", default_value_t = 135_000)]
    pub raw_events: u64,
    /// PostgreSQL connections of the raw select (the server's default pool
    /// size, so both sides have the same number of backends).
    #[arg(long, env = "FHIRSTREAM_BENCH_RAW_PG_POOL", default_value_t = 16)]
    pub raw_pg_pool: u32,
    /// Most events the raw pipeline applies per transaction (the
    /// projector's default batch).
    #[arg(long, env = "FHIRSTREAM_BENCH_RAW_BATCH", default_value_t = 1000)]
    pub raw_batch: usize,
    /// A second server on the same NATS and database started with
    /// `--unsafe-skip-conformance`: P1 and P2 also run against it, so the
    /// report shows what validation costs in the same run.
    #[arg(long, env = "FHIRSTREAM_BENCH_UNVALIDATED_URL")]
    pub unvalidated_base_url: Option<String>,
    /// Scenarios to run, comma-separated (default: all).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "v1,p1,p2,p3,p4,p5,p6,s1,raw-publish,raw-pipeline,raw-copy,raw-select"
    )]
    pub scenarios: Vec<Scenario>,
    /// PID of the server, for RSS and CPU during P1.
    #[arg(long, env = "FHIRSTREAM_BENCH_SERVER_PID")]
    pub server_pid: Option<u32>,
    /// PID of nats-server, for its CPU during P1.
    #[arg(long, env = "FHIRSTREAM_BENCH_NATS_PID")]
    pub nats_pid: Option<u32>,
    /// How the server was started, recorded verbatim beside the numbers.
    #[arg(long, env = "FHIRSTREAM_BENCH_SERVER_CONFIG", default_value = "")]
    pub server_config: String,
    /// JSON results file.
    #[arg(long, default_value = "bench-results/latest.json")]
    pub out: PathBuf,
    /// PNG chart file.
    #[arg(long, default_value = "bench-results/latest.png")]
    pub chart: PathBuf,
    /// Scratch JetStream stream of the raw baselines (subjects `benchraw.>`).
    #[arg(long, default_value = "BENCHRAW")]
    pub raw_stream: String,
}

/// A part of the run that can be selected with `--scenarios`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// V1: validation cost per resource, in process, over the Synthea corpus.
    V1,
    /// P1: the CRUD mix.
    P1,
    /// P2: Synthea Bundles imported as transactions.
    P2,
    /// P3: read by id.
    P3,
    /// P4: a small tenant's latency beside an empty and a big neighbour (needs p2).
    P4,
    /// P5: read-your-writes vs eventual write latency.
    P5,
    /// P6: `fhirstream replay` of P2's tenant, beside a raw consume (needs p2).
    P6,
    /// S1: searches on a tenant right after its import and on P2's (needs p2).
    S1,
    /// JetStream publish-with-ack alone.
    RawPublish,
    /// Publish, consume, batched upsert.
    RawPipeline,
    /// PostgreSQL COPY of the pipeline's rows (needs raw-pipeline).
    RawCopy,
    /// Prepared primary-key select of P3's rows (needs p3).
    RawSelect,
}

impl BenchArgs {
    pub fn runs(&self, s: Scenario) -> bool {
        self.scenarios.contains(&s)
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Parses `90`, `90s`, `1500ms` or `2m` (a bare number is seconds).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(raw.len());
    let (num, unit) = raw.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{raw}' is not a duration like 90s, 1500ms or 2m"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit '{other}' in '{raw}' (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("'{raw}' is not a usable duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_units_people_type() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn every_scenario_runs_by_default() {
        let args = BenchArgs::parse_from(["fhirstream-bench"]);
        for s in Scenario::value_variants() {
            assert!(args.runs(*s), "{s:?}");
        }
        let some = BenchArgs::parse_from(["fhirstream-bench", "--scenarios", "p1,raw-select"]);
        assert!(some.runs(Scenario::P1) && some.runs(Scenario::RawSelect) && !some.runs(Scenario::P3));
    }
}
