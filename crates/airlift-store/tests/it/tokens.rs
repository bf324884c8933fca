//! Management API tokens.

use crate::support::{t, Ctx};
use airlift_protocol::management::ApiToken;
use airlift_protocol::state::Role;
use airlift_protocol::TokenId;
use airlift_store::{ApiTokenRecord, StoreError};

conformance!(round_trip, duplicate_hash_or_id_conflicts);

fn token(name: &str, hash_byte: u8, created: i64) -> ApiTokenRecord {
    ApiTokenRecord {
        token: ApiToken {
            id: TokenId::new(),
            name: name.into(),
            role: Role::Operator,
            created_at: t(created),
        },
        secret_sha256: [hash_byte; 32],
    }
}

async fn round_trip(ctx: Ctx) {
    let store = &ctx.store;
    assert_eq!(store.count_api_tokens().await.expect("count"), 0);
    assert!(store.list_api_tokens().await.expect("list").is_empty());

    let newer = token("ci", 2, 2_000);
    let mut older = token("admin", 1, 1_000);
    older.token.role = Role::Admin;
    store.insert_api_token(&newer).await.expect("insert");
    store.insert_api_token(&older).await.expect("insert");

    assert_eq!(store.count_api_tokens().await.expect("count"), 2);
    assert_eq!(
        store.list_api_tokens().await.expect("list"),
        vec![older.token.clone(), newer.token.clone()],
        "oldest first"
    );
    assert_eq!(
        store.api_token_by_hash(&[1; 32]).await.expect("by hash"),
        Some(older.clone())
    );
    assert_eq!(
        store.api_token_by_hash(&[9; 32]).await.expect("by hash"),
        None
    );

    assert!(store
        .delete_api_token(older.token.id)
        .await
        .expect("delete"));
    assert!(!store
        .delete_api_token(older.token.id)
        .await
        .expect("delete again"));
    assert!(!store
        .delete_api_token(TokenId::new())
        .await
        .expect("delete unknown"));
    assert_eq!(store.count_api_tokens().await.expect("count"), 1);
    assert_eq!(
        store.api_token_by_hash(&[1; 32]).await.expect("by hash"),
        None
    );
}

async fn duplicate_hash_or_id_conflicts(ctx: Ctx) {
    let store = &ctx.store;
    let first = token("a", 7, 0);
    store.insert_api_token(&first).await.expect("insert");

    let same_hash = token("b", 7, 1);
    let error = store
        .insert_api_token(&same_hash)
        .await
        .expect_err("same hash");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");

    let mut same_id = token("c", 8, 2);
    same_id.token.id = first.token.id;
    let error = store.insert_api_token(&same_id).await.expect_err("same id");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");

    assert_eq!(store.count_api_tokens().await.expect("count"), 1);
}
