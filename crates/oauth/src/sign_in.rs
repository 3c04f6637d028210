//! Password sign-in shared by the authorization flow and the account pages: throttling that
//! slows the guesser without locking the owner out, argon2id verification with equal work for
//! unknown accounts under a process-wide concurrency cap, and the audit trail.
//!
//! Throttling rule, over the last 15 minutes of failures (a failure is a wrong password, an
//! unknown account or an attempt cut short; the database holds them, so every replica agrees):
//! 1. An address (IPv4, or IPv6 /64) with `sign_in_failures_per_ip` failures, on any accounts,
//!    is refused until its oldest one leaves the window.
//! 2. An address with `sign_in_failures_per_account` failures on one account is refused on that
//!    account until its oldest one there leaves the window.
//! 3. Once an account has `sign_in_failures_per_account` failures from all addresses together,
//!    an address that has at least one failure on it waits `sign_in_delay_base × 2^(extra)`
//!    after its latest failure there (`extra`: the account's failures beyond that threshold),
//!    at most 15 minutes.
//!
//! An address with no failure on an account is never held back by that account's count: the
//! owner signs in from their own network however many guesses were made elsewhere, and can
//! reach the AI Clients page to revoke. A guesser spread over many addresses gets one free try
//! per address, then, as soon as the account is past its threshold by a handful, about one try
//! per address per 15 minutes. Refusals carry the exact seconds left in `Retry-After`.
//!
//! Accounts are counted under [`store::users::account_key`], the normalisation the account
//! lookup itself uses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use store::password::Workspace;
use store::users::{Email, User};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client_ip::bucket;
use crate::db::sign_in_failures::{self, Counts};
use crate::error::Internal;
use crate::events::{self, Kind, Origin};
use crate::state::{OAuthSettings, OAuthState};

pub const FAILED: &str = "The email or password is incorrect.";
pub const THROTTLED: &str =
    "Too many sign-in attempts from this network. Wait a few minutes and try again.";
pub const BUSY: &str = "CrossTrade is very busy right now. Try again in a moment.";

/// An argon2id hash of a random password, verified against when the account does not exist.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Vb0eyTqa8RrxMwL2Wf6fV2TXMFZ2mRyXxLyo0fdWhy8";

const WINDOW: TimeDelta = TimeDelta::minutes(15);

/// Seconds a sign-in refused for capacity should wait.
const BUSY_RETRY_SECS: u64 = 2;

#[derive(Debug)]
pub enum Authentication {
    Verified(User),
    Failed,
    /// Refused by the throttling rule; seconds until this address may try this account again.
    Throttled(u64),
    /// Every password check slot is busy; nothing was counted. Seconds to wait.
    Busy(u64),
}

/// Password checks at once on this replica, each with its own argon2id working memory
/// (19 MiB) kept for reuse: memory stays at most slots × 19 MiB whatever the request rate.
#[derive(Debug, Clone)]
pub struct PasswordSlots {
    slots: Arc<Semaphore>,
    spare: Arc<Mutex<Vec<Workspace>>>,
    wait: Duration,
}

/// The right to run one password check, with its working memory.
#[derive(Debug)]
pub struct PasswordSlot {
    memory: Option<Workspace>,
    spare: Arc<Mutex<Vec<Workspace>>>,
    _permit: OwnedSemaphorePermit,
}

impl PasswordSlot {
    fn memory(&mut self) -> &mut Workspace {
        self.memory.get_or_insert_with(Workspace::default)
    }
}

impl Drop for PasswordSlot {
    fn drop(&mut self) {
        // Back to the pool before the permit is released, so there are never more
        // workspaces than slots.
        if let Some(memory) = self.memory.take() {
            self.spare
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(memory);
        }
    }
}

impl PasswordSlots {
    pub fn new(settings: &OAuthSettings) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(settings.password_checks_at_once.max(1))),
            spare: Arc::default(),
            wait: settings.password_check_wait,
        }
    }

    /// A slot, waiting at most the configured time; `None` when none came free.
    pub async fn acquire(&self) -> Option<PasswordSlot> {
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        let memory = self
            .spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        Some(PasswordSlot {
            memory,
            spare: Arc::clone(&self.spare),
            _permit: permit,
        })
    }
}

/// Whole seconds from `now` until `until`, rounded up; `None` when already past.
fn seconds_until(now: DateTime<Utc>, until: DateTime<Utc>) -> Option<u64> {
    let left = until - now;
    if left <= TimeDelta::zero() {
        return None;
    }
    let secs = left.num_seconds() + i64::from(left.subsec_nanos() > 0);
    u64::try_from(secs).ok().map(|s| s.max(1))
}

