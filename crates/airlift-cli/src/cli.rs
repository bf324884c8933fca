//! The command line, as clap types. Parsing here turns text into typed
//! values (payload specs, versions, requirements); the commands never see
//! raw strings they would have to split again. The admin commands' argument
//! types live next to their code, in `admin/*`.

use crate::admin::audit::AuditCommand;
use crate::admin::deployment::DeploymentCommand;
use crate::admin::device::DeviceCommand;
use crate::admin::package::PackageServerCommand;
use crate::admin::server::ServerCommand;
use crate::admin::token::TokenCommand;
use crate::admin::ConnectionArgs;
use airlift_package::{Compression, PayloadType};
use clap::{Args, Parser, Subcommand, ValueEnum};
use semver::{Version, VersionReq};
use std::path::PathBuf;
use std::str::FromStr;

/// `airlift`: make signing keys, build, inspect and verify update packages,
/// and drive an airlift-server.
#[derive(Debug, Parser)]
#[command(
    name = "airlift",
    version,
    about = "Airlift ships signed over-the-air updates to device fleets; this tool makes keys, builds, inspects and verifies update packages, and drives an airlift-server: packages, devices, deployments and tokens.",
    after_help = "Examples:
  airlift key generate --out keys/
  airlift package build --name rootfs --version 1.2.0 --device-type rpi4 \\
      --payload image:rootfs=build/rootfs.img \\
      --key keys/airlift-signing.key --out rootfs-1.2.0.airlift
  airlift package verify rootfs-1.2.0.airlift --trust keys/airlift-signing.pub
  airlift server login https://updates.example.com --token alt_5f0c…
  airlift package upload rootfs-1.2.0.airlift
  airlift deployment create --name 'rootfs 1.2.0' --package PACKAGE_ID --tag canary"
)]
pub struct Cli {
    /// Do not draw progress bars (they are also hidden when stderr is not a terminal).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(flatten)]
    pub connection: ConnectionArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create signing and encryption keys, and show key ids.
    #[command(after_help = "Examples:
  airlift key generate --out keys/
  airlift key generate-encryption --out keys/
  airlift key id keys/airlift-signing.pub")]
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// See the whole system work: a server, a simulated fleet, a staged
    /// rollout, and a broken release stopped by the circuit breaker.
    #[cfg(feature = "demo")]
    #[command(
        long_about = "See the whole system work, in about half a minute: starts an airlift-server on a \
            temporary SQLite database, makes a signing key and two signed packages, starts a \
            fleet of simulated devices running the real agent, rolls the good package out in \
            phases (canary, 10 %, 50 %, 100 %), then a broken one whose health check fails on \
            40 % of devices — the circuit breaker aborts it after the canaries, which roll back \
            by themselves. Needs the airlift-server binary beside this one (`cargo install \
            --path crates/airlift-server` puts it there for an installed airlift, `cargo build \
            --release` for target/release/airlift) or --server-bin. Only in an airlift built \
            with its default `demo` feature.",
        after_help = "Examples:
  airlift demo
  airlift demo --keep            # then look around with the commands it prints
  airlift demo --devices 500 --unhealthy-percent 20
  airlift demo --database-url postgres://postgres@127.0.0.1:5432/demo"
    )]
    Demo(crate::demo::DemoArgs),
    /// Build, inspect and verify update packages; upload, list and delete them on the server.
    #[command(after_help = "Examples:
  airlift package build --name rootfs --version 1.2.0 --device-type rpi4 \\
      --payload image:rootfs=build/rootfs.img \\
      --key keys/airlift-signing.key --out rootfs-1.2.0.airlift
  airlift package inspect rootfs-1.2.0.airlift
  airlift package verify rootfs-1.2.0.airlift --trust keys/airlift-signing.pub
  airlift package upload rootfs-1.2.0.airlift
  airlift package list")]
    Package {
        #[command(subcommand)]
        command: PackageCommand,
    },
    /// Log in to an airlift-server (store its URL and a token), log out, check the login.
    #[command(after_help = "Examples:
  airlift server login https://updates.example.com --token alt_5f0c…
  airlift server status
  airlift server logout")]
    Server {
        #[command(subcommand)]
        command: ServerCommand,
    },
    /// List, inspect, accept, reject, decommission, pre-authorise and tag devices.
    #[command(after_help = "Examples:
  airlift device list --status pending
  airlift device accept 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56
  airlift device tag 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --tag canary")]
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Roll packages out to devices, follow and cancel rollouts.
    #[command(after_help = "Examples:
  airlift deployment create --name 'rootfs 1.2.0 canary' --package PACKAGE_ID --tag canary
  airlift deployment list
  airlift deployment show DEPLOYMENT_ID")]
    Deployment {
        #[command(subcommand)]
        command: DeploymentCommand,
    },
    /// Create, list and revoke management API tokens (admin only).
    #[command(after_help = "Examples:
  airlift token create --name ci-release --role operator
  airlift token list
  airlift token revoke TOKEN_ID")]
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Read the audit log: who changed what, newest first (admin only).
    #[command(after_help = "Examples:
  airlift audit list
  airlift audit list --actor ci-release --action deployment.")]
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Make, rotate, revoke and sign trust roots, offline (docs/trust.md).
    #[command(after_help = "Examples:
  airlift root init --root-key keys/root.pub --release-key keys/release.pub \\
      --timestamp-key keys/online.pub --out root-1.json
  airlift root sign root-1.json --key keys/root.key
  airlift root show root-1.json")]
    Root {
        #[command(subcommand)]
        command: crate::root::RootCommand,
    },
}

