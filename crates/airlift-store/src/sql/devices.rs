//! Devices: admission, identity, tags, inventory and check-ins, and authentication nonces: the SQL of these [`Store`](crate::Store)
//! methods, written once for both backends as inherent methods of the
//! store, which the `Store` impl of [`impl_store!`](super::impl_store)
//! calls. Expanded inside `impl_store!`, so it sees that macro's imports.

/// The devices: admission, identity, tags, inventory and check-ins, and authentication nonces, for `$store` on `$db`.
macro_rules! sql_devices {
    ($store:ident, $db:ty, $begin:literal) => {
        impl $store {
            async fn request_check_in(&self, id: DeviceId) -> StoreResult<()> {
                let tx = self.begin().await?;
                self.commit_with(tx, &[StoreEvent::CheckInRequested(id)])
                    .await
            }

            async fn insert_device(&self, device: &Device) -> StoreResult<()> {
                let device_id = device.id.to_string();
                let conflict = format!("device {} or its public key", device.id);
                let mut tx = self.begin().await?;
                Self::insert_device_row(&mut tx, device, &conflict).await?;
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

            /// The view's unused columns are not computed: both databases
            /// flatten a view and drop what the outer query never reads,
            /// so this looks up three tables (the device, its tags, its
            /// shadow) where the whole record looks up four.
            async fn device_summary_with_documents(
                &self,
                id: DeviceId,
            ) -> StoreResult<Option<(DeviceSummary, $crate::DeviceDocuments)>> {
                sqlx::query_as::<$db, SummaryWithDocumentsRow>(
                    "SELECT r.id, r.status, r.inventory_sha256, r.tags, \
                     s.desired, s.desired_meta, s.desired_version, s.desired_at, \
                     s.reported, s.reported_meta, s.reported_version, s.reported_at \
                     FROM device_records r LEFT JOIN device_shadows s ON s.device_id = r.id \
                     WHERE r.id = $1",
                )
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?
                .map(|row| {
                    Ok((row.summary.into_summary()?, row.documents.into_documents()?))
                })
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

                // Neither statement is kept prepared: a kept one is soon
                // planned once for any values (PostgreSQL's generic plan),
                // and how many devices a filter's values match is what
                // decides the plan — a tag on half the fleet and one on
                // ten devices want opposite ones (a generic attribute page
                // probed 11 000 devices one by one: 90 ms instead of 11).
                let total = Self::device_count_query(filter)
                    .build_query_scalar::<i64>()
                    .persistent(false)
                    .fetch_one(&self.pool)
                    .await?;

                if offset >= total {
                    return Ok((Vec::new(), u64::try_from(total).unwrap_or(0)));
                }
                // A page past the middle is read from the other end, in the
                // reverse order, so that no page skips more than half the
                // rows (the last page of 100 000 skips none).
                let reversed = offset * 2 > total;
                let (offset, per_page) = if reversed {
                    let limit = per_page.min(total - offset);
                    (total - offset - limit, limit)
                } else {
                    (offset, per_page)
                };
                // The page's ids first, from the table and its indexes; then
                // only those devices through the view, whose per-device
                // aggregates must not run for the rows an OFFSET skips.
                let order = Self::device_order(filter.sort, filter.descending != reversed);
                let source = $crate::sql::DeviceSource::of(filter, Some(filter.sort));
                let mut select = if filter.search.is_some() {
                    // A search's matches are found first (through the
                    // identity's trigram index on PostgreSQL), then sorted:
                    // walking the order's index and testing each device
                    // instead costs a scan of the fleet when the matches
                    // lie at its far end (a MAC range is a creation range).
                    let heard = if source.has_check_in_time() { ", last_check_in" } else { "" };
                    let mut select = Self::device_query(
                        &format!(
                            "WITH matched AS MATERIALIZED (SELECT id, status, identity, \
                             device_type, created_at{heard} FROM {}",
                            source.table()
                        ),
                        filter,
                    );
                    Self::push_listing_filter(&mut select, filter);
                    select.push(concat!(
                        ") SELECT ",
                        $crate::sql::columns!(device_records),
                        " FROM device_records WHERE id IN (SELECT id FROM matched"
                    ));
                    select
                } else {
                    Self::records_of_matches(filter, Some(filter.sort))
                };
                select
                    .push(" ORDER BY ")
                    .push(order)
                    .push(" LIMIT ")
                    .push_bind(per_page);
                select
                    .push(" OFFSET ")
                    .push_bind(offset)
                    .push(") ORDER BY ")
                    .push(order);
                let mut devices = select
                    .build_query_as::<DeviceRecordRow>()
                    .persistent(false)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(|row| Ok(row.into_record()?.device))
                    .collect::<StoreResult<Vec<Device>>>()?;
                if reversed {
                    devices.reverse();
                }
                Ok((devices, u64::try_from(total).unwrap_or(0)))
            }

            /// Up to `limit` devices matching `filter` (its sort ignored)
            /// whose id is after `after`, by id: a walk over every match
            /// that costs the same at its end as at its start, with no
            /// count (an OFFSET walk re-reads every skipped row, so reading
            /// 100 000 devices 1 000 at a time read 5 million).
            async fn devices_after(
                &self,
                filter: &DeviceFilter,
                after: Option<DeviceId>,
                limit: u32,
            ) -> StoreResult<Vec<Device>> {
                let mut select = Self::records_of_matches(filter, None);
                if let Some(after) = after {
                    select.push(" AND id > ").push_bind(after.to_string());
                }
                select
                    .push(" ORDER BY id LIMIT ")
                    .push_bind(i64::from(limit.clamp(1, 1000)))
                    .push(") ORDER BY id");
                select
                    .build_query_as::<DeviceRecordRow>()
                    .persistent(false)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(|row| Ok(row.into_record()?.device))
                    .collect()
            }

            /// The device records of the devices `filter` matches, as an
            /// open `… WHERE id IN (SELECT id FROM devices WHERE …` for the
            /// caller to order (by `sort`, or by id if `None`), limit and
            /// close.
            fn records_of_matches<'a>(
                filter: &'a DeviceFilter,
                sort: Option<$crate::DeviceSort>,
            ) -> QueryBuilder<'a, $db> {
                let mut select = Self::device_query(
                    &format!(
                        concat!(
                            "SELECT ",
                            $crate::sql::columns!(device_records),
                            " FROM device_records WHERE id IN (SELECT id FROM {}"
                        ),
                        $crate::sql::DeviceSource::of(filter, sort).table()
                    ),
                    filter,
                );
                Self::push_listing_filter(&mut select, filter);
                select
            }

            /// The count of a listing's matches. A filter made only of
            /// what devices carry (tags, attributes, installed versions,
            /// updates) is counted from those tables' indexes alone — each
            /// entry names an existing device (foreign keys), and once per
            /// device (their keys) —, without reading the devices: at
            /// 100 000 devices that is the difference between a scan of the
            /// fleet and one of the matches.
            fn device_count_query<'a>(filter: &'a DeviceFilter) -> QueryBuilder<'a, $db> {
                // Every field named, so that a new one must be sorted in.
                let DeviceFilter {
                    status,
                    device_type,
                    tag,
                    attributes,
                    installed,
                    search,
                    silent_since,
                    heard_since,
                    update,
                    expression,
                    sort: _,
                    descending: _,
                } = filter;
                // An expression reads the devices (their type, status) and
                // may negate what they carry: counted on the devices.
                let on_devices = status.is_some()
                    || expression.is_some()
                    || device_type.is_some()
                    || search.is_some()
                    || silent_since.is_some()
                    || heard_since.is_some();
                let carried = tag.is_some()
                    || !attributes.is_empty()
                    || !installed.is_empty()
                    || update.is_some();
                if on_devices || !carried {
                    let mut count = Self::device_query(
                        &format!(
                            "SELECT COUNT(*) FROM {}",
                            $crate::sql::DeviceSource::of(filter, None).table()
                        ),
                        filter,
                    );
                    Self::push_listing_filter(&mut count, filter);
                    return count;
                }
                Self::carried_count_query(filter)
            }

            /// [`device_count_query`] of a filter made only of what devices
            /// carry: the first set read drives, every other one is a
            /// semi-join (`device_id IN (…)`) beside it, never nested in the
            /// one before (SQLite's parser refuses a few dozen nested
            /// subqueries: 16 attributes and 16 versions were a 500).
            fn carried_count_query<'a>(filter: &'a DeviceFilter) -> QueryBuilder<'a, $db> {
                // Updates in any deployment name a device once per
                // deployment: read first, they are counted per device.
                let by_update = filter.tag.is_none()
                    && filter.attributes.is_empty()
                    && filter.installed.is_empty()
                    && filter
                        .update
                        .as_ref()
                        .is_some_and(|u| u.deployment.is_none());
                let mut query = QueryBuilder::<$db>::new(if by_update {
                    "SELECT COUNT(DISTINCT device_id) FROM (SELECT device_id FROM "
                } else {
                    "SELECT COUNT(*) FROM (SELECT device_id FROM "
                });
                // Opens the set read from `table`; gives what closes it (a
                // semi-join's parenthesis, nothing for the first set).
                let mut first = true;
                let mut next = |query: &mut QueryBuilder<'a, $db>, table: &str| -> &'static str {
                    if first {
                        query.push(table).push(" WHERE ");
                        first = false;
                        ""
                    } else {
                        query
                            .push(" AND device_id IN (SELECT device_id FROM ")
                            .push(table)
                            .push(" WHERE ");
                        ")"
                    }
                };
                if let Some(tag) = &filter.tag {
                    let close = next(&mut query, "device_tags");
                    query.push("tag = ").push_bind(tag.as_str()).push(close);
                }
                for (table, key, value, pairs) in [
                    ("device_attributes", "key", "value", &filter.attributes),
                    ("device_installed", "name", "version", &filter.installed),
                ] {
                    for (k, v) in pairs {
                        let close = next(&mut query, table);
                        query
                            .push(key)
                            .push(" = ")
                            .push_bind(k.as_str())
                            .push(" AND ")
                            .push(value)
                            .push(" = ")
                            .push_bind(v.as_str())
                            .push(close);
                    }
                }
                if let Some(update) = &filter.update {
                    let close = next(&mut query, "deployment_devices");
                    query.push("1 = 1");
                    if let Some(deployment) = update.deployment {
                        query
                            .push(" AND deployment_id = ")
                            .push_bind(deployment.to_string());
                    }
                    if !update.states.is_empty() {
                        query.push(" AND state IN (");
                        let mut states = query.separated(", ");
                        for state in &update.states {
                            states.push_bind(state.as_str());
                        }
                        query.push(")");
                    }
                    if let Some(message) = &update.message {
                        query.push(" AND message = ").push_bind(message.as_str());
                    }
                    query.push(close);
                }
                query.push(") AS matched");
                query
            }

            /// The `ORDER BY` terms of a listing, unqualified so that they
            /// read the same on the table and on the view. Each order ends
            /// with the id, and its descending form is its exact reverse.
            fn device_order(sort: $crate::DeviceSort, descending: bool) -> &'static str {
                use $crate::DeviceSort;
                match (sort, descending) {
                    (DeviceSort::CreatedAt, false) => "created_at, id",
                    (DeviceSort::CreatedAt, true) => "created_at DESC, id DESC",
                    // The expression of the devices_identity index.
                    (DeviceSort::Identity, false) => "substr(identity, 1, 128), id",
                    (DeviceSort::Identity, true) => "substr(identity, 1, 128) DESC, id DESC",
                    (DeviceSort::DeviceType, false) => "device_type ASC NULLS LAST, created_at, id",
                    (DeviceSort::DeviceType, true) => {
                        "device_type DESC NULLS FIRST, created_at DESC, id DESC"
                    }
                    (DeviceSort::Status, false) => "status, created_at, id",
                    (DeviceSort::Status, true) => "status DESC, created_at DESC, id DESC",
                    (DeviceSort::LastCheckIn, false) => {
                        "last_check_in ASC NULLS FIRST, created_at, id"
                    }
                    (DeviceSort::LastCheckIn, true) => {
                        "last_check_in DESC NULLS LAST, created_at DESC, id DESC"
                    }
                }
            }

            /// The clauses of a listing's filter beyond [`device_query`]'s:
            /// identity search, silence, and updates.
            fn push_listing_filter<'a>(
                query: &mut QueryBuilder<'a, $db>,
                filter: &'a DeviceFilter,
            ) {
                if let Some(search) = filter.search.as_deref() {
                    let mut pattern = String::with_capacity(search.len() + 2);
                    pattern.push('%');
                    for c in search.to_ascii_lowercase().chars() {
                        if matches!(c, '%' | '_' | '\\') {
                            pattern.push('\\');
                        }
                        pattern.push(c);
                    }
                    pattern.push('%');
                    query
                        .push(" AND (LOWER(identity) LIKE ")
                        .push_bind(pattern)
                        .push(" ESCAPE '\\' OR id = ")
                        .push_bind(search.trim().to_ascii_lowercase())
                        .push(")");
                }
                if let Some(at) = filter.silent_since {
                    let at = millis(at);
                    query
                        .push(" AND (last_check_in < ")
                        .push_bind(at)
                        .push(" OR (last_check_in IS NULL AND created_at < ")
                        .push_bind(at)
                        .push("))");
                }
                if let Some(at) = filter.heard_since {
                    let at = millis(at);
                    query
                        .push(" AND (last_check_in >= ")
                        .push_bind(at)
                        .push(" OR (last_check_in IS NULL AND created_at >= ")
                        .push_bind(at)
                        .push("))");
                }
                if let Some(update) = &filter.update {
                    query.push(
                        " AND EXISTS (SELECT 1 FROM deployment_devices u \
                         WHERE u.device_id = devices.id",
                    );
                    if let Some(deployment) = update.deployment {
                        query
                            .push(" AND u.deployment_id = ")
                            .push_bind(deployment.to_string());
                    }
                    if !update.states.is_empty() {
                        query.push(" AND u.state IN (");
                        let mut states = query.separated(", ");
                        for state in &update.states {
                            states.push_bind(state.as_str());
                        }
                        query.push(")");
                    }
                    if let Some(message) = &update.message {
                        query.push(" AND u.message = ").push_bind(message.as_str());
                    }
                    query.push(")");
                }
            }

            async fn set_device_status(
                &self,
                id: DeviceId,
                status: DeviceStatus,
            ) -> StoreResult<bool> {
                let mut tx = self.begin().await?;
                let device_id = id.to_string();
                let found = sqlx::query::<$db>("UPDATE devices SET status = $2 WHERE id = $1")
                    .bind(device_id.as_str())
                    .bind(status.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                if found {
                    Self::copy_status_to_presence(&mut tx, &device_id, status).await?;
                    self.commit_with(tx, &[StoreEvent::DeviceChanged(id)])
                        .await?;
                }
                Ok(found)
            }

            async fn transition_device_status(
                &self,
                id: DeviceId,
                from: DeviceStatus,
                to: DeviceStatus,
                identity: Option<&BTreeMap<String, String>>,
            ) -> StoreResult<bool> {
                let identity = identity
                    .map(|identity| to_json(identity, "device identity"))
                    .transpose()?;
                let device_id = id.to_string();
                let mut tx = self.begin().await?;
                // One statement that checks and sets, so a status written
                // between a caller's read and this write is never overwritten.
                let moved = sqlx::query::<$db>(
                    "UPDATE devices SET status = $3, identity = COALESCE($4, identity) \
                     WHERE id = $1 AND status = $2",
                )
                .bind(device_id.as_str())
                .bind(from.as_str())
                .bind(to.as_str())
                .bind(identity)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if moved {
                    Self::copy_status_to_presence(&mut tx, &device_id, to).await?;
                    self.commit_with(tx, &[StoreEvent::DeviceChanged(id)])
                        .await?;
                }
                Ok(moved)
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
                    "UPDATE device_presence SET last_check_in = $2 \
                     WHERE id = $1 AND EXISTS (SELECT 1 FROM devices \
                     WHERE devices.id = $1 AND inventory_sha256 = $3)",
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
                     security_version = $4, inventory_sha256 = $5 WHERE id = $1",
                )
                .bind(device_id.as_str())
                .bind(inventory.device_type.as_str())
                .bind(inventory.hardware_revision.as_deref())
                .bind(to_i64(
                    inventory.security_version,
                    "device security version",
                )?)
                .bind(digest.as_slice())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if !found {
                    return Err(StoreError::NotFound(format!("device {id}")));
                }
                sqlx::query::<$db>("UPDATE device_presence SET last_check_in = $2 WHERE id = $1")
                    .bind(device_id.as_str())
                    .bind(millis(at))
                    .execute(&mut *tx)
                    .await?;
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
                // One statement per chunk, not one per device: a row at a
                // time could not keep up with thousands of check-ins a second
                // (each flush took longer than the period it covered, and the
                // queue only grew). `column1…` are the names both PostgreSQL
                // and SQLite give the columns of a VALUES list. The time goes
                // to the narrow presence table (migration 0019 says why); the
                // inventory's digest is read from the device's row.
                let mut tx = self.begin().await?;
                let mut moved = 0;
                for chunk in times.chunks(CHECK_IN_TIME_CHUNK) {
                    let mut query = QueryBuilder::<$db>::new(
                        "UPDATE device_presence SET last_check_in = v.at FROM \
                         (SELECT column1 AS id, column2 AS at, column3 AS sha FROM (",
                    );
                    query.push_values(chunk, |mut row, time| {
                        row.push_bind(time.device.to_string())
                            .push_bind(millis(time.at))
                            .push_bind(&time.inventory_sha256[..]);
                    });
                    query.push(
                        ") AS t) AS v, devices WHERE device_presence.id = v.id \
                         AND devices.id = v.id AND devices.inventory_sha256 = v.sha \
                         AND (device_presence.last_check_in IS NULL \
                              OR device_presence.last_check_in < v.at)",
                    );
                    moved += query.build().execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(moved)
            }

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
        }
    };
}

