//! Test support: real NATS and PostgreSQL for every test app.
//!
//! Each `TestApp` gets its own nats-server process (a fresh JetStream store
//! in a temporary directory, on a free loopback port) and its own database,
//! so tests never share a stream, a projector or a checkpoint, and run in
//! parallel under nextest or cargo test alike. `make test` provides the
//! nats-server binary (`FHIRSTREAM_TEST_NATS_SERVER`) and the PostgreSQL
//! admin URL (`FHIRSTREAM_PG_ADMIN_URL`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fhirstream::config::{ConnArgs, Role, ServeArgs};
use fhirstream::startup::App;
use serde_json::{Value, json};
use sqlx::{Connection as _, Executor as _};

pub fn nats_server_bin() -> String {
    std::env::var("FHIRSTREAM_TEST_NATS_SERVER").unwrap_or_else(|_| {
        panic!(
            "FHIRSTREAM_TEST_NATS_SERVER is not set: run the tests with `make test`, which provides nats-server >= 2.12"
        )
    })
}

pub fn pg_admin_url() -> String {
    std::env::var("FHIRSTREAM_PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

/// A private nats-server with JetStream.
pub struct TestNats {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    dir: tempfile::TempDir,
    /// The configuration file, when started from one.
    config: Option<std::path::PathBuf>,
}

impl TestNats {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for JetStream");
        let port = free_port();
        let mut nats = Self { child: None, port, url: format!("nats://127.0.0.1:{port}"), dir, config: None };
        nats.restart();
        nats
    }

    /// Starts from a configuration file holding `body` (for example an
    /// `include` of generated users) plus the port and the JetStream store;
    /// `files` are written next to it first, so `include ./name` finds them.
    pub fn start_with_config(files: &[(&str, &str)], body: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for JetStream");
        let port = free_port();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).expect("write a file beside the NATS config");
        }
        let store = dir.path().join("jetstream");
        let config = dir.path().join("server.conf");
        let text =
            format!("listen: \"127.0.0.1:{port}\"\nmax_payload: 20MB\njetstream {{ store_dir: {store:?} }}\n{body}\n");
        std::fs::write(&config, text).expect("write the NATS config");
        let mut nats = Self { child: None, port, url: format!("nats://127.0.0.1:{port}"), dir, config: Some(config) };
        nats.restart();
        nats
    }

    /// The directory of the store (and of the configuration, if any).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Makes a server started from a configuration file read it again.
    pub fn reload(&self) {
        let pid = self.child.as_ref().expect("a running nats-server").id();
        let status = Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("run kill -HUP");
        assert!(status.success(), "kill -HUP {pid}");
    }

    /// Starts (again) on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new(nats_server_bin());
        match &self.config {
            Some(config) => command.arg("-c").arg(config),
            None => {
                // As scripts/ensure-nats.sh provisions it: 16 MiB resources fit.
                let limits = self.dir.path().join("limits.conf");
                std::fs::write(&limits, "max_payload: 20MB\n").expect("write the NATS limits");
                command.arg("-c").arg(limits);
                command.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"]).arg(self.dir.path())
            }
        };
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not come up on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url).await.expect("connect to test NATS")
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh database on the shared PostgreSQL (dropped by the next
/// `make test`, since a test process may be killed before it can clean up).
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let admin = pg_admin_url();
        let name = format!("fhirstream_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to the PostgreSQL admin URL");
        conn.execute(sqlx::AssertSqlSafe(format!("create database {name}"))).await.expect("create a test database");
        let base = admin.split('?').next().unwrap_or(&admin);
        let server = base.rsplit_once('/').map(|(s, _)| s).unwrap_or(base);
        Self { url: format!("{server}/{name}"), name }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.expect("connect to the test database")
    }
}

