//! What the run measured: Markdown tables for people and `bench-result:`
//! lines for `scripts/bench` (absolute goals: check-ins a second, p99,
//! memory; reported figures: table sizes, CPU per GiB and time to first
//! byte; one ratio: the streamed S3 download against a direct GET).

use crate::downloads::{median, Kind, Runs, Setup};
use crate::load::Outcome;
use crate::params::Params;
use crate::rollout::Verdict;
use crate::Usage;
use serde_json::json;
use std::fmt::Write as _;
use std::time::Duration;

const MIB: f64 = 1024.0 * 1024.0;

pub struct Results {
    pub idle_before: f64,
    pub seeding: Duration,
    pub sizes: Vec<(String, i64)>,
    pub rollout_created_secs: f64,
    pub auth_secs: f64,
    pub outcome: Outcome,
    pub usage: Usage,
    pub verdict: Verdict,
    /// Per instance: peak and current RSS, MiB.
    pub memory: Vec<(f64, f64)>,
    pub downloads: Option<(Setup, Vec<(Kind, Runs)>)>,
    pub warnings: u64,
    /// How the instances reach PostgreSQL ("TCP", "its Unix socket").
    pub transport: &'static str,
}

pub fn print(params: &Params, results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## A million devices: {} devices, {} check-ins a second for {} s\n\n\
         Rerun: `{}`. The machine was {:.0} % idle in the second before the start \
         and {:.0} % idle during the load (this process and the servers included).\n",
        params.devices,
        params.rate,
        params.duration.as_secs(),
        params.command(),
        results.idle_before,
        results.usage.idle_percent(),
    );
    let _ = writeln!(
        out,
        "Seeded in {:.1} s (COPY, then VACUUM ANALYZE). Rollout to {} tagged devices created in \
         {:.1} s. Warm-up: {} devices authenticated in {:.1} s ({:.0} a second).\n",
        results.seeding.as_secs_f64(),
        params.tagged(),
        results.rollout_created_secs,
        results.outcome.sent,
        results.auth_secs,
        results.outcome.sent as f64 / results.auth_secs.max(1e-9),
    );
    sizes(&mut out, params, results);
    check_ins(&mut out, params, results);
    timeline(&mut out, params, &results.outcome);
    rollout(&mut out, &results.verdict, &results.outcome);
    memory(&mut out, results);
    if let Some((setup, runs)) = &results.downloads {
        downloads(&mut out, setup, runs);
    }
    if results.warnings > 0 {
        let _ = writeln!(
            out,
            "The two instances logged {} warnings or errors.\n",
            results.warnings
        );
    }
    bench_results(&mut out, params, results);
    out
}

