//! Trade confirmations, the person's side: the page that approves or rejects a held order only
//! for the signed-in owner, with the session's CSRF token, from this site; read-only once
//! decided, expired or asked inside the AI client; the policy form; the JSON API, which never
//! decides. Rows are created through the store as the MCP side creates them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use oauth::OAuthState;
use oauth::account::{AccountState, AddonAccounts, AddonKey};
use oauth::error::Internal;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use store::BoxFuture;
use store::clock::Clock;
use store::confirmations::{self, NewConfirmation};
use store::users::{Email, Tier};
use testkit::oauth::{Browser, Endpoint, Flow, PASSWORD, hidden, location};
use uuid::Uuid;
use vocabulary::Presence;
use vocabulary::confirm::{Channel, ConfirmationState, Mode, Policy, Reason};

use crate::support::{MASTER, TestDb, settings};

/// The account pages need an Add-On side; these tests are about confirmations, so it has none
/// connected and no keys.
struct NoAddon;

impl AddonAccounts for NoAddon {
    fn presence(&self, _user_id: Uuid) -> BoxFuture<'_, Presence> {
        Box::pin(async { Presence::default() })
    }

    fn list_keys(&self, _user_id: Uuid) -> BoxFuture<'_, Result<Vec<AddonKey>, Internal>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn create_key(&self, _user_id: Uuid) -> BoxFuture<'_, Result<(Uuid, String), Internal>> {
        Box::pin(async { Err(Internal::new("no Add-On side in these tests")) })
    }

    fn revoke_key(&self, _user_id: Uuid, _key_id: Uuid) -> BoxFuture<'_, Result<bool, Internal>> {
        Box::pin(async { Ok(false) })
    }
}

/// The OAuth server and the account routes on one socket, over a fresh database.
struct Site {
    endpoint: Endpoint,
    pool: PgPool,
    _db: TestDb,
}

impl std::ops::Deref for Site {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

async fn site() -> Site {
    let db = TestDb::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let pool = db.pool().await;
    let background = store::Background::start(&pool);
    let state = OAuthState::start(
        settings(&base),
        pool.clone(),
        MASTER,
        Clock::manual(Clock::system().now()),
        &background,
    )
    .await
    .unwrap();
    let account = AccountState {
        oauth: state.clone(),
        addon: Arc::new(NoAddon),
    };
    let app = oauth::router::<OAuthState>()
        .with_state(state)
        .merge(oauth::account::router::<AccountState>().with_state(account));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Site {
        endpoint: Endpoint::new(&base),
        pool,
        _db: db,
    }
}

impl Site {
    async fn user(&self, email: &str) -> Uuid {
        let hash = store::password::hash(PASSWORD).unwrap();
        store::users::insert(
            &self.pool,
            &Email::parse(email).unwrap(),
            &hash,
            Tier::Elite,
        )
        .await
        .unwrap()
        .id
    }

    /// A browser signed in through `/account/sign-in`.
    async fn browser(&self, email: &str) -> Browser {
        let mut browser = Browser::default();
        let signed_in = browser.account_sign_in(self, email, PASSWORD).await;
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
        browser
    }