/// The throttling rule of the module documentation: seconds to wait, or `None` to go ahead.
fn wait_for(counts: &Counts, settings: &OAuthSettings, now: DateTime<Utc>) -> Option<u64> {
    if counts.by_ip >= i64::from(settings.sign_in_failures_per_ip) {
        return counts
            .ip_oldest
            .and_then(|oldest| seconds_until(now, oldest + WINDOW));
    }
    let per_account = i64::from(settings.sign_in_failures_per_account);
    if counts.here >= per_account {
        return counts
            .here_oldest
            .and_then(|oldest| seconds_until(now, oldest + WINDOW));
    }
    if counts.here == 0 || counts.by_account < per_account {
        return None;
    }
    let extra = u32::try_from(counts.by_account - per_account).unwrap_or(u32::MAX);
    let base = TimeDelta::from_std(settings.sign_in_delay_base).unwrap_or(WINDOW);
    let delay = 2_i32
        .checked_pow(extra)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(WINDOW, |delay| delay.min(WINDOW));
    counts
        .here_latest
        .and_then(|latest| seconds_until(now, latest + delay))
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
    let settings = state.settings();
    // Each attempt reserves its failure slot before the password is checked, under locks on
    // the address and the account (always taken in that order), so a burst of parallel guesses
    // is counted one by one instead of all seeing the same count. A correct password gives its
    // slot back.
    let mut tx = state.db().begin().await?;
    let account = store::users::account_key(&mut *tx, email).await?;
    for key in [
        format!("sign-in ip {ip_bucket}"),
        format!("sign-in {account}"),
    ] {
        store::lock::advisory_xact(&mut *tx, &key).await?;
    }
    let now = state.now();
    let counts = sign_in_failures::counts(&mut *tx, &ip_bucket, &account, now - WINDOW).await?;
    if let Some(seconds) = wait_for(&counts, settings, now) {
        return Ok(Authentication::Throttled(seconds));
    }
    let reserved = sign_in_failures::reserve(&mut *tx, &ip_bucket, &account, now).await?;
    tx.commit().await?;
    let give_back = || sign_in_failures::give_back(state.db(), reserved);
    // Beyond the cap the attempt is answered 503 and not counted: the server's load is not the
    // guesser's failure, and the owner is not charged for it.
    let Some(slot) = state.inner.password_slots.acquire().await else {
        give_back().await?;
        return Ok(Authentication::Busy(BUSY_RETRY_SECS));
    };
    let credentials = match Email::parse(email) {
        Ok(email) => store::users::find_credentials(state.db(), &email).await?,
        Err(_) => None,
    };
    let verified = tokio::task::spawn_blocking(move || {
        // Held until the hash is done, even if the request is dropped meanwhile.
        let mut slot = slot;
        if let Some((user, hash)) = credentials {
            store::password::verify_in(&password, &hash, slot.memory()).then_some(user)
        } else {
            // Same work for unknown accounts, so timing does not reveal which emails exist.
            let _ = store::password::verify_in(&password, DUMMY_HASH, slot.memory());
            None
        }
    })
    .await?;
    if let Some(user) = verified {
        give_back().await?;
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

/// A sign-in that did not succeed, as every sign-in form shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub message: &'static str,
    pub status: StatusCode,
    /// Seconds to wait before trying again (throttled, busy).
    pub retry_after: Option<u64>,
}

impl Refusal {
    /// Marks the re-shown sign-in page with `Retry-After` when the client must wait.
    pub fn mark(self, page: Response) -> Response {
        match self.retry_after {
            Some(seconds) => crate::pages::retry_after(page, seconds),
            None => page,
        }
    }
}

impl Authentication {
    /// The signed-in user, or why the form is shown again.
    pub fn user(self) -> Result<User, Refusal> {
        let refusal = |message, status, retry_after| Refusal {
            message,
            status,
            retry_after,
        };
        match self {
            Authentication::Verified(user) => Ok(user),
            Authentication::Failed => Err(refusal(FAILED, StatusCode::UNAUTHORIZED, None)),
            Authentication::Throttled(seconds) => Err(refusal(
                THROTTLED,
                StatusCode::TOO_MANY_REQUESTS,
                Some(seconds),
            )),
            Authentication::Busy(seconds) => Err(refusal(
                BUSY,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(seconds),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OAuthSettings {
        OAuthSettings {
            issuer: "https://example.com".into(),
            authorization_code_lifetime: Duration::from_secs(60),
            access_token_lifetime: Duration::from_secs(60),
            refresh_token_lifetime: None,
            refresh_token_idle_lifetime: Duration::from_secs(60),
            registrations_per_hour: 10,
            sign_in_failures_per_ip: 20,
            sign_in_failures_per_account: 5,
            sign_in_delay_base: Duration::from_secs(30),
            password_checks_at_once: 4,
            password_check_wait: Duration::from_secs(1),
            token_requests_per_minute: 100,
            token_requests_per_grant_per_minute: 100,
            trusted_proxies: Vec::new(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn counts(by_ip: i64, by_account: i64, here: i64, ago: i64) -> Counts {
        let at = now() - TimeDelta::seconds(ago);
        Counts {
            by_ip,
            ip_oldest: Some(at - TimeDelta::seconds(100)),
            by_account,
            here,
            here_oldest: Some(at - TimeDelta::seconds(60)),
            here_latest: Some(at),
        }
    }

    #[test]
    fn the_rule() {
        let s = settings();
        let wait = |c: Counts| wait_for(&c, &s, now());
        // A clean address is never held back by the account's count.
        assert_eq!(wait(counts(0, 10_000, 0, 0)), None);
        // Below the account threshold nothing waits.
        assert_eq!(wait(counts(3, 4, 3, 0)), None);
        // Past it, an address with failures there waits base × 2^extra after its latest one.
        assert_eq!(wait(counts(1, 5, 1, 0)), Some(30));
        assert_eq!(wait(counts(1, 7, 1, 0)), Some(120));
        assert_eq!(wait(counts(1, 7, 1, 100)), Some(20));
        assert_eq!(wait(counts(1, 7, 1, 120)), None);
        // Capped at the window, even for absurd counts.
        assert_eq!(wait(counts(1, 5_000, 1, 0)), Some(900));
        // Per address and account: until the oldest leaves the window.
        assert_eq!(wait(counts(5, 5, 5, 0)), Some(840));
        // Per address: the hard limit.
        assert_eq!(wait(counts(20, 0, 0, 0)), Some(800));
    }
}
