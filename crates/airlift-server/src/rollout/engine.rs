//! The rollout engine: a background task that advances phased deployments.
//!
//! Each [`RolloutEngine::tick`] looks at every open (active or paused)
//! phased deployment, takes its lease in the store — so that with several
//! server instances on one PostgreSQL only one advances a deployment at a
//! time — reads a [`View`], and carries out the [`Plan`]: times out stuck
//! devices, admits devices, moves the deployment's status and phase. The
//! view is kept between ticks and refreshed with only the device rows that
//! changed ([`view`](super::view)), so a tick costs what changed, not the
//! size of the deployment. The time is handed in, so tests drive days of
//! soak in milliseconds; the server's task calls it with the wall clock
//! every `rollout_interval`.
//! A dynamic deployment (one that takes in devices joining its target
//! later) finishes only once its end date has passed or an operator ended
//! it; the engine finishes it then, phased or not, once its devices are
//! done. A breaker that trips with `on_failure: rollback` aborts the
//! deployment and starts its rollback ([`rollback`](super::rollback)).

use super::plan::{plan, Plan, View};
use super::view::{DevicesRead, Views};
use airlift_protocol::management::Device;
use airlift_protocol::state::{DeploymentStatus, DeviceStatus, UpdateState};
use airlift_protocol::strategy::{BreakerAction, Phased, Strategy};
use airlift_protocol::{DeploymentId, DeviceId};
use airlift_store::{DeploymentRecord, DeviceFilter, SharedStore, Store, StoreResult};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// How long a lease on a deployment lasts without renewal.
const LEASE_SECS: i64 = 30;

/// Advances phased deployments; one per server instance.
#[derive(Clone)]
pub struct RolloutEngine {
    store: SharedStore,
    owner: String,
    /// The `--trust` keys: the release keys while the store holds no
    /// trust root, for a rollback's check of what it goes back to.
    configured_trust: Option<airlift_package::TrustSet>,
    /// What it knows of the deployments whose lease it holds; locked for
    /// a whole tick, so ticks of clones of one engine take turns.
    views: Arc<tokio::sync::Mutex<Views>>,
}

impl std::fmt::Debug for RolloutEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutEngine")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// What one tick did to one deployment, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Devices timed out.
    pub timed_out: usize,
    /// Devices admitted.
    pub admitted: usize,
    /// The status the deployment moved to, if it moved.
    pub status: Option<DeploymentStatus>,
    /// Rollback deployments its circuit breaker started.
    pub rollbacks: Vec<DeploymentId>,
    /// How its devices were read: whole, or only the rows that changed.
    pub devices_read: DevicesRead,
}

impl RolloutEngine {
    /// An engine on `store`, known to the others by a fresh random id.
    pub fn new(store: SharedStore) -> Self {
        Self {
            store,
            owner: uuid::Uuid::new_v4().to_string(),
            configured_trust: None,
            views: Arc::default(),
        }
    }

    /// With the server's `--trust` keys, which a rollback's packages must
    /// be signed with while the store holds no trust root.
    #[must_use]
    pub fn with_configured_trust(mut self, trust: Option<airlift_package::TrustSet>) -> Self {
        self.configured_trust = trust;
        self
    }

    /// With reads of changed rows that overlap the last by `overlap`
    /// rather than a few seconds, for tests that count the rows a tick
    /// reads.
    #[cfg(test)]
    pub(super) fn with_read_overlap(mut self, overlap: std::time::Duration) -> Self {
        self.views = Arc::new(tokio::sync::Mutex::new(Views::with_overlap(overlap)));
        self
    }

    /// How many deployments it keeps a view of.
    #[cfg(test)]
    pub(super) async fn views_kept(&self) -> usize {
        self.views.lock().await.len()
    }

    /// Advances every open phased deployment as of `now`.
    pub async fn tick(&self, now: DateTime<Utc>) -> StoreResult<Vec<TickReport>> {
        let mut views = self.views.lock().await;
        let open = self.store.open_deployments().await?;
        // The views of deployments that ended go.
        views.retain(|id| {
            open.iter()
                .any(|d| d.id == id && matches!(d.strategy, Strategy::Phased(_)))
        });
        let mut reports = Vec::new();
        for deployment in &open {
            let Strategy::Phased(strategy) = &deployment.strategy else {
                // Nothing advances an all-at-once deployment but its
                // devices' reports — and, for a dynamic one, its end date.
                if deployment.dynamic && deployment.may_finish(now) {
                    reports.push(self.finish_ended(deployment, now).await?);
                }
                continue;
            };
            let until = now + Duration::seconds(LEASE_SECS);
            if !self
                .store
                .take_rollout_lease(deployment.id, &self.owner, now, until)
                .await?
            {
                // Another instance advances it: its view here would go
                // stale unseen.
                views.forget(deployment.id);
                continue;
            }
            match self.advance(&mut views, deployment, strategy, now).await {
                Ok(report) => reports.push(report),
                Err(error) => {
                    // Read again whole what a failed tick may have half done.
                    views.forget(deployment.id);
                    return Err(error);
                }
            }
        }
        Ok(reports)
    }

