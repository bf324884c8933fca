//! Output: Markdown tables for people and one `bench-result:` line per
//! goal for `scripts/bench`. The goals are absolute (milliseconds, MiB), so
//! each line carries its value, unit and limit rather than a ratio.

use crate::live::Memory;
use crate::pages::{Group, Timed};
use crate::params::Params;
use serde_json::json;
use std::fmt::Write as _;
use std::time::Duration;

/// p99 page time the issue asks for.
pub const PAGE_LIMIT_MS: f64 = 100.0;
/// Time for a change to reach an open page.
pub const LIVE_LIMIT_MS: f64 = 1000.0;
/// Memory 200 open dashboards may add.
pub const MEMORY_LIMIT_MIB: f64 = 50.0;

/// Nearest-rank percentile `p` of `times` (zero when empty).
pub fn percentile(times: &[Duration], p: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// What a run measured.
pub struct Results {
    pub seeding: Duration,
    pub pages: Vec<Timed>,
    pub live: Vec<Duration>,
    pub idle: Memory,
    pub open: Memory,
    pub fan_out: Duration,
    pub updates: usize,
    pub failures: usize,
}

pub fn print(params: &Params, results: &Results) -> String {
    let mut out = String::new();
    let load = load(params);
    print_pages(&mut out, params, results);
    let live_p99 = ms(percentile(&results.live, 99.0));
    let live_max = ms(percentile(&results.live, 100.0));
    let _ = writeln!(
        out,
        "\nA device's status report (device API) to the event on an open deployment page's \
         live stream (`/ui/live?topics=deployment:ID`), {} samples: p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms (goal ≤ 1 000 ms: {}).",
        results.live.len(),
        ms(percentile(&results.live, 50.0)),
        live_p99,
        live_max,
        met(live_p99 <= LIVE_LIMIT_MS)
    );
    let rss = (results.open.rss_kib as f64 - results.idle.rss_kib as f64) / 1024.0;
    let pss = match (results.idle.pss_kib, results.open.pss_kib) {
        (Some(idle), Some(open)) => Some((open as f64 - idle as f64) / 1024.0),
        _ => None,
    };
    let _ = writeln!(
        out,
        "\nServer memory: idle with no dashboard RSS {:.1} MiB{}; with {} dashboards open (each \
         its own session, its deployment page loaded once, its live stream open) after a change \
         reached all of them (the last {:.0} ms after the report) RSS {:.1} MiB{}: {:+.1} MiB RSS{} \
         (goal ≤ 50 MiB: {}).\n",
        results.idle.rss_kib as f64 / 1024.0,
        mib_text(" PSS", results.idle.pss_kib),
        params.dashboards,
        ms(results.fan_out),
        results.open.rss_kib as f64 / 1024.0,
        mib_text(" PSS", results.open.pss_kib),
        rss,
        pss.map(|p| format!(", {p:+.1} MiB PSS")).unwrap_or_default(),
        met(rss <= MEMORY_LIMIT_MIB)
    );
    let _ = writeln!(out, "To rerun: `{}`\n", params.command());
    for (group, worst) in worst_per_group(&results.pages) {
        let p99 = ms(percentile(&worst.times, 99.0));
        line(
            &mut out,
            &format!("dashboard, {}: p99", group.name()),
            p99,
            "ms",
            PAGE_LIMIT_MS,
            &format!("{load}; slowest: {}", worst.name),
        );
    }
    line(
        &mut out,
        "dashboard, a device's report reaching an open deployment page: p99",
        live_p99,
        "ms",
        LIVE_LIMIT_MS,
        &format!("{load}; {} reports", results.live.len()),
    );
    line(
        &mut out,
        &format!(
            "dashboard, {} open dashboards: server memory added (RSS)",
            params.dashboards
        ),
        rss,
        "MiB",
        MEMORY_LIMIT_MIB,
        &format!(
            "{load}; each with a session, its page loaded and its live stream open{}",
            pss.map(|p| format!("; PSS {p:+.1} MiB"))
                .unwrap_or_default()
        ),
    );
    out
}

/// The method in words and the table of page times.
fn print_pages(out: &mut String, params: &Params, results: &Results) {
    let _ = writeln!(
        out,
        "\nDashboard on PostgreSQL: {} devices, {} deployments ({} device updates, {} failures \
         with reasons), seeded in {:.1} s through the store's API. Each page kind requested {} \
         times, one request at a time. Times are the client's, on loopback, from sending the \
         request to the last byte of the page: an upper bound of the server's time.\n",
        params.devices,
        params.deployments,
        results.updates,
        results.failures,
        results.seeding.as_secs_f64(),
        params.samples
    );
    let _ = writeln!(
        out,
        "| page | samples | p50 ms | p99 ms | max ms | page KiB | p99 ≤ 100 ms |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for page in &results.pages {
        let p99 = ms(percentile(&page.times, 99.0));
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {} |",
            page.name,
            page.times.len(),
            ms(percentile(&page.times, 50.0)),
            p99,
            ms(percentile(&page.times, 100.0)),
            page.bytes as f64 / 1024.0,
            met(p99 <= PAGE_LIMIT_MS)
        );
    }
}

fn load(params: &Params) -> String {
    format!(
        "realistic: {} devices, {} deployments on PostgreSQL; client time on loopback (≥ server time)",
        params.devices, params.deployments
    )
}

fn met(yes: bool) -> &'static str {
    if yes {
        "yes"
    } else {
        "**no**"
    }
}

fn mib_text(label: &str, kib: Option<u64>) -> String {
    kib.map(|k| format!(",{label} {:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_default()
}

/// Per goal, the page kind with the highest p99.
fn worst_per_group(pages: &[Timed]) -> Vec<(Group, &Timed)> {
    let mut worst: Vec<(Group, &Timed)> = Vec::new();
    for page in pages {
        let p99 = percentile(&page.times, 99.0);
        match worst.iter_mut().find(|(group, _)| *group == page.group) {
            Some(entry) if percentile(&entry.1.times, 99.0) < p99 => entry.1 = page,
            Some(_) => {}
            None => worst.push((page.group, page)),
        }
    }
    worst.sort_by_key(|(group, _)| *group);
    worst
}

fn line(out: &mut String, goal: &str, value: f64, unit: &str, limit: f64, load: &str) {
    let result = json!({
        "goal": goal,
        "value": (value * 10.0).round() / 10.0,
        "unit": unit,
        "limit": limit,
        "better": "lower",
        "load": load,
    });
    let _ = writeln!(out, "bench-result: {result}");
}
