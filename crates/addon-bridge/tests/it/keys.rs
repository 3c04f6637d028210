//! Add-On keys: format, hash-only storage, listing, revocation, and the 401s before upgrade.

use addon_bridge::keys;
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite;

use crate::support::{self, open, serve, settings, user, user_with_key};

#[tokio::test]
async fn keys_are_prefixed_random_and_stored_as_sha256_only() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let user_id = user(&db).await;
    let (first_id, first) = keys::create(&db, user_id).await.unwrap();
    let (_, second) = keys::create(&db, user_id).await.unwrap();
    assert!(first.starts_with("ctak_"));
    assert_eq!(first.len(), 5 + 43);
    assert!(keys::looks_like_key(&first));
    assert_ne!(first, second);

    let (hash, hint): (Vec<u8>, String) =
        sqlx::query_as("SELECT key_hash, hint FROM addon_keys WHERE key_id = $1")
            .bind(first_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(hash, Sha256::digest(first.as_bytes()).to_vec());
    assert_eq!(hint, first[..11]);
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM addon_keys WHERE position($1 in hint) > 0 OR encode(key_hash, 'escape') = $1",
    )
    .bind(&first)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(leaked, 0);

    let listed = keys::list(&db, user_id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|k| k.revoked_at.is_none() && k.last_used_at.is_none())
    );
    assert!(
        listed
            .iter()
            .any(|k| k.key_id == first_id && k.hint == first[..11])
    );
}

#[tokio::test]
async fn revoke_is_owner_only_and_once() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let (user_id, key_id, _) = user_with_key(&db).await;
    let stranger = user(&db).await;
    assert!(!keys::revoke(&db, stranger, key_id).await.unwrap());
    assert!(keys::revoke(&db, user_id, key_id).await.unwrap());
    assert!(!keys::revoke(&db, user_id, key_id).await.unwrap());
    let listed = keys::list(&db, user_id).await.unwrap();
    assert!(listed[0].revoked_at.is_some());
}

async fn refused(url: &str, authorization: Option<&str>) -> (u16, serde_json::Value, String) {
    match open(url, authorization).await {
        Err(tungstenite::Error::Http(response)) => {
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap(),
                challenge,
            )
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

#[tokio::test]
async fn anything_but_a_live_addon_key_gets_401_before_the_upgrade() {
    let test_db = testkit::TestDb::new().await;
    let db = test_db.pool().await;
    let server = serve(&db, settings()).await;
    let (user_id, key_id, key) = user_with_key(&db).await;
    let jwt = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJ4In0.c2ln";
    let unknown = format!("ctak_{}", "A".repeat(43));
    for authorization in [
        None,
        Some("Basic dXNlcjpwYXNz".to_owned()),
        Some(format!("Bearer {jwt}")),
        Some(format!("Bearer {unknown}")),
        Some(key.clone()),
    ] {
        let (status, body, challenge) = refused(&server.url, authorization.as_deref()).await;
        assert_eq!(status, 401, "{authorization:?}");
        assert_eq!(body["error"], "invalid_token");
        assert!(body["message"].as_str().unwrap().contains("Add-On key"));
        assert_eq!(challenge, "Bearer error=\"invalid_token\"");
    }
    // The right key upgrades; once revoked, it is refused too.
    let addon = support::Addon::connect(&server.url, &key).await;
    drop(addon);
    assert!(keys::revoke(&db, user_id, key_id).await.unwrap());
    let (status, body, _) = refused(&server.url, Some(&format!("Bearer {key}"))).await;
    assert_eq!(
        (status, body["message"].as_str().unwrap()),
        (401, "the Add-On key is invalid or revoked")
    );
}
