//! The HTTP edge: routing, extraction, auth and error mapping for the FHIR
//! and admin APIs. Handlers are thin: they parse, authorize, call the
//! command or query service, and shape the FHIR response.

mod access;
mod admin;
pub mod auth;
mod bundle;
pub mod error;
mod events;
mod export;
mod extract;
mod history;
pub mod limits;
mod metadata;
mod negotiate;
mod observe;
mod openapi;
mod read;
pub mod response;
mod search;
mod settle;
pub mod shares;
pub(crate) mod sharing;
pub mod smart;
mod transaction;
mod validate;
mod write;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware;
use axum::routing::get;
use sqlx::PgPool;

use command::{AppliedWatch, Commands};
use projector::TenantRegistry;
use query::Queries;

pub use settle::ReadYourWrites;

pub use auth::Authenticator;
pub use error::ApiError;

/// Settings the handlers need.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Public base URL, without a trailing slash.
    pub base_url: String,
    /// Largest request body (Bundles included).
    pub max_body_bytes: usize,
    /// Largest single resource: what one event can carry.
    pub max_resource_bytes: usize,
    pub max_bundle_entries: usize,
    pub read_your_writes_timeout: Duration,
    /// How long a request body may take to arrive.
    pub body_read_timeout: Duration,
    pub limits: limits::RequestLimits,
    pub search: SearchSettings,
    /// Types that may live in the shared space.
    pub shareable: Vec<schemas::ResourceType>,
    /// Benchmarks only: writes skip R4 conformance validation.
    pub skip_conformance: bool,
    /// SMART discovery, when the identity provider's endpoints are configured.
    pub smart: Option<smart::SmartDiscovery>,
}

/// Search limits and the key that seals paging cursors.
#[derive(Debug, Clone)]
pub struct SearchSettings {
    pub default_count: u32,
    pub max_count: u32,
    pub max_included: u32,
    pub cursor_key: query::search::CursorKey,
}

/// What tenant deletion needs beyond the write side: the read models (to
/// prove the rows are gone) and the tenant projection's progress.
pub struct AdminDeps {
    pub pool: PgPool,
    pub tenant_applied: AppliedWatch,
}

/// What the operations endpoints need.
pub struct Ops {
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub pool: PgPool,
    /// The resource stream and the projector whose lag `/ready` checks.
    pub stream: String,
    pub projector: String,
    pub max_lag_events: u64,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// What every handler can reach. Roles this process does not run are `None`.
pub struct AppState {
    pub settings: HttpSettings,
    pub auth: Authenticator,
    pub tenants: TenantRegistry,
    pub commands: Option<Commands>,
    pub applied: Option<ReadYourWrites>,
    pub queries: Option<Queries>,
    pub admin: Option<AdminDeps>,
    pub ops: Option<Ops>,
    /// `$export` jobs (nodes with the query role).
    pub exports: Option<Arc<crate::export::jobs::ExportJobs>>,
    /// Cancelled when the server begins to stop: long-lived responses (the
    /// change feed) end so the graceful shutdown can finish.
    pub shutdown: tokio_util::sync::CancellationToken,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// The write side, or 405 on a node that does not run it.
    fn commands(&self) -> Result<&Commands, ApiError> {
        self.commands.as_ref().ok_or_else(|| ApiError::MethodNotAllowed("this node does not accept writes".into()))
    }

    /// The read side, or 405 on a node that does not run it.
    fn queries(&self) -> Result<&Queries, ApiError> {
        self.queries.as_ref().ok_or_else(|| ApiError::MethodNotAllowed("this node does not serve reads".into()))
    }

    /// The queries that answer a request: the live read model, or the
    /// tenant's snapshot the URL names.
    fn reads(&self, t: &extract::InTenant) -> Result<Queries, ApiError> {
        let q = self.queries()?;
        Ok(match &t.snapshot {
            Some(s) => q.in_snapshot(s.clone()),
            None => q.clone(),
        })
    }

