//! Server-rendered pages (sign-in, consent, errors) with their security headers: no framing,
//! a strict CSP without inline code, no referrer, no caching.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// RFC 9700 §4.16 (clickjacking) and §4.2 (referrer leaks). No `form-action`: browsers apply it
/// to the redirect that follows the consent form, which goes to the client's own URI.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

pub const STYLESHEET: &str = include_str!("../templates/style.css");

#[derive(Template)]
#[template(path = "sign_in.html")]
pub(crate) struct SignInPage<'a> {
    /// The application asking, when signing in for an authorization.
    pub client_name: Option<&'a str>,
    pub action: &'a str,
    pub csrf: &'a str,
    pub return_to: &'a str,
    /// The same sign-in with the form empty ("Not you? Use another account").
    pub restart: &'a str,
    pub email: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub(crate) struct ConsentPage<'a> {
    pub client_name: &'a str,
    /// The name's first letter, shown large beside it.
    pub initial: String,
    /// When the user last authorized this client ("1 December 2026", the exact UTC time), or
    /// `None` the first time.
    pub previously: Option<(String, String)>,
    /// The metadata document URL's host, for clients identified by one.
    pub client_host: Option<&'a str>,
    pub loopback_only: bool,
    pub redirect_host: &'a str,
    pub loopback: bool,
    pub account_email: &'a str,
    pub transaction: &'a str,
    pub csrf: &'a str,
    /// The application asked for `mcp:trade`: offered, and preselected as asked.
    pub offer_trade: bool,
}

#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
}

/// Adds the page security headers to any response.
pub fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => secure((status, Html(html)).into_response()),
        Err(err) => {
            tracing::error!(error = %err, "rendering a page failed");
            secure((StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response())
        }
    }
}

/// A page saying what went wrong; a 503 (a transient failure) also says when to come back.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let mut response = render(status, &ErrorPage { title, message });
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(crate::error::SERVER_ERROR_RETRY_AFTER_SECS),
        );
    }
    response
}

/// Browsers ask for it on every page; an empty answer keeps their consoles clean.
pub async fn get_favicon() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}

pub async fn get_stylesheet() -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
        .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// Marks a refusal page (429, 503) with `Retry-After`.
pub fn retry_after(mut page: Response, seconds: u64) -> Response {
    page.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    page
}
