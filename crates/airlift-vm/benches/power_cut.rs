//! Power cuts at every point of an update, many times: prints the matrix
//! (where the power was cut × how the trial ended). Every trial must end
//! on one of the two versions with the server agreeing.
//!
//! `AIRLIFT_BENCH_VM_TRIALS=100 cargo bench -p airlift-vm --bench power_cut`
//! (default 10; each trial boots an emulated VM three or four times, one to
//! two minutes on 2 cores).
//!
//! - `AIRLIFT_BENCH_VM_JOBS=2` runs trials side by side (each VM is one
//!   emulated CPU, so on an otherwise idle 2-core host two jobs nearly
//!   double the rate).
//! - `AIRLIFT_BENCH_VM_LOG=path` appends one JSON line per trial to `path`
//!   and prints the matrix over every line in it, so a long campaign can be
//!   run in several sittings (`AIRLIFT_BENCH_VM_FIRST_SEED` keeps the seeds
//!   of a later sitting apart from the earlier ones). Pin the binaries
//!   (`AIRLIFT_SERVER_BIN`, `AIRLIFT_AGENT_BIN`) so every sitting tests the
//!   same agent.

use airlift_vm::power_cut::{run_trial, CutPoint, Outcome};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One trial as the log keeps it: the cut point and outcome by name, or
/// the reason it could not run.
#[derive(serde::Serialize, serde::Deserialize)]
struct LoggedTrial {
    seed: u64,
    point: String,
    outcome: Option<String>,
    detail: String,
}

fn run_logged(seed: u64) -> LoggedTrial {
    let point = CutPoint::ALL[(seed % CutPoint::ALL.len() as u64) as usize];
    // The lab panics (test support) when a step never happens; one trial's
    // panic must not end the campaign.
    let result = std::panic::catch_unwind(|| run_trial(point, seed));
    let (outcome, detail) = match result {
        Ok(Ok(trial)) => (Some(format!("{:?}", trial.outcome)), trial.detail),
        Ok(Err(e)) => (None, format!("error: {e}")),
        Err(panic) => (
            None,
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()),
        ),
    };
    LoggedTrial {
        seed,
        point: format!("{point:?}"),
        outcome,
        detail,
    }
}

fn main() {
    let trials = env_number("AIRLIFT_BENCH_VM_TRIALS", 10);
    let jobs = env_number("AIRLIFT_BENCH_VM_JOBS", 1).max(1);
    let first_seed = env_number("AIRLIFT_BENCH_VM_FIRST_SEED", 0);
    let log_path = std::env::var_os("AIRLIFT_BENCH_VM_LOG").map(PathBuf::from);
    // Built once, before the jobs start, rather than raced by them.
    airlift_vm::lab::image();

    let next = AtomicU64::new(first_seed);
    let log = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= first_seed + trials {
                    break;
                }
                let trial = run_logged(seed);
                eprintln!(
                    "trial {seed}: {} -> {}: {}",
                    trial.point,
                    trial.outcome.as_deref().unwrap_or("could not run"),
                    trial.detail.lines().next().unwrap_or("")
                );
                if let Some(path) = &log_path {
                    append(path, &trial);
                }
                log.lock().unwrap_or_else(|e| e.into_inner()).push(trial);
            });
        }
    });
    let this_run = log.into_inner().unwrap_or_else(|e| e.into_inner());
    let all = match &log_path {
        Some(path) => read_log(path),
        None => this_run,
    };
    print_matrix(&all);
}

fn append(path: &PathBuf, trial: &LoggedTrial) {
    let line = serde_json::to_string(trial).expect("a trial serialises");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| writeln!(file, "{line}"));
    if let Err(e) = written {
        eprintln!("could not append to {}: {e}", path.display());
    }
}

fn read_log(path: &PathBuf) -> Vec<LoggedTrial> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn print_matrix(trials: &[LoggedTrial]) {
    let outcomes = [
        Outcome::Old,
        Outcome::New,
        Outcome::Unbootable,
        Outcome::Disagreement,
    ]
    .map(|o| format!("{o:?}"));
    let mut matrix: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut could_not_run = 0;
    for trial in trials {
        match &trial.outcome {
            Some(outcome) => {
                *matrix
                    .entry((trial.point.clone(), outcome.clone()))
                    .or_default() += 1
            }
            None => could_not_run += 1,
        }
    }
    let ran = trials.len() as u64 - could_not_run;
    println!(
        "\n{} power-cut trials ({could_not_run} could not run)\n",
        trials.len()
    );
    println!("| cut during | {} |", outcomes.join(" | "));
    println!("|---|{}", "---:|".repeat(outcomes.len()));
    for point in CutPoint::ALL.map(|p| format!("{p:?}")) {
        let row: Vec<String> = outcomes
            .iter()
            .map(|o| {
                matrix
                    .get(&(point.clone(), o.clone()))
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            })
            .collect();
        println!("| {point} | {} |", row.join(" | "));
    }
    let bad: u64 = matrix
        .iter()
        .filter(|((_, o), _)| o == "Unbootable" || o == "Disagreement")
        .map(|(_, n)| n)
        .sum();
    println!(
        "bench-result: {{\"goal\": \"vm power cuts: unbootable or disagreeing\", \"value\": {bad}, \"unit\": \"trials\", \"limit\": 0, \"better\": \"lower\", \"load\": \"{ran} trials\"}}"
    );
}
