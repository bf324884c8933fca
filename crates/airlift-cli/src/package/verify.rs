//! `airlift package verify`: check the signatures against the trusted
//! keys, then stream every payload through the library's checking readers.

use super::BUF_LEN;
use crate::cli::VerifyArgs;
use crate::keys;
use crate::output;
use airlift_package::encryption::{Identity, IdentityTrait};
use airlift_package::{
    Encryption, Error, KeyId, Limits, PackageReader, PayloadType, TrustSet, VerifiedPackage,
};
use anyhow::{Context, Result};
use serde::Serialize;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// Whether a digest was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Check {
    /// The bytes matched the signed size and digest.
    Verified,
    /// Not checked: the payload is encrypted and no identity was given.
    NotChecked,
}

/// One payload's result.
#[derive(Debug, Serialize)]
struct PayloadResult {
    index: usize,
    #[serde(rename = "type")]
    kind: PayloadType,
    target: String,
    encryption: Encryption,
    stored_digest: Check,
    installed_digest: Check,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report<'a> {
    file: &'a Path,
    verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package: Option<&'a Verification>,
}

/// A package that verified.
#[derive(Debug, Serialize)]
struct Verification {
    name: String,
    version: semver::Version,
    security_version: u64,
    signed_by: Vec<KeyId>,
    threshold: usize,
    payloads: Vec<PayloadResult>,
}

pub fn run(args: &VerifyArgs, quiet: bool) -> Result<()> {
    let outcome = verify(args, quiet).with_context(|| format!("verifying {}", args.file.display()));
    if args.json {
        let report = match &outcome {
            Ok(verification) => Report {
                file: &args.file,
                verified: true,
                error: None,
                package: Some(verification),
            },
            Err(error) => Report {
                file: &args.file,
                verified: false,
                error: Some(output::error_chain(error).join(": ")),
                package: None,
            },
        };
        output::print_json(&report)?;
        return outcome.map(drop);
    }
    let verification = outcome?;
    println!("verified {}", args.file.display());
    println!(
        "  {} {}, security version {}",
        verification.name, verification.version, verification.security_version
    );
    let signers: Vec<String> = verification
        .signed_by
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "  signed by trusted key(s) {} (threshold {})",
        signers.join(", "),
        verification.threshold
    );
    for payload in &verification.payloads {
        let installed = match payload.installed_digest {
            Check::Verified => "installed size and digest ok",
            Check::NotChecked => {
                "installed digest NOT checked (encrypted; pass --identity to decrypt and check it)"
            }
        };
        println!(
            "  payload {} {} {}: stored size and digest ok, {installed}",
            payload.index, payload.kind, payload.target
        );
    }
    Ok(())
}

fn verify(args: &VerifyArgs, quiet: bool) -> Result<Verification> {
    let trusted = args
        .trust
        .iter()
        .map(|path| keys::load_public_key(path))
        .collect::<Result<Vec<_>>>()?;
    let trust = TrustSet::new(trusted, args.threshold).context("building the trust set")?;
    let mut identities: Vec<Identity> = Vec::new();
    for path in &args.identities {
        identities.extend(keys::load_identities(path)?);
    }
    let identities: Vec<&dyn IdentityTrait> = identities
        .iter()
        .map(|identity| identity as &dyn IdentityTrait)
        .collect();

    let file = File::open(&args.file).context("opening the package")?;
    let len = file.metadata().context("opening the package")?.len();
    let progress = output::byte_progress(len, quiet, "verifying".to_owned());
    let input = BufReader::with_capacity(BUF_LEN, progress.wrap_read(file));
    let mut package = PackageReader::open(input, Limits::default())?.verify(&trust)?;
    let payloads = check_payloads(&mut package, &identities)?;
    let manifest = package.manifest().clone();
    package.finish()?;
    progress.finish_and_clear();
    Ok(Verification {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        security_version: manifest.security_version,
        signed_by: manifest.signed_by().to_vec(),
        threshold: trust.threshold(),
        payloads,
    })
}

/// Reads every payload: the stored bytes always, the installed bytes
/// whenever they can be decoded.
fn check_payloads<R: Read>(
    package: &mut VerifiedPackage<R>,
    identities: &[&dyn IdentityTrait],
) -> Result<Vec<PayloadResult>, Error> {
    let mut buf = vec![0u8; BUF_LEN];
    let mut results = Vec::new();
    while let Some(payload) = package.next_payload()? {
        let index = payload.index();
        let entry = payload.entry().clone();
        let installed_digest = if entry.encryption == Encryption::Age && identities.is_empty() {
            drain(payload, &mut buf)?;
            Check::NotChecked
        } else {
            // On a decode error the library reads the rest of the stored
            // bytes and reports their digest mismatch, which names the range.
            drain(payload.decoded(identities)?, &mut buf)?;
            Check::Verified
        };
        results.push(PayloadResult {
            index,
            kind: entry.kind,
            target: entry.target,
            encryption: entry.encryption,
            stored_digest: Check::Verified,
            installed_digest,
        });
    }
    Ok(results)
}

/// Reads `reader` to its end, recovering the library's error from `io::Error`.
fn drain(mut reader: impl Read, buf: &mut [u8]) -> Result<(), Error> {
    loop {
        match reader.read(buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::from(e)),
        }
    }
}
