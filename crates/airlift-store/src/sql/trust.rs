//! Trust roots: the SQL of [`TrustRootStore`](crate::TrustRootStore),
//! written once for both backends. Expanded inside `impl_store!`, so it
//! sees that macro's imports.

/// [`TrustRootStore`](crate::TrustRootStore) for `$store` on `$db`.
macro_rules! sql_trust {
    ($store:ident, $db:ty, $begin:literal) => {
        type TrustRootRow = (i64, i64, String, String, i64);

        fn trust_root(row: TrustRootRow) -> StoreResult<$crate::TrustRootRecord> {
            let (version, expires, sha256, document, created_at) = row;
            let unsigned = |value: i64, what: &str| {
                u64::try_from(value)
                    .map_err(|_| StoreError::Corrupt(format!("trust_roots.{what} is negative")))
            };
            Ok($crate::TrustRootRecord {
                version: unsigned(version, "version")?,
                expires: unsigned(expires, "expires")?,
                sha256,
                document,
                created_at: $crate::codec::time("trust_roots.created_at", created_at)?,
            })
        }

        #[async_trait::async_trait]
        impl $crate::TrustRootStore for $store {
            async fn insert_trust_root(&self, root: &$crate::TrustRootRecord) -> StoreResult<()> {
                let mut tx = self.begin().await?;
                let (newest,): (Option<i64>,) =
                    sqlx::query_as::<$db, (Option<i64>,)>("SELECT MAX(version) FROM trust_roots")
                        .fetch_one(&mut *tx)
                        .await?;
                let version = to_i64(root.version, "root version")?;
                let expected = newest.unwrap_or(0).saturating_add(1);
                if version != expected {
                    return Err(StoreError::Conflict(format!(
                        "root version {} cannot be stored: the next version is {expected}",
                        root.version
                    )));
                }
                sqlx::query::<$db>(
                    "INSERT INTO trust_roots (version, expires, sha256, document, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(version)
                .bind(to_i64(root.expires, "root expiry")?)
                .bind(root.sha256.as_str())
                .bind(root.document.as_str())
                .bind(millis(root.created_at))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn latest_trust_root(&self) -> StoreResult<Option<$crate::TrustRootRecord>> {
                sqlx::query_as::<$db, TrustRootRow>(
                    "SELECT version, expires, sha256, document, created_at FROM trust_roots \
                     ORDER BY version DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await?
                .map(trust_root)
                .transpose()
            }

            async fn trust_roots_after(
                &self,
                after: u64,
                limit: u32,
            ) -> StoreResult<Vec<$crate::TrustRootRecord>> {
                sqlx::query_as::<$db, TrustRootRow>(
                    "SELECT version, expires, sha256, document, created_at FROM trust_roots \
                     WHERE version > $1 ORDER BY version LIMIT $2",
                )
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(trust_root)
                .collect()
            }

            async fn latest_security_version(&self) -> StoreResult<u64> {
                let (newest,): (Option<i64>,) = sqlx::query_as::<$db, (Option<i64>,)>(
                    "SELECT MAX(security_version) FROM packages",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(newest.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
            }
        }
    };
}

pub(crate) use sql_trust;
