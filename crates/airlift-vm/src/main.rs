//! `airlift-vm`: build the virtual machine's disk image and update
//! packages, and run a device in QEMU against a server.

use airlift_testkit::server::{self as test_server, ServerProcess, ADMIN_TOKEN};
use airlift_vm::{
    default_cache_dir, write_package, Health, ImageBuilder, Init, RootfsSpec, VmConfig,
};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

/// A real Airlift device in a virtual machine: Debian's kernel, BIOS GRUB
/// with A/B root file systems, and the agent, under QEMU.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:
  airlift-vm run                          # a server, the image, a VM booting on this terminal
  airlift-vm run --server http://127.0.0.1:8080   # against a server you started (--trust the printed key)
  airlift-vm build --json                 # build (or find in the cache) the image; print its paths
  airlift-vm package --version 2.0.0 --out rootfs-2.0.0.airlift
  airlift-vm package --version 2.0.1 --unhealthy --out sick.airlift"
)]
struct Cli {
    /// Cache directory for images [default: target/vm, or AIRLIFT_VM_CACHE].
    #[arg(long, global = true)]
    cache: Option<PathBuf>,
    /// The airlift-agent binary to put in the image [default: the one
    /// beside this program].
    #[arg(long, global = true)]
    agent: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the disk image (or find it in the cache) and print where it is.
    Build {
        /// Print the paths as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a signed update package holding a root file system for slot B.
    Package {
        /// The version its /etc/os-release names.
        #[arg(long, default_value = "2.0.0")]
        version: String,
        /// Its health check fails (the agent rolls it back).
        #[arg(long)]
        unhealthy: bool,
        /// Its init exits at once (the kernel panics; GRUB falls back).
        #[arg(long, conflicts_with = "unhealthy")]
        init_exits: bool,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Start a server (unless --server), build the image, write the 2.0.0
    /// package, and boot a VM on this terminal (quit: Ctrl-A then X).
    Run {
        /// Use this server instead of starting one (it must trust the key
        /// printed by `airlift-vm build`).
        #[arg(long)]
        server: Option<String>,
        /// The VM's serial number, its identity on the server.
        #[arg(long, default_value = "vm-0001")]
        serial: String,
        /// Start from a factory-fresh disk (else the VM keeps its disk).
        #[arg(long)]
        fresh: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cache = cli.cache.clone().unwrap_or_else(default_cache_dir);
    let agent = match &cli.agent {
        Some(path) => path.clone(),
        None => beside_this_program("airlift-agent")?,
    };
    let image = ImageBuilder::new(&cache, agent)
        .build()
        .context("building the VM image")?;
    // The cache as the builder resolved it (the image's directory is in it).
    let cache = image.dir.parent().map_or(cache, Path::to_path_buf);
    match cli.command {
        Command::Build { json } => {
            let update = image.rootfs(&RootfsSpec::healthy("2.0.0"))?;
            if json {
                let paths = serde_json::json!({
                    "disk": image.disk,
                    "rootfs_2_0_0": update,
                    "release_public_key": image.public_key_file,
                    "dir": image.dir,
                });
                println!("{paths:#}");
            } else {
                println!("disk image:         {}", image.disk.display());
                println!("rootfs 2.0.0:       {}", update.display());
                println!("release public key: {}", image.public_key_file.display());
            }
        }
        Command::Package {
            version,
            unhealthy,
            init_exits,
            out,
        } => {
            let spec = RootfsSpec {
                version,
                health: if unhealthy {
                    Health::Fails
                } else {
                    Health::Passes
                },
                init: if init_exits {
                    Init::ExitsAtOnce
                } else {
                    Init::Busybox
                },
            };
            write_package(&image, &spec, &out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{}", out.display());
        }
        Command::Run {
            server,
            serial,
            fresh,
        } => run(&cache, &image, server, &serial, fresh)?,
    }
    Ok(())
}

/// A sibling of this executable (Cargo builds the workspace's binaries
/// into one directory).
fn beside_this_program(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this program")?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build the workspace first (cargo build --workspace --bins), or pass --agent PATH",
            path.display()
        );
    }
    Ok(path)
}

fn run(
    cache: &Path,
    image: &airlift_vm::Image,
    server: Option<String>,
    serial: &str,
    fresh: bool,
) -> anyhow::Result<()> {
    let package = cache.join("rootfs-2.0.0.airlift");
    write_package(image, &RootfsSpec::healthy("2.0.0"), &package)?;
    let mut started: Option<ServerProcess> = None;
    let url = match server {
        Some(url) => url,
        None => {
            let data = cache.join("server");
            std::fs::create_dir_all(&data)?;
            let process = ServerProcess::builder(test_server::binary(), &data)
                .trust(&image.public_key_file)
                .admin_token(ADMIN_TOKEN)
                .start()
                .context(
                    "starting airlift-server (build it with cargo build --workspace --bins)",
                )?;
            let url = process.url().to_owned();
            started = Some(process);
            url
        }
    };
    let guest_url = url
        .replace("://127.0.0.1", "://10.0.2.2")
        .replace("://localhost", "://10.0.2.2");
    let disk = cache.join(format!("device-{serial}.qcow2"));
    if fresh || !disk.is_file() {
        let _ = std::fs::remove_file(&disk);
        airlift_vm::qemu::overlay(&image.disk, &disk)?;
    }
    let config = VmConfig {
        disk,
        kernel: image.kernel(),
        serial: serial.to_owned(),
        server_url: guest_url,
        console_log: cache.join(format!("device-{serial}.console")),
        memory_mib: 256,
    };
    print_next_steps(
        &url,
        started.is_some(),
        serial,
        &package,
        &image.public_key_file,
    );
    let status = config
        .command("mon:stdio")?
        .status()
        .context("running qemu-system-x86_64")?;
    if let Some(mut server) = started {
        server.stop(std::time::Duration::from_secs(5));
    }
    if !status.success() {
        bail!("qemu-system-x86_64 exited with {status}");
    }
    Ok(())
}

fn print_next_steps(url: &str, started: bool, serial: &str, package: &Path, key: &Path) {
    println!("== airlift-vm: the device {serial} boots below (quit: Ctrl-A then X)");
    if started {
        println!("   a server runs at {url}, admin token {ADMIN_TOKEN} (for this demo only)");
    } else {
        println!(
            "   using the server at {url}; it must trust {}",
            key.display()
        );
    }
    println!(
        "   In another terminal:
     airlift server login {url} --token {ADMIN_TOKEN}
     airlift device list --status pending          # the VM appears here after its first boot
     airlift device accept DEVICE_ID
     airlift package upload {package}
     airlift deployment create --name 'VM to 2.0.0' --package PACKAGE_ID --device DEVICE_ID
     airlift deployment show DEPLOYMENT_ID         # watch it: downloading, installing, rebooting, success
   The VM reboots into slot b: its console prints `airlift-vm: up, slot b, version 2.0.0`.",
        package = package.display()
    );
}