    async fn advance(
        &self,
        views: &mut Views,
        deployment: &DeploymentRecord,
        strategy: &Phased,
        now: DateTime<Utc>,
    ) -> StoreResult<TickReport> {
        let store = &self.store;
        let (view, devices_read) = views.refresh(store.as_ref(), deployment, strategy).await?;
        let (devices, canaries) = (view.devices.as_slice(), view.canaries.as_slice());
        let Plan {
            time_out,
            admit,
            admit_phase,
            next,
        } = plan(&View {
            deployment: deployment.id,
            strategy,
            install: &deployment.install,
            status: deployment.status,
            rollout: &deployment.rollout,
            devices,
            canaries,
            now,
        });
        let mut report = TickReport {
            timed_out: self.time_out(deployment, strategy, &time_out, now).await?,
            devices_read,
            ..TickReport::default()
        };
        if !admit.is_empty() {
            report.admitted = store
                .admit_devices(deployment.id, admit_phase, &admit)
                .await? as usize;
            tracing::info!(
                deployment_id = %deployment.id,
                phase = admit_phase + 1,
                admitted = report.admitted,
                "devices admitted"
            );
        }
        if let Some((status, rollout)) = next {
            if status == DeploymentStatus::Aborted && strategy.on_failure == BreakerAction::Rollback
            {
                let started = super::rollback::start(
                    store.as_ref(),
                    self.configured_trust.as_ref(),
                    deployment,
                    strategy,
                    devices,
                    rollout,
                    now,
                )
                .await?;
                report.rollbacks = started.map(|s| s.rollbacks).unwrap_or_default();
                report.status = Some(status);
                return Ok(report);
            }
            let moved = store
                .update_rollout(deployment.id, deployment.status, status, &rollout, now)
                .await?;
            if moved && status != deployment.status {
                report.status = Some(status);
                tracing::warn!(
                    deployment_id = %deployment.id,
                    %status,
                    reason = rollout.reason.as_deref().unwrap_or(""),
                    "rollout status"
                );
            } else if moved && rollout.phase != deployment.rollout.phase {
                tracing::info!(deployment_id = %deployment.id, phase = rollout.phase + 1, "rollout advanced");
            }
        }
        store.finish_deployment_if_done(deployment.id, now).await?;
        Ok(report)
    }

    /// Marks the devices that made no progress within the rollout's device
    /// timeout as timed out; returns how many.
    async fn time_out(
        &self,
        deployment: &DeploymentRecord,
        strategy: &Phased,
        devices: &[DeviceId],
        now: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let timeout = strategy.device_timeout_secs;
        for device in devices {
            let message = format!("no progress for {timeout} s (the rollout's device timeout)");
            self.store
                .decide_update_state(
                    deployment.id,
                    *device,
                    UpdateState::TimedOut,
                    Some(&message),
                    now,
                )
                .await?;
            tracing::warn!(deployment_id = %deployment.id, device_id = %device, "device timed out");
        }
        Ok(devices.len())
    }

    /// Finishes an all-at-once dynamic deployment whose end has come, if
    /// its devices are done (a conditional write: any instance may try).
    async fn finish_ended(
        &self,
        deployment: &DeploymentRecord,
        now: DateTime<Utc>,
    ) -> StoreResult<TickReport> {
        let finished = self
            .store
            .finish_deployment_if_done(deployment.id, now)
            .await?;
        if finished {
            tracing::info!(deployment_id = %deployment.id, "dynamic deployment ended and finished");
        }
        Ok(TickReport {
            status: finished.then_some(DeploymentStatus::Finished),
            ..TickReport::default()
        })
    }

    /// Runs [`tick`](Self::tick) every `interval`, for as long as the server runs.
    pub async fn run(self, interval: std::time::Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = self.tick(Utc::now()).await {
                tracing::warn!(%error, "rollout engine tick failed; trying again");
            }
        }
    }
}

/// Accepted devices carrying `tag`.
pub async fn tagged(store: &dyn Store, tag: &str) -> StoreResult<Vec<Device>> {
    accepted(
        store,
        DeviceFilter {
            tag: Some(tag.to_owned()),
            ..DeviceFilter::default()
        },
    )
    .await
}

/// Every accepted device matching `filter`, page by page.
pub async fn accepted(store: &dyn Store, filter: DeviceFilter) -> StoreResult<Vec<Device>> {
    let filter = DeviceFilter {
        status: Some(DeviceStatus::Accepted),
        ..filter
    };
    // By id, each page after the last one's end: the 100th page costs what
    // the first does (pages by number re-read every row they skip, and
    // recounted the matches each time: a deployment to 100 000 tagged
    // devices took 48 s to create).
    let mut devices: Vec<Device> = Vec::new();
    loop {
        let after = devices.last().map(|d| d.id);
        let page = store.devices_after(&filter, after, ACCEPTED_PAGE).await?;
        let done = page.len() < ACCEPTED_PAGE as usize;
        devices.extend(page);
        if done {
            return Ok(devices);
        }
    }
}

/// Devices read at a time by [`accepted`].
const ACCEPTED_PAGE: u32 = 1000;
