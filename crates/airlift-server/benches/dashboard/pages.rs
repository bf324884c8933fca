//! Page timings: each kind of page requested `samples` times, one request
//! at a time, by one signed-in viewer, cycling through the kind's URLs.

use crate::client::Viewer;
use crate::rng::Rng;
use crate::seed::Fleet;
use airlift_protocol::state::{DeploymentStatus, DeviceStatus};
use airlift_store::SharedStore;
use anyhow::{Context, Result};
use std::time::Duration;

/// The pages a goal covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Overview,
    DeviceList,
    DeviceDetail,
    DeploymentDetail,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Overview => "overview",
            Group::DeviceList => "device list (every filter, sort and deep page)",
            Group::DeviceDetail => "device detail",
            Group::DeploymentDetail => "deployment detail",
        }
    }
}

/// One kind of page and the URLs it cycles through.
pub struct Kind {
    pub group: Group,
    pub name: String,
    urls: Vec<String>,
    /// Whether a change precedes each request: the overview is read once
    /// for every viewer and kept until the store changes (read again in
    /// the background while watched), so back to back requests would time
    /// the kept copy, not what a viewer of a changing fleet gets.
    after_change: bool,
}

/// A kind's timings.
pub struct Timed {
    pub group: Group,
    pub name: String,
    pub times: Vec<Duration>,
    pub bytes: usize,
}

fn kind(group: Group, name: &str, urls: Vec<String>) -> Kind {
    Kind {
        group,
        name: name.to_owned(),
        urls,
        after_change: false,
    }
}

/// Every kind of page the goals name, with URLs drawn from `fleet`.
pub fn kinds(fleet: &Fleet) -> Vec<Kind> {
    let mut kinds = list_kinds(fleet);
    kinds.extend(detail_kinds(fleet));
    kinds
}

/// The overview and the device list, filtered, sorted and paged.
fn list_kinds(fleet: &Fleet) -> Vec<Kind> {
    let list = |query: &str| format!("/ui/devices?{query}");
    let mut kinds = vec![
        kind(
            Group::Overview,
            "overview, kept (no change since the last request)",
            vec!["/ui/".into()],
        ),
        Kind {
            after_change: true,
            ..kind(
                Group::Overview,
                "overview, after a change (300 ms before each request)",
                vec!["/ui/".into()],
            )
        },
        kind(
            Group::DeviceList,
            "devices, no filter",
            vec!["/ui/devices".into()],
        ),
    ];
    for (name, query) in [
        ("status pending", "status=pending"),
        ("status accepted", "status=accepted"),
        ("status rejected", "status=rejected"),
        ("connectivity offline", "status=offline"),
        ("connectivity online", "status=online"),
        ("type (5 % of the fleet)", "device_type=kiosk"),
        ("type (50 %)", "device_type=gateway-a"),
        ("tag (8 %)", "tag=canary"),
        ("tag (5 %), page 20", "tag=batch-7&page=20"),
        ("attribute", "attributes=region%3Deu-west"),
        ("two attributes", "attributes=region%3Deu-west%2Cmodem%3D5g"),
        ("installed version (5 %)", "installed=os%3D2.8.1"),
        ("search: serial prefix", "search=SN-0001"),
        ("search: MAC fragment", "search=00%3A01%3A2"),
        ("search: no match", "search=no-such-device"),
        ("page 1 000", "page=1000"),
    ] {
        kinds.push(kind(
            Group::DeviceList,
            &format!("devices, {name}"),
            vec![list(query)],
        ));
    }
    let last = (fleet.devices.len() as u64).div_ceil(50);
    kinds.push(kind(
        Group::DeviceList,
        "devices, last page",
        vec![list(&format!("page={last}"))],
    ));
    for sort in [
        "created_at",
        "identity",
        "device_type",
        "status",
        "last_check_in",
    ] {
        kinds.push(kind(
            Group::DeviceList,
            &format!("devices, sort {sort} (both ways, page 1 and 500)"),
            vec![
                list(&format!("sort={sort}")),
                list(&format!("sort=-{sort}")),
                list(&format!("sort={sort}&page=500")),
                list(&format!("sort=-{sort}&page=500")),
            ],
        ));
    }
    let largest_open = fleet.deployments.iter().find(|(_, _, status)| {
        matches!(status, DeploymentStatus::Active | DeploymentStatus::Paused)
    });
    if let Some((id, _, _)) = largest_open {
        for state in ["failure", "downloading", "success"] {
            kinds.push(kind(
                Group::DeviceList,
                &format!("devices, in the largest open deployment, update {state}"),
                vec![list(&format!("deployment={id}&update_state={state}"))],
            ));
        }
    }
    kinds
}

