//! A deployment's devices by what changed: the SQL of
//! [`DeploymentChanges`](crate::DeploymentChanges), written once for both
//! backends. Expanded inside `impl_store!`, so it sees that macro's
//! imports. The backends' clocks differ in SQL; migration 0018 hides that
//! behind the `database_clock` view and the `changed_at` stamps.

/// The columns of [`DeploymentDeviceRow`](crate::codec::DeploymentDeviceRow)
/// without the message, which is read as `NULL`.
macro_rules! rollout_columns {
    () => {
        "device_id, state, CAST(NULL AS TEXT) AS message, updated_at, phase, \
         progress_done, progress_total, progress_at, joined_late"
    };
}

/// [`DeploymentChanges`](crate::DeploymentChanges) for `$store` on `$db`.
macro_rules! sql_deployment_changes {
    ($store:ident, $db:ty, $begin:literal) => {
        #[async_trait::async_trait]
        impl $crate::DeploymentChanges for $store {
            async fn rollout_devices(
                &self,
                id: DeploymentId,
                since: Option<$crate::ChangeMark>,
            ) -> StoreResult<$crate::DeviceChanges> {
                // The clock first: a row written after this is read now or
                // next time, never neither.
                let read_at = sqlx::query_scalar::<$db, i64>("SELECT now_ms FROM database_clock")
                    .fetch_one(&self.pool)
                    .await?;
                let rows = match since {
                    None => {
                        sqlx::query_as::<$db, DeploymentDeviceRow>(concat!(
                            "SELECT ",
                            $crate::sql::deployment_changes::rollout_columns!(),
                            " FROM deployment_devices WHERE deployment_id = $1 \
                             ORDER BY device_id"
                        ))
                        .bind(id.to_string())
                        .fetch_all(&self.pool)
                        .await?
                    }
                    // Served by the index (deployment_id, changed_at).
                    Some(since) => {
                        sqlx::query_as::<$db, DeploymentDeviceRow>(concat!(
                            "SELECT ",
                            $crate::sql::deployment_changes::rollout_columns!(),
                            " FROM deployment_devices \
                             WHERE deployment_id = $1 AND changed_at >= $2 \
                             ORDER BY device_id"
                        ))
                        .bind(id.to_string())
                        .bind(since.millis())
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                Ok($crate::DeviceChanges {
                    devices: rows
                        .into_iter()
                        .map(DeploymentDeviceRow::into_update)
                        .collect::<StoreResult<_>>()?,
                    read_at: $crate::ChangeMark::from_millis(read_at),
                })
            }
        }
    };
}

pub(crate) use {rollout_columns, sql_deployment_changes};
