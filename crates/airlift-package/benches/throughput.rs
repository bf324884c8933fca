//! Package build and verification throughput, against `openssl dgst -sha256`
//! as the baseline for "as fast as hashing the file can be".
//!
//! ```text
//! cargo bench -p airlift-package --bench throughput
//! ```
//!
//! On one uncompressed package file (format 2, a signed digest per 1 MiB
//! block), in one run: `openssl dgst -sha256` as the baseline; the library's
//! verification in a child process; `airlift package verify` — the binary
//! users run (`AIRLIFT_BENCH_CLI_BIN` names another build of it; by default
//! the workspace's release build, built if missing); the agent's install
//! path, `airlift-agent install PACKAGE` on a fresh file-backed device
//! (`AIRLIFT_BENCH_AGENT_BIN`, likewise); and the library on the same
//! payload built as format 1 (one digest per payload), for what per-block
//! verification costs. Then a zstd package verified and decoded by the
//! library and the CLI, against `zstd -dc PAYLOAD | sha256sum` (and `|
//! openssl dgst -sha256`) on its stored payload.
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

#[path = "throughput/agent.rs"]
mod agent;
#[path = "throughput/launcher.rs"]
mod launcher;

use airlift_package::{
    encode_payload, Compression, EncodeOptions, Limits, Manifest, PackageReader, PackageWriter,
    PayloadSpec, PayloadType, PublicKey, SignedManifest, SigningKey, TrustSet, FORMAT_VERSION,
};
use launcher::{best_of, Launcher};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
const CHUNK: usize = 1024 * 1024;
const RUNS: usize = 3;
/// The packages' device type, and the agent's.
const BOARD: &str = "bench-board";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--launcher") {
        if let Err(error) = launcher::launcher() {
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
    /// The baseline's time over ours (higher is faster); the step's text
    /// names the baseline.
    vs_baseline: Option<f64>,
    ratio: Option<f64>,
    peak_rss_kib: Option<i64>,
    /// The goal this row measures, for scripts/bench.
    goal: Option<Goal>,
}

/// A `bench-result` line's fixed parts.
struct Goal {
    name: &'static str,
    baseline: &'static str,
    /// The goal as a ratio; `None` for a figure reported without one.
    target: Option<f64>,
    load: String,
}

impl Row {
    fn new(step: impl Into<String>, bytes: u64, time: Duration) -> Self {
        Self {
            step: step.into(),
            bytes,
            time,
            vs_baseline: None,
            ratio: None,
            peak_rss_kib: None,
            goal: None,
        }
    }

    fn against(mut self, baseline: Duration) -> Self {
        self.vs_baseline = Some(baseline.as_secs_f64() / self.time.as_secs_f64());
        self
    }

    fn rss(mut self, kib: i64) -> Self {
        self.peak_rss_kib = Some(kib);
        self
    }

    fn goal(
        mut self,
        name: &'static str,
        baseline: &'static str,
        target: Option<f64>,
        load: String,
    ) -> Self {
        self.goal = Some(Goal {
            name,
            baseline,
            target,
            load,
        });
        self
    }
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
    /// Steps 1 to 3d: an uncompressed payload of random bytes built into a
    /// format 2 package (blocks) and a format 1 package (whole-payload
    /// digest); the format 2 file hashed by openssl, verified by the
    /// library, by the CLI and installed by the agent; the format 1 file
    /// verified by the library. Returns the CLI binary, for the zstd steps.
    fn uncompressed(&mut self, plain_len: u64) -> PathBuf {
        // 1. A random payload and the two packages of it.
        let payload = self.dir.join("payload.bin");
        eprintln!("writing {} MiB of random bytes", plain_len / MIB);
        write_random(&payload, plain_len);
        let package = self.dir.join("plain.airlift");
        let whole = self.dir.join("plain-v1.airlift");
        let options = EncodeOptions {
            zstd_workers: 0,
            ..EncodeOptions::default()
        };
        for (path, version) in [(&package, FORMAT_VERSION), (&whole, 1)] {
            eprintln!("building the uncompressed package, format {version}");
            let (time, stored_len) = build_package(
                &payload,
                path,
                (&self.key, version),
                Compression::None,
                &options,
                &self.dir,
            );
            let mut row = Row::new(
                format!("build, uncompressed, format {version} (encode + write package)"),
                plain_len,
                time,
            );
            row.ratio = Some(plain_len as f64 / stored_len as f64);
            self.rows.push(row);
        }
        fs::remove_file(&payload).expect("remove the payload");
        let load = format!(
            "{} MiB uncompressed package, hot page cache",
            plain_len / MIB
        );
        let openssl = self.openssl_and_library(&package, &whole, &load);
        let cli = self.cli_and_agent(&package, openssl, &load);
        fs::remove_file(&package).expect("remove the package");
        cli
    }

