//! The `fhirstream-bench` command: run, print the table, write JSON and PNG.

use std::path::Path;

use anyhow::Context as _;
use clap::Parser as _;

use fhirstream_bench::config::BenchArgs;
use fhirstream_bench::report::{chart, table};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = BenchArgs::parse();
    let report = fhirstream_bench::run::run(args.clone()).await?;
    print!("{}", table::render(&report));

    ensure_parent(&args.out)?;
    let json = serde_json::to_vec_pretty(&report).context("serialize the report")?;
    std::fs::write(&args.out, json).with_context(|| format!("write {}", args.out.display()))?;
    eprintln!("[bench] results: {}", args.out.display());

    ensure_parent(&args.chart)?;
    let title = format!(
        "fhirstream {} | {} cores | concurrency {} | {}",
        report.versions.fhirstream_commit.as_deref().unwrap_or("?"),
        report.machine.cores,
        args.concurrency,
        report.started_at,
    );
    match chart::draw(&args.chart, &title, &report.results) {
        Ok(()) => eprintln!("[bench] chart: {}", args.chart.display()),
        Err(e) => eprintln!("[bench] warning: no chart: {e:#}"),
    }

    if !report.results.failures.is_empty() {
        for (scenario, why) in &report.results.failures {
            eprintln!("[bench] {scenario} failed: {why}");
        }
        std::process::exit(1);
    }
    Ok(())
}

fn ensure_parent(path: &Path) -> anyhow::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display())),
        None => Ok(()),
    }
}
