//! Caps on what one resource may cost: its size and its search index rows.
//!
//! One projector applies every tenant's events; a resource with tens of
//! thousands of indexed values (a 1 MB Patient with 50,000 identifiers
//! costs ~0.4 s) holds it up for every other tenant. So the write side
//! refuses, before anything is published, a resource whose index rows
//! would exceed the cap, counting them with the very extraction function
//! the projector indexes with (`schemas::search::index`).

use serde_json::{Map, Value};

use schemas::ResourceType;

use crate::CommandError;

/// Index rows one resource may have unless configured otherwise: far above
/// any real resource seen (Synthea's largest have a few hundred).
pub const DEFAULT_MAX_INDEX_ROWS: usize = 5_000;

/// How many index rows `resource` would get, if more than `max`.
pub fn excess_index_rows(rt: ResourceType, resource: &mut Map<String, Value>, max: usize) -> Option<usize> {
    if max == 0 {
        return None;
    }
    // The extraction takes a `Value`; the map is moved in and back, not copied.
    let value = Value::Object(std::mem::take(resource));
    let rows = schemas::search::index(rt, &value).len();
    if let Value::Object(map) = value {
        *resource = map;
    }
    (rows > max).then_some(rows)
}

/// Refuses (413) a resource of more than `max_bytes` (what one event can
/// carry: checked first, before anything is published and before the
/// costlier index count), then one whose index rows exceed `max_rows`.
pub fn check_cost(
    rt: ResourceType,
    resource: &mut Map<String, Value>,
    bytes: usize,
    max_bytes: usize,
    max_rows: usize,
) -> Result<(), CommandError> {
    if bytes > max_bytes {
        metrics::counter!("fhirstream_writes_refused_total", "reason" => "resource_bytes").increment(1);
        return Err(CommandError::TooLarge(format!(
            "the {rt} has {bytes} bytes; one event carries at most {max_bytes} bytes of resource"
        )));
    }
    check_index_rows(rt, resource, max_rows)
}

/// Refuses (413) a resource whose index rows would exceed `max` (0: no cap).
pub fn check_index_rows(rt: ResourceType, resource: &mut Map<String, Value>, max: usize) -> Result<(), CommandError> {
    match excess_index_rows(rt, resource, max) {
        None => Ok(()),
        Some(rows) => {
            metrics::counter!("fhirstream_writes_refused_total", "reason" => "index_rows").increment(1);
            Err(CommandError::TooLarge(format!(
                "the {rt} would need {rows} search index rows; at most {max} are accepted per resource"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient(identifiers: usize) -> Map<String, Value> {
        let ids: Vec<Value> =
            (0..identifiers).map(|i| serde_json::json!({"system": "urn:x", "value": i.to_string()})).collect();
        serde_json::json!({"resourceType": "Patient", "identifier": ids}).as_object().unwrap().clone()
    }

    #[test]
    fn a_resource_is_refused_only_when_its_index_rows_exceed_the_cap_and_is_left_intact() {
        let rt = ResourceType::parse("Patient").unwrap();
        let mut small = patient(3);
        assert_eq!(excess_index_rows(rt, &mut small, 100), None);
        assert_eq!(small["identifier"].as_array().unwrap().len(), 3, "the map is given back");
        let mut big = patient(200);
        let rows = excess_index_rows(rt, &mut big, 100).expect("200 identifiers exceed 100 rows");
        assert!(rows >= 200);
        assert!(matches!(check_index_rows(rt, &mut big, 100), Err(CommandError::TooLarge(_))));
        assert!(check_index_rows(rt, &mut big, 0).is_ok(), "0 means no cap");
        assert!(matches!(check_cost(rt, &mut small, 2_000, 1_000, 0), Err(CommandError::TooLarge(_))));
        assert!(check_cost(rt, &mut small, 900, 1_000, 100).is_ok());
    }
}
