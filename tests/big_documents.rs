//! Big documents: a resource of several MiB (a PDF in a DocumentReference
//! or a Binary) is one event like any other, and a Binary can be written
//! and read in its own content type.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use base64::Engine as _;
use serde_json::{Value, json};
use support::TestApp;

/// Deterministic "PDF" bytes of `n` bytes.
fn pdf(n: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n".to_vec();
    bytes.extend((0..n.saturating_sub(9)).map(|i| (i * 31 % 251) as u8));
    bytes
}

#[tokio::test]
async fn a_document_reference_carrying_a_2_mib_pdf_is_stored_read_and_searched() {
    let app = TestApp::spawn().await;
    let t = app.tenant("big").await;
    let data = base64::engine::general_purpose::STANDARD.encode(pdf(2 * 1024 * 1024));
    let doc = json!({"resourceType": "DocumentReference", "status": "current",
        "content": [{"attachment": {"contentType": "application/pdf", "data": data}}]});
    let res = app.post(&t, "DocumentReference", &doc).await;
    assert_eq!(
        res.status().as_u16(),
        201,
        "{}",
        res.text().await.unwrap_or_default().chars().take(300).collect::<String>()
    );
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let back: Value = app.get(&t, &format!("DocumentReference/{id}")).await.json().await.unwrap();
    assert_eq!(back["content"][0]["attachment"]["data"].as_str().unwrap().len(), data.len());
    let found: Value = app.get(&t, "DocumentReference?status=current").await.json().await.unwrap();
    assert_eq!(found["total"], 1);
}

#[tokio::test]
async fn a_binary_is_written_and_read_in_its_own_content_type() {
    let app = TestApp::spawn().await;
    let (t, other) = (app.tenant("bin").await, app.tenant("binother").await);
    let bytes = pdf(3 * 1024 * 1024);
    let res = app
        .authed(app.http.post(app.fhir(&t, "Binary")))
        .header("content-type", "application/pdf")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let get = |tenant: &str, accept: &'static str| {
        app.authed(app.http.get(app.fhir(tenant, &format!("Binary/{id}")))).header("accept", accept).send()
    };
    let res = get(&t, "application/pdf").await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-type"], "application/pdf");
    assert_eq!(res.bytes().await.unwrap().as_ref(), &bytes[..], "the bytes come back as sent");
    let json: Value = get(&t, "application/fhir+json").await.unwrap().json().await.unwrap();
    assert_eq!(
        (json["resourceType"].as_str(), json["contentType"].as_str()),
        (Some("Binary"), Some("application/pdf"))
    );
    assert_eq!(get(&other, "application/pdf").await.unwrap().status().as_u16(), 404, "not the neighbour's");
    // PUT with the bytes too, at a client id.
    let res = app
        .authed(app.http.put(app.fhir(&t, "Binary/scan1")))
        .header("content-type", "image/png")
        .body(vec![137u8, 80, 78, 71])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
}

#[tokio::test]
async fn a_resource_over_the_limit_is_413_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant("huge").await;
    let res = app
        .authed(app.http.post(app.fhir(&t, "Binary")))
        .header("content-type", "application/octet-stream")
        .body(vec![7u8; 17 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    assert_eq!(app.stream_count(&format!("fhir.{t}.>")).await, 0);
}
