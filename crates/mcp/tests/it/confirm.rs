//! Orders a person confirms, at the endpoint: under the default policy an order is held and
//! answered with a preview and the confirmation page's address, nothing reaches the Add-On, and
//! ConfirmTrade runs it once — only after the person approved it on the page (here: the store's
//! page decision), and only for the connection that asked.

use std::time::Duration;

use serde_json::{Value, json};
use store::confirmations as rows;
use uuid::Uuid;
use vocabulary::confirm::{ConfirmationState, Mode, Policy};

use crate::support::{App, spawn};

fn policy(mode: Mode, max_quantity: Option<u32>) -> Policy {
    Policy {
        mode,
        max_quantity,
        max_notional: None,
        confirm_cancels: false,
        page_only: false,
    }
}

/// The JSON body of a tool result held or refused by the gate.
fn held(reply: &crate::support::Reply) -> Value {
    assert_eq!(reply.json["result"]["isError"], true, "{}", reply.text);
    serde_json::from_str(reply.json["result"]["content"][0]["text"].as_str().unwrap()).unwrap()
}

fn order(key: &str, quantity: u64) -> Value {
    json!({"account":"Sim101","instrument":"ES 12-26","action":"Buy","order_type":"Limit",
           "quantity":quantity,"limit_price":5001.25,"idempotency_key":key})
}

async fn place(app: &App, key: &str, quantity: u64) -> crate::support::Reply {
    app.call("elite-trade", "PlaceOrder", order(key, quantity))
        .await
}

#[tokio::test]
async fn an_order_waits_for_the_person_and_runs_once_after_approval() {
    let app = spawn().await;
    app.relay.connect(app.users.elite);
    rows::set_policy(&app.db, app.users.elite, &Policy::default())
        .await
        .unwrap();

    let reply = place(&app, "order-key-0001", 2).await;
    let body = held(&reply);
    assert_eq!(body["status"], "confirmation_required");
    assert_eq!(body["reason"], "policy_every");
    assert_eq!(body["preview"]["tool"], "PlaceOrder");
    assert_eq!(body["preview"]["arguments"]["quantity"], 2);
    assert_eq!(body["preview"]["arguments"].get("idempotency_key"), None);
    // 2 × 5001.25 (its limit price) × 50 (ES point value).
    assert_eq!(body["preview"]["estimated_notional"], 500_125.0);
    assert_eq!(body["preview"]["price_basis"], "limit_price");
    assert_eq!(body["preview"]["point_value"], 50.0);
    let id: Uuid = body["confirmation_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        body["confirm_url"],
        format!("{}/account/confirmations/{id}", crate::support::PUBLIC_URL)
    );
    assert!(body["next"].as_str().unwrap().contains("cannot approve"));
    assert_eq!(app.relay.call_count(), 0, "nothing reached the Add-On");

    // The same request again (same key) is the same confirmation, not a second one.
    let again = held(&place(&app, "order-key-0001", 2).await);
    assert_eq!(again["confirmation_id"], body["confirmation_id"]);
    // The same key for a different order is refused.
    let other = held(&place(&app, "order-key-0001", 3).await);
    assert_eq!(other["status"], "key_reused");

    // The model cannot run it before the person decides.
    let confirm = json!({"confirmation_id": id});
    let pending = app
        .call("elite-trade", "ConfirmTrade", confirm.clone())
        .await;
    assert_eq!(held(&pending)["status"], "pending");
    assert_eq!(app.relay.call_count(), 0);

    // The person approves on the page; the model runs it, once.
    let decided = rows::decide_on_page(&app.db, id, app.users.elite, true, Some("127.0.0.1"))
        .await
        .unwrap();
    assert_eq!(decided, Some(ConfirmationState::Approved));
    let sent = app
        .call("elite-trade", "ConfirmTrade", confirm.clone())
        .await;
    assert_eq!(sent.json["result"]["isError"], false, "{}", sent.text);
    let calls = app.relay.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].tool, "PlaceOrder");
    assert_eq!(calls[0].idempotency_key.as_deref(), Some("order-key-0001"));
    assert_eq!(calls[0].arguments["quantity"], 2);

    let twice = app.call("elite-trade", "ConfirmTrade", confirm).await;
    assert_eq!(held(&twice)["status"], "used");
    let replayed = held(&place(&app, "order-key-0001", 2).await);
    assert_eq!(replayed["status"], "used");
    assert_eq!(app.relay.call_count(), 1, "sent once");

    // The audit: the request, the decision and the outcome.
    let listed = app
        .call("elite-read", "GetTradeConfirmations", json!({}))
        .await;
    let entry = &listed.json["result"]["structuredContent"]["confirmations"][0];
    assert_eq!(entry["state"], "used", "{}", listed.text);
    assert_eq!(entry["decided_via"], "page");
    assert_eq!(entry["decision"], "approve");
    assert_eq!(entry["outcome_code"], "ok");
}

