//! Validating an authorization request: the client (registered or a metadata document), its
//! redirect URI, PKCE, scope, resource and state.

use std::net::IpAddr;

use axum::http::StatusCode;

use crate::db;
use crate::redirect_uri;
use crate::scope::Scope;
use crate::state::OAuthState;

use super::{AuthorizationRequest, MAX_STATE, Rejection, param, parse_query};
use crate::params::{CodeChallenge, ResourceUri};

/// The request's parameters checked in order; `ip` (the browser's) pays for any document fetch.
pub(super) async fn validate(
    state: &OAuthState,
    raw_query: &str,
    ip: IpAddr,
) -> Result<AuthorizationRequest, Rejection> {
    let (pairs, repeated) = parse_query(raw_query);
    // Which client and where to redirect must be unambiguous before anything is redirected.
    if let Some(key) = repeated
        .as_deref()
        .filter(|k| matches!(*k, "client_id" | "redirect_uri"))
    {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            format!("The parameter {key} appears more than once or is malformed."),
        ));
    }
    let pairs_for_lookup = pairs.as_slice();
    let Some(client_id) = param(pairs_for_lookup, "client_id") else {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Unknown application",
            "The request does not name a registered application (client_id is missing).".into(),
        ));
    };
    let KnownClient {
        client_id,
        client_name,
        redirect_uris: registered,
        host: client_host,
    } = known_client(state, client_id, ip).await?;
    let Some(redirect_uri) = param(pairs_for_lookup, "redirect_uri") else {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The request has no redirect_uri.".into(),
        ));
    };
    if !registered
        .iter()
        .any(|r| redirect_uri::matches(r, redirect_uri))
    {
        return Err(Rejection::Page(
            StatusCode::BAD_REQUEST,
            "Invalid redirect",
            "The redirect_uri is not registered for this application.".into(),
        ));
    }
    let redirect_uri = redirect_uri.to_owned();
    let loopback_only = registered.iter().all(|r| redirect_uri::is_loopback(r));
    let client_state = param(pairs_for_lookup, "state").map(str::to_owned);
    let redirect = |error: &'static str, description: String| Rejection::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: client_state.clone(),
        error,
        description,
    };
    if let Some(key) = repeated {
        return Err(redirect(
            "invalid_request",
            format!("parameter {key} is repeated or contains a NUL character"),
        ));
    }
    if client_state.as_ref().is_some_and(|s| s.len() > MAX_STATE) {
        return Err(redirect(
            "invalid_request",
            format!("state exceeds {MAX_STATE} characters"),
        ));
    }
    match param(&pairs, "response_type") {
        Some("code") => {}
        Some(_) => {
            return Err(redirect(
                "unsupported_response_type",
                "only response_type=code is supported".into(),
            ));
        }
        None => {
            return Err(redirect(
                "invalid_request",
                "response_type is required".into(),
            ));
        }
    }
    let Some(code_challenge) = param(&pairs, "code_challenge") else {
        return Err(redirect(
            "invalid_request",
            "PKCE code_challenge is required".into(),
        ));
    };
    if param(&pairs, "code_challenge_method") != Some("S256") {
        return Err(redirect(
            "invalid_request",
            "code_challenge_method must be S256".into(),
        ));
    }
    let Some(code_challenge) = CodeChallenge::parse_s256(code_challenge) else {
        return Err(redirect(
            "invalid_request",
            "code_challenge must be 43 base64url characters (S256)".into(),
        ));
    };
    let scope = Scope::parse_request(param(&pairs, "scope"))
        .map_err(|message| redirect("invalid_scope", message))?;
    let canonical = ResourceUri::new(state.settings().resource());
    if let Some(resource) = param(&pairs, "resource")
        && !canonical.is_named_by(resource)
    {
        return Err(redirect(
            "invalid_target",
            format!("resource must be {}", canonical.as_str()),
        ));
    }
    Ok(AuthorizationRequest {
        client_name: client_name.unwrap_or_else(|| client_id.clone()),
        client_host,
        loopback_only,
        client_id,
        redirect_uri,
        state: client_state,
        code_challenge,
        scope,
        resource: canonical,
    })
}

/// The client an authorization request names.
struct KnownClient {
    client_id: String,
    client_name: Option<String>,
    redirect_uris: Vec<String>,
    /// A metadata document's host, shown on the consent screen.
    host: Option<String>,
}

/// A registered client, or a Client ID Metadata Document fetched (or taken from the cache)
/// before anything else is checked.
async fn known_client(
    state: &OAuthState,
    client_id: &str,
    ip: IpAddr,
) -> Result<KnownClient, Rejection> {
    if crate::cimd::is_url(client_id) {
        match crate::cimd::resolve(state, client_id, ip).await? {
            Ok(client) => Ok(KnownClient {
                client_id: client_id.to_owned(),
                client_name: client.client_name,
                redirect_uris: client.redirect_uris,
                host: Some(redirect_uri::display_host(client_id)),
            }),
            Err(crate::cimd::Refusal::Throttled(seconds)) => Err(Rejection::Throttled(seconds)),
            Err(crate::cimd::Refusal::Invalid(reason)) => Err(Rejection::Page(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                format!(
                    "CrossTrade could not use this application's client metadata document: {reason}."
                ),
            )),
        }
    } else {
        let client = db::clients::registered(state.db(), client_id).await?;
        let Some(client) = client else {
            return Err(Rejection::Page(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                "This application is not registered with CrossTrade. Remove and add the server again in your AI application.".into(),
            ));
        };
        Ok(KnownClient {
            client_id: client.client_id,
            client_name: client.client_name,
            redirect_uris: client.redirect_uris,
            host: None,
        })
    }
}
