//! `fhirstream verify --validate`: which of a tenant's current resources
//! fail today's validation rules. Resources written before validation (or
//! before a rule changed) stay in the stream, which is never rewritten;
//! this lists them so an operator can have them corrected by new versions.

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;

use query::Queries;
use query::export::{ExportFilter, ExportSource};
use schemas::validate::{Severity, Strictness, conformance};
use schemas::{ResourceType, TenantId};

/// Rows read per page.
const PAGE: i64 = 500;

/// One current resource that does not conform.
#[derive(Debug, Serialize)]
pub struct Failing {
    pub reference: String,
    /// Its errors, as `expression: message`.
    pub errors: Vec<String>,
}

/// What `verify --validate` found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tenant: TenantId,
    pub checked: u64,
    /// How many fail (all are counted; `failing` lists at most the limit).
    pub failed: u64,
    pub failing: Vec<Failing>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.failing {
            writeln!(f, "{}", r.reference)?;
            for e in &r.errors {
                writeln!(f, "    {e}")?;
            }
        }
        if (self.failing.len() as u64) < self.failed {
            writeln!(f, "... and {} more", self.failed - self.failing.len() as u64)?;
        }
        writeln!(
            f,
            "tenant {}: {} current resources checked, {} do not conform to FHIR R4",
            self.tenant, self.checked, self.failed
        )
    }
}

/// Checks every live resource the tenant owns, type by type, page by page.
pub async fn run(queries: &Queries, tenant: &TenantId, limit: usize) -> anyhow::Result<Report> {
    let mut report = Report { tenant: tenant.clone(), checked: 0, failed: 0, failing: vec![] };
    let filter = ExportFilter::default();
    for rt in ResourceType::all() {
        let mut after = String::new();
        loop {
            let rows = queries
                .export_page(tenant, rt, ExportSource::Own, &filter, &after, PAGE)
                .await
                .with_context(|| format!("read the current {rt} resources"))?;
            let Some(last) = rows.last() else { break };
            after = last.id.clone();
            for row in &rows {
                report.checked += 1;
                let errors = errors_of(rt, &row.resource);
                if errors.is_empty() {
                    continue;
                }
                report.failed += 1;
                if report.failing.len() < limit {
                    report.failing.push(Failing { reference: format!("{rt}/{}", row.id), errors });
                }
            }
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
    }
    Ok(report)
}

/// The errors of one stored body under today's strict rules.
fn errors_of(rt: ResourceType, text: &str) -> Vec<String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => conformance(&map, rt, Strictness::Strict)
            .into_iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| format!("{}: {}", i.expression, i.message))
            .collect(),
        _ => vec!["the stored body is not a JSON object".to_owned()],
    }
}
