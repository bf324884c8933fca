//! `airlift demo` runs to its end: a staged rollout reaches the whole
//! fleet, and the broken release stops at its canaries, which the server
//! rolls back to the good one.

use crate::support::airlift;

#[test]
fn the_demo_rolls_out_a_good_release_and_stops_a_broken_one() {
    demo_runs_to_its_end(&[]);
}

#[test]
fn the_demo_rolls_out_a_good_release_and_stops_a_broken_one_on_postgresql() {
    let Some(schema) = airlift_testkit::postgres::FreshSchema::create("cli_demo") else {
        eprintln!("skipped: {} is not set", airlift_testkit::postgres::URL_VAR);
        return;
    };
    demo_runs_to_its_end(&["--database-url", schema.url()]);
}

/// `airlift demo` with `args`: its output tells the whole story, and every
/// device ends on the good release.
fn demo_runs_to_its_end(args: &[&str]) {
    let server =
        std::path::Path::new(env!("CARGO_BIN_EXE_airlift")).with_file_name("airlift-server");
    assert!(
        server.exists(),
        "the demo needs {} (cargo test --workspace builds it)",
        server.display()
    );
    let started = std::time::Instant::now();
    let output = airlift()
        .arg("demo")
        .arg("--server-bin")
        .arg(&server)
        .args(args)
        .output()
        .expect("run airlift demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Its wall time is reported, not asserted (timings never decide a test).
    eprintln!("airlift demo took {:.1} s", started.elapsed().as_secs_f64());
    for expected in [
        "[5/6] a staged rollout of rootfs 2.0.0",
        "→ finished",
        "rootfs 2.0.0 reached all 200 devices",
        "→ aborted",
        "circuit breaker:",
        "the other 190 devices were never offered it",
        "the server rolls back the canaries that installed it: deployment",
        "canaries that had installed 2.1.0 back to 2.0.0",
        "none left on the broken 2.1.0",
        "airlift demo --keep",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // Without --keep the server is gone at the end: no commands to point at it.
    for unexpected in [
        "Look around",
        "AIRLIFT_TOKEN=",
        "deployment list",
        "/metrics",
    ] {
        assert!(
            !stdout.contains(unexpected),
            "{unexpected:?} printed for a stopped server:\n{stdout}"
        );
    }
    // Everyone runs 2.0.0: the healthy canaries were rolled back.
    let on_good: u64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("2.0.0"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(on_good, 200, "{stdout}");
}
