//! The check-in scenarios. Each takes `rounds` turns of the ceiling and
//! airlift-server, one after the other, so that whatever else the machine
//! does falls on both alike; a round's ratio compares the two samples of
//! that round.
//!
//! - Best case, caches hot: a small fleet (1 000 devices) whose every
//!   device checks in many times a second, cycling round robin:
//!   (b) no deployment, (c) an active deployment for which every device
//!   is incompatible.
//! - Realistic, caches cold: a large fleet (100 000 devices), each
//!   checking in once, in order, right after the server was restarted on
//!   its data — see [`cold_explanation`] for what that leaves cold — then a second pass
//!   on the same process.

use crate::ceiling;
use crate::devices::{Admin, Device};
use crate::load::{load, CheckIn, LoadResult, Target, Walk};
use crate::packages::build_package;
use crate::params::Params;
use crate::procs::Server;
use crate::OTHER_DEVICE_TYPE;
use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::sync::Arc;

/// Device tokens the server keeps verified (`auth::VerifiedTokens`).
const KEPT_TOKENS: usize = 32_768;

/// Device records the server keeps by default (`--device-cache-capacity`).
const KEPT_RECORDS: usize = 100_000;

/// What the realistic scenario's passes find cold, for the output.
pub fn cold_explanation(params: &Params) -> String {
    let n = params.cold_devices;
    let tokens = if n > KEPT_TOKENS {
        format!("most of the {n} tokens miss that cache again")
    } else {
        format!("all {n} tokens fit in that cache")
    };
    let records = if n > KEPT_RECORDS {
        format!("and more than the {KEPT_RECORDS} device records it keeps, so records miss too")
    } else {
        format!("while its {KEPT_RECORDS} device records hold them all (the record-cache hits column shows it)")
    };
    format!(
        "Each device checks in once, in order, on a server process started anew on the same \
         data just before: its token is not among the verified tokens the server keeps (its \
         HMAC and claims are checked), its record is not among the device records it keeps \
         (read from SQLite through the `device_records` view), and its check-in time joins the \
         once-a-second write-behind batch (one row per check-in, where the best case writes \
         each of its {} devices once a second). The second pass (e) walks the fleet again on \
         the same process, as a long-running instance sees it: the server keeps {KEPT_TOKENS} \
         verified tokens, so {tokens}, {records}.",
        params.devices
    )
}

/// One round: the ceiling's sample, then airlift-server's (and, in the
/// realistic scenario, its second pass).
pub struct Round {
    pub ceiling: LoadResult,
    pub airlift: LoadResult,
    pub steady: Option<LoadResult>,
}

impl Round {
    pub fn ratio(&self) -> f64 {
        self.airlift.rate() / self.ceiling.rate()
    }
}

/// Best case or realistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    BestCase,
    Realistic,
}

/// A scenario's rounds, and what its load was.
pub struct Scenario {
    /// `(b) airlift-server, no deployment`, …
    pub label: &'static str,
    pub case: Case,
    /// What the load was, in a few words (the table's "load" column).
    pub load: String,
    pub rounds: Vec<Round>,
}

/// The ceiling server, started for one sample and stopped after it.
async fn ceiling_sample(
    name: String,
    requests: &Arc<Vec<CheckIn>>,
    params: &Params,
) -> Result<LoadResult> {
    let (guard, addr) = ceiling::start()?;
    let target = Target {
        addr,
        pid: guard.pid(),
    };
    load(&name, target, Arc::clone(requests), Walk::Cycle, params).await
}

/// An airlift-server sample, with the share of its device-record lookups
/// (warm-up included) that the server's cache answered, from its
/// `/metrics`.
async fn airlift_sample(
    name: &str,
    server: &Server,
    requests: &Arc<Vec<CheckIn>>,
    walk: Walk,
    params: &Params,
) -> Result<LoadResult> {
    let before = tokio::task::block_in_place(|| server.device_lookups());
    let mut result = load(name, server.target(), Arc::clone(requests), walk, params).await?;
    let after = tokio::task::block_in_place(|| server.device_lookups());
    result.record_hits = after.hit_share_since(before);
    Ok(result)
}

