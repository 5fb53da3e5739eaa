//! Search over all 119 Synthea bundles, each result checked against an
//! expectation computed here from the bundle JSON (not from the server's
//! index), and paging through more than 1,000 matches while writes go on.
//! One test loads the data once and runs every check on it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::process::Command;

use support::TestApp;

type Key = (String, String);

/// Every resource of the bundles by (type, id), with `urn:uuid:`
/// references rewritten to `Type/id` as the import does.
fn corpus() -> BTreeMap<Key, Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/synthea-r4");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut all = BTreeMap::new();
    for f in files {
        let b: Value = serde_json::from_reader(flate2::read::GzDecoder::new(std::fs::File::open(f).unwrap())).unwrap();
        let entries = b["entry"].as_array().unwrap();
        let urls: HashMap<String, String> = entries
            .iter()
            .map(|e| {
                let r = &e["resource"];
                let rel = format!("{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap());
                (e["fullUrl"].as_str().unwrap().to_string(), rel)
            })
            .collect();
        for e in entries {
            let mut r = e["resource"].clone();
            rewrite(&mut r, &urls);
            let key = (r["resourceType"].as_str().unwrap().to_string(), r["id"].as_str().unwrap().to_string());
            all.insert(key, r);
        }
    }
    all
}

fn rewrite(v: &mut Value, urls: &HashMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "reference"
                    && let Some(rel) = x.as_str().and_then(|s| urls.get(s))
                {
                    *x = Value::String(rel.clone());
                } else {
                    rewrite(x, urls);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, urls)),
        _ => {}
    }
}

fn of_type<'a>(all: &'a BTreeMap<Key, Value>, rt: &str) -> impl Iterator<Item = &'a Value> {
    all.iter().filter(move |((t, _), _)| t == rt).map(|(_, v)| v)
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn strs(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(strs).collect(),
        _ => vec![],
    }
}

