//! The validator against real corpora: all of Synthea, the official R4
//! examples (those the official JSON schema accepts), and a corpus of
//! invalid resources with the issue each must produce.

use std::io::Read as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use schemas::ResourceType;
use schemas::validate::{Expect, IssueKind, Severity, Strictness, ValidationError, check_resource, conformance};

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
}

fn gunzip(path: PathBuf) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .read_to_string(&mut text)
        .expect("gunzip");
    text
}

fn check(resource: &Value) -> Result<(), ValidationError> {
    let rt = ResourceType::parse(resource["resourceType"].as_str().unwrap_or("?")).expect("an R4 type");
    check_resource(resource.clone(), Expect::Create(rt)).map(|_| ())
}

#[test]
fn every_synthea_resource_is_accepted() {
    let dir = shared("data/synthea-r4");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("synthea dir").flatten().map(|e| e.path()).collect();
    files.sort();
    let (mut seen, mut refused) = (0, vec![]);
    for file in &files {
        let bundle: Value = serde_json::from_str(&gunzip(file.clone())).expect("bundle json");
        for entry in bundle["entry"].as_array().expect("entries") {
            seen += 1;
            if let Err(e) = check(&entry["resource"]) {
                refused.push(format!("{} {}: {e}", file.display(), entry["resource"]["resourceType"]));
            }
        }
    }
    assert_eq!(seen, 35_814, "the whole corpus was read");
    assert!(refused.is_empty(), "{} refused, e.g.:\n{}", refused.len(), refused[..refused.len().min(15)].join("\n"));
}

/// Official examples the validator refuses on purpose, with the reason.
/// Each is a known defect of the published example, not of the rules.
const ERRATA: &[(&str, &str)] = &[
    ("ActivityDefinition/blood-tubes-supply", "txt-2: its narrative div holds only whitespace"),
    ("ActivityDefinition/heart-valve-replacement", "txt-2: its narrative div holds only whitespace"),
    ("Questionnaire/zika-virus-exposure-assessment", "txt-2: its narrative is an empty <pre> in a div"),
    ("Questionnaire/qs1", "Questionnaire.item.linkId is 1..1, and its display items have none"),
];

#[test]
fn every_official_example_the_json_schema_accepts_is_accepted() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(shared("fhir-r4/fhir.schema.json")).expect("schema"))
            .expect("json");
    let schema = jsonschema::validator_for(&schema).expect("the official schema compiles");
    let (mut checked, mut refused) = (0, vec![]);
    for line in gunzip(shared("fhir-r4/examples-r4.ndjson.gz")).lines().filter(|l| !l.trim().is_empty()) {
        let resource: Value = serde_json::from_str(line).expect("example json");
        if !schema.is_valid(&resource) {
            continue;
        }
        checked += 1;
        let key =
            format!("{}/{}", resource["resourceType"].as_str().unwrap_or("?"), resource["id"].as_str().unwrap_or("?"));
        match check(&resource) {
            Ok(()) => assert!(!ERRATA.iter().any(|(k, _)| *k == key), "{key} is listed as an erratum but passes"),
            Err(_) if ERRATA.iter().any(|(k, _)| *k == key) => {}
            Err(e) => refused.push(format!("{key}: {e}")),
        }
    }
    assert!(checked > 600, "most examples are schema-valid ({checked})");
    assert!(refused.is_empty(), "{} refused:\n{}", refused.len(), refused.join("\n"));
}

