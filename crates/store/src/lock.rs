//! Transaction-scoped advisory locks: one writer at a time for a named resource, across
//! replicas, released when the transaction ends.

use sqlx::PgExecutor;

/// Waits for the lock named `name` and holds it until the transaction ends.
pub async fn advisory_xact(db: impl PgExecutor<'_>, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext($1))", name)
        .execute(db)
        .await?;
    Ok(())
}
