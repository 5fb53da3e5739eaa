//! FHIR R4 (4.0.1) definitions derived from the official ones and committed,
//! so nothing reads `../shared` at run time (`scripts/gen-r4.py`).

mod resource_types;

pub(crate) use resource_types::RESOURCE_TYPES;

/// The FHIR version this server speaks.
pub const FHIR_VERSION: &str = "4.0.1";

mod patient_compartment;

/// The search parameters whose references put a resource of `rt` in a
/// Patient's compartment, or `None` if `rt` is not in that compartment.
/// (For `Patient` itself it is the `link` parameter; every Patient is in
/// its own compartment.)
pub fn patient_compartment(rt: crate::ResourceType) -> Option<&'static [&'static str]> {
    let table = patient_compartment::PATIENT_COMPARTMENT;
    table.binary_search_by(|(t, _)| (*t).cmp(rt.as_str())).ok().map(|i| table[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_join_the_patient_compartment_by_subject_and_performer() {
        let rt = crate::ResourceType::parse("Observation").expect("type");
        assert_eq!(patient_compartment(rt), Some(&["subject", "performer"][..]));
        let org = crate::ResourceType::parse("Organization").expect("type");
        assert_eq!(patient_compartment(org), None);
    }
}
