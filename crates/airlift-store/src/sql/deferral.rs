//! Deferrals: the SQL of [`DeferralStore`](crate::DeferralStore), written
//! once for both backends. Expanded inside `impl_store!`, so it sees that
//! macro's imports.

/// [`DeferralStore`](crate::DeferralStore) for `$store` on `$db`.
macro_rules! sql_deferral {
    ($store:ident, $db:ty, $begin:literal) => {
        /// A stored count as a `u32` (counts are bounded far below).
        fn deferral_count(value: i64) -> StoreResult<u32> {
            u32::try_from(value).map_err(|_| {
                StoreError::Corrupt(format!(
                    "deployment_devices.deferrals is {value}, not a count"
                ))
            })
        }

        #[async_trait::async_trait]
        impl $crate::DeferralStore for $store {
            async fn deferrals(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
            ) -> StoreResult<Option<u32>> {
                sqlx::query_scalar::<$db, i64>(
                    "SELECT deferrals FROM deployment_devices \
                     WHERE deployment_id = $1 AND device_id = $2",
                )
                .bind(deployment.to_string())
                .bind(device.to_string())
                .fetch_optional(&self.pool)
                .await?
                .map(deferral_count)
                .transpose()
            }

            async fn record_deferral(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
                deferral: u32,
                limit: Option<u32>,
                message: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<Option<$crate::DeferralOutcome>> {
                let (deployment_id, device_id) = (deployment.to_string(), device.to_string());
                let mut tx = self.begin().await?;
                // One conditional statement counts it, so that two reports
                // racing cannot both count, nor pass the limit.
                let counted = sqlx::query::<$db>(
                    "UPDATE deployment_devices SET deferrals = deferrals + 1, deferred_at = $3 \
                     WHERE deployment_id = $1 AND device_id = $2 AND state = $4 \
                     AND deferrals = $5 AND deferrals < $6",
                )
                .bind(deployment_id.as_str())
                .bind(device_id.as_str())
                .bind(millis(at))
                .bind(UpdateState::Downloaded.as_str())
                .bind(i64::from(deferral) - 1)
                .bind(limit.map_or(i64::MAX, i64::from))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if counted {
                    Self::insert_events(
                        &mut *tx,
                        &deployment_id,
                        std::slice::from_ref(&device_id),
                        UpdateState::Downloaded,
                        false,
                        message,
                        at,
                    )
                    .await?;
                    tx.commit().await?;
                    return Ok(Some($crate::DeferralOutcome::Counted {
                        deferred: deferral,
                        counted: true,
                    }));
                }
                let row = sqlx::query_as::<$db, (String, i64)>(
                    "SELECT state, deferrals FROM deployment_devices \
                     WHERE deployment_id = $1 AND device_id = $2",
                )
                .bind(deployment_id.as_str())
                .bind(device_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                let Some((state, deferred)) = row else {
                    return Ok(None);
                };
                let state: UpdateState = parse("deployment_devices.state", &state)?;
                let deferred = deferral_count(deferred)?;
                Ok(Some(if deferral <= deferred {
                    $crate::DeferralOutcome::Counted {
                        deferred,
                        counted: false,
                    }
                } else if state != UpdateState::Downloaded {
                    $crate::DeferralOutcome::NotWaiting(state)
                } else if limit.is_some_and(|limit| deferred >= limit) {
                    $crate::DeferralOutcome::Exhausted { deferred }
                } else {
                    $crate::DeferralOutcome::OutOfOrder { deferred }
                }))
            }

            async fn deferral_totals(
                &self,
                deployment: DeploymentId,
            ) -> StoreResult<$crate::DeferralTotals> {
                let (total, devices, most) =
                    sqlx::query_as::<$db, (Option<i64>, i64, Option<i64>)>(
                        "SELECT CAST(SUM(deferrals) AS BIGINT), COUNT(*), MAX(deferrals) \
                     FROM deployment_devices WHERE deployment_id = $1 AND deferrals > 0",
                    )
                    .bind(deployment.to_string())
                    .fetch_one(&self.pool)
                    .await?;
                Ok($crate::DeferralTotals {
                    deferrals: u64::try_from(total.unwrap_or(0)).unwrap_or(0),
                    devices: u64::try_from(devices).unwrap_or(0),
                    most: most.map(deferral_count).transpose()?.unwrap_or(0),
                })
            }
        }
    };
}

pub(crate) use sql_deferral;
