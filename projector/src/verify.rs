//! Verifying a tenant's read model against its events, the pure half: fold
//! the events into what the read model must hold, describe the rows it does
//! hold in the same terms, and list every difference.
//!
//! Both sides are reduced per resource to its current version, deleted flag
//! and body digest, its list of stored versions, and an order-free digest of
//! its index rows. So verifying a tenant costs memory in proportion to its
//! resources, not to its bodies or its (much more numerous) index rows.
//! Bodies are compared as JSON values, never as text: `jsonb` reorders keys
//! and rewrites numbers (`1.0` and `1` are the same value to it).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use schemas::{EventOp, ResourceEvent};

use crate::apply::{IndexRows, index_event};

/// A resource within a tenant: its type and id.
pub type Key = (String, String);

/// SHA-256 of a body's canonical JSON (keys sorted, numbers normalised).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BodyHash([u8; 32]);

impl BodyHash {
    /// Hashes a stored or published body. Text that is not JSON is hashed
    /// as it is, so it still compares equal only to itself.
    pub fn of(text: &str) -> Self {
        let mut canonical = Vec::with_capacity(text.len());
        match serde_json::from_str::<Value>(text) {
            Ok(v) => write_canonical(&v, &mut canonical),
            Err(_) => canonical.extend_from_slice(text.as_bytes()),
        }
        Self(Sha256::digest(&canonical).into())
    }
}

impl fmt::Display for BodyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for BodyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for BodyHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// JSON with object keys sorted and every number written one way, so two
/// equal values always give the same bytes.
fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(canonical_number(n).as_bytes()),
        Value::String(s) => out.extend_from_slice(Value::String(s.clone()).to_string().as_bytes()),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

/// Integers as integers, whether written `100`, `100.0` or `1e2`; other
/// numbers as the shortest text that reads back as the same `f64`.
fn canonical_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 && f.abs() < 9.0e15 { (f as i64).to_string() } else { f.to_string() }
}

/// One `search_values` row, borrowed from wherever it was read.
#[derive(Debug, Default, Clone, Copy)]
pub struct IndexRow<'r> {
    pub param: &'r str,
    pub kind: &'r str,
    pub text_norm: Option<&'r str>,
    pub text_exact: Option<&'r str>,
    pub system: Option<&'r str>,
    pub code: Option<&'r str>,
    pub unit: Option<&'r str>,
    pub lo: Option<DateTime<Utc>>,
    pub hi: Option<DateTime<Utc>>,
    /// As text; compared by value (`0.50` = `0.5`, `1e3` = `1000`), since
    /// PostgreSQL's `numeric` rewrites some spellings.
    pub num: Option<&'r str>,
    pub ref_type: Option<&'r str>,
    pub ref_id: Option<&'r str>,
}

impl<'r> IndexRow<'r> {
    /// Row `i` of rows the projector planned.
    pub fn planned(rows: &'r IndexRows<'_>, i: usize) -> Self {
        Self {
            param: rows.param[i],
            kind: rows.kind[i],
            text_norm: rows.text_norm[i].as_deref(),
            text_exact: rows.text_exact[i].as_deref(),
            system: rows.system[i].as_deref(),
            code: rows.code[i].as_deref(),
            unit: rows.unit[i].as_deref(),
            lo: rows.lo[i],
            hi: rows.hi[i],
            num: rows.num[i].as_deref(),
            ref_type: rows.ref_type[i],
            ref_id: rows.ref_id[i].as_deref(),
        }
    }

    fn hash(&self) -> u128 {
        let mut h = Sha256::new();
        let mut field = |v: Option<&[u8]>| match v {
            None => h.update([0u8]),
            Some(bytes) => {
                h.update([1u8]);
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(bytes);
            }
        };
        // Timestamps at PostgreSQL's precision: microseconds.
        let micros = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_micros().to_le_bytes());
        let num = self.num.map(|n| match n.trim().parse::<f64>() {
            Ok(f) => f.to_bits().to_le_bytes().to_vec(),
            Err(_) => n.as_bytes().to_vec(),
        });
        field(Some(self.param.as_bytes()));
        field(Some(self.kind.as_bytes()));
        for text in [self.text_norm, self.text_exact, self.system, self.code, self.unit] {
            field(text.map(str::as_bytes));
        }
        field(micros(self.lo).as_ref().map(|b| &b[..]));
        field(micros(self.hi).as_ref().map(|b| &b[..]));
        field(num.as_deref());
        field(self.ref_type.map(str::as_bytes));
        field(self.ref_id.map(str::as_bytes));
        let digest = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        u128::from_le_bytes(first)
    }
}

