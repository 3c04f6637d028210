//! Security events: who did what, from where. Never a secret.

use std::net::IpAddr;

use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    ClientRegistered,
    SignInFailed,
    SignedIn,
    ConsentGranted,
    ConsentDenied,
    TokenIssued,
    TokenRefreshed,
    CodeReuse,
    RefreshReplay,
    Revoked,
    ClientDeleted,
    StepUp,
    ConfirmationApproved,
    ConfirmationRejected,
    ConfirmationPolicyChanged,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ClientRegistered => "client_registered",
            Kind::SignInFailed => "sign_in_failed",
            Kind::SignedIn => "signed_in",
            Kind::ConsentGranted => "consent_granted",
            Kind::ConsentDenied => "consent_denied",
            Kind::TokenIssued => "token_issued",
            Kind::TokenRefreshed => "token_refreshed",
            Kind::CodeReuse => "code_reuse",
            Kind::RefreshReplay => "refresh_replay",
            Kind::Revoked => "revoked",
            Kind::ClientDeleted => "client_deleted",
            Kind::StepUp => "step_up",
            Kind::ConfirmationApproved => "confirmation_approved",
            Kind::ConfirmationRejected => "confirmation_rejected",
            Kind::ConfirmationPolicyChanged => "confirmation_policy_changed",
        }
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Origin {
    /// Where a request came from: its client address (as `client_ip` decides it) and its
    /// `User-Agent`.
    pub fn of_request(ip: IpAddr, headers: &axum::http::HeaderMap) -> Self {
        Self {
            ip: Some(ip),
            user_agent: headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    /// The address as `security_events.ip` holds it.
    pub fn stored_ip(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }

    /// The `User-Agent` as `security_events.user_agent` holds it: at most 300 characters.
    pub fn stored_user_agent(&self) -> Option<String> {
        self.user_agent
            .as_deref()
            .map(|ua| ua.chars().take(300).collect())
    }
}

/// Records an event. A failure to record is logged and does not fail the request.
pub async fn record(
    db: impl sqlx::PgExecutor<'_>,
    kind: Kind,
    client_id: Option<&str>,
    user_id: Option<Uuid>,
    origin: &Origin,
    detail: Value,
) {
    let result = insert(db, kind, client_id, user_id, origin, detail).await;
    if let Err(err) = result {
        tracing::warn!(kind = kind.as_str(), error = %err, "could not record a security event");
    }
    log(kind, client_id, user_id);
}

/// The log line of an event recorded with [`insert`], once its transaction has committed.
pub fn log(kind: Kind, client_id: Option<&str>, user_id: Option<Uuid>) {
    tracing::info!(event = kind.as_str(), client_id, user_id = ?user_id, "security event");
}

/// Records an event as part of the caller's transaction: a failure fails it.
pub async fn insert(
    db: impl sqlx::PgExecutor<'_>,
    kind: Kind,
    client_id: Option<&str>,
    user_id: Option<Uuid>,
    origin: &Origin,
    detail: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO security_events (kind, client_id, user_id, ip, user_agent, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
        kind.as_str(),
        client_id,
        user_id,
        origin.stored_ip(),
        origin.stored_user_agent(),
        detail,
    )
    .execute(db)
    .await?;
    Ok(())
}
