//! `fhirstream nats-auth` against a real nats-server: a tenant's analytics
//! user reads exactly its own events, and every way to read another
//! tenant's is refused by the server — as a permission violation with the
//! request left unanswered, or as a JetStream error — with nothing received.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, pull};
use bytes::Bytes;
use fhirstream::config::ConnArgs;
use futures::StreamExt as _;
use serde_json::{Value, json};
use support::TestNats;

/// How long a refused request is given to be answered anyway.
const REFUSED_WAIT: Duration = Duration::from_millis(600);

/// Runs `fhirstream nats-auth` with `args` and returns the configuration.
fn nats_auth(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .env_clear()
        .args(["nats-auth", "--bcrypt-cost", "4"])
        .args(args)
        .output()
        .expect("run fhirstream nats-auth");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fhirstream nats-auth {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).expect("UTF-8 config")
}

/// A server started with the generated users, a full-access connection and
/// events of tenants `a` and `b` and of the shared space.
struct Fixture {
    nats: TestNats,
    passwords: BTreeMap<String, String>,
    passwords_file: std::path::PathBuf,
    admin: async_nats::Client,
    _dir: tempfile::TempDir,
}

/// The events written: subject per tenant, in stream order.
const TENANT_A: [&str; 3] = ["fhir.a.Patient.p1", "fhir.a.Observation.o1", "fhir.a.Patient.p1"];
const TENANT_B: [&str; 3] = ["fhir.b.Patient.p1", "fhir.b.Patient.secret", "fhir.b.Observation.o1"];
const SHARED: &str = "fhir.shared.Organization.org1";

impl Fixture {
    async fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let passwords_file = dir.path().join("passwords");
        let pw = passwords_file.to_str().unwrap();
        let mut args = vec!["--tenant", "a", "--tenant", "b", "--passwords", pw, "--consumer", "analytics,patients"];
        args.extend_from_slice(extra);
        let conf = nats_auth(&args);
        let nats = TestNats::start_with_config(&[("fhirstream-auth.conf", &conf)], "include ./fhirstream-auth.conf");
        let passwords = read_passwords(&passwords_file);
        let conn = conn_args(&nats, &passwords["fhirstream"]);
        let admin = fhirstream::startup::connect_nats(&conn).await.expect("fhirstream logs in with the URL's password");
        fhirstream::startup::open_store(&conn, admin.clone()).await.expect("fhirstream creates its streams");
        let fixture = Self { nats, passwords, passwords_file, admin, _dir: dir };
        for (a, b) in TENANT_A.iter().zip(TENANT_B) {
            fixture.publish(a).await;
            fixture.publish(b).await;
        }
        fixture.publish(SHARED).await;
        fixture
    }

    /// Appends an event on `subject` as fhirstream would.
    async fn publish(&self, subject: &str) {
        let js = async_nats::jetstream::new(self.admin.clone());
        let body = json!({"subject": subject, "tenant": subject.split('.').nth(1)});
        js.publish(subject.to_owned(), body.to_string().into()).await.unwrap().await.unwrap();
    }

    /// A tenant's analytics user, with its own inbox prefix or (`None`) the default one.
    async fn analytics(&self, tenant: &str, inbox: Option<&str>) -> Client {
        let user = format!("analytics-{tenant}");
        Client::connect(&self.nats, &user, &self.passwords[&user], inbox).await
    }
}

fn conn_args(nats: &TestNats, password: &str) -> ConnArgs {
    ConnArgs {
        nats_url: format!("nats://fhirstream:{password}@127.0.0.1:{}", nats.port),
        database_url: String::new(),
        stream: "FHIR".into(),
        tenant_stream: "FHIRSTREAM_TENANTS".into(),
        stream_replicas: 1,
        publish_timeout_ms: 5000,
    }
}

fn read_passwords(path: &std::path::Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).expect("the passwords file");
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(user, password)| (user.to_owned(), password.to_owned()))
        .collect()
}

