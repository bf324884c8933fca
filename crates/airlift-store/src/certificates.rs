//! Devices authenticated by a TLS client certificate: the
//! [`CertificateStore`] trait (a supertrait of [`Store`](crate::Store)) and
//! its record. The SQL is in `sql/certificates.rs`.
//!
//! The store knows nothing of certificates: the server verifies the chain
//! in the TLS handshake and hands over the SHA-256 of the certificate's
//! SubjectPublicKeyInfo (hex) and its subject's common name.

use crate::StoreResult;
use airlift_protocol::management::Device;
use airlift_protocol::DeviceId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// The certificate key a device is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    /// SHA-256 of the certificate's SubjectPublicKeyInfo, lowercase hex.
    pub spki_sha256: String,
    /// The device it is bound to.
    pub device_id: DeviceId,
    /// The subject's common name when the device was registered (may be
    /// empty).
    pub subject_cn: String,
    /// When the device was registered.
    pub created_at: DateTime<Utc>,
}

/// How [`CertificateStore::insert_certificate_device`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateRegistration {
    /// The device was stored, bound to the key.
    Registered,
    /// Another request registered the same key first: this device is it.
    AlreadyBound(DeviceId),
}

/// The binding between certificate keys and devices.
#[async_trait]
pub trait CertificateStore {
    /// Stores `device` bound to the certificate key `spki_sha256`, both in
    /// one transaction (announcing [`StoreEvent::DeviceChanged`](crate::StoreEvent::DeviceChanged)).
    /// When the key is bound already (a concurrent first contact won),
    /// nothing is stored and the bound device is answered.
    async fn insert_certificate_device(
        &self,
        device: &Device,
        spki_sha256: &str,
        subject_cn: &str,
    ) -> StoreResult<CertificateRegistration>;

    /// The binding of the certificate key `spki_sha256`, if any.
    async fn certificate_by_key(&self, spki_sha256: &str)
        -> StoreResult<Option<DeviceCertificate>>;

    /// The certificate key `device` is bound to, if it is a certificate
    /// device.
    async fn certificate_of_device(
        &self,
        device: DeviceId,
    ) -> StoreResult<Option<DeviceCertificate>>;
}
