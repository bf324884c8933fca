//! `airlift root …`: make, edit, sign and show trust roots
//! (`docs/trust.md`). Everything here works on files the operator holds:
//! private keys are read from their key files to sign and never leave the
//! machine, and nothing talks to a server.
//!
//! A root file without signatures is a *draft*: `add-key` and `revoke`
//! edit it in place. A signed root is *published*: editing it makes the
//! next version's draft, written to `--out`, because a signed root is
//! never changed.

mod show;

use crate::keys::{load_public_key, load_signing_key};
use airlift_trust::{RoleName, Root, RootDocument};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use std::fs::Permissions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `airlift root …`
#[derive(Debug, Subcommand)]
pub enum RootCommand {
    /// Write a first root (version 1, unsigned) naming its root, release and timestamp keys.
    #[command(after_help = "Examples:
  airlift root init --root-key keys/root-a.pub --root-key keys/root-b.pub --root-threshold 2 \\
      --release-key keys/release.pub --timestamp-key keys/online.pub --out root-1.json
  airlift root sign root-1.json --key keys/root-a.key
  airlift root sign root-1.json --key keys/root-b.key")]
    Init(InitArgs),
    /// Add a public key to a role (a signed root gives the next version's draft).
    #[command(after_help = "Examples:
  airlift root add-key root-1.json --role release --key keys/release-2026.pub --out root-2.json
  airlift root add-key root-2.json --role root --key keys/root-c.pub --threshold 2")]
    AddKey(AddKeyArgs),
    /// Remove a key from a role (a signed root gives the next version's draft).
    #[command(after_help = "Examples:
  airlift root revoke root-2.json --role release --key-id 1f2e3d4c5b6a7988 --out root-3.json
  # recovery from a leaked key that set a huge security version:
  airlift root revoke root-2.json --role release --key-id 1f2e3d4c5b6a7988 \\
      --security-version-reset 12 --out root-3.json")]
    Revoke(RevokeArgs),
    /// Add a signature with a private key file, in place.
    #[command(
        long_about = "Add a signature with a private key file, in place.\n\n\
            Root N+1 needs a threshold of root N's root keys and a threshold of its own: sign \
            it with both (keys that were rotated out sign it one last time). Pass --previous \
            to see whether the chain from root N holds after this signature.",
        after_help = "Examples:
  airlift root sign root-2.json --key keys/root-a.key
  airlift root sign root-2.json --key keys/root-c.key --previous root-1.json"
    )]
    Sign(SignArgs),
    /// Show a root: version, expiry, roles, signatures, and whether it verifies.
    #[command(after_help = "Examples:
  airlift root show root-2.json
  airlift root show root-2.json --previous root-1.json --json")]
    Show(ShowArgs),
}

/// The role a key belongs to.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Role {
    /// Signs roots.
    Root,
    /// Signs packages.
    Release,
    /// The server's online key, signing timestamps.
    Timestamp,
}

impl From<Role> for RoleName {
    fn from(role: Role) -> Self {
        match role {
            Role::Root => RoleName::Root,
            Role::Release => RoleName::Release,
            Role::Timestamp => RoleName::Timestamp,
        }
    }
}

/// Arguments of `airlift root init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// A root key's public key file (repeat for several).
    #[arg(long = "root-key", value_name = "PUB", required = true)]
    pub root_keys: Vec<PathBuf>,
    /// Root signatures needed.
    #[arg(long, default_value_t = 1)]
    pub root_threshold: usize,
    /// A release (package signing) public key file (repeat for several).
    #[arg(long = "release-key", value_name = "PUB", required = true)]
    pub release_keys: Vec<PathBuf>,
    /// Package signatures needed.
    #[arg(long, default_value_t = 1)]
    pub release_threshold: usize,
    /// The server's online timestamp public key file (repeat for several).
    #[arg(long = "timestamp-key", value_name = "PUB", required = true)]
    pub timestamp_keys: Vec<PathBuf>,
    /// Timestamp signatures needed.
    #[arg(long, default_value_t = 1)]
    pub timestamp_threshold: usize,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
    /// Where to write the root.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// How long a new root lasts.
#[derive(Debug, Args)]
pub struct ExpiryArgs {
    /// How long the root is valid from now (e.g. 365d, 8w).
    #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = humantime::parse_duration)]
    pub expires_in: Duration,
}

/// What `add-key` and `revoke` share.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// The root file to start from.
    pub file: PathBuf,
    /// The role to change.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Set the role's threshold too.
    #[arg(long)]
    pub threshold: Option<usize>,
    /// Devices taking this root lower their security version to this value
    /// (the recovery from a fast-forward by a leaked key).
    #[arg(long, value_name = "N")]
    pub security_version_reset: Option<u64>,
    /// Where to write the result (required when FILE is signed; default: FILE).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
}

/// Arguments of `airlift root add-key`.
#[derive(Debug, Args)]
pub struct AddKeyArgs {
    #[command(flatten)]
    pub edit: EditArgs,
    /// The public key file to add.
    #[arg(long, value_name = "PUB")]
    pub key: PathBuf,
}

/// Arguments of `airlift root revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub edit: EditArgs,
    /// The id of the key to remove (`airlift key id`, `airlift root show`).
    #[arg(long, value_name = "KEY_ID")]
    pub key_id: airlift_package::KeyId,
}