/// One invalid resource per rule kind, across the common clinical types:
/// (resource, the issue code, the expression it must name).
fn invalid_corpus() -> Vec<(Value, IssueKind, &'static str)> {
    use IssueKind::*;
    vec![
        (json!({"resourceType":"Patient","name":"Smith"}), Structure, "Patient.name"),
        (json!({"resourceType":"Patient","gender":["male"]}), Structure, "Patient.gender"),
        (json!({"resourceType":"Patient","active":"yes"}), Structure, "Patient.active"),
        (json!({"resourceType":"Patient","gender":"robot"}), CodeInvalid, "Patient.gender"),
        (json!({"resourceType":"Patient","birthDate":"not-a-date"}), Value, "Patient.birthDate"),
        (json!({"resourceType":"Patient","foo":1}), Structure, "Patient.foo"),
        (
            json!({"resourceType":"Patient","name":[{"family":"x","nickname":"y"}]}),
            Structure,
            "Patient.name[0].nickname",
        ),
        (json!({"resourceType":"Patient","contact":[{"gender":"x"}]}), CodeInvalid, "Patient.contact[0].gender"),
        (json!({"resourceType":"Patient","multipleBirthInteger":1.5}), Value, "Patient.multipleBirth.ofType(integer)"),
        (
            json!({"resourceType":"Patient","deceasedBoolean":true,"deceasedDateTime":"2020-01-01"}),
            Structure,
            "Patient.deceased.ofType(dateTime)",
        ),
        (json!({"resourceType":"Patient","_birthDate":{"foo":1}}), Structure, "Patient._birthDate.foo"),
        (json!({"resourceType":"Patient","_gender":"x"}), Structure, "Patient._gender"),
        (json!({"resourceType":"Patient","_nope":{"id":"a"}}), Structure, "Patient._nope"),
        (
            json!({"resourceType":"Patient","contained":[{"resourceType":"Nope","id":"x"}]}),
            IssueKind::Value,
            "Patient.contained[0].resourceType",
        ),
        (
            json!({"resourceType":"Patient","contained":[{"resourceType":"Organization","id":"o","alias":"x"}]}),
            Structure,
            "Patient.contained[0].alias",
        ),
        (
            json!({"resourceType":"Patient","extension":[{"url":"http://x","valueString":"a","extension":[{"url":"y","valueBoolean":true}]}]}),
            Invariant,
            "Patient.extension[0]",
        ),
        (json!({"resourceType":"Patient","extension":[{"valueString":"a"}]}), Required, "Patient.extension[0].url"),
        (
            json!({"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><script>x</script></div>"}}),
            Invariant,
            "Patient.text.div",
        ),
        (
            json!({"resourceType":"Patient","text":{"div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}}),
            Required,
            "Patient.text.status",
        ),
        (
            json!({"resourceType":"Patient","managingOrganization":{"reference":5}}),
            Structure,
            "Patient.managingOrganization.reference",
        ),
        (json!({"resourceType":"Patient","link":[{"type":"seealso"}]}), Required, "Patient.link[0].other"),
        (json!({"resourceType":"Observation","code":{"text":"x"}}), Required, "Observation.status"),
        (json!({"resourceType":"Observation","status":"final"}), Required, "Observation.code"),
        (json!({"resourceType":"Observation","status":"final","code":5}), Structure, "Observation.code"),
        (json!({"resourceType":"Observation","status":"done","code":{"text":"x"}}), CodeInvalid, "Observation.status"),
        (
            json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":"12"}}),
            Structure,
            "Observation.value.ofType(Quantity).value",
        ),
        (
            json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1,"comparator":"~"}}),
            CodeInvalid,
            "Observation.value.ofType(Quantity).comparator",
        ),
        (
            json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"component":[{"code":{"text":"a"}},{"valueString":"b"}]}),
            Required,
            "Observation.component[1].code",
        ),
        (
            json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"effectiveDateTime":"2020-13-01"}),
            IssueKind::Value,
            "Observation.effective.ofType(dateTime)",
        ),
        (
            json!({"resourceType":"Observation","status":"final","code":{"text":"x"},"issued":"2020-01-01"}),
            IssueKind::Value,
            "Observation.issued",
        ),
        (json!({"resourceType":"Encounter","status":"done","class":{"code":"x"}}), CodeInvalid, "Encounter.status"),
        (json!({"resourceType":"Encounter","status":"finished"}), Required, "Encounter.class"),
        (
            json!({"resourceType":"Condition","subject":{"reference":"Patient/1"},"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"gone"}]}}),
            CodeInvalid,
            "Condition.clinicalStatus.coding[0]",
        ),
        (json!({"resourceType":"Condition"}), Required, "Condition.subject"),
        (
            json!({"resourceType":"MedicationRequest","status":"active","intent":"order","subject":{"reference":"Patient/1"}}),
            Required,
            "MedicationRequest.medication",
        ),
        (
            json!({"resourceType":"Immunization","status":"completed","vaccineCode":{"text":"x"},"patient":{"reference":"Patient/1"},"occurrenceString":"x","doseQuantity":{"value":1},"lotNumber":7}),
            Structure,
            "Immunization.lotNumber",
        ),
        (
            json!({"resourceType":"Claim","status":"active","type":{"text":"x"},"use":"claim","patient":{"reference":"Patient/1"},"created":"2020","provider":{"reference":"Organization/1"},"priority":{"text":"x"},"insurance":[{"sequence":0,"focal":true,"coverage":{"reference":"Coverage/1"}}]}),
            IssueKind::Value,
            "Claim.insurance[0].sequence",
        ),
        (
            json!({"resourceType":"DiagnosticReport","status":"final","code":{"text":"x"},"presentedForm":[{"data":"not base64!"}]}),
            IssueKind::Value,
            "DiagnosticReport.presentedForm[0].data",
        ),
        (
            json!({"resourceType":"Organization","id":"a","meta":{"versionId":"not an id!"}}),
            IssueKind::Value,
            "Organization.meta.versionId",
        ),
        (
            json!({"resourceType":"Practitioner","telecom":[{"system":"pager2","value":"1"}]}),
            CodeInvalid,
            "Practitioner.telecom[0].system",
        ),
    ]
}