pub(crate) use sql_devices;

/// What a listing or a count of devices reads: the check-in time lives in
/// `device_presence`, with copies of the status and the creation time
/// (migration 0019).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceSource {
    /// The devices alone: no check-in time is needed.
    Devices,
    /// The presence table alone: a status, online/offline filter or the
    /// last-seen order and nothing else; its indexes answer the offline
    /// counts and the lists by last check-in without reading a device.
    Presence,
    /// Both, joined under the devices' name and columns, so that a filter
    /// reads the same on either.
    Joined,
}

impl DeviceSource {
    /// The source of `filter`'s matches, ordered by `sort` (`None`: by id,
    /// or not at all).
    pub(crate) fn of(filter: &crate::DeviceFilter, sort: Option<crate::DeviceSort>) -> Self {
        use crate::DeviceSort;
        // Every field named, so that a new one must be sorted in.
        let crate::DeviceFilter {
            status: _,
            device_type,
            tag,
            attributes,
            installed,
            search,
            silent_since,
            heard_since,
            update,
            expression,
            sort: _,
            descending: _,
        } = filter;
        let heard = sort == Some(DeviceSort::LastCheckIn)
            || silent_since.is_some()
            || heard_since.is_some();
        let on_devices = matches!(sort, Some(DeviceSort::Identity | DeviceSort::DeviceType))
            || device_type.is_some()
            || tag.is_some()
            || !attributes.is_empty()
            || !installed.is_empty()
            || search.is_some()
            || update.is_some()
            || expression.is_some();
        match (heard, on_devices) {
            (false, _) => Self::Devices,
            (true, false) => Self::Presence,
            (true, true) => Self::Joined,
        }
    }

    /// What to read `FROM`.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Self::Devices => "devices",
            Self::Presence => "device_presence",
            Self::Joined => {
                "(SELECT d.id, d.status, d.identity, d.public_key, d.device_type, \
                 d.hardware_revision, d.security_version, d.created_at, d.inventory_sha256, \
                 p.last_check_in FROM devices d JOIN device_presence p ON p.id = d.id) AS devices"
            }
        }
    }

    /// Whether `last_check_in` can be read from it.
    pub(crate) fn has_check_in_time(self) -> bool {
        self != Self::Devices
    }
}