#[tokio::test]
async fn rejected_forged_and_other_connections_confirmations_send_nothing() {
    let app = spawn().await;
    app.relay.connect(app.users.elite);
    rows::set_policy(&app.db, app.users.elite, &Policy::default())
        .await
        .unwrap();
    let body = held(&place(&app, "order-key-0002", 1).await);
    let id: Uuid = body["confirmation_id"].as_str().unwrap().parse().unwrap();

    // A forged id, and a real one from another account, are unknown.
    for forged in [Uuid::new_v4(), id] {
        let reply = app
            .call(
                "pro-trade",
                "ConfirmTrade",
                json!({"confirmation_id": forged}),
            )
            .await;
        assert_eq!(reply.status, 403, "pro is below Elite: {}", reply.text);
    }
    let forged = app
        .call(
            "elite-trade",
            "ConfirmTrade",
            json!({"confirmation_id": Uuid::new_v4()}),
        )
        .await;
    assert_eq!(held(&forged)["status"], "not_found");

    rows::decide_on_page(&app.db, id, app.users.elite, false, None)
        .await
        .unwrap();
    let rejected = app
        .call(
            "elite-trade",
            "ConfirmTrade",
            json!({"confirmation_id": id}),
        )
        .await;
    assert_eq!(held(&rejected)["status"], "rejected");
    assert_eq!(app.relay.call_count(), 0);
}

#[tokio::test]
async fn the_policy_decides_which_calls_wait() {
    let app = spawn().await;
    app.relay.connect(app.users.elite);
    // Above two contracts only.
    rows::set_policy(&app.db, app.users.elite, &policy(Mode::Above, Some(2)))
        .await
        .unwrap();
    let small = place(&app, "order-key-0003", 2).await;
    assert_eq!(small.json["result"]["isError"], false, "{}", small.text);
    assert_eq!(app.relay.call_count(), 1);
    let large = held(&place(&app, "order-key-0004", 3).await);
    assert_eq!(large["reason"], "quantity_above");
    // A flatten has no known size: held rather than guessed.
    let flatten = app
        .call(
            "elite-trade",
            "FlattenAll",
            json!({"idempotency_key": "flatten-key-01"}),
        )
        .await;
    assert_eq!(held(&flatten)["reason"], "size_unknown");
    // Cancels are not held unless the account asks for it.
    let cancel = app
        .call(
            "elite-trade",
            "CancelOrder",
            json!({"order_id": "o-1", "idempotency_key": "cancel-key-01"}),
        )
        .await;
    assert_eq!(cancel.json["result"]["isError"], false, "{}", cancel.text);
    assert_eq!(app.relay.call_count(), 2);

    // Without the Add-On nothing is held: the order is the usual 408 and no row waits.
    rows::set_policy(&app.db, app.users.elite, &Policy::default())
        .await
        .unwrap();
    app.relay.disconnect(app.users.elite);
    let before = app.relay.call_count();
    let absent = place(&app, "order-key-0006", 1).await;
    assert_eq!(absent.status, 408, "{}", absent.text);
    assert_eq!(
        app.relay.call_count(),
        before + 1,
        "offered to the relay, which refused it"
    );
    let open = rows::open_by_key(&app.db, app.users.elite, "order-key-0006")
        .await
        .unwrap();
    assert_eq!(open, None);
    app.relay.connect(app.users.elite);

    // Never: the model trades on its own.
    rows::set_policy(&app.db, app.users.elite, &policy(Mode::Never, None))
        .await
        .unwrap();
    let free = place(&app, "order-key-0005", 5).await;
    assert_eq!(free.json["result"]["isError"], false, "{}", free.text);
    // Two sent, the refused one offered while the Add-On was away, and this one.
    assert_eq!(app.relay.call_count(), 4);
}

