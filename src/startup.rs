//! Building and running the server: `App::build` connects, migrates and
//! binds; `port()` tells tests where it listens; `run_until_stopped` serves
//! until the shutdown future resolves, then drains.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::{error, info, info_span, warn};

use command::{AppliedWatch, Commands, EventStore, StreamNames};
use projector::tenants::tenant_projection_name;
use projector::{Projector, ProjectorConfig, TenantRegistry};
use query::Queries;

use crate::config::{ConnArgs, ReadYourWritesMode, Role, ServeArgs};
use crate::http::{self, AdminDeps, AppState, Authenticator, HttpSettings, SearchSettings};
use query::search::CursorKey;

/// The oldest NATS server fhirstream runs on: older ones silently ignore
/// consumer settings it relies on and lack atomic batch publish.
pub const MIN_NATS_VERSION: (u64, u64) = (2, 12);

/// A built, bound, not yet running server.
pub struct App {
    listener: TcpListener,
    /// `--ops-listen`: `/health`, `/ready` and `/metrics` apart from the API.
    ops: Option<(TcpListener, Router)>,
    router: Router,
    base_url: String,
    projector: Option<Projector>,
    /// Cancelled when `shutdown` resolves (see [`AppState::shutdown`]).
    shutdown: CancellationToken,
    connections: crate::serve::ConnectionLimits,
}

