//! The rollout engine against a real store, with the clock in the test's
//! hands: days of soak pass between two lines.

use super::engine::RolloutEngine;
use super::plan::rank;
use airlift_protocol::install::InstallPolicy;
use airlift_protocol::management::{Device, Package, Target};
use airlift_protocol::state::{DeploymentStatus, DeviceStatus, UpdateState};
use airlift_protocol::strategy::{
    Advance, BreakerAction, FailureThreshold, Phase, PhaseDevices, Phased, Strategy,
};
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use airlift_store::{DatabaseUrl, DeploymentRecord, PackageRecord, RolloutState, SharedStore};
use chrono::{DateTime, Duration, TimeZone, Utc};
use std::collections::BTreeMap;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

pub(super) fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000, 0)
        .single()
        .unwrap_or_default()
}

fn hours(h: i64) -> Duration {
    Duration::hours(h)
}

/// An accepted device of type `pi4`.
fn device(serial: &str, tags: Vec<String>) -> Device {
    Device {
        id: DeviceId::new(),
        status: DeviceStatus::Accepted,
        identity: BTreeMap::from([("serial".to_owned(), serial.to_owned())]),
        public_key: format!("key-{serial}"),
        tags,
        device_type: Some("pi4".into()),
        hardware_revision: None,
        installed: BTreeMap::new(),
        security_version: 0,
        attributes: BTreeMap::new(),
        created_at: t0(),
        last_check_in: None,
    }
}

pub(super) struct Fleet {
    _dir: tempfile::TempDir,
    pub(super) store: SharedStore,
    pub(super) devices: Vec<DeviceId>,
    pub(super) canaries: Vec<DeviceId>,
}

pub(super) async fn fleet(count: usize, canaries: usize) -> Result<Fleet> {
    let dir = tempfile::tempdir()?;
    let url = DatabaseUrl::parse(&format!("sqlite://{}", dir.path().join("db").display()))?;
    let store = airlift_store::open(&url).await?;
    let mut devices = Vec::new();
    for n in 0..count {
        let tags = if n < canaries {
            vec!["canary".into()]
        } else {
            vec![]
        };
        let device = device(&format!("SN{n:05}"), tags);
        store.insert_device(&device).await?;
        devices.push(device.id);
    }
    let canaries = devices[..canaries].to_vec();
    Ok(Fleet {
        _dir: dir,
        store,
        devices,
        canaries,
    })
}

fn phase(devices: PhaseDevices, soak_hours: u64) -> Phase {
    Phase {
        name: None,
        devices,
        soak_secs: soak_hours * 3600,
        success_percent: 100,
        deadline_secs: None,
    }
}

/// canary (tag) → 10 % → 50 % → 100 %, an hour of soak each.
pub(super) fn staged(threshold: FailureThreshold, on_failure: BreakerAction) -> Phased {
    Phased {
        phases: vec![
            phase(PhaseDevices::Tag("canary".into()), 1),
            phase(PhaseDevices::Percent(10), 1),
            phase(PhaseDevices::Percent(50), 1),
            phase(PhaseDevices::Percent(100), 0),
        ],
        failure_threshold: threshold,
        on_failure,
        advance: Advance::Automatic,
        device_timeout_secs: 6 * 3600,
        rollback_package: None,
    }
}

impl Fleet {
    async fn deploy(&self, strategy: Phased) -> Result<DeploymentId> {
        self.deploy_with(strategy, InstallPolicy::default()).await
    }

    async fn deploy_with(&self, strategy: Phased, install: InstallPolicy) -> Result<DeploymentId> {
        self.insert(Strategy::Phased(strategy), install, None).await
    }

    /// A dynamic deployment to the fleet, ending at `ends_at` if given.
    async fn deploy_dynamic(
        &self,
        strategy: Strategy,
        ends_at: Option<DateTime<Utc>>,
    ) -> Result<DeploymentId> {
        self.insert(strategy, InstallPolicy::default(), Some(ends_at))
            .await
    }

