//! What is being installed, and how it takes effect.

use crate::boot::Slot;
use airlift_package::Sha256Digest;
use airlift_protocol::DeploymentId;
use semver::Version;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One update the agent is working on: the package it installs and how the
/// new version takes effect.
///
/// The type parameter says what is known about the activation. A plain
/// [`Job`] may be either kind; a [`TrialJob`] is one whose image goes into
/// the inactive slot and needs a trial boot, so the states that only exist
/// for such jobs ([`State::Rebooting`](super::State::Rebooting),
/// [`State::Verifying`](super::State::Verifying),
/// [`State::RolledBack`](super::State::RolledBack)) cannot hold anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job<A = Activation> {
    /// The deployment that offered it; `None` for a local
    /// `airlift-agent install FILE`, which is never reported to a server.
    pub deployment_id: Option<DeploymentId>,
    /// Package name, from the verified manifest.
    pub name: String,
    /// Package version, from the verified manifest.
    pub version: Version,
    /// Size of the package file in bytes.
    pub size: u64,
    /// SHA-256 of the whole package file.
    pub sha256: Sha256Digest,
    /// The manifest's anti-rollback counter.
    pub security_version: u64,
    /// Software name → version the device runs once this is installed.
    #[serde(default)]
    pub provides: BTreeMap<String, Version>,
    /// How the new version takes effect.
    pub activation: A,
}

/// How an installed package takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Activation {
    /// No image payload: files and update modules are replaced in place and
    /// the job commits without a reboot.
    InPlace,
    /// An image written into the inactive slot, then a trial boot into it.
    TrialBoot(TrialBoot),
}

/// The slot switch of an image update. Only the target is stored: with two
/// slots the one it came from is always the other, so the two can never be
/// the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialBoot {
    /// The inactive slot the image is written into and trial-booted.
    pub target: Slot,
}

impl TrialBoot {
    /// The slot that ran when the job started: the known-good one, where a
    /// rollback goes.
    pub fn previous(self) -> Slot {
        self.target.other()
    }
}

/// A job with an image payload: it goes through a trial boot.
pub type TrialJob = Job<TrialBoot>;

impl Job {
    /// The trial boot, if the job needs one.
    pub fn trial(&self) -> Option<TrialBoot> {
        match self.activation {
            Activation::InPlace => None,
            Activation::TrialBoot(trial) => Some(trial),
        }
    }

    /// Whether the new version only takes effect after a reboot.
    pub fn needs_reboot(&self) -> bool {
        self.trial().is_some()
    }

    /// The job with its activation in the type.
    pub fn into_kind(self) -> JobKind {
        match self.activation {
            Activation::TrialBoot(trial) => JobKind::TrialBoot(self.with_activation(trial)),
            Activation::InPlace => JobKind::InPlace(self),
        }
    }
}

/// A [`Job`] sorted by how it takes effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Its activation is [`Activation::InPlace`].
    InPlace(Job),
    /// It goes through a trial boot.
    TrialBoot(TrialJob),
}

impl<A> Job<A> {
    fn with_activation<B>(self, activation: B) -> Job<B> {
        Job {
            deployment_id: self.deployment_id,
            name: self.name,
            version: self.version,
            size: self.size,
            sha256: self.sha256,
            security_version: self.security_version,
            provides: self.provides,
            activation,
        }
    }
}

impl From<TrialJob> for Job {
    fn from(job: TrialJob) -> Job {
        let trial = job.activation;
        job.with_activation(Activation::TrialBoot(trial))
    }
}

impl<A> fmt::Display for Job<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}
