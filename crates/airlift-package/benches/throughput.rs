//! Package build and verification throughput, against `openssl dgst -sha256`
//! as the baseline for "as fast as hashing the file can be".
//!
//! ```text
//! cargo bench -p airlift-package --bench throughput
//! ```
//!
//! Verification is measured twice: the library's one-pass path in a child
//! process, and `airlift package verify` — the binary users run, which is
//! the figure a goal is judged by (`AIRLIFT_BENCH_CLI_BIN` names another
//! build of it; by default the workspace's release build, built if missing).
//!
//! Prints a markdown table (progress goes to stderr). Verification runs in a
//! child process (this binary re-executed with `--verify-child`), so its peak
//! RSS is read cleanly from `wait4`; see [`Launcher`] for why the children are
//! started by a small helper process. Every timed step is the best of three,
//! on a hot page cache, timed as wall-clock time of the whole process for
//! both openssl and the library. MB are 10^6 bytes.
//!
//! `AIRLIFT_BENCH_PLAIN_MIB` and `AIRLIFT_BENCH_ZSTD_MIB` shrink the two
//! inputs (default 1024 and 256) for a quick run or a profile;
//! `AIRLIFT_BENCH_KEEP=1` keeps the temporary directory (with the zstd
//! package and `public.pem`) so that a verification child can be profiled.

use airlift_package::{
    encode_payload, Compression, EncodeOptions, Limits, Manifest, PackageReader, PackageWriter,
    PayloadSpec, PayloadType, PublicKey, SignedManifest, SigningKey, TrustSet,
};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
const CHUNK: usize = 1024 * 1024;
const RUNS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--launcher") {
        if let Err(error) = launcher() {
            eprintln!("launcher failed: {error}");
            std::process::exit(1);
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("--verify-child") {
        let (Some(package), Some(public_key), Some(mode)) = (args.get(2), args.get(3), args.get(4))
        else {
            eprintln!("usage: throughput --verify-child PACKAGE PUBLIC_KEY_PEM stored|decoded");
            std::process::exit(2);
        };
        if let Err(error) = verify_child(Path::new(package), Path::new(public_key), mode) {
            eprintln!("verification failed: {error}");
            std::process::exit(1);
        }
        return;
    }
    run_bench();
}

/// The child: open → verify → read every payload with a 1 MiB buffer →
/// finish. `stored` reads the stored bytes, `decoded` the installed bytes.
fn verify_child(
    package: &Path,
    public_key: &Path,
    mode: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let key = PublicKey::from_pem(&fs::read_to_string(public_key)?)?;
    let trust = TrustSet::new([key], 1)?;
    let file = File::open(package)?;
    let mut verified = PackageReader::open(file, Limits::default())?.verify(&trust)?;
    let mut buf = vec![0u8; CHUNK];
    while let Some(payload) = verified.next_payload()? {
        match mode {
            "stored" => drain(payload, &mut buf)?,
            "decoded" => drain(payload.decoded(&[])?, &mut buf)?,
            other => return Err(format!("unknown mode {other:?}").into()),
        };
    }
    verified.finish()?;
    Ok(())
}

