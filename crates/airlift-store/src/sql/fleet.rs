//! The fleet as a whole, for the dashboard: devices per status, installed
//! versions, open deployments' counts, recent failures, installs per day,
//! check-ins per minute, and where listed devices stand. The SQL of these
//! [`Store`](crate::Store) methods, written once for both backends as
//! inherent methods of the store, which the `Store` impl of
//! [`impl_store!`](super::impl_store) calls. Expanded inside `impl_store!`,
//! so it sees that macro's imports.
//!
//! Each method is one query over indexed columns (or one transaction, for
//! the check-in counter): an overview of 100 000 devices must not cost a
//! query per device or per deployment.

/// The fleet aggregates, for `$store` on `$db`.
macro_rules! sql_fleet {
    ($store:ident, $db:ty, $begin:literal) => {
        impl $store {
            async fn device_counts(&self, silent_since: DateTime<Utc>) -> StoreResult<DeviceCounts> {
                let rows = sqlx::query_as::<$db, (String, i64, i64)>(
                    "SELECT status, COUNT(*), CAST(COALESCE(SUM(CASE WHEN status = 'accepted' \
                     AND (last_check_in < $1 OR (last_check_in IS NULL AND created_at < $1)) \
                     THEN 1 ELSE 0 END), 0) AS BIGINT) \
                     FROM device_presence GROUP BY status",
                )
                .bind(millis(silent_since))
                .fetch_all(&self.pool)
                .await?;
                let mut counts = DeviceCounts::default();
                for (status, devices, offline) in rows {
                    let status: DeviceStatus = parse("devices.status", &status)?;
                    counts
                        .by_status
                        .insert(status, u64::try_from(devices).unwrap_or(0));
                    counts.offline += u64::try_from(offline).unwrap_or(0);
                }
                Ok(counts)
            }

            async fn installed_versions(
                &self,
                names: u32,
                versions: u32,
            ) -> StoreResult<Vec<VersionCount>> {
                let rows = sqlx::query_as::<$db, (String, String, i64, i64)>(
                    "WITH per_version AS ( \
                         SELECT name, version, COUNT(*) AS devices \
                         FROM device_installed GROUP BY name, version), \
                     ranked AS ( \
                         SELECT name, version, devices, \
                             CAST(SUM(devices) OVER (PARTITION BY name) AS BIGINT) AS name_devices, \
                             ROW_NUMBER() OVER (PARTITION BY name ORDER BY devices DESC, version) \
                                 AS version_rank \
                         FROM per_version), \
                     named AS ( \
                         SELECT name, version, devices, name_devices, version_rank, \
                             DENSE_RANK() OVER (ORDER BY name_devices DESC, name) AS name_rank \
                         FROM ranked) \
                     SELECT name, version, devices, name_devices FROM named \
                     WHERE name_rank <= $1 AND version_rank <= $2 \
                     ORDER BY name_rank, version_rank",
                )
                .bind(i64::from(names))
                .bind(i64::from(versions))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(name, version, devices, name_devices)| VersionCount {
                        name,
                        version,
                        devices: u64::try_from(devices).unwrap_or(0),
                        name_devices: u64::try_from(name_devices).unwrap_or(0),
                    })
                    .collect())
            }

            async fn open_deployment_counts(&self) -> StoreResult<Vec<UpdateCount>> {
                let rows = sqlx::query_as::<$db, (String, String, Option<i64>, i64)>(
                    "SELECT u.deployment_id, u.state, u.phase, COUNT(*) \
                     FROM deployment_devices u JOIN deployments d ON d.id = u.deployment_id \
                     WHERE d.status IN ('active', 'paused') \
                     GROUP BY u.deployment_id, u.state, u.phase",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(deployment, state, phase, devices)| {
                        Ok(UpdateCount {
                            deployment: parse("deployment_devices.deployment_id", &deployment)?,
                            state: parse("deployment_devices.state", &state)?,
                            phase: phase.and_then(|p| u32::try_from(p).ok()),
                            devices: u64::try_from(devices).unwrap_or(0),
                        })
                    })
                    .collect()
            }

            async fn recent_failures(
                &self,
                since: DateTime<Utc>,
                limit: u32,
            ) -> StoreResult<Vec<FailureGroup>> {
                let mut query = QueryBuilder::<$db>::new(
                    "SELECT message, COUNT(*), COUNT(DISTINCT device_id), \
                     COUNT(DISTINCT deployment_id), MAX(at) \
                     FROM update_events WHERE state IN (",
                );
                let mut states = query.separated(", ");
                for state in UpdateState::ALL.iter().filter(|s| s.is_failure()) {
                    states.push_bind(state.as_str());
                }
                query
                    .push(") AND applied = ")
                    .push_bind(true)
                    .push(" AND at >= ")
                    .push_bind(millis(since))
                    .push(" GROUP BY message ORDER BY COUNT(*) DESC, MAX(at) DESC LIMIT ")
                    .push_bind(i64::from(limit));
                let rows = query
                    .build_query_as::<(Option<String>, i64, i64, i64, i64)>()
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter()
                    .map(|(reason, failures, devices, deployments, last_at)| {
                        Ok(FailureGroup {
                            reason,
                            failures: u64::try_from(failures).unwrap_or(0),
                            devices: u64::try_from(devices).unwrap_or(0),
                            deployments: u64::try_from(deployments).unwrap_or(0),
                            last_at: $crate::codec::time("update_events.at", last_at)?,
                        })
                    })
                    .collect()
            }

            async fn installs_per_day(
                &self,
                since: DateTime<Utc>,
            ) -> StoreResult<Vec<InstallCount>> {
                let rows = sqlx::query_as::<$db, (i64, Option<String>, Option<String>, i64)>(
                    "SELECT (e.at / 86400000) * 86400000 AS day, p.name, p.version, COUNT(*) \
                     FROM update_events e \
                     JOIN deployments d ON d.id = e.deployment_id \
                     LEFT JOIN packages p ON p.id = d.package_id \
                     WHERE e.state = 'success' AND e.applied = $2 AND e.at >= $1 \
                     GROUP BY (e.at / 86400000), p.name, p.version ORDER BY day, p.name, p.version",
                )
                .bind(millis(since))
                .bind(true)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(day, name, version, installs)| {
                        Ok(InstallCount {
                            day: $crate::codec::time("update_events.at", day)?,
                            name,
                            version,
                            installs: u64::try_from(installs).unwrap_or(0),
                        })
                    })
                    .collect()
            }

            async fn add_check_ins(
                &self,
                counts: &[CheckInCount],
                forget_before: DateTime<Utc>,
            ) -> StoreResult<()> {
                let mut tx = self.begin().await?;
                for count in counts {
                    sqlx::query::<$db>(
                        "INSERT INTO check_in_minutes (minute, check_ins) VALUES ($1, $2) \
                         ON CONFLICT (minute) DO UPDATE \
                         SET check_ins = check_in_minutes.check_ins + excluded.check_ins",
                    )
                    .bind(millis(count.minute))
                    .bind(to_i64(count.check_ins, "check-ins in a minute")?)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query::<$db>("DELETE FROM check_in_minutes WHERE minute < $1")
                    .bind(millis(forget_before))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn check_ins_per_minute(
                &self,
                since: DateTime<Utc>,
            ) -> StoreResult<Vec<CheckInCount>> {
                let rows = sqlx::query_as::<$db, (i64, i64)>(
                    "SELECT minute, check_ins FROM check_in_minutes \
                     WHERE minute >= $1 ORDER BY minute",
                )
                .bind(millis(since))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(minute, check_ins)| {
                        Ok(CheckInCount {
                            minute: $crate::codec::time("check_in_minutes.minute", minute)?,
                            check_ins: u64::try_from(check_ins).unwrap_or(0),
                        })
                    })
                    .collect()
            }

            async fn current_updates(
                &self,
                devices: &[DeviceId],
            ) -> StoreResult<Vec<CurrentUpdate>> {
                if devices.is_empty() {
                    return Ok(Vec::new());
                }
                let mut found = Vec::with_capacity(devices.len());
                // Ids are bound values: a page of up to 1000 devices stays
                // within either backend's limit per chunk.
                for chunk in devices.chunks(INSERT_CHUNK) {
                    let mut query = QueryBuilder::<$db>::new(concat!(
                        "SELECT deployment_id, ",
                        $crate::sql::columns!(device_updates),
                        " FROM (SELECT u.*, ROW_NUMBER() OVER (PARTITION BY u.device_id \
                         ORDER BY CASE WHEN u.state IN ("
                    ));
                    let mut open = query.separated(", ");
                    for state in UpdateState::ALL.iter().filter(|s| !s.is_final()) {
                        open.push_bind(state.as_str());
                    }
                    query.push(
                        ") THEN 0 ELSE 1 END, u.updated_at DESC, u.deployment_id) AS pick \
                         FROM deployment_devices u WHERE u.device_id IN (",
                    );
                    let mut ids = query.separated(", ");
                    for id in chunk {
                        ids.push_bind(id.to_string());
                    }
                    query.push(")) AS ranked WHERE pick = 1");
                    let rows = query
                        .build_query_as::<(
                            String,
                            String,
                            String,
                            Option<String>,
                            i64,
                            Option<i64>,
                            Option<i64>,
                            Option<i64>,
                            Option<i64>,
                        )>()
                        .fetch_all(&self.pool)
                        .await?;
                    for row in rows {
                        let (deployment, device_id, state, message, updated_at) =
                            (row.0, row.1, row.2, row.3, row.4);
                        let update = DeviceUpdateRow {
                            device_id,
                            state,
                            message,
                            updated_at,
                            phase: row.5,
                            progress_done: row.6,
                            progress_total: row.7,
                            progress_at: row.8,
                        }
                        .into_update()?;
                        found.push(CurrentUpdate {
                            deployment: parse("deployment_devices.deployment_id", &deployment)?,
                            update,
                        });
                    }
                }
                Ok(found)
            }
        }
    };
}

pub(crate) use sql_fleet;
