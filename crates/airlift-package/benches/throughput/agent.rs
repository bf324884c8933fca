//! The agent's install path on the bench's own package file:
//! `airlift-agent install PACKAGE`, a local install — read the head, vet it,
//! stream the package through the library's reader into slot B (syncing),
//! drop the slot's cached pages and read it back against the signed digest,
//! arm the trial. Each run gets a fresh device directory (slot files, boot
//! environment, state), made before the clock starts.
//!
//! The binary is `AIRLIFT_BENCH_AGENT_BIN` (relative to the workspace root
//! when relative), else the workspace's release build, built if missing.

use super::launcher::Launcher;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The agent binary to time: `AIRLIFT_BENCH_AGENT_BIN`, else the
/// workspace's release build.
pub fn agent_binary() -> PathBuf {
    super::release_binary("AIRLIFT_BENCH_AGENT_BIN", "airlift-agent", "airlift-agent")
}

/// A fresh device under `dir` (replacing one there) booted from slot A,
/// of `device_type`, trusting `public_pem`; returns its configuration.
fn fresh_device(agent: &Path, dir: &Path, public_pem: &Path, device_type: &str) -> PathBuf {
    let _ = fs::remove_dir_all(dir);
    for sub in ["data", "root", "modules"] {
        fs::create_dir_all(dir.join(sub)).expect("create the device directory");
    }
    fs::write(dir.join("a.img"), b"factory image").expect("write slot a");
    // Slot B exists, as a partition would; the install truncates it.
    fs::write(dir.join("b.img"), b"").expect("write slot b");
    let quoted = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    let config = format!(
        r#"server_url = "http://127.0.0.1:9"
data_dir = {data}
device_type = "{device_type}"
identity = {{ serial = "SN-bench" }}
trusted_keys = [{trusted:?}]
reboot_command = ["true"]
root = {root}
modules_dir = {modules}
[boot]
backend = "file"
path = {bootenv}
[slots.rootfs]
a = {a}
b = {b}
"#,
        data = quoted("data"),
        trusted = public_pem.display().to_string(),
        root = quoted("root"),
        modules = quoted("modules"),
        bootenv = quoted("bootenv"),
        a = quoted("a.img"),
        b = quoted("b.img"),
    );
    let path = dir.join("agent.toml");
    fs::write(&path, config).expect("write agent.toml");
    let status = Command::new(agent)
        .arg("--config")
        .arg(&path)
        .args(["boot-env", "init"])
        .status()
        .expect("run airlift-agent boot-env init");
    assert!(status.success(), "airlift-agent boot-env init failed");
    path
}

/// One untimed run, then the best wall time of `runs` installs of
/// `package`, each on a fresh device; and the largest peak RSS (KiB).
pub fn best_install(
    launcher: &mut Launcher,
    agent: &Path,
    work: &Path,
    package: &Path,
    public_pem: &Path,
    device_type: &str,
    runs: usize,
) -> (Duration, i64) {
    let device = work.join("device");
    let mut best = Duration::MAX;
    let mut peak = 0;
    for run in 0..=runs {
        let config = fresh_device(agent, &device, public_pem, device_type);
        let argv: Vec<OsString> = vec![
            agent.into(),
            "--config".into(),
            config.into(),
            "install".into(),
            package.into(),
        ];
        let (time, rss) = launcher.run(&argv);
        if run > 0 {
            best = best.min(time);
            peak = peak.max(rss);
        }
    }
    let _ = fs::remove_dir_all(&device);
    (best, peak)
}
