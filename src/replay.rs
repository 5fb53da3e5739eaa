//! `fhirstream replay` and `fhirstream verify`: the operator's edge of
//! `projector::replay` (connections, the tenant check, progress, output).

use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use projector::replay::{self, ReplayOptions, Step};
use projector::tenant_events::Cut;
use schemas::TenantId;

use crate::config::{ConnArgs, ReplayArgs, VerifyArgs};
use crate::startup::{connect_nats, connect_pg, open_store};

/// What both commands need: the tenant (known to the registry), the pool
/// and JetStream.
async fn open(
    conn: &ConnArgs,
    tenant: &str,
) -> anyhow::Result<(TenantId, sqlx::PgPool, async_nats::jetstream::Context)> {
    let tenant = TenantId::parse(tenant).context("--tenant is not a tenant name")?;
    let nats = connect_nats(conn).await?;
    let store = open_store(conn, nats).await?;
    let registry = projector::TenantRegistry::follow(store.jetstream(), &conn.tenant_stream).await?;
    registry.get(&tenant).await?.with_context(|| format!("tenant '{tenant}' does not exist"))?;
    let pool = connect_pg(conn, 4).await?;
    Ok((tenant, pool, store.jetstream().clone()))
}

fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events ({per_sec}, {eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Moves the bar as a replay or verification reports its steps.
fn on_step(bar: &ProgressBar) -> impl Fn(Step) + Send + Sync + use<> {
    let bar = bar.clone();
    move |step| match step {
        Step::Reading { pending } => bar.set_length(bar.position() + pending),
        Step::Applied(n) => bar.inc(n),
        Step::Swapping => bar.set_message("swapping in"),
    }
}

fn options(conn: &ConnArgs, projector: &str, batch: usize, restart: bool) -> ReplayOptions {
    ReplayOptions { stream: conn.stream.clone(), projector: projector.to_owned(), batch_size: batch, restart }
}

pub async fn run_replay(args: ReplayArgs) -> anyhow::Result<()> {
    if let Some(name) = &args.into {
        replay::snapshot_schema(name)?;
    }
    let (tenant, pool, js) = open(&args.conn, &args.tenant).await?;
    let opts = options(&args.conn, &args.projector_name, args.batch, args.restart);
    let bar = progress_bar(args.quiet);
    let step = on_step(&bar);
    let started = Instant::now();
    let done = match &args.into {
        Some(name) => {
            let cut = Cut { until_seq: args.until_seq.unwrap_or(u64::MAX), until_time: args.until };
            replay::snapshot(&pool, &js, &tenant, name, cut, &opts, &step).await.context("build the snapshot")?
        }
        None => replay::replay_live(&pool, &js, &tenant, &opts, &step).await.context("replay the tenant")?,
    };
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let resumed = match done.resumed_from {
        0 => String::new(),
        s => format!(", resumed after sequence {s}"),
    };
    let r = done.rows;
    let what = match &args.into {
        Some(name) => format!("snapshot schema snapshot_{name}"),
        None => format!(
            "the live read model ({} resources differed; swapped in {:.2}s)",
            done.changed,
            done.swap.as_secs_f64()
        ),
    };
    println!(
        "replayed {} events of {tenant} in {secs:.1}s ({:.0} events/s{resumed}) into {what}: state at sequence {}, \
         {} resources ({} live), {} versions, {} index rows",
        done.events,
        done.events as f64 / secs.max(0.001),
        done.sequence,
        r.resources,
        r.live,
        r.versions,
        r.index_rows
    );
    Ok(())
}

/// Verifies; `Ok(false)` when the read model differs from the events.
pub async fn run_verify(args: VerifyArgs) -> anyhow::Result<bool> {
    let (tenant, pool, js) = open(&args.conn, &args.tenant).await?;
    if args.validate {
        let queries = query::Queries::connect(&args.conn.database_url, 2)
            .await
            .context("connect to PostgreSQL as fhirstream_reader")?;
        let report = crate::revalidate::run(&queries, &tenant, args.limit).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{report}");
        }
        return Ok(report.failed == 0);
    }
    let opts = options(&args.conn, &args.projector_name, 1000, false);
    let bar = progress_bar(args.quiet || args.json);
    let report =
        replay::verify(&pool, &js, &tenant, &opts, args.limit, &on_step(&bar)).await.context("verify the tenant")?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(report.identical)
}