/// The best case: `rounds` turns of the ceiling and airlift-server, both
/// cycling through `requests` for the warm-up and the window.
pub async fn best_case(
    label: &'static str,
    server: &Server,
    requests: &Arc<Vec<CheckIn>>,
    params: &Params,
) -> Result<Scenario> {
    let mut rounds = Vec::new();
    for round in 1..=params.rounds {
        eprintln!("{label}: round {round} of {}", params.rounds);
        let ceiling =
            ceiling_sample(format!("(a) ceiling, round {round}"), requests, params).await?;
        let name = format!("{label}, round {round}");
        let airlift = airlift_sample(&name, server, requests, Walk::Cycle, params).await?;
        rounds.push(Round {
            ceiling,
            airlift,
            steady: None,
        });
    }
    Ok(Scenario {
        label,
        case: Case::BestCase,
        load: format!(
            "best case: {} devices back to back on {} connections, caches hot",
            requests.len(),
            params.concurrency
        ),
        rounds,
    })
}

/// The realistic scenario: per round, the ceiling cycling through all the
/// fleet's requests; then airlift-server restarted (its caches empty) and
/// walked through the fleet once (cold), and once more (steady).
pub async fn realistic(
    server: &mut Server,
    admin: &mut Admin,
    requests: &Arc<Vec<CheckIn>>,
    params: &Params,
) -> Result<Scenario> {
    let label = "(d) airlift-server, no deployment";
    let warmup = requests.len() / 20;
    let mut rounds = Vec::new();
    for round in 1..=params.rounds {
        eprintln!("{label}: round {round} of {}", params.rounds);
        let ceiling =
            ceiling_sample(format!("(a) ceiling, round {round}"), requests, params).await?;
        server.restart()?;
        admin.set_url(&server.url);
        let pass = Walk::OnePass { warmup };
        let name = format!("{label}, caches cold, round {round}");
        let airlift = airlift_sample(&name, server, requests, pass, params).await?;
        let name = format!("(e) airlift-server, second pass, round {round}");
        let steady = airlift_sample(&name, server, requests, pass, params).await?;
        rounds.push(Round {
            ceiling,
            airlift,
            steady: Some(steady),
        });
    }
    Ok(Scenario {
        label,
        case: Case::Realistic,
        load: format!(
            "realistic: {} devices, each checking in once after a server restart \
             (token, record and check-in time cold), on {} connections",
            requests.len(),
            params.concurrency
        ),
        rounds,
    })
}

/// (c)'s setup: an active deployment targeting every best-case device, for
/// all of which it is incompatible (another device type), plus a device
/// that never checks in and keeps it active. Returns its id, and whether
/// the server set it up as planned (if not, (c) is skipped).
pub async fn incompatible_deployment(
    admin: &Admin,
    server: &Server,
    devices: &[Device],
    dir: &Path,
) -> Result<(String, bool)> {
    let holdout = admin.enrol("SN-HOLDOUT").await?.0;
    let other = dir.join("other.airlift");
    build_package(&server.signer, "2.0.0", OTHER_DEVICE_TYPE, 300_000, &other)?;
    let other = admin.upload(&other).await?;
    let mut targets: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    targets.push(&holdout);
    let deployment = admin
        .deploy(other["id"].as_str().context("package id")?, &targets)
        .await?;
    let detail = admin.get(&format!("/deployments/{deployment}")).await?;
    let answer = admin.check_in(&devices[0]).await?;
    if detail["status"] == "active"
        && detail["counts"]["incompatible"] == devices.len()
        && answer.get("update").is_none()
    {
        return Ok((deployment, true));
    }
    // Only a server that does not record inventories gets here.
    eprintln!(
        "(c) skipped: the deployment is not as planned: {} {}; check-in answer {answer}",
        detail["status"], detail["counts"]
    );
    Ok((deployment, false))
}

/// Fails if the deployment of (c) finished while it was measured.
pub async fn still_active(admin: &Admin, deployment: &str) -> Result<()> {
    let detail = admin.get(&format!("/deployments/{deployment}")).await?;
    ensure!(
        detail["status"] == "active",
        "deployment {deployment} finished during (c)"
    );
    Ok(())
}

/// Median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Lowest and highest of `values`.
pub fn spread(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}
