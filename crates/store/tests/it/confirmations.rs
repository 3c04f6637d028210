//! Trade confirmations: the policy, each transition as one statement that only the right
//! caller wins once, the deadline checked by every statement, the state-change notification,
//! and the clients' declared capabilities.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use store::confirmations::{
    self as confirmations, Answered, ClientCapabilities, ListFilter, NewConfirmation, Purged,
};
use store::users::{self, Email, Tier};
use uuid::Uuid;
use vocabulary::confirm::{Channel, ConfirmationState, DecidedVia, Decision, Mode, Policy, Reason};

const TTL: Duration = Duration::from_secs(300);

async fn user(db: &PgPool, email: &str) -> Uuid {
    users::insert(db, &Email::parse(email).unwrap(), "x", Tier::Pro)
        .await
        .unwrap()
        .id
}

fn order(key: Option<&str>) -> Value {
    let mut arguments = json!({
        "account": "Sim101", "instrument": "ES 03-26", "action": "Buy",
        "order_type": "Limit", "quantity": 1, "limit_price": 5000.25
    });
    if let Some(key) = key {
        arguments["idempotency_key"] = json!(key);
    }
    arguments
}

fn held(user_id: Uuid, grant_id: Uuid, channel: Channel) -> NewConfirmation {
    NewConfirmation {
        confirmation_id: Uuid::new_v4(),
        user_id,
        grant_id,
        client_id: "https://client.example/meta.json".to_owned(),
        tool: "PlaceOrder".to_owned(),
        arguments: order(None),
        idempotency_key: None,
        preview: json!({"summary": "Buy 1 ES 03-26 limit 5000.25", "notional": 250_012.5}),
        reason: Reason::PolicyEvery,
        channel,
        revision: "2025-11-25".to_owned(),
        elicitation_id: None,
        state_hash: None,
        ttl: TTL,
        max_open: 20,
    }
}

async fn insert(db: &PgPool, new: &NewConfirmation) -> Uuid {
    confirmations::insert(db, new)
        .await
        .unwrap()
        .expect("under the cap")
        .confirmation_id
}

/// Moves a row's deadline into the past, as time passing would.
async fn expire(db: &PgPool, id: Uuid) {
    sqlx::query("UPDATE trade_confirmations SET expires_at = now() - interval '1 second' WHERE confirmation_id = $1")
        .bind(id)
        .execute(db)
        .await
        .unwrap();
}

async fn stored_state(db: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM trade_confirmations WHERE confirmation_id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn state(db: &PgPool, id: Uuid, user_id: Uuid) -> ConfirmationState {
    confirmations::find(db, id, user_id)
        .await
        .unwrap()
        .expect("the user's row")
        .state
}

#[tokio::test]
async fn the_policy_defaults_to_every_is_upserted_and_checked() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let trader = user(&db, "trader@example.com").await;

    assert_eq!(
        confirmations::policy(&db, trader).await.unwrap(),
        Policy::default()
    );
    assert_eq!(Policy::default().mode, Mode::Every);

    let above = Policy::new(Mode::Above, Some(2), Some(10_000.0), true, true).unwrap();
    confirmations::set_policy(&db, trader, &above)
        .await
        .unwrap();
    assert_eq!(confirmations::policy(&db, trader).await.unwrap(), above);
    let never = Policy::new(Mode::Never, None, None, false, false).unwrap();
    confirmations::set_policy(&db, trader, &never)
        .await
        .unwrap();
    assert_eq!(confirmations::policy(&db, trader).await.unwrap(), never);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM trade_confirmation_policies")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 1);

    // A policy that does not validate never reaches the table...
    let invalid = Policy {
        mode: Mode::Above,
        ..Policy::default()
    };
    assert!(matches!(
        confirmations::set_policy(&db, trader, &invalid).await,
        Err(sqlx::Error::Encode(_))
    ));
    assert_eq!(confirmations::policy(&db, trader).await.unwrap(), never);

    // ... and the table refuses one written around the store.
    for (mode, max_quantity, max_notional) in [
        ("above", None, None),
        ("sometimes", None, None),
        ("every", Some(0), None),
        ("every", Some(10_001), None),
        ("above", None, Some(0.0)),
        ("above", None, Some(-5.0)),
    ] {
        let refused = sqlx::query(
            "UPDATE trade_confirmation_policies
             SET mode = $2, max_quantity = $3, max_notional = $4 WHERE user_id = $1",
        )
        .bind(trader)
        .bind(mode)
        .bind(max_quantity)
        .bind(max_notional)
        .execute(&db)
        .await
        .unwrap_err();
        let code = refused.as_database_error().unwrap().code().unwrap();
        assert_eq!(code, "23514", "{mode} {max_quantity:?} {max_notional:?}");
    }
    assert_eq!(confirmations::policy(&db, trader).await.unwrap(), never);

    // Deleting the account deletes its policy.
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(trader)
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        confirmations::policy(&db, trader).await.unwrap(),
        Policy::default()
    );
}

