//! `airlift deployment create|list|show|cancel|install|end|advance|pause|resume|abort|retry|reset`:
//! roll a package out to devices — at once or in phases — follow it, and
//! repair it (`show` and how a deployment is printed:
//! [`super::deployment_show`]; `show --watch`: [`super::watch`]; `retry`,
//! `reset`: [`super::repair`]).

use super::deployment_show::{counts, print_deployment, show, target};
use super::{parse_deployment_id, parse_device_id, parse_package_id, parse_pair, unique_map};
use crate::client::Client;
use crate::output::{self, Table};
use airlift_protocol::install::{InstallPolicy, InstallWindow};
use airlift_protocol::management::{CreateDeploymentRequest, Deployment, Target};
use airlift_protocol::state::{DeploymentStatus, UpdateState};
use airlift_protocol::{DeploymentId, DeviceId, PackageId};
use anyhow::{Context, Result};
use clap::{ArgGroup, Args, Subcommand};

/// `airlift deployment …`
#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Roll a package out to devices.
    #[command(
        long_about = "Roll a package out to devices.\n\n\
            Targets either the accepted devices named with --device, or every accepted device \
            carrying --tag, or every accepted device whose inventory matches all --attribute \
            values (device_type=T matches the reported device type). A tag or attribute \
            deployment is dynamic: it also takes in devices that match later (counted in its \
            phases' shares) and stays active — it does not finish when the devices it has are \
            done — until `airlift deployment end` or its --ends-at time; --static makes it \
            reach only the devices matching now and finish once they are done. A device that \
            joins the targets of several dynamic deployments gets them oldest first: end the \
            one a newer release replaces. Devices the \
            package does not fit are marked incompatible and never offered it. Needs an \
            operator or admin token.",
        after_help = "Examples:
  airlift deployment create --name 'rootfs 1.2.0 canary' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --tag canary
  airlift deployment create --name 'rootfs 1.2.0 eu' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --attribute device_type=rpi4 --attribute region=eu-west
  airlift deployment create --name 'hotfix bench' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --device 0190d5e6-0a1b-7c2d-8e3f-405162738495

  # Staged: canaries, then 10 %, 50 % and everyone, an hour of soak between;
  # more than 5 % failures aborts it.
  airlift deployment create --name 'rootfs 1.3.0' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --attribute device_type=rpi4 \\
      --phase tag=canary,soak=1h --phase percent=10,soak=1h --phase percent=50,soak=1h \\
      --phase percent=100 --failure-threshold 5% --on-failure abort

  # The same, but a tripped breaker also brings the devices that installed
  # it back to the release each ran before (or to --rollback-package ID):
  airlift deployment create --name 'rootfs 1.3.0' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --attribute device_type=rpi4 \\
      --phase tag=canary,soak=1h --phase percent=100 --failure-threshold 5% \\
      --on-failure rollback

  # Download now, install only between 02:00 and 04:00 UTC:
  airlift deployment create --name 'rootfs 1.3.1' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --tag fleet --install-window 02:00-04:00

  # Download now, install when released with `airlift deployment install`:
  airlift deployment create --name 'rootfs 1.3.1' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --tag fleet --download-only

  # Devices tagged field later get it too, until the end of March (UTC):
  airlift deployment create --name 'rootfs 1.4.0 field' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --tag field --ends-at 2027-03-31T23:59:59Z

  # Soft: each device's defer_command may put the install off up to 3
  # times, and not past the end of the year; then it installs anyway:
  airlift deployment create --name 'rootfs 1.4.1' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --tag kiosk \\
      --soft --max-deferrals 3 --deadline 2026-12-31T00:00:00Z

  # Soft for a week from now, however often the devices defer:
  airlift deployment create --name 'rootfs 1.4.1' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --tag kiosk --soft --deadline 7d

  # Lab devices still on a rootfs older than 2.4.0, and any that join later:
  airlift deployment create --name 'rootfs 2.4.0 lab' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 \\
      --where 'tag:lab AND installed.rootfs < 2.4.0'

  # Gateways in any eu- region that are not on the bench (docs/targets.md):
  airlift deployment create --name 'rootfs 2.4.0 eu' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 \\
      --where 'device_type = gateway AND attr.region = eu-* AND NOT tag:bench'

  # Only the devices tagged lab now; finishes once they are done:
  airlift deployment create --name 'rootfs 1.4.0 lab' \\
      --package 0190d5e4-7c1b-7a4e-9f3a-2b8c1d0e4f56 --tag lab --static"
    )]
    // Boxed: its many options would make every other command as large.
    Create(Box<CreateArgs>),

    /// List deployments, newest first, with device counts per state, a page at a time.
    #[command(after_help = "Examples:
  airlift deployment list
  airlift deployment list --page 2 --per-page 20
  airlift deployment list --json | jq -r '.items[] | select(.status == \"active\") | .id'")]
    List(ListArgs),

    /// Show a deployment: counts per state, and its devices' states a page at a time.
    #[command(after_help = "Examples:
  airlift deployment show 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b
  airlift deployment show 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b --state failure
  airlift deployment show 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b --page 2 --per-page 500
  airlift deployment show 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b --json | jq .counts
  airlift deployment show 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b --json | jq -r '.devices.items[].device_id'
  # Redraw its phase bars until it ends, then print how it ended:
  airlift deployment show 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b --watch")]
    Show(ShowArgs),

    /// Cancel an active deployment.
    #[command(
        long_about = "Cancel an active deployment: devices not yet done are not offered it any \
            more, and a device mid-download is told to stop. Devices that already switched \
            keep the new version. Needs an operator or admin token.",
        after_help = "Examples:
  airlift deployment cancel 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b"
    )]
    Cancel(ControlArgs),

    /// Release a download-only deployment: its devices install now.
    #[command(
        long_about = "Release a download-only deployment: its devices install what they have \
            downloaded at their next check-in (connected devices are told to check in at once), \
            inside the deployment's install window if it has one; devices still downloading \
            install at their first check-in after they finish. Needs an operator or admin token.",
        after_help = "Examples:
  airlift deployment install 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b"
    )]
    Install(ControlArgs),

    /// End a dynamic deployment: it takes in no more devices.
    #[command(
        long_about = "End a dynamic deployment (one to a tag or attributes): devices that join \
            its target from now on are not taken in, devices already in it go on, and it \
            finishes once they are done (at once if they are). Cancel it instead to stop \
            offering it to the devices it has. Needs an operator or admin token.",
        after_help = "Examples:
  airlift deployment end 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b"
    )]
    End(ControlArgs),

    /// Start a phased rollout's next phase now.
    #[command(
        long_about = "Start a phased rollout's next phase now, whatever the current one's \
            success threshold and soak say (the way on with --manual rollouts). Needs an \
            operator or admin token.",
        after_help = "Examples:
  airlift deployment advance 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b"
    )]
    Advance(ControlArgs),

    /// Hold a phased rollout: no device is admitted until it resumes.
    #[command(after_help = "Examples:
  airlift deployment pause 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b")]
    Pause(ControlArgs),

    /// Go on with a paused rollout; the failures seen so far no longer count.
    #[command(
        long_about = "Go on with a paused rollout (paused by hand, by its circuit breaker or \
            by a missed deadline). The failures seen so far are acknowledged: the breaker \
            trips again only on new ones.",
        after_help = "Examples:
  airlift deployment resume 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b"
    )]
    Resume(ControlArgs),

    /// End a phased rollout: devices not yet done are never offered it.
    #[command(after_help = "Examples:
  airlift deployment abort 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b")]
    Abort(ControlArgs),

    /// Offer a deployment again to its failed devices.
    #[command(
        long_about = super::repair::RETRY_ABOUT,
        after_help = "Examples:
  airlift deployment retry 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b
  airlift deployment retry 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b --limit 5 --json | jq '.retried | length'"
    )]
    Retry(super::repair::RetryArgs),

    /// Reset a device stuck in one state of this deployment, with a reason.
    #[command(
        long_about = super::repair::RESET_ABOUT,
        after_help = "Examples:
  airlift deployment show 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b --state rebooting
  airlift deployment reset 0190d5f0-1c2d-7e3f-8a4b-5c6d7e8f9a0b \\
      --device 0190d5e6-0a1b-7c2d-8e3f-405162738495 --reason 'power supply replaced'"
    )]
    Reset(super::repair::DeploymentResetArgs),
}

