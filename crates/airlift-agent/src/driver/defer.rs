//! Soft updates in the driver: what the latest offer allows ([`SoftWord`]),
//! and asking the `defer_command` before a downloaded update installs
//! ([`Agent::defers`]). The decisions are [`crate::defer`]'s.

use super::{Agent, AgentError};
use crate::client::ClientError;
use crate::defer::{ask_hook, run_hook, HookAnswer, HookContext, HookDecision};
use crate::machine::State;
use airlift_protocol::device::UpdateOffer;
use airlift_protocol::soft::{DeferralAllowance, DeferralReport};
use airlift_protocol::DeploymentId;
use std::time::{Duration, Instant, SystemTime};

/// What the server last said about deferring, and when the hook last said
/// "not now". Not persisted: after a restart the install waits for the
/// first check-in anyway, which brings a fresh word.
#[derive(Debug, Default)]
pub(super) struct SoftWord {
    /// The latest offer's deployment and what it allowed (`None`: forced).
    heard: Option<(DeploymentId, Option<DeferralAllowance>)>,
    /// The last "not now", for which deployment.
    not_now: Option<(DeploymentId, Instant)>,
}

impl SoftWord {
    /// Keeps the word of a check-in's offer.
    pub(super) fn hear(&mut self, offer: Option<&UpdateOffer>) {
        if let Some(offer) = offer {
            self.heard = Some((offer.deployment_id, offer.deferral));
        }
    }

    /// What may still be deferred for `deployment` at `now`: nothing unless
    /// the latest offer was for it and allowed it, and its deadline has
    /// not passed since.
    fn allowance(&self, deployment: DeploymentId, now: SystemTime) -> Option<DeferralAllowance> {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        match self.heard {
            Some((heard, Some(allowance))) if heard == deployment => {
                let expired = allowance.until.is_some_and(|until| {
                    i64::try_from(now).unwrap_or(i64::MAX) >= until.timestamp()
                });
                (!expired).then_some(allowance)
            }
            _ => None,
        }
    }

    fn since_not_now(&self, deployment: DeploymentId) -> Option<Duration> {
        match self.not_now {
            Some((deferred, at)) if deferred == deployment => Some(at.elapsed()),
            _ => None,
        }
    }

    /// After a "not now" the server counted as number `deferred`: until the
    /// next offer says otherwise, one fewer deferral is left (none: forced).
    fn deferred(&mut self, deployment: DeploymentId, deferred: u32) {
        self.not_now = Some((deployment, Instant::now()));
        let Some((heard, Some(allowance))) = self.heard else {
            return;
        };
        if heard != deployment {
            return;
        }
        let remaining = allowance.remaining.map(|left| left.saturating_sub(1));
        let left = DeferralAllowance {
            deferred: deferred.max(allowance.deferred),
            remaining,
            ..allowance
        };
        self.heard = Some((deployment, (remaining != Some(0)).then_some(left)));
    }

    /// The server refused a deferral: the offer is forced now.
    fn forced(&mut self, deployment: DeploymentId) {
        self.heard = Some((deployment, None));
    }
}

impl Agent {
    /// Whether the downloaded update must wait because its owner said "not
    /// now": runs the `defer_command` for a soft offer (see
    /// [`ask_hook`]) and reports a "not now" to the server. A forced offer,
    /// no hook, or a hook that cannot answer: install.
    pub(super) fn defers(&mut self) -> Result<bool, AgentError> {
        let State::Downloaded { job } = &self.state else {
            return Ok(false);
        };
        let Some(deployment_id) = job.deployment_id else {
            return Ok(false);
        };
        let allowance = self.soft.allowance(deployment_id, SystemTime::now());
        let decision = ask_hook(
            allowance.as_ref(),
            !self.config.defer_command.is_empty(),
            self.soft.since_not_now(deployment_id),
            self.poll_interval,
        );
        let allowance = match (decision, allowance) {
            (HookDecision::Ask, Some(allowance)) => allowance,
            (HookDecision::Wait, _) => return Ok(true),
            _ => return Ok(false),
        };
        let context = HookContext {
            deployment_id,
            name: job.name.clone(),
            version: job.version.to_string(),
            allowance,
        };
        let timeout = Duration::from_secs(self.config.defer_timeout_secs);
        match run_hook(&self.config.defer_command, timeout, &context) {
            HookAnswer::Install(why) => {
                tracing::info!(%deployment_id, %why, "defer_command: installing now");
                Ok(false)
            }
            HookAnswer::NotNow(message) => Ok(self.report_not_now(&context, message)),
        }
    }

