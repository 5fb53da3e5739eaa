//! Command-line and environment configuration: one typed config per
//! subcommand, every setting a flag with a `FHIRSTREAM_*` fallback. Nothing
//! else in the program reads the environment.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "fhirstream", version, about = "Event-sourced, multitenant FHIR R4 resource store")]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    /// TOML file of settings, keyed by flag name (`nats-url = "..."`);
    /// flags and FHIRSTREAM_* variables override it.
    #[arg(long = "config", env = "FHIRSTREAM_CONFIG", value_name = "FILE")]
    pub config_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (all roles by default).
    Serve(Box<ServeArgs>),
    /// Manage tenants directly on the event stream.
    Tenants(TenantsArgs),
    /// Mint a development token signed with the configured HS256 secret.
    Token(TokenArgs),
    /// Load transaction/batch Bundles and NDJSON files (plain or gzipped).
    Import(ImportArgs),
    /// Print nats-server users that let each tenant's analytics client read
    /// its own events and nothing else.
    NatsAuth(NatsAuthArgs),
    /// Rebuild a tenant's read model from the stream and swap it in
    /// atomically, or (with --until/--until-seq and --into) materialise a
    /// point-in-time snapshot beside it.
    Replay(ReplayArgs),
    /// Compare a tenant's read model with the fold of its events; exit 0
    /// when identical, 1 when not (with the differences), 2 on errors.
    Verify(VerifyArgs),
    /// Write a tenant's resources as one NDJSON file per type (what the
    /// API's `$export` writes), with a progress bar.
    Export(ExportCliArgs),
    /// Print the effective configuration of `serve` (flags, environment,
    /// config file, defaults) as a config file, secrets redacted.
    Config(Box<ConfigArgs>),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The rendered configuration (filled in by `config_file::parse_from`).
    #[arg(skip)]
    pub effective: String,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Tenant to replay.
    #[arg(long)]
    pub tenant: String,
    /// Rebuild the state as of this instant (RFC 3339): every event stamped
    /// (meta.lastUpdated) at or before it, up to the first one after it.
    #[arg(long, requires = "into", conflicts_with = "until_seq", value_parser = parse_instant)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Rebuild the state as of this stream sequence (inclusive).
    #[arg(long, requires = "into")]
    pub until_seq: Option<u64>,
    /// Materialise a snapshot in schema `snapshot_NAME` (kept, replaced if
    /// it exists, never swapped in) instead of rebuilding the live model.
    /// Required with --until and --until-seq, which would otherwise discard
    /// newer events from the live model.
    #[arg(long, value_name = "NAME")]
    pub into: Option<String>,
    /// The live projector, whose checkpoint the rebuilt model must match.
    #[arg(long, env = "FHIRSTREAM_PROJECTOR_NAME", default_value = "main")]
    pub projector_name: String,
    /// Events per transaction while rebuilding.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Start from scratch instead of resuming an interrupted replay.
    #[arg(long)]
    pub restart: bool,
    /// No progress bar (for logs and tests).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Tenant to verify.
    #[arg(long)]
    pub tenant: String,
    /// The live projector, whose checkpoint the events are folded up to.
    #[arg(long, env = "FHIRSTREAM_PROJECTOR_NAME", default_value = "main")]
    pub projector_name: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Instead of comparing the read model with the stream, list the
    /// current resources that fail today's validation rules (exit 1 if any).
    #[arg(long)]
    pub validate: bool,
    /// Most differences listed (all are counted).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// An RFC 3339 instant, e.g. `2026-11-29T14:55:03Z` or with an offset.
