//! A corpus of malformed and adversarial requests against a real server.
//!
//! Every request is sent byte for byte over a raw TCP connection (so broken
//! UTF-8, NUL, raw `..` and oversized headers reach the server as written,
//! not as a client library would tidy them) with a deadline, and must be
//! answered with its expected status: a 4xx `OperationOutcome` for what is
//! wrong, a 2xx for what is merely odd (SQL metacharacters in a string
//! search match nothing), never a 5xx and never a hang. Afterwards the
//! stream, the read models and the tenant's `_history` must be exactly as
//! before: no hostile request writes anything.
//!
//! Failures are collected, not raised one at a time, so one run lists every
//! case the server gets wrong.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::TestApp;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How long any one hostile request may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(15);

/// What a case must be answered with.
#[derive(Debug, Clone)]
enum Want {
    /// An error status with an `OperationOutcome` body.
    Outcome(u16),
    /// A `searchset` or `history` Bundle (200), with this `total` if given.
    Bundle(Option<u64>),
    /// 200 `batch-response` whose every entry failed with a 4xx.
    FailedBatch,
    /// A success without a body (a conditional delete that matched nothing).
    Empty(u16),
    /// Refused by the HTTP parser before the app sees it: one of these
    /// statuses, with an `OperationOutcome` if there is a body at all.
    Parser(&'static [u16]),
}

/// One hostile request.
struct Case {
    what: String,
    method: String,
    target: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    want: Want,
    /// Whether to send the app's bearer token.
    auth: bool,
}

impl Case {
    fn new(what: impl Into<String>, method: &str, target: impl Into<Vec<u8>>, want: Want) -> Self {
        Self {
            what: what.into(),
            method: method.into(),
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
            want,
            auth: true,
        }
    }

    fn get(what: impl Into<String>, target: impl Into<Vec<u8>>, want: Want) -> Self {
        Self::new(what, "GET", target, want)
    }

    fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A body with a content type.
    fn body(self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        let mut c = self.header("content-type", content_type);
        c.body = body.into();
        c
    }

    /// A body without a content type (set one with [`Case::header`]).
    fn raw_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn fhir(self, body: impl Into<Vec<u8>>) -> Self {
        self.body("application/fhir+json", body)
    }

    fn anonymous(mut self) -> Self {
        self.auth = false;
        self
    }
}

/// A response as read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as is and reads the answer (the request asks the server
/// to close the connection, so the answer ends at EOF). Writing and reading
/// run at once: a server that answers before reading a large body, and
/// closes, must still be heard.
async fn exchange(port: u16, request: Vec<u8>) -> Result<Reply, String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        let _ = wr.flush().await;
        // Keep the write half open until the reader is done: a half-close
        // would be a different request (an early end of the body).
        tokio::time::sleep(DEADLINE).await;
        drop(wr);
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                // A reset after the answer arrived is the server closing on
                // an unread body; what was read still counts.
                Err(_) => break,
            }
            if complete(&raw) {
                break;
            }
        }
    })
    .await;
    writer.abort();
    if read.is_err() && !complete(&raw) {
        return Err(format!("no complete answer within {DEADLINE:?} (read {} bytes)", raw.len()));
    }
    parse_reply(&raw)
}

/// Whether `raw` holds a whole response (by Content-Length or chunked end).
fn complete(raw: &[u8]) -> bool {
    let Some(end) = find(raw, b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    if let Some(len) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        return len.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
    }
    if head.contains("transfer-encoding: chunked") {
        return find(body, b"0\r\n\r\n").is_some();
    }
    false
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| format!("no response head in {} bytes", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body)?;
    }
    Ok(Reply { status, headers, body })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n").ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(raw.get(..size).ok_or("truncated chunk")?);
        raw = raw.get(size + 2..).ok_or("truncated chunk end")?;
    }
}

