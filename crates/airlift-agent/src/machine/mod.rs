//! The update state machine, without I/O, and its persistence.
//!
//! [`step`]`(state, event) -> (state, effects)` is the whole of the agent's
//! update logic: pure, total (an event that makes no sense in a state leaves
//! it unchanged and asks for nothing), and tested without async or disk. A
//! driver performs the [`Effect`]s, feeds back what happened as [`Event`]s,
//! and saves the [`State`] in a [`StateFile`] after every step that changes
//! it. Reports the server could not take wait in an [`Outbox`].
//!
//! ```
//! use airlift_agent::boot::Slot;
//! use airlift_agent::machine::{step, Activation, Effect, Event, Job, State, TrialBoot};
//! use airlift_package::Sha256Digest;
//!
//! let job = Job {
//!     deployment_id: None, // `airlift-agent install FILE`: nothing is reported
//!     name: "rootfs".into(),
//!     version: semver::Version::new(2, 0, 0),
//!     size: 4096,
//!     sha256: Sha256Digest::of(b"the package file"),
//!     security_version: 1,
//!     provides: Default::default(),
//!     activation: Activation::TrialBoot(TrialBoot { target: Slot::B }),
//! };
//! let (state, effects) = step(State::Idle, Event::Offer(job));
//! assert_eq!(effects, [Effect::Download { from_offset: 0 }]);
//! let (state, effects) = step(state, Event::Progress { offset: 1024 });
//! assert!(effects.is_empty()); // but the state changed: the driver saves it
//!
//! // A power cut, a restart: the download goes on where it was.
//! let (state, effects) = step(state, Event::Resume);
//! assert_eq!(effects, [Effect::Download { from_offset: 1024 }]);
//! assert_eq!(state.name(), "downloading");
//! ```
//!
//! ```text
//!                 Offer
//!   Idle ─────────────────▶ Downloading ◀──┐ Progress; transient DownloadFailed
//!    ▲                          │    └─────┘ and Resume: Download from the offset
//!    │                          │ DownloadComplete (streamed, digests matched)
//!    │                          ▼
//!    │                      Downloaded  (rests until Proceed)
//!    │                          │ Proceed
//!    │                          ▼
//!    │                      Installing ◀──┐ Resume: read the slots back again
//!    │                          │   └─────┘
//!    │                          │ Installed
//!    │                          ▼
//!    │                      Installed ◀───┐ Proceed: ArmTrial (rests until Proceed)
//!    │                       │      │ └───┘
//!    │in place: HealthPassed │      │ TrialArmed  (or Booted in the new slot: a
//!    │                       │      │              power cut after arming)
//!    │                       │      ▼
//!    │                       │   Rebooting ───────── Booted in the old slot ────┐
//!    │                       │      │                                           │
//!    │                       │      │ Booted in the new slot                    │
//!    │                       │      ▼                                           │
//!    │                       │   Verifying ◀──┐ HealthPassed, CommitRequested:  │
//!    │                       │    │   │  └────┘ CommitBoot                      │
//!    │                       │    │   │                                         │
//!    │                       │    │   └─ HealthFailed, RollbackRequested, ──────┤
//!    │                       │    │      commit failed, Booted in the old slot  │
//!    │                       │    │ BootCommitted                               │
//!    │                       ▼    ▼                                             ▼
//!    │                      Committed         Failed                        RolledBack
//!    │                          │               │                               │
//!    └──────────────────────────┴── CleanedUp ──┴───────────────────────────────┘
//!
//!   In place (no reboot), Proceed in Installed runs the health checks;
//!   HealthPassed or CommitRequested commits, HealthFailed fails and undoes.
//!   Failed comes from every state before the new version runs: a permanent
//!   DownloadFailed, Refused, InstallFailed, Cancelled (up to Installed),
//!   RollbackRequested, and a BootControlFailed while arming or rebooting;
//!   each undoes what was written.
//! ```
//!
//! What the states mean on the device: `Downloading` streams the package
//! through its verification into the installers (the image into the
//! inactive slot) — there is no copy of the package on the device — and its
//! `offset` is the last checkpoint, the package byte up to which everything
//! is durably written (see [`crate::stream`] for where one may fall).
//! `Downloaded` means every payload was written and matched its signed
//! digests on the way; `Installing` reads the image slots back against
//! their installed digests (and runs installers' own reboot steps for an
//! update without a device reboot). So every failure before the switch
//! undoes what was written: in-place changes are reverted, an armed trial
//! is abandoned.
//!
//! Every transition a server should hear about emits an [`Effect::Report`]
//! (none for a local install). `success` is only ever reported on
//! [`Event::BootCommitted`] — after the bootloader committed — or, for a job
//! without a reboot, once it is installed and the health checks passed (or
//! a person committed it by hand).
//!
//! # Decisions that rest on the running slot
//!
//! After any restart the machine answers [`Event::Resume`] in `Installed`
//! (image jobs), `Rebooting`, `Verifying`, `RolledBack` and `Failed` (image
//! jobs) with [`Effect::InspectBoot`], and decides on the slot that
//! [`Event::Booted`] names:
//!
//! | state      | booted the new (target) slot           | booted the old slot                        |
//! |------------|----------------------------------------|--------------------------------------------|
//! | Installed  | Verifying, run the health checks       | stay; `Proceed` arms the trial again       |
//! | Rebooting  | Verifying, run the health checks       | RolledBack: "the bootloader fell back"     |
//! | Verifying  | run the health checks again            | RolledBack: it restarted during the trial  |
//! | RolledBack | report, abandon the trial, reboot      | report, abandon the trial, clean up        |
//! | Failed     | report, abandon the trial, reboot      | report, abandon the trial, clean up        |
//!
//! The trial flag (`trial_pending`) is not used to decide: it is set both
//! before and during the trial boot. `Rebooting` is saved only once the
//! trial is armed, so "old slot while rebooting" means the trial was tried
//! and lost — or, rarely, that the agent restarted between arming and the
//! reboot, which then costs a needless rollback rather than risking a reboot
//! loop.
//!
//! # The driver's side of the contract
//!
//! - **Start.** [`StateFile::load`]: no file is `Idle`; a
//!   [`StateError::Corrupt`] file is never reset silently — during a trial
//!   boot it means roll back (abandon the trial, reboot), otherwise set it
//!   aside and start from `Idle`. Then feed [`Event::Resume`] and handle
//!   what follows (e.g. [`Effect::InspectBoot`]) before anything else.
//! - **Each step.** If the new state differs, [`StateFile::save`] it
//!   *before* performing any effect. Perform the effects in order. If one
//!   fails, skip the rest of the list and feed its failure event
//!   ([`Event::DownloadFailed`], [`Event::InstallFailed`],
//!   [`Event::BootControlFailed`], …). Long effects (download, install,
//!   health checks) feed their outcome when they end.
//! - **Reports.** [`Effect::Report`]: send it, or [`Outbox::push`] it if
//!   that fails or if older reports are still queued (the order must hold).
//!   Deliver the outbox before each check-in. Download progress for the
//!   server is the driver's own best-effort business, never queued.
//! - **Resting states.** In `Downloaded` and `Installed`, feed
//!   [`Event::Proceed`] when the policy allows: in `Installed` at once; in
//!   `Downloaded` once [`install_hold`] says nothing holds the install (the
//!   server's word on installing, a [`HeardPermit`]). While it waits, check
//!   in when [`next_check_in`] says, and let [`held_install`] say what each
//!   check-in's answer means for it.
//! - **Progress.** Feed [`Event::Progress`] only for checkpoints whose bytes
//!   are already synced to disk, and not for every chunk: each one is a save.
//! - **Final states.** `Committed`, `RolledBack` and `Failed` end with
//!   [`Effect::Cleanup`] (unless they end with a reboot); once it is done,
//!   feed [`Event::CleanedUp`] to return to `Idle`. Offers are ignored until
//!   then. A restart before that performs the final effects again; every
//!   one of them is idempotent and the server takes a repeated report as a
//!   repeat.
//! - **Cancelled deployments.** The server cancels a device's update when
//!   its deployment is cancelled or aborted (a tripped breaker); a download
//!   already under way runs on, so the device hears of it in the answer to
//!   its next report (410, or `cancelled` taken as a late report). Feed
//!   [`Event::Cancelled`] for a report made before the new version runs
//!   (`downloading` up to `installed`) instead of performing the rest of the
//!   list. `Cancelled` ends the job as `Failed` and reports `failure`; the
//!   server answers 410 to that report — ack the outbox entry anyway.

mod job;
mod outbox;
mod permit;
pub(crate) mod record;
mod step;
mod store;
mod types;

#[cfg(test)]
mod step_tests;
#[cfg(test)]
pub(crate) mod test_support;

pub use job::{Activation, Job, JobKind, TrialBoot, TrialJob};
pub use outbox::{EntryId, Outbox, OutboxError, Report};
pub use permit::{
    held_install, install_hold, next_check_in, HeardPermit, HeldInstall, NextCheckIn,
};
pub use step::{step, FELL_BACK_BEFORE_AGENT, FELL_BACK_DURING_TRIAL};
pub use store::{StateError, StateFile};
pub use types::{Decline, Effect, Event, State};
