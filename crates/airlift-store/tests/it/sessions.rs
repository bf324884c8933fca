//! Dashboard sessions: found by their hash until they expire or their token
//! is revoked.

use crate::support::{t, Ctx};
use airlift_protocol::management::ApiToken;
use airlift_protocol::state::Role;
use airlift_protocol::TokenId;
use airlift_store::{ApiTokenRecord, NewSession};

conformance!(
    a_session_stands_for_its_token_until_it_expires,
    revoking_the_token_ends_its_sessions,
    sign_out_and_the_expiry_sweep_forget_sessions
);

async fn viewer_token(ctx: &Ctx) -> ApiToken {
    let record = ApiTokenRecord {
        token: ApiToken {
            id: TokenId::new(),
            name: "browser".into(),
            role: Role::Viewer,
            created_at: t(1_000),
        },
        secret_sha256: [7; 32],
    };
    ctx.store.insert_api_token(&record).await.expect("token");
    record.token
}

fn session(token: &ApiToken, hash_byte: u8, expires: i64) -> NewSession {
    NewSession {
        secret_sha256: [hash_byte; 32],
        token_id: token.id,
        csrf: format!("csrf-{hash_byte}"),
        created_at: t(1_000),
        expires_at: t(expires),
    }
}

async fn a_session_stands_for_its_token_until_it_expires(ctx: Ctx) {
    let token = viewer_token(&ctx).await;
    ctx.store
        .insert_session(&session(&token, 1, 5_000))
        .await
        .expect("insert");
    let found = ctx
        .store
        .session_by_hash(&[1; 32], t(4_999))
        .await
        .expect("lookup")
        .expect("live session");
    assert_eq!(found.token, token);
    assert_eq!(found.csrf, "csrf-1");
    assert_eq!(found.expires_at, t(5_000));
    assert_eq!(
        ctx.store
            .session_by_hash(&[1; 32], t(5_000))
            .await
            .expect("lookup"),
        None,
        "expired at its expiry"
    );
    assert_eq!(
        ctx.store
            .session_by_hash(&[2; 32], t(1_000))
            .await
            .expect("lookup"),
        None
    );
}

async fn revoking_the_token_ends_its_sessions(ctx: Ctx) {
    let token = viewer_token(&ctx).await;
    ctx.store
        .insert_session(&session(&token, 1, 5_000))
        .await
        .expect("insert");
    assert!(ctx.store.delete_api_token(token.id).await.expect("revoke"));
    assert_eq!(
        ctx.store
            .session_by_hash(&[1; 32], t(2_000))
            .await
            .expect("lookup"),
        None
    );
}

async fn sign_out_and_the_expiry_sweep_forget_sessions(ctx: Ctx) {
    let token = viewer_token(&ctx).await;
    for (byte, expires) in [(1, 5_000), (2, 3_000), (3, 9_000)] {
        ctx.store
            .insert_session(&session(&token, byte, expires))
            .await
            .expect("insert");
    }
    assert!(ctx.store.delete_session(&[1; 32]).await.expect("sign out"));
    assert!(!ctx.store.delete_session(&[1; 32]).await.expect("again"));
    assert_eq!(
        ctx.store
            .delete_expired_sessions(t(4_000))
            .await
            .expect("sweep"),
        1
    );
    assert!(ctx
        .store
        .session_by_hash(&[3; 32], t(4_000))
        .await
        .expect("lookup")
        .is_some());
}
