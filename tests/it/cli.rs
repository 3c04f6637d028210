//! The operator's verbs against a real database.

use crate::support::{run, stderr, stdout};

#[tokio::test]
async fn users_add_set_tier_list_round_trip() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let env = [("DATABASE_URL", url.as_str())];

    let added = run(
        &env,
        &[
            "users",
            "add",
            "--email",
            "Trader@Example.com",
            "--tier",
            "pro",
            "--password-stdin",
        ],
        "correct horse battery staple\n",
    );
    assert!(added.status.success(), "{}", stderr(&added));
    assert!(
        stdout(&added)
            .trim_end()
            .ends_with("Trader@Example.com\tpro"),
        "{}",
        stdout(&added)
    );

    let changed = run(
        &env,
        &[
            "users",
            "set-tier",
            "--email",
            "trader@example.com",
            "--tier",
            "elite",
        ],
        "",
    );
    assert!(changed.status.success(), "{}", stderr(&changed));

    let listed = run(&env, &["users", "list"], "");
    assert!(listed.status.success(), "{}", stderr(&listed));
    let lines: Vec<String> = stdout(&listed).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "id\temail\ttier\tcreated_at");
    let fields: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(&fields[1..3], ["Trader@Example.com", "elite"]);

    // The stored password is an argon2id hash, never the password itself.
    let pool = db.pool().await;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("correct horse"));
    assert!(store::password::verify(
        "correct horse battery staple",
        &hash
    ));
}

#[tokio::test]
async fn duplicate_email_and_bad_input_are_clear_errors() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let env = [("DATABASE_URL", url.as_str())];
    let add = |email: &str, tier: &str, password: &str| {
        run(
            &env,
            &[
                "users",
                "add",
                "--email",
                email,
                "--tier",
                tier,
                "--password-stdin",
            ],
            password,
        )
    };

    assert!(
        add("dup@example.com", "standard", "a long enough password\n")
            .status
            .success()
    );
    let duplicate = add("DUP@example.com", "elite", "a long enough password\n");
    assert_eq!(duplicate.status.code(), Some(1));
    assert_eq!(
        stderr(&duplicate).trim(),
        "error: a user with email DUP@example.com already exists"
    );

    let short = add("short@example.com", "pro", "short\n");
    assert!(!short.status.success());
    assert!(
        stderr(&short).contains("at least 10 characters"),
        "{}",
        stderr(&short)
    );

    let bad_tier = add("x@example.com", "gold", "a long enough password\n");
    assert!(!bad_tier.status.success());
    assert!(
        stderr(&bad_tier).contains("unknown tier \"gold\""),
        "{}",
        stderr(&bad_tier)
    );

    let bad_email = add("not-an-email", "pro", "a long enough password\n");
    assert!(!bad_email.status.success());
    assert!(
        stderr(&bad_email).contains("invalid email address"),
        "{}",
        stderr(&bad_email)
    );

    let missing = run(
        &env,
        &[
            "users",
            "set-tier",
            "--email",
            "nobody@example.com",
            "--tier",
            "pro",
        ],
        "",
    );
    assert!(!missing.status.success());
    assert_eq!(
        stderr(&missing).trim(),
        "error: no user with email nobody@example.com"
    );

    let listed = run(&env, &["users", "list"], "");
    assert_eq!(
        stdout(&listed).lines().count(),
        2,
        "only the first account exists"
    );
}

#[tokio::test]
async fn migrations_apply_once_then_are_a_no_op() {
    let db = testkit::TestDb::new().await;
    // A database with no migrations at all.
    let pool = db.pool().await;
    sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .execute(&pool)
        .await
        .unwrap();
    let url = db.url();
    let env = [("DATABASE_URL", url.as_str())];

    let first = run(&env, &["migrate"], "");
    assert!(first.status.success(), "{}", stderr(&first));
    let expected = store::MIGRATOR.iter().count();
    assert_eq!(
        stdout(&first).trim(),
        format!("migrations applied: {expected}")
    );

    let second = run(&env, &["migrate"], "");
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(stdout(&second).trim(), "migrations applied: 0");

    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 0);
}

#[test]
fn an_invalid_configuration_value_names_its_key() {
    let output = run(
        &[("CROSSTRADE_DATABASE__MAX_CONNECTIONS", "many")],
        &["migrate"],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("key `database.max_connections`"),
        "{message}"
    );
    assert!(
        message.contains("CROSSTRADE_DATABASE__MAX_CONNECTIONS"),
        "{message}"
    );
}

