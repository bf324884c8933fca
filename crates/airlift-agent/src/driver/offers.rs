//! Check-ins and offers: what the server says, whether an offer is
//! taken, and what a downloaded update waiting for its install hears.

use super::trust_root::{within_timestamp, Gate};
use super::{io_error, Agent, AgentError, Poll};
use crate::client::ClientError;
use crate::machine::{
    held_install, next_check_in, Activation, Decline, Event, HeardPermit, HeldInstall, Job,
    NextCheckIn, State, TrialBoot,
};
use airlift_package::{
    Compatibility, DeviceFacts, Encryption, Limits, Manifest, PackageReader, PayloadType,
    Sha256Digest, Verified,
};
use airlift_protocol::device::{Inventory, StatusReport, UpdateOffer};
use airlift_protocol::install::InstallPermit;
use airlift_protocol::state::UpdateState;
use airlift_protocol::DeploymentId;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::time::{Duration, SystemTime};

impl Agent {
    /// The check-in half of [`poll_once`](Self::poll_once).
    pub(super) fn check_in(&mut self) -> Result<Poll, AgentError> {
        if let Some(system) = &self.system {
            self.system_version = Some(system.version()?);
        }
        // Before the inventory: a root taken now may lower the security version it reports.
        self.refresh_roots();
        let response = match self.client.check_in(&self.inventory()) {
            Ok(response) => response,
            Err(ClientError::NotAccepted(status)) => {
                tracing::info!(status, "the server has not accepted this device yet");
                return Ok(Poll::NotAccepted);
            }
            Err(error) => return Ok(Poll::Unreachable(error.to_string())),
        };
        self.poll_interval = Duration::from_secs(response.poll_interval_secs.max(1));
        self.soft.hear(response.update.as_ref());
        self.hear_about_held_install(response.update.as_ref())?;
        if let Some(offer) = response.update {
            if matches!(self.state, State::Idle) {
                self.take_offer(offer)?;
            }
        }
        if !self.rebooting {
            self.apply_shadow(response.shadow.as_ref().map(|s| &s.delta));
        }
        Ok(if self.rebooting {
            Poll::Rebooting
        } else {
            Poll::Checked(self.next_check_in())
        })
    }

    /// When to check in next ([`next_check_in`]), with the clock and a
    /// random number for the spread.
    pub(super) fn next_check_in(&self) -> Duration {
        let next = next_check_in(
            &self.state,
            self.install_permit.as_ref(),
            self.poll_interval,
            SystemTime::now(),
            random_u64(),
        );
        if let NextCheckIn::WindowOpens(wait) = next {
            tracing::info!(
                secs = wait.as_secs(),
                "checking in again when the install window opens"
            );
        }
        next.wait()
    }

    /// While a downloaded update waits at `Downloaded`: takes the server's
    /// word on installing from its offer for the same deployment and goes on
    /// if it says `now`; without one, asks the server and gives the update
    /// up if the server has ended it (see [`held_install`]). A paused
    /// deployment keeps it waiting.
    pub(super) fn hear_about_held_install(
        &mut self,
        offer: Option<&UpdateOffer>,
    ) -> Result<(), AgentError> {
        match held_install(&self.state, offer) {
            HeldInstall::NotWaiting => Ok(()),
            HeldInstall::Heard(heard) => {
                if let InstallPermit::Later { reason, .. } = &heard.permit {
                    let deployment_id = heard.deployment_id;
                    tracing::info!(%deployment_id, %reason, "downloaded and verified; the install waits");
                }
                self.install_permit = Some(heard);
                self.proceed()
            }
            HeldInstall::AskServer(deployment_id) => match self.ended_by_server(deployment_id) {
                Some(why) => {
                    tracing::info!(%deployment_id, server = %why, "the server ended the waiting update; giving it up");
                    self.feed(Event::Cancelled)
                }
                None => Ok(()),
            },
        }
    }

    /// Asks the server where a deployment stands with a repeated
    /// `downloaded` report (which changes nothing); why it has ended, if it
    /// has (a final state, cancelled: 410, gone: 404). No answer is no end.
    pub(super) fn ended_by_server(&mut self, deployment_id: DeploymentId) -> Option<String> {
        let probe = StatusReport {
            state: UpdateState::Downloaded,
            progress: None,
            message: None,
        };
        match self.client.report(deployment_id, &probe) {
            Ok(ack) => ack.state.is_final().then(|| ack.state.as_str().to_owned()),
            Err(ClientError::Permanent {
                status, message, ..
            }) => Some(format!("{status}: {message}")),
            Err(_) => None,
        }
    }