impl App {
    pub async fn build(cfg: ServeArgs) -> anyhow::Result<Self> {
        let serves_api = cfg.has(Role::Command) || cfg.has(Role::Query);
        let auth = if serves_api { Authenticator::from_config(&cfg.auth)? } else { Authenticator::deny_all() };
        let nats = connect_nats(&cfg.conn).await?;
        let pool = connect_pg(&cfg.conn, cfg.db_pool_size).await?;
        projector::migrate::run(&pool).await.context("migrate the read models")?;
        let store = open_store(&cfg.conn, nats.clone())
            .await?
            .with_batch_limits(cfg.limits.batch_limits())
            .with_max_index_rows(cfg.limits.max_index_rows);
        let tenants = TenantRegistry::follow(store.jetstream(), &cfg.conn.tenant_stream).await?;

        let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("listen on {}", cfg.listen))?;
        let base_url = match &cfg.base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", listener.local_addr()?),
        };
        let applied = match cfg.has(Role::Command) {
            true => Some(http::ReadYourWrites {
                watch: AppliedWatch::follow(&nats, &cfg.projector_name).await.context("follow the projector")?,
                direct: (cfg.read_your_writes == ReadYourWritesMode::Direct).then(|| pool.clone()),
            }),
            false => None,
        };
        let queries = match cfg.has(Role::Query) {
            true => Some(
                Queries::connect_with(
                    &cfg.conn.database_url,
                    cfg.db_pool_size,
                    Duration::from_millis(cfg.limits.read_timeout_ms.max(1)),
                )
                .await
                .context("connect the query side to PostgreSQL as fhirstream_reader")?,
            ),
            false => None,
        };
        let admin = match cfg.has(Role::Command) {
            true => Some(AdminDeps {
                pool: pool.clone(),
                tenant_applied: AppliedWatch::follow(&nats, &tenant_projection_name(&cfg.projector_name))
                    .await
                    .context("follow the tenant projection")?,
            }),
            false => None,
        };
        let metrics = crate::telemetry::metrics_handle();
        metrics::gauge!("fhirstream_auth_disabled").set(if auth.is_disabled() { 1.0 } else { 0.0 });
        if cfg.unsafe_skip_conformance {
            tracing::warn!(
                "R4 conformance validation is OFF (--unsafe-skip-conformance): writes that are not valid FHIR \
                 can reach the immutable stream; this is for measuring validation's cost only"
            );
        }
        let ops = http::Ops {
            nats: nats.clone(),
            js: store.jetstream().clone(),
            pool: pool.clone(),
            stream: cfg.conn.stream.clone(),
            projector: cfg.projector_name.clone(),
            max_lag_events: cfg.ready_max_lag_events,
            metrics,
        };
        let shareable = cfg
            .shareable_types
            .iter()
            .map(|t| schemas::ResourceType::parse(t.trim()))
            .collect::<Result<Vec<_>, _>>()
            .context("read --shareable-types (FHIRSTREAM_SHAREABLE_TYPES)")?;
        let shutdown = CancellationToken::new();
        let state = Arc::new(AppState {
            settings: HttpSettings {
                base_url: base_url.clone(),
                max_body_bytes: cfg.max_body_bytes,
                max_resource_bytes: body_limit(cfg.max_body_bytes, nats.server_info().max_payload),
                max_bundle_entries: cfg.max_bundle_entries,
                read_your_writes_timeout: cfg.read_your_writes_timeout(),
                skip_conformance: cfg.unsafe_skip_conformance,
                body_read_timeout: Duration::from_millis(cfg.limits.body_read_timeout_ms.max(1)),
                limits: http::limits::RequestLimits::new(
                    cfg.limits.max_url_bytes,
                    cfg.limits.max_header_bytes,
                    cfg.limits.max_concurrent_requests,
                )
                .with_tenant_shares(cfg.limits.tenant_max_concurrent_requests, cfg.limits.tenant_max_feeds)
                .with_usage_buckets(cfg.limits.tenant_usage_buckets),
                search: SearchSettings {
                    default_count: cfg.search.search_default_count.max(1),
                    max_count: cfg.search.search_max_count.max(1),
                    max_included: cfg.search.search_max_included,
                    cursor_key: match &cfg.search.cursor_secret {
                        Some(secret) => CursorKey::from_secret(secret),
                        None => CursorKey::random(),
                    },
                },
                shareable,
                smart: http::smart::SmartDiscovery::from_config(&cfg.auth),
            },
            auth,
            tenants,
            commands: cfg.has(Role::Command).then(|| Commands::new(store.clone())),
            applied,
            shutdown: shutdown.clone(),
            exports: queries.clone().map(|q| {
                let jobs = crate::export::jobs::ExportJobs::new(cfg.export.dir(), q, cfg.limits.tenant_max_exports);
                jobs.spawn_sweeper(Duration::from_secs(cfg.export.export_retention_secs), shutdown.clone());
                jobs
            }),
            queries,
            admin,
            ops: Some(ops),
        });
        let projector = cfg.has(Role::Projector).then(|| {
            let pcfg = ProjectorConfig {
                name: cfg.projector_name.clone(),
                stream: cfg.conn.stream.clone(),
                tenant_stream: cfg.conn.tenant_stream.clone(),
                batch_size: cfg.projector_batch,
                batch_bytes: cfg.limits.projector_batch_bytes,
                lanes: cfg.projector_lanes.max(1),
            };
            Projector::new(pcfg, nats.clone(), pool.clone())
        });
        let ops = match cfg.ops_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.with_context(|| format!("listen on {addr} (--ops-listen)"))?;
                Some((l, http::ops_router(state.clone())))
            }
            None => None,
        };
        let router = http::router_with(state, ops.is_none()).layer(TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<_>| info_span!("request", method = %req.method(), path = %req.uri().path()),
        ));
        let connections = crate::serve::ConnectionLimits {
            header_read_timeout: Duration::from_millis(cfg.limits.header_read_timeout_ms),
            max_connections: cfg.limits.max_connections,
        };
        Ok(Self { listener, ops, router, base_url, projector, shutdown, connections })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The port of `--ops-listen`, if set.
    pub fn ops_port(&self) -> Option<u16> {
        self.ops.as_ref().and_then(|(l, _)| l.local_addr().ok()).map(|a| a.port())
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Serves until `shutdown` resolves; then stops accepting, finishes
    /// in-flight requests and the projector's current batch.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        // The projector retries every error itself, so its task ends early
        // only by a bug (a panic). Serving on without it would leave every
        // read-your-writes write waiting for a projection that never comes;
        // the server stops instead, so that its supervisor restarts it.
        let (ended_early, projector_ended) = tokio::sync::watch::channel(false);
        let projector = self.projector.map(|p| {
            let handle = tokio::spawn(p.run(token.clone()));
            let token = token.clone();
            tokio::spawn(async move {
                // A panic and an error end the same way: the task is gone.
                let outcome = handle.await.map_err(anyhow::Error::from).and_then(|run| run);
                if !token.is_cancelled() {
                    let why = outcome.as_ref().err().map(|e| format!("{e:#}"));
                    error!(why, "the projector stopped on its own; stopping the server");
                    let _ = ended_early.send(true);
                }
                outcome
            })
        });
        info!(base_url = %self.base_url, "fhirstream listening");
        // The operations address serves until the API has drained.
        let ops_stop = CancellationToken::new();
        let ops = self.ops.map(|(listener, router)| {
            let stop = ops_stop.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
                if let Err(e) = served {
                    warn!(error = %e, "the operations listener failed");
                }
            })
        });
        // Endless responses (change feeds) end at the signal, or draining
        // would wait for them for ever...
        let requests = self.shutdown;
        let stop = stop_signal(shutdown, projector_ended.clone());
        let stop = async move {
            stop.await;
            requests.cancel();
        };
        // ...but the projector stops only after the last request: a write in
        // flight at shutdown waits for its projection, which a stopped
        // projector would leave pending for the whole read-your-writes timeout.
        let served = crate::serve::serve(self.listener, self.router, self.connections, stop).await;
        ops_stop.cancel();
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        served.context("serve HTTP")?;
        token.cancel();
        if let Some(handle) = projector {
            match tokio::time::timeout(Duration::from_secs(10), handle).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %format!("{e:#}"), "projector stopped with an error"),
                Ok(Err(e)) => warn!(error = %e, "projector task failed"),
                Err(_) => warn!("projector did not stop within 10 s"),
            }
        }
        if *projector_ended.borrow() {
            anyhow::bail!("the projector stopped before shutdown (see the log); fhirstream must be restarted");
        }
        Ok(())
    }
}

