//! Reports to the server: sent in order, or queued in the outbox while the
//! server cannot take them.

use super::{Agent, AgentError};
use crate::client::ClientError;
use crate::machine::Report;

impl Agent {
    /// Sends a report, keeping the order: behind queued ones, or queued
    /// itself when the server cannot take it now.
    pub(super) fn deliver(&mut self, report: &Report) -> Result<(), AgentError> {
        if !self.outbox.is_empty()? {
            self.outbox.push(report)?;
            return self.flush_outbox();
        }
        if let Err(e) = self
            .client
            .report(report.deployment_id, &report.to_status())
        {
            if e.is_transient() || matches!(e, ClientError::NotAccepted(_)) {
                tracing::warn!(error = %e, deployment_id = %report.deployment_id, "report queued");
                self.outbox.push(report)?;
            } else {
                tracing::warn!(error = %e, deployment_id = %report.deployment_id, "report refused; dropped");
            }
        }
        Ok(())
    }

    /// Delivers queued reports, oldest first, until the server cannot take one.
    pub(super) fn flush_outbox(&mut self) -> Result<(), AgentError> {
        while let Some((id, report)) = self.outbox.peek()? {
            match self
                .client
                .report(report.deployment_id, &report.to_status())
            {
                Ok(_) => {}
                Err(e) if e.is_transient() || matches!(e, ClientError::NotAccepted(_)) => {
                    tracing::debug!(error = %e, "outbox: server unavailable");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, deployment_id = %report.deployment_id, "queued report refused; dropped");
                }
            }
            self.outbox.ack(id)?;
        }
        Ok(())
    }
}