/// Arguments of `airlift deployment create`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .args(["devices", "tag", "attributes", "where_expression"])
))]
pub struct CreateArgs {
    /// A name for people, e.g. 'rootfs 1.2.0 canary'.
    #[arg(long)]
    pub name: String,
    /// The id of the package to install (`airlift package list` shows them).
    #[arg(long = "package", value_name = "PACKAGE_ID", value_parser = parse_package_id)]
    pub package: PackageId,
    /// Target this accepted device; repeatable.
    #[arg(long = "device", value_name = "DEVICE_ID", value_parser = parse_device_id)]
    pub devices: Vec<DeviceId>,
    /// Target every accepted device carrying this tag, now and later.
    #[arg(long)]
    pub tag: Option<String>,
    /// Target accepted devices whose inventory attribute KEY is VALUE, now and later; repeatable, all must match.
    #[arg(long = "attribute", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub attributes: Vec<(String, String)>,
    /// Target accepted devices matching this expression, now and later
    /// (docs/targets.md): AND, OR, NOT and parentheses over tag:TAG,
    /// attr.KEY = VALUE, device_type = TYPE, status = STATUS and
    /// installed.NAME < VERSION (< <= = != >= >); `*` and `?` are
    /// wildcards in values.
    #[arg(long = "where", value_name = "EXPRESSION", value_parser = super::parse_boxed_target_expr)]
    pub where_expression: Option<Box<airlift_protocol::target_expr::TargetExpr>>,
    /// Roll out in phases, in order: tag=NAME or devices=ID+ID (canaries),
    /// or percent=N (a cumulative share of the target; the last must be
    /// 100), each with optional ,soak=DURATION ,success=PERCENT
    /// ,deadline=DURATION ,name=TEXT. Without it, every device at once.
    #[arg(long = "phase", value_name = "PHASE", value_parser = super::strategy::parse_phase)]
    pub phases: Vec<airlift_protocol::strategy::Phase>,
    /// Trip the circuit breaker when more than this share (10%) or count
    /// (3) of the admitted devices failed, rolled back or timed out.
    #[arg(long, value_name = "SHARE_OR_COUNT", value_parser = super::strategy::parse_threshold)]
    pub failure_threshold: Option<airlift_protocol::strategy::FailureThreshold>,
    /// What the breaker does.
    #[arg(long, value_enum, default_value = "pause")]
    pub on_failure: OnFailure,
    /// With --on-failure rollback: the package to roll back to [default:
    /// the release each device last committed before this deployment].
    #[arg(long, value_name = "PACKAGE_ID", value_parser = parse_package_id)]
    pub rollback_package: Option<PackageId>,
    /// Wait for `airlift deployment advance` between phases.
    #[arg(long)]
    pub manual: bool,
    /// A device stuck this long in one state is timed out (a failure) [default: 6h].
    #[arg(long, value_name = "DURATION", value_parser = super::strategy::duration)]
    pub device_timeout: Option<std::time::Duration>,
    /// Install only inside this daily window, UTC (HH:MM-HH:MM; it may run
    /// over midnight, e.g. 22:00-04:00). Devices download at any time.
    #[arg(long, value_name = "HH:MM-HH:MM")]
    pub install_window: Option<InstallWindow>,
    /// Download now, install only once released with `airlift deployment install`.
    #[arg(long)]
    pub download_only: bool,
    /// Soft deployment: --soft, --max-deferrals, --deadline.
    #[command(flatten)]
    pub soft: super::soft::SoftArgs,
    /// Reach only the devices the tag or attributes match now, and finish
    /// once they are done (by default such a deployment is dynamic: it also
    /// takes in devices that match later, until it is ended).
    #[arg(long = "static", conflicts_with_all = ["devices", "ends_at"])]
    pub fixed: bool,
    /// When a dynamic deployment stops taking in devices (RFC 3339, e.g.
    /// 2027-03-31T23:59:59Z); it then finishes once its devices are done
    /// [default: when ended with `airlift deployment end`].
    #[arg(long, value_name = "TIME", conflicts_with = "devices", value_parser = parse_time)]
    pub ends_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Print the deployment as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A time in RFC 3339 (`2027-03-31T23:59:59Z`, or with an offset).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{e}; write a time in RFC 3339, e.g. 2027-03-31T23:59:59Z"))
}

