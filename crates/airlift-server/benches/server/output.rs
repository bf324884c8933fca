//! Output: Markdown tables for people, and one `bench-result:` line per
//! goal for `scripts/bench`, which keeps the table at the top of
//! BENCHMARKS.md.

use crate::check_ins::{cold_explanation, median, spread, Case, Scenario};
use crate::components::Component;
use crate::downloads::{DownloadResult, DownloadSpec, CLIENT_CPU, SERVER_CPU};
use crate::load::LoadResult;
use crate::params::Params;
use crate::{ceiling, MB};
use serde_json::json;
use std::fmt::Write as _;
use std::time::Duration;

/// Every sample, a summary per scenario, what was cold, the baseline's
/// command line, and the `bench-result:` lines.
pub fn print_check_ins(out: &mut String, params: &Params, scenarios: &[Scenario]) {
    let _ = writeln!(
        out,
        "Check-ins: {} connections (one worker each), client runtime with {} threads; the ceiling \
         and airlift-server take turns, {} rounds per scenario. Best case: {} devices cycled round \
         robin, {} s measured after {} s warm-up. Realistic: {} devices, each once per pass, the \
         first 5 % of a pass not measured, at most {} s measured. Latency in ms; CPU in cores \
         (1.00 = one core busy) and in server CPU seconds per 1 000 answered check-ins.\n",
        params.concurrency,
        params.client_threads,
        params.rounds,
        params.devices,
        params.duration.as_secs(),
        params.warmup.as_secs(),
        params.cold_devices,
        params.duration.as_secs(),
    );
    print_samples(out, scenarios);
    print_summary(out, scenarios);
    if scenarios.iter().any(|s| s.case == Case::Realistic) {
        let _ = writeln!(out, "What is cold in (d): {}\n", cold_explanation(params));
    }
    let _ = writeln!(
        out,
        "Baseline (the ceiling: an axum route answering the fixed 25-byte body), to run alone: \
         `{}`; it prints the address it listens on.\n",
        ceiling::COMMAND
    );
    for scenario in scenarios {
        print_result_line(out, scenario);
    }
}

