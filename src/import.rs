//! `fhirstream import`: loads Bundles and NDJSON straight onto the stream.
//!
//! Every resource gets a deterministic id (a `urn:uuid:` fullUrl's UUID, or
//! a UUID v5 of its fullUrl or position), and every commit is create-only
//! (expected last subject sequence 0). Running the same import again, after
//! an interruption or not, therefore skips what is already there and never
//! duplicates anything. Bundles larger than one atomic batch are split into
//! chunks after their references are resolved across the whole Bundle: each
//! chunk is atomic, the Bundle as a whole is not (the documented split mode).

use std::io::{BufRead as _, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use command::bundle::{self, Entry, Method};
use command::{AppliedWatch, CommandError, Commands, ProfileSource, WriteContext};
use schemas::validate::ValidationPolicy;
use schemas::{Actor, ResourceType, TenantId};

use crate::config::ImportArgs;
use crate::startup::{connect_nats, open_store};

/// One atomic commit's worth of entries, with references already resolved.
struct Unit {
    source: String,
    /// Where the unit came from, so the rare fallback can read it again
    /// instead of every commit keeping a copy of its entries.
    path: PathBuf,
    position: usize,
    entries: Vec<Entry>,
    /// Routed to the shared space (`--share`).
    shared: bool,
}

#[derive(Default)]
struct Tally {
    created: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    last_seq: AtomicU64,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let tenant = TenantId::parse(&args.tenant).context("--tenant is not a tenant name")?;
    let nats = connect_nats(&args.conn).await?;
    // An import is one tenant's operator job in a process of its own: the
    // per-tenant share that keeps a server's tenants apart would only
    // starve it. Its own in-flight bound is its share (JetStream's limit of
    // open batches per stream still holds across processes).
    let in_flight = args.in_flight.max(1);
    let store = open_store(&args.conn, nats.clone()).await?.with_batch_limits(command::BatchLimits {
        global: in_flight,
        per_tenant: in_flight,
        wait: Duration::from_secs(60),
    });
    let registry = projector::TenantRegistry::follow(store.jetstream(), &args.conn.tenant_stream).await?;
    let tenant_state =
        registry.get(&tenant).await?.with_context(|| format!("tenant '{tenant}' does not exist; create it first"))?;
    let applied = AppliedWatch::follow(&nats, &args.projector_name).await?;
    let commands = Commands::new(store);
    let actor = Actor { sub: "import".into(), client: Some("fhirstream import".into()) };

    let files = collect_files(&args.paths)?;
    let total_bytes: u64 = files.iter().map(|f| f.metadata().map(|m| m.len()).unwrap_or(0)).sum();
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(total_bytes) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let chunk = args.chunk.clamp(1, command::store::MAX_BATCH);
    let share: Arc<Vec<ResourceType>> = Arc::new(
        args.share.iter().map(|t| ResourceType::parse(t.trim())).collect::<Result<_, _>>().context("--share")?,
    );
    let shared_space = TenantId::shared();
    // Creates claim their ids against the other side for the types this
    // import shares (the deployment's full list is a server setting).
    let claims = Arc::new((
        command::SharedIds { types: tenant_state.config.reads_from_shared(&share) },
        command::SharedIds { types: share.to_vec() },
    ));
    // Imports are validated like any write: the tenant's policy, and its
    // profiles from the read model when it enforces any.
    let policy = tenant_state.config.validation.clone().unwrap_or_default();
    let shared_policy = ValidationPolicy::default();
    let queries = match policy.profiles.is_empty() {
        true => None,
        false => Some(
            query::Queries::connect(&args.conn.database_url, 2)
                .await
                .context("connect to PostgreSQL to read the tenant's profiles")?,
        ),
    };
    let shared_reads = tenant_state.config.reads_from_shared(&ResourceType::all().collect::<Vec<_>>());
    let profiles: Box<dyn ProfileSource> = match &queries {
        Some(q) => Box::new(crate::profiles::ReadModelProfiles::new(q, &shared_reads)),
        None => Box::new(command::NoProfiles),
    };

    let units = futures::stream::iter(files.into_iter().map(|path| {
        let (bar, share) = (bar.clone(), share.clone());
        async move {
            let size = path.metadata().map(|m| m.len()).unwrap_or(0);
            let units = tokio::task::spawn_blocking(move || read_units(&path, chunk, &share)).await??;
            bar.inc(size);
            anyhow::Ok(futures::stream::iter(units))
        }
    }))
    .buffered(2)
    .map(|r| match r {
        Ok(s) => s.map(Ok).boxed(),
        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
    })
    .flatten();

    let results = units
        .map(|unit| {
            let (commands, actor, tally, bar) = (&commands, &actor, tally.clone(), bar.clone());
            let (tenant, shared_space, share, claims) = (&tenant, &shared_space, share.clone(), claims.clone());
            let (policy, shared_policy, profiles) = (&policy, &shared_policy, &*profiles);
            async move {
                let unit = unit?;
                let (to, ids, policy) =
                    if unit.shared { (shared_space, &claims.1, shared_policy) } else { (tenant, &claims.0, policy) };
                let cx = WriteContext { tenant: to, actor, shared_ids: ids, policy, profiles, conformance: true };
                commit(commands, &cx, unit, chunk, &share, &tally).await;
                let done = tally.created.load(Ordering::Relaxed) + tally.skipped.load(Ordering::Relaxed);
                let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!("{done} resources, {rate:.0}/s"));
                anyhow::Ok(())
            }
        })
        .buffer_unordered(in_flight)
        .collect::<Vec<_>>()
        .await;
    bar.finish();
    for r in results {
        r?;
    }
    let published_in = started.elapsed();
    let created = tally.created.load(Ordering::Relaxed);
    let skipped = tally.skipped.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let last_seq = tally.last_seq.load(Ordering::Relaxed);
    let mut applied_in = None;
    if !args.no_wait && last_seq > 0 {
        if applied.wait_for(last_seq, Duration::from_secs(600)).await {
            applied_in = Some(started.elapsed());
        } else {
            eprintln!("the read model has not applied the import within 10 minutes; it will catch up");
        }
    }
    let rate = |d: Duration| created as f64 / d.as_secs_f64().max(0.001);
    println!(
        "imported {created} resources into {tenant} ({skipped} already present, {failed} refused) in {:.1}s: {:.0} resources/s published{}",
        published_in.as_secs_f64(),
        rate(published_in),
        applied_in.map(|d| format!(", {:.0} resources/s applied to the read model", rate(d))).unwrap_or_default()
    );
    if failed > 0 {
        anyhow::bail!("{failed} resources were refused (see the log)");
    }
    Ok(())
}