/// `initialize` params declaring `elicitation` as the revision spells it.
fn initialize_with(version: &str, elicitation: Option<Value>) -> Value {
    let mut capabilities = json!({});
    if let Some(elicitation) = elicitation {
        capabilities["elicitation"] = elicitation;
    }
    json!({"protocolVersion": version, "capabilities": capabilities,
           "clientInfo": {"name": "test-client", "version": "1.0.0"}})
}

async fn declared(app: &App) -> (bool, bool) {
    sqlx::query_as(
        "SELECT elicitation_form, elicitation_url FROM mcp_client_capabilities WHERE user_id = $1",
    )
    .bind(app.users.elite)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn initialize_remembers_whether_the_client_shows_forms() {
    let app = spawn().await;
    for (version, elicitation, expected) in [
        ("2025-06-18", Some(json!({})), (true, false)),
        ("2025-11-25", Some(json!({})), (true, false)),
        ("2025-11-25", Some(json!({"url": {}})), (false, true)),
        (
            "2025-11-25",
            Some(json!({"form": {}, "url": {}})),
            (true, true),
        ),
        ("2025-11-25", None, (false, false)),
        ("2025-03-26", Some(json!({})), (false, false)),
    ] {
        let reply = app
            .legacy(
                "elite-trade",
                version,
                "initialize",
                initialize_with(version, elicitation),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(declared(&app).await, expected, "{version}");
    }
}

/// The event stream answering a POST, read one message at a time.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// The next message, or `None` once the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|line| line.strip_prefix("data: ")) {
                    return Some(serde_json::from_str(data).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.response.chunk())
                .await
                .expect("the stream stalled")
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// PlaceOrder from a client reading event streams, under `version`.
async fn place_streaming(app: &App, version: &str, key: &str) -> reqwest::Response {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
                      "params":{"name":"PlaceOrder","arguments":order(key, 2)}});
    app.client
        .post(&app.url)
        .bearer_auth("elite-trade")
        .header("mcp-protocol-version", version)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// A client that declared elicitation under `version` places an order: the stream's first
/// message is the form asking the person.
async fn asked(app: &App, version: &str, key: &str) -> (Events, Value) {
    let reply = app
        .legacy(
            "elite-trade",
            version,
            "initialize",
            initialize_with(version, Some(json!({}))),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let before = app.relay.call_count();
    let response = place_streaming(app, version, key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    let request = events.next().await.unwrap();
    assert_eq!(request["method"], "elicitation/create", "{request}");
    assert_eq!(
        app.relay.call_count(),
        before,
        "nothing sent before the answer"
    );
    (events, request)
}

fn answer(request: &Value, result: Value) -> Value {
    let mut message = json!({"jsonrpc":"2.0","id":request["id"]});
    message["result"] = result;
    message
}

async fn elicitation_app() -> App {
    let app = crate::support::spawn_listening().await;
    app.relay.connect(app.users.elite);
    rows::set_policy(&app.db, app.users.elite, &Policy::default())
        .await
        .unwrap();
    app
}

#[tokio::test]
async fn a_client_that_shows_forms_asks_the_person_and_sends_on_accept() {
    let app = elicitation_app().await;
    let (mut events, request) = asked(&app, "2025-11-25", "form-key-0001").await;
    let id = request["id"].as_str().unwrap();
    assert!(id.starts_with("ct-confirm-"), "{request}");
    let params = &request["params"];
    assert_eq!(params["mode"], "form");
    let message = params["message"].as_str().unwrap();
    assert!(message.contains("PlaceOrder"), "{message}");
    assert!(message.contains("500125.00"), "{message}");
    let schema = &params["requestedSchema"];
    assert_eq!(schema["required"], json!(["confirm"]));
    assert_eq!(schema["properties"]["confirm"]["type"], "boolean");
    assert_eq!(schema["properties"]["confirm"]["default"], false);
    assert_eq!(schema["properties"]["account"]["enum"], json!(["Sim101"]));
    assert_eq!(schema["properties"]["quantity"]["enum"], json!(["2"]));
    assert_eq!(
        schema["properties"]["estimated_notional"]["enum"],
        json!(["500125.00"])
    );
    assert_eq!(schema["properties"].get("idempotency_key"), None);

    let accepted = app
        .post(
            Some("elite-trade"),
            &[("mcp-protocol-version", "2025-11-25")],
            &answer(
                &request,
                json!({"action":"accept","content":{"confirm":true}}),
            ),
        )
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.text);
    let response = events.next().await.unwrap();
    assert_eq!(response["id"], 1);
    assert_eq!(response["result"]["isError"], false, "{response}");
    assert_eq!(events.next().await, None, "the response ends the stream");
    let calls = app.relay.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].tool, "PlaceOrder");
    assert_eq!(calls[0].idempotency_key.as_deref(), Some("form-key-0001"));

    let listed = app
        .call("elite-read", "GetTradeConfirmations", json!({}))
        .await;
    let entry = &listed.json["result"]["structuredContent"]["confirmations"][0];
    assert_eq!(entry["channel"], "elicitation_form", "{}", listed.text);
    assert_eq!(entry["decided_via"], "elicitation");
    assert_eq!(entry["decision"], "accept");
    assert_eq!(entry["state"], "used");
    assert_eq!(entry["outcome_code"], "ok");

    // A late or repeated answer changes nothing.
    let again = app
        .post(
            Some("elite-trade"),
            &[("mcp-protocol-version", "2025-11-25")],
            &answer(
                &request,
                json!({"action":"accept","content":{"confirm":true}}),
            ),
        )
        .await;
    assert_eq!(again.status, 400, "{}", again.text);
    assert_eq!(app.relay.call_count(), 1, "sent once");
}

