//! RFC 7591 dynamic client registration for public clients.
//!
//! Decisions (OAUTH-CHECKLIST): an omitted `token_endpoint_auth_method`, `client_secret_post` or
//! `client_secret_basic` registers a public client and the response says `none` with no secret;
//! other methods are refused. Identical re-registrations from the same IP bucket return the
//! existing client and are not counted; new clients are limited per IP bucket per hour, counted
//! in PostgreSQL under an advisory lock so the limit holds across replicas.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::client_ip::{bucket, client_ip};
use crate::client_metadata::{AuthMethod, ClientMetadata, GrantType, ResponseType};
use crate::crypto::{random_token, sha256};
use crate::db;
use crate::error::{ErrorCode, OAuthError};
use crate::events::{self, Kind, Origin};
use crate::params::RedirectUri;
use crate::scope::{READ, TRADE};
use crate::state::OAuthState;

/// Largest registration body.
pub const MAX_BODY: usize = 16 * 1024;
const MAX_REDIRECT_URIS: usize = 10;
const MAX_DOCUMENT_REDIRECT_URIS: usize = 20;
const MAX_STRING: usize = 2000;
const MAX_NAME: usize = 200;
const MAX_FIELDS: usize = 40;

pub async fn post_register(
    State(state): State<OAuthState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    if body.len() > MAX_BODY {
        return Err(OAuthError::Client {
            code: ErrorCode::InvalidClientMetadata,
            description: format!("registration body exceeds {MAX_BODY} bytes"),
            status: StatusCode::PAYLOAD_TOO_LARGE,
        });
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(OAuthError::invalid_request(
            "registration requires Content-Type: application/json",
        ));
    }
    // A body that is not JSON is a malformed request; JSON that is not acceptable metadata is
    // invalid_client_metadata (product doc 000).
    let request: Value = serde_json::from_slice(&body)
        .map_err(|err| OAuthError::invalid_request(format!("body is not valid JSON: {err}")))?;
    if !request.is_object() {
        return Err(OAuthError::invalid_request("body must be a JSON object"));
    }
    let metadata = normalise(&request, Source::Registration)?;
    let stored = metadata.to_json();

    let ip = client_ip(peer, &headers, &state.settings().trusted_proxies);
    let ip_bucket = bucket(ip);
    let dedup_key = {
        let mut material = stored.to_string().into_bytes();
        material.extend_from_slice(b"\n");
        material.extend_from_slice(ip_bucket.as_bytes());
        sha256(&material)
    };

    let now = state.now();
    let mut tx = state.db().begin().await?;
    // Serialise registrations per IP bucket so the count and the insert are one decision.
    store::lock::advisory_xact(&mut *tx, &format!("register {ip_bucket}")).await?;
    let existing = db::clients::by_dedup_key(&mut *tx, &dedup_key).await?;
    if let Some((client_id, created_at)) = existing {
        tx.commit().await?;
        metrics::counter!("oauth_registrations_total", "outcome" => "existing").increment(1);
        return Ok(registered(&client_id, created_at, stored));
    }
    let window = db::registrations::in_last_hour(&mut *tx, &ip_bucket, now).await?;
    let limit = state.settings().registrations_per_hour as usize;
    if window.len() >= limit {
        metrics::counter!("oauth_registrations_total", "outcome" => "rate_limited").increment(1);
        let oldest_counted = window[window.len() - limit];
        let frees_at = oldest_counted + chrono::TimeDelta::hours(1);
        let retry_after = u64::try_from((frees_at - now).num_seconds().max(1)).unwrap_or(3600);
        return Err(OAuthError::TooMany {
            code: ErrorCode::TooManyRegistrations,
            description: format!(
                "at most {limit} new clients per hour from one address; reuse your client_id"
            ),
            retry_after,
        });
    }
    let client_id = format!("ctc_{}", random_token()?);
    db::clients::insert_registration(
        &mut *tx,
        db::clients::NewRegistration {
            client_id: &client_id,
            metadata: &stored,
            dedup_key: &dedup_key,
            client_name: metadata.client_name.as_deref(),
            redirect_uris: &metadata.redirect_uris,
            registered_ip: &ip.to_string(),
            now,
        },
    )
    .await?;
    db::registrations::record(&mut *tx, &ip_bucket, now).await?;
    let origin = Origin::of_request(ip, &headers);
    events::record(
        &mut *tx,
        Kind::ClientRegistered,
        Some(&client_id),
        None,
        &origin,
        json!({ "client_name": metadata.client_name, "redirect_uris": metadata.redirect_uris }),
    )
    .await;
    tx.commit().await?;
    metrics::counter!("oauth_registrations_total", "outcome" => "created").increment(1);
    Ok(registered(&client_id, now, stored))
}