/// A connection that records the errors the server sends it.
struct Client {
    nats: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Client {
    async fn connect(nats: &TestNats, user: &str, password: &str, inbox: Option<&str>) -> Self {
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        let mut options = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
            .request_timeout(Some(REFUSED_WAIT))
            .event_callback(move |event| {
                let sink = sink.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        sink.lock().unwrap().push(e.to_string());
                    }
                }
            });
        if let Some(prefix) = inbox {
            options = options.custom_inbox_prefix(prefix);
        }
        let nats = options.connect(&nats.url).await.unwrap_or_else(|e| panic!("{user} logs in: {e}"));
        Self { nats, errors }
    }

    fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.nats.clone())
    }

    /// Waits until the server has reported a permission violation for
    /// `what` ("Publish" or "Subscription") on exactly `subject`.
    async fn assert_violation(&self, what: &str, subject: &str) {
        self.assert_violation_starting(what, &format!("{subject}\"")).await;
    }

    /// The same for a subject that starts with `start` (random inboxes).
    async fn assert_violation_starting(&self, what: &str, start: &str) {
        let expected = format!("Permissions Violation for {what} to \"{start}");
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if self.errors.lock().unwrap().iter().any(|e| e.contains(&expected)) {
                return;
            }
            assert!(Instant::now() < deadline, "no violation {expected:?}; errors: {:?}", self.errors.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A request the server must drop as a permission violation: it is
    /// never answered, and the server says why.
    async fn assert_publish_refused(&self, subject: &str, body: Value) {
        let res = self.nats.request(subject.to_owned(), Bytes::from(body.to_string())).await;
        match res {
            Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => {}
            Err(e) => panic!("{subject}: expected no answer, got {e}"),
            Ok(msg) => panic!("{subject}: answered with {:?}", String::from_utf8_lossy(&msg.payload)),
        }
        self.assert_violation("Publish", subject).await;
    }

    /// A JetStream API request that is allowed through but refused by
    /// JetStream itself; returns the error code.
    async fn js_error(&self, subject: &str, body: Value) -> u64 {
        let msg = self.nats.request(subject.to_owned(), Bytes::from(body.to_string())).await.unwrap();
        let reply: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert!(reply["error"].is_object(), "{subject}: expected a JetStream error, got {reply}");
        reply["error"]["err_code"].as_u64().unwrap()
    }

    /// A subscription the server refuses: reported, and nothing arrives on
    /// it while `fixture` publishes to what it would match.
    async fn assert_subscription_refused(&self, subject: &str, fixture: &Fixture, publish: &str) {
        let mut sub = self.nats.subscribe(subject.to_owned()).await.unwrap();
        self.assert_violation("Subscription", subject).await;
        fixture.publish(publish).await;
        let got = tokio::time::timeout(REFUSED_WAIT, sub.next()).await;
        assert!(got.is_err(), "{subject}: received {:?}", got.ok().flatten().map(|m| m.subject));
    }
}

/// A pull consumer config on the analytics user's consumer `name`.
fn consumer(name: &str, filter: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.into()),
        filter_subject: filter.into(),
        ack_policy: AckPolicy::Explicit,
        ..Default::default()
    }
}

/// Fetches everything the consumer has (acked), as subjects.
async fn drain(consumer: &async_nats::jetstream::consumer::PullConsumer) -> Vec<String> {
    let mut batch = consumer.fetch().max_messages(100).expires(Duration::from_millis(300)).messages().await.unwrap();
    let mut subjects = Vec::new();
    while let Some(msg) = batch.next().await {
        let msg = msg.unwrap();
        msg.double_ack().await.expect("the ack is accepted");
        subjects.push(msg.subject.to_string());
    }
    subjects
}

fn create_body(name: &str, config: Value) -> Value {
    let mut config = config;
    config["durable_name"] = json!(name);
    config["ack_policy"] = json!("explicit");
    json!({"stream_name": "FHIR", "config": config})
}

