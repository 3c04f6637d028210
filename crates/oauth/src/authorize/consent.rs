//! The consent screen and its decision: a single-use transaction bound to the browser session,
//! and the authorization code it issues.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::TimeDelta;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::crypto::{random_token, secure_eq, sha256};
use crate::db;
use crate::error::Internal;
use crate::events::{self, Kind};
use crate::pages::{self, ConsentPage};
use crate::redirect_uri;
use crate::scope::Scope;
use crate::session;
use crate::state::{OAuthState, paths};

use super::{
    AuthorizationRequest, CONSENT_LIFETIME, Rejection, client_redirect, origin_of, respond,
};

pub(super) async fn consent_page(
    state: &OAuthState,
    session: &session::Session,
    request: &AuthorizationRequest,
) -> Result<Response, Internal> {
    let transaction = Uuid::new_v4();
    let csrf = random_token()?;
    let now = state.now();
    db::consents::insert(
        state.db(),
        db::consents::NewConsent {
            id: transaction,
            session_hash: &session.id_hash,
            csrf_hash: &sha256(csrf.as_bytes()),
            client_id: &request.client_id,
            redirect_uri: &request.redirect_uri,
            state: request.state.as_deref(),
            code_challenge: request.code_challenge.as_str(),
            scope_offered: request.scope.as_str(),
            resource: request.resource.as_str(),
            now,
            expires_at: now + CONSENT_LIFETIME,
        },
    )
    .await?;
    let previously =
        db::grants::last_authorized(state.db(), session.user_id, &request.client_id).await?;
    let transaction = transaction.to_string();
    Ok(pages::render(
        StatusCode::OK,
        &ConsentPage {
            client_name: &request.client_name,
            initial: request
                .client_name
                .chars()
                .find(|c| c.is_alphanumeric())
                .map_or_else(|| "?".to_owned(), |c| c.to_uppercase().collect()),
            previously: previously.map(|at| {
                (
                    at.format("%-d %B %Y").to_string(),
                    at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                )
            }),
            client_host: request.client_host.as_deref(),
            loopback_only: request.loopback_only,
            redirect_host: &redirect_uri::display_host(&request.redirect_uri),
            loopback: redirect_uri::is_loopback(&request.redirect_uri),
            account_email: &session.email,
            transaction: &transaction,
            csrf: &csrf,
            offer_trade: request.scope == Scope::Trade,
        },
    ))
}

#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    transaction: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    scope: Option<String>,
}

/// `POST /v1/oauth/mcp/consent`.
pub async fn post_consent(
    State(state): State<OAuthState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    match consent(&state, peer, &headers, form).await {
        Ok(response) => response,
        Err(rejection) => respond(&state, rejection),
    }
}

async fn consent(
    state: &OAuthState,
    peer: SocketAddr,
    headers: &HeaderMap,
    form: ConsentForm,
) -> Result<Response, Rejection> {
    let forbidden = || {
        Rejection::Page(
            StatusCode::FORBIDDEN,
            "Request expired",
            "This consent screen expired, was already used, or did not come from this browser. Start again from your AI application.".into(),
        )
    };
    let Some(session) = session::current(state, headers).await? else {
        return Err(forbidden());
    };
    let Ok(transaction) = Uuid::parse_str(&form.transaction) else {
        return Err(forbidden());
    };
    // Single use: claiming the transaction and checking it belongs to this session is one
    // statement.
    let claimed =
        db::consents::claim(state.db(), transaction, &session.id_hash, state.now()).await?;
    let Some(db::consents::Claimed {
        csrf_hash,
        client_id,
        redirect_uri,
        state: client_state,
        code_challenge,
        scope_offered: offered,
        resource,
    }) = claimed
    else {
        return Err(forbidden());
    };
    if !secure_eq(&csrf_hash, &sha256(form.csrf.as_bytes())) {
        return Err(forbidden());
    }
    if form.decision == "switch_account" {
        // "Not you?": this browser's session ends and the same authorization starts again,
        // at the sign-in page. The URL is rebuilt from the transaction, never taken from the
        // form.
        db::sessions::delete(state.db(), &session.id_hash).await?;
        let offered = Scope::from_stored(&offered).unwrap_or(Scope::Read);
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("code_challenge", &code_challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("scope", offered.token_scope())
            .append_pair("resource", &resource);
        if let Some(client_state) = &client_state {
            query.append_pair("state", client_state);
        }
        let mut response =
            Redirect::to(&format!("{}?{}", paths::AUTHORIZE, query.finish())).into_response();
        response.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(state, session::session_cookie_name(state), "", 0),
        );
        return Ok(pages::secure(response));
    }
    // The redirect URI was checked when the screen was shown; a client metadata document
    // refreshed since then may have dropped it.
    let registered = db::clients::redirect_uris(state.db(), &client_id).await?;
    if !registered
        .unwrap_or_default()
        .iter()
        .any(|r| redirect_uri::matches(r, &redirect_uri))
    {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Invalid redirect",
            "The redirect_uri is no longer registered for this application. Start again from your AI application.".into(),
        ));
    }
    let origin = origin_of(peer, headers, state);
    if form.decision != "allow" {
        events::record(
            state.db(),
            Kind::ConsentDenied,
            Some(&client_id),
            Some(session.user_id),
            &origin,
            json!({}),
        )
        .await;
        return Ok(client_redirect(
            state,
            &redirect_uri,
            &[
                ("error", "access_denied"),
                ("error_description", "the user denied the request"),
            ],
            client_state.as_deref(),
        ));
    }
    let offered = Scope::from_stored(&offered).unwrap_or(Scope::Read);
    let chosen = match form.scope.as_deref() {
        None | Some("mcp:read") => Scope::Read,
        Some("mcp:trade") => Scope::Trade,
        Some(_) => {
            return Err(Rejection::Page(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                "Unknown permission.".into(),
            ));
        }
    };
    if !offered.covers(chosen) {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "That permission was not requested by the application.".into(),
        ));
    }
    let code = random_token()?;
    let now = state.now();
    let lifetime = TimeDelta::from_std(state.settings().authorization_code_lifetime)
        .unwrap_or(TimeDelta::seconds(60));
    let issued = db::codes::issue(
        state.db(),
        db::codes::NewCode {
            code_hash: &sha256(code.as_bytes()),
            client_id: &client_id,
            user_id: session.user_id,
            redirect_uri: &redirect_uri,
            code_challenge: &code_challenge,
            scope: chosen.as_str(),
            resource: &resource,
            now,
            expires_at: now + lifetime,
            session_hash: &session.id_hash,
        },
    )
    .await?;
    if !issued {
        return Err(Rejection::Page(
            StatusCode::FORBIDDEN,
            "Signed out",
            "This browser was signed out. Start again from your application.".into(),
        ));
    }
    events::record(
        state.db(),
        Kind::ConsentGranted,
        Some(&client_id),
        Some(session.user_id),
        &origin,
        json!({ "scope": chosen.as_str() }),
    )
    .await;
    Ok(client_redirect(
        state,
        &redirect_uri,
        &[("code", &code)],
        client_state.as_deref(),
    ))
}