fn drain(mut reader: impl Read, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    loop {
        match reader.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

struct Row {
    step: String,
    bytes: u64,
    time: Duration,
    vs_openssl: Option<f64>,
    ratio: Option<f64>,
    peak_rss_kib: Option<i64>,
}

fn mb_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

fn env_mib(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run_bench() {
    let plain_len = env_mib("AIRLIFT_BENCH_PLAIN_MIB", 1024) * MIB;
    let zstd_len = env_mib("AIRLIFT_BENCH_ZSTD_MIB", 256) * MIB;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let dir = tempfile::Builder::new()
        .prefix("airlift-bench-")
        .tempdir()
        .expect("create a temporary directory");
    let launcher = Launcher::start();
    let key = SigningKey::generate().expect("random signing key");
    let public_pem = dir.path().join("public.pem");
    fs::write(
        &public_pem,
        key.public_key().to_pem().expect("public key as PEM"),
    )
    .expect("write the public key");
    let mut bench = Bench {
        dir: dir.path().to_owned(),
        launcher,
        key,
        public_pem,
        rows: Vec::new(),
    };
    let cli = bench.uncompressed(plain_len);
    bench.zstd(zstd_len, cores, &cli);

    let Bench { launcher, rows, .. } = bench;
    launcher.stop();
    print_table(&rows, plain_len, zstd_len, cores);
    if std::env::var_os("AIRLIFT_BENCH_KEEP").is_some() {
        eprintln!("kept {}", dir.keep().display());
    }
}

/// What the steps of one run share: where they write, who times them, the
/// release key, and the rows measured so far.
struct Bench {
    dir: PathBuf,
    launcher: Launcher,
    key: SigningKey,
    public_pem: PathBuf,
    rows: Vec<Row>,
}

impl Bench {
    /// Steps 1 to 3b: an uncompressed package of random bytes, built, hashed
    /// by openssl and verified by the library and by the CLI. Returns the
    /// CLI binary, for the zstd steps.
    fn uncompressed(&mut self, plain_len: u64) -> PathBuf {
        // 1. A random payload and an uncompressed package of it.
        let payload = self.dir.join("payload.bin");
        eprintln!("writing {} MiB of random bytes", plain_len / MIB);
        write_random(&payload, plain_len);
        let package = self.dir.join("plain.airlift");
        let options = EncodeOptions {
            zstd_workers: 0,
            ..EncodeOptions::default()
        };
        eprintln!("building the uncompressed package");
        let (time, stored_len) = build_package(
            &payload,
            &package,
            &self.key,
            Compression::None,
            &options,
            &self.dir,
        );
        self.rows.push(Row {
            step: "build, uncompressed (encode + write package)".into(),
            bytes: plain_len,
            time,
            vs_openssl: None,
            ratio: Some(plain_len as f64 / stored_len as f64),
            peak_rss_kib: None,
        });
        fs::remove_file(&payload).expect("remove the payload");
        let package_len = fs::metadata(&package).expect("package metadata").len();

        // 2. Baseline: openssl over the same file, page cache hot.
        warm(&package);
        eprintln!("openssl dgst -sha256, best of {RUNS}");
        let openssl_argv = [
            OsStr::new("openssl"),
            OsStr::new("dgst"),
            OsStr::new("-sha256"),
            package.as_os_str(),
        ];
        let (openssl, openssl_rss) = best_of(&mut self.launcher, &openssl_argv);
        self.rows.push(Row {
            step: "`openssl dgst -sha256` (baseline)".into(),
            bytes: package_len,
            time: openssl,
            vs_openssl: Some(1.0),
            ratio: None,
            peak_rss_kib: Some(openssl_rss),
        });

        // 3. The library, in a child process.
        eprintln!("library verification (stored bytes), best of {RUNS}");
        let (verify, verify_rss) = best_of(
            &mut self.launcher,
            &verify_argv(&package, &self.public_pem, "stored"),
        );
        self.rows.push(Row {
            step: "verify uncompressed: open → verify → read stored (1 MiB) → finish".into(),
            bytes: package_len,
            time: verify,
            vs_openssl: Some(openssl.as_secs_f64() / verify.as_secs_f64()),
            ratio: None,
            peak_rss_kib: Some(verify_rss),
        });
        // 3b. The same, as users run it: `airlift package verify`.
        let cli = cli_binary();
        eprintln!(
            "`airlift package verify` ({}), best of {RUNS}",
            cli.display()
        );
        let (by_cli, cli_rss) = best_of(
            &mut self.launcher,
            &cli_verify_argv(&cli, &package, &self.public_pem),
        );
        self.rows.push(Row {
            step: "`airlift package verify --trust KEY` (the CLI), uncompressed".into(),
            bytes: package_len,
            time: by_cli,
            vs_openssl: Some(openssl.as_secs_f64() / by_cli.as_secs_f64()),
            ratio: None,
            peak_rss_kib: Some(cli_rss),
        });
        fs::remove_file(&package).expect("remove the package");
        cli
    }

    /// Step 4: zstd, built with and without worker threads, then verified
    /// by the library and by `cli`.
    fn zstd(&mut self, zstd_len: u64, cores: u32, cli: &Path) {
        let input = self.dir.join("binaries.bin");
        eprintln!(
            "collecting {} MiB of binaries from /usr/bin and /usr/lib",
            zstd_len / MIB
        );
        collect_binaries(&input, zstd_len);
        warm(&input);
        let zstd_package = self.dir.join("zstd.airlift");
        self.zstd_build(&input, &zstd_package, zstd_len, 0);
        // Built last, so this multithreaded package is the one verified below.
        self.zstd_build(&input, &zstd_package, zstd_len, cores);
        warm(&zstd_package);
        eprintln!("library verification (decode + installed digest), best of {RUNS}");
        let (decode, decode_rss) = best_of(
            &mut self.launcher,
            &verify_argv(&zstd_package, &self.public_pem, "decoded"),
        );
        self.rows.push(Row {
            step: "verify zstd: read stored → decompress → installed digest → finish".into(),
            bytes: zstd_len,
            time: decode,
            vs_openssl: None,
            ratio: None,
            peak_rss_kib: Some(decode_rss),
        });
        eprintln!("`airlift package verify` of the zstd package, best of {RUNS}");
        let (decode_by_cli, decode_cli_rss) = best_of(
            &mut self.launcher,
            &cli_verify_argv(cli, &zstd_package, &self.public_pem),
        );
        self.rows.push(Row {
            step: "`airlift package verify --trust KEY` (the CLI), zstd".into(),
            bytes: zstd_len,
            time: decode_by_cli,
            vs_openssl: None,
            ratio: None,
            peak_rss_kib: Some(decode_cli_rss),
        });
    }

    /// Builds `input` into the zstd package `package` with `workers`
    /// threads, and records the row.
    fn zstd_build(&mut self, input: &Path, package: &Path, zstd_len: u64, workers: u32) {
        let options = EncodeOptions {
            zstd_level: 3,
            zstd_workers: workers,
            recipients: Vec::new(),
        };
        eprintln!("building the zstd package with {workers} worker(s)");
        let (time, stored_len) = build_package(
            input,
            package,
            &self.key,
            Compression::Zstd,
            &options,
            &self.dir,
        );
        self.rows.push(Row {
            step: format!("build, zstd level 3, workers = {workers}"),
            bytes: zstd_len,
            time,
            vs_openssl: None,
            ratio: Some(zstd_len as f64 / stored_len as f64),
            peak_rss_kib: None,
        });
    }
}

/// The `airlift` binary users run: `AIRLIFT_BENCH_CLI_BIN` (relative to
/// the workspace root when relative), else the workspace's release build,
/// built now if missing (a bench is built with the release profile too).
fn cli_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Some(given) = std::env::var_os("AIRLIFT_BENCH_CLI_BIN") {
        return root.join(given);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the airlift CLI (release)");
    let built = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "airlift-cli",
            "--bin",
            "airlift",
        ])
        .status()
        .expect("run cargo build");
    assert!(built.success(), "building the airlift CLI failed");
    root.join("target/release/airlift")
}

fn cli_verify_argv(cli: &Path, package: &Path, public_pem: &Path) -> Vec<OsString> {
    vec![
        cli.into(),
        "package".into(),
        "verify".into(),
        package.into(),
        "--trust".into(),
        public_pem.into(),
    ]
}

fn verify_argv(package: &Path, public_pem: &Path, mode: &str) -> Vec<OsString> {
    vec![
        std::env::current_exe()
            .expect("path of this benchmark")
            .into_os_string(),
        "--verify-child".into(),
        package.into(),
        public_pem.into(),
        mode.into(),
    ]
}

fn write_random(path: &Path, len: u64) {
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let mut out = File::create(path).expect("create the payload file");
    let mut chunk = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(CHUNK as u64)).expect("a chunk fits in usize");
        rng.fill_bytes(&mut chunk[..n]);
        out.write_all(&chunk[..n]).expect("write the payload file");
        left -= n as u64;
    }
}

