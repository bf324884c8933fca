//! Rollback, retry and reset: the SQL of [`FleetRepair`](crate::FleetRepair),
//! written once for both backends. Expanded inside `impl_store!`, so it
//! sees that macro's imports.

/// Most devices one retry nudges to check in at once.
pub(crate) const MAX_NUDGES: usize = 1000;

/// [`FleetRepair`](crate::FleetRepair) for `$store` on `$db`.
macro_rules! sql_repair {
    ($store:ident, $db:ty, $begin:literal) => {
        impl $store {
            /// Moves a deployment from `from` to aborted with `rollout`
            /// and cancels its devices not yet done; false if it was not
            /// in `from`.
            async fn abort_for_rollback(
                tx: &mut sqlx::Transaction<'static, $db>,
                id: &str,
                from: DeploymentStatus,
                rollout: &$crate::RolloutState,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let updated = sqlx::query::<$db>(
                    "UPDATE deployments SET status = $2, phase = $3, phase_started_at = $4, \
                     phase_met_at = $5, status_reason = $6, acknowledged_failures = $7, \
                     finished_at = $8 WHERE id = $1 AND status = $9",
                )
                .bind(id)
                .bind(DeploymentStatus::Aborted.as_str())
                .bind(i64::from(rollout.phase))
                .bind(rollout.phase_started_at.map(millis))
                .bind(rollout.phase_met_at.map(millis))
                .bind(rollout.reason.as_deref())
                .bind(to_i64(rollout.acknowledged_failures, "acknowledged failures")?)
                .bind(millis(at))
                .bind(from.as_str())
                .execute(&mut **tx)
                .await?
                .rows_affected()
                    > 0;
                if updated {
                    Self::cancel_open_devices(tx, id, at).await?;
                }
                Ok(updated)
            }

            /// How many of a deployment's devices are in one of `states`.
            async fn count_in_states(
                tx: &mut sqlx::Transaction<'static, $db>,
                id: &str,
                states: &[UpdateState],
            ) -> StoreResult<u64> {
                let sql = format!(
                    "SELECT COUNT(*) FROM deployment_devices \
                     WHERE deployment_id = $1 AND state IN ({})",
                    placeholders(2, states.len()),
                );
                let mut count = sqlx::query_scalar::<$db, i64>(&sql).bind(id);
                for state in states {
                    count = count.bind(state.as_str());
                }
                Ok(u64::try_from(count.fetch_one(&mut **tx).await?).unwrap_or(0))
            }

            /// After a retry: the deployment is `status` (a finished one
            /// opens again) and its breaker counts `acknowledged` failures.
            async fn reopen_for_retries(
                tx: &mut sqlx::Transaction<'static, $db>,
                id: &str,
                status: DeploymentStatus,
                acknowledged: i64,
            ) -> StoreResult<()> {
                let reopen = if status == DeploymentStatus::Finished {
                    ", finished_at = NULL"
                } else {
                    ""
                };
                let status = if status == DeploymentStatus::Finished {
                    DeploymentStatus::Active
                } else {
                    status
                };
                sqlx::query::<$db>(&format!(
                    "UPDATE deployments SET status = $2, acknowledged_failures = $3{reopen} \
                     WHERE id = $1"
                ))
                .bind(id)
                .bind(status.as_str())
                .bind(acknowledged.max(0))
                .execute(&mut **tx)
                .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::FleetRepair for $store {
            async fn previous_releases(
                &self,
                devices: &[DeviceId],
                except: DeploymentId,
                not_package: PackageId,
            ) -> StoreResult<BTreeMap<DeviceId, PackageId>> {
                // The latest commit per device wins.
                let mut latest: BTreeMap<DeviceId, (i64, PackageId)> = BTreeMap::new();
                for chunk in devices.chunks(INSERT_CHUNK) {
                    let mut query = QueryBuilder::<$db>::new(
                        "SELECT dd.device_id, d.package_id, dd.updated_at \
                         FROM deployment_devices dd JOIN deployments d ON d.id = dd.deployment_id \
                         WHERE dd.state IN (",
                    );
                    query
                        .push_bind(UpdateState::Success.as_str())
                        .push(", ")
                        .push_bind(UpdateState::AlreadyInstalled.as_str())
                        .push(") AND d.id <> ")
                        .push_bind(except.to_string())
                        .push(" AND d.package_id <> ")
                        .push_bind(not_package.to_string())
                        .push(" AND dd.device_id IN (");
                    let mut listed = query.separated(", ");
                    for device in chunk {
                        listed.push_bind(device.to_string());
                    }
                    query.push(")");
                    let rows = query
                        .build_query_as::<(String, String, i64)>()
                        .fetch_all(&self.pool)
                        .await?;
                    for (device, package, at) in rows {
                        let device: DeviceId = parse("deployment_devices.device_id", &device)?;
                        let package: PackageId = parse("deployments.package_id", &package)?;
                        let newer = latest.get(&device).is_none_or(|(seen, _)| at > *seen);
                        if newer {
                            latest.insert(device, (at, package));
                        }
                    }
                }
                Ok(latest.into_iter().map(|(d, (_, p))| (d, p)).collect())
            }

            async fn start_rollback(
                &self,
                original: DeploymentId,
                from: DeploymentStatus,
                rollout: &$crate::RolloutState,
                rollbacks: &[$crate::NewRollback],
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let original_id = original.to_string();
                let mut tx = self.begin().await?;
                if !Self::abort_for_rollback(&mut tx, &original_id, from, rollout, at).await? {
                    return Ok(false);
                }
                let mut events = vec![StoreEvent::DeploymentChanged(original)];
                for rollback in rollbacks {
                    let devices: Vec<(DeviceId, UpdateState)> = rollback
                        .devices
                        .iter()
                        .map(|d| (*d, UpdateState::Pending))
                        .collect();
                    Self::insert_deployment_rows(&mut tx, &rollback.deployment, &devices).await?;
                    sqlx::query::<$db>(
                        "INSERT INTO deployment_rollbacks (rollback_id, original_id, created_at) \
                         VALUES ($1, $2, $3)",
                    )
                    .bind(rollback.deployment.id.to_string())
                    .bind(original_id.as_str())
                    .bind(millis(at))
                    .execute(&mut *tx)
                    .await?;
                    events.push(StoreEvent::DeploymentChanged(rollback.deployment.id));
                }
                self.commit_with(tx, &events).await?;
                Ok(true)
            }

            async fn rollback_links(
                &self,
                id: DeploymentId,
            ) -> StoreResult<$crate::RollbackLinks> {
                let id = id.to_string();
                let rollback_of = sqlx::query_scalar::<$db, String>(
                    "SELECT original_id FROM deployment_rollbacks WHERE rollback_id = $1",
                )
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?
                .map(|o| parse("deployment_rollbacks.original_id", &o))
                .transpose()?;
                let rolled_back_by = sqlx::query_scalar::<$db, String>(
                    "SELECT rollback_id FROM deployment_rollbacks WHERE original_id = $1 \
                     ORDER BY created_at, rollback_id",
                )
                .bind(id.as_str())
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| parse("deployment_rollbacks.rollback_id", r))
                .collect::<StoreResult<Vec<_>>>()?;
                Ok($crate::RollbackLinks {
                    rollback_of,
                    rolled_back_by,
                })
            }

            async fn retry_failed(
                &self,
                id: DeploymentId,
                limit: u32,
                message: &str,
                at: DateTime<Utc>,
            ) -> StoreResult<$crate::RetryOutcome> {
                let deployment_id = id.to_string();
                let mut tx = self.begin().await?;
                // Lock the deployment's row: its status and acknowledged
                // failures are read and written below.
                let row = sqlx::query_as::<$db, (String, i64)>(
                    "UPDATE deployments SET status = status WHERE id = $1 \
                     RETURNING status, acknowledged_failures",
                )
                .bind(deployment_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let Some((status, acknowledged)) = row else {
                    return Err(StoreError::NotFound(format!("deployment {id}")));
                };
                let status: DeploymentStatus = parse("deployments.status", &status)?;
                if matches!(
                    status,
                    DeploymentStatus::Aborted | DeploymentStatus::Cancelled
                ) {
                    return Err(StoreError::Conflict(format!(
                        "deployment {id} is {status}; only an active, paused or finished deployment can be retried"
                    )));
                }
                let retryable = $crate::RETRYABLE;
                // A retry is a new offer: a soft deployment's device gets
                // its deferrals back, or it would be forced at once.
                let sql = format!(
                    "UPDATE deployment_devices SET state = $2, message = $3, updated_at = $4, \
                     retries = retries + 1, progress_done = NULL, progress_total = NULL, \
                     progress_at = NULL, deferrals = 0, deferred_at = NULL \
                     WHERE deployment_id = $1 AND retries < $5 AND state IN ({}) \
                     RETURNING device_id",
                    placeholders(6, retryable.len()),
                );
                let mut query = sqlx::query_scalar::<$db, String>(&sql)
                    .bind(deployment_id.as_str())
                    .bind(UpdateState::Pending.as_str())
                    .bind(message)
                    .bind(millis(at))
                    .bind(i64::from(limit));
                for state in &retryable {
                    query = query.bind(state.as_str());
                }
                let moved = query.fetch_all(&mut *tx).await?;
                let at_limit = Self::count_in_states(&mut tx, &deployment_id, &retryable).await?;
                let mut outcome = $crate::RetryOutcome {
                    at_limit,
                    ..Default::default()
                };
                if moved.is_empty() {
                    return Ok(outcome);
                }
                Self::insert_events(
                    &mut tx,
                    &deployment_id,
                    &moved,
                    UpdateState::Pending,
                    true,
                    Some(message),
                    at,
                )
                .await?;
                let forgotten = i64::try_from(moved.len()).unwrap_or(i64::MAX);
                outcome.reopened = status == DeploymentStatus::Finished;
                Self::reopen_for_retries(&mut tx, &deployment_id, status, acknowledged - forgotten)
                    .await?;
                outcome.retried = moved
                    .iter()
                    .map(|d| parse("deployment_devices.device_id", d))
                    .collect::<StoreResult<Vec<_>>>()?;
                let mut events = vec![
                    StoreEvent::DeploymentChanged(id),
                    StoreEvent::UpdatesReopened(id),
                ];
                // Nudge a bounded number; the rest hear at their next poll.
                events.extend(
                    outcome
                        .retried
                        .iter()
                        .take($crate::sql::repair::MAX_NUDGES)
                        .map(|d| StoreEvent::CheckInRequested(*d)),
                );
                self.commit_with(tx, &events).await?;
                Ok(outcome)
            }

            async fn reset_update(
                &self,
                id: DeploymentId,
                device: DeviceId,
                reason: &str,
                stuck_since: DateTime<Utc>,
                at: DateTime<Utc>,
            ) -> StoreResult<Option<$crate::ResetOutcome>> {
                let deployment_id = id.to_string();
                let device_id = device.to_string();
                let mut tx = self.begin().await?;
                let current = sqlx::query_as::<$db, (String, i64)>(
                    "SELECT state, updated_at FROM deployment_devices \
                     WHERE deployment_id = $1 AND device_id = $2",
                )
                .bind(deployment_id.as_str())
                .bind(device_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let Some((state, since)) = current else {
                    return Err(StoreError::NotFound(format!(
                        "device {device} in deployment {id}"
                    )));
                };
                let was: UpdateState = parse("deployment_devices.state", &state)?;
                if !$crate::RESETTABLE.contains(&was) || since > millis(stuck_since) {
                    return Ok(None);
                }
                // Only if it did not move since the read.
                let moved = sqlx::query::<$db>(
                    "UPDATE deployment_devices SET state = $3, message = $4, updated_at = $5, \
                     progress_done = NULL, progress_total = NULL, progress_at = NULL \
                     WHERE deployment_id = $1 AND device_id = $2 AND state = $6 \
                     AND updated_at = $7",
                )
                .bind(deployment_id.as_str())
                .bind(device_id.as_str())
                .bind(UpdateState::Pending.as_str())
                .bind(reason)
                .bind(millis(at))
                .bind(was.as_str())
                .bind(since)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved == 0 {
                    return Ok(None);
                }
                Self::insert_events(
                    &mut tx,
                    &deployment_id,
                    std::slice::from_ref(&device_id),
                    UpdateState::Pending,
                    true,
                    Some(reason),
                    at,
                )
                .await?;
                self.commit_with(
                    tx,
                    &[
                        StoreEvent::DeploymentChanged(id),
                        StoreEvent::UpdateChanged {
                            deployment: id,
                            device,
                        },
                        StoreEvent::CheckInRequested(device),
                    ],
                )
                .await?;
                Ok(Some($crate::ResetOutcome {
                    was,
                    since: $crate::codec::time("deployment_devices.updated_at", since)?,
                }))
            }

            async fn retries(&self, id: DeploymentId) -> StoreResult<BTreeMap<DeviceId, u32>> {
                let rows = sqlx::query_as::<$db, (String, i64)>(
                    "SELECT device_id, retries FROM deployment_devices \
                     WHERE deployment_id = $1 AND retries > 0",
                )
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(device, retries)| {
                        Ok((
                            parse("deployment_devices.device_id", &device)?,
                            u32::try_from(retries).unwrap_or(u32::MAX),
                        ))
                    })
                    .collect()
            }
        }
    };
}

pub(crate) use sql_repair;
