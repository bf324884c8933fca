//! Reports to the server: sent in order, or queued in the outbox while the
//! server cannot take them.

use super::{Agent, AgentError};
use crate::client::ClientError;
use crate::machine::Report;
use airlift_protocol::device::StatusAck;
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;

/// What the server's answer to a report says of the update it was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Heard {
    /// Taken, queued, or dropped for a reason that ends nothing.
    Nothing,
    /// The server cancelled this device's update (the deployment was
    /// cancelled, or aborted by its circuit breaker): it answered 410, or
    /// took the report as late because it records `cancelled`.
    Cancelled,
}

impl Heard {
    fn of(answer: &Result<StatusAck, ClientError>) -> Heard {
        match answer {
            Err(ClientError::Permanent { status: 410, .. }) => Heard::Cancelled,
            Ok(StatusAck {
                state: UpdateState::Cancelled,
                applied: false,
            }) => Heard::Cancelled,
            _ => Heard::Nothing,
        }
    }
}

impl Agent {
    /// Sends a report, keeping the order: behind queued ones, or queued
    /// itself when the server cannot take it now. Says whether the server
    /// answered that it cancelled the update.
    pub(super) fn deliver(&mut self, report: &Report) -> Result<Heard, AgentError> {
        if !self.outbox.is_empty()? {
            self.outbox.push(report)?;
            let cancelled = self.flush_outbox()?;
            return Ok(if cancelled.contains(&report.deployment_id) {
                Heard::Cancelled
            } else {
                Heard::Nothing
            });
        }
        let answer = self
            .client
            .report(report.deployment_id, &report.to_status());
        let heard = Heard::of(&answer);
        if let Err(e) = answer {
            if e.is_transient() || matches!(e, ClientError::NotAccepted(_)) {
                tracing::warn!(error = %e, deployment_id = %report.deployment_id, "report queued");
                self.outbox.push(report)?;
            } else {
                tracing::warn!(error = %e, deployment_id = %report.deployment_id, "report refused; dropped");
            }
        }
        Ok(heard)
    }

    /// Delivers queued reports, oldest first, until the server cannot take
    /// one; returns the deployments the server said it cancelled.
    pub(super) fn flush_outbox(&mut self) -> Result<Vec<DeploymentId>, AgentError> {
        let mut cancelled = Vec::new();
        while let Some((id, report)) = self.outbox.peek()? {
            let answer = self
                .client
                .report(report.deployment_id, &report.to_status());
            if Heard::of(&answer) == Heard::Cancelled {
                cancelled.push(report.deployment_id);
            }
            match answer {
                Ok(_) => {}
                Err(e) if e.is_transient() || matches!(e, ClientError::NotAccepted(_)) => {
                    tracing::debug!(error = %e, "outbox: server unavailable");
                    return Ok(cancelled);
                }
                Err(e) => {
                    tracing::warn!(error = %e, deployment_id = %report.deployment_id, "queued report refused; dropped");
                }
            }
            self.outbox.ack(id)?;
        }
        Ok(cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(state: UpdateState, applied: bool) -> Result<StatusAck, ClientError> {
        Ok(StatusAck { state, applied })
    }

    #[test]
    fn a_410_or_a_cancelled_record_ends_the_update_and_nothing_else_does() {
        let gone = Err(ClientError::Permanent {
            status: 410,
            code: "deployment_cancelled".into(),
            message: "the deployment was cancelled".into(),
        });
        assert_eq!(Heard::of(&gone), Heard::Cancelled);
        assert_eq!(
            Heard::of(&ack(UpdateState::Cancelled, false)),
            Heard::Cancelled
        );
        assert_eq!(
            Heard::of(&ack(UpdateState::Installing, true)),
            Heard::Nothing
        );
        assert_eq!(Heard::of(&ack(UpdateState::Success, false)), Heard::Nothing);
        assert_eq!(
            Heard::of(&ack(UpdateState::TimedOut, false)),
            Heard::Nothing
        );
    }
}
