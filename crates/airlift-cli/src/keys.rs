//! Key files: creating signing and encryption key pairs, and reading them
//! back for the package commands.
//!
//! Secret files are created with mode 0600 from the start (never chmod-ed
//! afterwards) and appear under their final name atomically, so a crash
//! leaves either no key or a complete one. Nothing here prints secret
//! material, not even in errors.

use crate::cli::{GenerateArgs, GenerateEncryptionArgs};
use age::secrecy::ExposeSecret;
use airlift_package::encryption::{Identity, Recipient};
use airlift_package::{PublicKey, SigningKey};
use anyhow::{bail, Context, Result};
use std::fs::{self, Permissions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Mode of files holding secrets.
const SECRET_MODE: u32 = 0o600;
/// Mode of public files (the umask still applies).
const PUBLIC_MODE: u32 = 0o644;

/// `airlift key generate`.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    let private_path = key_path(&args.out, &args.name, "key")?;
    let public_path = key_path(&args.out, &args.name, "pub")?;
    refuse_existing(&[&private_path, &public_path], args.force)?;

    let key = SigningKey::generate().context("generating a signing key")?;
    let public = key.public_key();
    let private_pem = key.to_pem().context("encoding the private key")?;
    let public_pem = public.to_pem().context("encoding the public key")?;

    fs::create_dir_all(&args.out)
        .with_context(|| format!("creating directory {}", args.out.display()))?;
    write_atomically(
        &private_path,
        private_pem.as_bytes(),
        SECRET_MODE,
        args.force,
    )?;
    write_atomically(&public_path, public_pem.as_bytes(), PUBLIC_MODE, args.force)?;

    println!(
        "wrote {} (private key: keep it secret)",
        private_path.display()
    );
    println!(
        "wrote {} (public key: trust it on devices and servers)",
        public_path.display()
    );
    println!("key id {}", public.key_id());
    Ok(())
}

/// `airlift key generate-encryption`.
pub fn generate_encryption(args: &GenerateEncryptionArgs) -> Result<()> {
    let identity_path = key_path(&args.out, &args.name, "age-identity")?;
    let recipient_path = key_path(&args.out, &args.name, "age-recipient")?;
    refuse_existing(&[&identity_path, &recipient_path], args.force)?;

    let identity = Identity::generate();
    let recipient = identity.to_public();
    let identity_file = format!(
        "# age X25519 identity made by `airlift key generate-encryption`; keep it secret\n\
         # public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    );

    fs::create_dir_all(&args.out)
        .with_context(|| format!("creating directory {}", args.out.display()))?;
    write_atomically(
        &identity_path,
        identity_file.as_bytes(),
        SECRET_MODE,
        args.force,
    )?;
    write_atomically(
        &recipient_path,
        format!("{recipient}\n").as_bytes(),
        PUBLIC_MODE,
        args.force,
    )?;

    println!(
        "wrote {} (age identity: keep it secret, install it on devices)",
        identity_path.display()
    );
    println!(
        "wrote {} (age recipient: pass it to `package build --encrypt-to`)",
        recipient_path.display()
    );
    println!("recipient {recipient}");
    Ok(())
}

/// `airlift key id`.
pub fn id(file: &Path) -> Result<()> {
    let text = read_pem(file, "key file")?;
    let key_id = if text.contains("PRIVATE KEY-----") {
        SigningKey::from_pem(&text)
            .with_context(|| format!("reading private key {}", file.display()))?
            .public_key()
            .key_id()
    } else {
        PublicKey::from_pem(&text)
            .with_context(|| format!("reading public key {}", file.display()))?
            .key_id()
    };
    println!("{key_id}");
    Ok(())
}

/// Reads a PKCS#8 PEM signing key.
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let text = read_pem(path, "signing key")?;
    SigningKey::from_pem(&text).with_context(|| format!("reading signing key {}", path.display()))
}

/// Reads an SPKI PEM public key.
pub fn load_public_key(path: &Path) -> Result<PublicKey> {
    let text = read_pem(path, "trusted key")?;
    PublicKey::from_pem(&text).with_context(|| format!("reading trusted key {}", path.display()))
}

/// Reads a PEM file without the whitespace around it: the blank lines or
/// indentation an editor or a copy-paste leaves, which the PEM parser
/// refuses (trimmed in place, so a private key is not copied).
pub fn read_pem(path: &Path, what: &str) -> Result<String> {
    let mut text = read_text(path, what)?;
    text.truncate(text.trim_end().len());
    let start = text.len() - text.trim_start().len();
    text.drain(..start);
    Ok(text)
}

/// Turns one `--encrypt-to` value into recipients: an `age1…` recipient
/// itself, or a file with one recipient per line (`#` starts a comment).
pub fn load_recipients(arg: &str) -> Result<Vec<Recipient>> {
    if arg.starts_with("age1") {
        let recipient = arg
            .parse()
            .map_err(|e: &str| anyhow::anyhow!("{arg:?} is not an age X25519 recipient: {e}"))?;
        return Ok(vec![recipient]);
    }
    let path = Path::new(arg);
    let text = read_text(path, "recipients file")?;
    let mut recipients = Vec::new();
    for (number, line) in meaningful_lines(&text) {
        if line.starts_with("AGE-SECRET-KEY-") {
            bail!(
                "line {number} of {} is a secret age identity, not a recipient; pass the public .age-recipient file instead",
                path.display()
            );
        }
        let recipient = line.parse().map_err(|e: &str| {
            anyhow::anyhow!(
                "line {number} of {} is not an age X25519 recipient (age1…): {e}",
                path.display()
            )
        })?;
        recipients.push(recipient);
    }
    if recipients.is_empty() {
        bail!("{} holds no age recipient", path.display());
    }
    Ok(recipients)
}

/// Reads an age identity file: `AGE-SECRET-KEY-1…` lines, `#` comments.
pub fn load_identities(path: &Path) -> Result<Vec<Identity>> {
    let text = read_text(path, "age identity file")?;
    let mut identities = Vec::new();
    for (number, line) in meaningful_lines(&text) {
        // The line may be a secret: never echo it.
        let identity = line.parse().map_err(|_: &str| {
            anyhow::anyhow!(
                "line {number} of {} is not an age X25519 identity (AGE-SECRET-KEY-1…)",
                path.display()
            )
        })?;
        identities.push(identity);
    }
    if identities.is_empty() {
        bail!("{} holds no age identity", path.display());
    }
    Ok(identities)
}

fn meaningful_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))
}

fn key_path(dir: &Path, name: &str, extension: &str) -> Result<PathBuf> {
    if name.is_empty() || name.starts_with('.') || name.contains('/') {
        bail!(
            "key name {name:?} must be a plain file name: not empty, no '/', not starting with '.'"
        );
    }
    Ok(dir.join(format!("{name}.{extension}")))
}

fn refuse_existing(paths: &[&Path], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for path in paths {
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; pass --force to replace it",
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes `contents` to a temporary file created with `mode` next to
/// `path`, then moves it into place (refusing to replace an existing file
/// unless `replace`).
fn write_atomically(path: &Path, contents: &[u8], mode: u32, replace: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".airlift-key-")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    file.write_all(contents)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing {}", file.path().display()))?;
    let persisted = if replace {
        file.persist(path)
    } else {
        file.persist_noclobber(path)
    };
    persisted.map_err(|e| e.error).with_context(|| {
        if replace {
            format!("writing {}", path.display())
        } else {
            format!(
                "writing {} (if it already exists, pass --force to replace it)",
                path.display()
            )
        }
    })?;
    Ok(())
}
