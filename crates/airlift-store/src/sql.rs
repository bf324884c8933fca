//! The one implementation of [`Store`](crate::Store) in SQL, instantiated
//! for each backend by [`impl_store!`].
//!
//! Every query is written once, with `$1, $2, …` placeholders (the SQLite
//! driver reads `$N` as the N-th argument) or built by `sqlx::QueryBuilder`,
//! and run at run time: there is no database at build time. Where the
//! dialects differ, the difference lives in the migrations.
//!
//! Rules that must hold under concurrency are kept without long
//! transactions:
//!
//! - a report is one conditional `UPDATE … WHERE state IN (states it may
//!   advance from)`, so a late report can never move a device backwards;
//! - a statement that must see the outcome of a concurrent one first locks
//!   the row they share with a no-op `UPDATE … SET column = column` (a row
//!   lock on PostgreSQL; on SQLite every write transaction starts with
//!   `BEGIN IMMEDIATE` and so holds the write lock): deleting a package
//!   against creating a deployment for it, replacing a device's tags.

/// Column lists, as literals so `concat!` can build constant SQL.
macro_rules! columns {
    (tokens) => {
        "id, name, role, created_at, secret_sha256"
    };
    (audit) => {
        "id, at, actor, action, object, details"
    };
    (packages) => {
        "id, name, version, description, device_types, security_version, size, sha256, \
         signed_by, manifest, provides, blob_key, head, created_at"
    };
    (devices) => {
        "id, status, identity, public_key, device_type, hardware_revision, security_version, \
         created_at, last_check_in"
    };
    (device_records) => {
        "id, status, identity, public_key, device_type, hardware_revision, security_version, \
         created_at, last_check_in, inventory_sha256, tags, installed, attributes"
    };
    (deployments) => {
        "id, name, package_id, target, strategy, status, created_at, finished_at, \
         phase, phase_started_at, phase_met_at, status_reason, acknowledged_failures, \
         install_policy"
    };
    (device_updates) => {
        "device_id, state, message, updated_at, phase, progress_done, progress_total, \
         progress_at"
    };
    (events) => {
        "deployment_id, device_id, state, applied, message, at"
    };
}

/// Rows per multi-row `INSERT`, well below either backend's limit on bound
/// values.
pub(crate) const INSERT_CHUNK: usize = 200;

