//! A user's grants, for the AI Clients page: list and revoke.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::Internal;
use crate::events::{self, Kind, Origin};
use crate::state::OAuthState;
use crate::verify::revoke_grant;

/// One live authorization of a client by a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct GrantSummary {
    pub grant_id: Uuid,
    pub client_id: String,
    /// As the client described itself at registration.
    pub client_name: Option<String>,
    pub scope: String,
    pub redirect_uri: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The user's live grants, newest first.
pub async fn list_grants(state: &OAuthState, user_id: Uuid) -> Result<Vec<GrantSummary>, Internal> {
    Ok(sqlx::query_as(
        "SELECT g.grant_id, g.client_id, c.client_name, g.scope, g.redirect_uri, g.created_at,
                g.last_used_at
         FROM grants g JOIN oauth_clients c USING (client_id)
         WHERE g.user_id = $1 AND g.revoked_at IS NULL
         ORDER BY g.created_at DESC",
    )
    .bind(user_id)
    .fetch_all(state.db())
    .await?)
}

/// Revokes one of the user's grants; `false` when it is not theirs or already ended.
pub async fn revoke_user_grant(
    state: &OAuthState,
    user_id: Uuid,
    grant_id: Uuid,
) -> Result<bool, Internal> {
    let client: Option<String> = sqlx::query_scalar(
        "SELECT client_id FROM grants WHERE grant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(grant_id)
    .bind(user_id)
    .fetch_optional(state.db())
    .await?;
    let Some(client_id) = client else {
        return Ok(false);
    };
    let revoked = revoke_grant(state, grant_id, "revoked by the user").await?;
    if revoked {
        events::record(
            state.db(),
            Kind::Revoked,
            Some(&client_id),
            Some(user_id),
            &Origin::default(),
            serde_json::json!({ "grant_id": grant_id, "by": "user" }),
        )
        .await;
    }
    Ok(revoked)
}
