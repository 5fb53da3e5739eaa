//! One benchmark run, in a fixed order: warm-up, P1, P3 and the raw select
//! on P3's rows, P5, P2 and P6 on its tenant, the raw NATS/PostgreSQL
//! baselines while the server idles, then P4 (which writes a million rows). A scenario that fails is reported as failed; the others
//! still run.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::{BenchArgs, Scenario};
use crate::http::Fhir;
use crate::payloads::Kind;
use crate::probe::{CpuSnapshot, CpuUsage, Machine, RssSampler, memory};
use crate::raw;
use crate::report::{REPORT_SCHEMA, Report, Results, ServerUnderLoad, Versions, rows};
use crate::scenarios::{consistency, crud, import, isolation, read, replay, search, validation};
use crate::{pgstat, projstat};

fn say(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

/// Runs every selected scenario and assembles the report.
pub async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let wall = Instant::now();
    let machine = Machine::read();
    if let Some(load) =
        machine.loadavg_at_start.as_deref().and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        && load > 0.5
    {
        say(format!(
            "warning: load average {load:.2} at start: something else is using the CPU; figures will be noisy"
        ));
    }
    let fhir = Fhir::new(&args.base_url, args.concurrency.max(args.p5_concurrency))?;
    fhir.wait_healthy(Duration::from_secs(60)).await?;
    let nats = async_nats::ConnectOptions::new()
        .name("fhirstream-bench")
        .connect(&args.nats_url)
        .await
        .with_context(|| format!("connect to NATS at {}", args.nats_url))?;
    let js = jetstream::new(nats.clone());
    let pool =
        PgPoolOptions::new().max_connections(4).connect(&args.database_url).await.context("connect to PostgreSQL")?;
    let versions = Versions {
        fhirstream_commit: git_describe(),
        bench: env!("CARGO_PKG_VERSION"),
        nats_server: Some(nats.server_info().version),
        postgres: sqlx::query_scalar("select current_setting('server_version')").fetch_one(&pool).await.ok(),
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let tenant = |s: &str| format!("bench-{run_id}-{s}");
    for t in ["warm", "p1", "p2", "p3", "p4", "p5", "p1nv", "p2nv"] {
        fhir.create_tenant(&tenant(t), &format!("fhirstream-bench {t} ({run_id})")).await?;
    }
    let mut r = Results::default();
    let c = args.concurrency;

    if args.runs(Scenario::V1) {
        match import::load(&args.synthea_dir) {
            Ok(bundles) if !bundles.is_empty() => match validation::run(&bundles, 3) {
                Ok(v) => {
                    say(format!(
                        "V1 validation: {:.1} µs per resource over {} resources ({} refused)",
                        v.mean_us, v.resources, v.refused
                    ));
                    r.v1 = Some(v);
                }
                Err(e) => {
                    r.failures.insert("v1".into(), format!("{e:#}"));
                }
            },
            Ok(_) | Err(_) => {
                r.skipped.insert("v1".into(), format!("no Synthea bundles at {}", args.synthea_dir.display()));
            }
        }
    }

    if args.runs(Scenario::P1) {
        say(format!("warm-up: {c} users, {:?}", args.warmup));
        let warm = crud::run(&fhir, &tenant("warm"), c, args.warmup).await;
        say(format!("warm-up done: {} ops, {} errors", warm.ops, warm.errors.total));
        // First, so that validation runs on the fuller database (the
        // conservative order for the ratio).
        if let Some(url) = &args.unvalidated_base_url {
            say(format!("P1 without conformance validation ({url}): {c} users, {:?}", args.duration));
            let nv = Fhir::new(url, c)?;
            let p1 = crud::run(&nv, &tenant("p1nv"), c, args.duration).await;
            say(format!("P1 unvalidated: {:.0} ops/s, {} errors", p1.ops_per_sec.unwrap_or(0.0), p1.errors.total));
            r.p1_unvalidated = Some(p1);
        }
        say(format!("P1 CRUD mix: {c} users, {:?}", args.duration));
        let sampler = args.server_pid.map(|pid| RssSampler::start(pid, Duration::from_millis(250)));
        let p1_tenant = tenant("p1");
        let load = projstat::around(&fhir, with_cpu(&args, crud::run(&fhir, &p1_tenant, c, args.duration)));
        let (((p1, cpu), projector), postgres) = pgstat::around(&pool, load).await;
        let max_rss_mib = match sampler {
            Some(s) => s.finish().await,
            None => None,
        };
        let after = args.server_pid.and_then(memory);
        say(format!(
            "P1: {:.0} ops/s, {:.0} writes/s, {} errors; cores: {}",
            p1.ops_per_sec.unwrap_or(0.0),
            p1.writes_per_sec.unwrap_or(0.0),
            p1.errors.total,
            cpu.describe(),
        ));
        r.p1_server = Some(ServerUnderLoad { max_rss_mib, after, cpu, postgres, projector });
        r.p1 = Some(p1);
    }

    let mut set = None;
    if args.runs(Scenario::P3) || args.runs(Scenario::RawSelect) {
        say(format!("P3: creating {} resources to read", args.read_set));
        match read::seed(&fhir, &tenant("p3"), args.read_set, c).await {
            Ok(s) => set = Some(s),
            Err(e) => {
                r.failures.insert("p3".into(), format!("{e:#}"));
                r.failures.insert("raw-select".into(), "P3's resources could not be created".into());
            }
        }
    }
    if let (true, Some(s)) = (args.runs(Scenario::P3), &set) {
        say(format!("P3 read by id: {c} users, {:?}", args.read_duration));
        let (p3, cpu) = with_cpu(&args, read::run(&fhir, &tenant("p3"), s, c, args.read_duration)).await;
        say(format!("P3: {:.0} reads/s, {} errors", p3.reads_per_sec.unwrap_or(0.0), p3.errors.total));
        r.p3 = Some(p3);
        r.p3_cpu = Some(cpu);
    }
    if let (true, Some(s)) = (args.runs(Scenario::RawSelect), &set) {
        say(format!("raw select: {c} tasks over {} connections, {:?}", args.raw_pg_pool, args.read_duration));
        let t = tenant("p3");
        let select = raw::select::run(&args.database_url, args.raw_pg_pool, &t, s, c, args.read_duration);
        match with_cpu(&args, select).await {
            (Ok(sel), cpu) => {
                say(format!("raw select: {:.0}/s", sel.reads_per_sec.unwrap_or(0.0)));
                r.raw_select = Some(sel);
                r.raw_select_cpu = Some(cpu);
            }
            (Err(e), _) => {
                r.failures.insert("raw-select".into(), format!("{e:#}"));
            }
        }
    }

    if args.runs(Scenario::P5) {
        let n = args.p5_concurrency;
        say(format!("P5 read-your-writes vs eventual: {n} writers, {:?}", args.p5_duration));
        let (p5, projector) =
            projstat::around(&fhir, consistency::run(&fhir, &tenant("p5"), n, args.p5_duration)).await;
        r.p5_projector = projector;
        say(format!(
            "P5: p50 {:.2} ms vs {:.2} ms ({:+.0}%)",
            p5.read_your_writes.p50_ms,
            p5.eventual.p50_ms,
            p5.extra_p50_percent.unwrap_or(f64::NAN)
        ));
        r.p5 = Some(p5);
    }

    if args.runs(Scenario::P2) {
        import(&args, &fhir, &tenant("p2"), &pool, &mut r).await;
    }
    let loaded = r.p2.as_ref().is_some_and(|p| p.bundles_applied > 0);
    for (scenario, key) in [(Scenario::P6, "p6"), (Scenario::P4, "p4")] {
        if args.runs(scenario) && !loaded {
            r.skipped.insert(key.into(), "needs P2's tenant (all Synthea bundles)".into());
        }
    }
    if args.runs(Scenario::P6) && loaded {
        say(format!("P6 replay of {} with {}", tenant("p2"), args.server_bin.display()));
        match replay::run(&args.server_bin, &args.nats_url, &args.database_url, &js, &tenant("p2")).await {
            Ok(p6) => {
                say(format!(
                    "P6: {:.0} events/s replayed vs {:.0} events/s raw consume",
                    p6.replay_events_per_sec.unwrap_or(0.0),
                    p6.raw_consume_events_per_sec.unwrap_or(0.0)
                ));
                r.p6 = Some(p6);
            }
            Err(e) => {
                r.failures.insert("p6".into(), format!("{e:#}"));
            }
        }
    }

    if args.runs(Scenario::S1) && !loaded {
        r.skipped.insert("s1".into(), "needs P2's tenant (all Synthea bundles)".into());
    }
    if args.runs(Scenario::S1) && loaded {
        search_run(&args, &fhir, &pool, &tenant("s1"), &tenant("p2"), &mut r).await;
    }

    raw_baselines(&args, &js, &pool, &mut r).await;
    // Last: the million rows it writes keep PostgreSQL busy (autovacuum)
    // for a while, which would slow the baselines measured after it.
    if args.runs(Scenario::P4) && loaded {
        match isolation_run(&args, &fhir, &pool, &tenant("p4"), &tenant("p2"), &run_id).await {
            Ok(p4) => r.p4 = Some(p4),
            Err(e) => {
                r.failures.insert("p4".into(), format!("{e:#}"));
            }
        }
    }
    pool.close().await;

    Ok(Report {
        schema: REPORT_SCHEMA,
        started_at,
        wall_seconds: wall.elapsed().as_secs_f64(),
        versions,
        machine,
        rows: rows::build(&r),
        results: r,
        config: args,
    })
}

/// P4: the small tenant probed beside an empty neighbour, then beside one
/// generated from P2's tenant.
async fn isolation_run(
    args: &BenchArgs,
    fhir: &Fhir,
    pool: &PgPool,
    small: &str,
    source: &str,
    run_id: &str,
) -> anyhow::Result<isolation::IsolationResult> {
    let (neighbour, same_partition) =
        isolation::neighbour_in_partition_of(pool, small, &format!("bench-{run_id}-p4n")).await?;
    fhir.create_tenant(&neighbour, "fhirstream-bench P4 neighbour").await?;
    say(format!("P4: creating {} resources in the small tenant", args.p4_small));
    let set = read::seed(fhir, small, args.p4_small, args.concurrency).await?;
    let (c, d) = (args.p4_concurrency, args.p4_duration);
    say(format!("P4: probing beside an empty neighbour, {c} users, {d:?}"));
    let empty = isolation::probe(fhir, small, &set, c, d).await;
    say(format!("P4: generating a neighbour of {} resources from {source}", args.p4_neighbour));
    let started = Instant::now();
    let (resources, index_rows) = isolation::fill(pool, source, &neighbour, args.p4_neighbour).await?;
    let generate_seconds = started.elapsed().as_secs_f64();
    say(format!("P4: {resources} resources, {index_rows} index rows in {generate_seconds:.0}s; probing again"));
    let big = isolation::probe(fhir, small, &set, c, d).await;
    say(format!(
        "P4: read p50 {:.2} -> {:.2} ms, search p50 {:.2} -> {:.2} ms",
        empty.read.p50_ms, big.read.p50_ms, empty.search.p50_ms, big.search.p50_ms
    ));
    Ok(isolation::IsolationResult {
        small_tenant_resources: set.len(),
        neighbour_resources: resources,
        neighbour_index_rows: index_rows,
        generate_seconds,
        same_partition,
        empty_neighbour: empty,
        big_neighbour: big,
    })
}

/// S1: the searches on a tenant loaded right before (in the partition of
/// P2's) and on P2's.
async fn search_run(args: &BenchArgs, fhir: &Fhir, pool: &PgPool, prefix: &str, big: &str, r: &mut Results) {
    let run = async {
        let bundles = import::load(&args.synthea_dir)?;
        // The hard case: the big tenant's partition, whose statistics
        // describe the big tenant.
        let (fresh, _) = isolation::neighbour_in_partition_of(pool, big, prefix).await?;
        let fresh = fresh.as_str();
        fhir.create_tenant(fresh, "fhirstream-bench S1 fresh tenant").await?;
        let (c, d) = (args.s1_concurrency, args.s1_duration);
        say(format!(
            "S1 search: 10 bundles into a fresh tenant, then {} searches x 2 tenants, {c} clients, {d:?} each",
            search::CASES.len()
        ));
        search::run(fhir, &args.database_url, fresh, big, &bundles, c, d).await
    };
    match run.await {
        Ok(s1) => {
            for row in &s1.rows {
                say(format!(
                    "S1 {} {}: {:.0}/s (raw {:.0}/s), p99 {:.1} ms",
                    row.tenant,
                    row.query,
                    row.requests_per_sec.unwrap_or(0.0),
                    row.raw_per_sec.unwrap_or(0.0),
                    row.latency.p99_ms
                ));
            }
            r.s1 = Some(s1);
        }
        Err(e) => {
            r.failures.insert("s1".into(), format!("{e:#}"));
        }
    }
}

/// P2: the Synthea Bundles as transactions (skipped without the data).
async fn import(args: &BenchArgs, fhir: &Fhir, tenant: &str, pool: &PgPool, r: &mut Results) {
    let dir = &args.synthea_dir;
    if !dir.is_dir() {
        r.skipped.insert("p2".into(), format!("no Synthea bundles at {}", dir.display()));
        return;
    }
    let bundles = match import::load(dir) {
        Ok(b) if !b.is_empty() => std::sync::Arc::new(b),
        Ok(_) => {
            r.skipped.insert("p2".into(), format!("no *.json(.gz) bundles in {}", dir.display()));
            return;
        }
        Err(e) => {
            r.failures.insert("p2".into(), format!("{e:#}"));
            return;
        }
    };
    let n = args.p2_concurrency;
    if let Some(url) = &args.unvalidated_base_url {
        say(format!("P2 without conformance validation ({url})"));
        match Fhir::new(url, n) {
            Ok(nv) => {
                let p2 = import::run(&nv, &tenant.replace("-p2", "-p2nv"), bundles.clone(), n).await;
                say(format!("P2 unvalidated: {:.0} resources/s", p2.resources_per_sec.unwrap_or(0.0)));
                r.p2_unvalidated = Some(p2);
            }
            Err(e) => {
                r.failures.insert("p2".into(), format!("{e:#}"));
            }
        }
    }
    let total: usize = bundles.iter().map(|b| b.entries).sum();
    say(format!("P2 import: {} bundles, {total} resources, {n} clients", bundles.len()));
    let load = projstat::around(fhir, with_cpu(args, import::run(fhir, tenant, bundles, n)));
    let (((p2, cpu), projector), postgres) = pgstat::around(pool, load).await;
    r.p2_pg = postgres;
    r.p2_projector = projector;
    say(format!(
        "P2: {:.0} resources/s, {} of {} bundles applied, {} errors",
        p2.resources_per_sec.unwrap_or(0.0),
        p2.bundles_applied,
        p2.bundles,
        p2.errors.total
    ));
    r.p2 = Some(p2);
    r.p2_cpu = Some(cpu);
}

/// Chains the low-concurrency publish baseline sends (P5's floor).
const LOW_LOAD_CHAINS: u64 = 100;

/// The raw baselines, in the scratch stream and schema, cleaned up after.
async fn raw_baselines(args: &BenchArgs, js: &jetstream::Context, pool: &PgPool, r: &mut Results) {
    let (publish, pipeline, copy) =
        (args.runs(Scenario::RawPublish), args.runs(Scenario::RawPipeline), args.runs(Scenario::RawCopy));
    if !(publish || pipeline || copy) {
        return;
    }
    let chains = args.raw_events.div_ceil(Kind::CHAIN.len() as u64 * 3).max(1);
    let c = args.concurrency;
    let stream = match raw::create_stream(js, &args.raw_stream).await {
        Ok(s) => s,
        Err(e) => {
            for key in ["raw-publish", "raw-pipeline", "raw-copy"] {
                r.failures.insert(key.into(), format!("{e:#}"));
            }
            return;
        }
    };
    if publish {
        say(format!("raw publish+ack: {} events, {c} publishers", chains * 27));
        match raw::publish::publish_chains(js, raw::PUBLISH_PREFIX, chains, c).await {
            Ok(p) => {
                say(format!(
                    "raw publish: {:.0} events/s, p50 {:.2} ms",
                    p.events_per_sec.unwrap_or(0.0),
                    p.latency.p50_ms
                ));
                r.raw_publish = Some(p);
            }
            Err(e) => {
                r.failures.insert("raw-publish".into(), format!("{e:#}"));
            }
        }
        let n = args.p5_concurrency;
        say(format!("raw publish+ack at P5's concurrency: {} events, {n} publishers", LOW_LOAD_CHAINS * 27));
        match raw::publish::publish_chains(js, raw::PUBLISH_PREFIX, LOW_LOAD_CHAINS, n).await {
            Ok(p) => r.raw_publish_p5 = Some(p),
            Err(e) => {
                r.failures.insert("raw-publish".into(), format!("{e:#}"));
            }
        }
    }
    if pipeline || copy {
        let result = async {
            raw::create_schema(pool).await?;
            say(format!("raw write pipeline: {} events, {c} publishers, one consumer", chains * 27));
            let run = raw::pipeline::run(js, &stream, pool, chains, c, args.raw_batch);
            let ((p, cpu), postgres) = pgstat::around(pool, with_cpu(args, run)).await;
            r.raw_pipeline_pg = postgres;
            let p = p?;
            say(format!("raw pipeline: {:.0} events/s in {} batches", p.events_per_sec.unwrap_or(0.0), p.batches));
            r.raw_pipeline = Some(p);
            r.raw_pipeline_cpu = Some(cpu);
            if copy {
                say("raw COPY of the pipeline's rows");
                let c = raw::copy::run(pool).await?;
                say(format!("raw COPY: {:.0} rows/s", c.rows_per_sec.unwrap_or(0.0)));
                r.raw_copy = Some(c);
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            let why = format!("{e:#}");
            if r.raw_pipeline.is_none() {
                r.failures.insert("raw-pipeline".into(), why.clone());
            }
            if copy && r.raw_copy.is_none() {
                r.failures.insert("raw-copy".into(), why);
            }
        }
        raw::drop_schema(pool).await;
    }
    raw::drop_stream(js, &args.raw_stream).await;
}

/// Runs `work` and reports the CPU each part of the stack spent meanwhile.
async fn with_cpu<T>(args: &BenchArgs, work: impl Future<Output = T>) -> (T, CpuUsage) {
    let before = CpuSnapshot::take(args.server_pid, args.nats_pid);
    let out = work.await;
    let after = CpuSnapshot::take(args.server_pid, args.nats_pid);
    (out, before.usage_until(&after))
}

fn git_describe() -> Option<String> {
    let out =
        std::process::Command::new("git").args(["describe", "--always", "--dirty", "--abbrev=12"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
