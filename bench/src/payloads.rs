//! The resources of the CRUD mix and the events the raw baselines publish.
//!
//! P1 follows the public FHIR server benchmark's scenario: a chain of nine
//! resources where the Encounter references the first four and the
//! Observation and MedicationRequest reference the Encounter. Bodies are
//! shaped and sized like Synthea's (0.5-2.5 KB), so HTTP, JetStream and
//! PostgreSQL move realistic bytes. The raw baselines publish the very
//! envelope the server would (`schemas::ResourceEvent`) for the same chain.

use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use schemas::event::{RESOURCE_EVENT_SCHEMA, instant, now};
use schemas::{Actor, Commit, EventOp, ResourceEvent, ResourceId, ResourceType, TenantId, Version};

/// A resource type of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Kind {
    Patient,
    Location,
    Organization,
    Practitioner,
    Encounter,
    Observation,
    MedicationRequest,
    Claim,
    ExplanationOfBenefit,
}

impl Kind {
    /// The chain, in creation order (references point backwards only).
    pub const CHAIN: [Kind; 9] = [
        Kind::Patient,
        Kind::Location,
        Kind::Organization,
        Kind::Practitioner,
        Kind::Encounter,
        Kind::Observation,
        Kind::MedicationRequest,
        Kind::Claim,
        Kind::ExplanationOfBenefit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Patient => "Patient",
            Kind::Location => "Location",
            Kind::Organization => "Organization",
            Kind::Practitioner => "Practitioner",
            Kind::Encounter => "Encounter",
            Kind::Observation => "Observation",
            Kind::MedicationRequest => "MedicationRequest",
            Kind::Claim => "Claim",
            Kind::ExplanationOfBenefit => "ExplanationOfBenefit",
        }
    }

    fn index(self) -> usize {
        Self::CHAIN.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Ids of the chain's resources created so far.
#[derive(Debug, Clone, Default)]
pub struct Refs {
    ids: [Option<String>; 9],
}

impl Refs {
    pub fn set(&mut self, kind: Kind, id: String) {
        self.ids[kind.index()] = Some(id);
    }

    pub fn get(&self, kind: Kind) -> Option<&str> {
        self.ids[kind.index()].as_deref()
    }

    fn reference(&self, kind: Kind) -> Value {
        json!({ "reference": format!("{}/{}", kind.as_str(), self.get(kind).unwrap_or("missing")) })
    }
}

/// The body of a create (`revision` 0, no id) or of an update (`revision`
/// >= 1, with the id, one element changed). `n` varies names and values.
pub fn resource(kind: Kind, refs: &Refs, n: u64, revision: u32) -> Value {
    let mut r = base(kind, refs, n, revision);
    if revision > 0
        && let (Value::Object(map), Some(id)) = (&mut r, refs.get(kind))
    {
        map.insert("id".into(), Value::String(id.to_owned()));
    }
    r
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code, "display": display }], "text": display })
}