#[tokio::test]
async fn a_row_records_the_call_and_the_open_rows_are_capped() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let trader = user(&db, "trader@example.com").await;
    let other = user(&db, "other@example.com").await;
    let grant = Uuid::new_v4();

    let mut new = held(trader, grant, Channel::Link);
    new.max_open = 3;
    new.idempotency_key = Some("k-1".to_owned());
    new.arguments = order(Some("k-1"));
    let row = confirmations::insert(&db, &new).await.unwrap().unwrap();
    assert_eq!(row.state, ConfirmationState::Pending);
    assert_eq!(row.arguments, new.arguments);
    assert_eq!(row.reason, Reason::PolicyEvery);
    assert_eq!(row.channel, Channel::Link);
    assert_eq!(
        row.args_hash,
        confirmations::args_hash("PlaceOrder", &order(Some("k-1")))
    );
    let ttl = row.expires_at - row.created_at;
    assert!((299..=301).contains(&ttl.num_seconds()), "{ttl}");
    assert_eq!(
        confirmations::find(&db, row.confirmation_id, trader)
            .await
            .unwrap(),
        Some(row.clone())
    );
    // Another user's id reads as absent.
    assert_eq!(
        confirmations::find(&db, row.confirmation_id, other)
            .await
            .unwrap(),
        None
    );

    let second = insert(&db, &held(trader, grant, Channel::Link)).await;
    let third = insert(&db, &held(trader, grant, Channel::Link)).await;
    let mut fourth = held(trader, grant, Channel::Link);
    fourth.max_open = 3;
    assert_eq!(confirmations::insert(&db, &fourth).await.unwrap(), None);
    // Another user has a cap of their own.
    let mut others = held(other, Uuid::new_v4(), Channel::Link);
    others.max_open = 3;
    assert!(confirmations::insert(&db, &others).await.unwrap().is_some());

    // Closed and expired rows do not count.
    assert_eq!(
        confirmations::decide_on_page(&db, second, trader, false, None)
            .await
            .unwrap(),
        Some(ConfirmationState::Rejected)
    );
    expire(&db, third).await;
    assert_eq!(state(&db, third, trader).await, ConfirmationState::Expired);
    let fifth = confirmations::insert(&db, &fourth).await.unwrap();
    assert!(fifth.is_some());
    let mut sixth = held(trader, grant, Channel::Link);
    sixth.max_open = 3;
    assert!(confirmations::insert(&db, &sixth).await.unwrap().is_some());
    let mut seventh = held(trader, grant, Channel::Link);
    seventh.max_open = 3;
    assert_eq!(confirmations::insert(&db, &seventh).await.unwrap(), None);

    // The list is newest first, filtered by effective state and grant.
    let all = confirmations::list(&db, trader, ListFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    let expired = ListFilter {
        state: Some(ConfirmationState::Expired),
        ..ListFilter::default()
    };
    let listed = confirmations::list(&db, trader, expired, 100)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|c| c.confirmation_id).collect::<Vec<_>>(),
        [third]
    );
    let pending = ListFilter {
        state: Some(ConfirmationState::Pending),
        ..ListFilter::default()
    };
    assert_eq!(
        confirmations::list(&db, trader, pending, 100)
            .await
            .unwrap()
            .len(),
        3
    );
    let elsewhere = ListFilter {
        grant_id: Some(Uuid::new_v4()),
        ..ListFilter::default()
    };
    assert!(
        confirmations::list(&db, trader, elsewhere, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        confirmations::list(&db, trader, ListFilter::default(), 2)
            .await
            .unwrap()
            .len(),
        2
    );
    let serialized = serde_json::to_value(&all[0]).unwrap();
    assert!(serialized.get("args_hash").is_none());
    assert_eq!(serialized["state"], json!("pending"));

    // The table's CHECKs hold the vocabulary.
    for (column, value) in [
        ("channel", "email"),
        ("reason", "because"),
        ("state", "maybe"),
        ("decided_via", "fax"),
        ("decision", "perhaps"),
    ] {
        let refused = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE trade_confirmations SET {column} = $2 WHERE confirmation_id = $1"
        )))
        .bind(row.confirmation_id)
        .bind(value)
        .execute(&db)
        .await
        .unwrap_err();
        assert_eq!(
            refused.as_database_error().unwrap().code().unwrap(),
            "23514",
            "{column}"
        );
    }
}

