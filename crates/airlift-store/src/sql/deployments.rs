//! Deployments and their rollouts: the SQL of these [`Store`](crate::Store)
//! methods, written once for both backends as inherent methods of the
//! store, which the `Store` impl of [`impl_store!`](super::impl_store)
//! calls. Expanded inside `impl_store!`, so it sees that macro's imports.

/// The deployments and their rollouts, for `$store` on `$db`.
macro_rules! sql_deployments {
    ($store:ident, $db:ty, $begin:literal) => {
        impl $store {
            async fn insert_deployment(
                &self,
                deployment: &DeploymentRecord,
                devices: &[(DeviceId, UpdateState)],
            ) -> StoreResult<()> {
                let mut tx = self.begin().await?;
                // Lock the package against a concurrent delete_package.
                let package =
                    sqlx::query::<$db>("UPDATE packages SET blob_key = blob_key WHERE id = $1")
                        .bind(deployment.package_id.to_string())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                if package == 0 {
                    return Err(StoreError::NotFound(format!(
                        "package {}",
                        deployment.package_id
                    )));
                }
                Self::insert_deployment_rows(&mut tx, deployment, devices).await?;
                self.commit_with(tx, &[StoreEvent::DeploymentChanged(deployment.id)])
                    .await
            }

            /// Writes a deployment's row and its devices' rows in `tx`.
            async fn insert_deployment_rows(
                tx: &mut sqlx::Transaction<'static, $db>,
                deployment: &DeploymentRecord,
                devices: &[(DeviceId, UpdateState)],
            ) -> StoreResult<()> {
                let deployment_id = deployment.id.to_string();
                sqlx::query::<$db>(concat!(
                    "INSERT INTO deployments (",
                    $crate::sql::columns!(deployments),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
                ))
                .bind(deployment_id.as_str())
                .bind(deployment.name.as_str())
                .bind(deployment.package_id.to_string())
                .bind(to_json(&deployment.target, "deployment target")?)
                .bind(to_json(&deployment.strategy, "deployment strategy")?)
                .bind(deployment.status.as_str())
                .bind(millis(deployment.created_at))
                .bind(deployment.finished_at.map(millis))
                .bind(i64::from(deployment.rollout.phase))
                .bind(deployment.rollout.phase_started_at.map(millis))
                .bind(deployment.rollout.phase_met_at.map(millis))
                .bind(deployment.rollout.reason.as_deref())
                .bind(to_i64(
                    deployment.rollout.acknowledged_failures,
                    "acknowledged failures",
                )?)
                .bind(to_json(&deployment.install, "deployment install policy")?)
                .bind(deployment.dynamic)
                .bind(deployment.ends_at.map(millis))
                .execute(&mut **tx)
                .await
                .map_err(|e| classify(e, &format!("deployment {}", deployment.id), ""))?;
                for chunk in devices.chunks(INSERT_CHUNK) {
                    let mut query = QueryBuilder::<$db>::new(
                        "INSERT INTO deployment_devices \
                         (deployment_id, device_id, state, message, updated_at) ",
                    );
                    query.push_values(chunk, |mut row, (device, state)| {
                        row.push_bind(deployment_id.as_str())
                            .push_bind(device.to_string())
                            .push_bind(state.as_str())
                            .push("NULL")
                            .push_bind(millis(deployment.created_at));
                    });
                    query.build().execute(&mut **tx).await.map_err(|e| {
                        classify(
                            e,
                            &format!("a device listed twice in deployment {}", deployment.id),
                            &format!("a device of deployment {}", deployment.id),
                        )
                    })?;
                }
                Ok(())
            }

            async fn deployment(&self, id: DeploymentId) -> StoreResult<Option<DeploymentRecord>> {
                sqlx::query_as::<$db, DeploymentRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(deployments),
                    " FROM deployments WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?
                .map(DeploymentRow::into_record)
                .transpose()
            }

            async fn list_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
                sqlx::query_as::<$db, DeploymentRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(deployments),
                    " FROM deployments ORDER BY created_at DESC, id DESC"
                ))
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(DeploymentRow::into_record)
                .collect()
            }

            async fn active_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
                sqlx::query_as::<$db, DeploymentRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(deployments),
                    " FROM deployments WHERE status = $1 ORDER BY created_at, id"
                ))
                .bind(DeploymentStatus::Active.as_str())
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(DeploymentRow::into_record)
                .collect()
            }

            async fn deployment_counts(
                &self,
                id: DeploymentId,
            ) -> StoreResult<BTreeMap<UpdateState, u64>> {
                let rows = sqlx::query_as::<$db, (String, i64)>(
                    "SELECT state, COUNT(*) FROM deployment_devices \
                     WHERE deployment_id = $1 GROUP BY state",
                )
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(state, count)| {
                        Ok((
                            parse("deployment_devices.state", &state)?,
                            u64::try_from(count).unwrap_or(0),
                        ))
                    })
                    .collect()
            }

            async fn deployment_devices(&self, id: DeploymentId) -> StoreResult<Vec<DeviceUpdate>> {
                sqlx::query_as::<$db, DeploymentDeviceRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(deployment_devices),
                    " FROM deployment_devices \
                     WHERE deployment_id = $1 ORDER BY device_id"
                ))
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(DeploymentDeviceRow::into_update)
                .collect()
            }

            async fn list_deployments_page(
                &self,
                filter: &$crate::DeploymentFilter,
                page: PageRequest,
            ) -> StoreResult<(Vec<DeploymentRecord>, u64)> {
                let per_page = i64::from(page.per_page.clamp(1, 1000));
                let offset = i64::from(page.page.max(1) - 1) * per_page;
                let filtered = |query: &mut QueryBuilder<'_, $db>| {
                    if let Some(status) = filter.status {
                        query.push(" WHERE status = ").push_bind(status.as_str());
                    }
                };
                let mut count = QueryBuilder::<$db>::new("SELECT COUNT(*) FROM deployments");
                filtered(&mut count);
                let total = count
                    .build_query_scalar::<i64>()
                    .fetch_one(&self.pool)
                    .await?;
                let mut select = QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    $crate::sql::columns!(deployments),
                    " FROM deployments"
                ));
                filtered(&mut select);
                select
                    .push(" ORDER BY created_at DESC, id DESC LIMIT ")
                    .push_bind(per_page)
                    .push(" OFFSET ")
                    .push_bind(offset);
                let records = select
                    .build_query_as::<DeploymentRow>()
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(DeploymentRow::into_record)
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok((records, u64::try_from(total).unwrap_or(0)))
            }

            async fn deployment_tallies(
                &self,
                ids: &[DeploymentId],
            ) -> StoreResult<Vec<$crate::UpdateCount>> {
                let mut out = Vec::new();
                // A page is at most 1000 deployments; chunks keep the bound
                // values well inside either backend's limit.
                for chunk in ids.chunks(INSERT_CHUNK) {
                    let mut query = QueryBuilder::<$db>::new(
                        "SELECT deployment_id, state, phase, COUNT(*) FROM deployment_devices \
                         WHERE deployment_id IN (",
                    );
                    let mut listed = query.separated(", ");
                    for id in chunk {
                        listed.push_bind(id.to_string());
                    }
                    query.push(") GROUP BY deployment_id, state, phase");
                    let rows = query
                        .build_query_as::<(String, String, Option<i64>, i64)>()
                        .fetch_all(&self.pool)
                        .await?;
                    for (deployment, state, phase, devices) in rows {
                        out.push($crate::UpdateCount {
                            deployment: parse("deployment_devices.deployment_id", &deployment)?,
                            state: parse("deployment_devices.state", &state)?,
                            phase: phase.and_then(|p| u32::try_from(p).ok()),
                            devices: u64::try_from(devices).unwrap_or(0),
                        });
                    }
                }
                Ok(out)
            }

            async fn deployment_failures(
                &self,
                id: DeploymentId,
                limit: u32,
            ) -> StoreResult<Vec<$crate::FailureGroup>> {
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT message, COUNT(*), MAX(updated_at) FROM deployment_devices \
                     WHERE deployment_id = ",
                );
                query.push_bind(id.to_string()).push(" AND state IN (");
                let mut states = query.separated(", ");
                for state in UpdateState::ALL.iter().filter(|s| s.is_failure()) {
                    states.push_bind(state.as_str());
                }
                query
                    .push(") GROUP BY message ORDER BY COUNT(*) DESC, MAX(updated_at) DESC LIMIT ")
                    .push_bind(i64::from(limit));
                let rows = query
                    .build_query_as::<(Option<String>, i64, i64)>()
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter()
                    .map(|(reason, devices, last_at)| {
                        let devices = u64::try_from(devices).unwrap_or(0);
                        Ok($crate::FailureGroup {
                            reason,
                            failures: devices,
                            devices,
                            deployments: 1,
                            last_at: $crate::codec::time("deployment_devices.updated_at", last_at)?,
                        })
                    })
                    .collect()
            }

            /// ` WHERE …` for a deployment's devices matching `filter`.
            fn push_devices_filter(
                query: &mut QueryBuilder<'_, $db>,
                id: DeploymentId,
                filter: &$crate::DeploymentDevicesFilter,
            ) {
                query
                    .push(" WHERE deployment_id = ")
                    .push_bind(id.to_string());
                if !filter.states.is_empty() {
                    query.push(" AND state IN (");
                    let mut states = query.separated(", ");
                    for state in &filter.states {
                        states.push_bind(state.as_str());
                    }
                    query.push(")");
                }
                match &filter.reason {
                    Some($crate::ReasonMatch::Missing) => {
                        query.push(" AND message IS NULL");
                    }
                    Some($crate::ReasonMatch::StartsWith(start)) => {
                        // substr, not LIKE: a reason's own % and _ are not
                        // wildcards.
                        query
                            .push(" AND substr(message, 1, ")
                            .push_bind(i32::try_from(start.chars().count()).unwrap_or(i32::MAX))
                            .push(") = ")
                            .push_bind(start.clone());
                    }
                    None => {}
                }
            }

            async fn deployment_devices_page(
                &self,
                id: DeploymentId,
                filter: &$crate::DeploymentDevicesFilter,
                page: PageRequest,
            ) -> StoreResult<Vec<DeviceUpdate>> {
                let per_page = i64::from(page.per_page.clamp(1, 1000));
                let offset = i64::from(page.page.max(1) - 1) * per_page;
                let mut select = QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    $crate::sql::columns!(deployment_devices),
                    " FROM deployment_devices"
                ));
                Self::push_devices_filter(&mut select, id, filter);
                select
                    .push(" ORDER BY device_id LIMIT ")
                    .push_bind(per_page)
                    .push(" OFFSET ")
                    .push_bind(offset);
                select
                    .build_query_as::<DeploymentDeviceRow>()
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(DeploymentDeviceRow::into_update)
                    .collect()
            }

            async fn count_deployment_devices(
                &self,
                id: DeploymentId,
                filter: &$crate::DeploymentDevicesFilter,
            ) -> StoreResult<u64> {
                let mut count = QueryBuilder::<$db>::new("SELECT COUNT(*) FROM deployment_devices");
                Self::push_devices_filter(&mut count, id, filter);
                let total = count
                    .build_query_scalar::<i64>()
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(total).unwrap_or(0))
            }

            async fn cancel_deployment(
                &self,
                id: DeploymentId,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let deployment_id = id.to_string();
                let mut tx = self.begin().await?;
                let cancelled = sqlx::query::<$db>(
                    "UPDATE deployments SET status = $2, finished_at = $3 \
                     WHERE id = $1 AND status IN ($4, $5)",
                )
                .bind(deployment_id.as_str())
                .bind(DeploymentStatus::Cancelled.as_str())
                .bind(millis(at))
                .bind(DeploymentStatus::Active.as_str())
                .bind(DeploymentStatus::Paused.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if !cancelled {
                    return Ok(false);
                }
                Self::cancel_open_devices(&mut tx, &deployment_id, at).await?;
                self.commit_with(tx, &[StoreEvent::DeploymentChanged(id)])
                    .await?;
                Ok(true)
            }

            async fn release_install(
                &self,
                id: DeploymentId,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let deployment_id = id.to_string();
                let mut tx = self.begin().await?;
                let policy: Option<String> = sqlx::query_scalar::<$db, String>(
                    "SELECT install_policy FROM deployments \
                     WHERE id = $1 AND status IN ($2, $3)",
                )
                .bind(deployment_id.as_str())
                .bind(DeploymentStatus::Active.as_str())
                .bind(DeploymentStatus::Paused.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(stored) = policy else {
                    return Ok(false);
                };
                let mut policy: InstallPolicy =
                    $crate::codec::json("deployments.install_policy", &stored)?;
                if !policy.download_only {
                    return Ok(false);
                }
                policy.download_only = false;
                // Only if nobody changed it since the read: of two racing
                // releases, one wins.
                let swapped = sqlx::query::<$db>(
                    "UPDATE deployments SET install_policy = $2 \
                     WHERE id = $1 AND install_policy = $3",
                )
                .bind(deployment_id.as_str())
                .bind(to_json(&policy, "deployment install policy")?)
                .bind(stored.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if swapped == 0 {
                    return Ok(false);
                }
                sqlx::query::<$db>(
                    "UPDATE deployment_devices SET updated_at = $3 \
                     WHERE deployment_id = $1 AND state = $2",
                )
                .bind(deployment_id.as_str())
                .bind(UpdateState::Downloaded.as_str())
                .bind(millis(at))
                .execute(&mut *tx)
                .await?;
                self.commit_with(tx, &[StoreEvent::DeploymentChanged(id)])
                    .await?;
                Ok(true)
            }

            async fn open_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
                sqlx::query_as::<$db, DeploymentRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(deployments),
                    " FROM deployments WHERE status IN ($1, $2) ORDER BY created_at, id"
                ))
                .bind(DeploymentStatus::Active.as_str())
                .bind(DeploymentStatus::Paused.as_str())
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(DeploymentRow::into_record)
                .collect()
            }

            async fn update_rollout(
                &self,
                id: DeploymentId,
                from: DeploymentStatus,
                status: DeploymentStatus,
                rollout: &$crate::RolloutState,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let deployment_id = id.to_string();
                let ends = matches!(
                    status,
                    DeploymentStatus::Aborted
                        | DeploymentStatus::Cancelled
                        | DeploymentStatus::Finished
                );
                let mut tx = self.begin().await?;
                let updated = sqlx::query::<$db>(
                    "UPDATE deployments SET status = $2, phase = $3, phase_started_at = $4, \
                     phase_met_at = $5, status_reason = $6, acknowledged_failures = $7, \
                     finished_at = $8 WHERE id = $1 AND status = $9",
                )
                .bind(deployment_id.as_str())
                .bind(status.as_str())
                .bind(i64::from(rollout.phase))
                .bind(rollout.phase_started_at.map(millis))
                .bind(rollout.phase_met_at.map(millis))
                .bind(rollout.reason.as_deref())
                .bind(to_i64(
                    rollout.acknowledged_failures,
                    "acknowledged failures",
                )?)
                .bind(ends.then(|| millis(at)))
                .bind(from.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if !updated {
                    return Ok(false);
                }
                if status == DeploymentStatus::Aborted {
                    Self::cancel_open_devices(&mut tx, &deployment_id, at).await?;
                }
                self.commit_with(tx, &[StoreEvent::DeploymentChanged(id)])
                    .await?;
                Ok(true)
            }

            async fn admit_devices(
                &self,
                id: DeploymentId,
                phase: u32,
                devices: &[DeviceId],
            ) -> StoreResult<u64> {
                let deployment_id = id.to_string();
                let mut tx = self.begin().await?;
                let mut admitted = 0;
                for chunk in devices.chunks(INSERT_CHUNK) {
                    let sql = format!(
                        "UPDATE deployment_devices SET phase = $2 \
                         WHERE deployment_id = $1 AND phase IS NULL AND device_id IN ({})",
                        placeholders(3, chunk.len()),
                    );
                    let mut query = sqlx::query::<$db>(&sql)
                        .bind(deployment_id.as_str())
                        .bind(i64::from(phase));
                    for device in chunk {
                        query = query.bind(device.to_string());
                    }
                    admitted += query.execute(&mut *tx).await?.rows_affected();
                }
                self.commit_with(tx, &[StoreEvent::DeploymentChanged(id)])
                    .await?;
                Ok(admitted)
            }

            async fn take_rollout_lease(
                &self,
                id: DeploymentId,
                owner: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let taken = sqlx::query::<$db>(
                    "UPDATE deployments SET lease_owner = $2, lease_until = $3 \
                     WHERE id = $1 AND (lease_owner IS NULL OR lease_owner = $2 \
                     OR lease_until IS NULL OR lease_until < $4)",
                )
                .bind(id.to_string())
                .bind(owner)
                .bind(millis(until))
                .bind(millis(now))
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(taken > 0)
            }

            async fn finish_deployment_if_done(
                &self,
                id: DeploymentId,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let open: Vec<UpdateState> = UpdateState::ALL
                    .iter()
                    .copied()
                    .filter(|s| !s.is_final())
                    .collect();
                // A dynamic deployment waits for its end as well ($3: its
                // end is the moment asked about, or before).
                let sql = format!(
                    "UPDATE deployments SET status = $2, finished_at = $3 \
                     WHERE id = $1 AND status = $4 \
                     AND (dynamic = $5 OR (ends_at IS NOT NULL AND ends_at <= $3)) \
                     AND NOT EXISTS (SELECT 1 FROM deployment_devices \
                     WHERE deployment_id = $1 AND state IN ({}))",
                    placeholders(6, open.len()),
                );
                let mut query = sqlx::query::<$db>(&sql)
                    .bind(id.to_string())
                    .bind(DeploymentStatus::Finished.as_str())
                    .bind(millis(at))
                    .bind(DeploymentStatus::Active.as_str())
                    .bind(false);
                for state in &open {
                    query = query.bind(state.as_str());
                }
                let mut tx = self.begin().await?;
                let finished = query.execute(&mut *tx).await?.rows_affected() > 0;
                if finished {
                    self.commit_with(tx, &[StoreEvent::DeploymentChanged(id)])
                        .await?;
                }
                Ok(finished)
            }

            async fn end_deployment(
                &self,
                id: DeploymentId,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let mut tx = self.begin().await?;
                let ended = sqlx::query::<$db>(
                    "UPDATE deployments SET ends_at = $2 \
                     WHERE id = $1 AND dynamic = $3 AND status IN ($4, $5) \
                     AND (ends_at IS NULL OR ends_at > $2)",
                )
                .bind(id.to_string())
                .bind(millis(at))
                .bind(true)
                .bind(DeploymentStatus::Active.as_str())
                .bind(DeploymentStatus::Paused.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if !ended {
                    return Ok(false);
                }
                self.commit_with(tx, &[StoreEvent::DeploymentChanged(id)])
                    .await?;
                Ok(true)
            }

            async fn late_joiners(
                &self,
                ids: &[DeploymentId],
            ) -> StoreResult<BTreeMap<DeploymentId, u64>> {
                let mut out = BTreeMap::new();
                for chunk in ids.chunks(INSERT_CHUNK) {
                    let mut query = QueryBuilder::<$db>::new(
                        "SELECT deployment_id, COUNT(*) FROM deployment_devices \
                         WHERE joined_late = ",
                    );
                    query.push_bind(true).push(" AND deployment_id IN (");
                    let mut listed = query.separated(", ");
                    for id in chunk {
                        listed.push_bind(id.to_string());
                    }
                    query.push(") GROUP BY deployment_id");
                    let rows = query
                        .build_query_as::<(String, i64)>()
                        .fetch_all(&self.pool)
                        .await?;
                    for (deployment, devices) in rows {
                        out.insert(
                            parse("deployment_devices.deployment_id", &deployment)?,
                            u64::try_from(devices).unwrap_or(0),
                        );
                    }
                }
                Ok(out)
            }
        }
    };
}

pub(crate) use sql_deployments;
