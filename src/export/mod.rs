//! Bulk export (FHIR Bulk Data Access): what one export reads and how it
//! becomes one NDJSON file per resource type. The HTTP `$export` jobs
//! (`jobs`) and `fhirstream export` (`cli`) both write through
//! [`write_ndjson`], so the two give the same files.

pub mod cli;
pub mod jobs;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

use query::Queries;
use query::export::{ExportFilter, ExportSource};
use schemas::{ResourceType, TenantId};

/// Rows read per page (per transaction).
const PAGE: i64 = 1000;

/// What an export contains.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub tenant: TenantId,
    /// The types exported, one file each, in this order.
    pub types: Vec<ResourceType>,
    /// Only resources changed after this instant.
    pub since: Option<DateTime<Utc>>,
    /// `Patient/$export`: Patients and the resources in their compartment.
    pub patient_level: bool,
    /// `Group/{id}/$export`: only these Patients (the Group's members) and
    /// their compartments; implies `patient_level`.
    pub patients: Option<Vec<String>>,
    /// The types the tenant reads from the shared space; their shared rows
    /// are exported too, tagged like in search (system level only: shared
    /// resources belong to no patient of the tenant).
    pub shared_reads: Vec<ResourceType>,
}

/// One written file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Written {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub count: u64,
}

/// The file name of a type's NDJSON.
pub fn file_name(rt: ResourceType) -> String {
    format!("{rt}.ndjson")
}

/// The types an export of `tenant` may cover: those its configuration
/// enables, that `readable` allows, and at Patient level those in the
/// Patient compartment.
pub fn candidate_types(
    allows: impl Fn(ResourceType) -> bool,
    patient_level: bool,
) -> impl Iterator<Item = ResourceType> {
    ResourceType::all()
        .filter(move |rt| allows(*rt) && (!patient_level || schemas::r4::patient_compartment(*rt).is_some()))
}

/// The filter and sources of one type of an export.
fn plan(spec: &ExportSpec, rt: ResourceType) -> (ExportFilter, Vec<ExportSource>) {
    let filter = ExportFilter {
        since: spec.since,
        patient_params: match (spec.patient_level, rt.as_str()) {
            // Every Patient is in its own compartment.
            (true, "Patient") | (false, _) => None,
            (true, _) => schemas::r4::patient_compartment(rt).map(|ps| ps.iter().map(|p| p.to_string()).collect()),
        },
        patient_ids: spec.patients.clone(),
    };
    let mut sources = vec![ExportSource::Own];
    if !spec.patient_level && spec.shared_reads.contains(&rt) {
        sources.push(ExportSource::Shared);
    }
    (filter, sources)
}

/// How many resources an export will write, as things stand now.
pub async fn count(queries: &Queries, spec: &ExportSpec) -> anyhow::Result<u64> {
    let mut total = 0;
    for &rt in &spec.types {
        let (filter, sources) = plan(spec, rt);
        for source in sources {
            total +=
                queries.export_count(&spec.tenant, rt, source, &filter).await.with_context(|| format!("count {rt}"))?;
        }
    }
    Ok(total)
}

/// Writes one `{Type}.ndjson` per type with resources into `dir`, reading
/// in keyset pages through the query side (as the tenant, under RLS).
/// Types without a resource get no file. `on_progress` hears the type and
/// the number of resources written so far after every page.
pub async fn write_ndjson(
    queries: &Queries,
    spec: &ExportSpec,
    dir: &Path,
    cancel: &CancellationToken,
    mut on_progress: impl FnMut(ResourceType, u64) + Send,
) -> anyhow::Result<Vec<Written>> {
    tokio::fs::create_dir_all(dir).await.with_context(|| format!("create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut total = 0u64;
    for &rt in &spec.types {
        let (filter, sources) = plan(spec, rt);
        let part = dir.join(format!("{}.part", file_name(rt)));
        let file = tokio::fs::File::create(&part).await.with_context(|| format!("create {}", part.display()))?;
        let mut out = tokio::io::BufWriter::new(file);
        let mut count = 0u64;
        for source in sources {
            let mut after = String::new();
            loop {
                if cancel.is_cancelled() {
                    anyhow::bail!("the export was cancelled");
                }
                let rows = queries
                    .export_page(&spec.tenant, rt, source, &filter, &after, PAGE)
                    .await
                    .with_context(|| format!("read {rt} resources"))?;
                let Some(last) = rows.last() else { break };
                after = last.id.clone();
                let full = rows.len() as i64 == PAGE;
                for row in rows {
                    let line = match source {
                        ExportSource::Own => row.resource,
                        ExportSource::Shared => crate::http::sharing::tagged(&row.resource)
                            .map_err(|e| anyhow::anyhow!("tag a shared {rt}: {e}"))?,
                    };
                    out.write_all(line.as_bytes()).await.context("write NDJSON")?;
                    out.write_all(b"\n").await.context("write NDJSON")?;
                    count += 1;
                    total += 1;
                }
                on_progress(rt, total);
                if !full {
                    break;
                }
            }
        }
        out.flush().await.context("flush NDJSON")?;
        drop(out);
        if count == 0 {
            tokio::fs::remove_file(&part).await.with_context(|| format!("remove {}", part.display()))?;
            continue;
        }
        let done: PathBuf = dir.join(file_name(rt));
        tokio::fs::rename(&part, &done).await.with_context(|| format!("finish {}", done.display()))?;
        written.push(Written { resource_type: rt.to_string(), count });
    }
    Ok(written)
}
