//! When a downloaded update may install, and when to check in next —
//! decisions without I/O, beside [`step`](super::step).
//!
//! The server says, with each offer, whether to install once downloaded
//! ([`InstallPermit::Now`]) or to wait at `Downloaded`
//! ([`InstallPermit::Later`]: outside the deployment's install window, or a
//! download-only deployment not released yet). The driver keeps the last
//! word it heard as a [`HeardPermit`] (not persisted: after a restart the
//! update waits for the first check-in) and asks these functions, handing
//! in the clock and a random number, so that they can be tested with any.
//!
//! ```
//! use airlift_agent::machine::{install_hold, HeardPermit};
//! use airlift_protocol::install::InstallPermit;
//! # use airlift_agent::machine::{Activation, Job};
//! # let job = Job {
//! #     deployment_id: Some("00000000-0000-4000-8000-000000005eed".parse().unwrap()),
//! #     name: "rootfs".into(),
//! #     version: semver::Version::new(2, 0, 0),
//! #     size: 4096,
//! #     sha256: airlift_package::Sha256Digest::of(b"the package file"),
//! #     security_version: 1,
//! #     provides: Default::default(),
//! #     activation: Activation::InPlace,
//! # };
//! let deployment_id = job.deployment_id.unwrap();
//! // Nothing heard yet: the install waits.
//! assert!(install_hold(&job, None).is_some());
//! let now = HeardPermit { deployment_id, permit: InstallPermit::Now };
//! assert_eq!(install_hold(&job, Some(&now)), None);
//! ```

use super::{Job, State};
use airlift_protocol::device::UpdateOffer;
use airlift_protocol::install::InstallPermit;
use airlift_protocol::DeploymentId;
use std::time::{Duration, SystemTime};

/// What the server last said about installing, and for which deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardPermit {
    /// The deployment the word is for.
    pub deployment_id: DeploymentId,
    pub permit: InstallPermit,
}

/// Why the install of `job` must wait, if it must: the server's last word
/// for its deployment was `later`, or nothing has been heard for it since
/// the agent started. A local install (no deployment) never waits.
pub fn install_hold(job: &Job, heard: Option<&HeardPermit>) -> Option<String> {
    let deployment_id = job.deployment_id?;
    match heard {
        Some(heard) if heard.deployment_id == deployment_id => match &heard.permit {
            InstallPermit::Now => None,
            InstallPermit::Later { reason, .. } => Some(reason.clone()),
        },
        _ => Some("waiting for the server's word on installing".into()),
    }
}

/// When to check in next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextCheckIn {
    /// After the poll interval.
    Poll(Duration),
    /// Sooner: when the install window of the waiting update opens.
    WindowOpens(Duration),
}

impl NextCheckIn {
    /// How long to wait.
    pub fn wait(self) -> Duration {
        match self {
            NextCheckIn::Poll(wait) | NextCheckIn::WindowOpens(wait) => wait,
        }
    }
}

/// The poll interval — or, while a downloaded update waits for its install
/// window, the time from `now` until the window opens if that is sooner,
/// plus a spread of `random` modulo a tenth of it (at least 1 s, so no
/// spread below 10 s; a minute at most) so that a fleet waiting for one
/// window does not check in in the same second.
pub fn next_check_in(
    state: &State,
    heard: Option<&HeardPermit>,
    poll_interval: Duration,
    now: SystemTime,
    random: u64,
) -> NextCheckIn {
    let until = match (state, heard) {
        (
            State::Downloaded { job },
            Some(HeardPermit {
                deployment_id,
                permit:
                    InstallPermit::Later {
                        until: Some(until), ..
                    },
            }),
        ) if job.deployment_id == Some(*deployment_id) => *until,
        _ => return NextCheckIn::Poll(poll_interval),
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = u64::try_from(until.timestamp())
        .unwrap_or(0)
        .saturating_sub(now);
    let spread = random % (secs / 10).clamp(1, 60);
    let wait = Duration::from_secs(secs + spread);
    if wait >= poll_interval {
        NextCheckIn::Poll(poll_interval)
    } else {
        NextCheckIn::WindowOpens(wait)
    }
}

/// What a check-in's answer means for an update waiting at `Downloaded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldInstall {
    /// No update of a deployment is waiting.
    NotWaiting,
    /// The answer's offer speaks for the waiting deployment: keep its word
    /// and go on if it says `now`.
    Heard(HeardPermit),
    /// The answer says nothing of it: ask the server where the deployment
    /// stands (a repeated `downloaded` report, which changes nothing), and
    /// give the update up if the server has ended it (cancelled, timed
    /// out), so that the device is free for the next offer.
    AskServer(DeploymentId),
}

/// Decides what a check-in's `offer` (if any) means for the update waiting
/// in `state`.
pub fn held_install(state: &State, offer: Option<&UpdateOffer>) -> HeldInstall {
    let State::Downloaded { job } = state else {
        return HeldInstall::NotWaiting;
    };
    let Some(deployment_id) = job.deployment_id else {
        return HeldInstall::NotWaiting;
    };
    match offer {
        Some(offer) if offer.deployment_id == deployment_id => HeldInstall::Heard(HeardPermit {
            deployment_id,
            permit: offer.install.clone(),
        }),
        _ => HeldInstall::AskServer(deployment_id),
    }
}
