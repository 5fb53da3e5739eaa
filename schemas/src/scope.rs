//! SMART on FHIR scopes: what a token lets its holder do.
//!
//! Understood: v1 `system/Patient.read`, `system/*.write`, `system/*.*`;
//! v2 `system/Patient.cruds` (any subset of c, r, u, d, s); `user/` is read
//! like `system/` because this server has no user context to narrow by;
//! `patient/` scopes and v2 scopes with a `?` query need a context this
//! server cannot enforce, so they grant nothing. `fhirstream/admin` grants
//! tenant administration.

/// A FHIR interaction, as scopes name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Interaction {
    fn bit(self) -> u8 {
        match self {
            Self::Create => 1,
            Self::Read => 2,
            Self::Update => 4,
            Self::Delete => 8,
            Self::Search => 16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Read => "read",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Search => "search",
        }
    }
}

const ALL: u8 = 31;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// `None` for `*`.
    resource_type: Option<String>,
    allowed: u8,
}

/// The parsed `scope` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    rules: Vec<Rule>,
    admin: bool,
}

/// The scope that grants tenant administration.
pub const ADMIN_SCOPE: &str = "fhirstream/admin";

impl Scopes {
    /// Everything (for a server running without authentication).
    pub fn all() -> Self {
        Self { rules: vec![Rule { resource_type: None, allowed: ALL }], admin: true }
    }

    /// Parses a space-separated scope string; unknown scopes grant nothing.
    pub fn parse(scope: &str) -> Self {
        let mut scopes = Self::default();
        for token in scope.split_whitespace() {
            if token == ADMIN_SCOPE {
                scopes.admin = true;
                continue;
            }
            let Some(rest) = token.strip_prefix("system/").or_else(|| token.strip_prefix("user/")) else {
                continue;
            };
            let Some((rt, perms)) = rest.split_once('.') else { continue };
            let allowed = match perms {
                "read" => Interaction::Read.bit() | Interaction::Search.bit(),
                "write" => Interaction::Create.bit() | Interaction::Update.bit() | Interaction::Delete.bit(),
                "*" => ALL,
                v2 if !v2.is_empty() && v2.len() <= 5 && v2.chars().all(|c| "cruds".contains(c)) => {
                    v2.chars().fold(0, |acc, c| {
                        acc | match c {
                            'c' => Interaction::Create.bit(),
                            'r' => Interaction::Read.bit(),
                            'u' => Interaction::Update.bit(),
                            'd' => Interaction::Delete.bit(),
                            _ => Interaction::Search.bit(),
                        }
                    })
                }
                _ => continue,
            };
            let resource_type = match rt {
                "*" => None,
                t if crate::ResourceType::parse(t).is_ok() => Some(t.to_owned()),
                _ => continue,
            };
            scopes.rules.push(Rule { resource_type, allowed });
        }
        scopes
    }

    /// Whether the scopes allow `interaction` on `resource_type`.
    pub fn allows(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.rules.iter().any(|r| {
            r.resource_type.as_deref().is_none_or(|t| t == resource_type) && r.allowed & interaction.bit() != 0
        })
    }

    pub fn is_admin(&self) -> bool {
        self.admin
    }
}

#[cfg(test)]
mod tests {
    use super::Interaction::*;
    use super::*;

    #[test]
    fn v1_read_and_write_scopes_map_to_interactions() {
        let s = Scopes::parse("system/Patient.read system/Observation.write");
        assert!(s.allows("Patient", Read) && s.allows("Patient", Search));
        assert!(!s.allows("Patient", Create) && !s.allows("Patient", Delete));
        assert!(s.allows("Observation", Create) && s.allows("Observation", Update) && s.allows("Observation", Delete));
        assert!(!s.allows("Observation", Read));
        assert!(!s.allows("Encounter", Read));
    }

    #[test]
    fn wildcards_cover_every_type() {
        let s = Scopes::parse("system/*.read");
        assert!(s.allows("Encounter", Read) && !s.allows("Encounter", Update));
        assert!(Scopes::parse("system/*.*").allows("Claim", Delete));
    }

    #[test]
    fn v2_letters_grant_exactly_what_they_name() {
        let s = Scopes::parse("system/Patient.rs system/*.c");
        assert!(s.allows("Patient", Read) && s.allows("Patient", Search) && s.allows("Patient", Create));
        assert!(!s.allows("Patient", Update) && !s.allows("Patient", Delete));
        assert!(Scopes::parse("system/*.cruds").allows("Goal", Delete));
    }

    #[test]
    fn scopes_this_server_cannot_enforce_grant_nothing() {
        for scope in [
            "patient/*.read",
            "system/Patient.rs?category=x",
            "system/Nope.read",
            "system/*.xyz",
            "openid",
            "system/Patient",
            "",
        ] {
            let s = Scopes::parse(scope);
            assert!(!s.allows("Patient", Read), "{scope}");
            assert!(!s.is_admin(), "{scope}");
        }
    }

    #[test]
    fn the_admin_scope_is_separate_from_resource_access() {
        let s = Scopes::parse("fhirstream/admin");
        assert!(s.is_admin());
        assert!(!s.allows("Patient", Read));
    }
}
