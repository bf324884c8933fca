//! Markdown tables from what was recorded: totals, errors by kind and by
//! phase, each fault and how long the servers took to recover from it, and
//! a per-minute timeline of latency, memory and CPU.

use crate::record::{Failure, FaultEvent, Op, Outcome, Recorded, Sample};
use crate::verify::Verdict;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Disturbed requests closer together than this belong to one outage.
const BURST_GAP_MS: u32 = 10_000;
/// A request answered later than this counts as disturbed.
const SLOW_US: u32 = 1_000_000;
/// Growth of resident memory after warm-up that still counts as flat.
const FLAT_MIB: f64 = 16.0;
const FLAT_SHARE: f64 = 0.10;

/// What the report needs besides the recording.
#[derive(Debug)]
pub struct Setting {
    pub run_ms: u32,
    pub warmup_ms: u32,
    pub instance_names: Vec<&'static str>,
    pub devices: usize,
    pub poll_secs: u64,
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

/// p50, p99, max of successful check-ins in `[from, to)`, in milliseconds.
fn latency(outcomes: &[Outcome], from: u32, to: u32) -> (usize, f64, f64, f64) {
    let mut lat: Vec<u32> = outcomes
        .iter()
        .filter(|o| o.op == Op::CheckIn && o.failure.is_none())
        .filter(|o| o.sent_ms >= from && o.sent_ms < to)
        .map(|o| o.latency_us)
        .collect();
    lat.sort_unstable();
    (
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().map_or(f64::NAN, |&m| f64::from(m) / 1000.0),
    )
}

fn failures_in(outcomes: &[Outcome], from: u32, to: u32) -> BTreeMap<Failure, u64> {
    let mut by = BTreeMap::new();
    for o in outcomes
        .iter()
        .filter(|o| o.sent_ms >= from && o.sent_ms < to)
    {
        if let Some(f) = o.failure {
            *by.entry(f).or_insert(0) += 1;
        }
    }
    by
}

fn kinds(by: &BTreeMap<Failure, u64>) -> String {
    if by.is_empty() {
        return "0".into();
    }
    let total: u64 = by.values().sum();
    let parts: Vec<String> = by
        .iter()
        .map(|(f, n)| format!("{} {n}", f.label()))
        .collect();
    format!("{total} ({})", parts.join(", "))
}

fn secs(ms: u32) -> String {
    format!("{:.1} s", f64::from(ms) / 1000.0)
}

/// The outage a fault caused: requests sent from the fault on that failed
/// or were answered after more than [`SLOW_US`], each within
/// [`BURST_GAP_MS`] of the one before (the first within 30 s of the fault),
/// leaving out those still open when the next fault began.
#[derive(Debug, Default)]
struct Burst {
    failed: u64,
    slow: u64,
    by_kind: BTreeMap<Failure, u64>,
    by_instance: BTreeMap<u8, u64>,
    /// The last disturbed request's send time: every request sent after it
    /// was answered, in time.
    last: Option<u32>,
}

fn disturbed(o: &Outcome) -> bool {
    o.failure.is_some() || o.latency_us > SLOW_US
}

fn burst(outcomes: &[Outcome], at: u32, until: u32) -> Burst {
    let mut hit: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| disturbed(o))
        .filter(|o| {
            // Ended after this fault and before the next one began.
            let done = o.sent_ms.saturating_add(o.latency_us / 1000);
            done >= at && done < until
        })
        .collect();
    hit.sort_by_key(|o| o.sent_ms);
    let mut burst = Burst::default();
    for o in hit {
        let reference = burst.last.unwrap_or(at);
        let gap_limit = if burst.last.is_none() {
            30_000
        } else {
            BURST_GAP_MS
        };
        if o.sent_ms.saturating_sub(reference) > gap_limit {
            break;
        }
        match o.failure {
            Some(f) => {
                burst.failed += 1;
                *burst.by_kind.entry(f).or_insert(0) += 1;
            }
            None => burst.slow += 1,
        }
        *burst.by_instance.entry(o.instance).or_insert(0) += 1;
        burst.last = Some(burst.last.map_or(o.sent_ms, |l| l.max(o.sent_ms)));
    }
    burst
}

/// Resident memory (MiB) and CPU (cores) per process per minute.
struct ProcessMinute {
    rss_end_mib: Option<f64>,
    rss_max_mib: Option<f64>,
    cpu_cores: Option<f64>,
}

