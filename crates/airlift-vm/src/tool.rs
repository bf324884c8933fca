//! Running the Debian tools the builder uses, one `Command` each, with
//! their error output kept for the message when they fail.

use crate::VmError;
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The tools, with the Debian package each comes from.
pub const TOOLS: &[(&str, &str)] = &[
    ("sfdisk", "fdisk"),
    ("mkfs.ext4", "e2fsprogs"),
    ("grub-mkimage", "grub-common"),
    ("grub-editenv", "grub-common"),
    ("cpio", "cpio"),
    ("depmod", "kmod"),
    ("ldd", "libc-bin"),
    ("strip", "binutils"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
];

/// Where `program` is: on `PATH`, or in the `sbin` directories a
/// non-login `PATH` may lack.
pub fn find(program: &str) -> Result<PathBuf, VmError> {
    let package = TOOLS
        .iter()
        .chain(crate::uboot::TOOLS)
        .find(|(name, _)| *name == program)
        .map_or("?", |(_, package)| *package);
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| VmError::MissingTool {
            program: program.to_owned(),
            package,
        })
}

/// A command for `program`, found as [`find`] does.
pub fn command(program: &str) -> Result<Command, VmError> {
    Ok(Command::new(find(program)?))
}

/// Runs `command` (with `input` on its standard input) and gives its
/// standard output; a failure carries the command line and its error output.
pub fn run(command: &mut Command, input: Option<&[u8]>) -> Result<Vec<u8>, VmError> {
    let shown = show(command);
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| VmError::Io {
        action: "starting",
        path: PathBuf::from(command.get_program()),
        source,
    })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A writer thread: the child may fill its output pipe before it
        // has read all its input.
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child
            .wait_with_output()
            .map_err(VmError::io("waiting for", &shown))?;
        let _ = writer.join();
        return finish(shown, output);
    }
    let output = child
        .wait_with_output()
        .map_err(VmError::io("waiting for", &shown))?;
    finish(shown, output)
}

fn finish(shown: String, output: std::process::Output) -> Result<Vec<u8>, VmError> {
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
    Err(VmError::Command {
        command: shown,
        status: output.status.to_string(),
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// The command line, for messages.
pub fn show(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The shared libraries `binary` loads, as `ldd` lists them (the dynamic
/// loader included), so that they can be copied into a root file system.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, VmError> {
    let output = run(command("ldd")?.arg(binary), None)?;
    let text = String::from_utf8_lossy(&output);
    let mut libraries = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            return Err(VmError::Unexpected {
                program: "ldd",
                detail: format!("{}: a library is missing: {line}", binary.display()),
            });
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x…)`; `linux-vdso.so.1 (0x…)` is
        // the kernel's.
        let path = match line.split_once("=> ") {
            Some((_, rest)) => rest,
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default();
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}
