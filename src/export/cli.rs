//! `fhirstream export --tenant T DIR`: the files `$export` would write,
//! straight from the read models (as the tenant, under RLS), with a
//! progress bar.

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use query::Queries;
use schemas::{ResourceType, TenantId};

use super::{ExportSpec, candidate_types, write_ndjson};
use crate::config::ExportCliArgs;
use crate::startup::{connect_nats, open_store};

pub async fn run(args: ExportCliArgs) -> anyhow::Result<()> {
    let tenant = TenantId::parse(&args.tenant).with_context(|| format!("'{}' is not a tenant name", args.tenant))?;
    let nats = connect_nats(&args.conn).await?;
    let store = open_store(&args.conn, nats).await?;
    let registry = projector::TenantRegistry::follow(store.jetstream(), &args.conn.tenant_stream).await?;
    let state = registry.get(&tenant).await?.with_context(|| format!("tenant '{tenant}' does not exist"))?;
    let allows = |rt: ResourceType| state.config.allows(rt.as_str());
    let types: Vec<ResourceType> = if args.types.is_empty() {
        candidate_types(allows, args.patient).collect()
    } else {
        let mut named = Vec::new();
        for name in args.types.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            let rt = ResourceType::parse(name).with_context(|| format!("--type {name}"))?;
            anyhow::ensure!(allows(rt), "--type {rt}: the type is not enabled for tenant '{tenant}'");
            anyhow::ensure!(
                !args.patient || schemas::r4::patient_compartment(rt).is_some(),
                "--type {rt}: the type is not in the Patient compartment"
            );
            named.push(rt);
        }
        named
    };
    // The shared space holds only shareable types, so asking for every type
    // the tenant opts into reads exactly what the server's export reads.
    let shared_reads = types
        .iter()
        .copied()
        .filter(|rt| state.config.shared_reads.as_ref().is_none_or(|only| only.iter().any(|t| t == rt.as_str())))
        .collect();
    let spec = ExportSpec {
        tenant: tenant.clone(),
        types,
        since: args.since,
        patient_level: args.patient,
        patients: None,
        shared_reads,
    };
    let queries =
        Queries::connect(&args.conn.database_url, 2).await.context("connect to PostgreSQL as fhirstream_reader")?;
    // Writes during the export can move the total a little; the bar is a guide.
    let total = if args.quiet { 0 } else { super::count(&queries, &spec).await? };
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} resources ({per_sec}, {eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let written = write_ndjson(&queries, &spec, &args.dir, &CancellationToken::new(), |rt, n| {
        bar.set_position(n);
        bar.set_message(rt.to_string());
    })
    .await
    .with_context(|| format!("export tenant '{tenant}' into {}", args.dir.display()))?;
    bar.finish_and_clear();
    for w in &written {
        println!("{}\t{}", w.resource_type, w.count);
    }
    let total: u64 = written.iter().map(|w| w.count).sum();
    eprintln!("exported {total} resources of {} types into {}", written.len(), args.dir.display());
    Ok(())
}