#[tokio::test]
async fn an_idempotency_key_finds_the_open_row_then_the_used_one() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let trader = user(&db, "trader@example.com").await;
    let other = user(&db, "other@example.com").await;
    let grant = Uuid::new_v4();
    let keyed = |key: &str| {
        let mut new = held(trader, grant, Channel::Link);
        new.idempotency_key = Some(key.to_owned());
        new.arguments = order(Some(key));
        new
    };

    assert_eq!(
        confirmations::open_by_key(&db, trader, "k").await.unwrap(),
        None
    );
    let first = insert(&db, &keyed("k")).await;
    let found = confirmations::open_by_key(&db, trader, "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.confirmation_id, first);
    assert_eq!(
        confirmations::open_by_key(&db, other, "k").await.unwrap(),
        None
    );

    // Abandoned, a newer open row answers; once one is used, the used one answers first.
    assert!(confirmations::abandon(&db, first).await.unwrap());
    assert!(!confirmations::abandon(&db, first).await.unwrap());
    assert_eq!(
        confirmations::open_by_key(&db, trader, "k").await.unwrap(),
        None
    );
    let second = insert(&db, &keyed("k")).await;
    confirmations::decide_on_page(&db, second, trader, true, Some("192.0.2.1"))
        .await
        .unwrap();
    confirmations::claim(&db, second, trader, grant)
        .await
        .unwrap()
        .unwrap();
    let third = insert(&db, &keyed("k")).await;
    let found = confirmations::open_by_key(&db, trader, "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.confirmation_id, found.state),
        (second, ConfirmationState::Used)
    );
    // An expired open row is not found.
    expire(&db, third).await;
    let _ = insert(&db, &keyed("other-key")).await;
    let id = confirmations::open_by_key(&db, trader, "other-key")
        .await
        .unwrap()
        .unwrap()
        .confirmation_id;
    expire(&db, id).await;
    assert_eq!(
        confirmations::open_by_key(&db, trader, "other-key")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn an_elicitation_answer_counts_once_from_the_grant_that_was_asked() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let trader = user(&db, "trader@example.com").await;
    let other = user(&db, "other@example.com").await;
    let grant = Uuid::new_v4();
    let asked = |elicitation_id: &str, channel: Channel| {
        let mut new = held(trader, grant, channel);
        new.elicitation_id = Some(elicitation_id.to_owned());
        new
    };

    let accepted = insert(&db, &asked("e-1", Channel::ElicitationForm)).await;
    // Another user, another grant, an unknown id: nothing.
    for (id, user_id, grant_id) in [
        ("e-1", other, grant),
        ("e-1", trader, Uuid::new_v4()),
        ("e-9", trader, grant),
    ] {
        assert_eq!(
            confirmations::answer_elicitation(&db, id, user_id, grant_id, true, Decision::Accept)
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        state(&db, accepted, trader).await,
        ConfirmationState::Pending
    );
    assert_eq!(
        confirmations::answer_elicitation(&db, "e-1", trader, grant, true, Decision::Accept)
            .await
            .unwrap(),
        Some(accepted)
    );
    // A second answer, either way, changes nothing.
    for accept in [true, false] {
        assert_eq!(
            confirmations::answer_elicitation(&db, "e-1", trader, grant, accept, Decision::Decline)
                .await
                .unwrap(),
            None
        );
    }
    let row = confirmations::find(&db, accepted, trader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, ConfirmationState::Approved);
    assert_eq!(row.decision, Some(Decision::Accept));
    assert_eq!(row.decided_via, Some(DecidedVia::Elicitation));
    assert!(row.decided_at.is_some());

    let declined = insert(&db, &asked("e-2", Channel::ElicitationForm)).await;
    assert_eq!(
        confirmations::answer_elicitation(&db, "e-2", trader, grant, false, Decision::Cancel)
            .await
            .unwrap(),
        Some(declined)
    );
    let row = confirmations::find(&db, declined, trader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.state, row.decision),
        (ConfirmationState::Rejected, Some(Decision::Cancel))
    );

    // Too late.
    let late = insert(&db, &asked("e-3", Channel::ElicitationForm)).await;
    expire(&db, late).await;
    assert_eq!(
        confirmations::answer_elicitation(&db, "e-3", trader, grant, true, Decision::Accept)
            .await
            .unwrap(),
        None
    );
    assert_eq!(state(&db, late, trader).await, ConfirmationState::Expired);

    // A URL-mode answer only says the page was offered: it can reject, never approve.
    let url = insert(&db, &asked("e-4", Channel::ElicitationUrl)).await;
    assert_eq!(
        confirmations::answer_elicitation(&db, "e-4", trader, grant, true, Decision::Accept)
            .await
            .unwrap(),
        None
    );
    assert_eq!(state(&db, url, trader).await, ConfirmationState::Pending);
    assert_eq!(
        confirmations::answer_elicitation(&db, "e-4", trader, grant, false, Decision::Decline)
            .await
            .unwrap(),
        Some(url)
    );

    // A link row has no elicitation to answer; the ids are unique.
    let mut duplicate = asked("e-1", Channel::ElicitationForm);
    duplicate.confirmation_id = Uuid::new_v4();
    let refused = confirmations::insert(&db, &duplicate).await.unwrap_err();
    assert!(refused.as_database_error().unwrap().is_unique_violation());
}

#[tokio::test]
async fn the_page_decides_only_its_own_pending_rows() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let trader = user(&db, "trader@example.com").await;
    let other = user(&db, "other@example.com").await;
    let grant = Uuid::new_v4();

    let link = insert(&db, &held(trader, grant, Channel::Link)).await;
    assert_eq!(
        confirmations::decide_on_page(&db, link, other, true, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        confirmations::decide_on_page(&db, Uuid::new_v4(), trader, true, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        confirmations::decide_on_page(&db, link, trader, true, Some("192.0.2.7"))
            .await
            .unwrap(),
        Some(ConfirmationState::Approved)
    );
    let row = confirmations::find(&db, link, trader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.decision, Some(Decision::Approve));
    assert_eq!(row.decided_via, Some(DecidedVia::Page));
    assert_eq!(row.decided_ip.as_deref(), Some("192.0.2.7"));
    // Decided once: a second click either way changes nothing.
    for approve in [false, true] {
        assert_eq!(
            confirmations::decide_on_page(&db, link, trader, approve, None)
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(state(&db, link, trader).await, ConfirmationState::Approved);

    let url = insert(&db, &held(trader, grant, Channel::ElicitationUrl)).await;
    assert_eq!(
        confirmations::decide_on_page(&db, url, trader, false, None)
            .await
            .unwrap(),
        Some(ConfirmationState::Rejected)
    );

    // A form elicitation is answered inside the client, never on the page.
    let form = insert(&db, &held(trader, grant, Channel::ElicitationForm)).await;
    assert_eq!(
        confirmations::decide_on_page(&db, form, trader, true, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(state(&db, form, trader).await, ConfirmationState::Pending);

    let late = insert(&db, &held(trader, grant, Channel::Link)).await;
    expire(&db, late).await;
    assert_eq!(
        confirmations::decide_on_page(&db, late, trader, true, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(state(&db, late, trader).await, ConfirmationState::Expired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_row_is_claimed_once_by_its_grant_and_released_only_without_an_outcome() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let trader = user(&db, "trader@example.com").await;
    let grant = Uuid::new_v4();

    let id = insert(&db, &held(trader, grant, Channel::Link)).await;
    // Pending: nothing to claim.
    assert_eq!(
        confirmations::claim(&db, id, trader, grant).await.unwrap(),
        None
    );
    confirmations::decide_on_page(&db, id, trader, true, None)
        .await
        .unwrap();
    // Another grant of the same user cannot use it.
    assert_eq!(
        confirmations::claim(&db, id, trader, Uuid::new_v4())
            .await
            .unwrap(),
        None
    );

    // Two claims race (as on two replicas): exactly one wins.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { confirmations::claim(&db, id, trader, grant).await })
        })
        .collect();
    let mut won = Vec::new();
    for racer in racers {
        if let Some(claimed) = racer.await.unwrap().unwrap() {
            won.push(claimed);
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(won[0].confirmation_id, id);
    assert_eq!(won[0].tool, "PlaceOrder");
    assert_eq!(won[0].arguments, order(None));
    assert_eq!(won[0].channel, Channel::Link);
    assert_eq!(
        confirmations::claim(&db, id, trader, grant).await.unwrap(),
        None
    );
    let row = confirmations::find(&db, id, trader).await.unwrap().unwrap();
    assert_eq!(row.state, ConfirmationState::Used);
    assert!(row.used_at.is_some());

    // The Add-On was not connected: the claim is given back and can be taken again.
    assert!(confirmations::release(&db, id).await.unwrap());
    assert!(!confirmations::release(&db, id).await.unwrap());
    let row = confirmations::find(&db, id, trader).await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.used_at),
        (ConfirmationState::Approved, None)
    );
    assert!(
        confirmations::claim(&db, id, trader, grant)
            .await
            .unwrap()
            .is_some()
    );

    // Once the outcome is recorded, the claim stays.
    let outcome = json!({"order_id": "42", "state": "filled"});
    assert!(
        confirmations::finish(&db, id, "ok", &outcome)
            .await
            .unwrap()
    );
    assert!(
        !confirmations::finish(&db, id, "tool_error", &json!({}))
            .await
            .unwrap()
    );
    assert!(!confirmations::release(&db, id).await.unwrap());
    let row = confirmations::find(&db, id, trader).await.unwrap().unwrap();
    assert_eq!(row.state, ConfirmationState::Used);
    assert_eq!(row.outcome_code.as_deref(), Some("ok"));
    assert_eq!(row.outcome, Some(outcome));
    assert!(row.finished_at.is_some());

    // An approved row past its deadline cannot be claimed.
    let late = insert(&db, &held(trader, grant, Channel::Link)).await;
    confirmations::decide_on_page(&db, late, trader, true, None)
        .await
        .unwrap();
    expire(&db, late).await;
    assert_eq!(
        confirmations::claim(&db, late, trader, grant)
            .await
            .unwrap(),
        None
    );
    // Nothing is finished or released that was never claimed.
    assert!(
        !confirmations::finish(&db, late, "ok", &json!({}))
            .await
            .unwrap()
    );
    assert!(!confirmations::release(&db, late).await.unwrap());
}

#[tokio::test]
async fn an_input_required_answer_claims_only_with_the_state_the_args_and_the_grant() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let trader = user(&db, "trader@example.com").await;
    let other = user(&db, "other@example.com").await;
    let grant = Uuid::new_v4();
    let secret = confirmations::state_hash(b"request-state-secret");
    let args = confirmations::args_hash("PlaceOrder", &order(None));
    let asked = || {
        let mut new = held(trader, grant, Channel::ElicitationForm);
        new.revision = "2026-07-28".to_owned();
        new.state_hash = Some(secret);
        new
    };

    let id = insert(&db, &asked()).await;
    let wrong_state = confirmations::state_hash(b"another secret");
    let mut changed = order(None);
    changed["quantity"] = json!(5);
    let wrong_args = confirmations::args_hash("PlaceOrder", &changed);
    let other_tool = confirmations::args_hash("ReversePosition", &order(None));
    for (user_id, grant_id, state_hash, args_hash) in [
        (trader, grant, &wrong_state, &args),
        (trader, grant, &secret, &wrong_args),
        (trader, grant, &secret, &other_tool),
        (trader, Uuid::new_v4(), &secret, &args),
        (other, grant, &secret, &args),
    ] {
        assert_eq!(
            confirmations::claim_answered(
                &db,
                id,
                user_id,
                grant_id,
                state_hash,
                args_hash,
                true,
                Decision::Accept
            )
            .await
            .unwrap(),
            None
        );
    }
    assert_eq!(state(&db, id, trader).await, ConfirmationState::Pending);

    // The key order of the arguments does not change their hash.
    let reordered: Value = serde_json::from_str(
        r#"{"limit_price": 5000.25, "quantity": 1, "order_type": "Limit", "action": "Buy",
            "instrument": "ES 03-26", "account": "Sim101"}"#,
    )
    .unwrap();
    let same = confirmations::args_hash("PlaceOrder", &reordered);
    let answered = confirmations::claim_answered(
        &db,
        id,
        trader,
        grant,
        &secret,
        &same,
        true,
        Decision::Accept,
    )
    .await
    .unwrap();
    let Some(Answered::Claimed(claimed)) = answered else {
        panic!("not claimed: {answered:?}");
    };
    assert_eq!(claimed.arguments, order(None));
    let row = confirmations::find(&db, id, trader).await.unwrap().unwrap();
    assert_eq!(row.state, ConfirmationState::Used);
    assert_eq!(row.decision, Some(Decision::Accept));
    assert!(row.used_at.is_some());
    // A replayed requestState claims nothing.
    assert_eq!(
        confirmations::claim_answered(
            &db,
            id,
            trader,
            grant,
            &secret,
            &args,
            true,
            Decision::Accept
        )
        .await
        .unwrap(),
        None
    );

    let declined = insert(&db, &asked()).await;
    assert_eq!(
        confirmations::claim_answered(
            &db,
            declined,
            trader,
            grant,
            &secret,
            &args,
            false,
            Decision::Decline
        )
        .await
        .unwrap(),
        Some(Answered::Rejected)
    );
    let row = confirmations::find(&db, declined, trader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.state, row.used_at),
        (ConfirmationState::Rejected, None)
    );

    let late = insert(&db, &asked()).await;
    expire(&db, late).await;
    assert_eq!(
        confirmations::claim_answered(
            &db,
            late,
            trader,
            grant,
            &secret,
            &args,
            true,
            Decision::Accept
        )
        .await
        .unwrap(),
        None
    );

    // Without a stored requestState there is nothing to present.
    let stateless = insert(&db, &held(trader, grant, Channel::ElicitationForm)).await;
    assert_eq!(
        confirmations::claim_answered(
            &db,
            stateless,
            trader,
            grant,
            &secret,
            &args,
            true,
            Decision::Accept
        )
        .await
        .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_state_change_is_notified_on_the_channel() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let trader = user(&db, "trader@example.com").await;
    let grant = Uuid::new_v4();
    let mut listener = PgListener::connect_with(&db).await.unwrap();
    listener.listen(confirmations::CHANNEL).await.unwrap();
    let next = async |listener: &mut PgListener| {
        tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("a notification within the patience")
            .unwrap()
    };

    let id = insert(&db, &held(trader, grant, Channel::Link)).await;
    let other = insert(&db, &held(trader, grant, Channel::Link)).await;
    // The insert and a finish (no state change) notify nothing; a decision does.
    confirmations::decide_on_page(&db, id, trader, true, None)
        .await
        .unwrap();
    let notice = next(&mut listener).await;
    assert_eq!(notice.channel(), "trade_confirmation");
    assert_eq!(notice.payload(), id.to_string());
    confirmations::claim(&db, id, trader, grant)
        .await
        .unwrap()
        .unwrap();
    confirmations::finish(&db, id, "ok", &json!({}))
        .await
        .unwrap();
    confirmations::abandon(&db, other).await.unwrap();
    assert_eq!(next(&mut listener).await.payload(), id.to_string());
    assert_eq!(next(&mut listener).await.payload(), other.to_string());
}

#[tokio::test]
async fn the_reaper_expires_open_rows_and_purges_old_ones() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let trader = user(&db, "trader@example.com").await;
    let grant = Uuid::new_v4();

    let open = insert(&db, &held(trader, grant, Channel::Link)).await;
    let pending_late = insert(&db, &held(trader, grant, Channel::Link)).await;
    let approved_late = insert(&db, &held(trader, grant, Channel::Link)).await;
    confirmations::decide_on_page(&db, approved_late, trader, true, None)
        .await
        .unwrap();
    let old = insert(&db, &held(trader, grant, Channel::Link)).await;
    confirmations::decide_on_page(&db, old, trader, false, None)
        .await
        .unwrap();
    let old_open = insert(&db, &held(trader, grant, Channel::Link)).await;
    for id in [pending_late, approved_late] {
        expire(&db, id).await;
    }
    sqlx::query(
        "UPDATE trade_confirmations SET created_at = now() - interval '91 days',
             expires_at = now() - interval '91 days' + interval '5 minutes'
         WHERE confirmation_id = ANY($1)",
    )
    .bind(vec![old, old_open])
    .execute(&db)
    .await
    .unwrap();
    confirmations::record_capabilities(&db, grant, trader, "2025-11-25", true, false, &json!({}))
        .await
        .unwrap();
    let stale = Uuid::new_v4();
    confirmations::record_capabilities(&db, stale, trader, "2025-06-18", true, false, &json!({}))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE mcp_client_capabilities SET updated_at = now() - interval '31 days'
         WHERE grant_id = $1",
    )
    .bind(stale)
    .execute(&db)
    .await
    .unwrap();

    let purged = confirmations::expire_and_purge(&db).await.unwrap();
    assert_eq!(
        purged,
        Purged {
            expired: 3,
            confirmations: 1,
            capabilities: 1,
        }
    );
    assert_eq!(stored_state(&db, open).await, "pending");
    for id in [pending_late, approved_late, old_open] {
        assert_eq!(stored_state(&db, id).await, "expired");
    }
    let row = confirmations::find(&db, pending_late, trader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.decided_via, Some(DecidedVia::Expiry));
    // An approval stays on record as what the person decided.
    let row = confirmations::find(&db, approved_late, trader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.decided_via, row.decision),
        (Some(DecidedVia::Page), Some(Decision::Approve))
    );
    assert_eq!(confirmations::find(&db, old, trader).await.unwrap(), None);
    assert!(
        confirmations::capabilities(&db, grant)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(confirmations::capabilities(&db, stale).await.unwrap(), None);

    // The old row expired in this pass goes in the next one.
    let purged = confirmations::expire_and_purge(&db).await.unwrap();
    assert_eq!(
        purged,
        Purged {
            expired: 0,
            confirmations: 1,
            capabilities: 0,
        }
    );
}

#[tokio::test]
async fn capabilities_are_remembered_per_grant_and_the_last_initialize_wins() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let trader = user(&db, "trader@example.com").await;
    let other = user(&db, "other@example.com").await;
    let grant = Uuid::new_v4();

    assert_eq!(confirmations::capabilities(&db, grant).await.unwrap(), None);
    let info = json!({"name": "example-client", "version": "1.0"});
    confirmations::record_capabilities(&db, grant, trader, "2025-11-25", true, true, &info)
        .await
        .unwrap();
    assert_eq!(
        confirmations::capabilities(&db, grant).await.unwrap(),
        Some(ClientCapabilities {
            revision: "2025-11-25".to_owned(),
            elicitation_form: true,
            elicitation_url: true,
        })
    );
    confirmations::record_capabilities(&db, grant, trader, "2025-06-18", false, false, &json!({}))
        .await
        .unwrap();
    assert_eq!(
        confirmations::capabilities(&db, grant).await.unwrap(),
        Some(ClientCapabilities {
            revision: "2025-06-18".to_owned(),
            elicitation_form: false,
            elicitation_url: false,
        })
    );
    // The same grant id under another user changes nothing.
    confirmations::record_capabilities(&db, grant, other, "2025-11-25", true, true, &info)
        .await
        .unwrap();
    assert_eq!(
        confirmations::capabilities(&db, grant)
            .await
            .unwrap()
            .map(|c| c.elicitation_form),
        Some(false)
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM mcp_client_capabilities")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 1);
}