/// Resolves at the shutdown signal, or as soon as the projector has ended
/// on its own (`ended` turns true); never for a server without a
/// projector (the sender is dropped at once).
async fn stop_signal(shutdown: impl Future<Output = ()>, mut ended: tokio::sync::watch::Receiver<bool>) {
    let ended = async move {
        if ended.wait_for(|early| *early).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = ended => {}
    }
}

/// Connects to NATS and refuses servers older than [`MIN_NATS_VERSION`].
/// A user and password in the URL (`nats://fhirstream:PASSWORD@host:4222`,
/// as `fhirstream nats-auth` generates them) are used to log in: async-nats
/// parses but does not send them by itself.
pub async fn connect_nats(conn: &ConnArgs) -> anyhow::Result<async_nats::Client> {
    // Several seeds for a cluster, so start-up does not depend on one
    // server; the client learns the others from the servers themselves.
    let servers: Vec<&str> = conn.nats_url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let shown = servers.iter().map(|s| redact(s)).collect::<Vec<_>>().join(",");
    let mut options = async_nats::ConnectOptions::new();
    if let Some((user, password)) = servers.first().and_then(|first| url_credentials(first)) {
        options = options.user_and_password(user, password);
    }
    let client = options
        .name("fhirstream")
        .connection_timeout(Duration::from_secs(5))
        .connect(servers.as_slice())
        .await
        .with_context(|| format!("connect to NATS at {shown}"))?;
    let version = client.server_info().version;
    check_nats_version(&version)?;
    if !client.server_info().jetstream {
        anyhow::bail!("the NATS server at {shown} has JetStream disabled; start it with -js");
    }
    Ok(client)
}

/// The user and password in a URL, percent-decoded.
fn url_credentials(url: &str) -> Option<(String, String)> {
    let url = url::Url::parse(url).ok()?;
    if url.username().is_empty() {
        return None;
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    Some((decode(url.username()), decode(url.password().unwrap_or_default())))
}

/// Room an event's envelope and headers take beside the resource body.
const ENVELOPE_HEADROOM: usize = 16 * 1024;

/// The largest single resource worth accepting: one whose event would
/// exceed the NATS server's `max_payload` can never be stored, so it is
/// refused at the edge (413) instead of after validation. Bundles keep the
/// configured limit: each entry becomes its own event.
pub fn body_limit(configured: usize, max_payload: usize) -> usize {
    let fits = max_payload.saturating_sub(ENVELOPE_HEADROOM);
    if configured > fits {
        tracing::warn!(
            configured,
            max_payload,
            limit = fits,
            "--max-body-bytes lowered to fit the NATS server's max_payload"
        );
    }
    configured.min(fits)
}

/// Whether a NATS server version is new enough, with advice if not.
pub fn check_nats_version(version: &str) -> anyhow::Result<()> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_NATS_VERSION {
        anyhow::bail!(
            "NATS server {version} is too old: fhirstream needs {}.{} or newer (older servers silently ignore \
             consumer filters and lack atomic batch publish). Run `scripts/ensure-nats.sh` (or `make run`) to \
             start a suitable one, or point --nats-url / FHIRSTREAM_NATS_URL at one.",
            MIN_NATS_VERSION.0,
            MIN_NATS_VERSION.1
        );
    }
    Ok(())
}

