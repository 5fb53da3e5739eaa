//! The search criteria of a conditional create, update or delete
//! (`If-None-Exist: identifier=x|1`, `PUT /Patient?family=x&birthdate=y`),
//! kept in one canonical form.
//!
//! Conditional writes are made race-safe by claiming a subject derived
//! from the canonical criteria in the same atomic commit as the write (as
//! HAPI keeps a table of search URLs): two concurrent conditional creates
//! with the same criteria serialise on it, and the loser finds the winner.
//! Criteria that differ in form but match the same resources (another
//! parameter order is the same canonical form; another parameter is not)
//! are not serialised against each other; the read model still finds
//! whatever was written before.

/// Parameters that shape a search result rather than select resources:
/// meaningless as a condition, so refused rather than ignored.
const RESULT_PARAMETERS: &[&str] = &[
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_cursor",
    "_contained",
    "_containedType",
];

/// Parameters of the exchange, not of the search: dropped.
const FORMAT_PARAMETERS: &[&str] = &["_format", "_pretty"];

/// Conditional criteria: search parameters, sorted into canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Criteria {
    pairs: Vec<(String, String)>,
}

impl Criteria {
    /// Parses a query string such as `identifier=http://x|123&active=true`
    /// (a leading `?` is allowed).
    pub fn parse(query: &str) -> Result<Self, String> {
        let query = query.trim_start_matches('?');
        if let Some(bare) = query.split('&').find(|p| !p.is_empty() && !p.contains('=')) {
            return Err(format!("'{}' in the criteria is not a search parameter (name=value)", short(bare)));
        }
        let mut pairs = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if FORMAT_PARAMETERS.contains(&k.as_ref()) {
                continue;
            }
            if RESULT_PARAMETERS.contains(&k.as_ref()) {
                return Err(format!("'{}' shapes a search result; it cannot be a condition", short(&k)));
            }
            // No stored value can hold NUL (validation refuses it), and
            // PostgreSQL cannot compare it: a 400 here, not a database error.
            if k.contains('\0') || v.contains('\0') {
                return Err("the criteria must not contain NUL characters".into());
            }
            if v.is_empty() {
                return Err(format!("the criterion '{}' needs a value", short(&k)));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        if pairs.is_empty() {
            return Err("conditional operations need search criteria (e.g. identifier=system|value)".into());
        }
        pairs.sort();
        pairs.dedup();
        Ok(Self { pairs })
    }

    /// The criteria as search parameters, in canonical order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The canonical query string: what the claim subject is derived from.
    pub fn canonical(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            q.append_pair(k, v);
        }
        q.finish()
    }
}

fn short(s: &str) -> String {
    s.chars().take(40).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_criteria_in_another_order_are_one_canonical_form() {
        let a = Criteria::parse("family=Doe&birthdate=1990-01-01").unwrap_or_else(|e| panic!("{e}"));
        let b = Criteria::parse("?birthdate=1990-01-01&family=Doe&_format=json").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
        assert_eq!(a.canonical(), "birthdate=1990-01-01&family=Doe");
        let c = Criteria::parse("identifier=http%3A%2F%2Fx%7C1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.pairs(), [("identifier".to_owned(), "http://x|1".to_owned())]);
    }

    #[test]
    fn criteria_that_select_nothing_or_shape_results_are_refused() {
        for bad in ["", "?", "_format=json", "family", "family=", "_count=1&family=x", "_sort=name&name=x", "x=a%00b"] {
            assert!(Criteria::parse(bad).is_err(), "{bad}");
        }
    }
}