fn process_minutes(samples: &[Sample], process: usize, minutes: usize) -> Vec<ProcessMinute> {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.process == process).collect();
    (0..minutes)
        .map(|m| {
            let (from, to) = (m as u32 * 60_000, (m as u32 + 1) * 60_000);
            let inside: Vec<&&Sample> = mine
                .iter()
                .filter(|s| s.at_ms >= from && s.at_ms < to && s.pid != 0)
                .collect();
            let mut cpu = 0.0;
            for pair in mine.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                if b.at_ms >= from && b.at_ms < to && a.pid == b.pid && a.pid != 0 {
                    cpu += (b.cpu_secs - a.cpu_secs).max(0.0);
                }
            }
            let span = inside
                .first()
                .zip(inside.last())
                .map(|(a, b)| f64::from(b.at_ms - a.at_ms) / 1000.0);
            ProcessMinute {
                rss_end_mib: inside.last().map(|s| s.rss_kib as f64 / 1024.0),
                rss_max_mib: inside
                    .iter()
                    .map(|s| s.rss_kib as f64 / 1024.0)
                    .reduce(f64::max),
                cpu_cores: span.filter(|s| *s > 0.0).map(|s| cpu / s),
            }
        })
        .collect()
}

/// The soak schema's table scans and rows written per second in
/// `[from, to)`, from consecutive cumulative samples (a pair that goes
/// backwards, across a statistics reset, is left out).
fn db_rates(stats: &[(u32, i64, i64)], from: u32, to: u32) -> Option<(f64, f64)> {
    let (mut scans, mut writes, mut ms) = (0i64, 0i64, 0u32);
    for pair in stats.windows(2) {
        let ((t0, s0, w0), (t1, s1, w1)) = (pair[0], pair[1]);
        if t1 < from || t1 >= to || s1 < s0 || w1 < w0 {
            continue;
        }
        scans += s1 - s0;
        writes += w1 - w0;
        ms += t1 - t0;
    }
    (ms > 0).then(|| {
        let s = f64::from(ms) / 1000.0;
        (scans as f64 / s, writes as f64 / s)
    })
}

fn mib(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.1}"))
}

/// Whether each life (pid) of a process kept its memory flat after warm-up.
fn flatness(samples: &[Sample], process: usize, name: &str, warmup_ms: u32) -> Vec<(String, bool)> {
    let mut lives: Vec<(u32, Vec<&Sample>)> = Vec::new();
    for s in samples
        .iter()
        .filter(|s| s.process == process && s.pid != 0)
    {
        match lives.last_mut() {
            Some((pid, list)) if *pid == s.pid => list.push(s),
            _ => lives.push((s.pid, vec![s])),
        }
    }
    lives
        .into_iter()
        .filter_map(|(pid, list)| {
            let born = list.first()?.at_ms;
            let warm = list.iter().find(|s| s.at_ms >= born + warmup_ms)?;
            let last = list.last()?;
            let max = list
                .iter()
                .filter(|s| s.at_ms >= warm.at_ms)
                .map(|s| s.rss_kib)
                .max()?;
            let (w, e, m) = (
                warm.rss_kib as f64 / 1024.0,
                last.rss_kib as f64 / 1024.0,
                max as f64 / 1024.0,
            );
            let growth = e - w;
            let flat = growth <= FLAT_MIB.max(FLAT_SHARE * w);
            Some((
                format!(
                    "{name} (pid {pid}, {}–{}): {w:.1} MiB after warm-up → {e:.1} MiB at the end (max {m:.1}; {growth:+.1} MiB) — {}",
                    secs(born),
                    secs(last.at_ms),
                    if flat { "flat" } else { "GROWING" }
                ),
                flat,
            ))
        })
        .collect()
}

pub fn render(recorded: &Recorded, setting: &Setting, verdict: Option<&Verdict>) -> String {
    let mut out = String::new();
    totals(&mut out, recorded, setting, verdict);
    failures_by_kind(&mut out, recorded);
    faults(&mut out, recorded, setting);
    phases(&mut out, recorded, setting);
    per_minute(&mut out, recorded, setting);
    memory(&mut out, recorded, setting);
    failed_seconds(&mut out, recorded);
    nothing_lost(&mut out, recorded, verdict);
    out
}