/// Configuration for a test server on a free port.
pub fn serve_args(nats: &TestNats, db: &TestDb) -> ServeArgs {
    ServeArgs {
        conn: ConnArgs {
            nats_url: nats.url.clone(),
            database_url: db.url.clone(),
            stream: "FHIR".into(),
            tenant_stream: "FHIRSTREAM_TENANTS".into(),
            stream_replicas: 1,
            publish_timeout_ms: 5000,
        },
        listen: "127.0.0.1:0".parse().expect("listen addr"),
        ops_listen: None,
        base_url: None,
        roles: vec![Role::Command, Role::Projector, Role::Query],
        max_body_bytes: 16 * 1024 * 1024,
        max_bundle_entries: 1000,
        read_your_writes_timeout_ms: 5000,
        read_your_writes: fhirstream::config::ReadYourWritesMode::Direct,
        unsafe_skip_conformance: false,
        projector_name: "main".into(),
        projector_batch: 500,
        projector_lanes: 4,
        db_pool_size: 8,
        ready_max_lag_events: 10_000,
        search: Default::default(),
        shareable_types: ["Practitioner", "PractitionerRole", "Organization", "Location", "Medication"]
            .map(String::from)
            .to_vec(),
        limits: Default::default(),
        auth: fhirstream::config::AuthArgs { auth_disabled: true, ..Default::default() },
        export: Default::default(),
    }
}

/// The HS256 secret of secured test apps.
pub const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

/// A running fhirstream with its own NATS and database.
pub struct TestApp {
    pub base: String,
    /// Bearer token sent by the helper methods (secured apps only).
    pub admin_token: Option<String>,
    pub http: reqwest::Client,
    pub nats: TestNats,
    pub db: TestDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// An app that requires HS256 tokens signed with [`SECRET`]; its helper
    /// methods use a token for every tenant with every scope.
    pub async fn spawn_secure() -> Self {
        Self::spawn_secure_with(|_| {}).await
    }

