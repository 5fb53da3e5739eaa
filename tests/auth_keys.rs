//! Tokens signed with RS256 and ES256 public keys, issuer and audience
//! checks, and the algorithm-confusion attack.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{TestApp, assert_outcome};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn claims(tenant: &str, extra: Value) -> Value {
    let mut c = json!({"sub": "svc", "exp": chrono::Utc::now().timestamp() + 600, "tenants": [tenant], "scope": "system/*.* fhirstream/admin"});
    if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
        c.extend(extra);
    }
    c
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

async fn secured_with(key: &str, issuer: Option<&str>, audience: Option<&str>) -> TestApp {
    let (key, issuer, audience) = (fixture(key), issuer.map(str::to_owned), audience.map(str::to_owned));
    TestApp::spawn_with(move |cfg| {
        cfg.auth = fhirstream::config::AuthArgs {
            jwt_public_key: Some(key),
            jwt_issuer: issuer,
            jwt_audience: audience,
            ..Default::default()
        };
    })
    .await
}

#[tokio::test]
async fn rs256_tokens_verify_against_the_configured_public_key() {
    let app = secured_with("rsa-public.pem", None, None).await;
    let t = app.tenant_via_stream("rsa").await;
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-private.pem")).unwrap()).unwrap();
    let good = sign(Algorithm::RS256, &key, &claims(&t, json!({})));
    assert_eq!(app.http.get(app.fhir(&t, "Patient/x")).bearer_auth(&good).send().await.unwrap().status(), 404);
    // Algorithm confusion: an HS256 token keyed with the public key's bytes.
    let public = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(&public).unwrap(), &claims(&t, json!({})));
    assert_outcome(app.http.get(app.fhir(&t, "Patient/x")).bearer_auth(&forged).send().await.unwrap(), 401).await;
}

#[tokio::test]
async fn es256_tokens_verify_and_issuer_and_audience_are_enforced_when_configured() {
    let app = secured_with("ec-public.pem", Some("https://idp.example"), Some("fhirstream")).await;
    let t = app.tenant_via_stream("ec").await;
    let key = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec-private.pem")).unwrap()).unwrap();
    let url = app.fhir(&t, "Patient/x");
    let good = sign(Algorithm::ES256, &key, &claims(&t, json!({"iss": "https://idp.example", "aud": "fhirstream"})));
    assert_eq!(app.http.get(&url).bearer_auth(&good).send().await.unwrap().status(), 404);
    for (what, extra) in [
        ("no issuer", json!({"aud": "fhirstream"})),
        ("wrong issuer", json!({"iss": "https://evil.example", "aud": "fhirstream"})),
        ("no audience", json!({"iss": "https://idp.example"})),
        ("wrong audience", json!({"iss": "https://idp.example", "aud": "other"})),
    ] {
        let bad = sign(Algorithm::ES256, &key, &claims(&t, extra));
        let res = app.http.get(&url).bearer_auth(&bad).send().await.unwrap();
        assert_eq!(res.status(), 401, "{what}");
    }
    // An RS256 token is refused by an ES256 server.
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-private.pem")).unwrap()).unwrap();
    let other = sign(Algorithm::RS256, &rsa, &claims(&t, json!({"iss": "https://idp.example", "aud": "fhirstream"})));
    assert_outcome(app.http.get(&url).bearer_auth(&other).send().await.unwrap(), 401).await;
}

#[tokio::test]
async fn a_server_with_no_way_to_verify_tokens_refuses_to_start() {
    let nats = support::TestNats::start();
    let db = support::TestDb::create().await;
    let mut cfg = support::serve_args(&nats, &db);
    cfg.auth = fhirstream::config::AuthArgs::default();
    let err = fhirstream::startup::App::build(cfg).await.err().expect("refused").to_string();
    assert!(err.contains("--auth-disabled") && err.contains("FHIRSTREAM_JWT_SECRET"), "{err}");
}