fn parse_instant(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 instant ({e}), e.g. 2026-11-29T14:55:03Z"))
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["tenants", "all_tenants"])))]
pub struct NatsAuthArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Tenant to create an analytics user for (repeat for several).
    #[arg(long = "tenant")]
    pub tenants: Vec<String>,
    /// Every tenant of the tenant registry (read from NATS at --nats-url).
    #[arg(long)]
    pub all_tenants: bool,
    /// Consumer a tenant may use, named `{tenant}_{NAME}` on the stream
    /// (a-z, A-Z, 0-9, '-'; repeat for several).
    #[arg(
        long = "consumer",
        env = "FHIRSTREAM_NATS_AUTH_CONSUMERS",
        value_delimiter = ',',
        default_value = "analytics"
    )]
    pub consumers: Vec<String>,
    /// Let tenants read the shared space (`fhir.shared.>`) too.
    #[arg(long, env = "FHIRSTREAM_NATS_AUTH_SHARED")]
    pub shared: bool,
    /// File of `USER PASSWORD` lines: users listed keep their password, new
    /// users get a random one appended (mode 0600). Without it, new
    /// passwords are printed on stderr.
    #[arg(long, env = "FHIRSTREAM_NATS_AUTH_PASSWORDS")]
    pub passwords: Option<std::path::PathBuf>,
    /// Name of fhirstream's own user, which may do everything.
    #[arg(long, default_value = "fhirstream")]
    pub fhirstream_user: String,
    /// Leave fhirstream's own user out (the server configuration has one).
    #[arg(long)]
    pub no_fhirstream_user: bool,
    /// bcrypt cost of the password hashes in the output.
    #[arg(long, default_value_t = 11, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Tenant to load into (it must exist).
    #[arg(long)]
    pub tenant: String,
    /// Files or directories (`*.json`, `*.ndjson`, optionally `.gz`).
    #[arg(required = true)]
    pub paths: Vec<std::path::PathBuf>,
    /// Commits in flight at once.
    #[arg(long, env = "FHIRSTREAM_IMPORT_IN_FLIGHT", default_value_t = 16)]
    pub in_flight: usize,
    /// Resources per commit for NDJSON, and the most per commit when a
    /// Bundle is larger than one atomic batch (it is then split).
    #[arg(long, default_value_t = 500)]
    pub chunk: usize,
    /// The projector whose progress to wait for at the end.
    #[arg(long, env = "FHIRSTREAM_PROJECTOR_NAME", default_value = "main")]
    pub projector_name: String,
    /// Resource types to route to the shared space instead of the tenant
    /// (e.g. `Organization,Practitioner,Location`): each is stored once,
    /// under an id derived from its first identifier, so the same hospital
    /// imported for several tenants exists once; the tenant's resources
    /// reference it there.
    #[arg(long, value_delimiter = ',')]
    pub share: Vec<String>,
    /// Do not wait for the read model to apply the import.
    #[arg(long)]
    pub no_wait: bool,
    /// No progress bar (for logs and tests).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Tenant the token may use (repeat for several; `*` for all).
    #[arg(long = "tenant", required = true)]
    pub tenants: Vec<String>,
    /// SMART scopes, space-separated (add `fhirstream/admin` for the admin API).
    #[arg(long, default_value = "system/*.*")]
    pub scope: String,
    /// The token's subject.
    #[arg(long, default_value = "developer")]
    pub sub: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub expires_in: u64,
    #[arg(long, env = "FHIRSTREAM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `fhirstream=debug,info`.
    #[arg(long, env = "FHIRSTREAM_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "FHIRSTREAM_LOG_JSON", global = true)]
    pub log_json: bool,
}

/// Where the event stream and the read models are.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// NATS server(s) with JetStream (comma-separated for a cluster).
    #[arg(long, global = true, env = "FHIRSTREAM_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// PostgreSQL database of the read models.
    #[arg(
        long,
        global = true,
        env = "FHIRSTREAM_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/fhirstream"
    )]
    pub database_url: String,
    /// Name of the resource stream (subjects `fhir.>`).
    #[arg(long, global = true, env = "FHIRSTREAM_STREAM", default_value = "FHIR")]
    pub stream: String,
    /// Name of the tenant-registry stream (subjects `fhirstream.tenants.>`).
    #[arg(long, global = true, env = "FHIRSTREAM_TENANT_STREAM", default_value = "FHIRSTREAM_TENANTS")]
    pub tenant_stream: String,
    /// Replicas of each stream (3 on a NATS cluster).
    #[arg(long, global = true, env = "FHIRSTREAM_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// How long a write waits for JetStream's acknowledgement, in ms.
    #[arg(long, global = true, env = "FHIRSTREAM_PUBLISH_TIMEOUT_MS", default_value_t = 5000)]
    pub publish_timeout_ms: u64,
}