/// What the circuit breaker does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OnFailure {
    /// Hold the rollout for an operator.
    Pause,
    /// End it.
    Abort,
    /// End it and roll back the devices that installed it, through the
    /// same phases (a second trip during the rollback pauses it).
    Rollback,
}

/// Arguments of `airlift deployment list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Which page, from 1.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub page: u32,
    /// Deployments per page, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub per_page: u32,
    /// Print the page ({items, total, page, per_page}) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `airlift deployment show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The deployment's id (`airlift deployment list` shows them).
    #[arg(value_parser = parse_deployment_id)]
    pub id: DeploymentId,
    /// Only devices in this state (pending, downloading, success, failure, …).
    #[arg(long, value_name = "STATE")]
    pub state: Option<UpdateState>,
    /// Which page of devices, from 1.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub page: u32,
    /// Devices per page, 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub per_page: u32,
    /// Print the deployment as JSON, its devices as a page
    /// ({items, total, page, per_page}) under `devices`.
    #[arg(long)]
    pub json: bool,
    /// Redraw its progress (a bar per phase) until it finishes, is aborted
    /// or is cancelled, then show it.
    #[arg(long)]
    pub watch: bool,
    /// How often --watch looks.
    #[arg(long, value_name = "DURATION", default_value = "2s", requires = "watch",
          value_parser = super::strategy::duration)]
    pub interval: std::time::Duration,
}

