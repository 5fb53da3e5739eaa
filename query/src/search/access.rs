//! The types a search reads beyond the ones it names: a chain reads its
//! link targets (`subject:Patient.identifier=x` tells which Observations
//! point at a Patient with that identifier), `_has` reads its source type
//! (`_has:Observation:subject:code=x` filters by Observation contents). A
//! token must be allowed to search each of them, or the search is an
//! oracle for the contents of types it cannot read.
//!
//! Includes are not narrowed here: they add resources to a page without
//! changing which resources match, and the HTTP edge leaves out every
//! included resource of a type the token may not read.

use schemas::ResourceType;

use super::request::{Clause, SearchRequest};

/// Narrows every chain to the link targets `searchable` allows; refuses
/// (with the type) a chain left with none and a `_has` over a type it
/// does not allow. A chain whose parameter could point at several types
/// (`subject.name=x`) keeps matching through the allowed ones.
pub fn narrow_to_searchable(
    req: &mut SearchRequest,
    searchable: &impl Fn(ResourceType) -> bool,
) -> Result<(), ResourceType> {
    req.clauses.iter_mut().try_for_each(|c| narrow_clause(c, searchable))
}

fn narrow_clause(clause: &mut Clause, searchable: &impl Fn(ResourceType) -> bool) -> Result<(), ResourceType> {
    match clause {
        Clause::Chain { targets, inner, .. } => {
            let Some(&first) = targets.first() else { return Ok(()) };
            targets.retain(|t| searchable(*t));
            if targets.is_empty() {
                return Err(first);
            }
            narrow_clause(inner, searchable)
        }
        Clause::Has { source, inner, .. } => {
            if !searchable(*source) {
                return Err(*source);
            }
            narrow_clause(inner, searchable)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::parse::{Context, parse};

    fn rt(name: &str) -> ResourceType {
        ResourceType::parse(name).unwrap()
    }

    fn request(rtype: &str, query: &[(&str, &str)]) -> SearchRequest {
        let pairs: Vec<(String, String)> = query.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        let cx = Context { tenant_base: "http://x/fhir/t", now: chrono::Utc::now(), strict: true };
        parse(vec![rt(rtype)], &pairs, &cx).unwrap()
    }

    fn only(types: &'static [&'static str]) -> impl Fn(ResourceType) -> bool {
        move |t: ResourceType| types.contains(&t.as_str())
    }

    #[test]
    fn a_chain_into_an_unsearchable_type_is_refused() {
        let mut req = request("Observation", &[("subject:Patient.identifier", "x")]);
        assert_eq!(narrow_to_searchable(&mut req, &only(&["Observation"])), Err(rt("Patient")));
        let mut req = request("Observation", &[("subject:Patient.identifier", "x")]);
        assert_eq!(narrow_to_searchable(&mut req, &only(&["Observation", "Patient"])), Ok(()));
    }

    #[test]
    fn an_untyped_chain_keeps_only_the_searchable_targets() {
        let mut req = request("Observation", &[("subject.name", "x")]);
        narrow_to_searchable(&mut req, &only(&["Observation", "Patient"])).unwrap();
        let Clause::Chain { targets, .. } = &req.clauses[0] else { panic!("a chain") };
        assert_eq!(targets, &[rt("Patient")]);
    }

    #[test]
    fn has_over_an_unsearchable_type_is_refused() {
        let mut req = request("Patient", &[("_has:Observation:subject:code", "x")]);
        assert_eq!(narrow_to_searchable(&mut req, &only(&["Patient"])), Err(rt("Observation")));
        let mut req = request("Patient", &[("_has:Observation:subject:code", "x")]);
        assert_eq!(narrow_to_searchable(&mut req, &only(&["Patient", "Observation"])), Ok(()));
    }
}
