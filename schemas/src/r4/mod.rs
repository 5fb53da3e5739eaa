//! FHIR R4 (4.0.1) definitions derived from the official ones and committed,
//! so nothing reads `../shared` at run time (`scripts/gen-r4.py`).

mod resource_types;

pub(crate) use resource_types::RESOURCE_TYPES;

/// The FHIR version this server speaks.
pub const FHIR_VERSION: &str = "4.0.1";
