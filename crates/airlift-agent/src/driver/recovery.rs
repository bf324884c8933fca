//! What the agent does when its state file is corrupt: never a silent
//! reset (see [`machine`](crate::machine#the-drivers-side-of-the-contract)).

use super::{Agent, AgentError, Outcome};
use crate::machine::{Report, State};
use airlift_protocol::state::UpdateState;

impl Agent {
    /// A corrupt state file: during a trial boot nothing vouches for the
    /// running version, so abandon the trial and reboot; otherwise disarm
    /// any armed trial, set the file aside and start from `Idle`.
    pub(super) fn recover_from_corrupt_state(&mut self) -> Result<(), AgentError> {
        let vars = self.boot.vars()?;
        let running = self.boot.control().booted_slot()?;
        let aside = self.state_file.set_aside()?;
        tracing::warn!(aside = %aside.display(), "corrupt state set aside");
        self.state = State::Idle;
        let offer = self.data.saved_offer();
        let in_trial = vars.upgrade_available && vars.slot == Some(running);
        if offer.is_some() || vars.upgrade_available {
            self.revert_install();
        }
        // Tell the server, through the outbox (it survives the reboot).
        if let Some(deployment_id) = offer.and_then(|o| o.deployment_id) {
            let (state, what) = if in_trial {
                (
                    UpdateState::RolledBack,
                    "during the trial boot: rolled back",
                )
            } else {
                (
                    UpdateState::Failure,
                    "before the new version ran: update abandoned",
                )
            };
            let message = format!(
                "the agent's state file was corrupt (set aside as {}) {what}",
                aside.display()
            );
            self.outbox.push(&Report {
                deployment_id,
                state,
                message: Some(message),
            })?;
        }
        self.data.remove_offer()?;
        if !vars.upgrade_available {
            return Ok(());
        }
        if in_trial {
            tracing::error!(%running, "corrupt state during a trial boot: rolling back");
            self.boot.control().abandon_trial(running.other())?;
            if let Outcome::Failed(event) = self.reboot() {
                tracing::error!(?event, "could not reboot after abandoning the trial");
            }
        } else {
            self.boot.control().abandon_trial(running)?;
        }
        Ok(())
    }
}
