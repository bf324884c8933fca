//! The power-cut matrix: the real agent, halted and killed with SIGKILL at
//! every state save and at random download bytes, then "powered up" (the
//! harness plays the bootloader) and restarted until its update ends.
//!
//! Every trial must end with the device booting a slot whose content is a
//! committed or newly verified version — never a half-written one — with
//! the server's record agreeing, and interrupted downloads must resume
//! rather than start over.
//!
//! ```text
//! cargo test -p airlift-agent --test power_cut                 # 200 trials (CI)
//! cargo test -p airlift-agent --test power_cut -- --trials 5000 --seed 7
//! ```
//!
//! A plain binary (`harness = false`) so that it takes `--trials N`.

#[path = "it/harness.rs"]
#[allow(dead_code)]
mod harness;
use airlift_server::testing as server;

use airlift_agent::boot::{FileBootEnv, Slot};
use harness::{enrol, Device, Operator, Packages, Signer, FACTORY_IMAGE};
use server::InProcessServer;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// The image size: 2 MiB, raw, so that a checkpoint falls every 64 KiB.
const IMAGE_SIZE: usize = 2 * 1024 * 1024;

/// Runs of the agent a trial may take before it counts as stuck.
const MAX_RUNS: usize = 24;

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Halt after this state save, counted over the whole trial.
    Save(u64),
    /// Halt once the download reaches this package byte.
    Byte(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Good,
    Bad,
}

#[derive(Debug, Default)]
struct Figures {
    trials: usize,
    halted: usize,
    save_faults: usize,
    byte_faults: usize,
    /// Bytes fetched again after byte faults, and the package bytes in all.
    refetched: u64,
    refetch_trials: u64,
    worst_refetch: u64,
    runs: usize,
}

impl Figures {
    /// Counts a trial that ended as it should.
    fn record(&mut self, fault: Fault, outcome: &Outcome) {
        self.runs += outcome.runs;
        self.halted += usize::from(outcome.halted);
        match fault {
            Fault::Save(_) => self.save_faults += 1,
            Fault::Byte(_) => self.byte_faults += 1,
        }
        if let (Fault::Byte(_), Some(bytes)) = (fault, outcome.refetched) {
            self.refetched += bytes;
            self.refetch_trials += 1;
            self.worst_refetch = self.worst_refetch.max(bytes);
        }
    }

    /// The mean share of the package fetched again after a kill
    /// mid-download, in percent.
    fn mean_refetch_percent(&self, package_len: u64) -> f64 {
        if self.refetch_trials == 0 {
            return 0.0;
        }
        self.refetched as f64 / self.refetch_trials as f64 / package_len as f64 * 100.0
    }

    /// The table of figures, but for the wall time.
    fn print(&self, package_len: u64, failures: usize) {
        println!("| figure | value |");
        println!("|---|---:|");
        println!("| trials | {} |", self.trials);
        println!(
            "| killed at a state save / at a download byte | {} / {} |",
            self.save_faults, self.byte_faults
        );
        println!(
            "| trials where the fault struck (the agent halted and was killed) | {} |",
            self.halted
        );
        println!(
            "| agent runs per trial (mean) | {:.1} |",
            self.runs as f64 / self.trials.max(1) as f64
        );
        println!("| package size | {package_len} bytes |");
        println!(
            "| re-fetched after a kill mid-download: mean / worst | {:.2} % / {:.2} % ({} resumed downloads) |",
            self.mean_refetch_percent(package_len),
            self.worst_refetch as f64 / package_len as f64 * 100.0,
            self.refetch_trials
        );
        println!(
            "| trials ending on an unverified slot, or with the server disagreeing | {failures} |"
        );
    }
}

struct Options {
    trials: usize,
    seed: u64,
    jobs: usize,
}

fn options() -> Options {
    let mut options = Options {
        trials: 200,
        seed: 1,
        jobs: 2,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--trials" => options.trials = value("--trials") as usize,
            "--seed" => options.seed = value("--seed"),
            "--jobs" => options.jobs = value("--jobs").max(1) as usize,
            // What cargo/libtest pass to every test binary.
            "--nocapture" | "--quiet" | "-q" | "--test-threads" | "--color" => {}
            other if other.starts_with("--") => {}
            _ => {}
        }
    }
    options
}

/// A small deterministic generator for fault positions (splitmix64).
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Fleet<'s> {
    server: &'s InProcessServer,
    signer: &'s Signer,
    package_id: String,
    image: Vec<u8>,
    package_len: u64,
}

struct Outcome {
    runs: usize,
    saves: u64,
    halted: bool,
    refetched: Option<u64>,
}