impl ConnArgs {
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
}

/// A part of the server that can run on its own machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The write API: validates writes and appends events.
    Command,
    /// Folds events into the PostgreSQL read models.
    Projector,
    /// The read API.
    Query,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Address to listen on.
    #[arg(long, env = "FHIRSTREAM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address for `/health`, `/ready` and `/metrics` apart from the FHIR
    /// API (e.g. only on an internal network); when set, the API address no
    /// longer serves `/ready` and `/metrics`.
    #[arg(long, env = "FHIRSTREAM_OPS_LISTEN")]
    pub ops_listen: Option<SocketAddr>,
    /// Public base URL used in Location headers and Bundle links
    /// (default: http://{listen address}).
    #[arg(long, env = "FHIRSTREAM_BASE_URL")]
    pub base_url: Option<String>,
    /// Roles this process runs.
    #[arg(long, env = "FHIRSTREAM_ROLES", value_delimiter = ',', default_value = "command,projector,query")]
    pub roles: Vec<Role>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "FHIRSTREAM_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most entries accepted in one transaction or batch Bundle (a
    /// transaction is one JetStream atomic batch: at most 1000 by default).
    #[arg(long, env = "FHIRSTREAM_MAX_BUNDLE_ENTRIES", default_value_t = 1000)]
    pub max_bundle_entries: usize,
    /// How long a write waits for its projection before answering anyway
    /// (with `X-Fhirstream-Projection: pending`), in ms.
    #[arg(long, env = "FHIRSTREAM_READ_YOUR_WRITES_TIMEOUT_MS", default_value_t = 2000)]
    pub read_your_writes_timeout_ms: u64,
    /// How a write becomes visible to reads before it answers: `direct`
    /// applies its own events to PostgreSQL (never queues behind other
    /// writers), `projector` waits for the projector to reach them.
    #[arg(long, env = "FHIRSTREAM_READ_YOUR_WRITES", value_enum, default_value_t = ReadYourWritesMode::Direct)]
    pub read_your_writes: ReadYourWritesMode,
    /// Benchmarks only: skip R4 conformance validation of writes (the
    /// structure checks stay), so the bench can measure what validation
    /// costs. What is not valid FHIR can then reach the stream, which is
    /// immutable: never in production.
    #[arg(long, env = "FHIRSTREAM_UNSAFE_SKIP_CONFORMANCE", hide = true)]
    pub unsafe_skip_conformance: bool,
    /// Name of the projector (its consumer, checkpoint and lock).
    #[arg(long, env = "FHIRSTREAM_PROJECTOR_NAME", default_value = "main")]
    pub projector_name: String,
    /// Most events the projector applies in one transaction.
    #[arg(long, env = "FHIRSTREAM_PROJECTOR_BATCH", default_value_t = 1000)]
    pub projector_batch: usize,
    /// Parts a large projector batch is split into, applied at once on
    /// their own PostgreSQL connections (projection lanes).
    #[arg(long, env = "FHIRSTREAM_PROJECTOR_LANES", default_value_t = 4)]
    pub projector_lanes: usize,
    /// `/ready` fails while the projector is more events behind than this.
    #[arg(long, env = "FHIRSTREAM_READY_MAX_LAG_EVENTS", default_value_t = 10_000)]
    pub ready_max_lag_events: u64,
    #[command(flatten)]
    pub search: SearchArgs,
    /// Resource types that may live in the shared space (`/fhir/shared`),
    /// which tenants read beside their own.
    #[arg(
        long,
        env = "FHIRSTREAM_SHAREABLE_TYPES",
        value_delimiter = ',',
        default_value = "Practitioner,PractitionerRole,Organization,Location,HealthcareService,Endpoint,Medication,Substance,CodeSystem,ValueSet,ConceptMap,NamingSystem,StructureDefinition,Questionnaire"
    )]
    pub shareable_types: Vec<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// PostgreSQL connections of this process.
    #[arg(long, env = "FHIRSTREAM_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub export: ExportArgs,
}