fn registered(client_id: &str, issued_at: DateTime<Utc>, metadata: Value) -> Response {
    let mut body = match metadata {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    body.insert("client_id".into(), json!(client_id));
    body.insert("client_id_issued_at".into(), json!(issued_at.timestamp()));
    let mut response = (StatusCode::CREATED, Json(Value::Object(body))).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Where client metadata comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An RFC 7591 registration request.
    Registration,
    /// A Client ID Metadata Document: written once for every authorization server, so grant
    /// types and scopes this server does not support are ignored rather than refused (Claude's
    /// document lists the JWT bearer grant), and it may list more redirect URIs.
    Document,
}

/// Validates the request and returns the metadata this server stores and echoes. Pure (no
/// database), so the registration fuzz target drives it directly.
pub fn normalise(request: &Value, source: Source) -> Result<ClientMetadata, OAuthError> {
    let Value::Object(fields) = request else {
        return Err(OAuthError::invalid_client_metadata(
            "body must be a JSON object",
        ));
    };
    if fields.len() > MAX_FIELDS {
        return Err(OAuthError::invalid_client_metadata(
            "too many metadata fields",
        ));
    }
    let uris = match fields.get("redirect_uris") {
        Some(Value::Array(uris)) if !uris.is_empty() => uris,
        Some(Value::Array(_)) | None => {
            return Err(OAuthError::invalid_client_metadata(
                "redirect_uris is required and must not be empty",
            ));
        }
        Some(_) => {
            return Err(OAuthError::invalid_client_metadata(
                "redirect_uris must be an array of strings",
            ));
        }
    };
    let max_redirect_uris = match source {
        Source::Registration => MAX_REDIRECT_URIS,
        Source::Document => MAX_DOCUMENT_REDIRECT_URIS,
    };
    if uris.len() > max_redirect_uris {
        return Err(OAuthError::invalid_client_metadata(format!(
            "at most {max_redirect_uris} redirect_uris"
        )));
    }
    let mut redirect_uris: Vec<String> = Vec::new();
    for uri in uris {
        let uri = uri
            .as_str()
            .ok_or_else(|| OAuthError::invalid_client_metadata("redirect_uris must be strings"))?;
        let uri = RedirectUri::parse(uri).map_err(OAuthError::invalid_client_metadata)?;
        if !redirect_uris.iter().any(|known| known == uri.as_str()) {
            redirect_uris.push(uri.as_str().to_owned());
        }
    }

    match fields.get("token_endpoint_auth_method").map(|m| m.as_str()) {
        None | Some(Some("none" | "client_secret_post" | "client_secret_basic")) => {}
        Some(Some(other)) => {
            return Err(OAuthError::invalid_client_metadata(format!(
                "token_endpoint_auth_method {other:?} is not supported: this server registers \
                 public clients (\"none\") only"
            )));
        }
        Some(None) => {
            return Err(OAuthError::invalid_client_metadata(
                "token_endpoint_auth_method must be a string",
            ));
        }
    }

    let grant_types = match string_list(fields, "grant_types")? {
        None => vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        Some(listed) => {
            let mut grant_types = Vec::new();
            for grant in listed {
                match GrantType::parse(&grant) {
                    Some(parsed) => grant_types.push(parsed),
                    None if source == Source::Document => {}
                    None => {
                        return Err(OAuthError::invalid_client_metadata(format!(
                            "grant type {grant:?} is not supported (authorization_code and \
                             refresh_token only)"
                        )));
                    }
                }
            }
            grant_types
        }
    };
    if !grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(OAuthError::invalid_client_metadata(
            "grant_types must include authorization_code",
        ));
    }

    let response_types =
        string_list(fields, "response_types")?.unwrap_or_else(|| vec!["code".into()]);
    if response_types != ["code"] {
        return Err(OAuthError::invalid_client_metadata(
            "response_types must be [\"code\"]",
        ));
    }

    let mut scope = None;
    if let Some(requested) = fields
        .get("scope")
        .filter(|_| source == Source::Registration)
    {
        let requested = requested
            .as_str()
            .ok_or_else(|| OAuthError::invalid_client_metadata("scope must be a string"))?;
        for item in requested.split(' ').filter(|s| !s.is_empty()) {
            if item != READ && item != TRADE {
                return Err(OAuthError::invalid_client_metadata(format!(
                    "scope {item:?} is not supported (mcp:read and mcp:trade only)"
                )));
            }
        }
        scope = Some(requested.to_owned());
    }

    let https_uri = |key: &str| -> Result<Option<String>, OAuthError> {
        let Some(uri) = optional_string(fields, key, MAX_STRING)? else {
            return Ok(None);
        };
        let is_https =
            url::Url::parse(&uri).is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some());
        if !is_https {
            return Err(OAuthError::invalid_client_metadata(format!(
                "{key} must be an https URL"
            )));
        }
        Ok(Some(uri))
    };
    // Checked in this order, so the first problem reported is the same as it always was.
    let client_name = optional_string(fields, "client_name", MAX_NAME)?;
    let client_uri = https_uri("client_uri")?;
    let logo_uri = https_uri("logo_uri")?;
    let tos_uri = https_uri("tos_uri")?;
    let policy_uri = https_uri("policy_uri")?;
    let software_id = optional_string(fields, "software_id", MAX_NAME)?;
    let software_version = optional_string(fields, "software_version", MAX_NAME)?;
    let application_type = optional_string(fields, "application_type", 20)?;
    if let Some(kind) = &application_type
        && kind != "web"
        && kind != "native"
    {
        return Err(OAuthError::invalid_client_metadata(
            "application_type must be web or native",
        ));
    }
    // Everything else is tolerated and neither stored nor echoed (RFC 7591 §2: ignore what is
    // not understood), but bounded like the rest.
    for (key, value) in fields {
        if source == Source::Document && key == "redirect_uris" {
            continue; // each checked above, and the document's size is capped
        }
        if key.len() > 100 || value.to_string().len() > MAX_STRING * 2 {
            return Err(OAuthError::invalid_client_metadata(format!(
                "field {key:?} is too large"
            )));
        }
    }
    let metadata = ClientMetadata {
        application_type,
        client_id: None,
        client_name,
        client_uri,
        grant_types,
        logo_uri,
        policy_uri,
        redirect_uris,
        response_types: vec![ResponseType::Code],
        scope,
        software_id,
        software_version,
        token_endpoint_auth_method: AuthMethod::None,
        tos_uri,
    };
    Ok(metadata)
}

fn string_list(fields: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, OAuthError> {
    match fields.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) if items.len() <= 10 => items
            .iter()
            .map(|item| {
                item.as_str()
                    .filter(|s| s.len() <= 100)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        OAuthError::invalid_client_metadata(format!(
                            "{key} must be an array of short strings"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(OAuthError::invalid_client_metadata(format!(
            "{key} must be an array of strings"
        ))),
    }
}

/// Control characters, and the invisible and direction-changing characters that make a name
/// read as something else on the consent screen.
fn deceptive(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

fn optional_string(
    fields: &Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<Option<String>, OAuthError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max && !s.chars().any(deceptive) => {
            Ok(Some(s.clone()))
        }
        Some(Value::String(_)) => Err(OAuthError::invalid_client_metadata(format!(
            "{key} must be at most {max} characters without control characters"
        ))),
        Some(_) => Err(OAuthError::invalid_client_metadata(format!(
            "{key} must be a string"
        ))),
    }
}
