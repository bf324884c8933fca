//! Power cuts at every point of an update, many times: prints the matrix
//! (where the power was cut × how the trial ended). Every trial must end
//! on one of the two versions with the server agreeing.
//!
//! `AIRLIFT_BENCH_VM_TRIALS=100 cargo bench -p airlift-vm --bench power_cut`
//! (default 10; each trial boots an emulated VM two or more times, about a
//! minute each on 2 cores).

use airlift_vm::power_cut::{run_trial, CutPoint, Outcome};
use std::collections::BTreeMap;

fn main() {
    let trials: u64 = std::env::var("AIRLIFT_BENCH_VM_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut matrix: BTreeMap<(CutPoint, Outcome), u64> = BTreeMap::new();
    let mut errors = 0;
    for seed in 0..trials {
        let point = CutPoint::ALL[(seed % CutPoint::ALL.len() as u64) as usize];
        match run_trial(point, seed) {
            Ok(result) => {
                eprintln!(
                    "trial {seed}: {:?} -> {:?}: {}",
                    point,
                    result.outcome,
                    result.detail.lines().next().unwrap_or("")
                );
                *matrix.entry((point, result.outcome)).or_default() += 1;
            }
            Err(e) => {
                eprintln!("trial {seed}: {point:?}: error: {e}");
                errors += 1;
            }
        }
    }
    let outcomes = [
        Outcome::Old,
        Outcome::New,
        Outcome::Unbootable,
        Outcome::Disagreement,
    ];
    println!("\n{trials} power-cut trials ({errors} could not run)\n");
    println!(
        "| cut during | {} |",
        outcomes.map(|o| format!("{o:?}")).join(" | ")
    );
    println!("|---|{}", "---:|".repeat(outcomes.len()));
    for point in CutPoint::ALL {
        let row: Vec<String> = outcomes
            .iter()
            .map(|o| matrix.get(&(point, *o)).copied().unwrap_or(0).to_string())
            .collect();
        println!("| {point:?} | {} |", row.join(" | "));
    }
    let bad: u64 = matrix
        .iter()
        .filter(|((_, o), _)| matches!(o, Outcome::Unbootable | Outcome::Disagreement))
        .map(|(_, n)| n)
        .sum();
    println!(
        "bench-result: {{\"goal\": \"vm power cuts: unbootable or disagreeing\", \"value\": {bad}, \"unit\": \"trials\", \"limit\": 0, \"better\": \"lower\", \"load\": \"{trials} trials\"}}"
    );
}
