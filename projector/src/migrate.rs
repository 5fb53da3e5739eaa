//! Schema migrations of the read models, embedded in the binary.
//!
//! Migrations are listed here by hand instead of with `sqlx::migrate!`, whose
//! macro feature would compile sqlx a second time for one call.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{PgPool, SqlSafeStr};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "read models", include_str!("../migrations/0001_read_models.sql")),
    (2, "tenants and row-level security", include_str!("../migrations/0002_tenants_and_rls.sql")),
    (3, "one-round-trip read functions", include_str!("../migrations/0003_read_functions.sql")),
    (4, "search index", include_str!("../migrations/0004_search_values.sql")),
    (5, "tenants read the shared space", include_str!("../migrations/0005_shared_reads.sql")),
    (6, "events PostgreSQL refused", include_str!("../migrations/0006_refused_events.sql")),
    (7, "the projector's batch as one function", include_str!("../migrations/0007_apply_function.sql")),
    (8, "read functions keep their plans", include_str!("../migrations/0008_read_function_plans.sql")),
    (9, "order-independent batch apply", include_str!("../migrations/0009_order_independent_apply.sql")),
];

/// The read-model migrator.
pub fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(*version, Cow::Borrowed(*description), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect(),
    )
}

/// Applies every pending migration; safe to call from several processes.
pub async fn run(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    migrator().run(pool).await
}

/// Whether every migration this binary knows has been applied.
pub async fn is_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let latest = MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0);
    let applied: Option<i64> =
        sqlx::query_scalar("select max(version) from _sqlx_migrations where success").fetch_one(pool).await?;
    Ok(applied.unwrap_or(0) >= latest)
}