impl Fleet<'_> {
    /// One device, one deployment, one fault; returns a description of what
    /// went wrong, if anything did.
    fn trial(&self, fault: Fault, health: Health) -> Result<Outcome, String> {
        let operator = Operator::new(self.server);
        let check = match health {
            Health::Good => "true",
            Health::Bad => "false",
        };
        let device = Device::new(&self.server.url, self.signer.public_key_file(), &[check]);
        let device_id = enrol(&device, &operator);
        let deployment = operator.deploy(&self.package_id, &device_id);

        let mut saves = 0u64;
        let mut halted = false;
        let mut halted_at: Option<u64> = None;
        let mut refetched = None;
        let mut history = String::new();
        for run in 1..=MAX_RUNS {
            let halt_at = match fault {
                Fault::Save(n) if !halted && n > saves => format!("save:{}", n - saves),
                Fault::Byte(n) if !halted => format!("byte:{n}"),
                _ => "save:0".to_owned(),
            };
            let outcome = device.run_faulted(&halt_at);
            history.push_str(&format!("--- run {run} ({halt_at})\n{}", outcome.log));
            saves += outcome.saves();
            if let (Some(reached), Some(&from)) = (halted_at, outcome.fetched_from().first()) {
                refetched = Some(reached.saturating_sub(from));
                halted_at = None;
            }
            if outcome.halted {
                halted = true;
                halted_at = outcome.halted_at_byte();
                device.power_up(); // the power came back
                continue;
            }
            if !outcome.success {
                return Err(format!("the agent failed\n{history}"));
            }
            if outcome.rebooted() {
                device.power_up();
                continue;
            }
            let (state, _) = operator.device_state(&deployment);
            let idle = device.status()["state"] == "idle";
            if idle && matches!(state.as_str(), "success" | "rolled_back" | "failure") {
                self.check_end(&device, &state, health)
                    .map_err(|e| format!("{e}\n{history}"))?;
                return Ok(Outcome {
                    runs: run,
                    saves,
                    halted,
                    refetched,
                });
            }
        }
        Err(format!(
            "no end after {MAX_RUNS} runs: server says {:?}, agent {}\n{history}",
            operator.device_state(&deployment),
            device.status()
        ))
    }

    /// The device boots a verified slot and the server agrees.
    fn check_end(&self, device: &Device, state: &str, health: Health) -> Result<(), String> {
        let expected = match health {
            Health::Good => "success",
            Health::Bad => "rolled_back",
        };
        if state != expected {
            return Err(format!("server says {state}, expected {expected}"));
        }
        let vars = FileBootEnv::open(&device.bootenv)
            .and_then(|env| env.vars())
            .map_err(|e| e.to_string())?;
        if vars.upgrade_available {
            return Err("a trial is still armed after the update ended".into());
        }
        let boot = device.power_up();
        let (slot, content) = match health {
            Health::Good => (Slot::B, self.image.as_slice()),
            Health::Bad => (Slot::A, FACTORY_IMAGE),
        };
        if boot.slot != slot || boot.trial {
            return Err(format!(
                "boots {:?} (trial {}), expected {slot:?}",
                boot.slot, boot.trial
            ));
        }
        if device.slot(slot) != content {
            return Err(format!("slot {slot:?} does not hold the version it should"));
        }
        let record =
            std::fs::read_to_string(device.dir.path().join("data/installed.a")).unwrap_or_default();
        if (health == Health::Good) != record.contains("2.0.0") {
            return Err(format!(
                "the agent's record disagrees with the server: {record}"
            ));
        }
        Ok(())
    }
}

fn main() {
    let options = options();
    let started = Instant::now();
    let signer = Signer::new();
    // Every trial enrols a new device from 127.0.0.1: more than the
    // server's default first-contact limit (60 a minute per address) allows.
    let server = InProcessServer::start_with(
        signer.public_key_file(),
        &["--poll-interval", "1", "--first-contact-per-minute", "0"],
    );
    let (package, image) = signer.raw_package("2.0.0", IMAGE_SIZE);
    let package_len = package.len() as u64;
    let operator = Operator::new(&server);
    let fleet = Fleet {
        server: &server,
        signer: &signer,
        package_id: operator.upload(package),
        image,
        package_len,
    };

    // A clean trial counts the saves a whole good update makes.
    let calibration = fleet
        .trial(Fault::Save(u64::MAX), Health::Good)
        .unwrap_or_else(|e| panic!("a clean update fails: {e}"));
    let saves_per_update = calibration.saves;
    assert!(
        saves_per_update > 10,
        "a clean update saved {saves_per_update} times"
    );
    println!(
        "power-cut matrix: {} trials, seed {}, {} jobs; a clean update saves its state {} times ({} runs)",
        options.trials, options.seed, options.jobs, saves_per_update, calibration.runs
    );

    let next = AtomicUsize::new(0);
    let figures = Mutex::new(Figures::default());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..options.jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= options.trials {
                    return;
                }
                let random = mix(options.seed ^ (i as u64).wrapping_mul(0x1234_5678_9ABC));
                // Even trials: every save in turn; odd: a random byte.
                let fault = if i % 2 == 0 {
                    Fault::Save(1 + (i as u64 / 2) % saves_per_update)
                } else {
                    Fault::Byte(random % fleet.package_len)
                };
                // One trial in four has a health check that fails.
                let health = if random % 4 == 0 {
                    Health::Bad
                } else {
                    Health::Good
                };
                let result = fleet.trial(fault, health);
                let mut figures = figures.lock().unwrap_or_else(|e| e.into_inner());
                figures.trials += 1;
                match result {
                    Ok(outcome) => figures.record(fault, &outcome),
                    Err(e) => failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("trial {i} ({fault:?}, {health:?}): {e}")),
                }
            });
        }
    });

    let figures = figures.into_inner().unwrap_or_else(|e| e.into_inner());
    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    let mean_refetch = figures.mean_refetch_percent(package_len);
    figures.print(package_len, failures.len());
    println!("| wall time | {:.1} s |", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("{failure}\n");
        }
        panic!("{} of {} trials failed", failures.len(), figures.trials);
    }
    assert!(
        figures.refetch_trials > 0,
        "no byte fault struck mid-download"
    );
    // A checkpoint trails the download by the slot writer's reads in
    // flight (install/slot_writer.rs: at most five, here 64 KiB blocks) and
    // one sync interval (64 KiB for this 2 MiB package): about 384 KiB, 18 %
    // of this package at worst; on a 1 GiB one, 5 MiB and 8 MiB, 1.3 %.
    assert!(
        mean_refetch < 20.0,
        "a resumed download re-fetched {mean_refetch:.2} % of the package on average"
    );
}