/// The totals: requests, latency, successes, and the verdict in a line.
fn totals(out: &mut String, recorded: &Recorded, setting: &Setting, verdict: Option<&Verdict>) {
    let o = &recorded.outcomes;
    let end = setting.run_ms;
    let check_ins: Vec<&Outcome> = o.iter().filter(|x| x.op == Op::CheckIn).collect();
    let ok = check_ins.iter().filter(|x| x.failure.is_none()).count();
    let (_, p50, p99, max) = latency(o, 0, u32::MAX);
    let _ = writeln!(out, "| measure | value |\n| --- | ---: |");
    let _ = writeln!(
        out,
        "| devices / instances / poll | {} / {} / {} s (offered {:.0} check-ins/s) |",
        setting.devices,
        setting.instance_names.len(),
        setting.poll_secs,
        setting.devices as f64 / setting.poll_secs as f64
    );
    let _ = writeln!(out, "| run | {} |", secs(end));
    let _ = writeln!(
        out,
        "| check-ins answered 200 | {ok} ({:.1}/s) |",
        ok as f64 * 1000.0 / f64::from(end.max(1))
    );
    let _ = writeln!(
        out,
        "| check-in latency p50 / p99 / max (answered) | {p50:.2} / {p99:.2} / {max:.1} ms |"
    );
    for op in Op::ALL {
        let of: Vec<&Outcome> = o.iter().filter(|x| x.op == op).collect();
        let failed = of.iter().filter(|x| x.failure.is_some()).count();
        let _ = writeln!(
            out,
            "| {} requests / failed | {} / {failed} |",
            op.as_str(),
            of.len()
        );
    }
    let _ = writeln!(
        out,
        "| targeted devices whose success was acknowledged / the last at | {} / {} |",
        recorded.successes,
        recorded.last_success_ms.map_or("–".into(), secs)
    );
    let _ = writeln!(
        out,
        "| dispatches more than 1 s late (client saturated) | {} (max {}) |",
        recorded.late_dispatches,
        secs(recorded.max_dispatch_delay_ms)
    );
    if let Some(v) = verdict {
        let _ = writeln!(
            out,
            "| **nothing lost** | **{}** |",
            if v.lost() == 0 {
                "held: every device's stored state = what it last had acknowledged".to_owned()
            } else {
                format!("NO: {} mismatches", v.lost())
            }
        );
    }
}

/// Failed requests by kind and by request.
fn failures_by_kind(out: &mut String, recorded: &Recorded) {
    let o = &recorded.outcomes;
    let _ = writeln!(out, "\nFailed requests by kind:\n");
    let _ = writeln!(
        out,
        "| kind | check-in | status report | download | auth | all |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut table: BTreeMap<Failure, BTreeMap<Op, u64>> = BTreeMap::new();
    for x in o {
        if let Some(f) = x.failure {
            *table.entry(f).or_default().entry(x.op).or_insert(0) += 1;
        }
    }
    if table.is_empty() {
        let _ = writeln!(out, "| none | 0 | 0 | 0 | 0 | 0 |");
    }
    for (failure, by_op) in &table {
        let cell = |op| by_op.get(&op).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            failure.label(),
            cell(Op::CheckIn),
            cell(Op::Report),
            cell(Op::Download),
            cell(Op::Auth),
            by_op.values().sum::<u64>()
        );
    }
}

