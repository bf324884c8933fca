//! Transactions and the shared row writers the other areas use: the SQL of these [`Store`](crate::Store)
//! methods, written once for both backends as inherent methods of the
//! store, which the `Store` impl of [`impl_store!`](super::impl_store)
//! calls. Expanded inside `impl_store!`, so it sees that macro's imports.

/// The transactions and the shared row writers the other areas use, for `$store` on `$db`.
macro_rules! sql_common {
    ($store:ident, $db:ty, $begin:literal) => {
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
                if let Some(expression) = &filter.expression {
                    query.push(" AND ");
                    Self::push_target_expr(&mut query, expression);
                }
                query
            }

            /// Inserts `device`'s row and its presence row (see migration
            /// 0019: the check-in time, with copies of the status and
            /// creation time); a unique violation is `Conflict(conflict)`.
            /// Its maps are the caller's to insert.
            async fn insert_device_row(
                conn: &mut Conn,
                device: &Device,
                conflict: &str,
            ) -> StoreResult<()> {
                let device_id = device.id.to_string();
                sqlx::query::<$db>(concat!(
                    "INSERT INTO devices (",
                    $crate::sql::columns!(devices),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ))
                .bind(device_id.as_str())
                .bind(device.status.as_str())
                .bind(to_json(&device.identity, "device identity")?)
                .bind(device.public_key.as_str())
                .bind(device.device_type.as_deref())
                .bind(device.hardware_revision.as_deref())
                .bind(to_i64(device.security_version, "device security version")?)
                .bind(millis(device.created_at))
                .execute(&mut *conn)
                .await
                .map_err(|e| classify(e, conflict, ""))?;
                sqlx::query::<$db>(
                    "INSERT INTO device_presence (id, status, created_at, last_check_in) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(device_id.as_str())
                .bind(device.status.as_str())
                .bind(millis(device.created_at))
                .bind(device.last_check_in.map(millis))
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            /// Copies a device's new status to its presence row; called in
            /// the transaction that wrote it.
            async fn copy_status_to_presence(
                conn: &mut Conn,
                device_id: &str,
                status: DeviceStatus,
            ) -> Result<(), sqlx::Error> {
                sqlx::query::<$db>("UPDATE device_presence SET status = $2 WHERE id = $1")
                    .bind(device_id)
                    .bind(status.as_str())
                    .execute(&mut *conn)
                    .await?;
                Ok(())
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
                if outcome.applied {
                    self.commit_with(tx, &[StoreEvent::UpdateChanged { deployment, device }])
                        .await?;
                } else {
                    tx.commit().await?;
                }
                Ok(outcome)
            }
        }
    };
}

pub(crate) use sql_common;