    /// Steps 2 and 3: openssl on the format 2 package, then the library on
    /// it and on the format 1 package (which it removes). Returns openssl's
    /// time.
    fn openssl_and_library(&mut self, package: &Path, whole: &Path, load: &str) -> Duration {
        let package_len = fs::metadata(package).expect("package metadata").len();
        // 2. Baseline: openssl over the same file, page cache hot.
        warm(package);
        eprintln!("openssl dgst -sha256, best of {RUNS}");
        let openssl_argv = [
            OsStr::new("openssl"),
            OsStr::new("dgst"),
            OsStr::new("-sha256"),
            package.as_os_str(),
        ];
        let (openssl, openssl_rss) = best_of(&mut self.launcher, &openssl_argv);
        self.rows.push(
            Row::new("`openssl dgst -sha256` (baseline)", package_len, openssl)
                .against(openssl)
                .rss(openssl_rss),
        );

        // 3. The library, in a child process: format 2, then format 1.
        eprintln!("library verification (stored bytes), best of {RUNS}");
        let (verify, verify_rss) = best_of(
            &mut self.launcher,
            &verify_argv(package, &self.public_pem, "stored"),
        );
        self.rows.push(
            Row::new(
                "verify uncompressed: open → verify → read stored (1 MiB) → finish, vs openssl",
                package_len,
                verify,
            )
            .against(openssl)
            .rss(verify_rss)
            .goal(
                "verify, library path",
                "openssl dgst -sha256 PACKAGE",
                Some(0.9),
                load.to_owned(),
            ),
        );
        warm(whole);
        eprintln!("library verification of the format 1 package, best of {RUNS}");
        let (verify_whole, whole_rss) = best_of(
            &mut self.launcher,
            &verify_argv(whole, &self.public_pem, "stored"),
        );
        self.rows.push(
            Row::new(
                "verify uncompressed, format 1 (one digest per payload), vs openssl",
                package_len,
                verify_whole,
            )
            .against(openssl)
            .rss(whole_rss),
        );
        fs::remove_file(whole).expect("remove the format 1 package");
        self.rows.push(
            Row::new(
                "per-block (format 2) vs whole-payload (format 1) verification: format 1's time over format 2's",
                package_len,
                verify,
            )
            .against(verify_whole)
            .goal(
                "verify, per-block vs whole-payload",
                "library verify of the same payload as format 1",
                Some(0.95),
                load.to_owned(),
            ),
        );

        openssl
    }

    /// Steps 3b and 3c: the CLI and the agent on the format 2 package.
    /// Returns the CLI binary.
    fn cli_and_agent(&mut self, package: &Path, openssl: Duration, load: &str) -> PathBuf {
        let package_len = fs::metadata(package).expect("package metadata").len();
        // 3b. The same, as users run it: `airlift package verify`.
        let cli = cli_binary();
        eprintln!(
            "`airlift package verify` ({}), best of {RUNS}",
            cli.display()
        );
        let (by_cli, cli_rss) = best_of(
            &mut self.launcher,
            &cli_verify_argv(&cli, package, &self.public_pem),
        );
        self.rows.push(
            Row::new(
                "`airlift package verify --trust KEY` (the CLI), uncompressed, vs openssl",
                package_len,
                by_cli,
            )
            .against(openssl)
            .rss(cli_rss)
            .goal(
                "verify, `airlift package verify`",
                "openssl dgst -sha256 PACKAGE",
                Some(0.9),
                load.to_owned(),
            ),
        );

        self.agent_rows(package, package_len, openssl, load);
        cli
    }