fn print_samples(out: &mut String, scenarios: &[Scenario]) {
    let _ = writeln!(
        out,
        "| sample | requests | window s | req/s | vs ceiling | p50 | p99 | p99.9 | max | errors | server CPU | server CPU s per 1 000 | server context switches per request | client CPU | server max RSS | device-record cache hits |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut sizes = Vec::new();
    for round in scenarios.iter().flat_map(|s| &s.rounds) {
        let ceiling = round.ceiling.rate();
        for r in [&round.ceiling, &round.airlift]
            .into_iter()
            .chain(round.steady.as_ref())
        {
            sample_row(out, r, ceiling);
            sizes.push(r.response_bytes.to_string());
        }
    }
    sizes.dedup();
    let _ = writeln!(out, "\nAnswer body sizes (bytes): {}.\n", sizes.join(", "));
}

fn sample_row(out: &mut String, r: &LoadResult, ceiling: f64) {
    let rate = r.rate();
    let _ = writeln!(
        out,
        "| {} | {} | {:.2} | {:.0} | {:.1} % | {:.3} | {:.3} | {:.3} | {:.3} | {} | {:.2} | {:.4} | {:.1} | {:.2} | {:.1} MiB | {} |",
        r.name,
        r.requests,
        r.seconds,
        rate,
        100.0 * rate / ceiling,
        r.percentile_ms(0.50),
        r.percentile_ms(0.99),
        r.percentile_ms(0.999),
        r.percentile_ms(1.0),
        r.errors,
        r.server_cpu_s / r.seconds,
        r.cpu_per_1k(),
        r.server_switches as f64 / r.requests.max(1) as f64,
        r.client_cpu_s / r.seconds,
        r.server_rss_mib,
        r.record_hits
            .map_or("–".to_owned(), |h| format!("{:.1} %", 100.0 * h)),
    );
}

/// `median (lowest–highest)` with `digits` decimals.
fn summary(values: &[f64], digits: usize) -> String {
    let (lo, hi) = spread(values);
    format!("{:.digits$} ({lo:.digits$}–{hi:.digits$})", median(values))
}

fn print_summary(out: &mut String, scenarios: &[Scenario]) {
    let _ = writeln!(
        out,
        "Per scenario, median of the rounds (lowest–highest):\n\n\
         | scenario | load | rounds | ceiling req/s | airlift-server req/s | vs ceiling | server CPU s per 1 000, airlift-server | server CPU s per 1 000, ceiling | airlift-server p99 ms | device-record cache hits |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for scenario in scenarios {
        let ceilings: Vec<&LoadResult> = scenario.rounds.iter().map(|r| &r.ceiling).collect();
        let airlift: Vec<&LoadResult> = scenario.rounds.iter().map(|r| &r.airlift).collect();
        summary_row(out, scenario.label, &scenario.load, &ceilings, &airlift);
        let steady: Vec<&LoadResult> = scenario
            .rounds
            .iter()
            .filter_map(|r| r.steady.as_ref())
            .collect();
        if steady.len() == ceilings.len() {
            let load = "the same fleet again on the same process";
            summary_row(
                out,
                "(e) airlift-server, second pass",
                load,
                &ceilings,
                &steady,
            );
        }
    }
    let _ = writeln!(out);
}

fn summary_row(
    out: &mut String,
    label: &str,
    load: &str,
    ceilings: &[&LoadResult],
    airlift: &[&LoadResult],
) {
    let rates = |samples: &[&LoadResult]| samples.iter().map(|r| r.rate()).collect::<Vec<_>>();
    let cpu = |samples: &[&LoadResult]| samples.iter().map(|r| r.cpu_per_1k()).collect::<Vec<_>>();
    let ratios: Vec<f64> = airlift
        .iter()
        .zip(ceilings)
        .map(|(a, c)| 100.0 * a.rate() / c.rate())
        .collect();
    let p99: Vec<f64> = airlift.iter().map(|r| r.percentile_ms(0.99)).collect();
    let hits: Vec<f64> = airlift
        .iter()
        .filter_map(|r| r.record_hits.map(|h| 100.0 * h))
        .collect();
    let hits = if hits.is_empty() {
        "–".to_owned()
    } else {
        format!("{} %", summary(&hits, 1))
    };
    let _ = writeln!(
        out,
        "| {label} | {load} | {} | {} | {} | {} % | {} | {} | {} | {} |",
        airlift.len(),
        summary(&rates(ceilings), 0),
        summary(&rates(airlift), 0),
        summary(&ratios, 1),
        summary(&cpu(airlift), 4),
        summary(&cpu(ceilings), 4),
        summary(&p99, 2),
        hits,
    );
}

/// One `bench-result:` line: the median ratio of the rounds, each round's
/// ratio as a sample, and the CPU cost beside it.
fn print_result_line(out: &mut String, scenario: &Scenario) {
    let ratios: Vec<f64> = scenario.rounds.iter().map(|r| r.ratio()).collect();
    let airlift_cpu: Vec<f64> = scenario
        .rounds
        .iter()
        .map(|r| r.airlift.cpu_per_1k())
        .collect();
    let ceiling_cpu: Vec<f64> = scenario
        .rounds
        .iter()
        .map(|r| r.ceiling.cpu_per_1k())
        .collect();
    let (case, target) = match scenario.case {
        Case::BestCase => ("best case (caches hot)", Some(0.5)),
        // A fixed answer does none of a cold check-in's work (a token to
        // verify, a record to read): the ratio is shown without a goal, and
        // the goal is the rate the modelled fleet needs (below).
        Case::Realistic => ("realistic (cold caches)", None),
    };
    let _ = writeln!(
        out,
        "bench-result: {}",
        json!({
            "goal": format!("check-ins, {case}, {}", scenario.label),
            "baseline": ceiling::COMMAND,
            "ratio": median(&ratios),
            "samples": ratios,
            "target": target,
            "load": scenario.load,
            "server_cpu_s_per_1k": median(&airlift_cpu),
            "baseline_cpu_s_per_1k": median(&ceiling_cpu),
        })
    );
    if scenario.case == Case::Realistic {
        print_fleet_rate_line(out, scenario, &airlift_cpu);
    }
}

/// The realistic scenario's absolute goal: one instance keeps up with the
/// fleet it models, 100 000 devices each checking in once a minute.
fn print_fleet_rate_line(out: &mut String, scenario: &Scenario, airlift_cpu: &[f64]) {
    const FLEET_RATE: f64 = 100_000.0 / 60.0;
    let rates: Vec<f64> = scenario.rounds.iter().map(|r| r.airlift.rate()).collect();
    let _ = writeln!(
        out,
        "bench-result: {}",
        json!({
            // The goal's name stays the same from run to run (the script
            // groups runs by it); the CPU time goes in a field of its own.
            "goal": format!("check-ins per second, realistic (cold caches), {}", scenario.label),
            "value": median(&rates),
            "samples": rates,
            "unit": "/s",
            "limit": FLEET_RATE,
            "better": "higher",
            "load": format!("{}; goal: 100 000 devices polling once a minute", scenario.load),
            "server_cpu_us_per_check_in": 1000.0 * median(airlift_cpu),
        })
    );
}

pub fn print_components(out: &mut String, rows: &[Component]) {
    let _ = writeln!(
        out,
        "\nParts of a check-in, timed in the benchmark process on the server's database (server idle). \
         CPU is the whole process's: caller and SQLite worker threads.\n"
    );
    let _ = writeln!(
        out,
        "| part | calls | wall µs per call | CPU µs per call | calls/s |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.0} |",
            r.name,
            r.calls,
            r.wall_us,
            r.cpu_us,
            1e6 / r.wall_us
        );
    }
    let _ = writeln!(out);
}

