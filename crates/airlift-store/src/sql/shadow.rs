//! Device shadows: the SQL of [`ShadowStore`](crate::ShadowStore), written
//! once for both backends as inherent methods of the store, and the trait's
//! impl calling them. Expanded inside `impl_store!`, so it sees that
//! macro's imports.
//!
//! A read-modify-write of a document first makes sure its row exists and
//! locks it with a no-op `UPDATE` (a row lock on PostgreSQL; SQLite's
//! `BEGIN IMMEDIATE` holds the write lock), so concurrent changes to one
//! document apply one after the other. A device's groups are found in one
//! query of three branches: its tags joined to tag groups, the attribute
//! groups none of whose pairs the device lacks, and every expression
//! group; when there is one, the device's facts are read (one more query)
//! and each expression evaluated on them in memory — their number is
//! bounded by `max_groups`, and the rule is the one the server's shadow
//! cache applies ([`GroupRule`](airlift_protocol::shadow::GroupRule)).

/// Columns of a group document.
macro_rules! group_columns {
    () => {
        "g.id, g.tag, g.attributes, g.expression, g.desired, g.desired_meta, g.version, \
         g.updated_at"
    };
}

/// Device shadows, for `$store` on `$db`.
macro_rules! sql_shadow {
    ($store:ident, $db:ty, $begin:literal) => {
        type GroupRow = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
            String,
            i64,
            i64,
        );

        fn shadow_group(row: GroupRow) -> StoreResult<airlift_protocol::shadow::GroupShadow> {
            let (_, tag, attributes, expression, desired, meta, version, at) = row;
            Ok(airlift_protocol::shadow::GroupShadow {
                group: $crate::shadow::group_from(tag, attributes.as_deref(), expression)?,
                desired: $crate::shadow::from_columns(
                    "group_shadows",
                    Some(&desired),
                    Some(&meta),
                    Some(version),
                    Some(at),
                )?,
            })
        }

        impl $store {
            /// The device's whole shadow, read on `conn`.
            async fn read_shadow(
                conn: &mut Conn,
                device: DeviceId,
            ) -> StoreResult<Option<airlift_protocol::shadow::DeviceShadow>> {
                let Some((own, failure)) = Self::read_own(conn, device).await? else {
                    return Ok(None);
                };
                let id = device.to_string();
                let mut groups = sqlx::query_as::<$db, GroupRow>(concat!(
                    "SELECT ",
                    $crate::sql::shadow::group_columns!(),
                    " FROM group_shadows g JOIN device_tags t ON t.tag = g.tag \
                     WHERE t.device_id = $1 \
                     UNION ALL SELECT ",
                    $crate::sql::shadow::group_columns!(),
                    " FROM group_shadows g WHERE g.attributes IS NOT NULL AND NOT EXISTS ( \
                     SELECT 1 FROM group_shadow_attributes ga WHERE ga.group_id = g.id \
                     AND NOT EXISTS (SELECT 1 FROM device_attributes da \
                     WHERE da.device_id = $1 AND da.key = ga.key AND da.value = ga.value)) \
                     UNION ALL SELECT ",
                    $crate::sql::shadow::group_columns!(),
                    " FROM group_shadows g WHERE g.expression IS NOT NULL"
                ))
                .bind(id.as_str())
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(shadow_group)
                .collect::<StoreResult<Vec<_>>>()?;
                if $crate::shadow::has_expressions(&groups) {
                    // Its facts as stored: the last check-in's inventory.
                    let row = sqlx::query_as::<$db, DeviceRecordRow>(concat!(
                        "SELECT ",
                        $crate::sql::columns!(device_records),
                        " FROM device_records WHERE id = $1"
                    ))
                    .bind(id.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
                    // Deleted since the first query (outside a transaction).
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    $crate::shadow::keep_reaching(&mut groups, &row.into_record()?.device);
                }
                Ok(Some($crate::shadow::assemble(
                    device,
                    own.desired,
                    own.reported,
                    groups,
                    failure,
                )))
            }

            /// The device's own documents and its last failure, read on
            /// `conn` in one query; `None` if there is no such device.
            async fn read_own(
                conn: &mut Conn,
                device: DeviceId,
            ) -> StoreResult<
                Option<(
                    $crate::DeviceDocuments,
                    Option<airlift_protocol::shadow::ShadowFailure>,
                )>,
            > {
                let id = device.to_string();
                let row = sqlx::query_as::<$db, $crate::codec::OwnShadowRow>(
                    "SELECT s.desired, s.desired_meta, s.desired_version, s.desired_at, \
                     s.reported, s.reported_meta, s.reported_version, s.reported_at, \
                     s.failure, s.failure_at \
                     FROM devices d LEFT JOIN device_shadows s ON s.device_id = d.id \
                     WHERE d.id = $1",
                )
                .bind(id.as_str())
                .fetch_optional(&mut *conn)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let failure = match (row.failure, row.failure_at) {
                    (Some(reason), Some(at)) => Some(airlift_protocol::shadow::ShadowFailure {
                        reason,
                        at: $crate::codec::time("device_shadows.failure_at", at)?,
                    }),
                    _ => None,
                };
                Ok(Some((row.documents.into_documents()?, failure)))
            }

            /// Makes sure the device's shadow row exists and locks it.
            async fn lock_shadow(
                tx: &mut sqlx::Transaction<'static, $db>,
                device: DeviceId,
            ) -> StoreResult<()> {
                let id = device.to_string();
                sqlx::query::<$db>(
                    "INSERT INTO device_shadows (device_id) VALUES ($1) \
                     ON CONFLICT (device_id) DO NOTHING",
                )
                .bind(id.as_str())
                .execute(&mut **tx)
                .await
                .map_err(|e| classify(e, "", &format!("device {device}")))?;
                sqlx::query::<$db>(
                    "UPDATE device_shadows SET desired_version = desired_version \
                     WHERE device_id = $1",
                )
                .bind(id.as_str())
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            async fn device_shadow(
                &self,
                device: DeviceId,
            ) -> StoreResult<Option<airlift_protocol::shadow::DeviceShadow>> {
                let mut conn = self.pool.acquire().await?;
                Self::read_shadow(&mut conn, device).await
            }

            async fn change_device_desired(
                &self,
                device: DeviceId,
                change: &$crate::DesiredChange,
                limits: &$crate::ShadowLimits,
                at: DateTime<Utc>,
            ) -> StoreResult<$crate::ShadowWrite> {
                let id = device.to_string();
                let mut tx = self.begin().await?;
                Self::lock_shadow(&mut tx, device).await?;
                let (d, dm, dv, da) = sqlx::query_as::<$db, (String, String, i64, Option<i64>)>(
                    "SELECT desired, desired_meta, desired_version, desired_at \
                     FROM device_shadows WHERE device_id = $1",
                )
                .bind(id.as_str())
                .fetch_one(&mut *tx)
                .await?;
                let old = $crate::shadow::from_columns(
                    "device_shadows.desired",
                    Some(&d),
                    Some(&dm),
                    Some(dv),
                    da,
                )?;
                let new = $crate::shadow::changed(&old, change, at);
                if let Some(why) = limits.exceeded_by(&new.document) {
                    return Ok($crate::ShadowWrite::TooLarge(why));
                }
                if new != old {
                    let (doc, meta, version, when) = $crate::shadow::columns(&new)?;
                    sqlx::query::<$db>(
                        "UPDATE device_shadows SET desired = $2, desired_meta = $3, \
                         desired_version = $4, desired_at = $5 WHERE device_id = $1",
                    )
                    .bind(id.as_str())
                    .bind(doc)
                    .bind(meta)
                    .bind(version)
                    .bind(when)
                    .execute(&mut *tx)
                    .await?;
                }
                // Every instance nudges the device if it holds its push
                // stream, and forgets the documents it kept for check-ins.
                let nudge = StoreEvent::CheckInRequested(device);
                if new == old {
                    self.commit_with(tx, &[nudge]).await?;
                } else {
                    self.commit_with(tx, &[StoreEvent::ShadowChanged(device), nudge])
                        .await?;
                }
                Ok($crate::ShadowWrite::Written(new))
            }

            async fn record_reported(
                &self,
                device: DeviceId,
                document: &airlift_protocol::shadow::Document,
                failure: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<airlift_protocol::shadow::DeviceShadow> {
                let id = device.to_string();
                let mut tx = self.begin().await?;
                Self::lock_shadow(&mut tx, device).await?;
                let (r, rm, rv, ra) = sqlx::query_as::<$db, (String, String, i64, Option<i64>)>(
                    "SELECT reported, reported_meta, reported_version, reported_at \
                     FROM device_shadows WHERE device_id = $1",
                )
                .bind(id.as_str())
                .fetch_one(&mut *tx)
                .await?;
                let old = $crate::shadow::from_columns(
                    "device_shadows.reported",
                    Some(&r),
                    Some(&rm),
                    Some(rv),
                    ra,
                )?;
                let new = $crate::shadow::restamped(&old, document.clone(), at);
                let (doc, meta, version, when) = $crate::shadow::columns(&new)?;
                sqlx::query::<$db>(
                    "UPDATE device_shadows SET reported = $2, reported_meta = $3, \
                     reported_version = $4, reported_at = $5, failure = $6, failure_at = $7 \
                     WHERE device_id = $1",
                )
                .bind(id.as_str())
                .bind(doc)
                .bind(meta)
                .bind(version)
                .bind(when)
                .bind(failure)
                .bind(failure.map(|_| millis(at)))
                .execute(&mut *tx)
                .await?;
                let shadow = Self::read_shadow(&mut tx, device)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("device {device}")))?;
                self.commit_with(tx, &[StoreEvent::ShadowChanged(device)])
                    .await?;
                Ok(shadow)
            }

            async fn group_shadow(
                &self,
                group: &airlift_protocol::shadow::ShadowGroup,
            ) -> StoreResult<Option<airlift_protocol::shadow::GroupShadow>> {
                sqlx::query_as::<$db, GroupRow>(concat!(
                    "SELECT ",
                    $crate::sql::shadow::group_columns!(),
                    " FROM group_shadows g WHERE g.id = $1"
                ))
                .bind(group.id())
                .fetch_optional(&self.pool)
                .await?
                .map(shadow_group)
                .transpose()
            }

            async fn list_group_shadows(
                &self,
                limit: u32,
            ) -> StoreResult<Vec<airlift_protocol::shadow::GroupShadow>> {
                sqlx::query_as::<$db, GroupRow>(concat!(
                    "SELECT ",
                    $crate::sql::shadow::group_columns!(),
                    " FROM group_shadows g ORDER BY g.id LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(shadow_group)
                .collect()
            }

            async fn change_group_desired(
                &self,
                group: &airlift_protocol::shadow::ShadowGroup,
                change: &$crate::DesiredChange,
                limits: &$crate::ShadowLimits,
                at: DateTime<Utc>,
            ) -> StoreResult<$crate::ShadowWrite> {
                let id = group.id();
                let mut tx = self.begin().await?;
                let exists = sqlx::query::<$db>(
                    "UPDATE group_shadows SET version = version WHERE id = $1",
                )
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                let old = if exists {
                    let row = sqlx::query_as::<$db, GroupRow>(concat!(
                        "SELECT ",
                        $crate::sql::shadow::group_columns!(),
                        " FROM group_shadows g WHERE g.id = $1"
                    ))
                    .bind(id.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                    shadow_group(row)?.desired
                } else {
                    let count: i64 = sqlx::query_scalar::<$db, i64>(
                        "SELECT COUNT(*) FROM group_shadows",
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    if u64::try_from(count).unwrap_or(0) >= limits.max_groups {
                        return Ok($crate::ShadowWrite::TooManyGroups(limits.max_groups));
                    }
                    Default::default()
                };
                let new = $crate::shadow::changed(&old, change, at);
                if let Some(why) = limits.exceeded_by(&new.document) {
                    return Ok($crate::ShadowWrite::TooLarge(why));
                }
                let (doc, meta, version, when) = $crate::shadow::columns(&new)?;
                if !exists {
                    Self::insert_group(&mut tx, group, (doc, meta, version, when)).await?;
                } else if new != old {
                    sqlx::query::<$db>(
                        "UPDATE group_shadows SET desired = $2, desired_meta = $3, \
                         version = $4, updated_at = $5 WHERE id = $1",
                    )
                    .bind(id.as_str())
                    .bind(doc)
                    .bind(meta)
                    .bind(version)
                    .bind(when.unwrap_or_else(|| millis(at)))
                    .execute(&mut *tx)
                    .await?;
                }
                if !exists || new != old {
                    self.commit_with(tx, &[StoreEvent::GroupShadowsChanged])
                        .await?;
                } else {
                    tx.commit().await?;
                }
                Ok($crate::ShadowWrite::Written(new))
            }

            /// Inserts a new group document and its attribute pairs.
            async fn insert_group(
                tx: &mut sqlx::Transaction<'static, $db>,
                group: &airlift_protocol::shadow::ShadowGroup,
                (doc, meta, version, when): (String, String, i64, Option<i64>),
            ) -> StoreResult<()> {
                use airlift_protocol::shadow::ShadowGroup;
                let id = group.id();
                let (tag, attributes, expression) = match group {
                    ShadowGroup::Tag(tag) => (Some(tag.as_str()), None, None),
                    ShadowGroup::Attributes(pairs) => {
                        (None, Some(to_json(pairs, "group attributes")?), None)
                    }
                    ShadowGroup::Expression(text) => (None, None, Some(text.as_str())),
                };
                sqlx::query::<$db>(
                    "INSERT INTO group_shadows \
                     (id, tag, attributes, expression, desired, desired_meta, version, \
                     updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(id.as_str())
                .bind(tag)
                .bind(attributes)
                .bind(expression)
                .bind(doc)
                .bind(meta)
                .bind(version)
                .bind(when.unwrap_or(0))
                .execute(&mut **tx)
                .await
                .map_err(|e| {
                    classify(e, &format!("group {id} was created meanwhile: try again"), "")
                })?;
                if let ShadowGroup::Attributes(pairs) = group {
                    for (key, value) in pairs {
                        sqlx::query::<$db>(
                            "INSERT INTO group_shadow_attributes (group_id, key, value) \
                             VALUES ($1, $2, $3)",
                        )
                        .bind(id.as_str())
                        .bind(key.as_str())
                        .bind(value.as_str())
                        .execute(&mut **tx)
                        .await?;
                    }
                }
                Ok(())
            }

            async fn delete_group_desired(
                &self,
                group: &airlift_protocol::shadow::ShadowGroup,
            ) -> StoreResult<bool> {
                let id = group.id();
                let mut tx = self.begin().await?;
                sqlx::query::<$db>("DELETE FROM group_shadow_attributes WHERE group_id = $1")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                let deleted = sqlx::query::<$db>("DELETE FROM group_shadows WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                if deleted {
                    self.commit_with(tx, &[StoreEvent::GroupShadowsChanged])
                        .await?;
                } else {
                    tx.commit().await?;
                }
                Ok(deleted)
            }
        }

        #[async_trait::async_trait]
        impl $crate::ShadowStore for $store {
            async fn device_shadow(
                &self,
                device: DeviceId,
            ) -> StoreResult<Option<airlift_protocol::shadow::DeviceShadow>> {
                self.device_shadow(device).await
            }

            async fn device_documents(
                &self,
                device: DeviceId,
            ) -> StoreResult<Option<$crate::DeviceDocuments>> {
                let mut conn = self.pool.acquire().await?;
                Ok(Self::read_own(&mut conn, device).await?.map(|(own, _)| own))
            }

            async fn change_device_desired(
                &self,
                device: DeviceId,
                change: &$crate::DesiredChange,
                limits: &$crate::ShadowLimits,
                at: DateTime<Utc>,
            ) -> StoreResult<$crate::ShadowWrite> {
                self.change_device_desired(device, change, limits, at).await
            }

            async fn record_reported(
                &self,
                device: DeviceId,
                document: &airlift_protocol::shadow::Document,
                failure: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<airlift_protocol::shadow::DeviceShadow> {
                self.record_reported(device, document, failure, at).await
            }

            async fn group_shadow(
                &self,
                group: &airlift_protocol::shadow::ShadowGroup,
            ) -> StoreResult<Option<airlift_protocol::shadow::GroupShadow>> {
                self.group_shadow(group).await
            }

            async fn list_group_shadows(
                &self,
                limit: u32,
            ) -> StoreResult<Vec<airlift_protocol::shadow::GroupShadow>> {
                self.list_group_shadows(limit).await
            }

            async fn change_group_desired(
                &self,
                group: &airlift_protocol::shadow::ShadowGroup,
                change: &$crate::DesiredChange,
                limits: &$crate::ShadowLimits,
                at: DateTime<Utc>,
            ) -> StoreResult<$crate::ShadowWrite> {
                self.change_group_desired(group, change, limits, at).await
            }

            async fn delete_group_desired(
                &self,
                group: &airlift_protocol::shadow::ShadowGroup,
            ) -> StoreResult<bool> {
                self.delete_group_desired(group).await
            }
        }
    };
}

pub(crate) use group_columns;
pub(crate) use sql_shadow;