/// A resource's index rows as a count and a sum of row hashes: equal
/// multisets of rows give equal digests, in whatever order they are read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexDigest {
    pub rows: u64,
    sum: u128,
}

impl IndexDigest {
    pub fn add(&mut self, row: &IndexRow<'_>) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(row.hash());
    }

    /// The digest of rows the projector planned.
    pub fn of(rows: &IndexRows<'_>) -> Self {
        let mut d = Self::default();
        for i in 0..rows.len() {
            d.add(&IndexRow::planned(rows, i));
        }
        d
    }
}

/// A resource's current row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub version: u64,
    pub deleted: bool,
    /// `None` for a delete, or when the current version's body is missing.
    pub body: Option<BodyHash>,
}

/// What a read model holds (or must hold) of one resource.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResourceState {
    pub current: Option<Current>,
    /// Versions stored, in the order they were seen.
    pub versions: Vec<u64>,
    pub index: IndexDigest,
}

/// A tenant's read model reduced to what verification compares.
#[derive(Debug, Default)]
pub struct Model {
    resources: BTreeMap<Key, ResourceState>,
}

impl Model {
    fn entry(&mut self, resource_type: &str, id: &str) -> &mut ResourceState {
        self.resources.entry((resource_type.to_owned(), id.to_owned())).or_default()
    }

    /// Folds one event as the projector does: every version is stored, the
    /// highest becomes current, and the index describes the current body.
    pub fn fold(&mut self, e: &ResourceEvent, seq: u64) {
        let version = e.version.get();
        let state = self.entry(e.resource_type.as_str(), e.id.as_str());
        if !state.versions.contains(&version) {
            state.versions.push(version);
        }
        if state.current.is_some_and(|c| c.version >= version) {
            return;
        }
        let body = e.resource.as_deref().map(|b| BodyHash::of(b.get()));
        state.current = Some(Current { version, deleted: e.op == EventOp::Delete, body });
        let mut rows = IndexRows::default();
        index_event(&mut rows, e, seq);
        state.index = IndexDigest::of(&rows);
    }

    /// Records a `resources` row and the body of the version it points to.
    pub fn add_current(&mut self, resource_type: &str, id: &str, version: u64, deleted: bool, body: Option<&str>) {
        self.entry(resource_type, id).current = Some(Current { version, deleted, body: body.map(BodyHash::of) });
    }

    /// Records a `resource_versions` row.
    pub fn add_version(&mut self, resource_type: &str, id: &str, version: u64) {
        self.entry(resource_type, id).versions.push(version);
    }

    /// Records a `search_values` row.
    pub fn add_index_row(&mut self, resource_type: &str, id: &str, row: &IndexRow<'_>) {
        self.entry(resource_type, id).index.add(row);
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for s in self.resources.values() {
            if let Some(cur) = &s.current {
                c.resources += 1;
                c.live += u64::from(!cur.deleted);
            }
            c.versions += s.versions.len() as u64;
            c.index_rows += s.index.rows;
        }
        c
    }
}

/// Row counts of a read model.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// `resources` rows (deleted ones included).
    pub resources: u64,
    /// Resources that are not deleted.
    pub live: u64,
    /// `resource_versions` rows.
    pub versions: u64,
    /// `search_values` rows.
    pub index_rows: u64,
}