#[tokio::test]
async fn a_tenant_user_reads_exactly_its_own_events_through_its_named_consumer() {
    let f = Fixture::start(&[]).await;
    let a = f.analytics("a", Some("_INBOX_a")).await;
    let js = a.jetstream();

    let mine = js.create_consumer_on_stream(consumer("a_analytics", "fhir.a.>"), "FHIR").await.unwrap();
    assert_eq!(drain(&mine).await, TENANT_A);
    let mut mine = js.get_consumer_from_stream::<pull::Config, _, _>("a_analytics", "FHIR").await.unwrap();
    let info = mine.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "every event was delivered and acked");

    // A narrower filter inside the tenant is allowed too.
    let patients = js.create_consumer_on_stream(consumer("a_patients", "fhir.a.Patient.*"), "FHIR").await.unwrap();
    assert_eq!(drain(&patients).await, ["fhir.a.Patient.p1", "fhir.a.Patient.p1"]);

    // New events arrive; another tenant's never do.
    f.publish("fhir.b.Patient.later").await;
    f.publish("fhir.a.Patient.later").await;
    assert_eq!(drain(&mine).await, ["fhir.a.Patient.later"]);

    // Direct get of the tenant's own subjects works, with the last version.
    let got = a.nats.request("$JS.API.DIRECT.GET.FHIR.fhir.a.Patient.p1", Bytes::new()).await.unwrap();
    assert_eq!(got.headers.unwrap().get("Nats-Subject").unwrap().as_str(), "fhir.a.Patient.p1");

    js.delete_consumer_from_stream("a_patients", "FHIR").await.expect("a tenant may delete its own consumer");
    assert!(a.errors.lock().unwrap().is_empty(), "no violations on the allowed path: {:?}", a.errors);
}