/// `airlift key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an Ed25519 signing key pair for packages.
    #[command(
        long_about = "Create an Ed25519 signing key pair for packages.\n\n\
            Writes DIR/NAME.key (the private key, PKCS#8 PEM, readable by you only) and \
            DIR/NAME.pub (the public key, SPKI PEM, to install on devices and servers as a \
            trusted key), and prints the key id. Refuses to replace existing files unless \
            --force is given.",
        after_help = "Examples:
  airlift key generate --out keys/
  airlift key generate --out keys/ --name release-2025 --force"
    )]
    Generate(GenerateArgs),

    /// Create an age X25519 key pair for encrypting payloads to devices.
    #[command(
        long_about = "Create an age X25519 key pair for encrypting payloads to devices.\n\n\
            Writes DIR/NAME.age-identity (the secret identity, readable by you only; it goes \
            on the devices and is what `package verify --identity` takes) and \
            DIR/NAME.age-recipient (the public recipient, what `package build --encrypt-to` \
            takes), and prints the recipient.",
        after_help = "Examples:
  airlift key generate-encryption --out keys/
  airlift package build ... --encrypt-to keys/airlift-device.age-recipient"
    )]
    GenerateEncryption(GenerateEncryptionArgs),

    /// Print the key id of a public or private signing key file.
    #[command(
        long_about = "Print the key id of a public or private signing key file.\n\n\
            The key id is the first 8 bytes of the SHA-256 of the raw public key, in hex; \
            packages name their signers by it, and `package inspect` shows it.",
        after_help = "Examples:
  airlift key id keys/airlift-signing.pub
  airlift key id keys/airlift-signing.key"
    )]
    Id {
        /// A PEM file: `-----BEGIN PUBLIC KEY-----` or `-----BEGIN PRIVATE KEY-----`.
        file: PathBuf,
    },
}

/// Arguments of `airlift key generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write the key files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Base name of the key files.
    #[arg(long, default_value = "airlift-signing")]
    pub name: String,
    /// Replace existing key files of the same name.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `airlift key generate-encryption`.
#[derive(Debug, Args)]
pub struct GenerateEncryptionArgs {
    /// Directory to write the key files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Base name of the key files.
    #[arg(long, default_value = "airlift-device")]
    pub name: String,
    /// Replace existing key files of the same name.
    #[arg(long)]
    pub force: bool,
}