/// Each fault, its outage and its recovery.
fn faults(out: &mut String, recorded: &Recorded, setting: &Setting) {
    let o = &recorded.outcomes;
    let end = setting.run_ms;
    let faults: Vec<&FaultEvent> = recorded.faults.iter().collect();
    if !faults.is_empty() {
        let _ = writeln!(
            out,
            "\nFaults. An outage: the requests sent after a fault that failed or were answered after more than {} s, until a gap of {} s without such a request; recovery: from the fault to the send time of the last of them (every request sent later was answered, in time).\n",
            SLOW_US / 1_000_000,
            BURST_GAP_MS / 1000
        );
        let _ = writeln!(
            out,
            "| fault | at | action took | failed in the outage | answered after > 1 s | outage requests on | recovery | check-in p99 30 s before / 30 s after | failures later in the phase |\n| --- | ---: | ---: | --- | ---: | --- | ---: | ---: | ---: |"
        );
        for (i, fault) in faults.iter().enumerate() {
            let until = faults.get(i + 1).map_or(end, |f| f.at_ms);
            let outage = burst(
                o,
                fault.at_ms,
                faults.get(i + 1).map_or(u32::MAX, |f| f.at_ms),
            );
            let total_after: u64 = failures_in(o, fault.at_ms, until).values().sum();
            let (_, _, before, _) = latency(o, fault.at_ms.saturating_sub(30_000), fault.at_ms);
            let (_, _, after, _) = latency(o, fault.at_ms, fault.at_ms + 30_000);
            let recovery = match outage.last {
                Some(last) => secs(last.saturating_sub(fault.at_ms)),
                None => "undisturbed".into(),
            };
            let took = match &fault.error {
                Some(e) => format!("FAILED: {e}"),
                None => format!("{:.2} s", fault.took.as_secs_f64()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {took} | {} | {} | {} | {recovery} | {before:.1} / {after:.1} ms | {} |",
                fault.name,
                secs(fault.at_ms),
                kinds(&outage.by_kind),
                outage.slow,
                setting
                    .instance_names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| format!(
                        "{name} {}",
                        outage.by_instance.get(&(i as u8)).copied().unwrap_or(0)
                    ))
                    .collect::<Vec<_>>()
                    .join(" / "),
                total_after.saturating_sub(outage.failed)
            );
        }
        for fault in &faults {
            if !fault.others.is_empty() {
                let list: Vec<String> = fault
                    .others
                    .iter()
                    .map(|(who, n)| format!("{who} ×{n}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "\nOther clients were connected to PostgreSQL at \"{}\" (their connections were cut too): {}",
                    fault.name,
                    list.join(", ")
                );
            }
        }
    }
}

/// The phases between faults.
fn phases(out: &mut String, recorded: &Recorded, setting: &Setting) {
    let o = &recorded.outcomes;
    let end = setting.run_ms;
    let faults: Vec<&FaultEvent> = recorded.faults.iter().collect();
    let mut bounds = vec![(0u32, "start".to_owned())];
    bounds.extend(faults.iter().map(|f| (f.at_ms, f.name.clone())));
    let _ = writeln!(out, "\nBy phase:\n");
    let _ = writeln!(
        out,
        "| phase | from | to | check-ins answered | check-ins/s | failed requests | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"
    );
    for (i, (from, name)) in bounds.iter().enumerate() {
        let to = bounds.get(i + 1).map_or(end, |b| b.0);
        let (n, p50, p99, max) = latency(o, *from, to);
        let label = if i == 0 {
            "before the first fault".to_owned()
        } else {
            format!("after {name}")
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {n} | {:.1} | {} | {p50:.2} | {p99:.2} | {max:.1} |",
            secs(*from),
            secs(to),
            n as f64 * 1000.0 / f64::from((to - from).max(1)),
            kinds(&failures_in(o, *from, to)),
        );
    }
}

/// The per-minute timeline.
fn per_minute(out: &mut String, recorded: &Recorded, setting: &Setting) {
    let o = &recorded.outcomes;
    let end = setting.run_ms;
    let faults: Vec<&FaultEvent> = recorded.faults.iter().collect();
    let minutes = (end as usize).div_ceil(60_000);
    let per_process: Vec<Vec<ProcessMinute>> = (0..=setting.instance_names.len())
        .map(|p| process_minutes(&recorded.samples, p, minutes))
        .collect();
    let _ = writeln!(
        out,
        "\nPer minute (RSS: `VmRSS` at the minute's last sample, MiB; CPU in cores):\n"
    );
    let mut head =
        "| minute | check-ins answered | failed requests | p50 ms | p99 ms | max ms |".to_owned();
    let mut rule = "| ---: | ---: | ---: | ---: | ---: | ---: |".to_owned();
    for name in &setting.instance_names {
        let _ = write!(head, " RSS {name} | CPU {name} |");
        rule.push_str(" ---: | ---: |");
    }
    head.push_str(
        " client RSS | client CPU | machine busy | DB scans/s | DB rows written/s | events |",
    );
    rule.push_str(" ---: | ---: | ---: | ---: | ---: | --- |");
    let _ = writeln!(out, "{head}\n{rule}");
    for m in 0..minutes {
        let (from, to) = (m as u32 * 60_000, ((m as u32 + 1) * 60_000).min(end));
        let (n, p50, p99, max) = latency(o, from, to);
        let failed: u64 = failures_in(o, from, to).values().sum();
        let mut row = format!(
            "| {} | {n} | {failed} | {p50:.2} | {p99:.2} | {max:.1} |",
            m + 1
        );
        for process in per_process.iter().take(setting.instance_names.len()) {
            let pm = &process[m];
            let _ = write!(
                row,
                " {} | {} |",
                mib(pm.rss_end_mib),
                pm.cpu_cores.map_or("–".into(), |c| format!("{c:.2}"))
            );
        }
        let client = &per_process[setting.instance_names.len()][m];
        let mut events: Vec<String> = faults
            .iter()
            .filter(|f| f.at_ms >= from && f.at_ms < to)
            .map(|f| format!("{} at {}", f.name, secs(f.at_ms)))
            .collect();
        if let Some(done) = recorded.last_success_ms.filter(|d| *d >= from && *d < to) {
            events.push(format!("last success acknowledged at {}", secs(done)));
        }
        let (scans, writes) = db_rates(&recorded.db_stats, from, to)
            .map_or(("–".to_owned(), "–".to_owned()), |(s, w)| {
                (format!("{s:.0}"), format!("{w:.0}"))
            });
        let busy: Vec<f64> = recorded
            .machine_busy
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, b)| *b)
            .collect();
        let busy = if busy.is_empty() {
            "–".to_owned()
        } else {
            format!(
                "{:.0} %",
                100.0 * busy.iter().sum::<f64>() / busy.len() as f64
            )
        };
        let _ = writeln!(
            row,
            " {} | {} | {busy} | {scans} | {writes} | {} |",
            mib(client.rss_max_mib),
            client.cpu_cores.map_or("–".into(), |c| format!("{c:.2}")),
            events.join("; ")
        );
        out.push_str(&row);
    }
}