#[tokio::test]
async fn every_way_to_read_another_tenants_events_is_refused() {
    let f = Fixture::start(&[]).await;
    let a = f.analytics("a", Some("_INBOX_a")).await;
    let b = f.analytics("b", Some("_INBOX_b")).await;
    // b's consumer exists, so taking it over is a real attempt.
    let theirs = b.jetstream().create_consumer_on_stream(consumer("b_analytics", "fhir.b.>"), "FHIR").await.unwrap();
    a.jetstream().create_consumer_on_stream(consumer("a_analytics", "fhir.a.>"), "FHIR").await.unwrap();

    // The filter in the subject is pinned: a body naming another one is refused by JetStream.
    let pinned = "$JS.API.CONSUMER.CREATE.FHIR.a_analytics.fhir.a.>";
    assert_eq!(a.js_error(pinned, create_body("a_analytics", json!({"filter_subject": "fhir.b.>"}))).await, 10131);
    assert_eq!(a.js_error(pinned, create_body("a_analytics", json!({}))).await, 10131, "no filter");
    let list = json!({"filter_subjects": ["fhir.a.>", "fhir.b.>"]});
    assert_eq!(a.js_error(pinned, create_body("a_analytics", list.clone())).await, 10137, "filter_subjects");

    // The suffix form of direct get is allowed but takes no body, so a
    // sequence number (2 is b's first event) cannot reach b's events.
    let by_seq = Bytes::from(json!({"seq": 2}).to_string());
    let res = a.nats.request("$JS.API.DIRECT.GET.FHIR.fhir.a.Patient.p1", by_seq).await.unwrap();
    assert_eq!(res.status.map(|s| s.as_u16()), Some(408), "a body is a bad request");
    assert!(res.payload.is_empty());

    let direct_body = json!({"seq": 2});
    let refused: Vec<(&str, Value)> = vec![
        // Consumers on b's subjects, on everything, without a filter, with a list.
        (
            "$JS.API.CONSUMER.CREATE.FHIR.a_analytics.fhir.b.>",
            create_body("a_analytics", json!({"filter_subject": "fhir.b.>"})),
        ),
        (
            "$JS.API.CONSUMER.CREATE.FHIR.a_analytics.fhir.>",
            create_body("a_analytics", json!({"filter_subject": "fhir.>"})),
        ),
        (
            "$JS.API.CONSUMER.CREATE.FHIR.a_analytics.fhir.*.>",
            create_body("a_analytics", json!({"filter_subject": "fhir.*.>"})),
        ),
        ("$JS.API.CONSUMER.CREATE.FHIR.a_analytics.>", create_body("a_analytics", json!({"filter_subject": ">"}))),
        ("$JS.API.CONSUMER.CREATE.FHIR.a_analytics", create_body("a_analytics", json!({}))),
        ("$JS.API.CONSUMER.CREATE.FHIR.a_analytics", create_body("a_analytics", list)),
        ("$JS.API.CONSUMER.CREATE.FHIR", json!({"stream_name": "FHIR", "config": {"filter_subject": "fhir.b.>"}})),
        (
            "$JS.API.CONSUMER.DURABLE.CREATE.FHIR.a_analytics",
            create_body("a_analytics", json!({"filter_subject": "fhir.b.>"})),
        ),
        (
            "$JS.API.CONSUMER.CREATE.FHIR.a_other.fhir.a.>",
            create_body("a_other", json!({"filter_subject": "fhir.a.>"})),
        ),
        // Shared resources, unless --shared.
        (
            "$JS.API.CONSUMER.CREATE.FHIR.a_analytics.fhir.shared.>",
            create_body("a_analytics", json!({"filter_subject": "fhir.shared.>"})),
        ),
        // Taking over or reading b's consumer.
        (
            "$JS.API.CONSUMER.CREATE.FHIR.b_analytics.fhir.b.>",
            create_body("b_analytics", json!({"filter_subject": "fhir.b.>"})),
        ),
        (
            "$JS.API.CONSUMER.CREATE.FHIR.b_analytics.fhir.a.>",
            create_body("b_analytics", json!({"filter_subject": "fhir.a.>"})),
        ),
        ("$JS.API.CONSUMER.MSG.NEXT.FHIR.b_analytics", json!({"batch": 10, "no_wait": true})),
        ("$JS.API.CONSUMER.INFO.FHIR.b_analytics", json!({})),
        ("$JS.API.CONSUMER.DELETE.FHIR.b_analytics", json!({})),
        ("$JS.API.CONSUMER.LIST.FHIR", json!({})),
        ("$JS.API.CONSUMER.NAMES.FHIR", json!({})),
        // Single messages: direct get of b's subjects, by sequence, by wildcard; message get.
        ("$JS.API.DIRECT.GET.FHIR.fhir.b.Patient.secret", json!({})),
        ("$JS.API.DIRECT.GET.FHIR.fhir.*.Patient.secret", json!({})),
        ("$JS.API.DIRECT.GET.FHIR.fhir.>", json!({})),
        ("$JS.API.DIRECT.GET.FHIR", direct_body.clone()),
        ("$JS.API.STREAM.MSG.GET.FHIR", direct_body),
        // The stream's subjects, state and the account's usage.
        ("$JS.API.STREAM.INFO.FHIR", json!({"subjects_filter": "fhir.b.>"})),
        ("$JS.API.STREAM.NAMES", json!({})),
        ("$JS.API.INFO", json!({})),
        // Copies of the stream.
        ("$JS.API.STREAM.CREATE.COPY", json!({"name": "COPY", "mirror": {"name": "FHIR"}})),
        (
            "$JS.API.STREAM.CREATE.COPY2",
            json!({"name": "COPY2", "sources": [{"name": "FHIR", "filter_subject": "fhir.b.>"}]}),
        ),
        ("$JS.API.STREAM.UPDATE.FHIR", json!({"name": "FHIR", "subjects": ["fhir.>"]})),
    ];
    let probes = refused.iter().map(|(subject, body)| a.assert_publish_refused(subject, body.clone()));
    futures::future::join_all(probes).await;

    // Acks on b's consumer are refused too (no reply expected: a plain publish).
    a.nats.publish("$JS.ACK.FHIR.b_analytics.1.2.2.0.0", Bytes::new()).await.unwrap();
    a.assert_violation("Publish", "$JS.ACK.FHIR.b_analytics.1.2.2.0.0").await;

    // Core subscriptions to b's subjects or to everything, and to b's inbox.
    a.assert_subscription_refused("fhir.b.>", &f, "fhir.b.Patient.new1").await;
    a.assert_subscription_refused(">", &f, "fhir.b.Patient.new2").await;
    a.assert_subscription_refused("_INBOX_b.>", &f, "fhir.b.Patient.new3").await;
    a.assert_subscription_refused("_INBOX.>", &f, "fhir.b.Patient.new4").await;

    // With the default inbox prefix nothing comes back, not even a's own.
    let default_inbox = f.analytics("a", None).await;
    let res = default_inbox.jetstream().get_consumer_from_stream::<pull::Config, _, _>("a_analytics", "FHIR").await;
    assert!(res.is_err(), "an answer reached the default inbox");
    default_inbox.assert_violation_starting("Subscription", "_INBOX.").await;
    let mut own = default_inbox.nats.subscribe("_INBOX.mine").await.unwrap();
    default_inbox
        .nats
        .publish_with_reply("$JS.API.CONSUMER.MSG.NEXT.FHIR.a_analytics", "_INBOX.mine", "{\"batch\": 10}".into())
        .await
        .unwrap();
    default_inbox.assert_violation("Subscription", "_INBOX.mine").await;
    assert!(tokio::time::timeout(REFUSED_WAIT, own.next()).await.is_err(), "a message reached the default inbox");

    // Nothing moved: each consumer still has its own filter and its own events.
    let mut mine = a.jetstream().get_consumer_from_stream::<pull::Config, _, _>("a_analytics", "FHIR").await.unwrap();
    assert_eq!(mine.info().await.unwrap().config.filter_subject, "fhir.a.>");
    let mut theirs_now =
        b.jetstream().get_consumer_from_stream::<pull::Config, _, _>("b_analytics", "FHIR").await.unwrap();
    assert_eq!(theirs_now.info().await.unwrap().config.filter_subject, "fhir.b.>");
    let got: Vec<String> = drain(&mine).await;
    assert!(got.iter().all(|s| s.starts_with("fhir.a.")), "{got:?}");
    assert_eq!(drain(&theirs).await.len(), TENANT_B.len() + 4, "b's consumer kept every b event for b");
    let streams: Vec<String> = f.admin_streams().await;
    assert_eq!(streams, ["FHIR", "FHIRSTREAM_TENANTS"], "no copy of the stream was made");
}