/// Search limits and paging.
#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// Page size when a search does not ask with `_count`.
    #[arg(long, env = "FHIRSTREAM_SEARCH_DEFAULT_COUNT", default_value_t = 50)]
    pub search_default_count: u32,
    /// Largest page size; a larger `_count` is capped to it.
    #[arg(long, env = "FHIRSTREAM_SEARCH_MAX_COUNT", default_value_t = 1000)]
    pub search_max_count: u32,
    /// Most `_include`/`_revinclude` resources added to one page.
    #[arg(long, env = "FHIRSTREAM_SEARCH_MAX_INCLUDED", default_value_t = 1000)]
    pub search_max_included: u32,
    /// Secret that seals paging cursors (set the same one on every replica
    /// behind a load balancer; default: a random one per process).
    #[arg(long, env = "FHIRSTREAM_CURSOR_SECRET", hide_env_values = true)]
    pub cursor_secret: Option<String>,
}

impl Default for SearchArgs {
    fn default() -> Self {
        Self { search_default_count: 50, search_max_count: 1000, search_max_included: 1000, cursor_secret: None }
    }
}

/// Bounds on what one request may cost before (and while) it is handled.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Longest accepted request target (path and query), in bytes; longer
    /// ones are answered 414 (send long searches as POST `_search`).
    #[arg(long, env = "FHIRSTREAM_MAX_URL_BYTES", default_value_t = 16 * 1024)]
    pub max_url_bytes: usize,
    /// Most bytes of request headers (names and values); more is 431.
    #[arg(long, env = "FHIRSTREAM_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Requests handled at once; beyond that new ones are shed at once with
    /// 503 and `Retry-After` instead of queueing (0: no limit). `/health`,
    /// `/ready` and `/metrics` are never shed.
    #[arg(long, env = "FHIRSTREAM_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,
    /// How long a request body may take to arrive, in ms; a slower client
    /// gets 408 and its connection's buffers are released.
    #[arg(long, env = "FHIRSTREAM_BODY_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,
    /// How long a client may take to send a request's headers, in ms
    /// (slowloris); also how long an idle keep-alive connection is kept.
    #[arg(long, env = "FHIRSTREAM_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Connections open at once; beyond that new ones wait to be accepted
    /// (0: no limit).
    #[arg(long, env = "FHIRSTREAM_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Most bytes of event payloads the projector holds and applies in one
    /// batch, beside `--projector-batch` events (at least one event always).
    #[arg(long, env = "FHIRSTREAM_PROJECTOR_BATCH_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub projector_batch_bytes: usize,
    /// Atomic batches (transactions, shareable-type and conditional
    /// creates) this process keeps open at once (JetStream allows about 50
    /// per stream, shared by every node).
    #[arg(long, env = "FHIRSTREAM_MAX_OPEN_BATCHES", default_value_t = 24)]
    pub max_open_batches: usize,
    /// Atomic batches one tenant keeps open at once on this process, so one
    /// tenant's transactions cannot take every slot.
    #[arg(long, env = "FHIRSTREAM_TENANT_OPEN_BATCHES", default_value_t = 8)]
    pub tenant_open_batches: usize,
    /// Longest wait for a batch slot, in ms; then 503 with `Retry-After`.
    #[arg(long, env = "FHIRSTREAM_BATCH_SLOT_WAIT_MS", default_value_t = 2000)]
    pub batch_slot_wait_ms: u64,
    /// Requests one tenant has in flight on this node; more are 429 with
    /// `Retry-After` (0: no per-tenant cap).
    #[arg(long, env = "FHIRSTREAM_TENANT_MAX_CONCURRENT_REQUESTS", default_value_t = 256)]
    pub tenant_max_concurrent_requests: usize,
    /// Change feeds (`$events`) one tenant keeps open on this node (of 512).
    #[arg(long, env = "FHIRSTREAM_TENANT_MAX_FEEDS", default_value_t = 64)]
    pub tenant_max_feeds: usize,
    /// `$export` jobs one tenant runs at once on this node (of 4): half the
    /// node, so at least two tenants always export side by side.
    #[arg(long, env = "FHIRSTREAM_TENANT_MAX_EXPORTS", default_value_t = 2)]
    pub tenant_max_exports: usize,
    /// Statement timeout of every read-model query (reads, history and
    /// `_at`, conditional lookups, search and includes, export), in ms, so
    /// no request can hold a reader connection longer.
    #[arg(long, env = "FHIRSTREAM_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub read_timeout_ms: u64,
    /// Most search index rows one resource may have; a write exceeding it
    /// is refused with 413, so no single resource can hold up the shared
    /// projector (0: no cap).
    #[arg(long, env = "FHIRSTREAM_MAX_INDEX_ROWS", default_value_t = 5_000)]
    pub max_index_rows: usize,
    /// Per-tenant usage metrics in this many hashed buckets (label
    /// `bucket`, never a tenant name; 0: off). See `fhirstream tenants
    /// bucket` for a tenant's bucket.
    #[arg(long, env = "FHIRSTREAM_TENANT_USAGE_BUCKETS", default_value_t = 0)]
    pub tenant_usage_buckets: u32,
}

