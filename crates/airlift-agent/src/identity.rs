//! The device's own key pair: made on first start (mode 0600) or
//! provisioned, and used to sign authentication requests.

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Why the device key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file exists but cannot be read or parsed.
    #[error("device key {path}: {reason}; restore it from a backup or, to re-enroll the device, delete it (an operator must accept the new key)")]
    Unreadable {
        path: String,
        /// What failed.
        reason: String,
    },
    /// A new key could not be written.
    #[error("writing device key {path}: {reason}")]
    Write {
        path: String,
        /// What failed.
        reason: String,
    },
}

/// Loads the device key at `path`, or makes one there (mode 0600, created
/// exclusively so two starts cannot race) if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<SigningKey, IdentityError> {
    let shown = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(pem) => SigningKey::from_pkcs8_pem(&pem).map_err(|e| IdentityError::Unreadable {
            path: shown,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(IdentityError::Unreadable {
            path: shown,
            reason: e.to_string(),
        }),
    }
}

fn create(path: &Path) -> Result<SigningKey, IdentityError> {
    let write_error = |reason: String| IdentityError::Write {
        path: path.display().to_string(),
        reason,
    };
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| write_error(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| write_error(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| write_error(e.to_string()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| write_error(e.to_string()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| write_error(e.to_string()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_private_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("device.key");
        let made = load_or_create(&path).expect("created");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path).expect("loaded");
        assert_eq!(made.verifying_key(), again.verifying_key());
    }

    #[test]
    fn a_damaged_key_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("device.key");
        std::fs::write(&path, "garbage").expect("write");
        let error = load_or_create(&path).expect_err("refused");
        assert!(error.to_string().contains("delete it"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).expect("kept"), "garbage");
    }
}