impl Fixture {
    async fn admin_streams(&self) -> Vec<String> {
        let js = async_nats::jetstream::new(self.admin.clone());
        let mut names: Vec<String> = js.stream_names().map(|n| n.unwrap()).collect().await;
        names.sort();
        names
    }
}

#[tokio::test]
async fn the_shared_space_is_readable_only_with_the_shared_flag() {
    let f = Fixture::start(&["--shared"]).await;
    let a = f.analytics("a", Some("_INBOX_a")).await;
    let shared =
        a.jetstream().create_consumer_on_stream(consumer("a_patients", "fhir.shared.>"), "FHIR").await.unwrap();
    assert_eq!(drain(&shared).await, [SHARED]);
    let got = a.nats.request("$JS.API.DIRECT.GET.FHIR.fhir.shared.Organization.org1", Bytes::new()).await.unwrap();
    assert_eq!(got.headers.unwrap().get("Nats-Subject").unwrap().as_str(), SHARED);
    // Still nothing of b's.
    a.assert_publish_refused("$JS.API.DIRECT.GET.FHIR.fhir.b.Patient.secret", json!({})).await;
}

#[tokio::test]
async fn all_tenants_come_from_the_registry_and_known_passwords_are_kept() {
    let f = Fixture::start(&[]).await;
    let conn = conn_args(&f.nats, &f.passwords["fhirstream"]);
    let store = fhirstream::startup::open_store(&conn, f.admin.clone()).await.unwrap();
    for t in ["a", "b", "c"] {
        let tenant = schemas::TenantId::parse_new(t).unwrap();
        command::tenants::create(&store, tenant, t.into(), Default::default(), schemas::Actor::default())
            .await
            .unwrap();
    }
    let pw = f.passwords_file.to_str().unwrap();
    let conf = nats_auth(&["--all-tenants", "--nats-url", &conn.nats_url, "--passwords", pw]);
    for user in ["fhirstream", "analytics-a", "analytics-b", "analytics-c"] {
        assert!(conf.contains(&format!("user: \"{user}\"")), "{user} missing:\n{conf}");
    }
    let passwords = read_passwords(&f.passwords_file);
    assert_eq!(passwords.len(), 4, "only c's password is new");
    for (user, password) in &f.passwords {
        assert_eq!(&passwords[user], password, "{user} keeps its password");
    }

    // Installed by a reload, the new user logs in and reads its consumer; the others still log in.
    std::fs::write(f.nats.dir().join("fhirstream-auth.conf"), conf).unwrap();
    f.nats.reload();
    let deadline = Instant::now() + Duration::from_secs(5);
    let c = loop {
        let attempt =
            async_nats::ConnectOptions::with_user_and_password("analytics-c".into(), passwords["analytics-c"].clone())
                .custom_inbox_prefix("_INBOX_c")
                .connect(&f.nats.url)
                .await;
        match attempt {
            Ok(client) => break client,
            Err(e) => assert!(Instant::now() < deadline, "analytics-c cannot log in after the reload: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let js = async_nats::jetstream::new(c);
    js.create_consumer_on_stream(consumer("c_analytics", "fhir.c.>"), "FHIR").await.expect("c creates its consumer");
    f.analytics("a", Some("_INBOX_a")).await;
}