/// One way the read model differs from the events, for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub resource_type: String,
    pub id: String,
    #[serde(flatten)]
    pub what: Mismatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mismatch {
    /// The events have the resource; the read model has no current row.
    Missing { expected_version: u64 },
    /// The read model has rows of a resource the events never mention.
    Extra { version: Option<u64> },
    /// The current row is at another version.
    Version { expected: u64, actual: u64 },
    /// The current row is (not) deleted when it should (not) be.
    Deleted { version: u64, expected: bool, actual: bool },
    /// The current version's body differs (SHA-256 of its canonical JSON;
    /// `null`: no body stored).
    Content { version: u64, expected: Option<BodyHash>, actual: Option<BodyHash> },
    /// Stored versions missing or not in the events.
    History { missing: Vec<u64>, extra: Vec<u64> },
    /// The index rows are not those of the current body.
    Index { expected_rows: u64, actual_rows: u64 },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}: ", self.resource_type, self.id)?;
        let hash = |h: &Option<BodyHash>| h.map(|h| h.to_string()[..12].to_owned()).unwrap_or_else(|| "none".into());
        match &self.what {
            Mismatch::Missing { expected_version } => {
                write!(f, "missing from the read model (the events end at version {expected_version})")
            }
            Mismatch::Extra { version: Some(v) } => write!(f, "in the read model (version {v}) but not in the events"),
            Mismatch::Extra { version: None } => write!(f, "has rows in the read model but no events"),
            Mismatch::Version { expected, actual } => write!(f, "current version {actual}, the events say {expected}"),
            Mismatch::Deleted { version, expected, actual } => {
                let word = |d: bool| if d { "deleted" } else { "not deleted" };
                write!(f, "version {version} is {} in the read model, {} in the events", word(*actual), word(*expected))
            }
            Mismatch::Content { version, expected, actual } => write!(
                f,
                "body of version {version} differs (sha256 {} in the read model, {} in the events)",
                hash(actual),
                hash(expected)
            ),
            Mismatch::History { missing, extra } => {
                write!(f, "stored versions differ (missing {missing:?}, not in the events {extra:?})")
            }
            Mismatch::Index { expected_rows, actual_rows } => {
                write!(f, "index rows differ ({actual_rows} in the read model, {expected_rows} from the current body)")
            }
        }
    }
}

/// Every difference between what the events say (`expected`) and what the
/// read model holds (`actual`), in resource order.
pub fn compare(expected: &Model, actual: &Model) -> Vec<Difference> {
    let mut out = Vec::new();
    let empty = ResourceState::default();
    let mut keys: Vec<&Key> = expected.resources.keys().chain(actual.resources.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let mut push = |what| out.push(Difference { resource_type: key.0.clone(), id: key.1.clone(), what });
        let (e, a) = (expected.resources.get(key), actual.resources.get(key));
        let Some(e) = e else {
            push(Mismatch::Extra { version: a.and_then(|a| a.current).map(|c| c.version) });
            continue;
        };
        let Some(ec) = e.current else { continue };
        let a = a.unwrap_or(&empty);
        match a.current {
            None => {
                push(Mismatch::Missing { expected_version: ec.version });
                // Nothing at all of it: one line says everything.
                if a == &empty {
                    continue;
                }
            }
            Some(ac) if ac.version != ec.version => {
                push(Mismatch::Version { expected: ec.version, actual: ac.version });
            }
            Some(ac) if ac.deleted != ec.deleted => {
                push(Mismatch::Deleted { version: ec.version, expected: ec.deleted, actual: ac.deleted });
            }
            Some(ac) if ac.body != ec.body => {
                push(Mismatch::Content { version: ec.version, expected: ec.body, actual: ac.body });
            }
            Some(_) => {}
        }
        let missing: Vec<u64> = sorted(&e.versions).into_iter().filter(|v| !a.versions.contains(v)).collect();
        let extra: Vec<u64> = sorted(&a.versions).into_iter().filter(|v| !e.versions.contains(v)).collect();
        if !missing.is_empty() || !extra.is_empty() {
            push(Mismatch::History { missing, extra });
        }
        if e.index != a.index {
            push(Mismatch::Index { expected_rows: e.index.rows, actual_rows: a.index.rows });
        }
    }
    out
}

fn sorted(v: &[u64]) -> Vec<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// The result of verifying one tenant: what `fhirstream verify` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tenant: String,
    /// The projector checkpoint the read model was read at; the events were
    /// folded up to the same sequence.
    pub sequence: u64,
    /// Resource events folded.
    pub events: u64,
    pub identical: bool,
    pub expected: Counts,
    pub actual: Counts,
    pub total_differences: usize,
    /// Events left out of the fold because the projector recorded them in
    /// `refused_events` (PostgreSQL refused their data); the read model
    /// lacks them by design.
    pub refused: u64,
    /// The first `limit` differences.
    pub differences: Vec<Difference>,
}