    /// The absolute URL of a resource version.
    fn version_url(
        &self,
        tenant: &schemas::TenantId,
        rt: schemas::ResourceType,
        id: &schemas::ResourceId,
        v: schemas::Version,
    ) -> String {
        format!("{}/fhir/{tenant}/{rt}/{id}/_history/{v}", self.settings.base_url)
    }
}

/// The whole HTTP API.
pub fn router(state: SharedState) -> Router {
    router_with(state, true)
}

/// The API's routes; `/ready` and `/metrics` only with `ops_here` (off when
/// they listen on an address of their own, see [`ops_router`]).
pub fn router_with(state: SharedState, ops_here: bool) -> Router {
    let authenticated = Router::new()
        .route("/fhir/{tenant}", get(search::system_get).post(transaction::bundle))
        .route("/fhir/{tenant}/", get(search::system_get).post(transaction::bundle))
        .route("/fhir/{tenant}/_search", axum::routing::post(search::system_post))
        .route("/fhir/{tenant}/_history", get(history::system_history))
        .route("/fhir/{tenant}/$export", get(export::system))
        .route("/fhir/{tenant}/$events", get(events::feed))
        .route("/fhir/{tenant}/{rtype}/$export", get(export::type_level))
        .route("/fhir/{tenant}/$export-status/{job}", get(export::status).delete(export::cancel))
        .route("/fhir/{tenant}/$export-file/{job}/{file}", get(export::file))
        .route("/fhir/{tenant}/{rtype}/_history", get(history::type_history))
        .route("/fhir/{tenant}/{rtype}/$validate", axum::routing::post(validate::type_level))
        .route("/fhir/{tenant}/{rtype}/{id}/$validate", axum::routing::post(validate::instance_level))
        .route("/fhir/{tenant}/{rtype}/{id}/$export", get(export::group_level))
        .route("/fhir/{tenant}/{rtype}/_search", axum::routing::post(search::type_post))
        .route(
            "/fhir/{tenant}/{rtype}",
            get(search::type_get)
                .post(write::create)
                .put(transaction::conditional_update)
                .delete(transaction::conditional_delete),
        )
        .route(
            "/fhir/{tenant}/{rtype}/{id}",
            get(read::read).put(write::update).delete(write::delete).patch(transaction::patch),
        )
        .route("/fhir/{tenant}/{rtype}/{id}/_history", get(history::instance_history))
        .route("/fhir/{tenant}/{rtype}/{id}/_history/{vid}", get(read::vread))
        // A kept snapshot (`fhirstream replay --into NAME`), read-only.
        .route("/fhir/{tenant}/_snapshot/{snapshot}", get(search::system_get))
        .route("/fhir/{tenant}/_snapshot/{snapshot}/_search", axum::routing::post(search::system_post))
        .route("/fhir/{tenant}/_snapshot/{snapshot}/_history", get(history::system_history))
        .route("/fhir/{tenant}/_snapshot/{snapshot}/{rtype}", get(search::type_get))
        .route("/fhir/{tenant}/_snapshot/{snapshot}/{rtype}/_search", axum::routing::post(search::type_post))
        .route("/fhir/{tenant}/_snapshot/{snapshot}/{rtype}/_history", get(history::type_history))
        .route("/fhir/{tenant}/_snapshot/{snapshot}/{rtype}/{id}", get(read::read))
        .route("/fhir/{tenant}/_snapshot/{snapshot}/{rtype}/{id}/_history", get(history::instance_history))
        .route("/fhir/{tenant}/_snapshot/{snapshot}/{rtype}/{id}/_history/{vid}", get(read::vread))
        .route("/admin/tenants", get(admin::list).post(admin::create))
        .route("/admin/tenants/{tenant}", get(admin::get).put(admin::configure).delete(admin::delete))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::authenticate));
    Router::new()
        .merge(authenticated)
        // Public, as FHIR and SMART clients expect; it reveals nothing about
        // a tenant to a caller who cannot prove access to it.
        .route("/fhir/{tenant}/metadata", get(metadata::capability_statement))
        .route("/fhir/{tenant}/.well-known/smart-configuration", get(smart::configuration))
        .route("/health", get(|| async { "ok" }))
        .merge(if ops_here { ops_routes() } else { Router::new() })
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(negotiate::negotiate))
        // Outside routing and auth, so a hostile URL or header costs no
        // more than this check; inside `track`, so refusals are counted.
        .layer(middleware::from_fn_with_state(state.clone(), limits::bound))
        .layer(middleware::from_fn(observe::track))
        .with_state(state)
}

fn ops_routes() -> Router<SharedState> {
    Router::new().route("/ready", get(observe::ready)).route("/metrics", get(observe::metrics))
}

/// `/health`, `/ready` and `/metrics` alone, for `--ops-listen`: operators
/// can keep them on an internal address, away from tenants' traffic and
/// its request limits.
pub fn ops_router(state: SharedState) -> Router {
    ops_routes().route("/health", get(|| async { "ok" })).fallback(not_found).with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not supported on this URL"))
}