/// `airlift package …`
#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Build and sign a package from payload files.
    #[command(
        long_about = "Build and sign a package from payload files.\n\n\
            Each --payload is TYPE:TARGET=PATH: TYPE is image (TARGET is a slot name), \
            file or archive (TARGET is an absolute path on the device), or module:NAME \
            (TARGET is the module's argument). Payloads are compressed (zstd by default), \
            optionally encrypted to age recipients, signed with every --key, and written \
            atomically to --out: a failed build leaves no file behind. The package is \
            format version 2 (every block of every payload signed, checked before use) \
            unless --format-version 1 asks for one that agents older than version 2 read.",
        after_help = "Examples:
  airlift package build --name rootfs --version 1.2.0 --device-type rpi4 \\
      --payload image:rootfs=build/rootfs.img \\
      --key keys/airlift-signing.key --out rootfs-1.2.0.airlift

  airlift package build --name gateway --version 2.0.0 \\
      --device-type rpi4 --device-type rpi5 \\
      --requires bootloader='>=2.0' --security-version 3 \\
      --payload file:/etc/gateway/config.toml=config.toml \\
      --payload module:docker-compose:gateway=compose.yaml \\
      --encrypt-to keys/airlift-device.age-recipient \\
      --key keys/release-a.key --key keys/release-b.key \\
      --out gateway-2.0.0.airlift

  airlift package build --name rootfs --version 1.2.1 --device-type rpi4 \\
      --payload image:rootfs=build/rootfs.img --format-version 1 \\
      --key keys/airlift-signing.key --out rootfs-1.2.1-v1.airlift"
    )]
    Build(Box<BuildArgs>),

    /// Show a package's manifest without verifying it.
    #[command(
        long_about = "Show a package's manifest without verifying it.\n\n\
            Reads only the header, manifest and signature entries; needs no key. Nothing \
            shown is trustworthy until `airlift package verify` succeeds.",
        after_help = "Examples:
  airlift package inspect rootfs-1.2.0.airlift
  airlift package inspect rootfs-1.2.0.airlift --json | jq .manifest.payloads"
    )]
    Inspect(InspectArgs),

    /// Verify a package's signatures and every payload's digests.
    #[command(
        long_about = "Verify a package's signatures and every payload's digests.\n\n\
            Checks that at least --threshold of the --trust keys signed the manifest, then \
            streams every payload and checks its stored size and digest. Payloads that are \
            not encrypted, or encrypted to one of the --identity files, are also decoded and \
            their installed size and digest checked. Exits 0 only when everything verifies.",
        after_help = "Examples:
  airlift package verify rootfs-1.2.0.airlift --trust keys/airlift-signing.pub
  airlift package verify gateway-2.0.0.airlift \\
      --trust keys/release-a.pub --trust keys/release-b.pub --threshold 2 \\
      --identity keys/airlift-device.age-identity --json"
    )]
    Verify(VerifyArgs),

    #[command(flatten)]
    Server(PackageServerCommand),
}

/// Arguments of `airlift package build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Release name, e.g. `rootfs` (A–Z, a–z, 0–9, '.', '_', '+', '-').
    #[arg(long)]
    pub name: String,
    /// Release version (semantic version, e.g. 1.2.0).
    #[arg(long, value_name = "SEMVER")]
    pub version: Version,
    /// A device type the package fits; repeat for several.
    #[arg(long = "device-type", value_name = "TYPE", required = true)]
    pub device_types: Vec<String>,
    /// A hardware revision the package fits; repeat for several (default: any).
    #[arg(long = "hardware-revision", value_name = "REV")]
    pub hardware_revisions: Vec<String>,
    /// Software the device must already run, e.g. bootloader='>=2.0'; repeatable.
    #[arg(long = "requires", value_name = "NAME=SEMVER_REQ", value_parser = parse_requirement)]
    pub requires: Vec<(String, VersionReq)>,
    /// Software the device runs once installed, besides NAME=VERSION itself; repeatable.
    #[arg(long = "provides", value_name = "NAME=VERSION", value_parser = parse_provided)]
    pub provides: Vec<(String, Version)>,
    /// Free text for people.
    #[arg(long)]
    pub description: Option<String>,
    /// A payload, TYPE:TARGET=PATH (TYPE: image, file, archive, module:NAME); repeatable, in install order.
    #[arg(long = "payload", value_name = "TYPE:TARGET=PATH", required = true)]
    pub payloads: Vec<PayloadArg>,
    /// A private signing key (PKCS#8 PEM); repeat to sign with several.
    #[arg(long = "key", value_name = "PRIVATE_KEY", required = true)]
    pub keys: Vec<PathBuf>,
    /// Anti-rollback counter: devices refuse packages with a lower one than they run.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub security_version: u64,
    /// How to compress payloads.
    #[arg(long, value_enum, default_value_t = CompressArg::Zstd)]
    pub compress: CompressArg,
    /// zstd level, 1 (fastest) to 19 (smallest).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
    /// Encrypt every payload to this age recipient (age1…) or to the recipients in this file; repeatable.
    #[arg(long = "encrypt-to", value_name = "RECIPIENT_OR_FILE")]
    pub encrypt_to: Vec<String>,
    /// Package format: 2 signs every 1 MiB block of every payload; 1 for devices whose agents predate it.
    #[arg(long, value_name = "N", default_value_t = airlift_package::FORMAT_VERSION, value_parser = clap::value_parser!(u16).range(1..=2))]
    pub format_version: u16,
    /// Where to write the package.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift package inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The package file.
    pub file: PathBuf,
    /// Print {"manifest": …, "signatures": […], "verified": false} as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift package verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The package file.
    pub file: PathBuf,
    /// A trusted public key (SPKI PEM); repeat for several.
    #[arg(long = "trust", value_name = "PUBLIC_KEY", required = true)]
    pub trust: Vec<PathBuf>,
    /// How many distinct trusted keys must have signed.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threshold: usize,
    /// An age identity file to decrypt encrypted payloads with; repeatable.
    #[arg(long = "identity", value_name = "AGE_IDENTITY_FILE")]
    pub identities: Vec<PathBuf>,
    /// Print the result as JSON (also on failure, besides the error on stderr).
    #[arg(long)]
    pub json: bool,
}

