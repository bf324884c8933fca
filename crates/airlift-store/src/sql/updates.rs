//! One device in one deployment: its state, reports and history: the SQL of these [`Store`](crate::Store)
//! methods, written once for both backends as inherent methods of the
//! store, which the `Store` impl of [`impl_store!`](super::impl_store)
//! calls. Expanded inside `impl_store!`, so it sees that macro's imports.

/// The one device in one deployment: its state, reports and history, for `$store` on `$db`.
macro_rules! sql_updates {
    ($store:ident, $db:ty, $begin:literal) => {
        impl $store {
            async fn device_update(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
            ) -> StoreResult<Option<DeviceUpdate>> {
                sqlx::query_as::<$db, DeploymentDeviceRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(deployment_devices),
                    " FROM deployment_devices \
                     WHERE deployment_id = $1 AND device_id = $2"
                ))
                .bind(deployment.to_string())
                .bind(device.to_string())
                .fetch_optional(&self.pool)
                .await?
                .map(DeploymentDeviceRow::into_update)
                .transpose()
            }

            async fn add_device_to_deployment(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
                state: UpdateState,
                message: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<DeviceUpdate> {
                sqlx::query::<$db>(
                    "INSERT INTO deployment_devices \
                     (deployment_id, device_id, state, message, updated_at, joined_late) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (deployment_id, device_id) DO NOTHING",
                )
                .bind(deployment.to_string())
                .bind(device.to_string())
                .bind(state.as_str())
                .bind(message)
                .bind(millis(at))
                .bind(true)
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    let missing = format!("deployment {deployment} or device {device}");
                    classify(e, "", &missing)
                })?;
                self.device_update(deployment, device)
                    .await?
                    .ok_or_else(|| {
                        StoreError::NotFound(format!("device {device} in deployment {deployment}"))
                    })
            }

            async fn record_update_state(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
                state: UpdateState,
                message: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<ReportOutcome> {
                let from: Vec<UpdateState> = UpdateState::ALL
                    .iter()
                    .copied()
                    .filter(|prior| prior.accepts_report(state) == Transition::Advance)
                    .collect();
                self.move_device(deployment, device, state, &from, message, at)
                    .await
            }

            async fn record_progress(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
                progress: Progress,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                let rows = sqlx::query::<$db>(
                    "UPDATE deployment_devices \
                     SET progress_done = $3, progress_total = $4, progress_at = $5 \
                     WHERE deployment_id = $1 AND device_id = $2 AND state = $6",
                )
                .bind(deployment.to_string())
                .bind(device.to_string())
                .bind(clamp(progress.done))
                .bind(clamp(progress.total))
                .bind(millis(at))
                .bind(UpdateState::Downloading.as_str())
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(rows > 0)
            }

            async fn decide_update_state(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
                state: UpdateState,
                message: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<ReportOutcome> {
                let from: Vec<UpdateState> = UpdateState::ALL
                    .iter()
                    .copied()
                    .filter(|prior| !prior.is_final() && *prior != state)
                    .collect();
                self.move_device(deployment, device, state, &from, message, at)
                    .await
            }

            async fn device_history(&self, device: DeviceId) -> StoreResult<Vec<UpdateEvent>> {
                sqlx::query_as::<$db, EventRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(events),
                    " FROM update_events \
                     WHERE device_id = $1 ORDER BY at DESC, id DESC"
                ))
                .bind(device.to_string())
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(EventRow::into_event)
                .collect()
            }
        }
    };
}

pub(crate) use sql_updates;
