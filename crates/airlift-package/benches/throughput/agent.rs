//! The agent's install path on the bench's own package file:
//! `airlift-agent install PACKAGE`, a local install — read the head, vet it,
//! stream the package through the library's reader into slot B (syncing),
//! drop the slot's cached pages and read it back against the signed digest,
//! arm the trial. Each run gets a fresh device directory (slot files, boot
//! environment, state), made before the clock starts.
//!
//! The binary is `AIRLIFT_BENCH_AGENT_BIN` (relative to the workspace root
//! when relative), else the workspace's release build, built if missing.

use super::launcher::{best_of, Launcher};
use super::{Bench, Row, BOARD, RUNS};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

impl Bench {
    /// Steps 3c and 3d: the agent's install path on the format 2 package,
    /// its slot on disk and in memory.
    pub(super) fn agent_rows(
        &mut self,
        package: &Path,
        package_len: u64,
        openssl: Duration,
        load: &str,
    ) {
        // 3c. The agent's install path on the same file, its slot on the
        // same disk, against the same work done by the shell: write the
        // slot, hash the bytes, make the slot durable.
        let agent = agent_binary();
        eprintln!(
            "`airlift-agent install` ({}), slot on disk, best of {RUNS}",
            agent.display()
        );
        let on_disk = self.dir.join("slots");
        let (install, install_rss) = best_install(
            &mut self.launcher,
            &agent,
            &self.dir,
            &on_disk,
            package,
            &self.public_pem,
            BOARD,
            RUNS,
        );
        let slot = self.dir.join("baseline-slot.img");
        let script = format!(
            "rm -f {slot:?}; tee {slot:?} < {package:?} | openssl dgst -sha256 > /dev/null && sync {slot:?}",
            slot = slot.display().to_string(),
            package = package.display().to_string(),
        );
        eprintln!("baseline: {script}, best of {RUNS}");
        let (durable, _) = best_of(
            &mut self.launcher,
            &["sh".to_owned(), "-c".to_owned(), script],
        );
        let _ = fs::remove_file(&slot);
        self.rows.push(
            Row::new(
                "`airlift-agent install PACKAGE` (verify, write slot, sync, read back), vs `tee SLOT < PACKAGE | openssl dgst -sha256 && sync SLOT`",
                package_len,
                install,
            )
            .against(durable)
            .rss(install_rss)
            .goal(
                "install, `airlift-agent install` of a local package, slot on disk",
                "tee SLOT < PACKAGE | openssl dgst -sha256 && sync SLOT",
                Some(0.9),
                format!("{load}, slot on the same disk"),
            ),
        );

        // 3d. The same install with its slot in memory (tmpfs), where the
        // storage costs nothing: what is left is the install path's own
        // work — verifying every block, copying, checking the copy.
        let in_memory =
            Path::new("/dev/shm").join(format!("airlift-bench-slots-{}", std::process::id()));
        if Path::new("/dev/shm").is_dir() {
            eprintln!("`airlift-agent install`, slot in /dev/shm, best of {RUNS}");
            let (install, install_rss) = best_install(
                &mut self.launcher,
                &agent,
                &self.dir,
                &in_memory,
                package,
                &self.public_pem,
                BOARD,
                RUNS,
            );
            self.rows.push(
                Row::new(
                    "`airlift-agent install PACKAGE`, slot in memory (tmpfs): the install path's verification, vs openssl",
                    package_len,
                    install,
                )
                .against(openssl)
                .rss(install_rss)
                .goal(
                    "verify, `airlift-agent install` (the install path, slot in memory)",
                    "openssl dgst -sha256 PACKAGE",
                    Some(0.9),
                    format!("{load}, slot on tmpfs"),
                ),
            );
        } else {
            eprintln!("no /dev/shm: the in-memory install is skipped");
        }
    }
}

/// The agent binary to time: `AIRLIFT_BENCH_AGENT_BIN`, else the
/// workspace's release build.
pub fn agent_binary() -> PathBuf {
    super::release_binary("AIRLIFT_BENCH_AGENT_BIN", "airlift-agent", "airlift-agent")
}

/// A fresh device under `dir` (replacing one there) booted from slot A,
/// of `device_type`, trusting `public_pem`, its slot files in `slots`;
/// returns its configuration.
fn fresh_device(
    agent: &Path,
    dir: &Path,
    slots: &Path,
    public_pem: &Path,
    device_type: &str,
) -> PathBuf {
    let _ = fs::remove_dir_all(dir);
    for sub in ["data", "root", "modules"] {
        fs::create_dir_all(dir.join(sub)).expect("create the device directory");
    }
    fs::create_dir_all(slots).expect("create the slots' directory");
    fs::write(slots.join("a.img"), b"factory image").expect("write slot a");
    // Slot B exists, as a partition would; the install truncates it.
    fs::write(slots.join("b.img"), b"").expect("write slot b");
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
a = {a:?}
b = {b:?}
"#,
        data = quoted("data"),
        trusted = public_pem.display().to_string(),
        root = quoted("root"),
        modules = quoted("modules"),
        bootenv = quoted("bootenv"),
        a = slots.join("a.img").display().to_string(),
        b = slots.join("b.img").display().to_string(),
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
/// `package`, each on a fresh device whose slot files are in `slots`; and
/// the largest peak RSS (KiB).
#[allow(clippy::too_many_arguments)]
pub fn best_install(
    launcher: &mut Launcher,
    agent: &Path,
    work: &Path,
    slots: &Path,
    package: &Path,
    public_pem: &Path,
    device_type: &str,
    runs: usize,
) -> (Duration, i64) {
    let device = work.join("device");
    let mut best = Duration::MAX;
    let mut peak = 0;
    for run in 0..=runs {
        let config = fresh_device(agent, &device, slots, public_pem, device_type);
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
    let _ = fs::remove_dir_all(slots);
    (best, peak)
}