fn instant(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn has_coding(cc: &Value, system: &str, code: &str) -> bool {
    cc["coding"].as_array().into_iter().flatten().any(|c| c["system"] == system && c["code"] == code)
}

/// Matches and included resources of every page of a search.
struct Walk {
    matches: Vec<String>,
    included: BTreeSet<Key>,
    total: u64,
    pages: usize,
}

async fn walk(app: &TestApp, tenant: &str, query: &str) -> Walk {
    let mut url = app.fhir(tenant, query);
    let mut w = Walk { matches: vec![], included: BTreeSet::new(), total: 0, pages: 0 };
    loop {
        let res = app.authed(app.http.get(&url)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{url}");
        let b: Value = res.json().await.unwrap();
        w.total = b["total"].as_u64().unwrap();
        w.pages += 1;
        for e in b["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            if e["search"]["mode"] == "match" {
                w.matches.push(id(r));
            } else {
                w.included.insert((r["resourceType"].as_str().unwrap().into(), id(r)));
            }
        }
        match b["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next") {
            Some(l) => url = l["url"].as_str().unwrap().to_string(),
            None => return w,
        }
    }
}

/// The ids of every page, asserting no id comes twice.
async fn found(app: &TestApp, tenant: &str, query: &str) -> BTreeSet<String> {
    let w = walk(app, tenant, query).await;
    let set: BTreeSet<String> = w.matches.iter().cloned().collect();
    assert_eq!(set.len(), w.matches.len(), "{query}: repeated matches");
    assert_eq!(w.total as usize, set.len(), "{query}: total");
    set
}

#[tokio::test]
async fn searches_over_the_synthea_bundles_match_expectations_computed_from_the_files() {
    let all = corpus();
    let app = TestApp::spawn().await;
    let t = app.tenant("synthea").await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/synthea-r4");
    let out = Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["import", "--tenant", &t, "--quiet", "--log", "error", "--nats-url", &app.nats.url])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    app.wait_caught_up(Duration::from_secs(180)).await;

    let patients: Vec<&Value> = of_type(&all, "Patient").collect();
    // 118 patient bundles and one of practitioners.
    assert_eq!(patients.len(), 118);
    let ids_where = |rt: &str, f: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        of_type(&all, rt).filter(|r| f(r)).map(id).collect()
    };

    // Patient by family (starts-with, case-insensitive), name, gender.
    let family = strs(&patients[7]["name"][0]["family"])[0].clone();
    let prefix = family[..4].to_lowercase();
    let expected = ids_where("Patient", &|p| {
        p["name"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| strs(&n["family"]).iter().any(|f| f.to_lowercase().starts_with(&prefix)))
    });
    assert!(!expected.is_empty());
    assert_eq!(found(&app, &t, &format!("Patient?family={}", prefix.to_uppercase())).await, expected);
    let given = strs(&patients[3]["name"][0]["given"])[0].clone();
    let expected = ids_where("Patient", &|p| {
        p["name"].as_array().unwrap().iter().any(|n| {
            ["family", "given", "prefix", "suffix", "text"]
                .iter()
                .flat_map(|k| strs(&n[*k]))
                .any(|s| s.to_lowercase().starts_with(&given.to_lowercase()))
        })
    });
    assert_eq!(found(&app, &t, &format!("Patient?name={given}")).await, expected);
    let females = ids_where("Patient", &|p| p["gender"] == "female");
    assert_eq!(found(&app, &t, "Patient?gender=female").await, females);

    // Birthdate: a day, and a decade with two prefixes (AND).
    let day = patients[11]["birthDate"].as_str().unwrap().to_string();
    assert_eq!(
        found(&app, &t, &format!("Patient?birthdate={day}")).await,
        ids_where("Patient", &|p| p["birthDate"] == day.as_str())
    );
    let seventies = ids_where("Patient", &|p| {
        let b = p["birthDate"].as_str().unwrap();
        ("1970-01-01"..="1979-12-31").contains(&b)
    });
    assert_eq!(found(&app, &t, "Patient?birthdate=ge1970-01-01&birthdate=lt1980").await, seventies);

    // Identifier with its system.
    let ident = patients[20]["identifier"].as_array().unwrap().iter().find(|i| i["system"].is_string()).unwrap();
    let (isys, ival) = (ident["system"].as_str().unwrap(), ident["value"].as_str().unwrap());
    let expected = ids_where("Patient", &|p| {
        p["identifier"].as_array().into_iter().flatten().any(|i| i["system"] == isys && i["value"] == ival)
    });
    assert_eq!(expected.len(), 1);
    assert_eq!(found(&app, &t, &format!("Patient?identifier={isys}|{ival}")).await, expected);

    // Observation by code, date range and subject.
    let subject = format!("Patient/{}", id(patients[0]));
    let (lo, hi) = (instant("2000-01-01T00:00:00Z"), instant("2018-01-01T00:00:00Z"));
    let expected = ids_where("Observation", &|o| {
        has_coding(&o["code"], "http://loinc.org", "8302-2")
            && o["subject"]["reference"] == subject.as_str()
            && o["effectiveDateTime"].as_str().is_some_and(|d| (lo..hi).contains(&instant(d)))
    });
    assert!(!expected.is_empty());
    let q = format!("Observation?code=http://loinc.org|8302-2&date=ge2000-01-01&date=lt2018-01-01&subject={subject}");
    assert_eq!(found(&app, &t, &q).await, expected);

    // Encounters of 2015 (period within the year) with their subjects.
    let (y0, y1) = (instant("2015-01-01T00:00:00Z"), instant("2016-01-01T00:00:00Z"));
    let encounters: Vec<&Value> = of_type(&all, "Encounter")
        .filter(|e| {
            let (s, end) =
                (instant(e["period"]["start"].as_str().unwrap()), instant(e["period"]["end"].as_str().unwrap()));
            s >= y0 && end + chrono::Duration::seconds(1) <= y1
        })
        .collect();
    assert!(encounters.len() > 100);
    let w = walk(&app, &t, "Encounter?date=2015&_include=Encounter:subject&_count=100").await;
    assert_eq!(w.matches.iter().cloned().collect::<BTreeSet<_>>(), encounters.iter().map(|e| id(e)).collect());
    let subjects: BTreeSet<Key> = encounters
        .iter()
        .map(|e| {
            let r = e["subject"]["reference"].as_str().unwrap();
            ("Patient".to_string(), r.trim_start_matches("Patient/").to_string())
        })
        .collect();
    assert_eq!(w.included, subjects);

    // A patient's Conditions by _revinclude.
    let pid = id(patients[5]);
    let conditions: BTreeSet<Key> =
        ids_where("Condition", &|c| c["subject"]["reference"] == format!("Patient/{pid}").as_str())
            .into_iter()
            .map(|c| ("Condition".to_string(), c))
            .collect();
    assert!(!conditions.is_empty());
    let w = walk(&app, &t, &format!("Patient?_id={pid}&_revinclude=Condition:subject")).await;
    assert_eq!(w.matches, vec![pid.clone()]);
    assert_eq!(w.included, conditions);

    // Chain: Conditions of patients by family; _has: patients with a condition code.
    let family_ids: BTreeSet<String> = ids_where("Patient", &|p| {
        p["name"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| strs(&n["family"]).iter().any(|f| f.to_lowercase().starts_with(&prefix)))
    });
    let expected = ids_where("Condition", &|c| {
        family_ids.contains(c["subject"]["reference"].as_str().unwrap().trim_start_matches("Patient/"))
    });
    assert_eq!(found(&app, &t, &format!("Condition?subject:Patient.family={prefix}")).await, expected);
    let mut by_code: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in of_type(&all, "Condition") {
        for coding in c["code"]["coding"].as_array().unwrap() {
            by_code
                .entry(coding["code"].as_str().unwrap().to_string())
                .or_default()
                .insert(c["subject"]["reference"].as_str().unwrap().trim_start_matches("Patient/").to_string());
        }
    }
    let (code, holders) = by_code.iter().max_by_key(|(_, p)| p.len()).unwrap();
    assert!(holders.len() > 10);
    assert_eq!(&found(&app, &t, &format!("Patient?_has:Condition:subject:code={code}")).await, holders);
}

