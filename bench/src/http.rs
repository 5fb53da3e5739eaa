//! A lean FHIR REST client for the load: one keep-alive HTTP/1.1 pool,
//! bodies read to the end (so connections are reused) but not parsed
//! unless an id is needed.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION};

use crate::payloads::Kind;

/// Request header with which a write opts out of read-your-writes.
pub const CONSISTENCY_HEADER: &str = "x-fhirstream-consistency";
/// Response header saying whether a write's projection was awaited.
pub const PROJECTION_HEADER: &str = "x-fhirstream-projection";
const FHIR_JSON: &str = "application/fhir+json";

/// Why one operation did not do what the scenario expected.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("unexpected HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("a create answered without a resource id")]
    NoId,
}

impl OpError {
    /// A short key to count errors by (`HTTP 409`, `transport`, `no id`).
    pub fn key(&self) -> String {
        match self {
            Self::Status { status, .. } => format!("HTTP {status}"),
            Self::Transport(e) if e.is_timeout() => "timeout".into(),
            Self::Transport(_) => "transport".into(),
            Self::NoId => "no id".into(),
            Self::Database(_) => "database".into(),
        }
    }
}

/// The result of a create.
#[derive(Debug)]
pub struct Created {
    pub id: String,
    /// `applied`, `pending` or `skipped` (see the server's write handler).
    pub projection: Option<String>,
}

/// The server's FHIR and admin API.
#[derive(Clone)]
pub struct Fhir {
    http: reqwest::Client,
    base: String,
}

impl Fhir {
    /// A client with up to `pool` idle keep-alive connections.
    pub fn new(base: &str, pool: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .http1_only()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(90))
            .timeout(Duration::from_secs(30))
            .build()
            .context("build the HTTP client")?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned() })
    }

    /// Waits until `GET /health` answers 200.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.http.get(format!("{}/health", self.base)).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                _ if tokio::time::Instant::now() >= deadline => {
                    anyhow::bail!("{} did not become healthy within {timeout:?}", self.base)
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let res = self.http.get(format!("{}/metrics", self.base)).send().await.context("GET /metrics")?;
        anyhow::ensure!(res.status().is_success(), "GET /metrics: HTTP {}", res.status());
        res.text().await.context("read /metrics")
    }

    /// `POST /admin/tenants`.
    pub async fn create_tenant(&self, id: &str, name: &str) -> anyhow::Result<()> {
        let res = self
            .http
            .post(format!("{}/admin/tenants", self.base))
            .json(&serde_json::json!({ "id": id, "name": name }))
            .send()
            .await
            .with_context(|| format!("create tenant {id}"))?;
        let status = res.status();
        if status != StatusCode::CREATED {
            let body = res.text().await.unwrap_or_default();
            anyhow::bail!("creating tenant {id}: HTTP {status}: {body}");
        }
        Ok(())
    }

    fn url(&self, tenant: &str, kind: Kind, id: Option<&str>) -> String {
        match id {
            Some(id) => format!("{}/fhir/{tenant}/{}/{id}", self.base, kind.as_str()),
            None => format!("{}/fhir/{tenant}/{}", self.base, kind.as_str()),
        }
    }

    /// `POST /fhir/{tenant}/{type}`; `eventual` opts out of read-your-writes.
    pub async fn create(&self, tenant: &str, kind: Kind, body: Vec<u8>, eventual: bool) -> Result<Created, OpError> {
        let mut req = self.http.post(self.url(tenant, kind, None)).header(CONTENT_TYPE, FHIR_JSON).body(body);
        if eventual {
            req = req.header(CONSISTENCY_HEADER, "eventual");
        }
        let res = req.send().await?;
        let status = res.status();
        let projection = header_str(res.headers().get(PROJECTION_HEADER));
        let location = header_str(res.headers().get(LOCATION));
        let bytes = res.bytes().await?;
        if status != StatusCode::CREATED {
            return Err(status_error(status, &bytes));
        }
        let id = location
            .as_deref()
            .and_then(|l| id_from_location(l, kind.as_str()))
            .map(str::to_owned)
            .or_else(|| id_from_body(&bytes))
            .ok_or(OpError::NoId)?;
        Ok(Created { id, projection })
    }

    /// `POST /fhir/{tenant}` with a transaction Bundle, expecting 200.
    pub async fn transaction(&self, tenant: &str, bundle: bytes::Bytes) -> Result<(), OpError> {
        let url = format!("{}/fhir/{tenant}", self.base);
        let res = self
            .http
            .post(url)
            .header(CONTENT_TYPE, FHIR_JSON)
            .timeout(Duration::from_secs(300))
            .body(bundle)
            .send()
            .await?;
        expect(res, StatusCode::OK).await
    }

    /// `GET /fhir/{tenant}/{type}/{id}`, expecting 200.
    pub async fn read(&self, tenant: &str, kind: Kind, id: &str) -> Result<(), OpError> {
        let res = self.http.get(self.url(tenant, kind, Some(id))).send().await?;
        expect(res, StatusCode::OK).await
    }

    /// `GET /fhir/{tenant}/{query}` (a search), expecting 200.
    pub async fn search(&self, tenant: &str, query: &str) -> Result<(), OpError> {
        let res = self.http.get(format!("{}/fhir/{tenant}/{query}", self.base)).send().await?;
        expect(res, StatusCode::OK).await
    }

    /// `GET /fhir/{tenant}/{query}`, the searchset as JSON.
    pub async fn search_json(&self, tenant: &str, query: &str) -> Result<serde_json::Value, OpError> {
        let res = self.http.get(format!("{}/fhir/{tenant}/{query}", self.base)).send().await?;
        let status = res.status();
        let bytes = res.bytes().await?;
        if status != StatusCode::OK {
            return Err(status_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| OpError::Status { status: 200, body: format!("not JSON: {e}") })
    }

    /// The `total` of a search.
    pub async fn search_total(&self, tenant: &str, query: &str) -> Result<Option<u64>, OpError> {
        Ok(self.search_json(tenant, query).await?["total"].as_u64())
    }

    /// `PUT /fhir/{tenant}/{type}/{id}`, expecting 200.
    pub async fn update(&self, tenant: &str, kind: Kind, id: &str, body: Vec<u8>) -> Result<(), OpError> {
        let res =
            self.http.put(self.url(tenant, kind, Some(id))).header(CONTENT_TYPE, FHIR_JSON).body(body).send().await?;
        expect(res, StatusCode::OK).await
    }

    /// `DELETE /fhir/{tenant}/{type}/{id}`, expecting 204.
    pub async fn delete(&self, tenant: &str, kind: Kind, id: &str) -> Result<(), OpError> {
        let res = self.http.delete(self.url(tenant, kind, Some(id))).send().await?;
        expect(res, StatusCode::NO_CONTENT).await
    }
}

