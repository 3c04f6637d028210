//! Who is calling: the verifier interface the OAuth crate implements, and the bearer extractor
//! that turns the `Authorization` header into a [`Principal`] or the spec's 401 challenge.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use store::credentials::{self, Flaw};
use tracing::Instrument as _;

use crate::McpState;
use crate::error::{HttpError, HttpRejection};

pub use store::BoxFuture;
pub use vocabulary::{Principal, Scope};

/// Why a presented token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRejection {
    Malformed,
    Expired,
    Revoked,
    WrongAudience,
    Unknown,
    /// The verifier could not decide (database down): 503 server_error.
    Unavailable,
}

impl TokenRejection {
    /// The human message of the 401 (or 503) body.
    pub fn message(&self) -> &'static str {
        match self {
            TokenRejection::Malformed => "The access token is malformed",
            TokenRejection::Expired => "The access token has expired",
            TokenRejection::Revoked => "The access token has been revoked",
            TokenRejection::WrongAudience => "The access token was not issued for this resource",
            TokenRejection::Unknown => "The access token is not recognized",
            TokenRejection::Unavailable => {
                "Access tokens cannot be verified right now; retry shortly"
            }
        }
    }
}

/// Checks an access token presented to `/v1/api/mcp` (signature, expiry, issuer, audience,
/// grant not revoked). Implemented outside this crate, over the OAuth crate's service.
pub trait TokenVerifier: Send + Sync + 'static {
    fn verify<'a>(
        &'a self,
        bearer_token: &'a str,
    ) -> BoxFuture<'a, Result<Principal, TokenRejection>>;

    /// A call needed more scope than `principal`'s grant holds, and is answered 403
    /// `insufficient_scope`. The authorization server may take the grant's next refresh as a
    /// step-up; awaited before the 403 is sent, so it is recorded before the client can react.
    fn step_up_requested<'a>(&'a self, principal: &'a Principal) -> BoxFuture<'a, ()> {
        let _ = principal;
        Box::pin(async {})
    }
}

/// Extractor: a request carrying a valid bearer token. Rejections are the MCP HTTP-level
/// outcomes (401 with the RFC 6750 §3 / RFC 9728 §5.1 challenge, or 503).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

impl<S> FromRequestParts<S> for Authenticated
where
    McpState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = HttpRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = McpState::from_ref(state);
        authenticate(&state, parts.uri.query(), &parts.headers)
            .await
            .map(Authenticated)
            .map_err(|error| state.reject(error))
    }
}

/// What the `Authorization` header and query string say, before asking the verifier.
#[derive(Debug, PartialEq, Eq)]
enum Presented<'a> {
    Nothing,
    Bearer(&'a str),
    Invalid(&'static str),
}

pub(crate) async fn authenticate(
    state: &McpState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Principal, HttpError> {
    match presented(query, headers) {
        Presented::Nothing => Err(HttpError::NoToken),
        Presented::Invalid(message) => Err(HttpError::InvalidToken(message)),
        Presented::Bearer(token) => {
            let verified = state
                .verifier()
                .verify(token)
                .instrument(vocabulary::trace_span!("auth"))
                .await;
            match verified {
                Ok(principal) => Ok(principal),
                Err(TokenRejection::Unavailable) => Err(HttpError::ServerError(
                    TokenRejection::Unavailable.message(),
                )),
                Err(rejection) => Err(HttpError::InvalidToken(rejection.message())),
            }
        }
    }
}

/// The bearer token of an authenticated request, for re-checking it later.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    match presented(None, headers) {
        Presented::Bearer(token) => Some(token.to_owned()),
        _ => None,
    }
}

fn presented<'a>(query: Option<&str>, headers: &'a HeaderMap) -> Presented<'a> {
    // RFC 6750 §2.3 (URI query parameter) is not supported: tokens leak into logs from URLs.
    // A token there is refused even when a header is present too.
    let in_query = query.is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("access_token"))
    });
    if in_query {
        return Presented::Invalid(
            "Access tokens are not accepted in the query string; send an Authorization: Bearer header",
        );
    }
    let values = headers.get_all(header::AUTHORIZATION).iter();
    match credentials::bearer(values.map(HeaderValue::as_bytes)) {
        credentials::Presented::Nothing => Presented::Nothing,
        credentials::Presented::Bearer(token) => Presented::Bearer(token),
        credentials::Presented::Invalid(flaw) => Presented::Invalid(match flaw {
            Flaw::MoreThanOne => "More than one Authorization header was sent",
            Flaw::NotAscii => "The Authorization header is not valid ASCII",
            Flaw::NotBearer => "Only Bearer access tokens are accepted",
            Flaw::Malformed => "The Bearer access token is malformed",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(presented(None, &headers(&[])), Presented::Nothing);
        assert_eq!(
            presented(None, &headers(&["Bearer abc"])),
            Presented::Bearer("abc")
        );
        assert_eq!(
            presented(None, &headers(&["bEaReR abc"])),
            Presented::Bearer("abc")
        );
        for bad in ["Basic abc", "Bearer", "Bearer ", "Bearer a b", "abc"] {
            assert!(
                matches!(presented(None, &headers(&[bad])), Presented::Invalid(_)),
                "{bad:?} accepted"
            );
        }
        assert!(matches!(
            presented(None, &headers(&["Bearer a", "Bearer b"])),
            Presented::Invalid(_)
        ));
        assert!(matches!(
            presented(Some("x=1&access_token=abc"), &headers(&["Bearer abc"])),
            Presented::Invalid(_)
        ));
        assert_eq!(
            presented(Some("x_access_token=1"), &headers(&["Bearer abc"])),
            Presented::Bearer("abc")
        );
    }
}