#[tokio::test]
async fn addon_keys_create_prints_only_the_key_and_revoke_needs_the_owner() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let env = [("DATABASE_URL", url.as_str())];
    let added = run(
        &env,
        &[
            "users",
            "add",
            "--email",
            "nt8@example.com",
            "--tier",
            "elite",
            "--password-stdin",
        ],
        "a long enough password\n",
    );
    assert!(added.status.success(), "{}", stderr(&added));
    run(
        &env,
        &[
            "users",
            "add",
            "--email",
            "other@example.com",
            "--tier",
            "elite",
            "--password-stdin",
        ],
        "a long enough password\n",
    );

    let created = run(
        &env,
        &["addon-keys", "create", "--email", "nt8@example.com"],
        "",
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let out = stdout(&created);
    let key = out.trim();
    assert_eq!(out.lines().count(), 1, "only the key: {out}");
    assert!(key.starts_with("ctak_") && key.len() > 40, "{key}");
    assert!(!stderr(&created).contains(key), "the key is never logged");

    let pool = db.pool().await;
    let id: uuid::Uuid = sqlx::query_scalar("SELECT key_id FROM addon_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    let id = id.to_string();
    let foreign = run(
        &env,
        &[
            "addon-keys",
            "revoke",
            "--email",
            "other@example.com",
            "--id",
            &id,
        ],
        "",
    );
    assert!(!foreign.status.success());
    assert!(
        stderr(&foreign).contains("has no live Add-On key"),
        "{}",
        stderr(&foreign)
    );
    let revoked = run(
        &env,
        &[
            "addon-keys",
            "revoke",
            "--email",
            "nt8@example.com",
            "--id",
            &id,
        ],
        "",
    );
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert_eq!(stdout(&revoked).trim(), format!("revoked {id}"));
    let unknown = run(
        &env,
        &["addon-keys", "create", "--email", "nobody@example.com"],
        "",
    );
    assert_eq!(
        stderr(&unknown).trim(),
        "error: no user with email nobody@example.com"
    );
}

#[tokio::test]
async fn users_revoke_all_ends_every_token_session_and_addon_socket_at_once() {
    let (db, server, endpoint) = crate::support::server_with_user("incident@example.com").await;
    let (flow, access) = crate::addon_path::trade_token(&endpoint, "incident@example.com").await;
    let mut flow = flow;
    let tokens = flow.tokens(&endpoint, "mcp:read", "mcp:read").await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let scripts = testkit::scratch_dir("incident-scripts");
    let options =
        crate::addon_path::sim_options(&db, server.addr, "incident@example.com", &[], &scripts);
    let sim = tokio::spawn(async move { addon_sim::run(&options).await });
    assert!(crate::addon_path::addon_connected(&endpoint, &access).await);
    let clients_url = endpoint.url("/v1/account/ai-clients");
    assert_eq!(
        flow.browser.get(&endpoint, &clients_url).await.status(),
        200
    );

    let url = db.url();
    let revoked = run(
        &[("DATABASE_URL", url.as_str())],
        &["users", "revoke-all", "--email", "incident@example.com"],
        "",
    );
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert_eq!(
        stdout(&revoked).trim(),
        "incident@example.com: ended 2 AI client grants, 1 browser sessions, 1 Add-On keys"
    );

    // The running server refuses the access token within a second: the grant was ended by
    // another process, and its notification reaches every replica.
    let mut status = 0;
    testkit::wait::eventually(std::time::Duration::from_secs(1), async || {
        status = crate::support::tools_call(
            &endpoint,
            &access,
            "GetMcpCapabilities",
            serde_json::json!({}),
        )
        .await
        .status()
        .as_u16();
        status == 401
    })
    .await;
    assert_eq!(status, 401, "still accepted a second after revoke-all");
    let refreshed = flow.refresh(&endpoint, &refresh).await;
    assert_eq!(refreshed.status(), 400);
    let body: serde_json::Value = refreshed.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        flow.browser.get(&endpoint, &clients_url).await.status(),
        401
    );
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), sim)
        .await
        .expect("the Add-On socket stayed open")
        .unwrap();
    assert!(closed.is_ok(), "{closed:?}");
    let pool = db.pool().await;
    let kind: String =
        sqlx::query_scalar("SELECT kind FROM security_events WHERE detail->>'by' = 'operator'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(kind, "revoked");
    std::fs::remove_dir_all(&scripts).ok();
}

