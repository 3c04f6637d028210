//! An HTTP-level OAuth client for tests: a browser with cookies kept by hand, and the whole
//! authorization-code flow (register, sign in, consent, exchange, refresh) against any running
//! CrossTrade server.

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

/// The password every test account gets.
pub const PASSWORD: &str = "correct horse battery staple";

/// A server's base URL and an HTTP client that never follows redirects.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base: String,
    pub http: reqwest::Client,
}

impl Endpoint {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .unwrap_or_else(|err| panic!("http client: {err}"));
        Self {
            base: base.to_owned(),
            http,
        }
    }

    /// The same server reached from another loopback address (`127.0.0.3`, …), so the server
    /// sees another client IP.
    pub fn from_address(base: &str, local: std::net::IpAddr) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(20))
            .local_address(local)
            .build()
            .unwrap_or_else(|err| panic!("http client: {err}"));
        Self {
            base: base.to_owned(),
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn resource(&self) -> String {
        format!("{}/v1/api/mcp", self.base)
    }

    pub async fn register(&self, body: Value) -> Response {
        self.http
            .post(self.url("/v1/oauth/mcp/register"))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Registers a client named "Test Client" and returns its client_id.
    pub async fn client(&self, redirect_uri: &str) -> String {
        self.named_client("Test Client", redirect_uri).await
    }

    /// Registers a client named `name` and returns its client_id.
    pub async fn named_client(&self, name: &str, redirect_uri: &str) -> String {
        let response = self
            .register(json!({ "client_name": name, "redirect_uris": [redirect_uri] }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap_or_default();
        body["client_id"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn form(&self, path: &str, params: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url(path))
            .form(params)
            .send()
            .await
            .unwrap_or_else(|err| panic!("{err}"))
    }

    pub async fn token(&self, params: &[(&str, &str)]) -> Response {
        self.form("/v1/oauth/mcp/token", params).await
    }
}

/// A browser: cookies kept by hand.
#[derive(Debug, Default, Clone)]
pub struct Browser {
    pub cookies: Vec<(String, String)>,
}

impl Browser {
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn absorb(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    pub async fn get(&mut self, server: &Endpoint, url: &str) -> Response {
        let response = server
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.absorb(response.headers());
        response
    }

    pub async fn post(&mut self, server: &Endpoint, path: &str, form: &[(&str, &str)]) -> Response {
        let response = server
            .http
            .post(server.url(path))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.absorb(response.headers());
        response
    }

    /// Signs in from the sign-in page served for `authorize_url`.
    pub async fn sign_in(
        &mut self,
        server: &Endpoint,
        authorize_url: &str,
        email: &str,
        password: &str,
    ) -> Response {
        let page = self.get(server, authorize_url).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(html.contains("Sign in"), "{html}");
        let csrf = hidden(&html, "csrf");
        let return_to = hidden(&html, "return_to");
        self.post(
            server,
            "/v1/oauth/mcp/sign-in",
            &[
                ("email", email),
                ("password", password),
                ("csrf", &csrf),
                ("return_to", &return_to),
            ],
        )
        .await
    }
}

impl Browser {
    /// Signs in through the account pages' `/account/sign-in` form.
    pub async fn account_sign_in(
        &mut self,
        server: &Endpoint,
        email: &str,
        password: &str,
    ) -> Response {
        let page = self
            .get(server, &server.url("/account/sign-in?next=%2Faccount"))
            .await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        self.post(
            server,
            "/account/sign-in",
            &[
                ("email", email),
                ("password", password),
                ("csrf", &hidden(&html, "csrf")),
                ("return_to", &hidden(&html, "return_to")),
            ],
        )
        .await
    }
}

/// The value of a hidden form field.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    unescape(&html[start..end])
}

pub fn location(response: &Response) -> url::Url {
    let text = response
        .headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location on {}", response.status()))
        .to_str()
        .unwrap();
    url::Url::parse(text).unwrap_or_else(|_| {
        url::Url::parse("http://relative.invalid")
            .unwrap()
            .join(text)
            .unwrap()
    })
}

pub fn query(url: &url::Url) -> Vec<(String, String)> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn param(url: &url::Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    use base64::Engine;
    use sha2::Digest;
    let mut bytes = [0u8; 48];
    getrandom::fill(&mut bytes).unwrap_or_else(|err| panic!("CSPRNG: {err}"));
    let encode = |data: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data);
    let verifier = encode(&bytes);
    let challenge = encode(&sha2::Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

pub fn authorize_url(
    server: &Endpoint,
    client_id: &str,
    redirect_uri: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut url = url::Url::parse(&server.url("/v1/oauth/mcp/authorize")).unwrap();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "st-123");
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

/// The whole browser part: sign in, consent with `chosen` scope, and return the code.
#[derive(Debug)]
pub struct Flow {
    pub client_id: String,
    pub redirect_uri: String,
    pub pkce: Pkce,
    pub browser: Browser,
}

impl Flow {
    pub async fn new(server: &Endpoint, email: &str) -> Flow {
        Self::new_with_password(server, email, PASSWORD).await
    }

    /// A flow signed in as `email` with `password`.
    pub async fn new_with_password(server: &Endpoint, email: &str, password: &str) -> Flow {
        Self::new_for(server, "Test Client", email, password).await
    }

    /// A flow of a client named `client_name`, signed in as `email` with `password`.
    pub async fn new_for(
        server: &Endpoint,
        client_name: &str,
        email: &str,
        password: &str,
    ) -> Flow {
        let redirect_uri = "http://127.0.0.1:45678/callback".to_owned();
        let client_id = server.named_client(client_name, &redirect_uri).await;
        let mut browser = Browser::default();
        let signed_in = browser
            .sign_in(
                server,
                &authorize_url(server, &client_id, &redirect_uri, &pkce().challenge, &[]),
                email,
                password,
            )
            .await;
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
        Flow {
            client_id,
            redirect_uri,
            pkce: pkce(),
            browser,
        }
    }

    /// Shows the consent page for a fresh authorization request; returns (transaction, csrf).
    pub async fn consent_page(
        &mut self,
        server: &Endpoint,
        scope: &str,
    ) -> (String, String, String) {
        let url = authorize_url(
            server,
            &self.client_id,
            &self.redirect_uri,
            &self.pkce.challenge,
            &[("scope", scope)],
        );
        let page = self.browser.get(server, &url).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(html.contains("Allow access"), "{html}");
        (hidden(&html, "transaction"), hidden(&html, "csrf"), html)
    }

    pub async fn code(&mut self, server: &Endpoint, requested: &str, chosen: &str) -> String {
        let (transaction, csrf, _) = self.consent_page(server, requested).await;
        let response = self
            .browser
            .post(
                server,
                "/v1/oauth/mcp/consent",
                &[
                    ("transaction", &transaction),
                    ("csrf", &csrf),
                    ("decision", "allow"),
                    ("scope", chosen),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let target = location(&response);
        param(&target, "code").unwrap_or_else(|| panic!("no code in {target}"))
    }

    pub async fn exchange(&self, server: &Endpoint, code: &str) -> Response {
        self.exchange_with(server, code, &[]).await
    }

    /// The code exchange with `changes` applied to its parameters: each replaces the parameter
    /// of its name or is added; an empty value removes the parameter.
    pub async fn exchange_with(
        &self,
        server: &Endpoint,
        code: &str,
        changes: &[(&str, &str)],
    ) -> Response {
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("client_id", self.client_id.as_str()),
            ("code_verifier", self.pkce.verifier.as_str()),
        ];
        for &(name, value) in changes {
            params.retain(|(key, _)| *key != name);
            if !value.is_empty() {
                params.push((name, value));
            }
        }
        server.token(&params).await
    }

    /// Code → tokens; returns the token response body.
    pub async fn tokens(&mut self, server: &Endpoint, requested: &str, chosen: &str) -> Value {
        let code = self.code(server, requested, chosen).await;
        let response = self.exchange(server, &code).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub async fn refresh(&self, server: &Endpoint, refresh_token: &str) -> Response {
        server
            .token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", &self.client_id),
            ])
            .await
    }
}

/// Reverses HTML escaping (named and numeric character references).
pub fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let Some(semi) = tail.find(';') else { break };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if entity.starts_with("#x") => u32::from_str_radix(&entity[2..], 16)
                .ok()
                .and_then(char::from_u32),
            _ if entity.starts_with('#') => entity[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        if let Some(c) = decoded {
            out.push(c);
            rest = &tail[semi + 1..];
        } else {
            out.push('&');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}