fn base(kind: Kind, refs: &Refs, n: u64, revision: u32) -> Value {
    let status = if revision == 0 { "active" } else { "inactive" };
    let family = format!("Bench{n:06}");
    match kind {
        Kind::Patient => json!({
            "resourceType": "Patient",
            "identifier": [
                { "system": "https://github.com/synthetichealth/synthea", "value": Uuid::from_u128(u128::from(n)).to_string() },
                { "type": coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record Number"),
                  "system": "http://hospital.smarthealthit.org", "value": format!("MR-{n}") },
                { "type": coding("http://terminology.hl7.org/CodeSystem/v2-0203", "SS", "Social Security Number"),
                  "system": "http://hl7.org/fhir/sid/us-ssn", "value": format!("999-{:02}-{:04}", n % 100, n % 10_000) }
            ],
            "active": revision == 0,
            "name": [{ "use": "official", "family": family, "given": ["Alex", "Jordan"], "prefix": ["Mx."] }],
            "telecom": [{ "system": "phone", "value": format!("555-{:03}-{:04}", n % 1000, n % 10_000), "use": "home" }],
            "gender": if n.is_multiple_of(2) { "female" } else { "male" },
            "birthDate": format!("19{:02}-0{}-1{}", 40 + n % 60, 1 + n % 9, n % 10),
            "address": [{ "line": [format!("{} Main Street", n % 1000)], "city": "Springfield", "state": "MA",
                          "postalCode": "01101", "country": "US" }],
            "maritalStatus": coding("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "M", "Married"),
            "communication": [{ "language": coding("urn:ietf:bcp:47", "en-US", "English (United States)") }]
        }),
        Kind::Location => json!({
            "resourceType": "Location",
            "status": status,
            "name": format!("Bench Clinic {n}"),
            "telecom": [{ "system": "phone", "value": "555-0100" }],
            "address": { "line": ["1 Hospital Drive"], "city": "Springfield", "state": "MA", "postalCode": "01101", "country": "US" },
            "position": { "longitude": -72.59 - (n % 100) as f64 / 1000.0, "latitude": 42.10 }
        }),
        Kind::Organization => json!({
            "resourceType": "Organization",
            "identifier": [{ "system": "https://github.com/synthetichealth/synthea", "value": format!("org-{n}") }],
            "active": revision == 0,
            "type": [coding("http://terminology.hl7.org/CodeSystem/organization-type", "prov", "Healthcare Provider")],
            "name": format!("Bench Health Center {n}"),
            "telecom": [{ "system": "phone", "value": "555-0101" }],
            "address": [{ "line": ["2 Hospital Drive"], "city": "Springfield", "state": "MA", "postalCode": "01101", "country": "US" }]
        }),
        Kind::Practitioner => json!({
            "resourceType": "Practitioner",
            "identifier": [{ "system": "http://hl7.org/fhir/sid/us-npi", "value": format!("{:010}", n) }],
            "active": revision == 0,
            "name": [{ "family": family, "given": ["Sam"], "prefix": ["Dr."] }],
            "gender": "female",
            "telecom": [{ "system": "email", "value": format!("sam.{n}@example.org"), "use": "work" }]
        }),
        Kind::Encounter => json!({
            "resourceType": "Encounter",
            "status": if revision == 0 { "in-progress" } else { "finished" },
            "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB" },
            "type": [coding("http://snomed.info/sct", "185345009", "Encounter for symptom")],
            "subject": refs.reference(Kind::Patient),
            "participant": [{ "individual": refs.reference(Kind::Practitioner) }],
            "period": { "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T10:30:00Z" },
            "reasonCode": [coding("http://snomed.info/sct", "444814009", "Viral sinusitis (disorder)")],
            "location": [{ "location": refs.reference(Kind::Location) }],
            "serviceProvider": refs.reference(Kind::Organization)
        }),
        Kind::Observation => json!({
            "resourceType": "Observation",
            "status": if revision == 0 { "preliminary" } else { "final" },
            "category": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs", "vital-signs")],
            "code": coding("http://loinc.org", "8302-2", "Body Height"),
            "subject": refs.reference(Kind::Patient),
            "encounter": refs.reference(Kind::Encounter),
            "effectiveDateTime": "2024-03-01T10:05:00Z",
            "issued": "2024-03-01T10:05:00.000Z",
            "valueQuantity": { "value": 150 + n % 50 + u64::from(revision), "unit": "cm",
                               "system": "http://unitsofmeasure.org", "code": "cm" }
        }),
        Kind::MedicationRequest => json!({
            "resourceType": "MedicationRequest",
            "status": if revision == 0 { "active" } else { "completed" },
            "intent": "order",
            "medicationCodeableConcept": coding("http://www.nlm.nih.gov/research/umls/rxnorm", "834061", "Penicillin V Potassium 250 MG Oral Tablet"),
            "subject": refs.reference(Kind::Patient),
            "encounter": refs.reference(Kind::Encounter),
            "authoredOn": "2024-03-01T10:20:00Z",
            "requester": refs.reference(Kind::Practitioner),
            "reasonCode": [coding("http://snomed.info/sct", "444814009", "Viral sinusitis (disorder)")],
            "dosageInstruction": [{ "sequence": 1, "text": "Take one tablet four times a day", "asNeededBoolean": false }]
        }),
        Kind::Claim => json!({
            "resourceType": "Claim",
            "status": if revision == 0 { "active" } else { "cancelled" },
            "type": coding("http://terminology.hl7.org/CodeSystem/claim-type", "professional", "Professional"),
            "use": "claim",
            "patient": refs.reference(Kind::Patient),
            "billablePeriod": { "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T10:30:00Z" },
            "created": "2024-03-01T10:30:00Z",
            "provider": refs.reference(Kind::Organization),
            "priority": coding("http://terminology.hl7.org/CodeSystem/processpriority", "normal", "Normal"),
            "prescription": refs.reference(Kind::MedicationRequest),
            "insurance": [{ "sequence": 1, "focal": true, "coverage": { "display": "Medicaid" } }],
            "item": [{
                "sequence": 1,
                "productOrService": coding("http://snomed.info/sct", "185345009", "Encounter for symptom"),
                "encounter": [refs.reference(Kind::Encounter)],
                "net": { "value": 85.55 + f64::from(revision), "currency": "USD" }
            }],
            "total": { "value": 85.55 + f64::from(revision), "currency": "USD" }
        }),
        Kind::ExplanationOfBenefit => json!({
            "resourceType": "ExplanationOfBenefit",
            "status": if revision == 0 { "active" } else { "cancelled" },
            "type": coding("http://terminology.hl7.org/CodeSystem/claim-type", "professional", "Professional"),
            "use": "claim",
            "patient": refs.reference(Kind::Patient),
            "billablePeriod": { "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T10:30:00Z" },
            "created": "2024-03-01T10:30:00Z",
            "insurer": { "display": "Medicaid" },
            "provider": refs.reference(Kind::Practitioner),
            "claim": refs.reference(Kind::Claim),
            "outcome": if revision == 0 { "queued" } else { "complete" },
            "careTeam": [{ "sequence": 1, "provider": refs.reference(Kind::Practitioner),
                           "role": coding("http://terminology.hl7.org/CodeSystem/claimcareteamrole", "primary", "Primary provider") }],
            "insurance": [{ "focal": true, "coverage": { "display": "Medicaid" } }],
            "item": [{
                "sequence": 1,
                "productOrService": coding("http://snomed.info/sct", "185345009", "Encounter for symptom"),
                "servicedPeriod": { "start": "2024-03-01T10:00:00Z", "end": "2024-03-01T10:30:00Z" },
                "locationCodeableConcept": coding("http://terminology.hl7.org/CodeSystem/ex-serviceplace", "19", "Off Campus-Outpatient Hospital"),
                "encounter": [refs.reference(Kind::Encounter)],
                "net": { "value": 85.55, "currency": "USD" },
                "adjudication": [
                    { "category": coding("https://bluebutton.cms.gov/resources/codesystem/adjudication", "https://bluebutton.cms.gov/resources/variables/line_coinsrnc_amt", "Line Beneficiary Coinsurance Amount"),
                      "amount": { "value": 17.11, "currency": "USD" } },
                    { "category": coding("https://bluebutton.cms.gov/resources/codesystem/adjudication", "https://bluebutton.cms.gov/resources/variables/line_prvdr_pmt_amt", "Line Provider Payment Amount"),
                      "amount": { "value": 68.44, "currency": "USD" } }
                ]
            }],
            "total": [{ "category": coding("http://terminology.hl7.org/CodeSystem/adjudication", "submitted", "Submitted Amount"),
                        "amount": { "value": 85.55, "currency": "USD" } }],
            "payment": { "amount": { "value": 68.44, "currency": "USD" } }
        }),
    }
}

