//! Certificate devices: the SQL of [`CertificateStore`](crate::CertificateStore),
//! written once for both backends. Expanded inside `impl_store!`, so it
//! sees that macro's imports.

/// [`CertificateStore`](crate::CertificateStore) for `$store` on `$db`.
macro_rules! sql_certificates {
    ($store:ident, $db:ty, $begin:literal) => {
        type DeviceCertificateRow = (String, String, String, i64);

        fn device_certificate(
            row: DeviceCertificateRow,
        ) -> StoreResult<$crate::DeviceCertificate> {
            let (spki_sha256, device_id, subject_cn, created_at) = row;
            Ok($crate::DeviceCertificate {
                spki_sha256,
                device_id: parse("device_certificates.device_id", &device_id)?,
                subject_cn,
                created_at: $crate::codec::time("device_certificates.created_at", created_at)?,
            })
        }

        impl $store {
            /// The device row and its binding, in one transaction; a unique
            /// violation (the key, or the public key, taken) is `Conflict`.
            async fn insert_bound_device(
                &self,
                device: &Device,
                spki_sha256: &str,
                subject_cn: &str,
            ) -> StoreResult<()> {
                let conflict = format!("certificate key {spki_sha256}");
                let device_id = device.id.to_string();
                let mut tx = self.begin().await?;
                Self::insert_device_row(&mut tx, device, &conflict).await?;
                sqlx::query::<$db>(
                    "INSERT INTO device_certificates (spki_sha256, device_id, subject_cn, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(spki_sha256)
                .bind(device_id.as_str())
                .bind(subject_cn)
                .bind(millis(device.created_at))
                .execute(&mut *tx)
                .await
                .map_err(|e| classify(e, &conflict, ""))?;
                self.commit_with(tx, &[StoreEvent::DeviceChanged(device.id)])
                    .await
            }
        }

        #[async_trait::async_trait]
        impl $crate::CertificateStore for $store {
            async fn insert_certificate_device(
                &self,
                device: &Device,
                spki_sha256: &str,
                subject_cn: &str,
            ) -> StoreResult<$crate::CertificateRegistration> {
                match self
                    .insert_bound_device(device, spki_sha256, subject_cn)
                    .await
                {
                    Ok(()) => Ok($crate::CertificateRegistration::Registered),
                    Err(StoreError::Conflict(message)) => {
                        match $crate::CertificateStore::certificate_by_key(self, spki_sha256)
                            .await?
                        {
                            Some(bound) => Ok($crate::CertificateRegistration::AlreadyBound(
                                bound.device_id,
                            )),
                            // The public key is a key device's: not ours to bind.
                            None => Err(StoreError::Conflict(message)),
                        }
                    }
                    Err(other) => Err(other),
                }
            }

            async fn certificate_by_key(
                &self,
                spki_sha256: &str,
            ) -> StoreResult<Option<$crate::DeviceCertificate>> {
                sqlx::query_as::<$db, DeviceCertificateRow>(
                    "SELECT spki_sha256, device_id, subject_cn, created_at \
                     FROM device_certificates WHERE spki_sha256 = $1",
                )
                .bind(spki_sha256)
                .fetch_optional(&self.pool)
                .await?
                .map(device_certificate)
                .transpose()
            }

            async fn certificate_of_device(
                &self,
                device: DeviceId,
            ) -> StoreResult<Option<$crate::DeviceCertificate>> {
                sqlx::query_as::<$db, DeviceCertificateRow>(
                    "SELECT spki_sha256, device_id, subject_cn, created_at \
                     FROM device_certificates WHERE device_id = $1",
                )
                .bind(device.to_string())
                .fetch_optional(&self.pool)
                .await?
                .map(device_certificate)
                .transpose()
            }
        }
    };
}

pub(crate) use sql_certificates;
