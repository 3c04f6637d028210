//! The tier cache the binary gives the endpoint: a change of tier (or a deleted account) drops
//! the cached tier on its notification, so a downgrade bites without a new token.

use std::time::Duration;

use store::tiers::TierCache;
use store::users::Tier;
use testkit::wait::wait_until;
use uuid::Uuid;

async fn eventually(cache: &TierCache, db: &sqlx::PgPool, user: Uuid, want: Option<Tier>) {
    wait_until(
        &format!("the cached tier becoming {want:?}"),
        Duration::from_secs(2),
        async || cache.tier(db, user).await.unwrap() == want,
    )
    .await;
}

#[tokio::test]
async fn a_changed_tier_replaces_the_cached_one() {
    let db = testkit::TestDb::new().await.pool().await;
    let user: Uuid = sqlx::query_scalar(
        "INSERT INTO users (email, password_hash, tier) VALUES ('t@example.com', 'x', 'elite') \
         RETURNING id",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let cache = TierCache::start(&store::Background::start(&db));
    wait_until("the tier listener", Duration::from_secs(2), async || {
        cache.is_listening()
    })
    .await;
    assert!(cache.is_listening());
    assert_eq!(cache.tier(&db, user).await.unwrap(), Some(Tier::Elite));
    assert_eq!(cache.tier(&db, user).await.unwrap(), Some(Tier::Elite));

    sqlx::query("UPDATE users SET tier = 'pro' WHERE id = $1")
        .bind(user)
        .execute(&db)
        .await
        .unwrap();
    eventually(&cache, &db, user, Some(Tier::Pro)).await;

    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user)
        .execute(&db)
        .await
        .unwrap();
    eventually(&cache, &db, user, None).await;
}
