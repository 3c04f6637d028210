//! Password sign-in shared by the authorization flow and the account pages: per-IP and
//! per-account throttling, argon2id verification with equal work for unknown accounts, and the
//! audit trail.

use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::json;
use store::users::{Email, User};

use crate::client_ip::bucket;
use crate::error::Internal;
use crate::events::{self, Kind, Origin};
use crate::state::OAuthState;

pub const FAILED: &str = "The email or password is incorrect.";
pub const THROTTLED: &str = "Too many sign-in attempts. Wait 15 minutes and try again.";

/// An argon2id hash of a random password, verified against when the account does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vb0eyTqa8RrxMwL2Wf6fV2TXMFZ2mRyXxLyo0fdWhy8";

#[derive(Debug)]
pub enum Authentication {
    Verified(User),
    Failed,
    Throttled,
}

/// Checks a password sign-in; records failures for throttling and every outcome as an event.
pub async fn authenticate(
    state: &OAuthState,
    origin: &Origin,
    email: &str,
    password: String,
    client_id: Option<&str>,
) -> Result<Authentication, Internal> {
    let ip_bucket = origin.ip.map(bucket).unwrap_or_default();
    // PostgreSQL text cannot hold NUL; such an email never parses, so it is throttled without it.
    let email_lower = email.trim().to_lowercase().replace('\0', "");
    let settings = state.settings();
    // Each attempt reserves its failure slot before the password is checked, under locks on
    // the address and the account (always taken in that order), so a burst of parallel guesses
    // is counted one by one instead of all seeing the same count. A correct password gives its
    // slot back.
    let mut tx = state.db().begin().await?;
    for key in [
        format!("sign-in ip {ip_bucket}"),
        format!("sign-in {email_lower}"),
    ] {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(key)
            .execute(&mut *tx)
            .await?;
    }
    // The window is 15 minutes.
    let (by_ip, by_account): (i64, i64) = sqlx::query_as(
        "SELECT
            (SELECT count(*) FROM sign_in_failures
             WHERE ip_bucket = $1 AND created_at > $3 - interval '15 minutes'),
            (SELECT count(*) FROM sign_in_failures
             WHERE email_lower = $2 AND created_at > $3 - interval '15 minutes')",
    )
    .bind(&ip_bucket)
    .bind(&email_lower)
    .bind(state.now())
    .fetch_one(&mut *tx)
    .await?;
    if by_ip >= i64::from(settings.sign_in_failures_per_ip)
        || by_account >= i64::from(settings.sign_in_failures_per_account)
    {
        return Ok(Authentication::Throttled);
    }
    let reserved: i64 = sqlx::query_scalar(
        "INSERT INTO sign_in_failures (ip_bucket, email_lower, created_at)
         VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(&ip_bucket)
    .bind(&email_lower)
    .bind(state.now())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let account = match Email::parse(email) {
        Ok(email) => store::users::find_credentials(state.db(), &email).await?,
        Err(_) => None,
    };
    let verified = tokio::task::spawn_blocking(move || {
        if let Some((user, hash)) = account {
            store::password::verify(&password, &hash).then_some(user)
        } else {
            // Same work for unknown accounts, so timing does not reveal which emails exist.
            let _ = store::password::verify(&password, DUMMY_HASH);
            None
        }
    })
    .await?;
    if let Some(user) = verified {
        sqlx::query("DELETE FROM sign_in_failures WHERE id = $1")
            .bind(reserved)
            .execute(state.db())
            .await?;
        events::record(
            state.db(),
            Kind::SignedIn,
            client_id,
            Some(user.id),
            origin,
            json!({}),
        )
        .await;
        return Ok(Authentication::Verified(user));
    }
    events::record(
        state.db(),
        Kind::SignInFailed,
        client_id,
        None,
        origin,
        json!({}),
    )
    .await;
    Ok(Authentication::Failed)
}

/// Marks a throttled sign-in page with `Retry-After`.
pub fn throttled(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("900"));
    response
}
