//! `airlift package build`: encode each payload into a temporary file next
//! to the output (the manifest needs every stored digest before the first
//! payload byte is written), sign, write the package to another temporary
//! file and move it into place. A failed build leaves nothing behind.

use super::{payload_summary, BUF_LEN};
use crate::cli::{BuildArgs, PayloadArg};
use crate::keys;
use crate::output;
use airlift_package::{
    block_size_for, encode_payload, Blob, Compression, EncodeOptions, Encryption, KeyId, Limits,
    Manifest, PackageWriter, PayloadEntry, PayloadSpec, Sha256Digest, SignedManifest, SigningKey,
};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{File, Permissions};
use std::io::{BufReader, BufWriter, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tempfile::NamedTempFile;

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    file: &'a Path,
    size: u64,
    signed_by: Vec<KeyId>,
    manifest: &'a Manifest,
}

pub fn run(args: &BuildArgs, quiet: bool) -> Result<()> {
    let limits = Limits::default();
    let signing_keys = load_signing_keys(&args.keys)?;
    let mut recipients = Vec::new();
    for arg in &args.encrypt_to {
        recipients.extend(
            keys::load_recipients(arg).with_context(|| format!("reading --encrypt-to {arg}"))?,
        );
    }

    // Check the manifest rules (names, targets, counts) before spending
    // minutes compressing: placeholder entries stand in for the payloads.
    manifest(args, args.payloads.iter().map(placeholder_entry))
        .validate(&limits)
        .context("checking the package description")?;
    let inputs = args
        .payloads
        .iter()
        .map(open_input)
        .collect::<Result<Vec<_>>>()?;

    let out_dir = match args.out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Stored bytes are at most slightly larger than the input (zstd and age
    // add a little): one block size for the whole package, from its size.
    let input_len: u64 = inputs.iter().map(|(_, len)| *len).sum();
    let options = EncodeOptions {
        zstd_level: args.zstd_level,
        recipients,
        block_size: block_size_for(
            input_len.saturating_add(input_len / 64),
            inputs.len(),
            &limits,
        ),
        ..EncodeOptions::default()
    };
    let compression = Compression::from(args.compress);
    let mut encoded = Vec::with_capacity(inputs.len());
    for (index, (payload, (input, len))) in args.payloads.iter().zip(inputs).enumerate() {
        let spec = PayloadSpec::new(payload.kind.clone(), payload.target.clone(), compression);
        let progress = output::byte_progress(
            len,
            quiet,
            format!("payload {index} {} {}", payload.kind, payload.target),
        );
        let input = progress.wrap_read(BufReader::with_capacity(BUF_LEN, input));
        let (stored, entry) = encode_to_temp(input, &spec, &options, out_dir)
            .with_context(|| format!("encoding payload {index} from {}", payload.path.display()))?;
        progress.finish_and_clear();
        encoded.push((stored, entry));
    }

    let manifest = manifest(args, encoded.iter().map(|(_, entry)| entry.clone()));
    let key_refs: Vec<&SigningKey> = signing_keys.iter().collect();
    let signed =
        SignedManifest::sign(&manifest, &key_refs, &limits).context("signing the manifest")?;
    write_package(&signed, &mut encoded, out_dir, &args.out)
        .with_context(|| format!("writing package {}", args.out.display()))?;

    let summary = Summary {
        file: &args.out,
        size: signed.package_len(),
        signed_by: signed.key_ids(),
        manifest: signed.manifest(),
    };
    if args.json {
        output::print_json(&summary)
    } else {
        print_summary(&summary);
        Ok(())
    }
}

fn load_signing_keys(paths: &[std::path::PathBuf]) -> Result<Vec<SigningKey>> {
    let mut keys: Vec<SigningKey> = Vec::with_capacity(paths.len());
    for path in paths {
        let key = keys::load_signing_key(path)?;
        let id = key.public_key().key_id();
        if keys.iter().any(|k| k.public_key().key_id() == id) {
            bail!(
                "signing key {} (key id {id}) is given twice; a second signature by the same key counts once",
                path.display()
            );
        }
        keys.push(key);
    }
    Ok(keys)
}

/// The manifest for these arguments with these payload entries.
fn manifest(args: &BuildArgs, payloads: impl IntoIterator<Item = PayloadEntry>) -> Manifest {
    let mut builder = Manifest::builder(&args.name, args.version.clone(), &args.device_types)
        .security_version(args.security_version)
        .format_version(args.format_version);
    if let Some(description) = &args.description {
        builder = builder.description(description);
    }
    for revision in &args.hardware_revisions {
        builder = builder.hardware_revision(revision);
    }
    for (name, req) in &args.requires {
        builder = builder.requires(name, req.clone());
    }
    if !args.provides.is_empty() {
        let mut provides = BTreeMap::from([(args.name.clone(), args.version.clone())]);
        provides.extend(args.provides.iter().cloned());
        builder = builder.provides(provides);
    }
    for payload in payloads {
        builder = builder.payload(payload);
    }
    builder.build()
}

/// An entry with the payload's type and target and an empty body, for
/// checking the manifest rules before anything is encoded.
fn placeholder_entry(payload: &PayloadArg) -> PayloadEntry {
    let empty = Blob {
        size: 0,
        sha256: Sha256Digest::of(b""),
    };
    PayloadEntry::new(
        payload.kind.clone(),
        payload.target.clone(),
        empty,
        empty,
        Compression::None,
        Encryption::None,
    )
}

/// Opens a payload's input file; returns it with its length for the progress bar.
fn open_input(payload: &PayloadArg) -> Result<(File, u64)> {
    let path = &payload.path;
    let context = || format!("opening payload file {}", path.display());
    let file = File::open(path).with_context(context)?;
    let metadata = file.metadata().with_context(context)?;
    if metadata.is_dir() {
        bail!(
            "payload {} is a directory; pass a file (for an archive payload, make a tar file first)",
            path.display()
        );
    }
    Ok((file, metadata.len()))
}

fn encode_to_temp(
    input: impl std::io::Read,
    spec: &PayloadSpec,
    options: &EncodeOptions,
    dir: &Path,
) -> Result<(NamedTempFile, PayloadEntry)> {
    let mut stored = tempfile::Builder::new()
        .prefix(".airlift-payload-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut out = BufWriter::with_capacity(BUF_LEN, stored.as_file_mut());
    let entry = encode_payload(input, spec, options, &mut out)?;
    out.flush()?;
    drop(out);
    stored.as_file_mut().rewind()?;
    Ok((stored, entry))
}

fn write_package(
    signed: &SignedManifest,
    encoded: &mut [(NamedTempFile, PayloadEntry)],
    dir: &Path,
    out: &Path,
) -> Result<()> {
    // 0666 before the umask: the package gets a normal file's mode, not the
    // 0600 temporary files are made with.
    let mut package = tempfile::Builder::new()
        .prefix(".airlift-package-")
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut writer = PackageWriter::new(
        BufWriter::with_capacity(BUF_LEN, package.as_file_mut()),
        signed,
    )?;
    for (stored, _) in encoded.iter_mut() {
        writer.write_payload(BufReader::with_capacity(BUF_LEN, stored.as_file_mut()))?;
    }
    writer.finish()?;
    package.as_file().sync_all()?;
    package.persist(out).map_err(|e| e.error)?;
    Ok(())
}

fn print_summary(summary: &Summary<'_>) {
    let manifest = summary.manifest;
    println!(
        "wrote {}: {}",
        summary.file.display(),
        output::size(summary.size)
    );
    println!(
        "  {} {} for {}, security version {}",
        manifest.name,
        manifest.version,
        manifest.compatible.device_types.join(", "),
        manifest.security_version
    );
    let signers: Vec<String> = summary.signed_by.iter().map(ToString::to_string).collect();
    println!("  signed by {}", signers.join(", "));
    for (index, entry) in manifest.payloads.iter().enumerate() {
        println!("  {}", payload_summary(index, entry));
    }
}
