//! `airlift package inspect`: show the manifest and signers without a key.
//! Nothing shown is verified, and the output says so.

use super::{encoding, payload_name};
use crate::cli::InspectArgs;
use crate::output;
use airlift_package::{KeyId, Limits, Manifest, PackageReader};
use anyhow::{Context, Result};
use serde::Serialize;
use std::fs::File;
use std::io::BufReader;

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Inspection<'a> {
    manifest: &'a Manifest,
    signatures: Vec<KeyId>,
    /// Always false: inspect checks no signature.
    verified: bool,
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let path = &args.file;
    let context = || format!("reading package {}", path.display());
    let file = File::open(path).with_context(context)?;
    let reader =
        PackageReader::open(BufReader::new(file), Limits::default()).with_context(context)?;
    let manifest = reader.manifest_unverified().with_context(context)?;
    let signatures: Vec<KeyId> = reader.signatures().iter().map(|s| s.key_id).collect();
    if args.json {
        return output::print_json(&Inspection {
            manifest: &manifest,
            signatures,
            verified: false,
        });
    }

    let none_if_empty = |items: Vec<String>, empty: &str| {
        if items.is_empty() {
            empty.to_owned()
        } else {
            items.join(", ")
        }
    };
    println!("package             {} {}", manifest.name, manifest.version);
    if let Some(description) = &manifest.description {
        println!("description         {description}");
    }
    println!(
        "device types        {}",
        manifest.compatible.device_types.join(", ")
    );
    println!(
        "hardware revisions  {}",
        none_if_empty(manifest.compatible.hardware_revisions.clone(), "any")
    );
    println!(
        "requires            {}",
        none_if_empty(
            manifest
                .compatible
                .requires
                .iter()
                .map(|(name, req)| format!("{name} {req}"))
                .collect(),
            "nothing"
        )
    );
    println!(
        "provides            {}",
        none_if_empty(
            manifest
                .provides
                .iter()
                .map(|(name, version)| format!("{name} {version}"))
                .collect(),
            "nothing"
        )
    );
    println!("security version    {}", manifest.security_version);
    print_format(&manifest, reader.block_index_bytes().len());
    println!("payloads            {}", manifest.payloads.len());
    let mut start = reader.payload_offset();
    for (index, entry) in manifest.payloads.iter().enumerate() {
        let end = start.saturating_add(entry.stored.size);
        println!("  {index}  {}", payload_name(entry));
        println!("     {}, bytes {start}..{end} of the file", encoding(entry));
        println!(
            "     stored     {}, sha256 {}",
            output::size(entry.stored.size),
            entry.stored.sha256
        );
        println!(
            "     installed  {}, sha256 {}",
            output::size(entry.installed.size),
            entry.installed.sha256
        );
        start = end;
    }
    println!(
        "signatures          {}: {}",
        signatures.len(),
        none_if_empty(signatures.iter().map(ToString::to_string).collect(), "none")
    );
    println!(
        "NOT VERIFIED: no signature or digest was checked; run `airlift package verify {} --trust KEY.pub` before relying on any of this",
        path.display()
    );
    Ok(())
}

/// The format line: version 2's blocks, or version 1's whole-payload check.
fn print_format(manifest: &Manifest, index_len: usize) {
    match &manifest.block_index {
        Some(index) => println!(
            "format              {}, a signed digest per {} block ({} blocks, index sha256 {})",
            manifest.format_version,
            indicatif::BinaryBytes(u64::from(index.block_size)),
            index_len / airlift_package::BLOCK_DIGEST_LEN,
            index.sha256
        ),
        None => println!(
            "format              {}, each payload checked at its end",
            manifest.format_version
        ),
    }
}