/// The bytes of an HTTP/1.1 request.
fn request_bytes(case: &Case, token: Option<&str>) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(case.method.as_bytes());
    r.push(b' ');
    r.extend_from_slice(&case.target);
    r.extend_from_slice(b" HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    if let (true, Some(t)) = (case.auth, token) {
        r.extend_from_slice(format!("authorization: Bearer {t}\r\n").as_bytes());
    }
    let mut has_length = false;
    for (k, v) in &case.headers {
        has_length |= k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding");
        r.extend_from_slice(k.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(v);
        r.extend_from_slice(b"\r\n");
    }
    if !has_length && (!case.body.is_empty() || matches!(case.method.as_str(), "POST" | "PUT" | "PATCH")) {
        r.extend_from_slice(format!("content-length: {}\r\n", case.body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(&case.body);
    r
}

/// Why a reply does not match what the case wants (`None`: it does).
fn judge(want: &Want, reply: &Reply) -> Option<String> {
    if reply.status >= 500 {
        return Some(format!("answered {} {}", reply.status, String::from_utf8_lossy(&reply.body)));
    }
    let json: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let fhir_ct = reply.header("content-type").is_some_and(|ct| ct.starts_with("application/fhir+json"));
    let is_outcome = || {
        fhir_ct
            && json.as_ref().is_some_and(|b| {
                b["resourceType"] == "OperationOutcome"
                    && b["issue"][0]["diagnostics"].as_str().is_some_and(|d| !d.is_empty())
            })
    };
    let body_text = || String::from_utf8_lossy(&reply.body).chars().take(300).collect::<String>();
    match want {
        Want::Outcome(status) => {
            if reply.status != *status {
                return Some(format!("answered {} instead of {status}: {}", reply.status, body_text()));
            }
            (!is_outcome()).then(|| format!("{status} without an OperationOutcome: {}", body_text()))
        }
        Want::Parser(statuses) => {
            if !statuses.contains(&reply.status) {
                return Some(format!("answered {} instead of one of {statuses:?}: {}", reply.status, body_text()));
            }
            (!reply.body.is_empty() && !is_outcome())
                .then(|| format!("a body that is no OperationOutcome: {}", body_text()))
        }
        Want::Bundle(total) => {
            let Some(b) = json.as_ref().filter(|b| reply.status == 200 && b["resourceType"] == "Bundle") else {
                return Some(format!("answered {} instead of a 200 Bundle: {}", reply.status, body_text()));
            };
            match total {
                Some(n) if b["total"] != json!(n) => Some(format!("total {} instead of {n}", b["total"])),
                _ => None,
            }
        }
        Want::Empty(status) => (reply.status != *status || !reply.body.is_empty())
            .then(|| format!("answered {} instead of an empty {status}: {}", reply.status, body_text())),
        Want::FailedBatch => {
            let Some(b) = json.as_ref().filter(|b| reply.status == 200 && b["type"] == "batch-response") else {
                return Some(format!("answered {} instead of a batch-response: {}", reply.status, body_text()));
            };
            let entries = b["entry"].as_array().cloned().unwrap_or_default();
            let bad = entries.iter().find(|e| {
                let status = e["response"]["status"].as_str().unwrap_or_default();
                !status.starts_with('4') || e["response"]["outcome"]["resourceType"] != "OperationOutcome"
            });
            bad.map(|e| format!("a batch entry that did not fail with a 4xx OperationOutcome: {e}"))
        }
    }
}

/// Percent-encodes a query value (every byte that is not unreserved).
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `n` levels of JSON arrays.
fn deep(n: usize) -> String {
    format!("{}{}", "[".repeat(n), "]".repeat(n))
}

/// A transaction or batch Bundle of the given entries.
fn bundle(kind: &str, entries: Vec<Value>) -> Vec<u8> {
    json!({"resourceType": "Bundle", "type": kind, "entry": entries}).to_string().into_bytes()
}

fn post_entry(resource: Value) -> Value {
    let rt = resource["resourceType"].as_str().unwrap_or("Patient").to_owned();
    json!({"resource": resource, "request": {"method": "POST", "url": rt}})
}

/// SQL metacharacters, each also a LIKE wildcard or escape where it is one.
const SQL_META: &[&str] =
    &["'", ";", "--", "%", "_", "\\\\", "$1", "' or '1'='1", "'); drop table resources; --", "%_%"];

/// Things that must never reach a NATS subject token.
/// (A raw `>` is no URI character: the HTTP parser refuses it, see below.)
const SUBJECT_META: &[&str] = &["*", "a.b", "a%20b", "a*b", "a%3Eb", "%2A", "%3E", "a%09b", "."];

/// The hostile corpus for tenant `t` (which holds the fixture resources).
fn corpus(t: &str, other: &str) -> Vec<Case> {
    use Want::*;
    let mut c: Vec<Case> = Vec::new();
    let fhir = |p: &str| format!("/fhir/{t}/{p}");
    let patient = r#"{"resourceType":"Patient"}"#;

    // --- Broken UTF-8: bodies, paths, query strings, headers.
    for (what, body) in [
        ("invalid UTF-8 in a string", b"{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"\xff\xfe\"}]}".to_vec()),
        ("overlong UTF-8", b"{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"\xc0\xaf\"}]}".to_vec()),
        ("UTF-8 BOM", b"\xef\xbb\xbf{\"resourceType\":\"Patient\"}".to_vec()),
        ("UTF-16 body", "{\"resourceType\":\"Patient\"}".encode_utf16().flat_map(u16::to_le_bytes).collect()),
        ("lone surrogate escape", br#"{"resourceType":"Patient","name":[{"family":"\ud800"}]}"#.to_vec()),
        ("invalid UTF-8 in a key", b"{\"resourceType\":\"Patient\",\"\xff\":1}".to_vec()),
    ] {
        c.push(Case::new(format!("create: {what}"), "POST", fhir("Patient"), Outcome(400)).fhir(body.clone()));
        c.push(Case::new(format!("update: {what}"), "PUT", fhir("Patient/fix"), Outcome(400)).fhir(body.clone()));
    }
    c.push(
        Case::new("transaction with invalid UTF-8", "POST", format!("/fhir/{t}"), Outcome(400))
            .fhir(b"{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[\"\xff\"]}".to_vec()),
    );
    c.push(Case::new("PATCH with invalid UTF-8", "PATCH", fhir("Patient/fix"), Outcome(400)).body(
        "application/json-patch+json",
        b"[{\"op\":\"replace\",\"path\":\"/gender\",\"value\":\"\xff\"}]".to_vec(),
    ));
    c.push(
        Case::new("admin document with invalid UTF-8", "POST", "/admin/tenants", Outcome(400))
            .body("application/json", b"{\"id\":\"\xff\"}".to_vec()),
    );
    c.push(Case::get("percent-encoded invalid UTF-8 tenant", "/fhir/%FF%FE/Patient", Outcome(400)));
    c.push(Case::get("percent-encoded invalid UTF-8 type", fhir("Pat%FFient"), Outcome(400)));
    c.push(Case::get("percent-encoded invalid UTF-8 id", fhir("Patient/a%FFb"), Outcome(400)));
    c.push(Case::get("percent-encoded invalid UTF-8 version", fhir("Patient/fix/_history/%FF"), Outcome(400)));
    c.push(Case::get("percent-encoded invalid UTF-8 metadata tenant", "/fhir/%FF/metadata", Outcome(400)));
    c.push(Case::get("percent-encoded invalid UTF-8 admin tenant", "/admin/tenants/%FF", Outcome(400)));
    c.push(Case::get("raw invalid UTF-8 in the path", b"/fhir/t\xff/Patient".to_vec(), Parser(&[400, 404])));
    c.push(Case::get("raw NUL in the query", fhir("Patient?name=\u{0}").into_bytes(), Parser(&[400])));
    let mut raw_query = fhir("Patient?name=").into_bytes();
    raw_query.extend_from_slice(b"\xff\xfe");
    c.push(Case::get("raw invalid UTF-8 bytes in the query", raw_query, Parser(&[400])));
    c.push(Case::get("percent-encoded invalid UTF-8 search value", fhir("Patient?name=%FF%FE"), Bundle(Some(0))));
    c.push(Case::get("percent-encoded invalid UTF-8 search key", fhir("Patient?na%FFme=x"), Bundle(Some(3))));
    c.push(Case::get("invalid UTF-8 _count", fhir("Patient/fix/_history?_count=%FF"), Outcome(400)));
    c.push(
        Case::new("form search with invalid UTF-8", "POST", fhir("Patient/_search"), Bundle(Some(0)))
            .body("application/x-www-form-urlencoded", b"name=\xff\xfe".to_vec()),
    );
    c.push(
        Case::new("invalid UTF-8 in If-Match on update", "PUT", fhir("Patient/fix"), Outcome(400))
            .fhir(r#"{"resourceType":"Patient","id":"fix"}"#)
            .header("if-match", b"W/\"\xff\"".to_vec()),
    );
    c.push(
        Case::new("invalid UTF-8 in Content-Type", "POST", fhir("Patient"), Outcome(415))
            .raw_body(patient)
            .header("content-type", b"application/fhir+json\xff".to_vec()),
    );
    c.push(
        Case::new("a control character in Content-Type", "POST", fhir("Patient"), Parser(&[400]))
            .body("application/fhir+json\u{1}", patient),
    );
    c.push(
        Case::get("invalid UTF-8 in Authorization", fhir("Patient"), Outcome(401))
            .anonymous()
            .header("authorization", b"Bearer \xff\xfe".to_vec()),
    );

    // --- Deep nesting (10,000 levels) wherever JSON is read.
    let d = deep(10_000);
    c.push(Case::new("create: 10k-deep JSON", "POST", fhir("Patient"), Outcome(400)).fhir(d.clone()));
    c.push(
        Case::new("create: 10k-deep JSON inside a resource", "POST", fhir("Patient"), Outcome(400))
            .fhir(format!(r#"{{"resourceType":"Patient","extension":{d}}}"#)),
    );
    c.push(Case::new("update: 10k-deep JSON", "PUT", fhir("Patient/fix"), Outcome(400)).fhir(d.clone()));
    c.push(Case::new("transaction: 10k-deep JSON", "POST", format!("/fhir/{t}"), Outcome(400)).fhir(d.clone()));
    c.push(
        Case::new("transaction: 10k-deep JSON in an entry", "POST", format!("/fhir/{t}"), Outcome(400))
            .fhir(format!(r#"{{"resourceType":"Bundle","type":"transaction","entry":[{d}]}}"#)),
    );
    c.push(
        Case::new("PATCH: 10k-deep JSON", "PATCH", fhir("Patient/fix"), Outcome(400))
            .body("application/json-patch+json", d.clone()),
    );
    c.push(
        Case::new("conditional update: 10k-deep JSON", "PUT", fhir("Patient?identifier=urn:x%7Cfix"), Outcome(400))
            .fhir(d.clone()),
    );
    c.push(
        Case::new("conditional create: 10k-deep JSON", "POST", fhir("Patient"), Outcome(400))
            .fhir(d.clone())
            .header("if-none-exist", "identifier=urn:x|new"),
    );
    c.push(
        Case::new("admin: 10k-deep JSON", "POST", "/admin/tenants", Outcome(400))
            .body("application/json", format!(r#"{{"id":"x","config":{d}}}"#)),
    );
    c.push(Case::new("10k-deep JSON objects", "POST", fhir("Patient"), Outcome(400)).fhir(format!(
        "{}{}",
        r#"{"a":"#.repeat(10_000),
        "}".repeat(10_000)
    )));

    // --- Huge numbers.
    let digits400 = "9".repeat(400);
    for (what, n) in [("1e400", "1e400"), ("-1e400", "-1e400"), ("a 400-digit integer", digits400.as_str())] {
        c.push(
            Case::new(format!("create: {what}"), "POST", fhir("RiskAssessment"), Outcome(400)).fhir(format!(
                r#"{{"resourceType":"RiskAssessment","status":"final","subject":{{"reference":"Patient/fix"}},"prediction":[{{"probabilityDecimal":{n}}}]}}"#
            )),
        );
        c.push(
            Case::new(format!("transaction: {what}"), "POST", format!("/fhir/{t}"), Outcome(400)).fhir(format!(
                r#"{{"resourceType":"Bundle","type":"transaction","entry":[{{"resource":{{"resourceType":"Patient","multipleBirthInteger":{n}}},"request":{{"method":"POST","url":"Patient"}}}}]}}"#
            )),
        );
    }
    c.push(Case::get("search: 1e400", fhir("RiskAssessment?probability=1e400"), Outcome(400)));
    c.push(Case::get("search: 1e-400", fhir("RiskAssessment?probability=1e-400"), Outcome(400)));
    c.push(Case::get(
        "search: a 400-digit integer",
        fhir(&format!("RiskAssessment?probability={digits400}")),
        Bundle(Some(0)),
    ));
    c.push(Case::get(
        "search: a 400-digit quantity",
        fhir(&format!("Observation?value-quantity=gt{digits400}")),
        Bundle(Some(0)),
    ));
    c.push(Case::get("search: 1e300 approximately", fhir("RiskAssessment?probability=ap1e300"), Bundle(Some(0))));
    for bad in [
        "NaN",
        "Infinity",
        "-Infinity",
        "0x10",
        "1_000",
        "%201",
        "1.",
        ".5",
        "1e",
        "1e%2B",
        "--1",
        "1e99999999999",
        "eq",
    ] {
        c.push(Case::get(
            format!("search: number {bad}"),
            fhir(&format!("RiskAssessment?probability={bad}")),
            Outcome(400),
        ));
    }
    for bad in ["1e400", "99999999999999999999", "18446744073709551616", "-1", "1e3", "0x10", "abc", "", "%00", "1%2C2"]
    {
        c.push(Case::get(format!("_count={bad}"), fhir(&format!("Patient?_count={bad}")), Outcome(400)));
        c.push(Case::get(format!("system _count={bad}"), format!("/fhir/{t}?_count={bad}"), Outcome(400)));
        c.push(Case::get(
            format!("history _count={bad}"),
            fhir(&format!("Patient/fix/_history?_count={bad}")),
            Outcome(400),
        ));
        c.push(Case::get(
            format!("type history _count={bad}"),
            fhir(&format!("Patient/_history?_count={bad}")),
            Outcome(400),
        ));
    }
    c.push(Case::get("a huge _count is capped", fhir("Patient?_count=4294967295"), Bundle(Some(3))));
    c.push(Case::get("a huge history _count is capped", fhir("Patient/_history?_count=4294967295"), Bundle(None)));
    c.push(Case::get("_count twice", fhir("Patient/fix/_history?_count=1&_count=2"), Bundle(None)));
    c.push(Case::get("version 2^64", fhir("Patient/fix/_history/18446744073709551616"), Outcome(400)));
    c.push(Case::get("version u64::MAX", fhir("Patient/fix/_history/18446744073709551615"), Outcome(404)));
    c.push(Case::get("version 2^63", fhir("Patient/fix/_history/9223372036854775808"), Outcome(404)));
    c.push(
        Case::new("If-Match 2^64", "PUT", fhir("Patient/fix"), Outcome(400))
            .fhir(r#"{"resourceType":"Patient","id":"fix"}"#)
            .header("if-match", "W/\"18446744073709551616\""),
    );
    c.push(
        Case::new("If-Match u64::MAX", "PUT", fhir("Patient/fix"), Outcome(412))
            .fhir(r#"{"resourceType":"Patient","id":"fix"}"#)
            .header("if-match", "W/\"18446744073709551615\""),
    );

    // --- Duplicate keys: the last one wins everywhere, so a body that
    // names two types is judged (and would be stored) by the last.
    c.push(
        Case::new("duplicate resourceType, last wrong", "POST", fhir("Patient"), Outcome(400))
            .fhir(r#"{"resourceType":"Patient","resourceType":"Observation"}"#),
    );
    c.push(
        Case::new("duplicate id, last wrong", "PUT", fhir("Patient/fix"), Outcome(400))
            .fhir(r#"{"resourceType":"Patient","id":"fix","id":"other"}"#),
    );
    c.push(
        Case::new("duplicate Bundle.type, last wrong", "POST", format!("/fhir/{t}"), Outcome(400))
            .fhir(r#"{"resourceType":"Bundle","type":"transaction","type":"collection"}"#),
    );
    c.push(
        Case::new("duplicate admin keys", "POST", "/admin/tenants", Outcome(400))
            .body("application/json", r#"{"id":"dup-a","id":"dup-b"}"#),
    );

    // --- Oversized headers and URLs.
    c.push(Case::get("a 100 KiB header", fhir("Patient/fix"), Outcome(431)).header("x-big", "a".repeat(100 * 1024)));
    c.push(Case::get("a 1 MiB header", fhir("Patient/fix"), Parser(&[431])).header("x-big", "a".repeat(1 << 20)));
    let mut many = Case::get("200 headers", fhir("Patient/fix"), Parser(&[431]));
    for i in 0..200 {
        many = many.header(&format!("x-h{i}"), "v");
    }
    c.push(many);
    c.push(
        Case::get("a 100 KiB bearer token", fhir("Patient/fix"), Outcome(431))
            .anonymous()
            .header("authorization", format!("Bearer {}", "a".repeat(100 * 1024))),
    );
    c.push(Case::get("a 20 KiB URL path", fhir(&format!("Patient/{}", "a".repeat(20 * 1024))), Outcome(414)));
    c.push(Case::get("a 20 KiB query", fhir(&format!("Patient?name={}", "a".repeat(20 * 1024))), Outcome(414)));
    c.push(Case::get("a 70 KiB URL", fhir(&format!("Patient?name={}", "a".repeat(70 * 1024))), Parser(&[414])));
    c.push(Case::get(
        "a 10 KiB search value",
        fhir(&format!("Patient?name={}", "a".repeat(10 * 1024))),
        Bundle(Some(0)),
    ));
    c.push(Case::get("a 65-character id", fhir(&format!("Patient/{}", "a".repeat(65))), Outcome(400)));
    c.push(Case::get("a 64-character tenant", format!("/fhir/{}/Patient", "a".repeat(64)), Outcome(404)));

    // --- Path traversal, encoded separators, NUL, in every segment.
    for (what, tenant) in [
        ("..", ".."),
        ("%2E%2E", "%2E%2E"),
        ("encoded slash", "a%2Fb"),
        ("encoded backslash", "a%5Cb"),
        ("NUL", "a%00b"),
        ("traversal to admin", "..%2Fadmin"),
        ("upper case", "ACME"),
        ("reserved admin", "admin"),
        ("trailing dash", "a-"),
    ] {
        c.push(Case::get(format!("tenant {what}"), format!("/fhir/{tenant}/Patient"), Outcome(404)));
        c.push(
            Case::new(format!("create in tenant {what}"), "POST", format!("/fhir/{tenant}/Patient"), Outcome(404))
                .fhir(patient),
        );
        c.push(Case::get(format!("metadata of tenant {what}"), format!("/fhir/{tenant}/metadata"), Outcome(404)));
        c.push(Case::get(format!("admin tenant {what}"), format!("/admin/tenants/{tenant}"), Outcome(404)));
    }
    for (what, rtype) in
        [("..", ".."), ("encoded slash", "Patient%2Fx"), ("NUL", "Patient%00"), ("lower case", "patient")]
    {
        c.push(Case::get(format!("type {what}"), fhir(rtype), Outcome(404)));
        c.push(Case::new(format!("create type {what}"), "POST", fhir(rtype), Outcome(404)).fhir(patient));
    }
    for (what, id) in [
        ("..", ".."),
        (".", "."),
        ("%2E%2E", "%2E%2E"),
        ("%2e", "%2e"),
        ("encoded slash", "a%2Fb"),
        ("encoded traversal", "..%2F..%2Fadmin"),
        ("NUL", "a%00b"),
        ("trailing NUL", "fix%00"),
        ("encoded backslash", "a%5Cb"),
        ("underscore", "a_b"),
        ("unicode", "%C3%A9"),
    ] {
        let body = format!(r#"{{"resourceType":"Patient","id":"{}"}}"#, id.replace("%2E", ".").replace("%2e", "."));
        c.push(Case::new(format!("update id {what}"), "PUT", fhir(&format!("Patient/{id}")), Outcome(400)).fhir(body));
        c.push(Case::get(format!("read id {what}"), fhir(&format!("Patient/{id}")), Outcome(400)));
        c.push(Case::new(format!("delete id {what}"), "DELETE", fhir(&format!("Patient/{id}")), Outcome(400)));
        c.push(Case::get(format!("history of id {what}"), fhir(&format!("Patient/{id}/_history")), Outcome(400)));
    }
    c.push(
        Case::new("raw .. as id", "PUT", fhir("Patient/.."), Outcome(400))
            .fhir(r#"{"resourceType":"Patient","id":".."}"#),
    );
    c.push(
        Case::new("raw . as id", "PUT", fhir("Patient/."), Outcome(400)).fhir(r#"{"resourceType":"Patient","id":"."}"#),
    );
    c.push(Case::get("raw traversal out of /fhir", format!("/fhir/{t}/../../admin/tenants"), Outcome(404)));
    c.push(Case::get("raw NUL in the path", format!("/fhir/{t}/Patient/a\u{0}b").into_bytes(), Parser(&[400])));
    c.push(Case::get("raw space in the path", format!("/fhir/{t}/Patient/a b").into_bytes(), Parser(&[400])));
    c.push(Case::get("raw > in the tenant", "/fhir/>/Patient", Parser(&[400])));
    c.push(Case::get("raw > in the id", fhir("Patient/a>b"), Parser(&[400])));
    c.push(Case::get("absolute-form target to another host", "http://169.254.169.254/fhir", Outcome(404)));
    c.push(Case::get("asterisk target", "*", Parser(&[400, 404])));
    c.push(Case::get("empty tenant segment", "/fhir//Patient", Outcome(404)));
    for (what, v) in
        [("0", "0"), ("-1", "-1"), ("1.0", "1.0"), ("NUL", "1%00"), ("+1", "%2B1"), ("space", "1%20"), ("empty", "%20")]
    {
        c.push(Case::get(format!("version {what}"), fhir(&format!("Patient/fix/_history/{v}")), Outcome(400)));
    }

    // --- NATS subject wildcards and spaces in every segment.
    for m in SUBJECT_META {
        c.push(Case::get(format!("tenant {m}"), format!("/fhir/{m}/Patient/fix"), Outcome(404)));
        c.push(
            Case::new(format!("create in tenant {m}"), "POST", format!("/fhir/{m}/Patient"), Outcome(404))
                .fhir(patient),
        );
        c.push(Case::get(format!("type {m}"), fhir(&format!("{m}/fix")), Outcome(404)));
        c.push(Case::new(format!("create type {m}"), "POST", fhir(m), Outcome(404)).fhir(patient));
        if *m != "a.b" {
            let id = m.replace("%20", " ").replace("%09", "\t").replace("%2A", "*").replace("%3E", ">");
            let body = json!({"resourceType": "Patient", "id": id}).to_string();
            c.push(Case::new(format!("update id {m}"), "PUT", fhir(&format!("Patient/{m}")), Outcome(400)).fhir(body));
            c.push(Case::new(format!("delete id {m}"), "DELETE", fhir(&format!("Patient/{m}")), Outcome(400)));
        }
        c.push(Case::get(format!("version {m}"), fhir(&format!("Patient/fix/_history/{m}")), Outcome(400)));
        let valid_id = *m == "a.b";
        c.push(Case::get(
            format!("_id={m}"),
            fhir(&format!("Patient?_id={m}")),
            if valid_id { Bundle(Some(0)) } else { Outcome(400) },
        ));
        c.push(
            Case::new(format!("admin create tenant {m}"), "POST", "/admin/tenants", Outcome(400))
                .body("application/json", json!({"id": m}).to_string()),
        );
        if !valid_id {
            c.push(
                Case::new(format!("Bundle entry for id {m}"), "POST", format!("/fhir/{t}"), Outcome(400)).fhir(bundle(
                    "transaction",
                    vec![json!({"resource": {"resourceType": "Patient", "id": m}, "request": {"method": "PUT", "url": format!("Patient/{m}")}})],
                )),
            );
        }
    }

    // --- SQL metacharacters in every kind of search parameter and modifier.
    for m in SQL_META {
        let v = enc(m);
        // Values compared as text: legitimately nothing matches.
        for q in [
            format!("Patient?name={v}"),
            format!("Patient?name:exact={v}"),
            format!("Patient?name:contains={v}"),
            format!("Patient?address-city={v}"),
            format!("Patient?gender={v}"),
            format!("Patient?identifier={v}"),
            format!("Patient?identifier={v}%7C{v}"),
            format!("Patient?identifier:text={v}"),
            format!("Patient?_tag={v}"),
            format!("Patient?_profile={v}"),
            format!("Patient?_source={v}"),
            format!("Patient?_security={v}%7C{v}"),
            format!("Observation?value-quantity=5%7C{v}%7C{v}"),
            format!("Observation?subject=http://example.org/{v}"),
            format!("ValueSet?url={v}"),
            format!("ValueSet?url:below={v}"),
            format!("ValueSet?url:above={v}"),
            format!("Patient?_has:Observation:patient:code={v}"),
            format!("Observation?subject:Patient.name={v}"),
            format!("Observation?subject.identifier={v}"),
            format!("Patient?name={v}&_sort=-name,birthdate"),
        ] {
            c.push(Case::get(format!("{m} in {q}"), fhir(&q), Bundle(Some(0))));
        }
        c.push(Case::get(
            format!("{m} in identifier:not"),
            fhir(&format!("Patient?identifier:not={v}")),
            Bundle(Some(3)),
        ));
        c.push(
            Case::new(format!("{m} in a form search"), "POST", fhir("Patient/_search"), Bundle(Some(0)))
                .body("application/x-www-form-urlencoded", format!("name={v}&family:contains={v}")),
        );
        c.push(
            Case::new(format!("{m} in a system form search"), "POST", format!("/fhir/{t}/_search"), Bundle(Some(0)))
                .body("application/x-www-form-urlencoded", format!("_tag={v}")),
        );
        // Ignored as unknown (a parameter name is never SQL).
        c.push(Case::get(format!("{m} as a parameter name"), fhir(&format!("Patient?{v}=x")), Bundle(Some(3))));
        c.push(Case::get(format!("{m} in _sort"), fhir(&format!("Patient?_sort={v}")), Bundle(Some(3))));
        c.push(
            Case::get(format!("{m} in _sort, strict"), fhir(&format!("Patient?_sort={v}")), Outcome(400))
                .header("prefer", "handling=strict"),
        );
        // Malformed wherever the value has a grammar.
        for q in [
            format!("Patient?birthdate={v}"),
            format!("Patient?birthdate=ge{v}"),
            format!("Patient?_lastUpdated={v}"),
            format!("RiskAssessment?probability={v}"),
            format!("Observation?value-quantity={v}"),
            format!("Observation?subject={v}"),
            format!("Observation?subject=Patient/{v}"),
            format!("Observation?subject:Patient={v}"),
            format!("Patient?_id={v}"),
            format!("Patient?name:{v}=x"),
            format!("Patient?gender:{v}=x"),
            format!("Patient?_include={v}"),
            format!("Patient?_include=Patient:{v}"),
            format!("Patient?_revinclude=Observation:{v}"),
            format!("Patient?_include:iterate={v}"),
            format!("Patient?_has:{v}:patient:code=x"),
            format!("Patient?_has:Observation:patient:{v}=x"),
            format!("Observation?subject:{v}.name=x"),
            format!("Patient?_elements={v}"),
            format!("Patient?_cursor={v}"),
            format!("Patient?_total={v}"),
            format!("Patient?_summary={v}"),
            format!("Patient?name:missing={v}"),
            format!("{t}?_type={v}"),
            format!("Patient/_history?_since={v}"),
            format!("Patient/_history?_cursor={v}"),
        ] {
            let url = if q.starts_with(t) { format!("/fhir/{q}") } else { fhir(&q) };
            // `--` is a valid FHIR id, `_` a valid element name, and a
            // `_has` naming no parameter is ignored like any unknown one.
            let want = if *m == "--" && (q.contains("subject") && !q.contains('.') || q.contains("_id=")) {
                Bundle(Some(0))
            } else if (*m == "_" && q.contains("_elements")) || q.starts_with("Patient?_has:Observation:patient:") {
                Bundle(Some(3))
            } else {
                Outcome(400)
            };
            c.push(Case::get(format!("{m} in {q}"), url, want));
        }
        // A conditional delete matching nothing deletes nothing.
        c.push(Case::new(
            format!("{m} in a conditional delete"),
            "DELETE",
            fhir(&format!("Patient?identifier={v}")),
            Empty(204),
        ));
    }
    // NUL reaches PostgreSQL as text nowhere.
    for q in [
        "Patient?name=a%00b",
        "Patient?name:exact=%00",
        "Patient?name:contains=%00",
        "Patient?gender=%00",
        "Patient?identifier=%00%7C%00",
        "Patient?identifier:text=%00",
        "Patient?_tag=%00",
        "Patient?_profile=%00",
        "Observation?value-quantity=5%7C%00%7C%00",
        "Observation?subject=http://x/%00",
        "Observation?subject=urn:%00",
        "ValueSet?url:below=%00",
        "ValueSet?url:above=%00",
        "Patient?_has:Observation:patient:code=%00",
        "Observation?subject:Patient.name=%00",
        "Patient?_elements=%00",
        "Patient?_cursor=%00",
        "Patient/_history?_since=%00",
        "Patient?na%00me=x",
        "Patient?name=x&_sort=%00",
    ] {
        c.push(Case::get(format!("NUL in {q}"), fhir(q), Outcome(400)));
    }
    c.push(Case::new("NUL in a conditional delete", "DELETE", fhir("Patient?identifier=%00"), Outcome(400)));
    c.push(
        Case::new("NUL in a conditional update", "PUT", fhir("Patient?identifier=urn:x%7C%00"), Outcome(400))
            .fhir(patient),
    );
    c.push(
        Case::new("NUL in If-None-Exist", "POST", fhir("Patient"), Outcome(400))
            .fhir(patient)
            .header("if-none-exist", "identifier=%00"),
    );
    c.push(Case::get("a dangling escape", fhir("Patient?name=%5C"), Outcome(400)));
    c.push(Case::get("a dangling escape after a value", fhir("Patient?name=Fix%5C"), Outcome(400)));
    c.push(Case::get("an escaped comma", fhir("Patient?name=a%5C,b"), Bundle(Some(0))));

    // --- Invalid dates and prefixes.
    for d in [
        "1980-13",
        "1980-02-30",
        "1980-1-1",
        "19800101",
        "99999",
        "0000",
        "-1980",
        "%2B1980",
        "1980-01-01T25:00",
        "1980-01-01T10:00:60",
        "1980-01-01T10",
        "1980-01-01T10:00%2B15:00",
        "1980-01-01T10:00Z%20",
        "xx1980",
        "eq",
        "gt",
        "ap",
        "nn1980",
        "EQ1980",
        "1980-01-01T10:00:00.",
        "%20",
    ] {
        c.push(Case::get(format!("birthdate={d}"), fhir(&format!("Patient?birthdate={d}")), Outcome(400)));
        c.push(Case::get(format!("_lastUpdated={d}"), fhir(&format!("Patient?_lastUpdated={d}")), Outcome(400)));
    }
    for d in [
        "ap0001",
        "ap9999-12-31T23:59:59.999999999-14:00",
        "gt9999",
        "lt0001",
        "sa0001-01-01T00:00%2B14:00",
        "eb9999-12-31T23:59:59%2B14:00",
    ] {
        c.push(Case::get(format!("extreme date {d}"), fhir(&format!("Patient?_lastUpdated={d}")), Bundle(None)));
        c.push(Case::get(format!("extreme birthdate {d}"), fhir(&format!("Patient?birthdate={d}")), Bundle(None)));
    }

    // --- Includes: cycles, wildcards, many.
    c.push(Case::get(
        "cyclic _include:iterate and _revinclude:iterate",
        fhir("Patient?_include:iterate=Patient:link&_revinclude:iterate=Patient:link&_revinclude:iterate=Observation:subject&_include:iterate=Observation:subject"),
        Bundle(Some(3)),
    ));
    c.push(Case::get("a wildcard _include", fhir("Patient?_include=*"), Outcome(400)));
    c.push(Case::get("a wildcard _include parameter", fhir("Patient?_include=Patient:*"), Outcome(400)));
    let many_includes: String = (0..300).map(|_| "&_include:iterate=Patient:link&_revinclude=Patient:link").collect();
    c.push(
        Case::new("600 includes", "POST", fhir("Patient/_search"), Outcome(400))
            .body("application/x-www-form-urlencoded", format!("_id=fix{many_includes}")),
    );
    let many_ands: String = (0..300).map(|i| format!("&name:contains=f{i}")).collect();
    c.push(Case::get("300 AND clauses", fhir(&format!("Patient?_count=1{many_ands}")), Outcome(400)));
    let most_ands: String =
        (0..16).map(|i| format!("&name:contains=f{i}&_has:Observation:patient:code=c{i}")).collect();
    c.push(Case::get(
        "32 AND clauses, half of them _has",
        fhir(&format!("Patient?_count=1{most_ands}")),
        Bundle(Some(0)),
    ));
    let many_ors: String = (0..3000).map(|i| format!("x{i},")).collect();
    c.push(
        Case::new("3000 OR values", "POST", fhir("Patient/_search"), Outcome(400))
            .body("application/x-www-form-urlencoded", format!("name={many_ors}y")),
    );
    let ids: String = (0..999).map(|i| format!("i{i},")).collect();
    c.push(
        Case::new("1000 ids, the most one parameter may list", "POST", fhir("Patient/_search"), Bundle(Some(1)))
            .body("application/x-www-form-urlencoded", format!("_id={ids}fix")),
    );
    c.push(Case::get(
        "chains deeper than two",
        fhir("Observation?subject:Patient.link:Patient.link:Patient.name=x"),
        Outcome(400),
    ));
    c.push(Case::get(
        "nested _has",
        fhir("Patient?_has:Observation:patient:_has:Observation:subject:code=x"),
        Outcome(400),
    ));
    c.push(Case::get("system search of a type that is not one", format!("/fhir/{t}?_type=Patient,*"), Outcome(400)));

    // --- Giant Bundles.
    let entries: Vec<Value> = (0..101).map(|_| post_entry(json!({"resourceType": "Patient"}))).collect();
    c.push(
        Case::new("a transaction over the entry limit", "POST", format!("/fhir/{t}"), Outcome(413))
            .fhir(bundle("transaction", entries.clone())),
    );
    c.push(
        Case::new("a batch over the entry limit", "POST", format!("/fhir/{t}"), Outcome(413))
            .fhir(bundle("batch", entries)),
    );
    let big = "x".repeat(20 * 1024);
    let entries: Vec<Value> = (0..60)
        .map(|_| post_entry(json!({"resourceType": "Patient", "text": {"status": "generated", "div": big}})))
        .collect();
    c.push(
        Case::new("a transaction over the body limit", "POST", format!("/fhir/{t}"), Outcome(413))
            .fhir(bundle("transaction", entries)),
    );
    c.push(
        Case::new("a body over the limit without Content-Length", "POST", format!("/fhir/{t}"), Outcome(413))
            .fhir(chunked(&"x".repeat(1_200_000)))
            .header("transfer-encoding", "chunked"),
    );
    c.push(
        Case::new("a declared length over the limit", "POST", fhir("Patient"), Outcome(413))
            .fhir(patient)
            .header("content-length", "999999999999"),
    );
    let mut entries: Vec<Value> = (0..99).map(|_| post_entry(json!({"resourceType": "Patient"}))).collect();
    entries.push(post_entry(json!({"resourceType": "Patient", "name": [{"family": "a\u{0}b"}]})));
    c.push(
        Case::new("a transaction whose last entry holds NUL", "POST", format!("/fhir/{t}"), Outcome(400))
            .fhir(bundle("transaction", entries)),
    );
    let hostile_entries: Vec<(Value, u16)> = vec![
        (
            json!({"request": {"method": "PUT", "url": "Patient/.."}, "resource": {"resourceType": "Patient", "id": ".."}}),
            400,
        ),
        (
            json!({"request": {"method": "PUT", "url": "../Patient/x"}, "resource": {"resourceType": "Patient", "id": "x"}}),
            400,
        ),
        (
            json!({"request": {"method": "PUT", "url": "Patient/x/../y"}, "resource": {"resourceType": "Patient", "id": "y"}}),
            400,
        ),
        (
            json!({"request": {"method": "PUT", "url": "Patient/%2e%2e"}, "resource": {"resourceType": "Patient", "id": ".."}}),
            400,
        ),
        (
            json!({"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient", "name": [{"family": "\u{0}"}]}}),
            400,
        ),
        (
            json!({"request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=%00"}, "resource": {"resourceType": "Patient"}}),
            400,
        ),
        (json!({"request": {"method": "DELETE", "url": "Patient?identifier=%00"}}), 400),
        (
            json!({"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient", "\u{0}": 1}}),
            400,
        ),
        (json!({"request": {"method": "TRACE", "url": "Patient"}}), 400),
        (json!({"request": {"method": "POST", "url": "Patient'; --"}, "resource": {"resourceType": "Patient"}}), 400),
        (
            json!({"request": {"method": "PUT", "url": "Patient/x", "ifMatch": "W/\"18446744073709551616\""}, "resource": {"resourceType": "Patient", "id": "x"}}),
            400,
        ),
        (
            json!({"request": {"method": "PATCH", "url": "Patient/fix"}, "resource": [{"op": "add", "path": "/gender", "value": "\u{0}"}]}),
            422,
        ),
        (
            json!({"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient", "contained": [{"resourceType": "Patient", "name": [{"family": "\u{1}"}]}]}}),
            400,
        ),
    ];
    for (i, (e, status)) in hostile_entries.iter().enumerate() {
        c.push(
            Case::new(
                format!("transaction entry {i}: {}", e["request"]),
                "POST",
                format!("/fhir/{t}"),
                Outcome(*status),
            )
            .fhir(bundle("transaction", vec![e.clone()])),
        );
    }
    // In a batch, entries that parse fail one by one (the others make the
    // whole Bundle malformed).
    let batch: Vec<Value> = [4, 7, 11, 12].iter().map(|i| hostile_entries[*i].0.clone()).collect();
    c.push(
        Case::new("a batch of hostile entries", "POST", format!("/fhir/{t}"), FailedBatch).fhir(bundle("batch", batch)),
    );
    c.push(
        Case::new("a Bundle whose entry is an object", "POST", format!("/fhir/{t}"), Outcome(400))
            .fhir(r#"{"resourceType":"Bundle","type":"transaction","entry":{"a":1}}"#),
    );

    // --- Control characters in resources (FHIR strings forbid them; NUL
    // cannot be stored in PostgreSQL at all).
    for (what, body) in [
        ("NUL in a string", json!({"resourceType": "Patient", "name": [{"family": "a\u{0}b"}]})),
        ("NUL in a key", json!({"resourceType": "Patient", "\u{0}x": "y"})),
        (
            "NUL in an extension url",
            json!({"resourceType": "Patient", "extension": [{"url": "\u{0}", "valueString": "x"}]}),
        ),
        ("a bell character", json!({"resourceType": "Patient", "name": [{"family": "a\u{7}b"}]})),
        ("an escape character", json!({"resourceType": "Patient", "name": [{"family": "\u{1b}[31m"}]})),
    ] {
        c.push(Case::new(format!("create: {what}"), "POST", fhir("Patient"), Outcome(400)).fhir(body.to_string()));
        let mut with_id = body.clone();
        with_id["id"] = json!("fix");
        c.push(
            Case::new(format!("update: {what}"), "PUT", fhir("Patient/fix"), Outcome(400)).fhir(with_id.to_string()),
        );
    }
    c.push(
        Case::new("PATCH adding NUL", "PATCH", fhir("Patient/fix"), Outcome(422)).body(
            "application/json-patch+json",
            json!([{"op": "add", "path": "/gender", "value": "\u{0}"}]).to_string(),
        ),
    );
    // --- JSON Patch that grows the resource without bound.
    let doubling: Vec<Value> = (0..64).map(|i| json!({"op": "copy", "from": "", "path": format!("/x{i}")})).collect();
    c.push(
        Case::new("PATCH copying the whole resource 64 times", "PATCH", fhir("Patient/fix"), Outcome(422))
            .body("application/json-patch+json", Value::from(doubling).to_string()),
    );
    let mut ops: Vec<Value> = (0..20_000).map(|_| json!({"op": "test", "path": "/id", "value": "fix"})).collect();
    ops.push(json!({"op": "test", "path": "/id", "value": "other"}));
    c.push(
        Case::new("PATCH of 20,000 operations", "PATCH", fhir("Patient/fix"), Outcome(422))
            .body("application/json-patch+json", Value::from(ops).to_string()),
    );
    for (what, ops) in [
        ("replacing resourceType", json!([{"op": "replace", "path": "/resourceType", "value": "Observation"}])),
        ("replacing the id", json!([{"op": "replace", "path": "/id", "value": "other"}])),
        ("removing the root", json!([{"op": "remove", "path": ""}])),
        ("moving the root into itself", json!([{"op": "move", "from": "", "path": "/a"}])),
        ("a pointer with NUL", json!([{"op": "add", "path": "/\u{0}", "value": 1}])),
        ("an unknown op", json!([{"op": "eval", "path": "/a"}])),
    ] {
        c.push(
            Case::new(format!("PATCH {what}"), "PATCH", fhir("Patient/fix"), Outcome(422))
                .body("application/json-patch+json", ops.to_string()),
        );
    }

    // --- Wrong content types.
    for ct in [
        "text/plain",
        "application/xml",
        "application/fhir+xml",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "application/json-patch+json",
        "",
        "*/*",
    ] {
        c.push(Case::new(format!("create as {ct:?}"), "POST", fhir("Patient"), Outcome(415)).body(ct, patient));
        c.push(
            Case::new(format!("transaction as {ct:?}"), "POST", format!("/fhir/{t}"), Outcome(415)).body(ct, patient),
        );
    }
    c.push(
        Case::new("a form search sent as JSON", "POST", fhir("Patient/_search"), Outcome(415))
            .body("application/json", r#"{"name":"x"}"#),
    );
    c.push(
        Case::new("PATCH as FHIR JSON", "PATCH", fhir("Patient/fix"), Outcome(415))
            .fhir(r#"[{"op":"remove","path":"/gender"}]"#),
    );
    c.push(
        Case::new("a gzip body that is not decoded", "POST", fhir("Patient"), Outcome(400))
            .fhir(b"\x1f\x8b\x08\x00garbage".to_vec())
            .header("content-encoding", "gzip"),
    );
    c.push(
        Case::new("a malformed chunked body", "POST", fhir("Patient"), Parser(&[400]))
            .fhir(b"zz\r\n{}\r\n0\r\n\r\n".to_vec())
            .header("transfer-encoding", "chunked"),
    );
    c.push(
        Case::new("Content-Length and chunked together", "POST", fhir("Patient"), Parser(&[400]))
            .fhir(b"5\r\n{\"a\":\r\n0\r\n\r\n".to_vec())
            .header("transfer-encoding", "chunked")
            .header("content-length", "3"),
    );
    c.push(
        Case::new("two Content-Lengths", "POST", fhir("Patient"), Parser(&[400]))
            .fhir(patient)
            .header("content-length", "26")
            .header("content-length", "2"),
    );

    // --- Methods not allowed.
    for (method, path) in [
        ("TRACE", fhir("Patient/fix")),
        ("OPTIONS", fhir("Patient")),
        ("PROPFIND", fhir("Patient")),
        ("FOO", fhir("Patient")),
        ("DELETE", format!("/fhir/{t}")),
        ("PUT", format!("/fhir/{t}")),
        ("PATCH", fhir("Patient")),
        ("POST", fhir("Patient/fix")),
        ("GET", fhir("Patient/_search")),
        ("GET", format!("/fhir/{t}/_search")),
        ("POST", fhir("Patient/fix/_history")),
        ("DELETE", fhir("Patient/fix/_history/1")),
        ("POST", fhir("Patient/_history")),
        ("DELETE", format!("/fhir/{t}/metadata")),
        ("POST", "/health".into()),
        ("DELETE", "/metrics".into()),
        ("PUT", "/admin/tenants".into()),
        ("POST", format!("/admin/tenants/{t}")),
    ] {
        c.push(Case::new(format!("{method} {path}"), method, path, Outcome(405)));
    }

    // --- Authentication and tenancy under hostile headers.
    c.push(Case::get("no token", fhir("Patient/fix"), Outcome(401)).anonymous());
    c.push(
        Case::get("a Basic credential", fhir("Patient/fix"), Outcome(401))
            .anonymous()
            .header("authorization", "Basic YTpi"),
    );
    c.push(
        Case::get("a garbage token", fhir("Patient/fix"), Outcome(401))
            .anonymous()
            .header("authorization", "Bearer a.b.c"),
    );
    c.push(Case::get("an alg:none token", fhir("Patient/fix"), Outcome(401)).anonymous().header(
        "authorization",
        "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo0MTAyNDQ0ODAwLCJ0ZW5hbnRzIjpbIioiXSwic2NvcGUiOiJzeXN0ZW0vKi4qIn0.",
    ));
    c.push(
        Case::get("two Authorization headers", fhir("Patient/fix"), Outcome(401)).header("authorization", "Bearer x"),
    );
    let other_only = support::token(&[other], "system/*.*");
    c.push(
        Case::get("another tenant's token", fhir("Patient/fix"), Outcome(403))
            .anonymous()
            .header("authorization", format!("Bearer {other_only}")),
    );
    c.push(
        Case::new("another tenant's token writing", "POST", fhir("Patient"), Outcome(403))
            .anonymous()
            .header("authorization", format!("Bearer {other_only}"))
            .fhir(patient),
    );
    c
}

/// A body in one chunk of chunked transfer encoding.
fn chunked(body: &str) -> Vec<u8> {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).into_bytes()
}

/// Everything a hostile request could have written to.
async fn footprint(app: &TestApp, t: &str) -> (u64, Vec<i64>, Value) {
    let pool = app.db.pool().await;
    let mut rows = Vec::new();
    for table in ["resource_versions", "resources", "search_values", "tenants"] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
            .fetch_one(&pool)
            .await
            .unwrap();
        rows.push(n);
    }
    let history: Value = app.get(t, "_history?_count=1000").await.json().await.unwrap();
    let versions = json!({"total": history["total"], "entries": history["entry"].as_array().map(Vec::len)});
    (app.stream_count("fhir.>").await, rows, versions)
}

#[tokio::test]
async fn every_hostile_request_gets_its_4xx_outcome_or_a_harmless_answer_and_writes_nothing() {
    let app = TestApp::spawn_secure_with(|cfg| {
        cfg.max_body_bytes = 1 << 20;
        cfg.max_bundle_entries = 100;
    })
    .await;
    let t = app.tenant("hostile").await;
    let other = app.tenant("other").await;
    // Fixtures: two patients linking to each other (for cyclic includes),
    // one more, and an Observation about the first.
    for body in [
        json!({"resourceType": "Patient", "id": "fix", "gender": "male", "name": [{"family": "Fixture"}],
               "identifier": [{"system": "urn:x", "value": "fix"}], "link": [{"other": {"reference": "Patient/fix2"}, "type": "seealso"}]}),
        json!({"resourceType": "Patient", "id": "fix2", "link": [{"other": {"reference": "Patient/fix"}, "type": "seealso"}]}),
        json!({"resourceType": "Patient", "id": "fix3", "active": true}),
        json!({"resourceType": "Observation", "id": "obs", "status": "final", "code": {"text": "x"},
               "subject": {"reference": "Patient/fix"}, "valueQuantity": {"value": 5, "unit": "mg"}}),
    ] {
        let path = format!("{}/{}", body["resourceType"].as_str().unwrap(), body["id"].as_str().unwrap());
        let res = app.put(&t, &path, &body).await;
        assert!(res.status().is_success(), "fixture {path}: {}", res.text().await.unwrap());
    }
    app.wait_caught_up(Duration::from_secs(10)).await;
    let before = footprint(&app, &t).await;

    let port = app.base.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let token = app.admin_token.clone();
    let cases = corpus(&t, &other);
    let total = cases.len();
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for case in &cases {
        let request = request_bytes(case, token.as_deref());
        let sent = std::time::Instant::now();
        let result = exchange(port, request).await;
        if sent.elapsed() > Duration::from_secs(2) {
            eprintln!("slow ({:?}): {}", sent.elapsed(), case.what);
        }
        match result {
            Err(e) => failures.push(format!("{}: {e}", case.what)),
            Ok(reply) => {
                if let Some(why) = judge(&case.want, &reply) {
                    failures.push(format!("{}: {why}", case.what));
                }
            }
        }
    }
    eprintln!("hostile corpus: {total} requests in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {total} hostile requests were mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
    app.wait_caught_up(Duration::from_secs(10)).await;
    let after = footprint(&app, &t).await;
    assert_eq!(after, before, "hostile requests wrote something (stream count, row counts, history)");
    assert!(app.http.get(app.url("/health")).send().await.unwrap().status().is_success(), "the server survived");
}