impl LimitArgs {
    /// How atomic batches are shared between tenants.
    pub fn batch_limits(&self) -> command::BatchLimits {
        command::BatchLimits {
            global: self.max_open_batches,
            per_tenant: self.tenant_open_batches,
            wait: Duration::from_millis(self.batch_slot_wait_ms),
        }
    }
}

impl Default for LimitArgs {
    fn default() -> Self {
        Self {
            max_url_bytes: 16 * 1024,
            max_header_bytes: 64 * 1024,
            max_concurrent_requests: 1024,
            body_read_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            max_connections: 4096,
            projector_batch_bytes: 16 * 1024 * 1024,
            max_open_batches: 24,
            tenant_open_batches: 8,
            batch_slot_wait_ms: 2000,
            tenant_max_concurrent_requests: 256,
            tenant_max_feeds: 64,
            tenant_max_exports: 2,
            read_timeout_ms: 30_000,
            max_index_rows: 5_000,
            tenant_usage_buckets: 0,
        }
    }
}

/// How callers are authenticated.
#[derive(Debug, Clone, Args, Default)]
pub struct AuthArgs {
    /// Accept every request without a token (local development and tests
    /// only; the server warns loudly while this is on).
    #[arg(long, env = "FHIRSTREAM_AUTH_DISABLED")]
    pub auth_disabled: bool,
    /// Shared secret for HS256 tokens.
    #[arg(long, env = "FHIRSTREAM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM file with the public key for RS256 or ES256 tokens.
    #[arg(long, env = "FHIRSTREAM_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<std::path::PathBuf>,
    /// Required `iss` claim, if set.
    #[arg(long, env = "FHIRSTREAM_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, if set.
    #[arg(long, env = "FHIRSTREAM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// SMART discovery: the identity provider's authorization endpoint
    /// (served in `.well-known/smart-configuration` and the
    /// CapabilityStatement's `rest.security`; fhirstream stays a resource
    /// server).
    #[arg(long, env = "FHIRSTREAM_SMART_AUTHORIZE_URL")]
    pub smart_authorize_url: Option<String>,
    /// SMART discovery: the identity provider's token endpoint. Discovery is
    /// served once this is set.
    #[arg(long, env = "FHIRSTREAM_SMART_TOKEN_URL")]
    pub smart_token_url: Option<String>,
    /// SMART discovery: the capabilities to advertise, comma-separated
    /// (those of the identity provider, e.g. client-confidential-asymmetric).
    #[arg(long, env = "FHIRSTREAM_SMART_CAPABILITIES", value_delimiter = ',')]
    pub smart_capabilities: Vec<String>,
}