/// Device and deployment details.
fn detail_kinds(fleet: &Fleet) -> Vec<Kind> {
    let mut kinds = Vec::new();
    let mut rng = Rng::new(99);
    let accepted: Vec<_> = fleet
        .devices
        .iter()
        .filter(|(_, status)| *status == DeviceStatus::Accepted)
        .collect();
    let devices = (0..200)
        .map(|_| {
            format!(
                "/ui/devices/{}",
                accepted[rng.below(accepted.len() as u64) as usize].0
            )
        })
        .collect();
    kinds.push(kind(
        Group::DeviceDetail,
        "device detail, random accepted devices",
        devices,
    ));
    let largest: Vec<_> = fleet.deployments.iter().take(5).collect();
    kinds.push(kind(
        Group::DeploymentDetail,
        "deployment detail, the 5 largest",
        largest
            .iter()
            .map(|(id, _, _)| format!("/ui/deployments/{id}"))
            .collect(),
    ));
    kinds.push(kind(
        Group::DeploymentDetail,
        "deployment detail, the 5 largest, failed devices, page 2",
        largest
            .iter()
            .map(|(id, _, _)| format!("/ui/deployments/{id}?state=failed&page=2"))
            .collect(),
    ));
    kinds
}

/// Requests each kind `samples` times (after one untimed request per URL,
/// so that the first sample does not pay for a cold connection).
pub async fn time_all(
    viewer: &Viewer,
    store: &SharedStore,
    fleet: &Fleet,
    kinds: Vec<Kind>,
    samples: usize,
) -> Result<Vec<Timed>> {
    let mut timed = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let mut bytes = 0;
        for url in &kind.urls {
            bytes = bytes.max(viewer.time(url).await?.1);
        }
        let mut times = Vec::with_capacity(samples);
        for sample in 0..samples {
            if kind.after_change {
                change(store, fleet, sample).await?;
            }
            let (elapsed, _) = viewer.time(&kind.urls[sample % kind.urls.len()]).await?;
            times.push(elapsed);
        }
        eprintln!(
            "  {}: p50 {:.1} ms",
            kind.name,
            crate::report::percentile(&times, 50.0).as_secs_f64() * 1e3
        );
        timed.push(Timed {
            group: kind.group,
            name: kind.name,
            times,
            bytes,
        });
    }
    Ok(timed)
}

/// A change any instance hears through the store's feed (a device asked to
/// check in), and time for the feed to carry it and for the overview's
/// 250 ms spacing between readings to pass.
async fn change(store: &SharedStore, fleet: &Fleet, sample: usize) -> Result<()> {
    let (device, _) = fleet.devices[sample % fleet.devices.len()];
    store
        .request_check_in(device)
        .await
        .context("asking a device to check in")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// The overview's reading itself — the store's aggregates, run together as
/// the server runs them — `samples` times: what a viewer waits for at
/// worst (the first after a quiet minute, or while a refresh runs), and
/// what each background refresh costs the database.
pub async fn time_overview_reading(store: &SharedStore, samples: usize) -> Result<Timed> {
    use chrono::{TimeDelta, Utc};
    let mut times = Vec::with_capacity(samples);
    for _ in 0..=samples {
        let now = Utc::now();
        let started = std::time::Instant::now();
        tokio::try_join!(
            // The server's offline cut-off: three 60 s poll intervals.
            store.device_counts(now - TimeDelta::minutes(3)),
            store.installed_versions(6, 5),
            store.open_deployments(),
            store.open_deployment_counts(),
            store.recent_failures(now - TimeDelta::hours(24), 10),
            store.installs_per_day(now - TimeDelta::days(29)),
            store.check_ins_per_minute(now - TimeDelta::minutes(59)),
        )
        .context("reading the overview's aggregates")?;
        times.push(started.elapsed());
    }
    // The first reading warms the connections: not a sample.
    times.remove(0);
    eprintln!(
        "  overview reading (the store's aggregates): p50 {:.1} ms",
        crate::report::percentile(&times, 50.0).as_secs_f64() * 1e3
    );
    Ok(Timed {
        group: Group::Overview,
        name: "overview, read afresh (the store's aggregates: a refresh, or a viewer after a \
               quiet minute)"
            .into(),
        times,
        bytes: 0,
    })
}