    /// `dynamic`: `None` for a static deployment, else its end.
    pub(super) async fn insert(
        &self,
        strategy: Strategy,
        install: InstallPolicy,
        dynamic: Option<Option<DateTime<Utc>>>,
    ) -> Result<DeploymentId> {
        let package_id = PackageId::new();
        let package = PackageRecord {
            package: Package {
                id: package_id,
                name: "rootfs".into(),
                // One package per deployment: name and version are unique.
                version: format!("2.0.0-{package_id}"),
                description: None,
                device_types: vec!["pi4".into()],
                security_version: 1,
                size: 1,
                sha256: "00".repeat(32),
                signed_by: vec![],
                manifest: serde_json::json!({}),
                created_at: t0(),
            },
            blob_key: "x".into(),
            head: vec![],
            provides: BTreeMap::new(),
        };
        self.store.insert_package(&package).await?;
        let record = DeploymentRecord {
            id: DeploymentId::new(),
            name: "staged".into(),
            package_id: package.package.id,
            target: Target::Devices(self.devices.clone()),
            strategy,
            install,
            status: DeploymentStatus::Active,
            created_at: t0(),
            finished_at: None,
            rollout: RolloutState {
                phase_started_at: Some(t0()),
                ..RolloutState::default()
            },
            dynamic: dynamic.is_some(),
            ends_at: dynamic.flatten(),
        };
        let initial: Vec<_> = self
            .devices
            .iter()
            .map(|d| (*d, UpdateState::Pending))
            .collect();
        self.store.insert_deployment(&record, &initial).await?;
        Ok(record.id)
    }

    /// Admitted devices and the phase that admitted each.
    pub(super) async fn admitted(&self, id: DeploymentId) -> Result<BTreeMap<DeviceId, u32>> {
        Ok(self
            .store
            .deployment_devices(id)
            .await?
            .into_iter()
            .filter_map(|d| d.phase.map(|p| (d.device_id, p)))
            .collect())
    }