/// The master-secret replacement procedure of SECURITY.md, step by step.
#[tokio::test]
async fn the_master_secret_can_be_replaced_as_security_md_says() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let old = [
        ("DATABASE_URL", url.as_str()),
        (
            "CROSSTRADE_MASTER_SECRET",
            "old-master-secret-0123456789abcdefghij",
        ),
    ];
    crate::support::add_elite_user(&old, "rotate@example.com");
    let server = crate::support::ServerProcess::start("serve", &old);
    let endpoint = testkit::oauth::Endpoint::new(&server.url(""));
    let mut flow = testkit::oauth::Flow::new(&endpoint, "rotate@example.com").await;
    let before = flow.tokens(&endpoint, "mcp:read", "mcp:read").await;
    assert!(server.terminate().success());

    let pool = db.pool().await;
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE grants SET revoked_at = now(), revoked_reason = 'master secret rotation' WHERE revoked_at IS NULL")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE signing_keys SET retired_at = now(), verify_until = now() WHERE retired_at IS NULL",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let new = [
        ("DATABASE_URL", url.as_str()),
        (
            "CROSSTRADE_MASTER_SECRET",
            "new-master-secret-0123456789abcdefghij",
        ),
    ];
    let server = crate::support::ServerProcess::start("serve", &new);
    let endpoint = testkit::oauth::Endpoint::new(&server.url(""));
    let call = |access: String| {
        let endpoint = endpoint.clone();
        async move {
            crate::support::tools_call(
                &endpoint,
                &access,
                "GetMcpCapabilities",
                serde_json::json!({}),
            )
            .await
            .status()
        }
    };
    assert_eq!(
        call(before["access_token"].as_str().unwrap().to_owned()).await,
        401
    );
    let refreshed = flow
        .refresh(&endpoint, before["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status(), 400);
    let mut flow = testkit::oauth::Flow::new(&endpoint, "rotate@example.com").await;
    let after = flow.tokens(&endpoint, "mcp:read", "mcp:read").await;
    assert_eq!(
        call(after["access_token"].as_str().unwrap().to_owned()).await,
        200
    );
    let live_keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM signing_keys WHERE retired_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(live_keys, 1);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn users_set_trade_confirmation_stores_a_valid_policy_only() {
    let db = testkit::TestDb::new().await;
    let url = db.url();
    let env = [("DATABASE_URL", url.as_str())];
    let added = run(
        &env,
        &[
            "users",
            "add",
            "--email",
            "trader@example.com",
            "--tier",
            "pro",
            "--password-stdin",
        ],
        "correct horse battery staple\n",
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let set = |args: &[&str]| {
        let mut full = vec![
            "users",
            "set-trade-confirmation",
            "--email",
            "Trader@Example.com",
        ];
        full.extend_from_slice(args);
        run(&env, &full, "")
    };
    let pool = db.pool().await;
    let user = store::users::find_by_email(
        &pool,
        &store::users::Email::parse("trader@example.com").unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    let policy = async || store::confirmations::policy(&pool, user.id).await.unwrap();
    assert_eq!(policy().await, vocabulary::confirm::Policy::default());

    let above = set(&[
        "--mode",
        "above",
        "--max-quantity",
        "2",
        "--max-notional",
        "25000.5",
        "--confirm-cancels",
        "--page-only",
    ]);
    assert!(above.status.success(), "{}", stderr(&above));
    assert_eq!(
        stdout(&above).trim_end(),
        "trader@example.com\tabove\tmax_quantity=2\tmax_notional=25000.5\tconfirm_cancels=true\tpage_only=true"
    );
    let expected =
        vocabulary::confirm::Policy::parse("above", Some(2), Some(25_000.5), true, true).unwrap();
    assert_eq!(policy().await, expected);

    let never = set(&["--mode", "never"]);
    assert!(never.status.success(), "{}", stderr(&never));
    assert_eq!(
        stdout(&never).trim_end(),
        "trader@example.com\tnever\tmax_quantity=none\tmax_notional=none\tconfirm_cancels=false\tpage_only=false"
    );
    assert_eq!(policy().await.mode, vocabulary::confirm::Mode::Never);

    // Refused before anything is stored.
    for (args, message) in [
        (
            &["--mode", "above"][..],
            "mode above needs max_quantity or max_notional",
        ),
        (
            &["--mode", "above", "--max-quantity", "0"][..],
            "max_quantity must be between 1 and 10000",
        ),
        (
            &["--mode", "above", "--max-notional", "-1"][..],
            "max_notional must be a number above 0",
        ),
    ] {
        let refused = set(args);
        assert_eq!(refused.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&refused).trim(), format!("error: {message}"));
    }
    let bad_mode = set(&["--mode", "sometimes"]);
    assert!(!bad_mode.status.success());
    assert!(
        stderr(&bad_mode).contains("invalid value 'sometimes'"),
        "{}",
        stderr(&bad_mode)
    );
    assert_eq!(policy().await.mode, vocabulary::confirm::Mode::Never);

    let missing = run(
        &env,
        &[
            "users",
            "set-trade-confirmation",
            "--email",
            "nobody@example.com",
            "--mode",
            "every",
        ],
        "",
    );
    assert!(!missing.status.success());
    assert_eq!(
        stderr(&missing).trim(),
        "error: no user with email nobody@example.com"
    );
}
