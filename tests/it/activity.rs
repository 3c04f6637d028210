//! What each AI client did, through the real server: tool calls made over HTTP with two grants'
//! tokens show on the AI Clients page under their own client (counts by tool, trade tools
//! marked, the latest calls with their outcome, the per-day chart), and the calls of the last
//! second before SIGTERM are written at shutdown.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::oauth::{Flow, PASSWORD};

use crate::account::account_browser;
use crate::support::{self, server_with_user, tools_call};

const EMAIL: &str = "activity@example.com";

async fn access_token(flow: &mut Flow, endpoint: &testkit::oauth::Endpoint, scope: &str) -> String {
    let tokens = flow.tokens(endpoint, "mcp:read mcp:trade", scope).await;
    tokens["access_token"].as_str().unwrap().to_owned()
}

/// The part of the AI Clients page about the client named `name`.
fn client_card<'a>(html: &'a str, name: &str) -> &'a str {
    html.split(r#"<li class="client">"#)
        .skip(1)
        .find(|card| card.contains(&format!(r#"<span class="client-name">{name}</span>"#)))
        .unwrap_or_else(|| panic!("no card for {name} in {html}"))
}

fn tool_row(name: &str, trade: bool, calls: u32, errors: u32) -> String {
    let mark = if trade {
        r#" <span class="badge trade">Trade</span>"#
    } else {
        ""
    };
    format!(
        r#"<tr><td><span class="tool">{name}</span>{mark}</td><td class="num">{calls}</td><td class="num">{errors}</td></tr>"#
    )
}

/// The latest calls of a card, newest first: (tool, outcome).
fn last_calls(card: &str) -> Vec<(String, String)> {
    let list = card
        .split(r#"<ol class="calls">"#)
        .nth(1)
        .and_then(|rest| rest.split("</ol>").next())
        .unwrap_or_else(|| panic!("no latest calls in {card}"));
    list.split("<li>")
        .skip(1)
        .map(|item| {
            let tool = item
                .split(r#"<span class="tool">"#)
                .nth(1)
                .and_then(|t| t.split('<').next())
                .unwrap()
                .to_owned();
            let outcome = item
                .split(r#"<span class="badge "#)
                .filter(|part| !part.starts_with("trade"))
                .nth(1)
                .and_then(|b| b.split('>').nth(1))
                .and_then(|b| b.split('<').next())
                .unwrap()
                .to_owned();
            (tool, outcome)
        })
        .collect()
}

#[tokio::test]
async fn the_ai_clients_page_shows_what_each_client_did() {
    let (_db, server, endpoint) = server_with_user(EMAIL).await;
    let mut trading = Flow::new_for(&endpoint, "Trading Bot", EMAIL, PASSWORD).await;
    let trade = access_token(&mut trading, &endpoint, "mcp:trade").await;
    let mut research = Flow::new_for(&endpoint, "Research Assistant", EMAIL, PASSWORD).await;
    let read = access_token(&mut research, &endpoint, "mcp:read").await;

    for _ in 0..3 {
        let answered = tools_call(&endpoint, &trade, "GetMcpCapabilities", json!({})).await;
        assert_eq!(answered.status(), 200);
    }
    let journal = tools_call(&endpoint, &trade, "GetJournal", json!({})).await;
    assert_eq!(journal.status(), 200);
    // No Add-On is connected: the order is not sent.
    let order = json!({"account": "Sim101", "instrument": "ES 12-26", "action": "Buy",
        "order_type": "Market", "quantity": 1});
    let offline = tools_call(&endpoint, &trade, "PlaceOrder", order.clone()).await;
    assert_eq!(offline.status(), 408);
    // Arguments that do not validate: a tool error.
    let invalid = tools_call(&endpoint, &trade, "PlaceOrder", json!({"quantity": "all"})).await;
    assert_eq!(invalid.status(), 200);
    assert!(invalid.text().await.unwrap().contains(r#""isError":true"#));
    // The read grant: its own calls, and a trade tool its scope refuses.
    for _ in 0..2 {
        let answered = tools_call(&endpoint, &read, "GetMcpCapabilities", json!({})).await;
        assert_eq!(answered.status(), 200);
    }
    let refused = tools_call(&endpoint, &read, "PlaceOrder", order).await;
    assert_eq!(refused.status(), 403);

    // Written within about a second.
    let mut browser = account_browser(&endpoint, EMAIL).await;
    let mut html = String::new();
    let written = testkit::wait::eventually(Duration::from_secs(10), async || {
        html = browser
            .get(&endpoint, &endpoint.url("/account/ai-clients"))
            .await
            .text()
            .await
            .unwrap();
        client_card(&html, "Trading Bot").contains("<strong>6</strong> calls")
            && client_card(&html, "Research Assistant").contains("<strong>3</strong> calls")
    })
    .await;
    assert!(written, "{html}");

    let bot = client_card(&html, "Trading Bot");
    for row in [
        tool_row("GetMcpCapabilities", false, 3, 0),
        tool_row("PlaceOrder", true, 2, 2),
        tool_row("GetJournal", false, 1, 0),
    ] {
        assert!(bot.contains(&row), "{row} in {bot}");
    }
    // Most called first.
    assert!(bot.find("GetMcpCapabilities</span></td>") < bot.find("PlaceOrder</span>"));
    assert!(bot.find("PlaceOrder</span> <span") < bot.find("GetJournal</span></td>"));
    assert!(bot.contains(r#"<li class="trade-count"><strong>2</strong> trade</li>"#));
    assert!(bot.contains("<strong>2</strong> errors</li>"));
    assert_eq!(
        last_calls(bot),
        [
            ("PlaceOrder", "Tool error"),
            ("PlaceOrder", "Add-On unavailable"),
            ("GetJournal", "Answered"),
            ("GetMcpCapabilities", "Answered"),
            ("GetMcpCapabilities", "Answered"),
        ]
        .map(|(tool, outcome)| (tool.to_owned(), outcome.to_owned()))
    );
    // The chart: drawn on the server, named with its numbers, today's bar split by trade.
    assert!(
        bot.contains(r#"<svg class="chart" viewBox="0 0 308 100" role="img" aria-label="Calls per day, last 7 days: "#),
        "{bot}"
    );
    assert!(bot.contains("(today): 6 (2 trade)\">"), "{bot}");
    assert_eq!(bot.matches(r#"<text class="count""#).count(), 7);
    assert!(bot.contains(r#"<rect class="bar-trade""#) && bot.contains(r#"<rect class="bar""#));

    // The other grant's calls stay under their own client.
    let assistant = client_card(&html, "Research Assistant");
    assert!(assistant.contains(&tool_row("GetMcpCapabilities", false, 2, 0)));
    assert!(assistant.contains(&tool_row("PlaceOrder", true, 1, 1)));
    assert_eq!(
        last_calls(assistant)[0],
        ("PlaceOrder".to_owned(), "Refused".to_owned())
    );
    assert!(assistant.contains("(today): 3 (1 trade)\">"), "{assistant}");
    assert!(!assistant.contains("GetJournal") && !bot.contains("Refused"));
    assert!(!bot.contains(&tool_row("GetMcpCapabilities", false, 2, 0)));
    assert!(server.terminate().success());
}

#[tokio::test]
async fn calls_of_the_last_second_are_written_at_shutdown() {
    let (db, server, endpoint) = server_with_user(EMAIL).await;
    let mut flow = Flow::new(&endpoint, EMAIL).await;
    let access = access_token(&mut flow, &endpoint, "mcp:read").await;
    let pid = server.pid();
    let mut server = server;
    // Calls one after another until the server stops answering; SIGTERM arrives in between
    // the writer's ticks, so the last calls are only written by the final write.
    let caller = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            let mut answered = 0_i64;
            let started = std::time::Instant::now();
            let mut signalled = false;
            loop {
                if !signalled && started.elapsed() > Duration::from_millis(1500) {
                    support::signal(pid, "TERM");
                    signalled = true;
                }
                match support::try_tools_call(&endpoint, &access, "GetMcpCapabilities", json!({}))
                    .await
                {
                    Ok(response) if response.status() == 200 => answered += 1,
                    _ if signalled => return answered,
                    Ok(response) => panic!("refused before shutdown: {}", response.status()),
                    Err(err) => panic!("failed before shutdown: {err}"),
                }
            }
        }
    });
    let answered = caller.await.unwrap();
    assert!(answered > 0);
    let status = server.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(status.success());
    let pool = db.pool().await;
    let recorded: Value =
        sqlx::query_scalar("SELECT to_jsonb(coalesce(sum(calls), 0)::bigint) FROM grant_tool_days")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        recorded,
        json!(answered),
        "every answered call is recorded, the last second's included"
    );
}