/// Concatenates regular files under /usr/bin and /usr/lib (sorted, so runs
/// agree) until `len` bytes; starts over if they run out first.
fn collect_binaries(path: &Path, len: u64) {
    let mut files = Vec::new();
    for root in ["/usr/bin", "/usr/lib"] {
        list_files(Path::new(root), &mut files);
    }
    files.sort();
    assert!(!files.is_empty(), "no files under /usr/bin or /usr/lib");
    let mut out = BufWriter::with_capacity(CHUNK, File::create(path).expect("create the input"));
    let mut written = 0u64;
    'fill: loop {
        for file in &files {
            let Ok(bytes) = fs::read(file) else { continue };
            let take =
                usize::try_from((len - written).min(bytes.len() as u64)).expect("fits in usize");
            out.write_all(&bytes[..take]).expect("write the input");
            written += take as u64;
            if written == len {
                break 'fill;
            }
        }
    }
    out.flush().expect("flush the input");
}

fn list_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            list_files(&entry.path(), files);
        } else if kind.is_file() {
            files.push(entry.path());
        }
    }
}

/// Encodes `input` into a temporary stored file, signs the manifest and
/// writes the package, as the CLI does. Returns the time for all of it and
/// the stored size.
// Not the test kit's `PackageBuilder`: this is the step being timed, file to
// file as the CLI streams it; the kit builds whole packages in memory.
fn build_package(
    input: &Path,
    package: &Path,
    key: &SigningKey,
    compression: Compression,
    options: &EncodeOptions,
    dir: &Path,
) -> (Duration, u64) {
    let stored_path = dir.join("stored.tmp");
    let start = Instant::now();
    let stored_out = BufWriter::with_capacity(
        CHUNK,
        File::create(&stored_path).expect("create the stored file"),
    );
    let entry = encode_payload(
        File::open(input).expect("open the input"),
        &PayloadSpec::new(PayloadType::Image, "rootfs", compression),
        options,
        stored_out,
    )
    .expect("encode the payload");
    let manifest = Manifest::builder("bench", "1.0.0".parse().expect("semver"), ["bench-board"])
        .payload(entry)
        .build();
    let signed = SignedManifest::sign(&manifest, &[key], &Limits::default()).expect("sign");
    let out = BufWriter::with_capacity(CHUNK, File::create(package).expect("create the package"));
    let mut writer = PackageWriter::new(out, &signed).expect("write the header");
    writer
        .write_payload(File::open(&stored_path).expect("open the stored file"))
        .expect("write the payload");
    let out = writer.finish().expect("finish the package");
    let file = out.into_inner().expect("flush the package");
    let time = start.elapsed();
    // Outside the timing: keep dirty pages from disturbing later steps.
    file.sync_all().expect("sync the package");
    let stored_len = fs::metadata(&stored_path)
        .expect("stored file metadata")
        .len();
    fs::remove_file(&stored_path).expect("remove the stored file");
    (time, stored_len)
}

