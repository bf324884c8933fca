//! Deferrals of soft deployments (`DeferralStore`) on both backends: counted
//! once per number, only while the device waits at `downloaded`, never past
//! the limit, and visible in the device's history.

use crate::support::{active_deployment, devices, t, Ctx};
use airlift_protocol::state::UpdateState;
use airlift_store::{DeferralOutcome, DeferralTotals};

conformance!(
    deferrals_count_once_per_number_up_to_the_limit,
    only_a_device_waiting_at_downloaded_defers,
    totals_count_deferrals_and_devices,
);

async fn downloaded(
    store: &airlift_store::SharedStore,
    id: airlift_protocol::DeploymentId,
    device: airlift_protocol::DeviceId,
) {
    for state in [UpdateState::Downloading, UpdateState::Downloaded] {
        let outcome = store
            .record_update_state(id, device, state, None, t(10))
            .await
            .expect("report");
        assert!(outcome.applied, "{state}");
    }
}

async fn deferrals_count_once_per_number_up_to_the_limit(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 1).await;
    let id = active_deployment(store, &ids).await;
    let device = ids[0];
    downloaded(store, id, device).await;
    assert_eq!(store.deferrals(id, device).await.expect("read"), Some(0));
    let counted = store
        .record_deferral(
            id,
            device,
            1,
            Some(2),
            Some("deferred (1 of 2): busy"),
            t(20),
        )
        .await
        .expect("defer");
    assert_eq!(
        counted,
        Some(DeferralOutcome::Counted {
            deferred: 1,
            counted: true
        })
    );
    let repeated = store
        .record_deferral(id, device, 1, Some(2), None, t(21))
        .await
        .expect("repeat");
    assert_eq!(
        repeated,
        Some(DeferralOutcome::Counted {
            deferred: 1,
            counted: false
        }),
        "a repeated report counts once"
    );
    let skipped = store
        .record_deferral(id, device, 3, Some(5), None, t(22))
        .await
        .expect("skip");
    assert_eq!(skipped, Some(DeferralOutcome::OutOfOrder { deferred: 1 }));
    store
        .record_deferral(id, device, 2, Some(2), None, t(30))
        .await
        .expect("second");
    let over = store
        .record_deferral(id, device, 3, Some(2), None, t(40))
        .await
        .expect("over");
    assert_eq!(over, Some(DeferralOutcome::Exhausted { deferred: 2 }));
    assert_eq!(store.deferrals(id, device).await.expect("read"), Some(2));
    // The counted deferrals are in the history, the state unchanged.
    let history = store.device_history(device).await.expect("history");
    let deferred: Vec<_> = history
        .iter()
        .filter(|e| e.state == UpdateState::Downloaded && !e.applied)
        .collect();
    assert_eq!(deferred.len(), 2, "{history:?}");
    assert!(deferred
        .iter()
        .any(|e| e.message.as_deref() == Some("deferred (1 of 2): busy")));
    let update = store.device_update(id, device).await.expect("read");
    assert_eq!(update.expect("in it").state, UpdateState::Downloaded);
}

async fn only_a_device_waiting_at_downloaded_defers(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 2).await;
    let id = active_deployment(store, &ids).await;
    let pending = store
        .record_deferral(id, ids[0], 1, None, None, t(10))
        .await
        .expect("pending");
    assert_eq!(
        pending,
        Some(DeferralOutcome::NotWaiting(UpdateState::Pending))
    );
    let other = airlift_protocol::DeploymentId::new();
    let not_in = store
        .record_deferral(other, ids[0], 1, None, None, t(10))
        .await
        .expect("not in");
    assert_eq!(not_in, None);
    assert_eq!(store.deferrals(other, ids[0]).await.expect("read"), None);
}

async fn totals_count_deferrals_and_devices(ctx: Ctx) {
    let store = &ctx.store;
    let ids = devices(store, 3).await;
    let id = active_deployment(store, &ids).await;
    assert_eq!(
        store.deferral_totals(id).await.expect("none"),
        DeferralTotals::default()
    );
    for device in &ids[..2] {
        downloaded(store, id, *device).await;
    }
    for n in 1..=3 {
        store
            .record_deferral(id, ids[0], n, None, None, t(20))
            .await
            .expect("defer");
    }
    store
        .record_deferral(id, ids[1], 1, None, None, t(20))
        .await
        .expect("defer");
    assert_eq!(
        store.deferral_totals(id).await.expect("totals"),
        DeferralTotals {
            deferrals: 4,
            devices: 2,
            most: 3
        }
    );
}