/// The writer pool (projector, migrations, tenant purges). Its commits are
/// asynchronous (`synchronous_commit = off`): the read models are derived
/// data, and each projection writes its checkpoint in the same transaction
/// as its rows, so a PostgreSQL crash that loses the last few commits also
/// loses their checkpoint, and the projector re-applies them from the stream.
/// Durability is JetStream's job; this saves a WAL flush per batch.
///
/// Its statements are always planned for their actual arguments
/// (`plan_cache_mode = force_custom_plan`): after five executions PostgreSQL
/// may switch a prepared statement to a generic plan, which cannot prune
/// partitions by tenant. For the projector's batch statement that turned
/// ~3,300 events/s into ~100 once the index held a million rows.
pub async fn connect_pg(conn: &ConnArgs, size: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size.max(2))
        .acquire_timeout(Duration::from_secs(3))
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, "set synchronous_commit = off").await?;
                sqlx::Executor::execute(&mut *conn, "set plan_cache_mode = force_custom_plan").await?;
                Ok(())
            })
        })
        .connect(&conn.database_url)
        .await
        .with_context(|| format!("connect to PostgreSQL at {}", redact(&conn.database_url)))
}

pub async fn open_store(conn: &ConnArgs, nats: async_nats::Client) -> anyhow::Result<EventStore> {
    let names = StreamNames {
        resources: conn.stream.clone(),
        tenants: conn.tenant_stream.clone(),
        replicas: conn.stream_replicas,
    };
    EventStore::open(nats, &names, conn.publish_timeout()).await
}

/// A URL with its password replaced, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_versions_below_2_12_are_refused_with_advice() {
        for old in ["2.9.10", "2.11.4", "v2.10.0", "1.4.0"] {
            let err = check_nats_version(old).unwrap_err().to_string();
            assert!(err.contains("too old") && err.contains("ensure-nats"), "{old}: {err}");
        }
        for ok in ["2.12.0", "2.15.1", "v2.15.1-beta", "3.0.0"] {
            assert!(check_nats_version(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn the_body_limit_never_exceeds_what_one_event_can_carry() {
        assert_eq!(body_limit(4 << 20, 1 << 20), (1 << 20) - ENVELOPE_HEADROOM);
        assert_eq!(body_limit(64 * 1024, 1 << 20), 64 * 1024);
        assert_eq!(body_limit(1000, 100), 0);
    }

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("nats://fhirstream:secret@127.0.0.1:4222"), "nats://fhirstream:***@127.0.0.1:4222");
    }

    #[tokio::test]
    async fn a_projector_ending_on_its_own_stops_the_server_and_one_that_never_ran_does_not() {
        let never = std::future::pending::<()>;
        let (tx, rx) = tokio::sync::watch::channel(false);
        let stop = tokio::spawn(stop_signal(never(), rx));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!stop.is_finished(), "a running projector keeps the server up");
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), stop).await.expect("stopped").unwrap();

        let (tx, rx) = tokio::sync::watch::channel(false);
        drop(tx); // a server without a projector
        let idle = tokio::time::timeout(Duration::from_millis(100), stop_signal(never(), rx)).await;
        assert!(idle.is_err(), "no projector is no reason to stop");

        let (_tx, rx) = tokio::sync::watch::channel(false);
        tokio::time::timeout(Duration::from_secs(5), stop_signal(std::future::ready(()), rx))
            .await
            .expect("the shutdown signal still stops it");
    }

    #[test]
    fn nats_credentials_come_from_the_url_decoded() {
        assert_eq!(url_credentials("nats://fhirstream:p%40ss@h:4222"), Some(("fhirstream".into(), "p@ss".into())));
        assert_eq!(url_credentials("nats://127.0.0.1:4222"), None);
    }
}
