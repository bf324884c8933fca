//! Running the disk image in QEMU: a copy-on-write overlay per VM, the
//! serial console captured to a file (to wait for boot milestones), its
//! identity and server address through SMBIOS, and the process killed —
//! a power cut — when the [`Vm`] is dropped or [`Vm::power_cut`] is called.

use crate::{tool, VmError};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How QEMU runs the guest's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation (`/dev/kvm`).
    Kvm,
    /// Emulation: slower (a boot takes about 10 s), works everywhere.
    Tcg,
}

impl Accel {
    /// QEMU's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator to use: `AIRLIFT_VM_ACCEL` (`kvm` or `tcg`) when set;
/// else KVM if `/dev/kvm` is there and a kernel booted with it prints its
/// first line within a few seconds (on some hosts nested virtualisation
/// hangs instead), else emulation. Probed once per process.
pub fn accel(kernel: &Path) -> Accel {
    static PROBED: OnceLock<Accel> = OnceLock::new();
    *PROBED.get_or_init(|| match std::env::var("AIRLIFT_VM_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        Ok("tcg") => Accel::Tcg,
        _ if Path::new("/dev/kvm").exists() && kvm_boots(kernel) => Accel::Kvm,
        _ => Accel::Tcg,
    })
}

/// Whether a kernel started under KVM prints on its serial console soon.
fn kvm_boots(kernel: &Path) -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let log = dir.path().join("console");
    let Ok(qemu) = tool::find("qemu-system-x86_64") else {
        return false;
    };
    let child = Command::new(qemu)
        .args([
            "-accel", "kvm", "-m", "128", "-display", "none", "-monitor", "none",
        ])
        .args(["-no-reboot", "-serial"])
        .arg(format!("file:{}", log.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        return false;
    };
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if fs::read_to_string(&log).is_ok_and(|text| text.contains("Linux version")) {
            return true;
        }
        if matches!(child.0.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("airlift-vm: KVM did not boot a kernel within 8 s here; using emulation (TCG), which is slower");
    false
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A copy-on-write disk over `base` at `overlay`: the VM writes there,
/// `base` stays as built.
pub fn overlay(base: &Path, overlay: &Path) -> Result<(), VmError> {
    tool::run(
        tool::command("qemu-img")?
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(base)
            .arg(overlay),
        None,
    )?;
    Ok(())
}

/// One VM to start.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Its disk (an overlay made with [`overlay`]).
    pub disk: PathBuf,
    /// The kernel, for the accelerator probe.
    pub kernel: PathBuf,
    /// Its serial number (SMBIOS), the agent's identity.
    pub serial: String,
    /// The server as the guest reaches it (the host is `10.0.2.2`).
    pub server_url: String,
    /// Where the serial console goes.
    pub console_log: PathBuf,
    /// Memory in MiB.
    pub memory_mib: u32,
}

impl VmConfig {
    /// The QEMU command for this VM, with the console to `console`
    /// (`file:PATH`, or `mon:stdio` for a person at a terminal).
    pub fn command(&self, console: &str) -> Result<Command, VmError> {
        let mut qemu = tool::command("qemu-system-x86_64")?;
        let accel = accel(&self.kernel);
        qemu.args(["-accel", accel.name()]);
        if accel == Accel::Tcg {
            qemu.args(["-cpu", "max"]);
        }
        qemu.args([
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            "1",
            "-display",
            "none",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},format=qcow2,if=virtio",
            self.disk.display()
        ))
        .args([
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0",
        ])
        .args(["-smbios", &format!("type=1,serial={}", self.serial)])
        .args([
            "-smbios",
            &format!("type=11,value=airlift.server_url={}", self.server_url),
        ])
        .args(["-serial", console]);
        if console != "mon:stdio" {
            qemu.args(["-monitor", "none"]);
        }
        Ok(qemu)
    }
}

/// A running VM. Dropping it kills QEMU (SIGKILL): the guest loses what it
/// had not written to its disk, as in a power cut.
#[derive(Debug)]
pub struct Vm {
    child: Option<Child>,
    config: VmConfig,
}

impl Vm {
    /// Starts QEMU with the console appended to `config.console_log`.
    pub fn start(config: VmConfig) -> Result<Self, VmError> {
        let log = &config.console_log;
        let mut qemu = config.command(&format!("file:{}", log.display()))?;
        // QEMU truncates a `file:` console: keep earlier boots' lines by
        // moving them aside and joining them in `console()`.
        if log.exists() {
            let earlier = earlier_log(log);
            let mut text = fs::read(&earlier).unwrap_or_default();
            text.extend(fs::read(log).map_err(VmError::io("reading", log))?);
            fs::write(&earlier, text).map_err(VmError::io("writing", &earlier))?;
        }
        let stderr_path = log.with_extension("qemu-stderr");
        let stderr =
            fs::File::create(&stderr_path).map_err(VmError::io("creating", &stderr_path))?;
        let child = qemu
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(VmError::io("starting", "qemu-system-x86_64"))?;
        Ok(Vm {
            child: Some(child),
            config,
        })
    }

    /// Everything the VM's console printed, since its first start.
    pub fn console(&self) -> String {
        let log = &self.config.console_log;
        let mut text = fs::read(earlier_log(log)).unwrap_or_default();
        text.extend(fs::read(log).unwrap_or_default());
        String::from_utf8_lossy(&text).replace('\r', "")
    }

    /// Waits until the console holds `needle` after byte `from`, and gives
    /// the byte after it.
    pub fn wait_for(
        &mut self,
        needle: &str,
        from: usize,
        timeout: Duration,
    ) -> Result<usize, VmError> {
        self.wait_for_any(&[needle], from, timeout)
    }

    /// Waits until the console holds any of `needles` after byte `from`,
    /// and gives the byte after the first one found.
    pub fn wait_for_any(
        &mut self,
        needles: &[&str],
        from: usize,
        timeout: Duration,
    ) -> Result<usize, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console();
            let found = needles
                .iter()
                .filter_map(|n| {
                    let rest = text.get(from..)?;
                    rest.find(n).map(|at| from + at + n.len())
                })
                .min();
            if let Some(end) = found {
                return Ok(end);
            }
            let exited = match self.child.as_mut() {
                Some(child) => matches!(child.try_wait(), Ok(Some(_))),
                None => true,
            };
            if exited || Instant::now() > deadline {
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                let mut tail: Vec<String> = tail.into_iter().rev().map(str::to_owned).collect();
                if exited {
                    tail.push("(QEMU is not running)".to_owned());
                    let stderr =
                        fs::read_to_string(self.config.console_log.with_extension("qemu-stderr"));
                    tail.extend(stderr.unwrap_or_default().lines().map(str::to_owned));
                }
                return Err(VmError::Timeout {
                    wanted: needles.join(" or "),
                    waited_secs: timeout.as_secs(),
                    tail: tail.join("\n"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills QEMU at once (SIGKILL): a power cut.
    pub fn power_cut(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same VM again after a power cut (same disk, same
    /// identity), the console log continuing.
    pub fn power_on(&mut self) -> Result<(), VmError> {
        self.power_cut();
        let again = Vm::start(self.config.clone())?;
        *self = again;
        Ok(())
    }

    /// Its configuration.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.power_cut();
    }
}

fn earlier_log(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".earlier");
    PathBuf::from(name)
}