/// Commits a unit atomically; if something in it exists already (a resumed
/// import), falls back to one entry at a time so the rest still lands.
async fn commit(
    commands: &Commands,
    cx: &WriteContext<'_>,
    unit: Unit,
    chunk: usize,
    share: &[ResourceType],
    tally: &Tally,
) {
    let n = unit.entries.len() as u64;
    match commands.transaction(cx, unit.entries, &Default::default(), |_| schemas::ResourceId::generate()).await {
        Ok(outcome) => {
            tally.created.fetch_add(n, Ordering::Relaxed);
            tally.last_seq.fetch_max(outcome.last_seq.unwrap_or(0), Ordering::Relaxed);
        }
        // Something in the unit exists already (a resumed import) or one
        // entry is invalid: go one entry at a time, so the rest still lands.
        Err(f) if n > 1 && (f.index.is_some() || matches!(f.error, CommandError::Conflict)) => {
            let (path, position, share) = (unit.path.clone(), unit.position, share.to_vec());
            let again = tokio::task::spawn_blocking(move || read_units(&path, chunk, &share)).await;
            let Some(again) =
                again.ok().and_then(Result::ok).and_then(|mut u| (position < u.len()).then(|| u.swap_remove(position)))
            else {
                tracing::error!(source = %unit.source, "the file changed while it was imported");
                tally.failed.fetch_add(n, Ordering::Relaxed);
                return;
            };
            for mut e in again.entries {
                e.index = 0;
                match commands.transaction(cx, vec![e], &Default::default(), |_| schemas::ResourceId::generate()).await
                {
                    Ok(outcome) => {
                        tally.created.fetch_add(1, Ordering::Relaxed);
                        tally.last_seq.fetch_max(outcome.last_seq.unwrap_or(0), Ordering::Relaxed);
                    }
                    Err(f) if matches!(f.error, CommandError::Conflict) => {
                        tally.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(f) => {
                        tracing::error!(source = %unit.source, error = %format!("{:#}", anyhow::Error::new(f)), "resource refused");
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Err(f) if matches!(f.error, CommandError::Conflict) => {
            tally.skipped.fetch_add(n, Ordering::Relaxed);
        }
        Err(f) => {
            tracing::error!(source = %unit.source, error = %format!("{:#}", anyhow::Error::new(f)), "commit refused");
            tally.failed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("read directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| is_importable(f))
                .collect();
            inside.sort();
            files.extend(inside);
        } else if is_importable(p) {
            files.push(p.clone());
        } else {
            anyhow::bail!("{} is not a .json or .ndjson file (optionally .gz)", p.display());
        }
    }
    Ok(files)
}

fn is_importable(p: &Path) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.ends_with(".json") || name.ends_with(".ndjson")
}

fn open(path: &Path) -> anyhow::Result<Box<dyn std::io::Read + Send>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    Ok(if gz { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) })
}

/// Reads a file into commits (CPU-bound: runs on a blocking thread).
impl Unit {
    fn new(source: &str, entries: Vec<Entry>) -> Self {
        Self { source: source.to_owned(), path: PathBuf::new(), position: 0, entries, shared: false }
    }
}

fn read_units(path: &Path, chunk: usize, share: &[ResourceType]) -> anyhow::Result<Vec<Unit>> {
    let mut units = read_file_units(path, chunk, share)?;
    for (position, unit) in units.iter_mut().enumerate() {
        unit.path = path.to_owned();
        unit.position = position;
    }
    Ok(units)
}

fn read_file_units(path: &Path, chunk: usize, share: &[ResourceType]) -> anyhow::Result<Vec<Unit>> {
    let source = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = source.to_lowercase();
    let reader = open(path)?;
    if name.trim_end_matches(".gz").ends_with(".ndjson") {
        ndjson_units(&source, reader, chunk)
    } else {
        let mut text = Vec::new();
        std::io::BufReader::new(reader).read_to_end(&mut text).with_context(|| format!("read {source}"))?;
        let value: Value = serde_json::from_slice(&text).with_context(|| format!("{source} is not JSON"))?;
        bundle_units(&source, value, chunk, share)
    }
}

/// The shared-space id of a routed resource: a UUID v5 of its type and
/// first identifier, so every import of the same organisation meets at one
/// id (and create-only commits skip it the second time).
fn shared_id(e: &Entry, share: &[ResourceType]) -> Option<schemas::ResourceId> {
    if !share.contains(&e.rt) || e.method != Method::Post {
        return None;
    }
    let ident = e.body.as_ref()?.get("identifier")?.as_array()?.first()?;
    let system = ident.get("system").and_then(Value::as_str).unwrap_or_default();
    let value = ident.get("value")?.as_str()?;
    let name = format!("fhirstream:shared:{}:{system}|{value}", e.rt);
    schemas::ResourceId::parse(&uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()).ok()
}

fn bundle_units(source: &str, value: Value, chunk: usize, share: &[ResourceType]) -> anyhow::Result<Vec<Unit>> {
    let (_, mut entries) =
        bundle::parse_value(value, usize::MAX).with_context(|| format!("{source} is not a usable Bundle"))?;
    if let Some(e) = entries.iter().find(|e| e.method != Method::Post && e.method != Method::Put) {
        anyhow::bail!("{source}: entry[{}] is a {:?}; import loads only POST and PUT entries", e.index, e.method);
    }
    let routed: Vec<bool> = entries.iter().map(|e| shared_id(e, share).is_some()).collect();
    bundle::resolve_in_place(&mut entries, |e| shared_id(e, share).unwrap_or_else(|| bundle::import_id(e, source)))
        .with_context(|| source.to_string())?;
    // Routed entries become their own commit to the shared space; the rest
    // reference them by their shared ids.
    type Routed = Vec<(Entry, bool)>;
    let (to_shared, rest): (Routed, Routed) = entries.into_iter().zip(routed).partition(|(_, routed)| *routed);
    let mut units = Vec::new();
    if !to_shared.is_empty() {
        let part = to_shared.into_iter().enumerate().map(|(i, (mut e, _))| {
            e.index = i;
            e
        });
        units.push(Unit { shared: true, ..Unit::new(source, part.collect()) });
    }
    let entries: Vec<Entry> = rest.into_iter().map(|(e, _)| e).collect();
    let limit = if entries.len() <= command::store::MAX_BATCH { command::store::MAX_BATCH } else { chunk };
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() {
        let part = entries
            .by_ref()
            .take(limit)
            .enumerate()
            .map(|(i, mut e)| {
                e.index = i;
                e
            })
            .collect();
        units.push(Unit::new(source, part));
    }
    Ok(units)
}

fn ndjson_units(source: &str, reader: Box<dyn std::io::Read + Send>, chunk: usize) -> anyhow::Result<Vec<Unit>> {
    let mut units = Vec::new();
    let mut current = Vec::new();
    for (line_no, line) in std::io::BufReader::new(reader).lines().enumerate() {
        let line = line.with_context(|| format!("read {source}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let resource: Value =
            serde_json::from_str(&line).with_context(|| format!("{source}:{}: not JSON", line_no + 1))?;
        let rt = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .map(ResourceType::parse)
            .transpose()
            .with_context(|| format!("{source}:{}", line_no + 1))?
            .with_context(|| format!("{source}:{}: no resourceType", line_no + 1))?;
        let own_id = resource.get("id").and_then(Value::as_str);
        let full_url = own_id.map(|id| format!("{rt}/{id}"));
        // An NDJSON resource keeps its own id when it has a valid one; else
        // the id derives from its line.
        let id_hint = own_id
            .and_then(|id| schemas::ResourceId::parse(id).ok())
            .unwrap_or_else(|| bundle::import_id(&Entry { index: line_no, ..Entry::new(Method::Post, rt) }, source));
        current.push(Entry {
            index: current.len(),
            full_url,
            body: Some(resource),
            id_hint: Some(id_hint),
            ..Entry::new(Method::Post, rt)
        });
        if current.len() >= chunk {
            units.push(Unit::new(source, std::mem::take(&mut current)));
        }
    }
    if !current.is_empty() {
        units.push(Unit::new(source, current));
    }
    Ok(units)
}