    /// Verifies an offer's manifest and checks it fits before a byte of
    /// payload is downloaded; declines it (reported as `failure`) if not.
    pub(super) fn take_offer(&mut self, offer: UpdateOffer) -> Result<(), AgentError> {
        let deployment_id = offer.deployment_id;
        // Freshness first: a newer trust root it brings changes the trusted keys.
        let timestamp = match self.gate_offer(&offer) {
            Gate::Pass(timestamp) => timestamp,
            Gate::Later => return Ok(()),
            Gate::Refused(reason) => return self.refuse_offer(deployment_id, reason),
        };
        let vetted = STANDARD
            .decode(offer.signed_manifest.as_bytes())
            .map_err(|e| format!("the offered manifest is not base64: {e}"))
            .and_then(|head| self.vet(&head).map(|manifest| (head, manifest)));
        let (head, manifest) = match vetted {
            Ok(vetted) => vetted,
            Err(reason) => {
                tracing::warn!(%deployment_id, %reason, "offer refused");
                let decline = Decline::Refused { reason };
                return self.feed(Event::OfferDeclined {
                    deployment_id,
                    decline,
                });
            }
        };
        if let Err(reason) = within_timestamp(timestamp.as_ref(), &manifest) {
            return self.refuse_offer(deployment_id, reason);
        }
        if self.installed().get(&manifest.name) == Some(&manifest.version.to_string()) {
            let decline = Decline::AlreadyInstalled;
            return self.feed(Event::OfferDeclined {
                deployment_id,
                decline,
            });
        }
        let sha256 = match offer.sha256.parse() {
            Ok(sha256) => sha256,
            Err(_) => {
                let reason = format!("the offered sha256 {:?} is not a digest", offer.sha256);
                let decline = Decline::Refused { reason };
                return self.feed(Event::OfferDeclined {
                    deployment_id,
                    decline,
                });
            }
        };
        let job = Job {
            deployment_id: Some(deployment_id),
            size: offer.size,
            sha256,
            ..self.job_for(&manifest)?
        };
        tracing::info!(%deployment_id, %job, "update offered");
        self.install_permit = Some(HeardPermit {
            deployment_id,
            permit: offer.install,
        });
        self.data.save_offer(&head, Some(deployment_id))?;
        if let Some(timestamp) = &timestamp {
            self.remember_timestamp(timestamp)?;
        }
        self.feed(Event::Offer(job))?;
        self.proceed()
    }

    /// Verifies a package head (or whole package) with the trust set and
    /// checks that it fits this device.
    pub(super) fn vet(&self, head: &[u8]) -> Result<Verified<Manifest>, String> {
        let package = PackageReader::open(io::Cursor::new(head), Limits::default())
            .and_then(|reader| reader.verify(&self.trust))
            .map_err(|e| format!("the package does not verify: {e}"))?;
        let manifest = package.manifest().clone();
        // Anti-rollback fails closed: no known floor, no install.
        self.data.security_version().map_err(|e| e.to_string())?;
        if let Compatibility::Incompatible(why) = manifest.compatibility(&self.facts()) {
            return Err(why.to_string());
        }
        can_decrypt(&manifest, self.identities.len())?;
        Ok(manifest)
    }

    pub(super) fn job_for(&mut self, manifest: &Manifest) -> Result<Job, AgentError> {
        let has_image = manifest
            .payloads
            .iter()
            .any(|p| matches!(p.kind, PayloadType::Image));
        let activation = if has_image {
            let running = self.boot.control().booted_slot()?;
            Activation::TrialBoot(TrialBoot {
                target: running.other(),
            })
        } else {
            Activation::InPlace
        };
        Ok(Job {
            deployment_id: None,
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            size: 0,
            sha256: Sha256Digest::of(b""),
            security_version: manifest.security_version,
            provides: manifest.provides.clone(),
            activation,
        })
    }