impl Report {
    pub fn new(tenant: &str, sequence: u64, events: u64, expected: &Model, actual: &Model, limit: usize) -> Self {
        let mut differences = compare(expected, actual);
        let total_differences = differences.len();
        differences.truncate(limit);
        let (expected, actual) = (expected.counts(), actual.counts());
        Self {
            tenant: tenant.to_owned(),
            sequence,
            events,
            identical: total_differences == 0 && expected == actual,
            expected,
            actual,
            total_differences,
            refused: 0,
            differences,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = |c: &Counts| {
            format!("{} resources ({} live), {} versions, {} index rows", c.resources, c.live, c.versions, c.index_rows)
        };
        writeln!(f, "tenant {} at sequence {} ({} events)", self.tenant, self.sequence, self.events)?;
        writeln!(f, "  events:     {}", counts(&self.expected))?;
        writeln!(f, "  read model: {}", counts(&self.actual))?;
        if self.refused > 0 {
            writeln!(f, "  refused:    {} events PostgreSQL refused (see refused_events)", self.refused)?;
        }
        if self.identical {
            return writeln!(f, "identical");
        }
        writeln!(f, "{} differences:", self.total_differences)?;
        for d in &self.differences {
            writeln!(f, "  {d}")?;
        }
        if self.total_differences > self.differences.len() {
            writeln!(f, "  ... and {} more", self.total_differences - self.differences.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{Actor, Commit, ResourceId, ResourceType, TenantId, Version};
    use serde_json::value::RawValue;

    fn ev(id: &str, version: u64, op: EventOp, body: &str) -> ResourceEvent {
        ResourceEvent {
            schema: schemas::event::RESOURCE_EVENT_SCHEMA.into(),
            event_id: uuid::Uuid::now_v7(),
            tenant: TenantId::parse("a").unwrap(),
            resource_type: ResourceType::parse("Patient").unwrap(),
            id: ResourceId::parse(id).unwrap(),
            version: Version::new(version).unwrap(),
            op,
            at: schemas::event::now(),
            actor: Actor::default(),
            commit: Commit::single(uuid::Uuid::now_v7()),
            resource: (op != EventOp::Delete).then(|| RawValue::from_string(body.to_owned()).unwrap()),
        }
    }

    const P1: &str = r#"{"resourceType":"Patient","id":"p","gender":"female","birthDate":"1970-01-01"}"#;
    const P2: &str = r#"{"resourceType":"Patient","id":"p","gender":"male","multipleBirthInteger":2}"#;

    /// The read model the projector writes for `events`, as `verify` reads it.
    fn projected(events: &[ResourceEvent]) -> Model {
        let mut m = Model::default();
        for (i, e) in events.iter().enumerate() {
            m.add_version("Patient", e.id.as_str(), e.version.get());
            let newer = events[i + 1..].iter().any(|n| n.id == e.id);
            if !newer {
                let body = e.resource.as_deref().map(RawValue::get);
                m.add_current("Patient", e.id.as_str(), e.version.get(), e.op == EventOp::Delete, body);
                let mut rows = IndexRows::default();
                index_event(&mut rows, e, 1);
                for i in 0..rows.len() {
                    m.add_index_row("Patient", e.id.as_str(), &IndexRow::planned(&rows, i));
                }
            }
        }
        m
    }

    fn fold(events: &[ResourceEvent]) -> Model {
        let mut m = Model::default();
        for e in events {
            m.fold(e, 1);
        }
        m
    }

    #[test]
    fn bodies_compare_as_json_values_whatever_the_key_order_or_number_spelling() {
        let a = BodyHash::of(r#"{"b": [1, 2.0, {"y": 1e2, "x": "é"}], "a": null}"#);
        let b = BodyHash::of(r#"{"a":null,"b":[1,2,{"x":"\u00e9","y":100}]}"#);
        assert_eq!(a, b);
        assert_ne!(a, BodyHash::of(r#"{"a":null,"b":[2,1,{"x":"é","y":100}]}"#), "array order matters");
        assert_ne!(BodyHash::of(r#"{"a":0.5}"#), BodyHash::of(r#"{"a":0.25}"#));
        assert_eq!(BodyHash::of("not json"), BodyHash::of("not json"));
    }

    #[test]
    fn index_rows_compare_as_a_multiset_with_numbers_by_value() {
        let row = |num| IndexRow { param: "value", kind: "n", num: Some(num), ..Default::default() };
        let (mut a, mut b) = (IndexDigest::default(), IndexDigest::default());
        a.add(&row("0.50"));
        a.add(&row("1e3"));
        b.add(&row("1000"));
        b.add(&row("0.5"));
        assert_eq!(a, b);
        b.add(&row("0.5"));
        assert_ne!(a, b, "a duplicated row is a difference");
    }

    #[test]
    fn a_read_model_the_projector_wrote_is_identical_to_the_fold() {
        let events =
            [ev("p", 1, EventOp::Create, P1), ev("p", 2, EventOp::Update, P2), ev("q", 1, EventOp::Create, P1)];
        let report = Report::new("a", 3, 3, &fold(&events), &projected(&events), 50);
        assert!(report.identical, "{report}");
        assert_eq!(
            report.expected,
            Counts { resources: 2, live: 2, versions: 3, index_rows: report.actual.index_rows }
        );
        assert!(report.actual.index_rows > 0);
    }

    #[test]
    fn each_kind_of_damage_is_reported_once_for_its_resource() {
        let events =
            [ev("p", 1, EventOp::Create, P1), ev("p", 2, EventOp::Update, P2), ev("q", 1, EventOp::Create, P1)];
        let expected = fold(&events);
        let kinds = |actual: &Model| -> Vec<(String, Mismatch)> {
            compare(&expected, actual).into_iter().map(|d| (d.id, d.what)).collect()
        };

        let mut m = projected(&events);
        m.resources.get_mut(&("Patient".into(), "q".into())).unwrap().current = None;
        assert_eq!(kinds(&m), [("q".into(), Mismatch::Missing { expected_version: 1 })]);

        let mut m = projected(&events);
        m.add_current("Patient", "p", 2, false, Some(P1));
        assert!(matches!(&kinds(&m)[..], [(p, Mismatch::Content { version: 2, .. })] if p == "p"));

        let mut m = projected(&events);
        m.resources.get_mut(&("Patient".into(), "p".into())).unwrap().index = IndexDigest::default();
        assert!(matches!(&kinds(&m)[..], [(p, Mismatch::Index { actual_rows: 0, .. })] if p == "p"));

        let mut m = projected(&events);
        m.resources.get_mut(&("Patient".into(), "p".into())).unwrap().versions.retain(|v| *v != 1);
        assert_eq!(kinds(&m), [("p".into(), Mismatch::History { missing: vec![1], extra: vec![] })]);

        let mut m = projected(&events);
        m.add_current("Patient", "p", 1, false, Some(P1));
        assert_eq!(kinds(&m)[0], ("p".into(), Mismatch::Version { expected: 2, actual: 1 }));

        let mut m = projected(&events);
        m.add_current("Patient", "x", 1, false, Some(P1));
        assert_eq!(kinds(&m), [("x".into(), Mismatch::Extra { version: Some(1) })]);

        let m = projected(&events[..2]);
        assert_eq!(
            kinds(&m),
            [("q".into(), Mismatch::Missing { expected_version: 1 })],
            "one line for a lost resource"
        );
    }

    #[test]
    fn a_delete_is_current_without_body_or_index_rows() {
        let events = [ev("p", 1, EventOp::Create, P1), ev("p", 2, EventOp::Delete, "")];
        let m = fold(&events);
        let state = &m.resources[&("Patient".to_owned(), "p".to_owned())];
        assert_eq!(state.current, Some(Current { version: 2, deleted: true, body: None }));
        assert_eq!(state.index, IndexDigest::default());
        let mut undeleted = projected(&events);
        undeleted.add_current("Patient", "p", 2, false, None);
        assert!(matches!(compare(&m, &undeleted)[..], [Difference { what: Mismatch::Deleted { .. }, .. }]));
    }

    #[test]
    fn a_report_lists_a_bounded_number_of_differences_and_counts_them_all() {
        let events: Vec<_> = (0..10).map(|i| ev(&format!("p{i}"), 1, EventOp::Create, P1)).collect();
        let report = Report::new("a", 10, 10, &fold(&events), &Model::default(), 3);
        assert!(!report.identical);
        assert_eq!((report.total_differences, report.differences.len()), (10, 3));
        let text = report.to_string();
        assert!(text.contains("... and 7 more") && text.contains("Patient/p0: missing"), "{text}");
    }
}
