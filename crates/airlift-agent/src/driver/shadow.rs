//! The device's configuration at check-in: the delta goes to
//! [`crate::shadow`], and what it reports goes to the server.

use super::Agent;
use crate::config::AgentConfig;
use crate::shadow::Shadow;
use airlift_protocol::shadow::Document;
use std::time::Instant;

/// Name of the applied configuration record in the data directory.
const RECORD: &str = "shadow.json";

/// The agent's shadow, its record in the data directory.
pub(super) fn new(config: &AgentConfig) -> Shadow {
    Shadow::new(config.shadow.clone(), config.data_dir.join(RECORD))
}

impl Agent {
    /// Applies a check-in's delta (if it is time to) and reports what is
    /// applied; a report the server does not take is sent again at the
    /// next check-in. Never fails the check-in.
    pub(super) fn apply_shadow(&mut self, delta: Option<&Document>) {
        let mut random = [0u8; 8];
        let random = match getrandom::getrandom(&mut random) {
            Ok(()) => u64::from_le_bytes(random),
            Err(_) => 0,
        };
        let Some(report) = self.shadow.on_delta(delta, Instant::now(), random) else {
            return;
        };
        match self.client.report_shadow(&report) {
            Ok(ack) => {
                self.shadow.delivered();
                if !ack.delta.is_empty() {
                    tracing::debug!(
                        keys = ack.delta.len(),
                        "configuration: more to apply at the next check-in"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, "configuration: the report did not reach the server; sent again at the next check-in");
            }
        }
    }
}