    /// `config.installed` overlaid by what the agent committed itself,
    /// overlaid by the version the running system holds (the truth).
    pub(super) fn installed(&self) -> BTreeMap<String, String> {
        let system = self.system.as_ref().zip(self.system_version.as_ref());
        installed(
            &self.config,
            &self.data,
            system.map(|(system, version)| (system.software.as_str(), version.as_str())),
        )
    }

    pub(super) fn facts(&self) -> DeviceFacts {
        DeviceFacts {
            device_type: self.config.device_type.clone(),
            hardware_revision: self.config.hardware_revision.clone(),
            installed: self.installed(),
            security_version: self.data.record().security_version,
        }
    }

    pub(super) fn inventory(&self) -> Inventory {
        let facts = self.facts();
        let mut attributes = self.config.attributes.clone();
        if let Some(slot) = self.booted {
            attributes.insert(BOOTED_SLOT_ATTRIBUTE.to_owned(), slot.to_string());
        }
        Inventory {
            device_type: facts.device_type,
            hardware_revision: facts.hardware_revision,
            installed: facts.installed,
            security_version: facts.security_version,
            attributes,
        }
    }
}

/// The inventory attribute that names the slot running now (`a` or `b`).
pub const BOOTED_SLOT_ATTRIBUTE: &str = "booted_slot";

/// What is installed: `config.installed`, overlaid by the agent's record,
/// overlaid by the running system's version under its software name.
pub(super) fn installed(
    config: &crate::config::AgentConfig,
    data: &super::DataDir,
    system: Option<(&str, &str)>,
) -> BTreeMap<String, String> {
    let mut installed = config.installed.clone();
    installed.extend(data.record().installed);
    if let Some((software, version)) = system {
        installed.insert(software.to_owned(), version.to_owned());
    }
    installed
}

/// The head of a package file: header, manifest and signatures.
pub(super) fn read_head(file: &Path) -> Result<Vec<u8>, AgentError> {
    let mut reader = BufReader::new(File::open(file).map_err(io_error("opening", file))?);
    let head_len = PackageReader::open(&mut reader, Limits::default())
        .map_err(|e| AgentError::Refused(format!("{}: {e}", file.display())))?
        .payload_offset();
    let mut head = Vec::new();
    File::open(file)
        .and_then(|f| f.take(head_len).read_to_end(&mut head))
        .map_err(io_error("reading", file))?;
    Ok(head)
}

/// A random number, for spreading check-ins; 0 if the system has no
/// randomness to give.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}

/// An encrypted payload needs an age identity: without any, the offer is
/// refused before a byte of it is downloaded (one that does not open it is
/// found at the payload's first block).
fn can_decrypt(manifest: &Manifest, identities: usize) -> Result<(), String> {
    if identities > 0 {
        return Ok(());
    }
    match manifest
        .payloads
        .iter()
        .enumerate()
        .find(|(_, p)| p.encryption == Encryption::Age)
    {
        Some((index, payload)) => Err(format!(
            "payload {index} ({}) is encrypted and this device has no age identity to decrypt it: set age_identity in the agent's configuration to the device's key file",
            payload.target
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_package::Blob;

    fn manifest(encryption: Encryption) -> Manifest {
        let blob = serde_json::to_value(Blob {
            size: 4,
            sha256: Sha256Digest::of(b"data"),
        })
        .expect("a blob");
        serde_json::from_value(serde_json::json!({
            "format_version": airlift_package::FORMAT_VERSION,
            "name": "rootfs",
            "version": "2.0.0",
            "compatible": {"device_types": ["board"]},
            "security_version": 0,
            "payloads": [{
                "type": "image",
                "target": "rootfs",
                "stored": blob,
                "installed": blob,
                "compression": "none",
                "encryption": encryption,
            }],
        }))
        .expect("a manifest")
    }

    #[test]
    fn an_encrypted_payload_without_an_identity_is_refused_before_download() {
        let why = can_decrypt(&manifest(Encryption::Age), 0).expect_err("refused");
        assert!(why.contains("payload 0 (rootfs) is encrypted"), "{why}");
        assert!(why.contains("age_identity"), "{why}");
        assert_eq!(can_decrypt(&manifest(Encryption::Age), 1), Ok(()));
        assert_eq!(can_decrypt(&manifest(Encryption::None), 0), Ok(()));
    }
}