/// Arguments of `airlift deployment cancel|advance|pause|resume|abort`.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The deployment's id.
    #[arg(value_parser = parse_deployment_id)]
    pub id: DeploymentId,
    /// Print the deployment, as it is afterwards, as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs one `airlift deployment` subcommand.
pub async fn run(command: &DeploymentCommand, client: &Client) -> Result<()> {
    match command {
        DeploymentCommand::Create(args) => create(args, client).await,
        DeploymentCommand::List(args) => list(args, client).await,
        DeploymentCommand::Show(args) => show(args, client).await,
        DeploymentCommand::Cancel(args) => {
            control(args, ("cancel", "cancelling", "cancelled"), client).await
        }
        DeploymentCommand::Install(args) => {
            control(
                args,
                ("install", "releasing", "released the install of"),
                client,
            )
            .await
        }
        DeploymentCommand::End(args) => control(args, ("end", "ending", "ended"), client).await,
        DeploymentCommand::Advance(args) => {
            control(args, ("advance", "advancing", "advanced"), client).await
        }
        DeploymentCommand::Pause(args) => {
            control(args, ("pause", "pausing", "paused"), client).await
        }
        DeploymentCommand::Resume(args) => {
            control(args, ("resume", "resuming", "resumed"), client).await
        }
        DeploymentCommand::Abort(args) => {
            control(args, ("abort", "aborting", "aborted"), client).await
        }
        DeploymentCommand::Retry(args) => super::repair::retry(args, client).await,
        DeploymentCommand::Reset(args) => super::repair::reset_in_deployment(args, client).await,
    }
}