    /// Reports a "not now"; whether the install waits. It waits unless the
    /// server answers `install_now` (forced, or nothing left): a report lost
    /// on the way still keeps the owner's word until the next check-in.
    fn report_not_now(&mut self, context: &HookContext, message: Option<String>) -> bool {
        let deployment_id = context.deployment_id;
        let report = DeferralReport {
            deferral: context.allowance.deferred.saturating_add(1),
            message,
        };
        match self.client.report_deferral(deployment_id, &report) {
            Ok(ack) => {
                tracing::info!(%deployment_id, deferred = ack.deferred, "the install is deferred until the next check-in");
                self.soft.deferred(deployment_id, ack.deferred);
                true
            }
            Err(ClientError::Permanent { code, message, .. }) if code == "install_now" => {
                tracing::info!(%deployment_id, server = %message, "deferring refused; installing now");
                self.soft.forced(deployment_id);
                false
            }
            Err(error) => {
                tracing::warn!(%deployment_id, %error, "the deferral could not be reported; waiting until the next check-in");
                self.soft.deferred(deployment_id, report.deferral);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn offer(deployment_id: DeploymentId, deferral: Option<DeferralAllowance>) -> UpdateOffer {
        UpdateOffer {
            deployment_id,
            package_id: "00000000-0000-4000-8000-0000000000aa"
                .parse()
                .expect("an id"),
            name: "rootfs".into(),
            version: "2.0.0".into(),
            signed_manifest: String::new(),
            download_path: String::new(),
            size: 1,
            sha256: "00".repeat(32),
            install: Default::default(),
            deferral,
            timestamp: None,
        }
    }

    fn id(n: u8) -> DeploymentId {
        format!("00000000-0000-4000-8000-0000000000{n:02x}")
            .parse()
            .expect("an id")
    }

    #[test]
    fn a_not_now_uses_one_deferral_and_the_last_one_forces() {
        let mut word = SoftWord::default();
        let allowance = DeferralAllowance {
            deferred: 0,
            remaining: Some(2),
            until: None,
        };
        word.hear(Some(&offer(id(1), Some(allowance))));
        let now = SystemTime::now();
        assert_eq!(word.allowance(id(1), now), Some(allowance));
        assert_eq!(word.allowance(id(2), now), None, "another deployment");
        word.deferred(id(1), 1);
        let left = word.allowance(id(1), now).expect("one left");
        assert_eq!((left.deferred, left.remaining), (1, Some(1)));
        assert!(word.since_not_now(id(1)).is_some());
        word.deferred(id(1), 2);
        assert_eq!(word.allowance(id(1), now), None, "none left: forced");
    }

    #[test]
    fn a_deadline_passed_since_the_offer_forces_and_no_offer_keeps_the_word() {
        let mut word = SoftWord::default();
        let now = SystemTime::now();
        let allowance = DeferralAllowance {
            deferred: 4,
            remaining: None,
            until: Some(Utc::now() + chrono::Duration::minutes(5)),
        };
        word.hear(Some(&offer(id(1), Some(allowance))));
        word.hear(None);
        assert!(word.allowance(id(1), now).is_some());
        assert!(word
            .allowance(id(1), now + Duration::from_secs(301))
            .is_none());
        word.forced(id(1));
        assert!(word.allowance(id(1), now).is_none());
    }
}
