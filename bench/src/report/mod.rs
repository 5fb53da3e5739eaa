//! The run's results and how they are reported: rows that pair each figure
//! with its raw baseline and target (this file), the text table
//! ([`table`]), and the PNG chart ([`chart`]).

pub mod chart;
pub mod rows;
pub mod table;

use serde::Serialize;

use crate::config::BenchArgs;
use crate::pgstat::PgRates;
use crate::probe::{CpuUsage, Machine, Memory};
use crate::projstat::ProjectorRates;
use crate::raw::copy::CopyResult;
use crate::raw::pipeline::PipelineResult;
use crate::raw::publish::PublishResult;
use crate::scenarios::consistency::ConsistencyResult;
use crate::scenarios::crud::CrudResult;
use crate::scenarios::import::ImportResult;
use crate::scenarios::isolation::IsolationResult;
use crate::scenarios::read::ReadResult;
use crate::scenarios::replay::ReplayResult;

pub use rows::{Row, Status, Target, Unit};

/// Versions of what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    /// `git describe --always --dirty` of the working tree the harness ran in.
    pub fhirstream_commit: Option<String>,
    pub bench: &'static str,
    pub nats_server: Option<String>,
    pub postgres: Option<String>,
}

/// The server while P1 ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerUnderLoad {
    /// Highest VmRSS sampled during P1, in MiB.
    pub max_rss_mib: Option<f64>,
    /// VmRSS and VmHWM (peak since start) right after P1.
    pub after: Option<Memory>,
    pub cpu: CpuUsage,
    /// What PostgreSQL did meanwhile.
    pub postgres: Option<PgRates>,
    /// What the projector did meanwhile.
    pub projector: Option<ProjectorRates>,
}

/// Everything measured; `None` where a scenario did not run or failed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Results {
    pub p1: Option<CrudResult>,
    pub p1_server: Option<ServerUnderLoad>,
    pub p2: Option<ImportResult>,
    pub p2_cpu: Option<CpuUsage>,
    pub p2_pg: Option<PgRates>,
    pub p2_projector: Option<ProjectorRates>,
    pub p3: Option<ReadResult>,
    pub p3_cpu: Option<CpuUsage>,
    pub p4: Option<IsolationResult>,
    pub p5: Option<ConsistencyResult>,
    pub p5_projector: Option<ProjectorRates>,
    pub p6: Option<ReplayResult>,
    pub s1: Option<crate::scenarios::search::SearchResult>,
    pub v1: Option<crate::scenarios::validation::ValidationResult>,
    /// P1 against the server that skips conformance validation.
    pub p1_unvalidated: Option<CrudResult>,
    /// P2 against the server that skips conformance validation.
    pub p2_unvalidated: Option<ImportResult>,
    pub raw_publish: Option<PublishResult>,
    /// The same publish at P5's (low) concurrency: the floor of one write.
    pub raw_publish_p5: Option<PublishResult>,
    pub raw_pipeline: Option<PipelineResult>,
    pub raw_pipeline_cpu: Option<CpuUsage>,
    pub raw_pipeline_pg: Option<PgRates>,
    pub raw_copy: Option<CopyResult>,
    pub raw_select: Option<ReadResult>,
    pub raw_select_cpu: Option<CpuUsage>,
    /// Scenario -> why it failed.
    pub failures: std::collections::BTreeMap<String, String>,
    /// Scenario -> why it did not run although selected.
    pub skipped: std::collections::BTreeMap<String, String>,
}

/// The whole report, as written to the JSON file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub started_at: String,
    pub wall_seconds: f64,
    pub versions: Versions,
    pub machine: Machine,
    pub config: BenchArgs,
    pub rows: Vec<Row>,
    pub results: Results,
}

/// Schema tag of the JSON report.
pub const REPORT_SCHEMA: &str = "fhirstream-bench/1";