impl ServeArgs {
    pub fn read_your_writes_timeout(&self) -> Duration {
        Duration::from_millis(self.read_your_writes_timeout_ms)
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

#[derive(Debug, Args)]
pub struct TenantsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The projector whose tenant projection a deletion waits for.
    #[arg(long, global = true, env = "FHIRSTREAM_PROJECTOR_NAME", default_value = "main")]
    pub projector_name: String,
    #[command(subcommand)]
    pub action: TenantAction,
}

#[derive(Debug, Subcommand)]
pub enum TenantAction {
    /// Create a tenant.
    Create {
        /// Tenant name (a-z, 0-9, '-'; at most 63 characters).
        id: String,
        /// Display name (default: the tenant name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List tenants.
    List,
    /// Show one tenant's name and configuration (JSON).
    Show { id: String },
    /// Replace a tenant's name and configuration.
    Configure {
        id: String,
        #[arg(long)]
        name: String,
        /// The configuration as JSON, e.g. '{"allowed_types": ["Patient"]}'.
        #[arg(long, default_value = "{}")]
        config: String,
    },
    /// Delete a tenant: purge its events and rows, then prove none are left.
    Delete { id: String },
}

/// How writes reach read-your-writes (`--read-your-writes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadYourWritesMode {
    /// The write applies its own events with the projector's batch function.
    Direct,
    /// The write waits until the projector has applied its events.
    Projector,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(args: &[&str]) -> Result<ReplayArgs, clap::Error> {
        let argv = ["fhirstream", "replay", "--tenant", "acme"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Replay(r) => Ok(r),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn a_point_in_time_replay_must_name_a_snapshot_to_build() {
        let err = replay(&["--until", "2026-01-01T00:00:00Z"]).unwrap_err().to_string();
        assert!(err.contains("--into"), "{err}");
        assert!(replay(&["--until-seq", "5"]).is_err());
        let r = replay(&["--until", "2026-01-01T01:00:00+01:00", "--into", "jan"]).unwrap();
        assert_eq!(r.until.unwrap().to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert!(replay(&["--until", "yesterday", "--into", "x"]).is_err());
        assert!(replay(&["--until", "2026-01-01T00:00:00Z", "--until-seq", "3", "--into", "x"]).is_err());
        assert!(replay(&[]).unwrap().into.is_none(), "a plain replay rebuilds the live model");
    }
}

/// Where `$export` jobs keep their state and files.
#[derive(Debug, Clone, Default, Args)]
pub struct ExportArgs {
    /// Directory of `$export` jobs and their NDJSON files (default: a
    /// `fhirstream-exports` directory in the OS temp dir). Nodes behind one
    /// load balancer must share it.
    #[arg(long, env = "FHIRSTREAM_EXPORT_DIR")]
    pub export_dir: Option<std::path::PathBuf>,
    /// How long a finished export's files are kept, in seconds; then they
    /// are removed (0: kept until deleted).
    #[arg(long, env = "FHIRSTREAM_EXPORT_RETENTION_SECS", default_value_t = 86_400)]
    pub export_retention_secs: u64,
}

impl ExportArgs {
    pub fn dir(&self) -> std::path::PathBuf {
        self.export_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("fhirstream-exports"))
    }
}

#[derive(Debug, Args)]
pub struct ExportCliArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Tenant to export.
    #[arg(long)]
    pub tenant: String,
    /// Directory to write `{Type}.ndjson` into (created if missing).
    pub dir: std::path::PathBuf,
    /// Only these resource types (comma-separated or repeated), like `_type`.
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Only resources changed after this instant (RFC 3339), like `_since`.
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Export the Patient compartment only, like `Patient/$export`.
    #[arg(long)]
    pub patient: bool,
    /// No progress bar (for logs and tests).
    #[arg(long)]
    pub quiet: bool,
}