#[tokio::test]
async fn a_declined_or_unticked_form_sends_nothing() {
    let app = elicitation_app().await;
    for (key, result, status) in [
        ("form-key-0002", json!({"action":"decline"}), "declined"),
        (
            "form-key-0003",
            json!({"action":"accept","content":{"confirm":false}}),
            "declined",
        ),
        ("form-key-0004", json!({"action":"cancel"}), "declined"),
    ] {
        let (mut events, request) = asked(&app, "2025-11-25", key).await;
        let reply = app
            .post(
                Some("elite-trade"),
                &[("mcp-protocol-version", "2025-11-25")],
                &answer(&request, result),
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text);
        let response = events.next().await.unwrap();
        assert_eq!(response["result"]["isError"], true, "{response}");
        let body: Value =
            serde_json::from_str(response["result"]["content"][0]["text"].as_str().unwrap())
                .unwrap();
        assert_eq!(body["status"], status);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("nothing was sent"),
            "{body}"
        );
    }
    assert_eq!(app.relay.call_count(), 0);
}

#[tokio::test]
async fn the_answer_may_reach_another_replica() {
    let app = elicitation_app().await;
    // 2025-06-18 declares `elicitation: {}` and has no `mode`.
    let (mut events, request) = asked(&app, "2025-06-18", "form-key-0005").await;
    assert_eq!(request["params"].get("mode"), None, "{request}");
    let reply = app
        .post_to_other_replica(
            "elite-trade",
            &[("mcp-protocol-version", "2025-06-18")],
            &answer(
                &request,
                json!({"action":"accept","content":{"confirm":true}}),
            ),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let response = events.next().await.unwrap();
    assert_eq!(response["result"]["isError"], false, "{response}");
    assert_eq!(
        app.relay.call_count(),
        1,
        "sent by the replica that was asked"
    );

    // Another connection of the same person cannot answer for this one.
    let (events, request) = asked(&app, "2025-11-25", "form-key-0006").await;
    let foreign = app
        .post_to_other_replica(
            "elite-read",
            &[("mcp-protocol-version", "2025-11-25")],
            &answer(
                &request,
                json!({"action":"accept","content":{"confirm":true}}),
            ),
        )
        .await;
    assert_eq!(foreign.status, 400, "{}", foreign.text);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.relay.call_count(),
        1,
        "another grant's answer approves nothing"
    );
    // The same request again while the person is being asked is not a second question.
    let retried = held(&place(&app, "form-key-0006", 2).await);
    assert_eq!(retried["status"], "in_progress", "{retried}");
    // The client goes away before deciding: the confirmation is abandoned.
    drop(events.response);
    let mut state = None;
    for _ in 0..50 {
        let rows = rows::list(&app.db, app.users.elite, rows::ListFilter::default(), 10)
            .await
            .unwrap();
        state = rows
            .iter()
            .find(|row| row.idempotency_key.as_deref() == Some("form-key-0006"))
            .map(|row| row.state);
        if state == Some(ConfirmationState::Abandoned) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, Some(ConfirmationState::Abandoned));
}

