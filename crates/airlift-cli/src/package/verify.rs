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
    /// Format version 2: how many blocks of the stored bytes were checked
    /// against the signed block index, each before it was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    blocks: Option<u64>,
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
    format_version: u16,
    /// Format version 2: the size of the blocks the signatures cover.
    #[serde(skip_serializing_if = "Option::is_none")]
    block_size: Option<u32>,
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
    match verification.block_size {
        Some(size) => println!(
            "  format version {}: every {} block checked against the signed block index before use",
            verification.format_version,
            indicatif::BinaryBytes(u64::from(size))
        ),
        None => println!(
            "  format version {}: each payload checked at its end",
            verification.format_version
        ),
    }
    for payload in &verification.payloads {
        let installed = match payload.installed_digest {
            Check::Verified => "installed size and digest ok",
            Check::NotChecked => {
                "installed digest NOT checked (encrypted; pass --identity to decrypt and check it)"
            }
        };
        let stored = match payload.blocks {
            Some(blocks) => format!("stored size and {blocks} block digest(s) ok"),
            None => "stored size and digest ok".to_owned(),
        };
        println!(
            "  payload {} {} {}: {stored}, {installed}",
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
    // Buffers the head's small reads; the payload reads (1 MiB, or 128 KiB
    // pieces of a block) are larger, so they go straight to the file
    // instead of through a copy in this buffer.
    let input = BufReader::with_capacity(64 * 1024, progress.wrap_read(file));
    let mut package = PackageReader::open(input, Limits::default())?.verify(&trust)?;
    let block_size = package.manifest().block_index.map(|index| index.block_size);
    let payloads = check_payloads(&mut package, &identities, block_size)?;
    let manifest = package.manifest().clone();
    package.finish()?;
    progress.finish_and_clear();
    Ok(Verification {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        security_version: manifest.security_version,
        signed_by: manifest.signed_by().to_vec(),
        threshold: trust.threshold(),
        format_version: manifest.format_version,
        block_size,
        payloads,
    })
}

/// Reads every payload: the stored bytes always, the installed bytes
/// whenever they can be decoded. A payload stored as installed is hashed
/// once: the library checks its stored bytes (whole, or block by block in
/// version 2), which are its installed bytes, and decoding adds no hash.
fn check_payloads<R: Read>(
    package: &mut VerifiedPackage<R>,
    identities: &[&dyn IdentityTrait],
    block_size: Option<u32>,
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
            blocks: block_size.map(|size| entry.stored.size.div_ceil(u64::from(size))),
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