/// Reads a file once so every timed run starts with a hot page cache.
fn warm(path: &Path) {
    let mut buf = vec![0u8; CHUNK];
    drain(File::open(path).expect("open for warming"), &mut buf).expect("read for warming");
}

/// One untimed warm-up run, then the best wall time of `RUNS`, and the
/// largest peak RSS (KiB) any run reached.
fn best_of(launcher: &mut Launcher, argv: &[impl AsRef<OsStr>]) -> (Duration, i64) {
    launcher.run(argv);
    let mut best = Duration::MAX;
    let mut peak = 0;
    for _ in 0..RUNS {
        let (time, rss) = launcher.run(argv);
        best = best.min(time);
        peak = peak.max(rss);
    }
    (best, peak)
}

/// Starts and times the measured processes, from a separate small process.
///
/// Linux counts what a process used *before* its `exec` towards its
/// `ru_maxrss`, and `std::process::Command` spawns with `posix_spawn`, whose
/// child shares the parent's address space until `exec`: a child spawned
/// straight from this benchmark reports at least the benchmark's own peak
/// RSS (over 50 MiB once it has built the zstd package). Spawned from the
/// launcher, whose own peak stays at a few MiB, the children report their
/// own peak.
struct Launcher {
    process: Child,
    requests: ChildStdin,
    replies: BufReader<ChildStdout>,
}

impl Launcher {
    fn start() -> Self {
        let mut process = Command::new(std::env::current_exe().expect("path of this benchmark"))
            .arg("--launcher")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the launcher");
        let requests = process.stdin.take().expect("the launcher's stdin is piped");
        let replies = BufReader::new(process.stdout.take().expect("stdout is piped"));
        Self {
            process,
            requests,
            replies,
        }
    }