async fn create(args: &CreateArgs, client: &Client) -> Result<()> {
    let target = if let Some(expression) = &args.where_expression {
        Target::Expression(expression.as_ref().clone())
    } else if let Some(tag) = &args.tag {
        Target::Tag(tag.clone())
    } else if !args.attributes.is_empty() {
        Target::Attributes(unique_map(&args.attributes, "--attribute")?)
    } else {
        Target::Devices(args.devices.clone())
    };
    let on_failure = match args.on_failure {
        OnFailure::Pause => airlift_protocol::strategy::BreakerAction::Pause,
        OnFailure::Abort => airlift_protocol::strategy::BreakerAction::Abort,
        OnFailure::Rollback => airlift_protocol::strategy::BreakerAction::Rollback,
    };
    let mut strategy = super::strategy::strategy(
        &args.phases,
        args.failure_threshold,
        on_failure,
        args.manual,
        args.device_timeout,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    super::strategy::set_rollback_package(&mut strategy, args.rollback_package)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let request = CreateDeploymentRequest {
        name: args.name.clone(),
        package_id: args.package,
        target,
        strategy,
        install: InstallPolicy {
            window: args.install_window,
            download_only: args.download_only,
            soft: args
                .soft
                .policy(chrono::Utc::now())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        },
        dynamic: args.fixed.then_some(false),
        ends_at: args.ends_at,
    };
    let deployment = client
        .create_deployment(&request)
        .await
        .with_context(|| format!("creating deployment {:?}", args.name))?;
    if args.json {
        return output::print_json(&deployment);
    }
    println!("created deployment {}", deployment.id);
    print_deployment(&deployment);
    for warning in creation_warnings(&deployment) {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

async fn list(args: &ListArgs, client: &Client) -> Result<()> {
    let page = client
        .deployments_page(args.page, args.per_page)
        .await
        .context("listing deployments")?;
    if args.json {
        return output::print_json(&page);
    }
    if page.items.is_empty() {
        let none = "no deployments; create one with `airlift deployment create`";
        println!("{}", output::empty_page(&page, none, "deployments"));
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID", "NAME", "STATUS", "PACKAGE", "TARGET", "DEVICES", "CREATED",
    ]);
    for deployment in &page.items {
        table.row(vec![
            deployment.id.to_string(),
            deployment.name.clone(),
            deployment.status.to_string(),
            deployment.package_id.to_string(),
            target(&deployment.target),
            counts(&deployment.counts),
            output::time(&deployment.created_at),
        ]);
    }
    table.print();
    println!("{}", output::page_footer(&page, "deployments"));
    Ok(())
}

/// `POST /deployments/{id}/{action}`, then the deployment as it is now.
async fn control(
    args: &ControlArgs,
    (action, doing, done): (&str, &str, &str),
    client: &Client,
) -> Result<()> {
    let deployment = client
        .control_deployment(args.id, action)
        .await
        .with_context(|| format!("{doing} deployment {}", args.id))?;
    if args.json {
        return output::print_json(&deployment);
    }
    println!("{done} deployment {}", deployment.id);
    print_deployment(&deployment);
    Ok(())
}

/// What an operator should hear about a deployment just created: none of
/// its devices can take it, or it finished at once.
fn creation_warnings(deployment: &Deployment) -> Vec<String> {
    let total: u64 = deployment.counts.values().sum();
    let state = |s: UpdateState| deployment.counts.get(&s).copied().unwrap_or(0);
    let incompatible = state(UpdateState::Incompatible);
    let mut warnings = Vec::new();
    if total > 0 && incompatible == total {
        warnings.push(format!(
            "the package fits none of the {total} targeted devices (all incompatible); check its device types against `airlift device list`"
        ));
    } else if deployment.status == DeploymentStatus::Finished {
        warnings.push(format!(
            "it finished at once: of its {total} devices, {} already run the package and {incompatible} cannot take it; nothing will be installed",
            state(UpdateState::AlreadyInstalled)
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlift_protocol::management::Strategy;

    #[test]
    fn an_end_date_is_rfc_3339() {
        let at = parse_time("2027-03-31T23:59:59+02:00").expect("a time");
        assert_eq!(at.to_rfc3339(), "2027-03-31T21:59:59+00:00");
        let refused = parse_time("tomorrow").expect_err("not a time");
        assert!(refused.contains("RFC 3339"), "{refused}");
    }

    #[test]
    fn a_deployment_nothing_can_take_is_a_warning() {
        let deployment = |status, counts: &[(UpdateState, u64)]| Deployment {
            id: DeploymentId::new(),
            name: "d".into(),
            package_id: PackageId::new(),
            target: Target::Tag("t".into()),
            strategy: Strategy::All,
            install: Default::default(),
            status,
            rollout: None,
            counts: counts.iter().copied().collect(),
            created_at: chrono::Utc::now(),
            finished_at: None,
            dynamic: false,
            ends_at: None,
            joined_late: 0,
        };
        let none_fit = deployment(DeploymentStatus::Active, &[(UpdateState::Incompatible, 3)]);
        let warnings = creation_warnings(&none_fit);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("fits none of the 3"), "{warnings:?}");
        let done = deployment(
            DeploymentStatus::Finished,
            &[
                (UpdateState::AlreadyInstalled, 2),
                (UpdateState::Incompatible, 1),
            ],
        );
        let warnings = creation_warnings(&done);
        assert!(warnings[0].contains("finished at once"), "{warnings:?}");
        assert!(warnings[0].contains("2 already run"), "{warnings:?}");
        let fine = deployment(DeploymentStatus::Active, &[(UpdateState::Pending, 3)]);
        assert!(creation_warnings(&fine).is_empty());
    }
}