/// Whether each instance's memory stayed flat after warm-up.
fn memory(out: &mut String, recorded: &Recorded, setting: &Setting) {
    let _ = writeln!(
        out,
        "\nMemory after warm-up ({}; flat = grew by at most {FLAT_MIB} MiB or {:.0} %):\n",
        secs(setting.warmup_ms),
        FLAT_SHARE * 100.0
    );
    for (p, name) in setting.instance_names.iter().enumerate() {
        for (line, _) in flatness(
            &recorded.samples,
            p,
            &format!("instance {name}"),
            setting.warmup_ms,
        ) {
            let _ = writeln!(out, "- {line}");
        }
    }
}

/// The seconds that had failed requests.
fn failed_seconds(out: &mut String, recorded: &Recorded) {
    let o = &recorded.outcomes;
    let mut seconds: BTreeMap<u32, BTreeMap<Failure, u64>> = BTreeMap::new();
    for x in o {
        if let Some(f) = x.failure {
            *seconds
                .entry(x.sent_ms / 1000)
                .or_default()
                .entry(f)
                .or_insert(0) += 1;
        }
    }
    if !seconds.is_empty() {
        let _ = writeln!(
            out,
            "\nSeconds with failed requests (by send time; at most 60 shown):\n"
        );
        let _ = writeln!(out, "| second | failed |\n| ---: | --- |");
        for (second, by) in seconds.iter().take(60) {
            let _ = writeln!(out, "| {second} | {} |", kinds(by));
        }
        if seconds.len() > 60 {
            let _ = writeln!(out, "| … | {} more seconds |", seconds.len() - 60);
        }
    }
}

/// The "nothing lost" checks, and what the devices saw amiss.
fn nothing_lost(out: &mut String, recorded: &Recorded, verdict: Option<&Verdict>) {
    if let Some(v) = verdict {
        let _ = writeln!(out, "\nNothing lost (read from the store after the run):\n");
        let _ = writeln!(
            out,
            "| check | checked | mismatches |\n| --- | ---: | ---: |"
        );
        for (check, checked, bad) in &v.rows {
            let _ = writeln!(out, "| {check} | {checked} | {bad} |");
        }
        let _ = writeln!(
            out,
            "\nDeployment {}; per state, last acknowledged by the devices: {}; in the store: {}. \
             Reports unanswered at the end: {}; check-ins with a new inventory unanswered at the end: {}.",
            v.deployment_status,
            counts(&v.local_counts),
            counts(&v.store_counts),
            v.unanswered_reports,
            v.unanswered_inventories
        );
        for example in &v.examples {
            let _ = writeln!(out, "- {example}");
        }
    }
    if !recorded.anomalies.is_empty() {
        let _ = writeln!(
            out,
            "\nAnomalies seen by devices ({}; first 20):\n",
            recorded.anomalies.len()
        );
        for a in recorded.anomalies.iter().take(20) {
            let _ = writeln!(out, "- {a}");
        }
    }
}

fn counts(map: &BTreeMap<airlift_protocol::state::UpdateState, u64>) -> String {
    let parts: Vec<String> = map.iter().map(|(s, n)| format!("{s} {n}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}