/// Implements [`Store`](crate::Store) for `$store`, a struct with a
/// `pool: sqlx::Pool<$db>` field; `$begin` starts a write transaction.
macro_rules! impl_store {
    ($store:ident, $db:ty, $begin:literal) => {
        use airlift_protocol::device::{Inventory, Progress};
        use airlift_protocol::install::InstallPolicy;
        use airlift_protocol::management::{
            ApiToken, AuditEntry, Device, DeviceUpdate, UpdateEvent,
        };
        use airlift_protocol::state::{DeploymentStatus, DeviceStatus, Transition, UpdateState};
        use airlift_protocol::{DeploymentId, DeviceId, PackageId, TokenId};
        use chrono::{DateTime, Utc};
        use sqlx::QueryBuilder;
        use std::collections::BTreeMap;
        use $crate::codec::{
            classify, inventory_sha256, millis, normalise_tags, parse, placeholders, to_i64,
            to_json, AuditRow, DeploymentRow, DeviceRecordRow, DeviceUpdateRow, EventRow,
            PackageRow, TokenRow,
        };
        use $crate::sql::INSERT_CHUNK;
        use $crate::{
            ApiTokenRecord, ChangeFeed, CheckInTime, DeploymentRecord, DeviceFilter, DeviceRecord,
            NewAuditEntry, PackageRecord, PageRequest, ReportOutcome, Store, StoreError,
            StoreEvent, StoreResult,
        };

        type Conn = <$db as sqlx::Database>::Connection;

        impl $store {
            /// Starts a transaction that will write.
            async fn begin(&self) -> Result<sqlx::Transaction<'static, $db>, sqlx::Error> {
                self.pool.begin_with($begin).await
            }

            /// Commits `tx` and announces `events` on the change feed: on
            /// PostgreSQL inside the transaction (so they go out exactly when it
            /// commits), on SQLite right after the commit.
            async fn commit_with(
                &self,
                mut tx: sqlx::Transaction<'static, $db>,
                events: &[StoreEvent],
            ) -> StoreResult<()> {
                for event in events {
                    self.stage(&mut tx, event).await?;
                }
                tx.commit().await?;
                for event in events {
                    self.committed(*event);
                }
                Ok(())
            }

            /// Moves every device of the deployment not in a final state to
            /// `cancelled`, with a history event each.
            async fn cancel_open_devices(
                tx: &mut sqlx::Transaction<'static, $db>,
                deployment_id: &str,
                at: DateTime<Utc>,
            ) -> StoreResult<()> {
                let open: Vec<UpdateState> = UpdateState::ALL
                    .iter()
                    .copied()
                    .filter(|s| !s.is_final())
                    .collect();
                let sql = format!(
                    "UPDATE deployment_devices SET state = $2, updated_at = $3 \
                     WHERE deployment_id = $1 AND state IN ({}) RETURNING device_id",
                    placeholders(4, open.len()),
                );
                let mut query = sqlx::query_scalar::<$db, String>(&sql)
                    .bind(deployment_id)
                    .bind(UpdateState::Cancelled.as_str())
                    .bind(millis(at));
                for state in &open {
                    query = query.bind(state.as_str());
                }
                let moved = query.fetch_all(&mut **tx).await?;
                Self::insert_events(
                    tx,
                    deployment_id,
                    &moved,
                    UpdateState::Cancelled,
                    true,
                    None,
                    at,
                )
                .await?;
                Ok(())
            }

            /// `select` followed by the `WHERE` clause of `filter`.
            fn device_query<'a>(select: &str, filter: &'a DeviceFilter) -> QueryBuilder<'a, $db> {
                let mut query = QueryBuilder::<$db>::new(select);
                query.push(" WHERE 1 = 1");
                if let Some(status) = filter.status {
                    query.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(device_type) = &filter.device_type {
                    query
                        .push(" AND device_type = ")
                        .push_bind(device_type.as_str());
                }
                if let Some(tag) = &filter.tag {
                    query
                        .push(
                            " AND EXISTS (SELECT 1 FROM device_tags t \
                             WHERE t.device_id = devices.id AND t.tag = ",
                        )
                        .push_bind(tag.as_str())
                        .push(")");
                }
                for (key, value) in &filter.attributes {
                    query
                        .push(
                            " AND EXISTS (SELECT 1 FROM device_attributes a \
                             WHERE a.device_id = devices.id AND a.key = ",
                        )
                        .push_bind(key.as_str())
                        .push(" AND a.value = ")
                        .push_bind(value.as_str())
                        .push(")");
                }
                for (name, version) in &filter.installed {
                    query
                        .push(
                            " AND EXISTS (SELECT 1 FROM device_installed i \
                             WHERE i.device_id = devices.id AND i.name = ",
                        )
                        .push_bind(name.as_str())
                        .push(" AND i.version = ")
                        .push_bind(version.as_str())
                        .push(")");
                }
                query
            }

            async fn insert_tags(
                conn: &mut Conn,
                device_id: &str,
                tags: &[String],
            ) -> Result<(), sqlx::Error> {
                let tags = normalise_tags(tags);
                for chunk in tags.chunks(INSERT_CHUNK) {
                    let mut query =
                        QueryBuilder::<$db>::new("INSERT INTO device_tags (device_id, tag) ");
                    query.push_values(chunk, |mut row, tag| {
                        row.push_bind(device_id).push_bind(tag.as_str());
                    });
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            async fn insert_map(
                conn: &mut Conn,
                insert: &str,
                device_id: &str,
                map: &BTreeMap<String, String>,
            ) -> Result<(), sqlx::Error> {
                let entries: Vec<_> = map.iter().collect();
                for chunk in entries.chunks(INSERT_CHUNK) {
                    let mut query = QueryBuilder::<$db>::new(insert);
                    query.push_values(chunk, |mut row, (key, value)| {
                        row.push_bind(device_id)
                            .push_bind(key.as_str())
                            .push_bind(value.as_str());
                    });
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            async fn insert_installed(
                conn: &mut Conn,
                device_id: &str,
                installed: &BTreeMap<String, String>,
            ) -> Result<(), sqlx::Error> {
                Self::insert_map(
                    conn,
                    "INSERT INTO device_installed (device_id, name, version) ",
                    device_id,
                    installed,
                )
                .await
            }

            async fn insert_attributes(
                conn: &mut Conn,
                device_id: &str,
                attributes: &BTreeMap<String, String>,
            ) -> Result<(), sqlx::Error> {
                Self::insert_map(
                    conn,
                    "INSERT INTO device_attributes (device_id, key, value) ",
                    device_id,
                    attributes,
                )
                .await
            }

            /// Appends one history event per device, all alike.
            async fn insert_events(
                conn: &mut Conn,
                deployment_id: &str,
                device_ids: &[String],
                state: UpdateState,
                applied: bool,
                message: Option<&str>,
                at: DateTime<Utc>,
            ) -> Result<(), sqlx::Error> {
                for chunk in device_ids.chunks(INSERT_CHUNK) {
                    let mut query = QueryBuilder::<$db>::new(concat!(
                        "INSERT INTO update_events (",
                        $crate::sql::columns!(events),
                        ") "
                    ));
                    query.push_values(chunk, |mut row, device_id| {
                        row.push_bind(deployment_id)
                            .push_bind(device_id.as_str())
                            .push_bind(state.as_str())
                            .push_bind(applied)
                            .push_bind(message)
                            .push_bind(millis(at));
                    });
                    query.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Moves the device to `state` if it is in one of `from`, and
            /// records the attempt in its history either way.
            async fn move_device(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
                state: UpdateState,
                from: &[UpdateState],
                message: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<ReportOutcome> {
                let deployment_id = deployment.to_string();
                let device_id = device.to_string();
                let update = format!(
                    "UPDATE deployment_devices SET state = $3, message = $4, updated_at = $5 \
                     WHERE deployment_id = $1 AND device_id = $2 AND state IN ({})",
                    placeholders(6, from.len()),
                );
                let mut tx = self.begin().await?;
                // A row that appears between the UPDATE and the SELECT (the
                // device was just added) is tried again: bounded, since rows
                // only ever move forward.
                let mut outcome = None;
                for _ in 0..3 {
                    if !from.is_empty() {
                        let mut query = sqlx::query::<$db>(&update)
                            .bind(deployment_id.as_str())
                            .bind(device_id.as_str())
                            .bind(state.as_str())
                            .bind(message)
                            .bind(millis(at));
                        for prior in from {
                            query = query.bind(prior.as_str());
                        }
                        if query.execute(&mut *tx).await?.rows_affected() > 0 {
                            outcome = Some(ReportOutcome {
                                state,
                                applied: true,
                            });
                            break;
                        }
                    }
                    let current = sqlx::query_scalar::<$db, String>(
                        "SELECT state FROM deployment_devices \
                         WHERE deployment_id = $1 AND device_id = $2",
                    )
                    .bind(deployment_id.as_str())
                    .bind(device_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(current) = current else {
                        return Err(StoreError::NotFound(format!(
                            "device {device} in deployment {deployment}"
                        )));
                    };
                    let current: UpdateState = parse("deployment_devices.state", &current)?;
                    if !from.contains(&current) {
                        outcome = Some(ReportOutcome {
                            state: current,
                            applied: false,
                        });
                        break;
                    }
                }
                let Some(outcome) = outcome else {
                    return Err(StoreError::Contention(format!(
                        "device {device} in deployment {deployment} kept changing state"
                    )));
                };
                Self::insert_events(
                    &mut tx,
                    &deployment_id,
                    std::slice::from_ref(&device_id),
                    state,
                    outcome.applied,
                    message,
                    at,
                )
                .await?;
                tx.commit().await?;
                Ok(outcome)
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn changes(&self) -> ChangeFeed {
                self.hub.subscribe()
            }

            async fn request_check_in(&self, id: DeviceId) -> StoreResult<()> {
                let tx = self.begin().await?;
                self.commit_with(tx, &[StoreEvent::CheckInRequested(id)])
                    .await
            }

            // --- settings ---------------------------------------------------

            async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
                Ok(
                    sqlx::query_scalar::<$db, String>("SELECT value FROM settings WHERE key = $1")
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            async fn setting_or_insert(&self, key: &str, value: &str) -> StoreResult<String> {
                sqlx::query::<$db>(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await?;
                // Settings are never deleted: the row is there now.
                Ok(
                    sqlx::query_scalar::<$db, String>("SELECT value FROM settings WHERE key = $1")
                        .bind(key)
                        .fetch_one(&self.pool)
                        .await?,
                )
            }

            // --- management API tokens and audit -----------------------------

            async fn count_api_tokens(&self) -> StoreResult<u64> {
                let count = sqlx::query_scalar::<$db, i64>("SELECT COUNT(*) FROM api_tokens")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn insert_api_token(&self, token: &ApiTokenRecord) -> StoreResult<()> {
                sqlx::query::<$db>(concat!(
                    "INSERT INTO api_tokens (",
                    $crate::sql::columns!(tokens),
                    ") VALUES ($1, $2, $3, $4, $5)"
                ))
                .bind(token.token.id.to_string())
                .bind(token.token.name.as_str())
                .bind(token.token.role.as_str())
                .bind(millis(token.token.created_at))
                .bind(&token.secret_sha256[..])
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    classify(
                        e,
                        &format!("API token {} or its secret hash", token.token.id),
                        "",
                    )
                })?;
                Ok(())
            }

            async fn api_token_by_hash(
                &self,
                secret_sha256: &[u8; 32],
            ) -> StoreResult<Option<ApiTokenRecord>> {
                sqlx::query_as::<$db, TokenRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(tokens),
                    " FROM api_tokens WHERE secret_sha256 = $1"
                ))
                .bind(&secret_sha256[..])
                .fetch_optional(&self.pool)
                .await?
                .map(TokenRow::into_record)
                .transpose()
            }

            async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
                sqlx::query_as::<$db, TokenRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(tokens),
                    " FROM api_tokens ORDER BY created_at, id"
                ))
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|row| Ok(row.into_record()?.token))
                .collect()
            }

            async fn delete_api_token(&self, id: TokenId) -> StoreResult<bool> {
                let result = sqlx::query::<$db>("DELETE FROM api_tokens WHERE id = $1")
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() > 0)
            }

            async fn append_audit(&self, entry: &NewAuditEntry) -> StoreResult<()> {
                sqlx::query::<$db>(
                    "INSERT INTO audit_log (at, actor, action, object, details) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(millis(entry.at))
                .bind(entry.actor.as_str())
                .bind(entry.action.as_str())
                .bind(entry.object.as_str())
                .bind(to_json(&entry.details, "audit details")?)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_audit(
                &self,
                limit: u32,
                before: Option<i64>,
            ) -> StoreResult<Vec<AuditEntry>> {
                let rows = match before {
                    Some(before) => {
                        sqlx::query_as::<$db, AuditRow>(concat!(
                            "SELECT ",
                            $crate::sql::columns!(audit),
                            " FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2"
                        ))
                        .bind(before)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?
                    }
                    None => {
                        sqlx::query_as::<$db, AuditRow>(concat!(
                            "SELECT ",
                            $crate::sql::columns!(audit),
                            " FROM audit_log ORDER BY id DESC LIMIT $1"
                        ))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                rows.into_iter().map(AuditRow::into_entry).collect()
            }

            // --- packages -----------------------------------------------------

            async fn insert_package(&self, record: &PackageRecord) -> StoreResult<()> {
                let package = &record.package;
                sqlx::query::<$db>(concat!(
                    "INSERT INTO packages (",
                    $crate::sql::columns!(packages),
                    ") \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ))
                .bind(package.id.to_string())
                .bind(package.name.as_str())
                .bind(package.version.as_str())
                .bind(package.description.as_deref())
                .bind(to_json(&package.device_types, "package device types")?)
                .bind(to_i64(
                    package.security_version,
                    "package security version",
                )?)
                .bind(to_i64(package.size, "package size")?)
                .bind(package.sha256.as_str())
                .bind(to_json(&package.signed_by, "package signers")?)
                .bind(to_json(&package.manifest, "package manifest")?)
                .bind(to_json(&record.provides, "package provides")?)
                .bind(record.blob_key.as_str())
                .bind(record.head.as_slice())
                .bind(millis(package.created_at))
                .execute(&self.pool)
                .await
                .map_err(|e| {
                    classify(
                        e,
                        &format!(
                            "package {} {} (or id {})",
                            package.name, package.version, package.id
                        ),
                        "",
                    )
                })?;
                Ok(())
            }

            async fn package(&self, id: PackageId) -> StoreResult<Option<PackageRecord>> {
                sqlx::query_as::<$db, PackageRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(packages),
                    " FROM packages WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?
                .map(PackageRow::into_record)
                .transpose()
            }

            async fn list_packages(&self) -> StoreResult<Vec<PackageRecord>> {
                sqlx::query_as::<$db, PackageRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(packages),
                    " FROM packages ORDER BY created_at DESC, id DESC"
                ))
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(PackageRow::into_record)
                .collect()
            }

            async fn delete_package(&self, id: PackageId) -> StoreResult<PackageRecord> {
                let package_id = id.to_string();
                let mut tx = self.begin().await?;
                // Lock the package first: a deployment being created for it
                // either committed before (and is seen below) or waits and
                // then finds the package gone.
                let found =
                    sqlx::query::<$db>("UPDATE packages SET blob_key = blob_key WHERE id = $1")
                        .bind(package_id.as_str())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        > 0;
                if !found {
                    return Err(StoreError::NotFound(format!("package {id}")));
                }
                let active = sqlx::query_scalar::<$db, i64>(
                    "SELECT COUNT(*) FROM deployments \
                     WHERE package_id = $1 AND status = $2",
                )
                .bind(package_id.as_str())
                .bind(DeploymentStatus::Active.as_str())
                .fetch_one(&mut *tx)
                .await?;
                if active > 0 {
                    return Err(StoreError::InUse(format!(
                        "package {id} is used by {active} active deployment(s)"
                    )));
                }
                let row = sqlx::query_as::<$db, PackageRow>(concat!(
                    "DELETE FROM packages WHERE id = $1 RETURNING ",
                    $crate::sql::columns!(packages)
                ))
                .bind(package_id.as_str())
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                row.into_record()
            }

            // --- devices --------------------------------------------------------

            async fn insert_device(&self, device: &Device) -> StoreResult<()> {
                let device_id = device.id.to_string();
                let conflict = || format!("device {} or its public key", device.id);
                let mut tx = self.begin().await?;
                sqlx::query::<$db>(concat!(
                    "INSERT INTO devices (",
                    $crate::sql::columns!(devices),
                    ") \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .bind(device_id.as_str())
                .bind(device.status.as_str())
                .bind(to_json(&device.identity, "device identity")?)
                .bind(device.public_key.as_str())
                .bind(device.device_type.as_deref())
                .bind(device.hardware_revision.as_deref())
                .bind(to_i64(device.security_version, "device security version")?)
                .bind(millis(device.created_at))
                .bind(device.last_check_in.map(millis))
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(e, &conflict(), ""))?;
                Self::insert_tags(&mut tx, &device_id, &device.tags).await?;
                Self::insert_installed(&mut tx, &device_id, &device.installed).await?;
                Self::insert_attributes(&mut tx, &device_id, &device.attributes).await?;
                self.commit_with(tx, &[StoreEvent::DeviceChanged(device.id)])
                    .await
            }

            async fn device(&self, id: DeviceId) -> StoreResult<Option<Device>> {
                Ok(self.device_record(id).await?.map(|record| record.device))
            }

            async fn device_record(&self, id: DeviceId) -> StoreResult<Option<DeviceRecord>> {
                sqlx::query_as::<$db, DeviceRecordRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(device_records),
                    " FROM device_records WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?
                .map(DeviceRecordRow::into_record)
                .transpose()
            }

            async fn device_by_public_key(&self, public_key: &str) -> StoreResult<Option<Device>> {
                sqlx::query_as::<$db, DeviceRecordRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(device_records),
                    " FROM device_records WHERE public_key = $1"
                ))
                .bind(public_key)
                .fetch_optional(&self.pool)
                .await?
                .map(|row| Ok(row.into_record()?.device))
                .transpose()
            }

            async fn list_devices(
                &self,
                filter: &DeviceFilter,
                page: PageRequest,
            ) -> StoreResult<(Vec<Device>, u64)> {
                let per_page = i64::from(page.per_page.clamp(1, 1000));
                let offset = i64::from(page.page.max(1) - 1) * per_page;

                let mut count = Self::device_query("SELECT COUNT(*) FROM devices", filter);
                let total = count
                    .build_query_scalar::<i64>()
                    .fetch_one(&self.pool)
                    .await?;

                // The view under the table's name, so the filter's clauses
                // read the same on both.
                let mut select = Self::device_query(
                    concat!(
                        "SELECT ",
                        $crate::sql::columns!(device_records),
                        " FROM device_records AS devices"
                    ),
                    filter,
                );
                select
                    .push(" ORDER BY created_at, id LIMIT ")
                    .push_bind(per_page);
                select.push(" OFFSET ").push_bind(offset);
                let devices = select
                    .build_query_as::<DeviceRecordRow>()
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(|row| Ok(row.into_record()?.device))
                    .collect::<StoreResult<Vec<Device>>>()?;
                Ok((devices, u64::try_from(total).unwrap_or(0)))
            }

            async fn set_device_status(
                &self,
                id: DeviceId,
                status: DeviceStatus,
            ) -> StoreResult<bool> {
                let mut tx = self.begin().await?;
                let found = sqlx::query::<$db>("UPDATE devices SET status = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(status.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                if found {
                    self.commit_with(tx, &[StoreEvent::DeviceChanged(id)])
                        .await?;
                }
                Ok(found)
            }

            async fn set_device_identity(
                &self,
                id: DeviceId,
                identity: &BTreeMap<String, String>,
            ) -> StoreResult<bool> {
                let mut tx = self.begin().await?;
                let found = sqlx::query::<$db>("UPDATE devices SET identity = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(to_json(identity, "device identity")?)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                if found {
                    self.commit_with(tx, &[StoreEvent::DeviceChanged(id)])
                        .await?;
                }
                Ok(found)
            }

            async fn set_device_tags(&self, id: DeviceId, tags: &[String]) -> StoreResult<bool> {
                let device_id = id.to_string();
                let mut tx = self.begin().await?;
                // Lock the device so concurrent replacements run one after the other.
                let found =
                    sqlx::query::<$db>("UPDATE devices SET identity = identity WHERE id = $1")
                        .bind(device_id.as_str())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        > 0;
                if !found {
                    return Ok(false);
                }
                sqlx::query::<$db>("DELETE FROM device_tags WHERE device_id = $1")
                    .bind(device_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                Self::insert_tags(&mut tx, &device_id, tags).await?;
                self.commit_with(tx, &[StoreEvent::DeviceChanged(id)])
                    .await?;
                Ok(true)
            }

            async fn record_check_in(
                &self,
                id: DeviceId,
                inventory: &Inventory,
                at: DateTime<Utc>,
            ) -> StoreResult<()> {
                let device_id = id.to_string();
                let digest = inventory_sha256(inventory)?;
                // The common case: nothing changed but the time.
                let unchanged = sqlx::query::<$db>(
                    "UPDATE devices SET last_check_in = $2 \
                     WHERE id = $1 AND inventory_sha256 = $3",
                )
                .bind(device_id.as_str())
                .bind(millis(at))
                .bind(digest.as_slice())
                .execute(&self.pool)
                .await?
                .rows_affected()
                    > 0;
                if unchanged {
                    return Ok(());
                }
                let mut tx = self.begin().await?;
                let found = sqlx::query::<$db>(
                    "UPDATE devices SET device_type = $2, hardware_revision = $3, \
                     security_version = $4, \
                     inventory_sha256 = $5, last_check_in = $6 WHERE id = $1",
                )
                .bind(device_id.as_str())
                .bind(inventory.device_type.as_str())
                .bind(inventory.hardware_revision.as_deref())
                .bind(to_i64(
                    inventory.security_version,
                    "device security version",
                )?)
                .bind(digest.as_slice())
                .bind(millis(at))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if !found {
                    return Err(StoreError::NotFound(format!("device {id}")));
                }
                sqlx::query::<$db>("DELETE FROM device_installed WHERE device_id = $1")
                    .bind(device_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<$db>("DELETE FROM device_attributes WHERE device_id = $1")
                    .bind(device_id.as_str())
                    .execute(&mut *tx)
                    .await?;
                Self::insert_installed(&mut tx, &device_id, &inventory.installed).await?;
                Self::insert_attributes(&mut tx, &device_id, &inventory.attributes).await?;
                self.commit_with(tx, &[StoreEvent::InventoryChanged(id)])
                    .await
            }

            async fn record_check_in_times(&self, times: &[CheckInTime]) -> StoreResult<u64> {
                if times.is_empty() {
                    return Ok(0);
                }
                let mut tx = self.begin().await?;
                let mut moved = 0;
                for time in times {
                    moved += sqlx::query::<$db>(
                        "UPDATE devices SET last_check_in = $2 \
                         WHERE id = $1 AND inventory_sha256 = $3 \
                         AND (last_check_in IS NULL OR last_check_in < $2)",
                    )
                    .bind(time.device.to_string())
                    .bind(millis(time.at))
                    .bind(&time.inventory_sha256[..])
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(moved)
            }

            // --- device authentication --------------------------------------------

            async fn use_nonce(
                &self,
                nonce: &str,
                expires_at: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> StoreResult<bool> {
                sqlx::query::<$db>("DELETE FROM auth_nonces WHERE expires_at <= $1")
                    .bind(millis(now))
                    .execute(&self.pool)
                    .await?;
                let inserted = sqlx::query::<$db>(
                    "INSERT INTO auth_nonces (nonce, expires_at) VALUES ($1, $2) \
                     ON CONFLICT (nonce) DO NOTHING",
                )
                .bind(nonce)
                .bind(millis(expires_at))
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(inserted > 0)
            }

            // --- deployments ---------------------------------------------------------

            async fn insert_deployment(
                &self,
                deployment: &DeploymentRecord,
                devices: &[(DeviceId, UpdateState)],
            ) -> StoreResult<()> {
                let deployment_id = deployment.id.to_string();
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
                sqlx::query::<$db>(concat!(
                    "INSERT INTO deployments (",
                    $crate::sql::columns!(deployments),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
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
                .execute(&mut *tx)
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
                    query.build().execute(&mut *tx).await.map_err(|e| {
                        classify(
                            e,
                            &format!("a device listed twice in deployment {}", deployment.id),
                            &format!("a device of deployment {}", deployment.id),
                        )
                    })?;
                }
                self.commit_with(tx, &[StoreEvent::DeploymentChanged(deployment.id)])
                    .await
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
                sqlx::query_as::<$db, DeviceUpdateRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(device_updates),
                    " FROM deployment_devices \
                     WHERE deployment_id = $1 ORDER BY device_id"
                ))
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(DeviceUpdateRow::into_update)
                .collect()
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
                let sql = format!(
                    "UPDATE deployments SET status = $2, finished_at = $3 \
                     WHERE id = $1 AND status = $4 \
                     AND NOT EXISTS (SELECT 1 FROM deployment_devices \
                     WHERE deployment_id = $1 AND state IN ({}))",
                    placeholders(5, open.len()),
                );
                let mut query = sqlx::query::<$db>(&sql)
                    .bind(id.to_string())
                    .bind(DeploymentStatus::Finished.as_str())
                    .bind(millis(at))
                    .bind(DeploymentStatus::Active.as_str());
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

            // --- one device in one deployment ------------------------------------------

            async fn device_update(
                &self,
                deployment: DeploymentId,
                device: DeviceId,
            ) -> StoreResult<Option<DeviceUpdate>> {
                sqlx::query_as::<$db, DeviceUpdateRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(device_updates),
                    " FROM deployment_devices \
                     WHERE deployment_id = $1 AND device_id = $2"
                ))
                .bind(deployment.to_string())
                .bind(device.to_string())
                .fetch_optional(&self.pool)
                .await?
                .map(DeviceUpdateRow::into_update)
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
                     (deployment_id, device_id, state, message, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (deployment_id, device_id) DO NOTHING",
                )
                .bind(deployment.to_string())
                .bind(device.to_string())
                .bind(state.as_str())
                .bind(message)
                .bind(millis(at))
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

pub(crate) use {columns, impl_store};