#[test]
fn each_invalid_resource_is_refused_with_the_expected_issue() {
    for (resource, code, expression) in invalid_corpus() {
        let rt = ResourceType::parse(resource["resourceType"].as_str().expect("type")).expect("R4 type");
        let map = resource.as_object().expect("object");
        let issues = conformance(map, rt, Strictness::Strict);
        assert!(
            issues.iter().any(|i| i.code == code && i.expression == expression && i.severity == Severity::Error),
            "{resource}: expected {code:?} at {expression}, got {issues:#?}"
        );
        let Err(ValidationError::NonConformant(_)) =
            check_resource(resource.clone(), schemas::validate::Expect::Create(rt))
        else {
            panic!("{resource} must be refused as non-conformant");
        };
    }
}

#[test]
fn a_tenant_that_allows_unknown_elements_gets_warnings_for_them_and_errors_for_the_rest() {
    let rt = ResourceType::parse("Patient").expect("type");
    let body = json!({"resourceType":"Patient","foo":1,"gender":"robot"});
    let issues = conformance(body.as_object().expect("object"), rt, Strictness::AllowUnknownElements);
    let foo = issues.iter().find(|i| i.expression == "Patient.foo").expect("the unknown element is reported");
    assert_eq!(foo.severity, Severity::Warning);
    let gender = issues.iter().find(|i| i.expression == "Patient.gender").expect("the code is reported");
    assert_eq!(gender.severity, Severity::Error, "bindings stay errors");
}

#[test]
fn issues_are_capped_so_a_huge_bad_resource_gets_a_bounded_answer() {
    let rt = ResourceType::parse("Patient").expect("type");
    let names: Vec<Value> = (0..5_000).map(|i| json!({"family": i})).collect();
    let body = json!({"resourceType":"Patient","name": names});
    let issues = conformance(body.as_object().expect("object"), rt, Strictness::Strict);
    assert_eq!(issues.len(), 100);
}

#[test]
fn a_primitive_array_may_hold_nulls_only_beside_its_extension_array() {
    let rt = ResourceType::parse("Patient").expect("type");
    let with = json!({"resourceType":"Patient","name":[{"given":["Ann",null],
        "_given":[null,{"extension":[{"url":"http://x","valueString":"y"}]}]}]});
    assert_eq!(conformance(with.as_object().expect("object"), rt, Strictness::Strict), vec![]);
    let without = json!({"resourceType":"Patient","name":[{"given":["Ann",null]}]});
    let issues = conformance(without.as_object().expect("object"), rt, Strictness::Strict);
    assert!(issues.iter().any(|i| i.expression == "Patient.name[0].given[1]"), "{issues:#?}");
}
