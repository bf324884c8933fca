//! Rows that do not read back are errors naming their column, not panics.

use crate::support::{device, stored_package, t, Ctx};
use airlift_protocol::management::ApiToken;
use airlift_protocol::state::Role;
use airlift_protocol::TokenId;
use airlift_store::{ApiTokenRecord, DeviceFilter, PageRequest, StoreError};

conformance!(corrupt_rows_name_their_column);

fn corrupt_naming(result: Result<impl std::fmt::Debug, StoreError>, column: &str) {
    match result {
        Err(StoreError::Corrupt(message)) => {
            assert!(message.contains(column), "{message} should name {column}")
        }
        other => panic!("expected corrupt {column}, got {other:?}"),
    }
}

async fn corrupt_rows_name_their_column(ctx: Ctx) {
    let store = &ctx.store;
    let stored = device(1, 0);
    store.insert_device(&stored).await.expect("insert");
    ctx.execute(&format!(
        "UPDATE devices SET status = 'zombie' WHERE id = '{}'",
        stored.id
    ))
    .await;
    corrupt_naming(store.device(stored.id).await, "devices.status");
    let page = PageRequest {
        page: 1,
        per_page: 10,
    };
    corrupt_naming(
        store.list_devices(&DeviceFilter::default(), page).await,
        "devices.status",
    );
    ctx.execute(&format!(
        "UPDATE devices SET status = 'accepted', identity = 'not json' WHERE id = '{}'",
        stored.id
    ))
    .await;
    corrupt_naming(store.device(stored.id).await, "devices.identity");

    let package_id = stored_package(store).await;
    let deployment = crate::support::deployment(package_id, 0);
    store
        .insert_deployment(&deployment, &[])
        .await
        .expect("deploy");
    ctx.execute("UPDATE deployments SET target = '{\"everything\": true}'")
        .await;
    corrupt_naming(store.deployment(deployment.id).await, "deployments.target");
    corrupt_naming(store.list_deployments().await, "deployments.target");

    store
        .insert_api_token(&ApiTokenRecord {
            token: ApiToken {
                id: TokenId::new(),
                name: "t".into(),
                role: Role::Viewer,
                created_at: t(0),
            },
            secret_sha256: [3; 32],
        })
        .await
        .expect("token");
    ctx.execute("UPDATE api_tokens SET id = 'not-a-uuid'").await;
    corrupt_naming(store.list_api_tokens().await, "api_tokens.id");

    ctx.execute("UPDATE packages SET size = -1").await;
    corrupt_naming(store.package(package_id).await, "packages.size");
}
