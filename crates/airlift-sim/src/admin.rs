//! The one management call the simulator makes: pre-authorising a device
//! (its identity and public key) so that it is accepted on first contact,
//! as a factory would.

use airlift_protocol::management::PreauthorizeRequest;
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a device could not be pre-authorised.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdminError {
    /// The server answered with an error.
    #[error("pre-authorising {serial}: the server answered {status}: {body}")]
    Refused {
        /// The device.
        serial: String,
        /// HTTP status.
        status: u16,
        /// The error body.
        body: String,
    },
    /// The server could not be reached.
    #[error("pre-authorising {serial}: {reason}")]
    Unreachable {
        /// The device.
        serial: String,
        /// Why.
        reason: String,
    },
}

/// A management API client with an operator token.
#[derive(Clone)]
pub struct Admin {
    http: ureq::Agent,
    base: String,
    token: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// A client for the server at `base` with `token`.
    pub fn new(base: &str, token: &str) -> Self {
        let http = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .build();
        Admin {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    /// Pre-authorises the device with this serial and public key (SPKI
    /// PEM). A device the server already knows by that key is fine.
    pub fn preauthorize(
        &self,
        serial: &str,
        public_key: String,
        tags: &[String],
    ) -> Result<(), AdminError> {
        let request = PreauthorizeRequest {
            identity: BTreeMap::from([("serial".to_owned(), serial.to_owned())]),
            public_key,
            tags: tags.to_vec(),
        };
        let body = serde_json::to_string(&request).map_err(|e| AdminError::Unreachable {
            serial: serial.to_owned(),
            reason: e.to_string(),
        })?;
        let url = format!(
            "{}{}/devices/preauthorize",
            self.base,
            airlift_protocol::MANAGEMENT_API
        );
        match self
            .http
            .post(&url)
            .set("authorization", &format!("Bearer {}", self.token))
            .set("content-type", "application/json")
            .send_string(&body)
        {
            Ok(_) | Err(ureq::Error::Status(409, _)) => Ok(()),
            Err(ureq::Error::Status(status, response)) => Err(AdminError::Refused {
                serial: serial.to_owned(),
                status,
                body: response.into_string().unwrap_or_default(),
            }),
            Err(error) => Err(AdminError::Unreachable {
                serial: serial.to_owned(),
                reason: error.to_string(),
            }),
        }
    }
}
