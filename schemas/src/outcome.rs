//! FHIR `OperationOutcome`, the body of every error response.

use serde::Serialize;

/// The FHIR `IssueType` codes this server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueCode {
    Invalid,
    Structure,
    Required,
    Value,
    Security,
    Login,
    Forbidden,
    NotSupported,
    Duplicate,
    NotFound,
    Deleted,
    TooLong,
    Conflict,
    Processing,
    TooCostly,
    Throttled,
    Transient,
    Timeout,
    Exception,
    Informational,
    CodeInvalid,
    Invariant,
}

#[derive(Debug, Clone, Serialize)]
struct Issue {
    severity: &'static str,
    code: IssueCode,
    diagnostics: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    expression: Vec<String>,
}

/// An `OperationOutcome` resource.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcome {
    resource_type: &'static str,
    issue: Vec<Issue>,
}

impl OperationOutcome {
    /// An outcome with one error issue.
    pub fn error(code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Self::with_severity("error", code, diagnostics)
    }

    /// An outcome with one informational issue (e.g. a successful delete).
    pub fn information(diagnostics: impl Into<String>) -> Self {
        Self::with_severity("information", IssueCode::Informational, diagnostics)
    }

    fn with_severity(severity: &'static str, code: IssueCode, diagnostics: impl Into<String>) -> Self {
        Self {
            resource_type: "OperationOutcome",
            issue: vec![Issue { severity, code, diagnostics: diagnostics.into(), expression: vec![] }],
        }
    }

    /// An outcome listing validation issues (errors and warnings), or one
    /// informational issue saying the resource is valid when there are none.
    pub fn from_issues(issues: &[crate::validate::Issue]) -> Self {
        use crate::validate::{IssueKind, Severity};
        if issues.is_empty() {
            return Self::information("the resource is valid FHIR R4");
        }
        let issue = issues
            .iter()
            .map(|i| Issue {
                severity: match i.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                },
                code: match i.code {
                    IssueKind::Structure => IssueCode::Structure,
                    IssueKind::Required => IssueCode::Required,
                    IssueKind::Value => IssueCode::Value,
                    IssueKind::CodeInvalid => IssueCode::CodeInvalid,
                    IssueKind::Invariant => IssueCode::Invariant,
                    IssueKind::NotSupported => IssueCode::NotSupported,
                },
                diagnostics: i.message.clone(),
                expression: vec![i.expression.clone()],
            })
            .collect();
        Self { resource_type: "OperationOutcome", issue }
    }

    /// Whether any issue is an error.
    pub fn has_errors(&self) -> bool {
        self.issue.iter().any(|i| i.severity == "error")
    }

    /// Points the first issue at the element it is about (FHIRPath).
    pub fn at(mut self, expression: impl Into<String>) -> Self {
        if let Some(issue) = self.issue.first_mut() {
            issue.expression.push(expression.into());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_serializes_as_a_fhir_resource() {
        let o = OperationOutcome::error(IssueCode::NotFound, "Patient/1 is not known").at("Patient.id");
        let v = serde_json::to_value(o).unwrap();
        assert_eq!(v["resourceType"], "OperationOutcome");
        assert_eq!(v["issue"][0]["severity"], "error");
        assert_eq!(v["issue"][0]["code"], "not-found");
        assert_eq!(v["issue"][0]["expression"][0], "Patient.id");
    }
}