    /// A registered client's id, named as the client chose.
    async fn client(&self, name: &str) -> String {
        let response = self
            .register(
                json!({ "client_name": name, "redirect_uris": ["http://127.0.0.1:45678/cb"] }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json::<Value>().await.unwrap()["client_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A held PlaceOrder, as the MCP side records it.
    async fn hold(&self, user_id: Uuid, client_id: &str, channel: Channel, ttl: Duration) -> Uuid {
        self.hold_order(user_id, client_id, channel, ttl, "ES 12-26")
            .await
    }

    async fn hold_order(
        &self,
        user_id: Uuid,
        client_id: &str,
        channel: Channel,
        ttl: Duration,
        instrument: &str,
    ) -> Uuid {
        let arguments = json!({
            "account": "Sim101", "instrument": instrument, "action": "Buy",
            "order_type": "Limit", "quantity": 2, "limit_price": 5001.25,
        });
        let new = NewConfirmation {
            confirmation_id: Uuid::new_v4(),
            user_id,
            grant_id: Uuid::new_v4(),
            client_id: client_id.to_owned(),
            tool: "PlaceOrder".to_owned(),
            arguments: arguments.clone(),
            idempotency_key: None,
            preview: json!({
                "tool": "PlaceOrder", "arguments": arguments, "estimated_notional": 500_125.0,
                "currency": "USD", "price": 5001.25, "price_basis": "limit_price", "point_value": 50,
            }),
            reason: Reason::PolicyEvery,
            channel,
            revision: "2025-11-25".to_owned(),
            elicitation_id: (channel == Channel::ElicitationForm)
                .then(|| format!("ct-confirm-{}", Uuid::new_v4())),
            state_hash: None,
            ttl,
            max_open: 20,
        };
        confirmations::insert(&self.pool, &new)
            .await
            .unwrap()
            .expect("under the cap")
            .confirmation_id
    }

    async fn state_of(&self, id: Uuid, user_id: Uuid) -> ConfirmationState {
        confirmations::find(&self.pool, id, user_id)
            .await
            .unwrap()
            .expect("the row")
            .state
    }

    async fn events(&self, kind: &str) -> Vec<(Option<String>, Option<Uuid>, Value)> {
        sqlx::query_as(
            "SELECT client_id, user_id, detail FROM security_events WHERE kind = $1 ORDER BY id",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

const TTL: Duration = Duration::from_secs(300);

fn page_path(id: impl std::fmt::Display) -> String {
    format!("/account/confirmations/{id}")
}

/// A decision post with the browser's cookies and these extra headers.
async fn decide(
    site: &Site,
    browser: &Browser,
    id: impl std::fmt::Display,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = site
        .http
        .post(site.url(&page_path(id)))
        .header("cookie", browser.cookie_header())
        .form(form);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn page(site: &Site, browser: &mut Browser, path: &str) -> (StatusCode, String) {
    let response = browser.get(site, &site.url(path)).await;
    let status = response.status();
    (status, response.text().await.unwrap())
}

fn assert_page_headers(response: &reqwest::Response) {
    let h = response.headers();
    assert_eq!(h["x-frame-options"], "DENY");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("script-src") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn the_page_needs_a_sign_in_and_returns_to_the_confirmation() {
    let site = site().await;
    let user = site.user("p@example.com").await;
    let client = site.client("Test Client").await;
    let id = site.hold(user, &client, Channel::Link, TTL).await;

    let mut browser = Browser::default();
    let response = browser.get(&site, &site.url(&page_path(id))).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let target = location(&response);
    assert_eq!(target.path(), "/account/sign-in");
    let next = target.query_pairs().find(|(k, _)| k == "next").unwrap().1;
    assert_eq!(next, page_path(id));

    let relative = format!("{}?{}", target.path(), target.query().unwrap());
    let sign_in = browser.get(&site, &site.url(&relative)).await;
    let html = sign_in.text().await.unwrap();
    assert_eq!(hidden(&html, "return_to"), page_path(id));
    let signed_in = browser
        .post(
            &site,
            "/account/sign-in",
            &[
                ("email", "p@example.com"),
                ("password", PASSWORD),
                ("csrf", &hidden(&html, "csrf")),
                ("return_to", &hidden(&html, "return_to")),
            ],
        )
        .await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&signed_in).path(), page_path(id));

    let response = browser.get(&site, &site.url(&page_path(id))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_page_headers(&response);
    let html = response.text().await.unwrap();
    for shown in [
        "Place an order",
        "Test Client",
        "name provided by the application itself",
        "p@example.com",
        "Sim101",
        "ES 12-26",
        "5001.25",
        "≈ 500125.00 USD",
        "Your policy asks you before every order.",
        "Waiting for your decision",
        "value=\"approve\"",
        "value=\"reject\"",
    ] {
        assert!(html.contains(shown), "{shown} in {html}");
    }
    assert!(
        !hidden(&html, "csrf").is_empty(),
        "the form carries the session's token"
    );
}

#[tokio::test]
async fn values_from_the_application_are_escaped() {
    let site = site().await;
    let user = site.user("x@example.com").await;
    let client = site.client("<img src=x onerror=alert(1)>Bot").await;
    let id = site
        .hold_order(
            user,
            &client,
            Channel::Link,
            TTL,
            "<script>alert(1)</script>\"'",
        )
        .await;
    let mut browser = site.browser("x@example.com").await;
    for path in [
        page_path(id),
        "/account/confirmations".to_owned(),
        "/account".to_owned(),
    ] {
        let (status, html) = page(&site, &mut browser, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!html.contains("<script>"), "{path}: {html}");
        assert!(!html.contains("<img"), "{path}: {html}");
        assert!(
            html.contains("&#60;img src=x onerror=alert(1)&#62;Bot"),
            "{path}: {html}"
        );
        if path == page_path(id) {
            assert!(
                html.contains("&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#39;"),
                "{html}"
            );
        }
    }
}

#[tokio::test]
async fn a_decision_needs_the_session_its_token_and_this_site() {
    let site = site().await;
    let user = site.user("d@example.com").await;
    // A real MCP client of the same person, holding a trade token.
    let mut flow = Flow::new(&site, "d@example.com").await;
    let tokens = flow.tokens(&site, "mcp:read mcp:trade", "mcp:trade").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let id = site.hold(user, &flow.client_id, Channel::Link, TTL).await;

    let mut browser = site.browser("d@example.com").await;
    let (_, html) = page(&site, &mut browser, &page_path(id)).await;
    let csrf = hidden(&html, "csrf");

    // No token, or the wrong one.
    for form in [
        vec![("decision", "approve")],
        vec![("decision", "approve"), ("csrf", "forged")],
    ] {
        let response = decide(&site, &browser, id, &form, &[]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_page_headers(&response);
        assert!(response.text().await.unwrap().contains("Request expired"));
    }
    // The token holder without the person's session: sent to sign in, nothing decided.
    let response = site
        .http
        .post(site.url(&page_path(id)))
        .bearer_auth(&access)
        .form(&[("decision", "approve"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response).path(), "/account/sign-in");
    // A post from another site, even with the session and its token.
    for site_header in ["cross-site", "same-site"] {
        let response = decide(
            &site,
            &browser,
            id,
            &[("decision", "approve"), ("csrf", &csrf)],
            &[("sec-fetch-site", site_header)],
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{site_header}");
        assert!(response.text().await.unwrap().contains("another site"));
    }
    // A decision that is neither.
    let response = decide(
        &site,
        &browser,
        id,
        &[("decision", "maybe"), ("csrf", &csrf)],
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(site.state_of(id, user).await, ConfirmationState::Pending);
    assert!(site.events("confirmation_approved").await.is_empty());

    // The person's click.
    let response = decide(
        &site,
        &browser,
        id,
        &[("decision", "approve"), ("csrf", &csrf)],
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response).path(), page_path(id));
    assert_eq!(site.state_of(id, user).await, ConfirmationState::Approved);
    let row = confirmations::find(&site.pool, id, user)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.decided_ip.as_deref(), Some("127.0.0.1"));
    let events = site.events("confirmation_approved").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.as_deref(), Some(flow.client_id.as_str()));
    assert_eq!(events[0].1, Some(user));
    assert_eq!(events[0].2["confirmation_id"], id.to_string());

    let (status, html) = page(&site, &mut browser, &page_path(id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Approved. Go back to Test Client"), "{html}");
    assert!(
        !html.contains("value=\"approve\""),
        "read-only once decided"
    );

    // A second decision changes nothing.
    let response = decide(
        &site,
        &browser,
        id,
        &[("decision", "reject"), ("csrf", &csrf)],
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_page_headers(&response);
    let html = response.text().await.unwrap();
    assert!(html.contains("already decided"), "{html}");
    assert!(!html.contains("value=\"reject\""));
    assert_eq!(site.state_of(id, user).await, ConfirmationState::Approved);
    assert!(site.events("confirmation_rejected").await.is_empty());

    // The client's confirm call uses it: the page says what was sent.
    let claimed = confirmations::claim(&site.pool, id, user, row.grant_id)
        .await
        .unwrap();
    assert!(claimed.is_some());
    confirmations::finish(&site.pool, id, "ok", &json!({"order_id": "1"}))
        .await
        .unwrap();
    let (_, html) = page(&site, &mut browser, &page_path(id)).await;
    assert!(html.contains("Sent to NinjaTrader 8 at "), "{html}");
    assert!(html.contains(": ok."), "{html}");
    assert!(!html.contains("value=\"approve\""));
}

#[tokio::test]
async fn a_rejection_is_recorded_and_final() {
    let site = site().await;
    let user = site.user("r@example.com").await;
    let client = site.client("Test Client").await;
    let id = site.hold(user, &client, Channel::ElicitationUrl, TTL).await;
    let mut browser = site.browser("r@example.com").await;
    let (_, html) = page(&site, &mut browser, &page_path(id)).await;
    let csrf = hidden(&html, "csrf");
    let response = decide(
        &site,
        &browser,
        id,
        &[("decision", "reject"), ("csrf", &csrf)],
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(site.state_of(id, user).await, ConfirmationState::Rejected);
    assert_eq!(site.events("confirmation_rejected").await.len(), 1);
    let (_, html) = page(&site, &mut browser, &page_path(id)).await;
    assert!(html.contains("Rejected. Nothing was sent"), "{html}");
    let response = decide(
        &site,
        &browser,
        id,
        &[("decision", "approve"), ("csrf", &csrf)],
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(site.state_of(id, user).await, ConfirmationState::Rejected);
}

#[tokio::test]
async fn another_accounts_confirmation_is_not_found_like_an_unknown_one() {
    let site = site().await;
    let owner = site.user("owner@example.com").await;
    site.user("other@example.com").await;
    let client = site.client("Test Client").await;
    let id = site.hold(owner, &client, Channel::Link, TTL).await;

    let mut other = site.browser("other@example.com").await;
    let (status, theirs) = page(&site, &mut other, &page_path(id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for path in [page_path(Uuid::new_v4()), page_path("not-an-id")] {
        let (status, unknown) = page(&site, &mut other, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(unknown, theirs, "no difference to learn from");
    }
    let (_, overview) = page(&site, &mut other, "/account").await;
    let csrf = hidden(&overview, "csrf");
    let response = decide(
        &site,
        &other,
        id,
        &[("decision", "approve"), ("csrf", &csrf)],
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.text().await.unwrap(), theirs);
    assert_eq!(site.state_of(id, owner).await, ConfirmationState::Pending);
    assert!(
        confirmations::find(&site.pool, id, Uuid::new_v4())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_expired_confirmation_is_read_only() {
    let site = site().await;
    let user = site.user("e@example.com").await;
    let client = site.client("Test Client").await;
    let id = site
        .hold(user, &client, Channel::Link, Duration::ZERO)
        .await;
    let mut browser = site.browser("e@example.com").await;
    let (status, html) = page(&site, &mut browser, &page_path(id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Expired: nothing was sent"), "{html}");
    assert!(!html.contains("value=\"approve\""), "{html}");
    let (_, overview) = page(&site, &mut browser, "/account").await;
    let csrf = hidden(&overview, "csrf");
    let response = decide(
        &site,
        &browser,
        id,
        &[("decision", "approve"), ("csrf", &csrf)],
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("expired; it can no longer be approved")
    );
    assert_eq!(site.state_of(id, user).await, ConfirmationState::Expired);
    assert!(site.events("confirmation_approved").await.is_empty());
}

#[tokio::test]
async fn a_confirmation_asked_inside_the_application_is_not_decided_here() {
    let site = site().await;
    let user = site.user("f@example.com").await;
    let client = site.client("Test Client").await;
    let id = site
        .hold(user, &client, Channel::ElicitationForm, TTL)
        .await;
    let mut browser = site.browser("f@example.com").await;
    let (status, html) = page(&site, &mut browser, &page_path(id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("inside the application itself"), "{html}");
    assert!(!html.contains("value=\"approve\""), "{html}");
    let (_, overview) = page(&site, &mut browser, "/account").await;
    let csrf = hidden(&overview, "csrf");
    let response = decide(
        &site,
        &browser,
        id,
        &[("decision", "approve"), ("csrf", &csrf)],
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(response.text().await.unwrap().contains("not on this page"));
    assert_eq!(site.state_of(id, user).await, ConfirmationState::Pending);
}

#[tokio::test]
async fn the_policy_form_saves_a_valid_policy_and_explains_an_invalid_one() {
    let site = site().await;
    let user = site.user("o@example.com").await;
    let client = site.client("Test Client").await;
    let ids: Vec<Uuid> = {
        let mut ids = Vec::new();
        for _ in 0..12 {
            ids.push(site.hold(user, &client, Channel::Link, TTL).await);
        }
        ids
    };
    let mut browser = site.browser("o@example.com").await;
    let response = browser.get(&site, &site.url("/account")).await;
    assert_page_headers(&response);
    let html = response.text().await.unwrap();
    assert!(html.contains("id=\"trade-confirmations\""), "{html}");
    assert!(
        html.contains("value=\"every\" checked"),
        "the default: {html}"
    );
    // The latest ten, newest first.
    let listed: Vec<&Uuid> = ids
        .iter()
        .filter(|id| html.contains(&page_path(id)))
        .collect();
    assert_eq!(listed.len(), 10);
    assert!(!html.contains(&page_path(ids[0])) && html.contains(&page_path(ids[11])));
    let csrf = hidden(&html, "csrf");

    let post = |form: Vec<(&'static str, String)>, headers: Vec<(&'static str, &'static str)>| {
        let mut request = site
            .http
            .post(site.url("/account/confirmation-policy"))
            .header("cookie", browser.cookie_header())
            .form(&form);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    // `above` without a limit: the overview again, with the form as sent and what is wrong.
    let response = post(
        vec![
            ("csrf", csrf.clone()),
            ("mode", "above".into()),
            ("max_quantity", String::new()),
        ],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_page_headers(&response);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("needs a maximum quantity, a maximum notional, or both"),
        "{html}"
    );
    assert!(html.contains("value=\"above\" checked"), "{html}");
    let response = post(
        vec![
            ("csrf", csrf.clone()),
            ("mode", "above".into()),
            ("max_quantity", "0".into()),
        ],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("from 1 to 10000"));
    // Without the token, or from another site.
    let valid = vec![
        ("mode", "above".to_owned()),
        ("max_quantity", "3".to_owned()),
        ("max_notional", "25000".to_owned()),
        ("confirm_cancels", "on".to_owned()),
    ];
    let response = post(valid.clone(), vec![]).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let mut with_token = valid.clone();
    with_token.push(("csrf", csrf.clone()));
    let response = post(with_token.clone(), vec![("sec-fetch-site", "cross-site")])
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        confirmations::policy(&site.pool, user).await.unwrap(),
        Policy::default()
    );
    assert!(site.events("confirmation_policy_changed").await.is_empty());

    let response = post(with_token, vec![("sec-fetch-site", "same-origin")])
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        "/account#trade-confirmations"
    );
    let stored = confirmations::policy(&site.pool, user).await.unwrap();
    assert_eq!(
        stored,
        Policy::new(Mode::Above, Some(3), Some(25_000.0), true, false).unwrap()
    );
    let events = site.events("confirmation_policy_changed").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, Some(user));
    assert_eq!(events[0].2["policy"]["mode"], "above");
    let (_, html) = page(&site, &mut browser, "/account").await;
    assert!(html.contains("value=\"above\" checked"), "{html}");
    assert!(html.contains("name=\"max_quantity\" min=\"1\" max=\"10000\" step=\"1\" value=\"3\""));
    assert!(html.contains("name=\"confirm_cancels\" value=\"on\" checked"));

    // The history lists them all, newest first.
    let (status, html) = page(&site, &mut browser, "/account/confirmations").await;
    assert_eq!(status, StatusCode::OK);
    let first = html.find(&page_path(ids[11])).unwrap();
    let last = html.find(&page_path(ids[0])).unwrap();
    assert!(first < last);
}

#[tokio::test]
async fn the_json_api_reads_and_sets_the_policy_and_never_decides() {
    let site = site().await;
    let user = site.user("j@example.com").await;
    let client = site.client("Test Client").await;
    let id = site.hold(user, &client, Channel::Link, TTL).await;
    let browser = site.browser("j@example.com").await;
    let cookies = browser.cookie_header();
    let get = |path: &'static str| {
        site.http
            .get(site.url(path))
            .header("cookie", cookies.clone())
            .send()
    };

    let response = get("/v1/account/confirmation-policy").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let csrf = response.headers()["x-csrf-token"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"mode": "every", "max_quantity": null, "max_notional": null,
               "confirm_cancels": false, "page_only": false})
    );

    let put = |body: Value, csrf: Option<&str>| {
        let mut request = site
            .http
            .put(site.url("/v1/account/confirmation-policy"))
            .header("cookie", cookies.clone())
            .json(&body);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    // A trade token of the same person cannot turn the policy off: the API needs the session.
    let mut flow = Flow::new(&site, "j@example.com").await;
    let tokens = flow.tokens(&site, "mcp:read mcp:trade", "mcp:trade").await;
    let response = site
        .http
        .put(site.url("/v1/account/confirmation-policy"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .header("x-csrf-token", &csrf)
        .json(&json!({"mode": "never"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        confirmations::policy(&site.pool, user).await.unwrap(),
        Policy::default()
    );

    let wanted = json!({"mode": "above", "max_notional": 10000.0, "page_only": true});
    let response = put(wanted.clone(), None).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "csrf_failed"
    );
    let response = put(wanted.clone(), Some("forged")).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    for (bad, message) in [
        (
            json!({"mode": "above"}),
            "mode above needs max_quantity or max_notional",
        ),
        (
            json!({"mode": "always"}),
            "mode must be every, above or never",
        ),
        (
            json!({"mode": "every", "max_quantity": 0}),
            "max_quantity must be an integer from 1 to 10000",
        ),
        (
            json!({"mode": "every", "approve": true}),
            "the body must be a JSON object",
        ),
    ] {
        let response = put(bad.clone(), Some(&csrf)).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{bad}");
        assert!(
            body["message"].as_str().unwrap().starts_with(message),
            "{body}"
        );
    }
    assert_eq!(
        confirmations::policy(&site.pool, user).await.unwrap(),
        Policy::default()
    );
    let response = put(wanted, Some(&csrf)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let expected = json!({"mode": "above", "max_quantity": null, "max_notional": 10000.0,
                          "confirm_cancels": false, "page_only": true});
    assert_eq!(response.json::<Value>().await.unwrap(), expected);
    assert_eq!(
        get("/v1/account/confirmation-policy")
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        expected
    );
    assert_eq!(site.events("confirmation_policy_changed").await.len(), 1);

    let response = get("/v1/account/confirmations").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    let rows = body["confirmations"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["confirmation_id"], id.to_string());
    assert_eq!(rows[0]["tool"], "PlaceOrder");
    assert_eq!(rows[0]["client_name"], "Test Client");
    assert_eq!(rows[0]["state"], "pending");
    assert_eq!(rows[0]["channel"], "link");
    assert_eq!(rows[0]["reason"], "policy_every");
    assert_eq!(rows[0]["arguments"]["instrument"], "ES 12-26");

    // No JSON route decides, whatever the method.
    for path in [
        format!("/v1/account/confirmations/{id}"),
        format!("/v1/account/confirmations/{id}/approve"),
        "/v1/account/confirmations".to_owned(),
    ] {
        for method in [
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::PATCH,
        ] {
            let response = site
                .http
                .request(method.clone(), site.url(&path))
                .header("cookie", cookies.clone())
                .header("x-csrf-token", &csrf)
                .json(&json!({"decision": "approve"}))
                .send()
                .await
                .unwrap();
            assert!(
                matches!(response.status().as_u16(), 404 | 405),
                "{method} {path}: {}",
                response.status()
            );
        }
    }
    assert_eq!(site.state_of(id, user).await, ConfirmationState::Pending);

    // No session: the JSON error, never the page.
    let response = site
        .http
        .get(site.url("/v1/account/confirmations"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
