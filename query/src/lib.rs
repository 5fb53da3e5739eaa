//! The read side of fhirstream: resources, versions and history from the
//! PostgreSQL read models.
//!
//! Every query takes the tenant first and filters on it explicitly; the
//! tenant is also the leading column of every key, so a query touches one
//! partition and one index range, whatever other tenants hold.

pub mod conformance;
pub mod export;
pub mod history;
pub mod read;
pub mod search;

pub use read::{Queries, ReadResult, VersionRow};

/// Why a read failed. "Not found" is not an error: reads return `Option`.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// PostgreSQL is unreachable or overloaded; the read can be retried.
    #[error("the read-model database is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable(e.to_string())
            }
            // statement_timeout: the query was cancelled, the database is fine.
            sqlx::Error::Database(ref d) if d.code().as_deref() == Some("57014") => {
                Self::Unavailable("the query took too long and was cancelled".into())
            }
            e => Self::Internal(anyhow::Error::new(e).context("query the read model")),
        }
    }
}
