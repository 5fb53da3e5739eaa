//! FHIR R4 search parameters: the definitions (derived from the official
//! `search-parameters.json` by `scripts/gen-search-params.py` and committed)
//! and the extraction of index values from a resource at projection time.
//!
//! Pure: the projector turns [`IndexEntry`]s into rows, the query side
//! parses search values with the same normalisation and date rules, so
//! what is stored and what is asked for always agree.

mod defs;
mod extract;
mod value;

pub use defs::{SearchParam, param, params, unsupported};
pub use extract::index;
pub use value::{DateRange, ValueError, far_future, far_past, normalize, parse_date_range};

/// The FHIR search parameter types fhirstream indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    String,
    Token,
    Date,
    Reference,
    Number,
    Quantity,
    Uri,
}

impl ParamKind {
    /// The FHIR code of the type (`string`, `token`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Token => "token",
            Self::Date => "date",
            Self::Reference => "reference",
            Self::Number => "number",
            Self::Quantity => "quantity",
            Self::Uri => "uri",
        }
    }
}

/// One value a resource holds for a search parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexValue {
    /// `normalized` is [`normalize`]d (lower case, accents removed) for the
    /// default starts-with and `:contains` matches; `exact` is verbatim.
    String {
        normalized: String,
        exact: String,
    },
    /// A code with its system; `text` is the [`normalize`]d display or
    /// CodeableConcept text, for `:text`.
    Token {
        system: Option<String>,
        code: Option<String>,
        text: Option<String>,
    },
    /// The instant range the value covers at its precision, half-open.
    Date(DateRange),
    /// A reference: the type and id when it points at a resource by
    /// `Type/id` (relative or absolute), and the reference string as given.
    Reference {
        target_type: Option<crate::ResourceType>,
        target_id: Option<String>,
        url: String,
    },
    /// A decimal, as its JSON text (kept exact for PostgreSQL `numeric`).
    Number {
        value: String,
    },
    Quantity {
        value: String,
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
    },
    Uri {
        uri: String,
    },
}

/// A value of one named parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    pub param: &'static str,
    pub value: IndexValue,
}