    /// Step 4: zstd, built with and without worker threads, then verified
    /// and decoded by the library and by `cli`, against `zstd -dc | sha256sum`
    /// (and `| openssl dgst -sha256`) on the package's stored payload.
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
        let frames = self.dir.join("payload.zst");
        extract_payload(&zstd_package, &frames);
        warm(&zstd_package);
        warm(&frames);
        let load = format!("{} MiB of binaries, zstd level 3", zstd_len / MIB);
        let mut baselines = Vec::new();
        for hasher in ["sha256sum", "openssl dgst -sha256"] {
            eprintln!("`zstd -dc | {hasher}`, best of {RUNS}");
            let script = format!("zstd -dcq '{}' | {hasher} >/dev/null", frames.display());
            let (time, rss) = best_of(&mut self.launcher, &["sh", "-c", &script]);
            self.rows.push(
                Row::new(
                    format!("`zstd -dc PAYLOAD | {hasher}` (baseline)"),
                    zstd_len,
                    time,
                )
                .rss(rss),
            );
            baselines.push(time);
        }
        eprintln!("library verification (decode + installed digest), best of {RUNS}");
        let (decode, decode_rss) = best_of(
            &mut self.launcher,
            &verify_argv(&zstd_package, &self.public_pem, "decoded"),
        );
        self.rows.push(
            Row::new(
                "verify zstd: read stored → decompress → installed digest → finish, vs `zstd -dc | sha256sum`",
                zstd_len,
                decode,
            )
            .against(baselines[0])
            .rss(decode_rss),
        );
        eprintln!("`airlift package verify` of the zstd package, best of {RUNS}");
        let (by_cli, cli_rss) = best_of(
            &mut self.launcher,
            &cli_verify_argv(cli, &zstd_package, &self.public_pem),
        );
        self.rows.push(
            Row::new(
                "`airlift package verify --trust KEY` (the CLI), zstd, vs `zstd -dc | sha256sum`",
                zstd_len,
                by_cli,
            )
            .against(baselines[0])
            .rss(cli_rss)
            .goal(
                "verify + decode zstd, `airlift package verify`",
                "zstd -dc PAYLOAD | sha256sum",
                Some(0.9),
                load.clone(),
            ),
        );
        self.rows.push(
            Row::new(
                "`airlift package verify --trust KEY` (the CLI), zstd, vs `zstd -dc | openssl dgst -sha256`",
                zstd_len,
                by_cli,
            )
            .against(baselines[1])
            .goal(
                "verify + decode zstd, `airlift package verify`, vs openssl",
                "zstd -dc PAYLOAD | openssl dgst -sha256",
                None,
                load,
            ),
        );
        fs::remove_file(&frames).expect("remove the extracted payload");
    }

    /// Builds `input` into the zstd package `package` with `workers`
    /// threads, and records the row.
    fn zstd_build(&mut self, input: &Path, package: &Path, zstd_len: u64, workers: u32) {
        let options = EncodeOptions {
            zstd_level: 3,
            zstd_workers: workers,
            ..EncodeOptions::default()
        };
        eprintln!("building the zstd package with {workers} worker(s)");
        let (time, stored_len) = build_package(
            input,
            package,
            (&self.key, FORMAT_VERSION),
            Compression::Zstd,
            &options,
            &self.dir,
        );
        let mut row = Row::new(
            format!("build, zstd level 3, workers = {workers}"),
            zstd_len,
            time,
        );
        row.ratio = Some(zstd_len as f64 / stored_len as f64);
        self.rows.push(row);
    }
}

/// Copies the one payload's stored bytes (zstd frames) out of `package`.
fn extract_payload(package: &Path, out: &Path) {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(package).expect("open the package");
    let offset = PackageReader::open(&mut file, Limits::default())
        .expect("read the head")
        .payload_offset();
    file.seek(SeekFrom::Start(offset))
        .expect("seek to the payload");
    io::copy(
        &mut file,
        &mut File::create(out).expect("create the payload file"),
    )
    .expect("copy the payload");
}

/// The `airlift` binary users run: `AIRLIFT_BENCH_CLI_BIN`, else the
/// workspace's release build.
fn cli_binary() -> PathBuf {
    release_binary("AIRLIFT_BENCH_CLI_BIN", "airlift-cli", "airlift")
}

/// A workspace binary to time: `env` (relative to the workspace root when
/// relative), else `bin` of `package` from the release build, built now if
/// missing (a bench is built with the release profile too).
pub(crate) fn release_binary(env: &str, package: &str, bin: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Some(given) = std::env::var_os(env) {
        return root.join(given);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building {bin} (release)");
    let built = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            package,
            "--bin",
            bin,
        ])
        .status()
        .expect("run cargo build");
    assert!(built.success(), "building {bin} failed");
    target_dir(&root).join("release").join(bin)
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

/// Where cargo builds: `CARGO_TARGET_DIR`, else the workspace's `target`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// Encodes `input` into a temporary stored file, signs the manifest and
/// writes the package, as the CLI does. Returns the time for all of it and
/// the stored size.
// Not the test kit's `PackageBuilder`: this is the step being timed, file to
// file as the CLI streams it; the kit builds whole packages in memory.
fn build_package(
    input: &Path,
    package: &Path,
    (key, format_version): (&SigningKey, u16),
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
    let manifest = Manifest::builder("bench", "1.0.0".parse().expect("semver"), [BOARD])
        .format_version(format_version)
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
    println!("| step | bytes | best time | MB/s | vs baseline | ratio | peak RSS |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let percent = row
            .vs_baseline
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
    println!("Baselines, to run alone: `openssl dgst -sha256 PACKAGE`, `zstd -dc PAYLOAD | sha256sum` (hot page cache)");
    // For scripts/bench, which keeps the table at the top of BENCHMARKS.md.
    for row in rows {
        let (Some(goal), Some(ratio)) = (&row.goal, row.vs_baseline) else {
            continue;
        };
        println!(
            "bench-result: {}",
            serde_json::json!({
                "goal": goal.name,
                "baseline": goal.baseline,
                "ratio": ratio,
                "target": goal.target,
                "load": goal.load,
            })
        );
    }
}
