//! Constraint profiles on real data: R4's own vital-signs profiles against
//! Synthea's vital-sign Observations, and the rule kinds one by one.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use schemas::ResourceType;
use schemas::validate::{
    Expect, Profile, Rules, Severity, ValidationError, check_resource, check_resource_with, value_sets_from,
};

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(rel)
}

fn gunzip_json(rel: &str) -> Value {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(shared(rel)).expect("file"))
        .read_to_string(&mut text)
        .expect("gz");
    serde_json::from_str(&text).expect("json")
}

fn resources(bundle: &Value) -> impl Iterator<Item = &Value> {
    bundle["entry"].as_array().into_iter().flatten().map(|e| &e["resource"])
}

/// The R4 profiles published with the spec, compiled with the core value
/// sets they bind.
fn r4_profiles() -> HashMap<String, Arc<Profile>> {
    let terminology: Vec<Value> = resources(&gunzip_json("fhir-r4/valuesets.json.gz")).cloned().collect();
    let known = value_sets_from(&terminology);
    resources(&gunzip_json("fhir-r4/profiles-others.json.gz"))
        .filter(|sd| sd["type"] == "Observation")
        .map(|sd| {
            let p = Profile::compile(sd, &|url| known.get(url).cloned()).expect("compiles");
            (sd["id"].as_str().expect("id").to_owned(), Arc::new(p))
        })
        .collect()
}

fn enforcing(profiles: &[&Arc<Profile>]) -> Rules {
    let obs = ResourceType::parse("Observation").expect("type");
    let mut rules = Rules::default();
    rules.enforced.insert(obs, profiles.iter().map(|p| Arc::clone(p)).collect());
    rules
}

fn check(rules: &Rules, resource: &Value) -> Result<(), Vec<schemas::validate::Issue>> {
    let rt = ResourceType::parse(resource["resourceType"].as_str().expect("type")).expect("R4");
    match check_resource_with(resource.clone(), Expect::Create(rt), rules) {
        Ok(_) => Ok(()),
        Err(ValidationError::NonConformant(issues)) => Err(issues),
        Err(e) => panic!("{e}"),
    }
}

fn synthea_observations() -> Vec<Value> {
    let dir = shared("data/synthea-r4");
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("dir").flatten().map(|e| e.path()).collect();
    files.sort();
    files.truncate(20);
    let mut out = vec![];
    for f in files {
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(f).expect("file")).read_to_string(&mut text).expect("gz");
        let bundle: Value = serde_json::from_str(&text).expect("json");
        out.extend(resources(&bundle).filter(|r| r["resourceType"] == "Observation").cloned());
    }
    out
}

fn is_vital(o: &Value) -> bool {
    o["category"].to_string().contains("vital-signs")
}

#[test]
fn the_r4_profiles_are_themselves_valid_structure_definitions() {
    for sd in resources(&gunzip_json("fhir-r4/profiles-others.json.gz")) {
        let rt = ResourceType::parse("StructureDefinition").expect("type");
        let result = check_resource(sd.clone(), Expect::Create(rt));
        assert!(result.is_ok(), "{}: {:?}", sd["id"], result.err());
    }
}

/// Synthea codes its blood pressure panels 55284-4; R4's `bp` profile
/// fixes 85354-9. Recoded, the panel (with its 8480-6 and 8462-4
/// components) is what `bp` describes.
fn synthea_blood_pressure() -> Value {
    let mut bp = synthea_observations()
        .into_iter()
        .find(|o| o["code"]["coding"][0]["code"] == "55284-4")
        .expect("a Synthea blood pressure");
    bp["code"]["coding"][0]["code"] = json!("85354-9");
    bp
}

#[test]
fn synthea_vital_signs_conform_to_vitalsigns_and_each_to_its_own_profile() {
    let p = r4_profiles();
    let vital = enforcing(&[&p["vitalsigns"]]);
    // Not `bodytemp`: Synthea's oral temperatures (8331-1) lack the 8310-5
    // coding that profile requires, and are refused by it, rightly.
    let own = [("29463-7", "bodyweight"), ("8302-2", "bodyheight"), ("39156-5", "bmi")];
    let observations = synthea_observations();
    let vitals: Vec<&Value> = observations.iter().filter(|o| is_vital(o)).collect();
    assert!(vitals.len() > 100, "the sample holds vital signs ({})", vitals.len());
    let mut specific = 0;
    for o in vitals {
        check(&vital, o).unwrap_or_else(|e| panic!("{o}: {e:#?}"));
        if let Some((_, name)) = own.iter().find(|(code, _)| o["code"]["coding"][0]["code"] == *code) {
            specific += 1;
            check(&enforcing(&[&p[*name]]), o).unwrap_or_else(|e| panic!("{name}: {o}: {e:#?}"));
        }
    }
    assert!(specific > 100, "observations checked against their own profile: {specific}");
    check(&enforcing(&[&p["bp"]]), &synthea_blood_pressure()).expect("a recoded Synthea blood pressure is a bp");
}