fn mb_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / MB / time.as_secs_f64()
}

pub fn print_downloads(
    out: &mut String,
    params: &Params,
    specs: &[DownloadSpec],
    results: &[DownloadResult],
) {
    let runs = results.first().map_or(0, |r| r.runs.len());
    let placement = if params.pin_downloads {
        format!("servers pinned to CPU {SERVER_CPU} and the client to CPU {CLIENT_CPU}")
    } else {
        "unpinned".to_owned()
    };
    let _ = writeln!(
        out,
        "Downloads: each on a fresh HTTP/1.1 connection, body read with 1 MiB `read`s and discarded; the four kinds \
         take turns, {runs} rounds after an untimed one; best and median of the {runs}; {placement}. \
         MB = 10^6 bytes; CPU in seconds per GiB sent.\n"
    );
    let _ = writeln!(
        out,
        "| download | bytes | best time | best MB/s | vs nginx (best) | median MB/s | vs nginx (median) | runs (s) | server CPU s/GiB | client CPU s/GiB | server max RSS |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"
    );
    for (spec, r) in specs.iter().zip(results) {
        download_row(out, spec, r, specs, results);
    }
}

fn download_row(
    out: &mut String,
    spec: &DownloadSpec,
    r: &DownloadResult,
    specs: &[DownloadSpec],
    results: &[DownloadResult],
) {
    let gib = spec.bytes as f64 * r.runs.len() as f64 / (1u64 << 30) as f64;
    let best = mb_per_s(spec.bytes, r.best());
    let median = mb_per_s(spec.bytes, r.median());
    let versus = |ours: f64, theirs: f64| format!("{:.0} %", 100.0 * ours / theirs);
    let (versus_best, versus_median) = match spec.baseline {
        Some(b) => (
            versus(best, mb_per_s(specs[b].bytes, results[b].best())),
            versus(median, mb_per_s(specs[b].bytes, results[b].median())),
        ),
        None => ("–".into(), "–".into()),
    };
    let times: Vec<String> = r
        .runs
        .iter()
        .map(|d| format!("{:.3}", d.as_secs_f64()))
        .collect();
    if let Some(b) = spec.baseline {
        let _ = writeln!(
            out,
            "bench-result: {}",
            json!({
                "goal": format!("download, {}", spec.name),
                "baseline": "nginx (sendfile on, one worker), same file",
                "ratio": median / mb_per_s(specs[b].bytes, results[b].median()),
                "target": 0.9,
                "load": format!("{} bytes, fresh connection, median of {}", spec.bytes, r.runs.len()),
            })
        );
    }
    let _ = writeln!(
        out,
        "| {} | {} | {:.3} s | {:.0} | {} | {:.0} | {} | {} | {:.2} | {:.2} | {:.1} MiB |",
        spec.name,
        spec.bytes,
        r.best().as_secs_f64(),
        best,
        versus_best,
        median,
        versus_median,
        times.join(" "),
        r.server_cpu / gib,
        r.client_cpu / gib,
        r.server_rss_mib,
    );
}