    /// Runs `argv` to completion; returns its wall time and peak RSS in KiB.
    fn run(&mut self, argv: &[impl AsRef<OsStr>]) -> (Duration, i64) {
        let mut request = Vec::new();
        for (i, arg) in argv.iter().enumerate() {
            if i > 0 {
                request.push(0);
            }
            request.extend_from_slice(arg.as_ref().as_bytes());
        }
        request.push(b'\n');
        self.requests
            .write_all(&request)
            .and_then(|()| self.requests.flush())
            .expect("send a command to the launcher");
        let mut reply = String::new();
        self.replies
            .read_line(&mut reply)
            .expect("read the launcher's reply");
        let shown: Vec<_> = argv.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        let fields: Vec<&str> = reply.split_whitespace().collect();
        match fields[..] {
            ["ok", nanos, kib] => (
                Duration::from_nanos(nanos.parse().expect("nanoseconds")),
                kib.parse().expect("KiB"),
            ),
            _ => panic!("{shown:?} failed: {}", reply.trim()),
        }
    }

    fn stop(self) {
        let Self {
            mut process,
            requests,
            replies,
        } = self;
        drop((requests, replies));
        let status = process.wait().expect("wait for the launcher");
        assert!(status.success(), "the launcher failed: {status}");
    }
}

/// The launcher's side: reads commands (arguments separated by NUL, one per
/// line) from stdin, runs each, and answers `ok NANOS PEAK_RSS_KIB` or
/// `failed STATUS`.
fn launcher() -> io::Result<()> {
    let mut out = io::stdout().lock();
    for line in io::stdin().lock().split(b'\n') {
        let line = line?;
        let argv: Vec<OsString> = line
            .split(|&b| b == 0)
            .map(|arg| OsString::from_vec(arg.to_vec()))
            .collect();
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        let start = Instant::now();
        // The child is reaped by `wait4`, not `Child::wait`, to get its rusage.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let (status, usage) = wait4(child.id());
        let time = start.elapsed();
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            writeln!(out, "ok {} {}", time.as_nanos(), usage.ru_maxrss)?;
        } else {
            writeln!(out, "failed {status:#x}")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Reaps `pid` with `wait4`, which also reports that one child's resource
/// usage (peak RSS), unlike `getrusage(RUSAGE_CHILDREN)`, which mixes all.
#[allow(unsafe_code)]
fn wait4(pid: u32) -> (libc::c_int, libc::rusage) {
    let pid = libc::pid_t::try_from(pid).expect("a pid fits in pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the right type.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            return (status, usage);
        }
        let error = io::Error::last_os_error();
        assert!(
            error.kind() == io::ErrorKind::Interrupted,
            "wait4({pid}) failed: {error}"
        );
    }
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn print_table(rows: &[Row], plain_len: u64, zstd_len: u64, cores: u32) {
    println!();
    println!(
        "Machine: {cores} cores, {}; uncompressed payload {} MiB of random bytes, zstd input {} MiB of /usr/bin and /usr/lib. Best of {RUNS}, hot page cache, MB = 10^6 bytes.",
        cpu_model(),
        plain_len / MIB,
        zstd_len / MIB
    );
    println!();
    println!("| step | bytes | best time | MB/s | vs openssl | ratio | peak RSS |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let percent = row
            .vs_openssl
            .map_or_else(|| "–".into(), |r| format!("{:.0} %", r * 100.0));
        let ratio = row.ratio.map_or_else(|| "–".into(), |r| format!("{r:.2}"));
        let rss = row.peak_rss_kib.map_or_else(
            || "–".into(),
            |kib| format!("{:.1} MiB", kib as f64 / 1024.0),
        );
        println!(
            "| {} | {} | {:.3} s | {:.0} | {percent} | {ratio} | {rss} |",
            row.step,
            row.bytes,
            row.time.as_secs_f64(),
            mb_per_s(row.bytes, row.time),
        );
    }
    println!();
    println!("Baseline, to run alone: `openssl dgst -sha256 PACKAGE` (hot page cache)");
    // For scripts/bench, which keeps the table at the top of BENCHMARKS.md.
    for (goal, prefix) in [
        ("verify, library path", "verify uncompressed"),
        (
            "verify, `airlift package verify`",
            "`airlift package verify --trust KEY` (the CLI), uncompressed",
        ),
    ] {
        if let Some(ratio) = rows
            .iter()
            .find(|r| r.step.starts_with(prefix))
            .and_then(|r| r.vs_openssl)
        {
            println!(
                "bench-result: {}",
                serde_json::json!({
                    "goal": goal,
                    "baseline": "openssl dgst -sha256 PACKAGE",
                    "ratio": ratio,
                    "target": 0.9,
                    "load": format!("{} MiB uncompressed package, hot page cache", plain_len / MIB),
                })
            );
        }
    }
}
