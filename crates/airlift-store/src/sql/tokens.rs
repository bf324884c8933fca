//! Settings, management API tokens and the audit log: the SQL of these [`Store`](crate::Store)
//! methods, written once for both backends as inherent methods of the
//! store, which the `Store` impl of [`impl_store!`](super::impl_store)
//! calls. Expanded inside `impl_store!`, so it sees that macro's imports.

/// The settings, management API tokens and the audit log, for `$store` on `$db`.
macro_rules! sql_tokens {
    ($store:ident, $db:ty, $begin:literal) => {
        impl $store {
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

            async fn list_api_tokens_page(
                &self,
                page: PageRequest,
            ) -> StoreResult<(Vec<ApiToken>, u64)> {
                let per_page = i64::from(page.per_page.clamp(1, 1000));
                let offset = i64::from(page.page.max(1) - 1) * per_page;
                let total = self.count_api_tokens().await?;
                let tokens = sqlx::query_as::<$db, TokenRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(tokens),
                    " FROM api_tokens ORDER BY created_at, id LIMIT $1 OFFSET $2"
                ))
                .bind(per_page)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(|row| Ok(row.into_record()?.token))
                .collect::<StoreResult<Vec<_>>>()?;
                Ok((tokens, total))
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

            /// ` AND …` for the audit entries matching `filter` and below
            /// `before`, after a `WHERE`.
            fn push_audit_filter(
                query: &mut QueryBuilder<'_, $db>,
                filter: &$crate::AuditFilter,
                before: Option<i64>,
            ) {
                if let Some(before) = before {
                    query.push(" AND id < ").push_bind(before);
                }
                if let Some(actor) = &filter.actor {
                    // The whole actor, or the token's name before " (id)":
                    // compared by prefix with substr, as LIKE would read
                    // the name's own % and _ as wildcards.
                    let named = format!("{actor} (");
                    query
                        .push(" AND (actor = ")
                        .push_bind(actor.clone())
                        .push(" OR substr(actor, 1, ")
                        .push_bind(i32::try_from(named.chars().count()).unwrap_or(i32::MAX))
                        .push(") = ")
                        .push_bind(named)
                        .push(")");
                }
                match filter.action.as_deref() {
                    Some(family) if family.ends_with('.') => {
                        query
                            .push(" AND substr(action, 1, ")
                            .push_bind(i32::try_from(family.chars().count()).unwrap_or(i32::MAX))
                            .push(") = ")
                            .push_bind(family.to_owned());
                    }
                    Some(action) => {
                        query.push(" AND action = ").push_bind(action.to_owned());
                    }
                    None => {}
                }
                if let Some(object) = &filter.object {
                    query.push(" AND object = ").push_bind(object.clone());
                }
                if let Some(since) = filter.since {
                    query.push(" AND at >= ").push_bind(millis(since));
                }
                if let Some(until) = filter.until {
                    query.push(" AND at < ").push_bind(millis(until));
                }
            }

            async fn list_audit(
                &self,
                filter: &$crate::AuditFilter,
                limit: u32,
                before: Option<i64>,
            ) -> StoreResult<Vec<AuditEntry>> {
                let mut query = QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    $crate::sql::columns!(audit),
                    " FROM audit_log WHERE 1 = 1"
                ));
                Self::push_audit_filter(&mut query, filter, before);
                query
                    .push(" ORDER BY id DESC LIMIT ")
                    .push_bind(i64::from(limit));
                let rows = query
                    .build_query_as::<AuditRow>()
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(AuditRow::into_entry).collect()
            }

            async fn list_audit_page(
                &self,
                filter: &$crate::AuditFilter,
                before: Option<i64>,
                page: PageRequest,
            ) -> StoreResult<(Vec<AuditEntry>, u64)> {
                let per_page = i64::from(page.per_page.clamp(1, 1000));
                let offset = i64::from(page.page.max(1) - 1) * per_page;
                let mut count =
                    QueryBuilder::<$db>::new("SELECT COUNT(*) FROM audit_log WHERE 1 = 1");
                Self::push_audit_filter(&mut count, filter, before);
                let total = count
                    .build_query_scalar::<i64>()
                    .fetch_one(&self.pool)
                    .await?;
                let mut query = QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    $crate::sql::columns!(audit),
                    " FROM audit_log WHERE 1 = 1"
                ));
                Self::push_audit_filter(&mut query, filter, before);
                query
                    .push(" ORDER BY id DESC LIMIT ")
                    .push_bind(per_page)
                    .push(" OFFSET ")
                    .push_bind(offset);
                let entries = query
                    .build_query_as::<AuditRow>()
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(AuditRow::into_entry)
                    .collect::<StoreResult<Vec<_>>>()?;
                Ok((entries, u64::try_from(total).unwrap_or(0)))
            }
        }
    };
}

pub(crate) use sql_tokens;