fn sizes(out: &mut String, params: &Params, results: &Results) {
    let per_million = 1e6 / params.devices as f64;
    let _ = writeln!(
        out,
        "### PostgreSQL tables (`pg_total_relation_size`: rows, indexes, TOAST)\n"
    );
    let _ = writeln!(
        out,
        "| table | MiB | MiB per million devices |\n|---|---:|---:|"
    );
    let mut total = 0;
    for (table, bytes) in results.sizes.iter().filter(|(_, b)| *b > 64 * 1024) {
        total += bytes;
        let mib = *bytes as f64 / MIB;
        let _ = writeln!(out, "| {table} | {mib:.1} | {:.0} |", mib * per_million);
    }
    let mib = total as f64 / MIB;
    let _ = writeln!(out, "| **all** | {mib:.1} | {:.0} |\n", mib * per_million);
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

fn latencies(outcome: &Outcome) -> Vec<u64> {
    let mut sorted: Vec<u64> = outcome.answered.iter().map(|(_, l)| *l).collect();
    sorted.sort_unstable();
    sorted
}

fn check_ins(out: &mut String, params: &Params, results: &Results) {
    let outcome = &results.outcome;
    let sorted = latencies(outcome);
    let usage = &results.usage;
    let answered = outcome.answered.len().max(1) as f64;
    let _ = writeln!(
        out,
        "### Check-ins (open loop, latency from each one's due time)\n\n\
         | sent | answered 200 | errors | achieved /s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
        outcome.sent,
        outcome.answered.len(),
        outcome.errors(),
        outcome.rate(params.duration),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        percentile(&sorted, 0.99),
        percentile(&sorted, 0.999),
        percentile(&sorted, 1.0),
    );
    if !outcome.errors.is_empty() {
        let _ = writeln!(out, "Errors: {:?}\n", outcome.errors);
    }
    let servers: f64 = usage.servers_cpu.iter().sum();
    let _ = writeln!(
        out,
        "CPU over the load's {:.1} s: instances {} s ({:.0} µs per answered check-in, reports \
         and the rollout engine included), the generator {:.1} s ({:.0} µs per check-in), \
         PostgreSQL {:.1} s ({:.0} µs per answered check-in; every `postgres` process on this \
         machine).\n",
        usage.seconds,
        usage
            .servers_cpu
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>()
            .join(" + "),
        1e6 * servers / answered,
        usage.client_cpu,
        1e6 * usage.client_cpu / answered,
        usage.database_cpu,
        1e6 * usage.database_cpu / answered,
    );
}

fn timeline(out: &mut String, params: &Params, outcome: &Outcome) {
    let slices = 10u64;
    let span = (params.duration.as_nanos() as u64).div_ceil(slices).max(1);
    let _ = writeln!(
        out,
        "By tenth of the run (by due time):\n\n| from s | answered | p50 ms | p99 ms | max ms |\n|---:|---:|---:|---:|---:|"
    );
    for slice in 0..slices {
        let mut sorted: Vec<u64> = outcome
            .answered
            .iter()
            .filter(|(due, _)| due / span == slice)
            .map(|(_, l)| *l)
            .collect();
        sorted.sort_unstable();
        let _ = writeln!(
            out,
            "| {:.1} | {} | {:.1} | {:.1} | {:.1} |",
            (slice * span) as f64 / 1e9,
            sorted.len(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            percentile(&sorted, 1.0),
        );
    }
    let _ = writeln!(out);
}

fn rollout(out: &mut String, verdict: &Verdict, outcome: &Outcome) {
    let deployment = &verdict.deployment;
    let _ = writeln!(
        out,
        "### Staged rollout\n\nStatus {:?}, phase {} at the end; counts {:?}.\n\n\
         | phase | admitted (table) | admitted (API) | succeeded (API) |\n|---|---:|---:|---:|",
        deployment.status,
        deployment.rollout.as_ref().map_or(0, |r| r.phase + 1),
        deployment.counts,
    );
    if let Some(progress) = &deployment.rollout {
        for (phase, admitted) in progress.phases.iter().zip(&verdict.admitted) {
            let _ = writeln!(
                out,
                "| {} | {admitted} | {} | {} |",
                phase.name, phase.admitted, phase.succeeded
            );
        }
    }
    let mut report_latencies = outcome.report_latencies.clone();
    report_latencies.sort_unstable();
    let _ = writeln!(
        out,
        "\nThe generator: {} tagged devices checked in ({} of them after their phase's \
         admissions were seen through the API, which must all have been offered it), {} were \
         offered the update, {} reports of success acknowledged (p99 {:.1} ms; errors {:?}); \
         {} devices have a check-in time from the load ({} check-ins answered).\n",
        outcome.tagged.len(),
        verdict.required_offers,
        verdict.offered,
        verdict.succeeded,
        percentile(&report_latencies, 0.99),
        outcome.report_errors,
        verdict.checked_in,
        outcome.answered.len(),
    );
    if verdict.problems.is_empty() {
        let _ = writeln!(out, "**The records agree with the generator exactly.**\n");
    } else {
        let _ = writeln!(out, "**The records DISAGREE with the generator:**\n");
        for problem in verdict.problems.iter().take(20) {
            let _ = writeln!(out, "- {problem}");
        }
        let _ = writeln!(out);
    }
}

fn memory(out: &mut String, results: &Results) {
    let _ = writeln!(out, "### Memory (`/proc`, after the load)\n\n| instance | peak RSS MiB | RSS MiB |\n|---|---:|---:|");
    for (name, (peak, now)) in ["a", "b"].iter().zip(&results.memory) {
        let _ = writeln!(out, "| {name} | {peak:.0} | {now:.0} |");
    }
    let _ = writeln!(out);
}

fn downloads(out: &mut String, setup: &Setup, runs: &[(Kind, Runs)]) {
    let _ = writeln!(
        out,
        "### Downloads from S3 ({} bytes, {} timed runs each, fresh connections)\n\n\
         | kind | median s | MB/s | median first byte ms | server CPU s per GiB |\n|---|---:|---:|---:|---:|",
        setup.size,
        runs.first().map_or(0, |(_, r)| r.total.len()),
    );
    for (kind, runs) in runs {
        let cpu = if *kind == Kind::Direct {
            "—".to_owned()
        } else {
            format!(
                "{:.2} (less {:.0} ms/s with no download)",
                runs.cpu_per_gib(setup.size),
                runs.background * 1e3
            )
        };
        let _ = writeln!(
            out,
            "| {} | {:.3} | {:.0} | {:.1} | {cpu} |",
            kind.label(),
            median(&runs.total).as_secs_f64(),
            runs.bytes_per_second(setup.size) / 1e6,
            median(&runs.first_byte).as_secs_f64() * 1e3,
        );
    }
    let _ = writeln!(out);
}

fn bench_results(out: &mut String, params: &Params, results: &Results) {
    let outcome = &results.outcome;
    let sorted = latencies(outcome);
    let load = format!(
        "realistic: {} devices in PostgreSQL (over {}), 2 instances; {} check-ins offered at \
         {}/s, each a different device (cold caches), open loop; a staged rollout to {} of them \
         under way; {:.0} % idle during the load",
        params.devices,
        results.transport,
        outcome.sent,
        params.rate,
        params.tagged(),
        results.usage.idle_percent()
    );
    let peak = results.memory.iter().map(|(p, _)| *p).fold(0.0, f64::max);
    let total: i64 = results.sizes.iter().map(|(_, b)| b).sum();
    let mut lines = vec![
        json!({"goal": "million devices: check-ins per second", "value": outcome.rate(params.duration),
               "unit": "/s", "limit": 3300, "better": "higher", "load": load}),
        json!({"goal": "million devices: check-in p99 (from the due time)", "value": percentile(&sorted, 0.99),
               "unit": "ms", "limit": 50, "better": "lower", "load": load}),
        json!({"goal": "million devices: peak RSS of an instance", "value": peak,
               "unit": "MiB", "limit": 512, "better": "lower", "load": load}),
        json!({"goal": "million devices: PostgreSQL size per million devices",
               "value": total as f64 / MIB * 1e6 / params.devices as f64, "unit": "MiB",
               "limit": null, "better": "lower",
               "load": format!("{} devices with inventories (3 installed, 4 attributes, 1–2 tags), \
                                one rollout to {}; every table with its indexes", params.devices, params.tagged())}),
    ];
    if let Some((setup, runs)) = &results.downloads {
        lines.extend(download_results(setup, runs));
    }
    for line in lines {
        let _ = writeln!(out, "bench-result: {line}");
    }
}

fn download_results(setup: &Setup, runs: &[(Kind, Runs)]) -> Vec<serde_json::Value> {
    let of = |kind: Kind| runs.iter().find(|(k, _)| *k == kind).map(|(_, r)| r);
    let load = format!(
        "{} bytes from s3s-fs on loopback, fresh connection, median of {}",
        setup.size,
        runs.first().map_or(0, |(_, r)| r.total.len())
    );
    let mut lines = Vec::new();
    for (kind, name) in [
        (Kind::Offloaded, "offload on"),
        (Kind::Streamed, "offload off"),
    ] {
        let Some(runs) = of(kind) else { continue };
        lines.push(
            json!({"goal": format!("downloads from S3, {name}: server CPU per GiB"),
            "value": runs.cpu_per_gib(setup.size), "unit": "CPU s/GiB", "limit": null,
            "better": "lower", "load": load}),
        );
        lines.push(
            json!({"goal": format!("downloads from S3, {name}: time to first byte"),
            "value": median(&runs.first_byte).as_secs_f64() * 1e3, "unit": "ms", "limit": null,
            "better": "lower", "load": load}),
        );
    }
    if let (Some(streamed), Some(direct)) = (of(Kind::Streamed), of(Kind::Direct)) {
        let samples: Vec<f64> = streamed
            .total
            .iter()
            .zip(&direct.total)
            .map(|(s, d)| d.as_secs_f64() / s.as_secs_f64())
            .collect();
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let ratio = if sorted.len() % 2 == 0 {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        lines.push(json!({"goal": "download through airlift-server from S3 (offload off)",
            "baseline": "direct ranged GET of the same object from the same s3s-fs (presigned URL, Range: bytes=0-)",
            "ratio": ratio, "target": 0.8, "samples": samples, "load": load}));
    }
    lines
}
