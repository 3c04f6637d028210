//! Accounts: email, argon2id password hash and subscription tier.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

pub use vocabulary::{Tier, UnknownTier};

/// An email address as typed, trimmed. Uniqueness is case-insensitive (the database compares
/// `lower(email)`), the stored spelling is the first one registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid email address {0:?}")]
pub struct InvalidEmail(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let email = raw.trim();
        let valid = email.len() <= 254
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            })
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            Ok(Self(email.to_owned()))
        } else {
            Err(InvalidEmail(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key that identifies an account for throttling: PostgreSQL's `lower()` of the trimmed
/// address, the same expression as the unique index `users_email_lower_key` and every lookup
/// here. Never Rust's `to_lowercase`: the two disagree outside ASCII (`İ` is "i̇" in Rust, and
/// `lower()` follows the database collation), so a second normalisation would let a spelling
/// reach an account without touching its counter, or charge another account's counter. NULs
/// (which PostgreSQL text cannot hold, and no valid address has) are dropped.
pub async fn account_key(db: impl PgExecutor<'_>, raw: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT lower($1) AS "key!""#,
        raw.trim().replace('\0', "")
    )
    .fetch_one(db)
    .await
}

/// A user row without the password hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub tier: Tier,
    pub created_at: DateTime<Utc>,
}

struct UserRow {
    id: Uuid,
    email: String,
    tier: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = sqlx::Error;

    fn try_from(row: UserRow) -> Result<Self, Self::Error> {
        let tier = row
            .tier
            .parse()
            .map_err(|err| sqlx::Error::Decode(Box::new(err)))?;
        Ok(User {
            id: row.id,
            email: row.email,
            tier,
            created_at: row.created_at,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("a user with email {0} already exists")]
    DuplicateEmail(String),
    #[error("no user with email {0}")]
    NotFound(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Inserts a user whose password is already hashed.
pub async fn insert(
    db: impl PgExecutor<'_>,
    email: &Email,
    password_hash: &str,
    tier: Tier,
) -> Result<User, UserError> {
    let row = sqlx::query_as!(
        UserRow,
        "INSERT INTO users (email, password_hash, tier) VALUES ($1, $2, $3)
         RETURNING id, email, tier, created_at",
        email.as_str(),
        password_hash,
        tier.as_str(),
    )
    .fetch_one(db)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db_err) if db_err.is_unique_violation() => {
            UserError::DuplicateEmail(email.as_str().to_owned())
        }
        _ => UserError::Database(err),
    })?;
    Ok(row.try_into()?)
}

pub async fn set_tier(
    db: impl PgExecutor<'_>,
    email: &Email,
    tier: Tier,
) -> Result<User, UserError> {
    let row = sqlx::query_as!(
        UserRow,
        "UPDATE users SET tier = $2 WHERE lower(email) = lower($1)
         RETURNING id, email, tier, created_at",
        email.as_str(),
        tier.as_str(),
    )
    .fetch_optional(db)
    .await?;
    row.ok_or_else(|| UserError::NotFound(email.as_str().to_owned()))?
        .try_into()
        .map_err(Into::into)
}

/// Replaces the password hash of an existing user.
pub async fn set_password_hash(
    db: impl PgExecutor<'_>,
    email: &Email,
    password_hash: &str,
) -> Result<(), UserError> {
    let updated = sqlx::query!(
        "UPDATE users SET password_hash = $2 WHERE lower(email) = lower($1)",
        email.as_str(),
        password_hash,
    )
    .execute(db)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(UserError::NotFound(email.as_str().to_owned()));
    }
    Ok(())
}

pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<User>, UserError> {
    let rows = sqlx::query_as!(
        UserRow,
        "SELECT id, email, tier, created_at FROM users ORDER BY created_at, email"
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| User::try_from(row).map_err(Into::into))
        .collect()
}

pub async fn find_by_email(
    db: impl PgExecutor<'_>,
    email: &Email,
) -> Result<Option<User>, UserError> {
    let row = sqlx::query_as!(
        UserRow,
        "SELECT id, email, tier, created_at FROM users WHERE lower(email) = lower($1)",
        email.as_str(),
    )
    .fetch_optional(db)
    .await?;
    row.map(User::try_from).transpose().map_err(Into::into)
}

pub async fn find_by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<User>, UserError> {
    let row = sqlx::query_as!(
        UserRow,
        "SELECT id, email, tier, created_at FROM users WHERE id = $1",
        id,
    )
    .fetch_optional(db)
    .await?;
    row.map(User::try_from).transpose().map_err(Into::into)
}

/// The user and its stored password hash, for sign-in.
pub async fn find_credentials(
    db: impl PgExecutor<'_>,
    email: &Email,
) -> Result<Option<(User, String)>, UserError> {
    let row = sqlx::query!(
        "SELECT id, email, tier, created_at, password_hash FROM users
         WHERE lower(email) = lower($1)",
        email.as_str(),
    )
    .fetch_optional(db)
    .await?;
    row.map(|row| {
        User::try_from(UserRow {
            id: row.id,
            email: row.email,
            tier: row.tier,
            created_at: row.created_at,
        })
        .map(|user| (user, row.password_hash))
    })
    .transpose()
    .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_parsing() {
        assert_eq!(
            Email::parse("  Trader@Example.com ").unwrap().as_str(),
            "Trader@Example.com"
        );
        for bad in [
            "",
            "no-at",
            "@example.com",
            "a@",
            "a@b@c",
            "a b@example.com",
            "a@.com",
            "a@com.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