    /// Every admitted device still pending reports `state` at `at`.
    async fn report_admitted(
        &self,
        id: DeploymentId,
        state: UpdateState,
        at: DateTime<Utc>,
    ) -> Result<usize> {
        let mut n = 0;
        for device in self.store.deployment_devices(id).await? {
            if device.phase.is_some() && !device.state.is_final() {
                self.store
                    .record_update_state(id, device.device_id, state, None, at)
                    .await?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub(super) async fn deployment(&self, id: DeploymentId) -> Result<DeploymentRecord> {
        Ok(self.store.deployment(id).await?.ok_or("no deployment")?)
    }
}

#[tokio::test]
async fn phases_admit_their_share_in_order_and_advance_after_their_soak() -> Result {
    let fleet = fleet(200, 5).await?;
    let id = fleet
        .deploy(staged(FailureThreshold::Percent(20), BreakerAction::Pause))
        .await?;
    let engine = RolloutEngine::new(fleet.store.clone());

    engine.tick(t0()).await?;
    let admitted = fleet.admitted(id).await?;
    let canaries: Vec<_> = admitted.keys().copied().collect();
    let mut expected = fleet.canaries.clone();
    expected.sort();
    assert_eq!(canaries, expected, "phase 1 is exactly the canaries");

    fleet
        .report_admitted(id, UpdateState::Success, t0())
        .await?;
    engine.tick(t0() + Duration::minutes(1)).await?; // threshold met: soak starts
    engine.tick(t0() + Duration::minutes(59)).await?;
    assert_eq!(
        fleet.deployment(id).await?.rollout.phase,
        0,
        "still soaking"
    );
    assert_eq!(fleet.admitted(id).await?.len(), 5);

    engine.tick(t0() + Duration::minutes(61)).await?; // soaked: 10 %
    let deployment = fleet.deployment(id).await?;
    assert_eq!(deployment.rollout.phase, 1);
    let admitted = fleet.admitted(id).await?;
    assert_eq!(admitted.len(), 20, "10 % of 200, canaries included");
    // The non-canaries admitted are the 15 first in the stable order.
    let mut order: Vec<_> = fleet.devices[5..]
        .iter()
        .map(|d| (rank(id, *d), *d))
        .collect();
    order.sort();
    for (_, device) in order.iter().take(15) {
        assert_eq!(admitted.get(device), Some(&1));
    }

    // Phases never exceed their share, however often the engine looks.
    for minutes in [62, 63, 90] {
        engine.tick(t0() + Duration::minutes(minutes)).await?;
        assert_eq!(fleet.admitted(id).await?.len(), 20);
    }
    fleet
        .report_admitted(id, UpdateState::Success, t0() + hours(2))
        .await?;
    engine.tick(t0() + hours(2)).await?;
    engine.tick(t0() + hours(3) + Duration::minutes(1)).await?;
    assert_eq!(fleet.deployment(id).await?.rollout.phase, 2);
    assert_eq!(fleet.admitted(id).await?.len(), 100);

    fleet
        .report_admitted(id, UpdateState::Success, t0() + hours(4))
        .await?;
    engine.tick(t0() + hours(4)).await?;
    engine.tick(t0() + hours(5) + Duration::minutes(1)).await?;
    assert_eq!(fleet.deployment(id).await?.rollout.phase, 3);
    assert_eq!(fleet.admitted(id).await?.len(), 200);
    fleet
        .report_admitted(id, UpdateState::Success, t0() + hours(6))
        .await?;
    engine.tick(t0() + hours(6)).await?;
    assert_eq!(
        fleet.deployment(id).await?.status,
        DeploymentStatus::Finished
    );
    Ok(())
}

#[tokio::test]
async fn the_breaker_trips_exactly_when_the_threshold_is_crossed() -> Result {
    let fleet = fleet(100, 10).await?;
    let id = fleet
        .deploy(staged(FailureThreshold::Count(2), BreakerAction::Pause))
        .await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    engine.tick(t0()).await?;
    let canaries: Vec<_> = fleet.admitted(id).await?.keys().copied().collect();
    assert_eq!(canaries.len(), 10);

    let fail = |device: DeviceId, state: UpdateState| {
        let store = fleet.store.clone();
        async move {
            store
                .record_update_state(id, device, state, Some("unhealthy"), t0())
                .await
        }
    };
    fail(canaries[0], UpdateState::RolledBack).await?;
    fail(canaries[1], UpdateState::Failure).await?;
    engine.tick(t0() + Duration::minutes(1)).await?;
    assert_eq!(
        fleet.deployment(id).await?.status,
        DeploymentStatus::Active,
        "2 failures is the threshold, not past it"
    );
    fail(canaries[2], UpdateState::RolledBack).await?;
    engine.tick(t0() + Duration::minutes(2)).await?;
    let deployment = fleet.deployment(id).await?;
    assert_eq!(deployment.status, DeploymentStatus::Paused);
    let reason = deployment.rollout.reason.unwrap_or_default();
    assert!(reason.contains("circuit breaker: 3 of 10"), "{reason}");

    // Paused: nothing more is admitted, however long it waits.
    for device in &canaries[3..] {
        fleet
            .store
            .record_update_state(id, *device, UpdateState::Success, None, t0())
            .await?;
    }
    engine.tick(t0() + hours(48)).await?;
    assert_eq!(fleet.admitted(id).await?.len(), 10);
    assert_eq!(fleet.deployment(id).await?.status, DeploymentStatus::Paused);

    // Resumed past the failures seen: the canary phase cannot succeed
    // (3 of 10 failed), so an operator advances by hand.
    let paused = fleet.deployment(id).await?;
    let resumed = RolloutState {
        reason: None,
        acknowledged_failures: 3,
        ..paused.rollout.clone()
    };
    assert!(
        fleet
            .store
            .update_rollout(
                id,
                DeploymentStatus::Paused,
                DeploymentStatus::Active,
                &resumed,
                t0() + hours(49)
            )
            .await?
    );
    engine.tick(t0() + hours(49)).await?;
    assert_eq!(fleet.deployment(id).await?.status, DeploymentStatus::Active);
    let advanced = super::plan::advanced(&fleet.deployment(id).await?.rollout, t0() + hours(50));
    fleet
        .store
        .update_rollout(
            id,
            DeploymentStatus::Active,
            DeploymentStatus::Active,
            &advanced,
            t0() + hours(50),
        )
        .await?;
    engine.tick(t0() + hours(50)).await?;
    assert_eq!(
        fleet.admitted(id).await?.len(),
        10,
        "10 % of 100 is the 10 already in"
    );
    Ok(())
}

#[tokio::test]
async fn an_aborting_breaker_ends_the_deployment_and_the_rest_is_never_offered() -> Result {
    let fleet = fleet(50, 5).await?;
    let id = fleet
        .deploy(staged(FailureThreshold::Percent(20), BreakerAction::Abort))
        .await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    engine.tick(t0()).await?;
    let canaries: Vec<_> = fleet.admitted(id).await?.keys().copied().collect();
    // 1 of 5 is 20 %: not past the threshold; 2 of 5 is.
    fleet
        .store
        .record_update_state(id, canaries[0], UpdateState::RolledBack, None, t0())
        .await?;
    engine.tick(t0()).await?;
    assert_eq!(fleet.deployment(id).await?.status, DeploymentStatus::Active);
    fleet
        .store
        .record_update_state(id, canaries[1], UpdateState::RolledBack, None, t0())
        .await?;
    engine.tick(t0()).await?;
    let deployment = fleet.deployment(id).await?;
    assert_eq!(deployment.status, DeploymentStatus::Aborted);
    let counts = fleet.store.deployment_counts(id).await?;
    assert_eq!(counts.get(&UpdateState::Cancelled), Some(&48));
    assert_eq!(counts.get(&UpdateState::RolledBack), Some(&2));
    assert_eq!(fleet.admitted(id).await?.len(), 5);
    Ok(())
}

#[tokio::test]
async fn a_restarted_engine_keeps_every_phase_as_it_was() -> Result {
    let fleet = fleet(300, 0).await?;
    let strategy = Phased {
        phases: vec![
            phase(PhaseDevices::Percent(10), 0),
            phase(PhaseDevices::Percent(100), 0),
        ],
        advance: Advance::Manual,
        ..staged(FailureThreshold::Percent(50), BreakerAction::Pause)
    };
    let id = fleet.deploy(strategy).await?;
    let first = RolloutEngine::new(fleet.store.clone());
    first.tick(t0()).await?;
    let before = fleet.admitted(id).await?;
    assert_eq!(before.len(), 30);

    // Another instance cannot act while the first holds the lease…
    let second = RolloutEngine::new(fleet.store.clone());
    assert!(second.tick(t0() + Duration::seconds(5)).await?.is_empty());
    // …and once it expired (the first "crashed"), it changes nothing.
    fleet
        .report_admitted(id, UpdateState::Success, t0() + hours(1))
        .await?;
    second.tick(t0() + hours(1)).await?;
    assert_eq!(fleet.admitted(id).await?, before);
    assert_eq!(
        fleet.deployment(id).await?.rollout.phase,
        0,
        "manual: waits for an operator"
    );
    Ok(())
}

#[tokio::test]
async fn stuck_devices_time_out_and_count_as_failures() -> Result {
    let fleet = fleet(10, 10).await?;
    let id = fleet
        .deploy(staged(FailureThreshold::Count(0), BreakerAction::Pause))
        .await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    engine.tick(t0()).await?;
    let stuck = fleet.canaries[3];
    fleet
        .store
        .record_update_state(id, stuck, UpdateState::Rebooting, None, t0())
        .await?;
    engine.tick(t0() + hours(5)).await?;
    assert_eq!(fleet.deployment(id).await?.status, DeploymentStatus::Active);
    engine.tick(t0() + hours(6)).await?;
    let update = fleet
        .store
        .device_update(id, stuck)
        .await?
        .ok_or("no update")?;
    assert_eq!(update.state, UpdateState::TimedOut);
    // Pending devices (offline, never started) do not time out.
    let pending = fleet.canaries[4];
    let update = fleet
        .store
        .device_update(id, pending)
        .await?
        .ok_or("no update")?;
    assert_eq!(update.state, UpdateState::Pending);
    engine.tick(t0() + hours(6)).await?;
    assert_eq!(fleet.deployment(id).await?.status, DeploymentStatus::Paused);
    Ok(())
}

#[tokio::test]
async fn a_download_that_still_moves_does_not_time_out() -> Result {
    use airlift_protocol::device::Progress;
    let fleet = fleet(10, 10).await?;
    let id = fleet
        .deploy(staged(FailureThreshold::Count(5), BreakerAction::Pause))
        .await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    engine.tick(t0()).await?;
    let (slow, silent) = (fleet.canaries[3], fleet.canaries[4]);
    walk(&fleet, id, slow, &[UpdateState::Downloading], t0()).await?;
    walk(&fleet, id, silent, &[UpdateState::Downloading], t0()).await?;
    let progress = Progress { done: 1, total: 10 };
    fleet
        .store
        .record_progress(id, slow, progress, t0() + hours(5))
        .await?;
    engine.tick(t0() + hours(6)).await?;
    assert_eq!(state_of(&fleet, id, silent).await?, UpdateState::TimedOut);
    assert_eq!(
        state_of(&fleet, id, slow).await?,
        UpdateState::Downloading,
        "moving an hour ago"
    );
    engine.tick(t0() + hours(11)).await?;
    assert_eq!(
        state_of(&fleet, id, slow).await?,
        UpdateState::TimedOut,
        "silent for six hours since"
    );
    Ok(())
}

/// Reports `states` for `device`, in order, at `at`.
async fn walk(
    fleet: &Fleet,
    id: DeploymentId,
    device: DeviceId,
    states: &[UpdateState],
    at: DateTime<Utc>,
) -> Result {
    for state in states {
        fleet
            .store
            .record_update_state(id, device, *state, None, at)
            .await?;
    }
    Ok(())
}

async fn state_of(fleet: &Fleet, id: DeploymentId, device: DeviceId) -> Result<UpdateState> {
    Ok(fleet
        .store
        .device_update(id, device)
        .await?
        .ok_or("no update")?
        .state)
}

#[tokio::test]
async fn a_device_held_by_download_only_does_not_time_out_and_its_clock_restarts_on_release(
) -> Result {
    use UpdateState::{Downloaded, Downloading, TimedOut};
    let fleet = fleet(10, 10).await?;
    let held = InstallPolicy {
        window: None,
        download_only: true,
        soft: None,
    };
    let id = fleet
        .deploy_with(
            staged(FailureThreshold::Count(5), BreakerAction::Pause),
            held,
        )
        .await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    engine.tick(t0()).await?;
    let (waiting, downloading) = (fleet.canaries[0], fleet.canaries[1]);
    walk(&fleet, id, waiting, &[Downloading, Downloaded], t0()).await?;
    walk(&fleet, id, downloading, &[Downloading], t0()).await?;

    engine.tick(t0() + hours(30)).await?;
    assert_eq!(
        state_of(&fleet, id, waiting).await?,
        Downloaded,
        "held, not stuck"
    );
    assert_eq!(
        state_of(&fleet, id, downloading).await?,
        TimedOut,
        "timeouts still apply"
    );

    assert!(fleet.store.release_install(id, t0() + hours(30)).await?);
    engine.tick(t0() + hours(35)).await?;
    assert_eq!(
        state_of(&fleet, id, waiting).await?,
        Downloaded,
        "the clock started at the release, not at the download"
    );
    engine.tick(t0() + hours(36)).await?;
    assert_eq!(state_of(&fleet, id, waiting).await?, TimedOut);
    Ok(())
}

#[tokio::test]
async fn a_device_waiting_for_its_install_window_times_out_only_inside_it() -> Result {
    use UpdateState::{Downloaded, Downloading, TimedOut};
    // t0 is 08:00 UTC; the window opens at 10:00 for two hours; the device
    // timeout is one hour.
    let fleet = fleet(10, 10).await?;
    let mut strategy = staged(FailureThreshold::Count(5), BreakerAction::Pause);
    strategy.device_timeout_secs = 3600;
    let window = InstallPolicy {
        window: Some("10:00-12:00".parse()?),
        download_only: false,
        soft: None,
    };
    let id = fleet.deploy_with(strategy, window).await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    engine.tick(t0()).await?;
    let waiting = fleet.canaries[0];
    walk(&fleet, id, waiting, &[Downloading, Downloaded], t0()).await?;

    engine.tick(t0() + hours(1)).await?;
    assert_eq!(
        state_of(&fleet, id, waiting).await?,
        Downloaded,
        "before the window"
    );
    engine.tick(t0() + hours(2) + Duration::minutes(59)).await?;
    assert_eq!(
        state_of(&fleet, id, waiting).await?,
        Downloaded,
        "inside the window, the clock started when it opened"
    );
    engine.tick(t0() + hours(3)).await?;
    assert_eq!(state_of(&fleet, id, waiting).await?, TimedOut);
    Ok(())
}

#[tokio::test]
async fn a_phase_that_misses_its_deadline_pauses_for_an_operator() -> Result {
    let fleet = fleet(20, 4).await?;
    let mut strategy = staged(FailureThreshold::Count(5), BreakerAction::Pause);
    strategy.phases[0].deadline_secs = Some(2 * 3600);
    let id = fleet.deploy(strategy).await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    engine.tick(t0()).await?;
    engine.tick(t0() + hours(1)).await?;
    assert_eq!(fleet.deployment(id).await?.status, DeploymentStatus::Active);
    engine.tick(t0() + hours(2)).await?;
    let deployment = fleet.deployment(id).await?;
    assert_eq!(deployment.status, DeploymentStatus::Paused);
    let reason = deployment.rollout.reason.unwrap_or_default();
    assert!(reason.contains("missed its deadline: 0 of 4"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn devices_joining_the_target_count_in_the_current_share() -> Result {
    let fleet = fleet(100, 0).await?;
    let strategy = Phased {
        phases: vec![
            phase(PhaseDevices::Percent(20), 0),
            phase(PhaseDevices::Percent(100), 0),
        ],
        advance: Advance::Manual,
        ..staged(FailureThreshold::Percent(50), BreakerAction::Pause)
    };
    let id = fleet.deploy(strategy).await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    engine.tick(t0()).await?;
    assert_eq!(fleet.admitted(id).await?.len(), 20);
    // 50 new devices join the target (as a tag target does on check-in).
    for n in 0..50 {
        let device = device(&format!("NEW{n}"), vec![]);
        fleet.store.insert_device(&device).await?;
        fleet
            .store
            .add_device_to_deployment(id, device.id, UpdateState::Pending, None, t0())
            .await?;
    }
    engine.tick(t0() + Duration::minutes(1)).await?;
    assert_eq!(fleet.admitted(id).await?.len(), 30, "20 % of 150");
    Ok(())
}

/// A device joining the target later, as a check-in adds it.
async fn join_late(fleet: &Fleet, id: DeploymentId, serial: &str) -> Result<DeviceId> {
    let device = device(serial, vec![]);
    fleet.store.insert_device(&device).await?;
    fleet
        .store
        .add_device_to_deployment(id, device.id, UpdateState::Pending, None, t0())
        .await?;
    Ok(device.id)
}

#[tokio::test]
async fn a_dynamic_phased_rollout_admits_late_devices_and_finishes_only_at_its_end() -> Result {
    let fleet = fleet(8, 0).await?;
    let strategy = Phased {
        phases: vec![
            phase(PhaseDevices::Percent(25), 0),
            phase(PhaseDevices::Percent(100), 0),
        ],
        ..staged(FailureThreshold::Percent(50), BreakerAction::Pause)
    };
    let ends_at = t0() + hours(48);
    let id = fleet
        .deploy_dynamic(Strategy::Phased(strategy), Some(ends_at))
        .await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    engine.tick(t0()).await?;
    assert_eq!(fleet.admitted(id).await?.len(), 2, "25 % of 8");
    // Four devices join while the first phase runs: 25 % of 12 is 3.
    for n in 0..4 {
        join_late(&fleet, id, &format!("LATE{n}")).await?;
    }
    engine.tick(t0() + Duration::minutes(1)).await?;
    assert_eq!(
        fleet.admitted(id).await?.len(),
        3,
        "25 % of the 12 targeted so far"
    );

    // Everyone succeeds through the last phase: still active, waiting for
    // more devices, day after day.
    for minutes in [2, 3, 4] {
        fleet
            .report_admitted(id, UpdateState::Success, t0() + Duration::minutes(minutes))
            .await?;
        engine.tick(t0() + Duration::minutes(minutes)).await?;
    }
    assert_eq!(fleet.admitted(id).await?.len(), 12);
    engine.tick(t0() + hours(24)).await?;
    assert_eq!(fleet.deployment(id).await?.status, DeploymentStatus::Active);

    // One more joins and is admitted by the last phase at once.
    let late = join_late(&fleet, id, "LATE-LAST").await?;
    engine.tick(t0() + hours(25)).await?;
    assert_eq!(fleet.admitted(id).await?.get(&late), Some(&1));
    fleet
        .report_admitted(id, UpdateState::Success, t0() + hours(26))
        .await?;
    engine.tick(t0() + hours(47)).await?;
    assert_eq!(fleet.deployment(id).await?.status, DeploymentStatus::Active);

    // Its end date passes: it finishes, by the engine, then.
    let reports = engine.tick(ends_at).await?;
    assert_eq!(reports.len(), 1);
    let finished = fleet.deployment(id).await?;
    assert_eq!(finished.status, DeploymentStatus::Finished);
    assert_eq!(finished.finished_at, Some(ends_at));
    Ok(())
}

#[tokio::test]
async fn an_all_at_once_dynamic_deployment_finishes_when_it_ends_and_its_devices_are_done() -> Result
{
    let fleet = fleet(2, 0).await?;
    let ends_at = t0() + hours(2);
    let id = fleet.deploy_dynamic(Strategy::All, Some(ends_at)).await?;
    let engine = RolloutEngine::new(fleet.store.clone());
    for device in &fleet.devices {
        fleet
            .store
            .record_update_state(id, *device, UpdateState::Success, None, t0())
            .await?;
    }
    assert!(
        engine.tick(t0() + hours(1)).await?.is_empty(),
        "not yet ended"
    );
    assert_eq!(fleet.deployment(id).await?.status, DeploymentStatus::Active);

    // Ended, but a device that joined is still updating: it waits for it.
    let late = join_late(&fleet, id, "LATE").await?;
    let reports = engine.tick(ends_at).await?;
    assert_eq!(reports[0].status, None);
    assert_eq!(fleet.deployment(id).await?.status, DeploymentStatus::Active);
    fleet
        .store
        .record_update_state(id, late, UpdateState::Failure, Some("disk full"), ends_at)
        .await?;
    let reports = engine.tick(ends_at + Duration::seconds(1)).await?;
    assert_eq!(reports[0].status, Some(DeploymentStatus::Finished));

    // A deployment without an end date stays active whatever the clock says.
    let open = fleet.deploy_dynamic(Strategy::All, None).await?;
    for device in &fleet.devices {
        fleet
            .store
            .record_update_state(open, *device, UpdateState::Success, None, t0())
            .await?;
    }
    engine.tick(t0() + hours(24 * 365)).await?;
    assert_eq!(
        fleet.deployment(open).await?.status,
        DeploymentStatus::Active
    );
    Ok(())
}