    /// A secured app (see [`TestApp::spawn_secure`]) with more settings.
    pub async fn spawn_secure_with(configure: impl FnOnce(&mut ServeArgs)) -> Self {
        let mut app = Self::spawn_with(|cfg| {
            cfg.auth = fhirstream::config::AuthArgs { jwt_secret: Some(SECRET.into()), ..Default::default() };
            configure(cfg);
        })
        .await;
        app.admin_token = Some(token(&["*"], "system/*.* fhirstream/admin"));
        app
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut ServeArgs)) -> Self {
        Self::spawn_on(TestNats::start(), configure).await
    }

    /// An app on a NATS server of the test's own (e.g. other limits).
    pub async fn spawn_on(nats: TestNats, configure: impl FnOnce(&mut ServeArgs)) -> Self {
        fhirstream::telemetry::init(&fhirstream::config::LogArgs { log: "warn".into(), log_json: false });
        let db = TestDb::create().await;
        let mut cfg = serve_args(&nats, &db);
        configure(&mut cfg);
        let app = App::build(cfg).await.expect("build the app");
        let base = app.base_url().to_owned();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self { base, admin_token: None, http: reqwest::Client::new(), nats, db, stop: Some(tx), handle: Some(handle) }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn fhir(&self, tenant: &str, path: &str) -> String {
        format!("{}/fhir/{tenant}/{path}", self.base)
    }

    /// Creates a tenant with a unique name and returns the name.
    pub async fn tenant(&self, prefix: &str) -> String {
        let id = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let res = self
            .authed(self.http.post(self.url("/admin/tenants")))
            .json(&json!({ "id": id, "name": format!("Test tenant {id}") }))
            .send()
            .await
            .expect("POST /admin/tenants");
        assert_eq!(res.status(), 201, "creating tenant {id}: {}", res.text().await.unwrap_or_default());
        id
    }

    /// Creates a tenant by appending its event to the stream directly, as
    /// `fhirstream tenants create` does (for nodes without the command role).
    pub async fn tenant_via_stream(&self, prefix: &str) -> String {
        let id = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let conn = serve_args(&self.nats, &self.db).conn;
        let store = fhirstream::startup::open_store(&conn, self.nats.client().await).await.expect("open the store");
        let tenant = schemas::TenantId::parse_new(&id).expect("tenant name");
        command::tenants::create(&store, tenant, id.clone(), Default::default(), schemas::Actor::default())
            .await
            .expect("create the tenant on the stream");
        id
    }

    /// Adds the app's token, if it has one.
    pub fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin_token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn post(&self, tenant: &str, rtype: &str, body: &Value) -> reqwest::Response {
        self.authed(self.http.post(self.fhir(tenant, rtype)))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST")
    }

    pub async fn put(&self, tenant: &str, path: &str, body: &Value) -> reqwest::Response {
        self.authed(self.http.put(self.fhir(tenant, path)))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await
            .expect("PUT")
    }

    pub async fn get(&self, tenant: &str, path: &str) -> reqwest::Response {
        self.authed(self.http.get(self.fhir(tenant, path))).send().await.expect("GET")
    }

    /// Number of messages the resource stream holds on `filter`.
    /// A Patient event as the command side would write it, published
    /// straight to JetStream: what a buggy or older writer (one from before
    /// validation, say) could have left on the stream. Returns its sequence.
    /// Publishes a version-1 create of `Patient/{id}` straight to the
    /// stream, with the write headers fhirstream sets, so readers take it
    /// as genuine: for events the HTTP write path would refuse.
    pub async fn publish_raw(&self, tenant: &str, id: &str, resource: &str) -> u64 {
        let event_id = uuid::Uuid::now_v7();
        let event = format!(
            r#"{{"schema":"fhirstream.resource-event/1","event_id":"{event_id}","tenant":"{tenant}","resource_type":"Patient",
        "id":"{id}","version":1,"op":"create","at":"2026-01-01T00:00:00.000Z","actor":{{"sub":"test"}},
        "commit":{{"id":"{}","index":0,"count":1}},"resource":{resource}}}"#,
            uuid::Uuid::now_v7()
        );
        let headers = [
            ("Nats-Msg-Id", event_id.to_string()),
            ("Fhirstream-Version", "1".into()),
            ("Fhirstream-Op", "create".into()),
        ];
        self.publish_forged(&format!("fhir.{tenant}.Patient.{id}"), &headers, event.as_bytes()).await
    }

    /// Publishes anything, with any headers, on any subject of the streams
    /// (as a hostile NATS user, or a JetStream reply sent to a forged reply
    /// subject, could); returns its stream sequence.
    pub async fn publish_forged(&self, subject: &str, headers: &[(&str, String)], payload: &[u8]) -> u64 {
        let js = async_nats::jetstream::new(self.nats.client().await);
        let mut h = async_nats::HeaderMap::new();
        for (name, value) in headers {
            h.insert(*name, value.as_str());
        }
        let payload = bytes::Bytes::copy_from_slice(payload);
        let ack = js.publish_with_headers(subject.to_owned(), h, payload).await.unwrap().await.unwrap();
        ack.sequence
    }

    pub async fn stream_count(&self, filter: &str) -> u64 {
        let js = async_nats::jetstream::new(self.nats.client().await);
        let stream = js.get_stream("FHIR").await.expect("resource stream");
        let info = stream.info_with_subjects(filter).await.expect("stream subjects");
        use futures::TryStreamExt as _;
        let counts: Vec<(String, usize)> = info.try_collect().await.expect("subject counts");
        counts.iter().map(|(_, n)| *n as u64).sum()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Checks an event against the committed JSON Schema of its envelope
/// (resource events and identifier claims share the stream).
pub fn validate_event(event: &Value) {
    let errors = event_schema_errors(event);
    assert!(errors.is_empty(), "event does not match its schema: {errors:?}\n{event}");
}

/// Why an event does not match its envelope's JSON Schema (empty: it does).
pub fn event_schema_errors(event: &Value) -> Vec<String> {
    static VALIDATORS: std::sync::OnceLock<(jsonschema::Validator, jsonschema::Validator)> = std::sync::OnceLock::new();
    let (resource, tenant) = VALIDATORS.get_or_init(|| {
        let compile = |text: &str| {
            let schema: Value = serde_json::from_str(text).expect("schema is JSON");
            jsonschema::options().should_validate_formats(true).build(&schema).expect("schema compiles")
        };
        (compile(schemas::event::RESOURCE_EVENT_JSON_SCHEMA), compile(schemas::event::TENANT_EVENT_JSON_SCHEMA))
    });
    let validator = match event["schema"].as_str() {
        Some("fhirstream.resource-event/1") => resource,
        Some("fhirstream.tenant-event/1") => tenant,
        Some("fhirstream.identifier-claim/1" | "fhirstream.id-claim/1") => return Vec::new(),
        other => return vec![format!("unknown schema {other:?}")],
    };
    validator.iter_errors(event).map(|e| e.to_string()).collect()
}

/// Status, headers (minus `date`) and body of a response: what a client
/// could learn from it, for comparing two answers byte for byte.
pub async fn fingerprint(res: reqwest::Response) -> (u16, Vec<(String, String)>, String) {
    let status = res.status().as_u16();
    let mut headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .filter(|(k, _)| *k != "date")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    headers.sort();
    (status, headers, res.text().await.unwrap())
}

/// A token signed with [`SECRET`], valid for an hour.
pub fn token(tenants: &[&str], scope: &str) -> String {
    let claims = fhirstream::http::auth::TokenClaims::new("tester", tenants, scope, Duration::from_secs(3600));
    fhirstream::http::auth::mint_hs256(SECRET, &claims).expect("mint a token")
}

/// Asserts a response is an OperationOutcome with the given status, and
/// returns its first issue's diagnostics.
pub async fn assert_outcome(res: reqwest::Response, status: u16) -> String {
    let got = res.status().as_u16();
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body: Value = res.json().await.expect("an OperationOutcome body");
    assert_eq!(got, status, "status; body {body}");
    assert!(ct.starts_with("application/fhir+json"), "content type {ct}");
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    body["issue"][0]["diagnostics"].as_str().unwrap_or_default().to_owned()
}

/// What a tenant's read model must hold: every (type, id, version) and each
/// resource's current (version, deleted).
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Fold {
    pub versions: std::collections::BTreeSet<(String, String, i64)>,
    pub current: std::collections::BTreeMap<(String, String), (i64, bool)>,
}

impl Fold {
    /// Asserts two folds are equal, printing only the differences.
    pub fn assert_same_as(&self, expected: &Fold) {
        let missing: Vec<_> = expected.versions.difference(&self.versions).take(10).collect();
        let extra: Vec<_> = self.versions.difference(&expected.versions).take(10).collect();
        assert!(missing.is_empty() && extra.is_empty(), "versions missing {missing:?}, extra {extra:?}");
        let wrong: Vec<_> =
            expected.current.iter().filter(|(k, v)| self.current.get(*k) != Some(*v)).take(10).collect();
        assert!(wrong.is_empty(), "current rows differ: {wrong:?}");
        assert_eq!(self.current.len(), expected.current.len(), "current row count");
    }
}

impl TestApp {
    /// Every event on `filter` in the resource stream, in stream order.
    pub async fn events(&self, filter: &str) -> Vec<Value> {
        self.events_in("FHIR", filter).await
    }

    /// Every event on `filter` in `stream`, in stream order, each checked
    /// against its envelope's schema.
    pub async fn events_in(&self, stream: &str, filter: &str) -> Vec<Value> {
        use futures::StreamExt as _;
        let js = async_nats::jetstream::new(self.nats.client().await);
        let stream = js.get_stream(stream).await.expect("stream");
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: filter.to_owned(),
                ..Default::default()
            })
            .await
            .expect("ordered consumer");
        let mut pending = consumer.cached_info().num_pending;
        let mut out = Vec::new();
        if pending == 0 {
            return out;
        }
        let mut messages = consumer.messages().await.expect("messages");
        while pending > 0 {
            let msg = messages.next().await.expect("a message").expect("a good message");
            pending = msg.info().expect("info").pending;
            let event: Value = serde_json::from_slice(&msg.payload).expect("JSON event");
            validate_event(&event);
            out.push(event);
        }
        out
    }

    /// Folds a tenant's events straight from the stream, independently of
    /// the projector's code.
    pub async fn fold_stream(&self, tenant: &str) -> Fold {
        use futures::StreamExt as _;
        let js = async_nats::jetstream::new(self.nats.client().await);
        let stream = js.get_stream("FHIR").await.expect("resource stream");
        let mut fold = Fold::default();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: format!("fhir.{tenant}.>"),
                ..Default::default()
            })
            .await
            .expect("ordered consumer");
        let mut pending = consumer.cached_info().num_pending;
        if pending == 0 {
            return fold;
        }
        let mut messages = consumer.messages().await.expect("messages");
        while pending > 0 {
            let msg = messages.next().await.expect("a message").expect("a good message");
            pending = msg.info().expect("info").pending;
            let ev: Value = serde_json::from_slice(&msg.payload).expect("envelope");
            validate_event(&ev);
            let key = (ev["resource_type"].as_str().unwrap().to_owned(), ev["id"].as_str().unwrap().to_owned());
            let version = ev["version"].as_i64().unwrap();
            fold.versions.insert((key.0.clone(), key.1.clone(), version));
            fold.current.insert(key, (version, ev["op"] == "delete"));
        }
        fold
    }

    /// The same shape read from the tenant's rows in PostgreSQL.
    pub async fn fold_read_model(&self, tenant: &str) -> Fold {
        let pool = self.db.pool().await;
        let mut fold = Fold::default();
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("select resource_type, id, version from resource_versions where tenant_id = $1")
                .bind(tenant)
                .fetch_all(&pool)
                .await
                .expect("versions");
        let n = rows.len();
        fold.versions.extend(rows);
        assert_eq!(fold.versions.len(), n, "no version row twice");
        let rows: Vec<(String, String, i64, bool)> =
            sqlx::query_as("select resource_type, id, version, deleted from resources where tenant_id = $1")
                .bind(tenant)
                .fetch_all(&pool)
                .await
                .expect("current");
        for (rt, id, v, d) in rows {
            fold.current.insert((rt, id), (v, d));
        }
        fold
    }

    /// The projector's checkpoint and the stream's last sequence.
    pub async fn projection_lag(&self) -> (u64, u64) {
        let pool = self.db.pool().await;
        let checkpoint: Option<i64> =
            sqlx::query_scalar("select seq from projector_checkpoints where projector = 'main'")
                .fetch_optional(&pool)
                .await
                .expect("checkpoint");
        let js = async_nats::jetstream::new(self.nats.client().await);
        let mut stream = js.get_stream("FHIR").await.expect("resource stream");
        let last = stream.info().await.expect("stream info").state.last_sequence;
        (checkpoint.unwrap_or(0) as u64, last)
    }

    /// Whether the projector has applied every resource event: its consumer
    /// has nothing undelivered or unacknowledged (identifier claims, which
    /// it never sees, do not count).
    pub async fn caught_up(&self) -> bool {
        let js = async_nats::jetstream::new(self.nats.client().await);
        let mut stream = js.get_stream("FHIR").await.expect("resource stream");
        let messages = stream.info().await.expect("stream info").state.messages;
        match stream.consumer_info("projector-main").await {
            // A consumer just created can report nothing pending before it
            // has counted (seen under load with filter subjects): it has
            // caught up only once it delivered something, unless there is
            // nothing to deliver.
            Ok(info) => {
                info.num_pending == 0
                    && info.num_ack_pending == 0
                    && (info.delivered.stream_sequence > 0 || messages == 0)
            }
            Err(_) => false,
        }
    }

    /// Waits (bounded) until the projector has applied the whole stream.
    pub async fn wait_caught_up(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.caught_up().await {
            assert!(Instant::now() < deadline, "projector still behind: {:?}", self.projection_lag().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