/// Arguments of `airlift root sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The root file to sign (changed in place).
    pub file: PathBuf,
    /// The private key file to sign with.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The root this one follows, to report whether the chain holds.
    #[arg(long, value_name = "FILE")]
    pub previous: Option<PathBuf>,
}

/// Arguments of `airlift root show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The root file.
    pub file: PathBuf,
    /// The root it follows, to check the chain.
    #[arg(long, value_name = "FILE")]
    pub previous: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs one `airlift root` command.
pub fn run(command: &RootCommand) -> Result<()> {
    match command {
        RootCommand::Init(args) => init(args),
        RootCommand::AddKey(args) => edit(&args.edit, |document, role| {
            let key = load_public_key(&args.key)?;
            document.add_key(role, &key);
            Ok(format!(
                "added key {} to the {} role",
                key.key_id(),
                role.as_str()
            ))
        }),
        RootCommand::Revoke(args) => edit(&args.edit, |document, role| {
            if !document.revoke_key(role, &args.key_id) {
                bail!("key {} is not in the {} role", args.key_id, role.as_str());
            }
            Ok(format!(
                "removed key {} from the {} role",
                args.key_id,
                role.as_str()
            ))
        }),
        RootCommand::Sign(args) => sign(args),
        RootCommand::Show(args) => show::show(args),
    }
}

fn init(args: &InitArgs) -> Result<()> {
    if !args.force && args.out.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; pass --force to replace it",
            args.out.display()
        );
    }
    let load = |paths: &[PathBuf]| -> Result<Vec<_>> {
        paths.iter().map(|p| load_public_key(p)).collect()
    };
    let (roots, releases, timestamps) = (
        load(&args.root_keys)?,
        load(&args.release_keys)?,
        load(&args.timestamp_keys)?,
    );
    let mut document =
        RootDocument::first(roots[0], releases[0], timestamps[0], expiry(&args.expiry)?);
    for (role, keys, threshold) in [
        (RoleName::Root, &roots, args.root_threshold),
        (RoleName::Release, &releases, args.release_threshold),
        (RoleName::Timestamp, &timestamps, args.timestamp_threshold),
    ] {
        for key in keys {
            document.add_key(role, key);
        }
        document.set_threshold(role, threshold);
    }
    write_draft(&document, &args.out)?;
    println!(
        "wrote {} (root version 1, unsigned): sign it with {} of its root keys (`airlift root sign`)",
        args.out.display(),
        args.root_threshold
    );
    Ok(())
}

fn edit(
    args: &EditArgs,
    change: impl FnOnce(&mut RootDocument, RoleName) -> Result<String>,
) -> Result<()> {
    let root = read_root(&args.file)?;
    let published = !root.envelope().signatures().is_empty();
    let out = match (&args.out, published) {
        (Some(out), _) => out.clone(),
        (None, false) => args.file.clone(),
        (None, true) => bail!(
            "{} is signed (published); pass --out for the next version's draft",
            args.file.display()
        ),
    };
    let mut document = if published {
        root.document().next(expiry(&args.expiry)?)
    } else {
        root.document().clone()
    };
    let role = RoleName::from(args.role);
    let said = change(&mut document, role)?;
    if let Some(threshold) = args.threshold {
        document.set_threshold(role, threshold);
    }
    if args.security_version_reset.is_some() {
        document.security_version_reset = args.security_version_reset;
    }
    write_draft(&document, &out)?;
    println!(
        "{said}; wrote {} (root version {}, unsigned): sign it with the root keys of this version{}",
        out.display(),
        document.version,
        if document.version > 1 { " and of the previous one" } else { "" }
    );
    Ok(())
}

fn sign(args: &SignArgs) -> Result<()> {
    let root = read_root(&args.file)?;
    let key = load_signing_key(&args.key)?;
    let mut envelope = root.envelope().clone();
    envelope.sign(&key);
    write_file(&args.file, &envelope.to_bytes())?;
    let key_id = key.public_key().key_id();
    if root.knows(&key) {
        println!("signed {} with key {key_id}", args.file.display());
    } else {
        println!(
            "signed {} with key {key_id}, which this root does not name (right for the previous root's root keys)",
            args.file.display()
        );
    }
    let root = read_root(&args.file)?;
    let previous = args.previous.as_deref().map(read_root).transpose()?;
    for line in show::verdict(&root, previous.as_ref()) {
        println!("{line}");
    }
    Ok(())
}

pub(crate) fn read_root(path: &Path) -> Result<Root> {
    let bytes = std::fs::read(path).with_context(|| format!("reading root {}", path.display()))?;
    Root::parse(&bytes).with_context(|| format!("reading root {}", path.display()))
}

fn write_draft(document: &RootDocument, out: &Path) -> Result<()> {
    let envelope = document.to_envelope()?;
    // The draft must parse as a root: thresholds and key lists checked now,
    // not when the operator is about to sign.
    Root::parse(&envelope.to_bytes()).context("the root would not be valid")?;
    write_file(out, &envelope.to_bytes())
}

fn expiry(args: &ExpiryArgs) -> Result<u64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    Ok(now.saturating_add(args.expires_in).as_secs())
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and moves it
/// into place, so a crash leaves the old root or the new one.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".airlift-root-")
        .permissions(Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing {}", file.path().display()))?;
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