/// `--compress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    /// zstd frames.
    Zstd,
    /// Stored as is.
    None,
}

impl From<CompressArg> for Compression {
    fn from(arg: CompressArg) -> Self {
        match arg {
            CompressArg::Zstd => Compression::Zstd,
            CompressArg::None => Compression::None,
        }
    }
}

/// One `--payload TYPE:TARGET=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadArg {
    /// How the device installs it.
    pub kind: PayloadType,
    /// Where it goes (checked against the manifest rules before encoding).
    pub target: String,
    /// The local file with the payload's bytes.
    pub path: PathBuf,
}

impl FromStr for PayloadArg {
    type Err = String;

    /// Splits at the first `=`; the type is everything before the first `:`,
    /// or before the second for `module:NAME`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((spec, path)) = text.split_once('=') else {
            return Err(
                "no '=' found; expected TYPE:TARGET=PATH, e.g. image:rootfs=build/rootfs.img"
                    .into(),
            );
        };
        let colon = match spec.strip_prefix("module:") {
            Some(rest) => rest.find(':').map(|i| "module:".len() + i),
            None => spec.find(':'),
        };
        let Some(colon) = colon else {
            return Err(format!(
                "{spec:?} is not TYPE:TARGET; expected TYPE:TARGET=PATH, or module:NAME:TARGET=PATH for a module"
            ));
        };
        let (kind, target) = (&spec[..colon], &spec[colon + 1..]);
        let kind: PayloadType = kind.parse().map_err(|e| format!("{e}"))?;
        if target.is_empty() {
            return Err("TARGET is empty; expected TYPE:TARGET=PATH".into());
        }
        if path.is_empty() {
            return Err("PATH is empty; expected TYPE:TARGET=PATH".into());
        }
        Ok(Self {
            kind,
            target: target.to_owned(),
            path: PathBuf::from(path),
        })
    }
}

fn parse_requirement(text: &str) -> Result<(String, VersionReq), String> {
    let (name, req) = text
        .split_once('=')
        .ok_or("expected NAME=SEMVER_REQ, e.g. bootloader=>=2.0")?;
    let req = req
        .parse()
        .map_err(|e| format!("{req:?} is not a version requirement: {e}"))?;
    Ok((name.to_owned(), req))
}

fn parse_provided(text: &str) -> Result<(String, Version), String> {
    let (name, version) = text
        .split_once('=')
        .ok_or("expected NAME=VERSION, e.g. kernel=6.6.30")?;
    let version = version
        .parse()
        .map_err(|e| format!("{version:?} is not a semantic version: {e}"))?;
    Ok((name.to_owned(), version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn payload(text: &str) -> Result<PayloadArg, String> {
        text.parse()
    }

    #[test]
    fn payload_specs_split_type_target_and_path() {
        assert_eq!(
            payload("image:rootfs=out/a=b.img"),
            Ok(PayloadArg {
                kind: PayloadType::Image,
                target: "rootfs".into(),
                path: "out/a=b.img".into(),
            })
        );
        assert_eq!(
            payload("module:docker-compose:app:v2=compose.yaml"),
            Ok(PayloadArg {
                kind: PayloadType::Module("docker-compose".into()),
                target: "app:v2".into(),
                path: "compose.yaml".into(),
            })
        );
        assert_eq!(
            payload("file:/etc/motd=motd").map(|p| p.target),
            Ok("/etc/motd".to_owned())
        );
    }

    #[test]
    fn malformed_payload_specs_say_what_is_wrong() {
        for (text, needle) in [
            ("image:rootfs", "no '='"),
            ("rootfs=a.img", "is not TYPE:TARGET"),
            ("module:foo=a", "is not TYPE:TARGET"),
            ("disk:sda=a.img", "is not image, file, archive"),
            ("image:=a.img", "TARGET is empty"),
            ("image:rootfs=", "PATH is empty"),
        ] {
            let error = payload(text).expect_err(text);
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn requirements_and_provides_parse() {
        let (name, req) = parse_requirement("bootloader=>=2.0").expect("valid");
        assert_eq!(name, "bootloader");
        assert!(req.matches(&Version::new(2, 1, 0)));
        assert!(parse_requirement("bootloader").is_err());
        assert!(parse_provided("kernel=6.6").is_err());
    }
}