async fn expect(res: reqwest::Response, want: StatusCode) -> Result<(), OpError> {
    let status = res.status();
    let bytes = res.bytes().await?;
    if status == want { Ok(()) } else { Err(status_error(status, &bytes)) }
}

fn status_error(status: StatusCode, body: &[u8]) -> OpError {
    OpError::Status { status: status.as_u16(), body: String::from_utf8_lossy(body).chars().take(300).collect() }
}

fn header_str(v: Option<&HeaderValue>) -> Option<String> {
    v.and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The id in a create's `Location`: `{base}/{type}/{id}/_history/{n}`.
pub fn id_from_location<'a>(location: &'a str, rtype: &str) -> Option<&'a str> {
    let mut parts = location.rsplit('/');
    let _version = parts.next()?;
    if parts.next()? != "_history" {
        return None;
    }
    let id = parts.next()?;
    (parts.next()? == rtype && !id.is_empty()).then_some(id)
}

fn id_from_body(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithId {
        id: Option<String>,
    }
    serde_json::from_slice::<WithId>(body).ok()?.id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_comes_out_of_a_versioned_location() {
        let loc = "http://127.0.0.1:8080/fhir/acme/Patient/0190-ab.c/_history/1";
        assert_eq!(id_from_location(loc, "Patient"), Some("0190-ab.c"));
        assert_eq!(id_from_location(loc, "Observation"), None);
        assert_eq!(id_from_location("http://h/fhir/acme/Patient/x", "Patient"), None);
    }

    #[test]
    fn a_body_id_is_the_fallback() {
        assert_eq!(id_from_body(br#"{"resourceType":"Patient","id":"p-1"}"#).as_deref(), Some("p-1"));
        assert_eq!(id_from_body(b"{}"), None);
        assert_eq!(id_from_body(b"nope"), None);
    }
}