/// One event of a raw chain: what the server would publish for the same write.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub kind: Kind,
    pub id: String,
    pub version: u64,
    pub op: EventOp,
    pub event_id: Uuid,
    pub payload: Vec<u8>,
}

/// The 27 events of one CRUD chain (9 creates, 9 updates, 9 deletes, in
/// P1's order) as `fhirstream.resource-event/1` envelopes.
pub fn raw_chain(tenant: &TenantId, n: u64) -> anyhow::Result<Vec<RawEvent>> {
    let mut refs = Refs::default();
    for kind in Kind::CHAIN {
        refs.set(kind, ResourceId::generate().as_str().to_owned());
    }
    let mut out = Vec::with_capacity(27);
    for (version, op) in [(1, EventOp::Create), (2, EventOp::Update), (3, EventOp::Delete)] {
        for kind in Kind::CHAIN {
            let body = (op != EventOp::Delete).then(|| resource(kind, &refs, n, version - 1));
            let id = refs.get(kind).unwrap_or_default().to_owned();
            out.push(envelope(tenant, kind, &id, u64::from(version), op, body)?);
        }
    }
    Ok(out)
}

fn envelope(
    tenant: &TenantId,
    kind: Kind,
    id: &str,
    version: u64,
    op: EventOp,
    body: Option<Value>,
) -> anyhow::Result<RawEvent> {
    let at = now();
    let rid = ResourceId::parse(id)?;
    let resource = match body {
        Some(Value::Object(mut map)) => {
            map.insert("id".into(), Value::String(id.to_owned()));
            let mut meta = Map::new();
            meta.insert("versionId".into(), Value::String(version.to_string()));
            meta.insert("lastUpdated".into(), Value::String(instant(&at)));
            map.insert("meta".into(), Value::Object(meta));
            Some(serde_json::value::to_raw_value(&map)?)
        }
        _ => None,
    };
    let event = ResourceEvent {
        schema: RESOURCE_EVENT_SCHEMA.into(),
        event_id: Uuid::now_v7(),
        tenant: tenant.clone(),
        resource_type: ResourceType::parse(kind.as_str())?,
        id: rid,
        version: Version::new(version).ok_or_else(|| anyhow::anyhow!("version {version} is not positive"))?,
        op,
        at,
        actor: Actor { sub: "bench".into(), client: Some("fhirstream-bench".into()) },
        commit: Commit::single(Uuid::now_v7()),
        resource,
    };
    Ok(RawEvent {
        kind,
        id: id.to_owned(),
        version,
        op,
        event_id: event.event_id,
        payload: serde_json::to_vec(&event)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encounter_references_what_came_before_it() {
        let mut refs = Refs::default();
        refs.set(Kind::Patient, "p1".into());
        refs.set(Kind::Location, "l1".into());
        let enc = resource(Kind::Encounter, &refs, 7, 0);
        assert_eq!(enc["subject"]["reference"], "Patient/p1");
        assert_eq!(enc["location"][0]["location"]["reference"], "Location/l1");
        assert!(enc.get("id").is_none(), "a create carries no id");
    }

    #[test]
    fn an_update_carries_the_id_and_changes_something() {
        let mut refs = Refs::default();
        refs.set(Kind::Observation, "o1".into());
        let created = resource(Kind::Observation, &refs, 3, 0);
        let updated = resource(Kind::Observation, &refs, 3, 1);
        assert_eq!(updated["id"], "o1");
        assert_ne!(created["status"], updated["status"]);
    }

    #[test]
    fn a_raw_chain_is_nine_creates_nine_updates_nine_deletes() {
        let tenant = TenantId::parse("bench-raw").unwrap();
        let chain = raw_chain(&tenant, 1).unwrap();
        assert_eq!(chain.len(), 27);
        assert!(chain[..9].iter().all(|e| e.op == EventOp::Create && e.version == 1));
        assert!(chain[18..].iter().all(|e| e.op == EventOp::Delete && e.version == 3));
        let ev: ResourceEvent = serde_json::from_slice(&chain[9].payload).unwrap();
        let body: Value = serde_json::from_str(ev.resource.unwrap().get()).unwrap();
        assert_eq!(body["meta"]["versionId"], "2");
        assert_eq!(body["id"], chain[0].id.as_str());
        let sizes: Vec<usize> = chain[..9].iter().map(|e| e.payload.len()).collect();
        assert!(sizes.iter().all(|s| (400..4000).contains(s)), "{sizes:?}");
    }
}
