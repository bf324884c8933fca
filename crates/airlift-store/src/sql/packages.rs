//! Packages: the SQL of these [`Store`](crate::Store)
//! methods, written once for both backends as inherent methods of the
//! store, which the `Store` impl of [`impl_store!`](super::impl_store)
//! calls. Expanded inside `impl_store!`, so it sees that macro's imports.

/// The packages, for `$store` on `$db`.
macro_rules! sql_packages {
    ($store:ident, $db:ty, $begin:literal) => {
        impl $store {
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

            async fn list_packages_page(
                &self,
                page: PageRequest,
            ) -> StoreResult<(Vec<PackageRecord>, u64)> {
                let per_page = i64::from(page.per_page.clamp(1, 1000));
                let offset = i64::from(page.page.max(1) - 1) * per_page;
                let total = sqlx::query_scalar::<$db, i64>("SELECT COUNT(*) FROM packages")
                    .fetch_one(&self.pool)
                    .await?;
                let packages = sqlx::query_as::<$db, PackageRow>(concat!(
                    "SELECT ",
                    $crate::sql::columns!(packages),
                    " FROM packages ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
                ))
                .bind(per_page)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(PackageRow::into_record)
                .collect::<StoreResult<Vec<_>>>()?;
                Ok((packages, u64::try_from(total).unwrap_or(0)))
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
        }
    };
}

pub(crate) use sql_packages;
