//! One request through a router in-process with `tower::ServiceExt::oneshot`, no socket: for
//! tests of a single request and its response (documents, validation errors, headers). A test
//! about connections, timeouts, streams or a real client binds `127.0.0.1:0` instead.
//!
//! Requests are described with `reqwest`'s builder, as the socket tests write them, so moving a
//! test between the two changes how the request travels, not what it is.

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::header::HOST;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use serde::de::DeserializeOwned;
use tower::ServiceExt;

/// The peer address handlers see (`ConnectInfo`): a loopback client, as over a real socket.
pub const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50_000);

/// A whole response: status, headers and the collected body.
#[derive(Debug, Clone)]
pub struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    /// Reads a response received over a socket, so one assertion serves both kinds of test.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|err| panic!("reading the response body: {err}"));
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn bytes(&self) -> &Bytes {
        &self.body
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("body is not the JSON expected ({err}): {}", self.text()))
    }
}

/// Sends `request` through `router` from [`PEER`].
pub async fn send(router: &Router, request: reqwest::RequestBuilder) -> Reply {
    send_from(router, request, PEER).await
}

/// Sends `request` through `router` as if it came from `peer`.
pub async fn send_from(
    router: &Router,
    request: reqwest::RequestBuilder,
    peer: SocketAddr,
) -> Reply {
    let request = request
        .build()
        .unwrap_or_else(|err| panic!("building the request: {err}"));
    let host = request
        .url()
        .host_str()
        .map(|host| match request.url().port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        });
    let request: Request<reqwest::Body> = request
        .try_into()
        .unwrap_or_else(|err| panic!("converting the request: {err}"));
    let (mut parts, body) = request.into_parts();
    let body = match body.as_bytes() {
        Some(bytes) => Body::from(bytes.to_vec()),
        None => panic!("only buffered request bodies can be sent in-process"),
    };
    // What a client library adds on the wire.
    if let Some(host) = host
        && !parts.headers.contains_key(HOST)
    {
        let value = HeaderValue::from_str(&host).unwrap_or_else(|err| panic!("host: {err}"));
        parts.headers.insert(HOST, value);
    }
    parts.extensions.insert(ConnectInfo(peer));
    let response = router
        .clone()
        .oneshot(Request::from_parts(parts, body))
        .await
        .unwrap_or_else(|err| match err {});
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_else(|err| panic!("reading the response body: {err}"));
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}