#[tokio::test]
async fn paging_through_thousands_of_matches_while_writes_continue_loses_and_repeats_nothing() {
    let all = corpus();
    let app = TestApp::spawn().await;
    let t = app.tenant("paging").await;
    // 25 bundles are enough for several thousand vital signs.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/synthea-r4");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.truncate(25);
    let out = Command::new(env!("CARGO_BIN_EXE_fhirstream"))
        .args(["import", "--tenant", &t, "--quiet", "--log", "error", "--nats-url", &app.nats.url])
        .args(&files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    app.wait_caught_up(Duration::from_secs(120)).await;

    let res = app.get(&t, "Observation?category=vital-signs&_summary=count").await;
    let before: Value = res.json().await.unwrap();
    let before = before["total"].as_u64().unwrap();
    assert!(before > 1000, "only {before} vital signs");
    // The matches before writing begins, with their dates from the files.
    let w = walk(&app, &t, "Observation?category=vital-signs&_count=1000&_elements=id").await;
    let loaded: BTreeMap<String, DateTime<Utc>> = w
        .matches
        .into_iter()
        .map(|id| {
            let date = instant(all[&("Observation".to_string(), id.clone())]["effectiveDateTime"].as_str().unwrap());
            (id, date)
        })
        .collect();
    assert_eq!(loaded.len() as u64, before);

    // Writers: new vital signs with old dates (they interleave with the
    // pages), and updates of loaded ones that keep their dates.
    let writer = {
        let base = app.fhir(&t, "");
        let http = app.http.clone();
        let existing: Vec<String> = loaded.keys().take(300).cloned().collect();
        tokio::spawn(async move {
            for i in 0..150 {
                let new = json!({"resourceType": "Observation", "status": "final",
                    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
                    "code": {"text": "written while paging"},
                    "effectiveDateTime": format!("{}-06-01T00:00:00Z", 1950 + i % 70)});
                let res = http
                    .post(format!("{base}Observation"))
                    .header("content-type", "application/fhir+json")
                    .body(new.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
                let id = &existing[i % existing.len()];
                let res = http.get(format!("{base}Observation/{id}")).send().await.unwrap();
                let mut o: Value = res.json().await.unwrap();
                o["status"] = "amended".into();
                let res = http
                    .put(format!("{base}Observation/{id}"))
                    .header("content-type", "application/fhir+json")
                    .body(o.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
            }
        })
    };

    let w = walk(&app, &t, "Observation?category=vital-signs&_sort=-date&_count=250").await;
    writer.await.unwrap();
    let seen: BTreeSet<String> = w.matches.iter().cloned().collect();
    assert_eq!(seen.len(), w.matches.len(), "a match came twice");
    assert!(w.pages > 4, "{} pages", w.pages);
    for id in loaded.keys() {
        assert!(seen.contains(id), "{id}, loaded before paging began, was never returned");
    }
    // The loaded ones come in date order, newest first.
    let dates: Vec<DateTime<Utc>> = w.matches.iter().filter_map(|id| loaded.get(id).copied()).collect();
    assert!(dates.windows(2).all(|d| d[0] >= d[1]), "not sorted by -date");
}