#[tokio::test]
async fn a_client_without_forms_gets_the_link() {
    let app = elicitation_app().await;
    let reply = app
        .legacy(
            "elite-trade",
            "2025-11-25",
            "initialize",
            initialize_with("2025-11-25", None),
        )
        .await;
    assert_eq!(reply.status, 200);
    let response = place_streaming(&app, "2025-11-25", "form-key-0007").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let reply: Value = response.json().await.unwrap();
    let body: Value =
        serde_json::from_str(reply["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "confirmation_required", "{reply}");
    assert!(body["confirm_url"].is_string());
    assert_eq!(app.relay.call_count(), 0);
}

/// A 2026-07-28 `tools/call` of PlaceOrder declaring `elicitation` as `capabilities`, with
/// `extra` params (`requestState`, `inputResponses`).
async fn place_modern(
    app: &App,
    arguments: Value,
    elicitation: Option<Value>,
    extra: Value,
) -> crate::support::Reply {
    place_modern_at(app, false, arguments, elicitation, extra).await
}

/// [`place_modern`], sent to this replica or to another one on the same database.
async fn place_modern_at(
    app: &App,
    other_replica: bool,
    arguments: Value,
    elicitation: Option<Value>,
    extra: Value,
) -> crate::support::Reply {
    let mut params = json!({"name": "PlaceOrder", "arguments": arguments});
    if let Some(extra) = extra.as_object() {
        for (name, value) in extra {
            params[name] = value.clone();
        }
    }
    let (headers, mut body) = crate::support::modern_request("tools/call", params);
    if let Some(elicitation) = elicitation {
        body["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
            json!({ "elicitation": elicitation });
    }
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if other_replica {
        return app
            .post_to_other_replica("elite-trade", &headers, &body)
            .await;
    }
    app.post(Some("elite-trade"), &headers, &body).await
}

fn accepted_form() -> Value {
    json!({"crosstrade_confirm": {"action": "accept", "content": {"confirm": true}}})
}

#[tokio::test]
async fn a_2026_client_that_shows_forms_answers_in_a_retry_that_sends_once() {
    let app = elicitation_app().await;
    let forms = Some(json!({"form": {}}));
    let first = place_modern(&app, order("mrtr-key-0001", 2), forms.clone(), json!({})).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let result = &first.json["result"];
    assert_eq!(result["resultType"], "input_required", "{}", first.text);
    let request = &result["inputRequests"]["crosstrade_confirm"];
    assert_eq!(request["method"], "elicitation/create");
    assert_eq!(
        request.get("id"),
        None,
        "input requests carry no JSON-RPC id"
    );
    assert_eq!(request["params"]["mode"], "form");
    assert_eq!(
        request["params"]["requestedSchema"]["properties"]["confirm"]["default"],
        false
    );
    let state = result["requestState"].as_str().unwrap().to_owned();
    assert!(state.starts_with("ct1."), "{state}");
    assert_eq!(app.relay.call_count(), 0, "nothing sent before the answer");

    // A retry without the answer is asked the same form again, with the same state.
    let again = place_modern(
        &app,
        order("mrtr-key-0001", 2),
        forms.clone(),
        json!({"requestState": state}),
    )
    .await;
    assert_eq!(again.json["result"]["resultType"], "input_required");
    assert_eq!(again.json["result"]["requestState"], state.as_str());

    // State that is garbled, forged, or presented for another call is refused.
    let mut forged = state.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    for (arguments, request_state) in [
        (order("mrtr-key-0001", 2), "ct1.garbled".to_owned()),
        (order("mrtr-key-0001", 2), forged),
        (order("mrtr-key-0001", 3), state.clone()),
    ] {
        let refused = place_modern(
            &app,
            arguments,
            forms.clone(),
            json!({"requestState": request_state, "inputResponses": accepted_form()}),
        )
        .await;
        assert_eq!(refused.status, 200, "{}", refused.text);
        assert_eq!(refused.json["error"]["code"], -32602, "{}", refused.text);
        assert_eq!(
            refused.json["error"]["data"]["reason"],
            "invalid_request_state"
        );
    }
    assert_eq!(app.relay.call_count(), 0);

    // The person accepts: the retry sends it, once; a replayed retry sends nothing more.
    let sent = place_modern(
        &app,
        order("mrtr-key-0001", 2),
        forms.clone(),
        json!({"requestState": state, "inputResponses": accepted_form()}),
    )
    .await;
    assert_eq!(
        sent.json["result"]["resultType"], "complete",
        "{}",
        sent.text
    );
    assert_eq!(sent.json["result"]["isError"], false, "{}", sent.text);
    assert_eq!(app.relay.call_count(), 1);
    let replayed = place_modern(
        &app,
        order("mrtr-key-0001", 2),
        forms,
        json!({"requestState": state, "inputResponses": accepted_form()}),
    )
    .await;
    assert_eq!(held(&replayed)["status"], "used", "{}", replayed.text);
    assert_eq!(app.relay.call_count(), 1, "sent once");

    let listed = app
        .call("elite-read", "GetTradeConfirmations", json!({}))
        .await;
    let entry = &listed.json["result"]["structuredContent"]["confirmations"][0];
    assert_eq!(entry["channel"], "elicitation_form", "{}", listed.text);
    assert_eq!(entry["decided_via"], "elicitation");
    assert_eq!(entry["decision"], "accept");
    assert_eq!(entry["outcome_code"], "ok");
}

#[tokio::test]
async fn a_2026_decline_a_changed_field_or_no_forms_send_nothing() {
    let app = elicitation_app().await;
    let forms = Some(json!({}));
    for (key, response) in [
        ("mrtr-key-0002", json!({"action": "decline"})),
        ("mrtr-key-0003", json!({"action": "cancel"})),
        // A client that let the person edit a shown detail approves nothing.
        (
            "mrtr-key-0004",
            json!({"action": "accept", "content": {"confirm": true, "quantity": "20"}}),
        ),
    ] {
        let first = place_modern(&app, order(key, 2), forms.clone(), json!({})).await;
        let state = first.json["result"]["requestState"]
            .as_str()
            .unwrap()
            .to_owned();
        let retry =
            json!({"requestState": state, "inputResponses": {"crosstrade_confirm": response}});
        // Any replica takes the retry: the state is checked against the row in PostgreSQL.
        let other_replica = key.ends_with('2');
        let answered = place_modern_at(
            &app,
            other_replica,
            order(key, 2),
            forms.clone(),
            retry.clone(),
        )
        .await;
        assert_eq!(held(&answered)["status"], "declined", "{}", answered.text);
        let replayed = place_modern(&app, order(key, 2), forms.clone(), retry).await;
        assert_eq!(held(&replayed)["status"], "declined", "{}", replayed.text);
    }
    // Without form elicitation in `_meta`, the person decides on the page.
    let linked = place_modern(&app, order("mrtr-key-0005", 2), None, json!({})).await;
    assert_eq!(
        held(&linked)["status"],
        "confirmation_required",
        "{}",
        linked.text
    );
    let url_only = place_modern(
        &app,
        order("mrtr-key-0006", 2),
        Some(json!({"url": {}})),
        json!({}),
    )
    .await;
    assert_eq!(held(&url_only)["status"], "confirmation_required");
    assert_eq!(app.relay.call_count(), 0);
}

#[tokio::test]
async fn an_error_answer_moves_the_decision_to_the_page_and_unmatched_answers_are_refused() {
    let app = elicitation_app().await;
    let (mut events, request) = asked(&app, "2025-11-25", "form-key-0008").await;
    let refused = json!({"jsonrpc": "2.0", "id": request["id"],
        "error": {"code": -32600, "message": "Elicitation not supported"}});
    let reply = app
        .post(
            Some("elite-trade"),
            &[("mcp-protocol-version", "2025-11-25")],
            &refused,
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let response = events.next().await.unwrap();
    let body: Value =
        serde_json::from_str(response["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "confirmation_required", "{response}");
    let id: Uuid = body["confirmation_id"].as_str().unwrap().parse().unwrap();
    // The client going away does not abandon it: the page decides now.
    drop(events);
    let decided = rows::decide_on_page(&app.db, id, app.users.elite, true, None)
        .await
        .unwrap();
    assert_eq!(decided, Some(ConfirmationState::Approved));

    // An answer that matches nothing waiting is not accepted.
    let stray = app
        .post(
            Some("elite-trade"),
            &[("mcp-protocol-version", "2025-11-25")],
            &answer(
                &json!({"id": "ct-confirm-00000000-0000-0000-0000-000000000000"}),
                json!({"action": "accept", "content": {"confirm": true}}),
            ),
        )
        .await;
    assert_eq!(stray.status, 400, "{}", stray.text);
    assert_eq!(stray.json["error"]["code"], -32600);
    assert!(stray.json["id"].is_null());
    assert_eq!(app.relay.call_count(), 0);
}

#[tokio::test]
async fn an_addon_gone_after_the_person_accepted_is_a_tool_result_and_the_approval_stands() {
    let app = elicitation_app().await;
    let (mut events, request) = asked(&app, "2025-11-25", "form-key-0009").await;
    app.relay.disconnect(app.users.elite);
    let reply = app
        .post(
            Some("elite-trade"),
            &[("mcp-protocol-version", "2025-11-25")],
            &answer(
                &request,
                json!({"action": "accept", "content": {"confirm": true}}),
            ),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    // The stream has started: a tool result, not a JSON-RPC error.
    let response = events.next().await.unwrap();
    assert_eq!(response["result"]["isError"], true, "{response}");
    let body: Value =
        serde_json::from_str(response["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(body["status"], "addon_disconnected", "{body}");
    assert_eq!(app.relay.call_count(), 0, "nothing sent");
    // The approval was given back, so ConfirmTrade sends it once the Add-On is back.
    let id = body["confirmation_id"].as_str().unwrap().to_owned();
    app.relay.connect(app.users.elite);
    let sent = app
        .call(
            "elite-trade",
            "ConfirmTrade",
            json!({"confirmation_id": id}),
        )
        .await;
    assert_eq!(sent.json["result"]["isError"], false, "{}", sent.text);
    assert_eq!(app.relay.call_count(), 1);
}