#[test]
fn a_body_weight_in_milligrams_breaks_bodyweight_at_its_unit() {
    let p = r4_profiles();
    let rules = enforcing(&[&p["bodyweight"]]);
    let mut o =
        synthea_observations().into_iter().find(|o| o["code"]["coding"][0]["code"] == "29463-7").expect("weight");
    check(&rules, &o).expect("conforms");
    o["valueQuantity"]["code"] = json!("[lb_av]");
    o["valueQuantity"]["unit"] = json!("lb");
    check(&rules, &o).expect("pounds are in ucum-bodyweight");
    o["valueQuantity"]["code"] = json!("mg");
    o["valueQuantity"]["unit"] = json!("mg");
    let issues = check(&rules, &o).expect_err("refused");
    assert!(issues.iter().any(|i| i.expression.starts_with("Observation.value")), "{issues:#?}");
}

#[test]
fn a_blood_pressure_that_breaks_bp_is_refused_where_it_breaks_it() {
    let p = r4_profiles();
    let bp = enforcing(&[&p["bp"]]);
    let good = synthea_blood_pressure();
    check(&bp, &good).expect("the original conforms");

    let expect_issue = |o: &Value, expression: &str| {
        let issues = check(&bp, o).expect_err("refused");
        assert!(
            issues.iter().any(|i| i.expression == expression && i.severity == Severity::Error),
            "expected an error at {expression}: {issues:#?}"
        );
    };
    // No diastolic component: the slice's minimum (and the element's).
    let mut o = good.clone();
    o["component"].as_array_mut().expect("components").retain(|c| c["code"]["coding"][0]["code"] != "8462-4");
    expect_issue(&o, "Observation.component");
    // A fixed unit code changed.
    let mut o = good.clone();
    o["component"][0]["valueQuantity"]["code"] = json!("kPa");
    assert!(check(&bp, &o).is_err());
    // No vital-signs category: the parent profile's slice.
    let mut o = good.clone();
    o["category"] = json!([{"coding":[{"system":"http://example.org","code":"x"}]}]);
    expect_issue(&o, "Observation.category");
    // A value on the panel itself: valueQuantity has max 0 in bp.
    let mut o = good.clone();
    o["valueQuantity"] = json!({"value": 1});
    assert!(check(&bp, &o).is_err());
    // No subject: min 1 in vitalsigns.
    let mut o = good;
    o.as_object_mut().expect("object").remove("subject");
    expect_issue(&o, "Observation.subject");
}

#[test]
fn a_claimed_profile_is_checked_when_visible_and_a_warning_when_not() {
    let p = r4_profiles();
    let mut rules = Rules::default();
    rules.visible.insert(p["heartrate"].url.clone(), Arc::clone(&p["heartrate"]));
    let mut bp = synthea_blood_pressure();
    bp["meta"] = json!({"profile": ["http://hl7.org/fhir/StructureDefinition/heartrate"]});
    assert!(check(&rules, &bp).is_err(), "a blood pressure is no heart rate");
    bp["meta"] = json!({"profile": ["http://example.org/unknown"]});
    let obs = ResourceType::parse("Observation").expect("type");
    let checked = check_resource_with(bp, Expect::Create(obs), &rules).expect("accepted");
    assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
}

#[test]
fn pattern_values_and_closed_slicing_are_enforced() {
    let sd = json!({
        "resourceType": "StructureDefinition", "url": "http://example.org/sd/closed", "type": "Patient",
        "snapshot": {"element": [
            {"id": "Patient", "path": "Patient", "min": 0, "max": "*"},
            {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1, "max": "1"},
            {"id": "Patient.maritalStatus", "path": "Patient.maritalStatus", "min": 0, "max": "1",
             "patternCodeableConcept": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"}]}},
            {"id": "Patient.identifier", "path": "Patient.identifier", "min": 1, "max": "*",
             "slicing": {"discriminator": [{"type": "value", "path": "system"}], "rules": "closed"}},
            {"id": "Patient.identifier:mrn", "path": "Patient.identifier", "sliceName": "mrn", "min": 1, "max": "1"},
            {"id": "Patient.identifier:mrn.system", "path": "Patient.identifier.system", "min": 1, "max": "1",
             "fixedUri": "http://example.org/mrn"}
        ]}
    });
    let p = Arc::new(Profile::compile(&sd, &|_| None).expect("compiles"));
    let mut rules = Rules::default();
    rules.enforced.insert(ResourceType::parse("Patient").expect("type"), vec![p]);
    let ok = json!({"resourceType":"Patient","birthDate":"1990-01-01",
        "identifier":[{"system":"http://example.org/mrn","value":"1"}],
        "maritalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-MaritalStatus","code":"M"}]}});
    check(&rules, &ok).expect("conforms");
    let cases = [
        ("birthDate", json!(null), "Patient.birthDate"),
        ("maritalStatus", json!({"coding":[{"system":"http://example.org","code":"M"}]}), "Patient.maritalStatus"),
        ("identifier", json!([{"system":"http://example.org/other","value":"1"}]), "Patient.identifier[0]"),
        (
            "identifier",
            json!([{"system":"http://example.org/mrn","value":"1"},{"system":"http://example.org/mrn","value":"2"}]),
            "Patient.identifier",
        ),
    ];
    for (key, value, expression) in cases {
        let mut bad = ok.clone();
        match value {
            Value::Null => {
                bad.as_object_mut().expect("object").remove(key);
            }
            v => bad[key] = v,
        }
        let issues = check(&rules, &bad).expect_err("refused");
        assert!(issues.iter().any(|i| i.expression == expression), "{bad}: expected {expression}: {issues:#?}");
    }
}
