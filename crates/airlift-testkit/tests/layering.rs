//! The workspace keeps the layering ARCHITECTURE.md draws: each crate may
//! depend (for its library and binaries, not its tests) only on the Airlift
//! crates listed for it here. A new crate, or a new arrow, fails this test
//! until ARCHITECTURE.md and this table say why.

use std::collections::{BTreeMap, BTreeSet};

/// Which Airlift crates each crate may use in its library and binaries.
const ALLOWED: &[(&str, &[&str])] = &[
    ("airlift-package", &[]),
    ("airlift-protocol", &[]),
    // Trust roots and timestamps: pure, over the package crate's keys.
    ("airlift-trust", &["airlift-package"]),
    ("airlift-store", &["airlift-protocol"]),
    (
        "airlift-server",
        &[
            "airlift-package",
            "airlift-protocol",
            "airlift-store",
            "airlift-trust",
        ],
    ),
    (
        "airlift-agent",
        &["airlift-package", "airlift-protocol", "airlift-trust"],
    ),
    // The simulator is a test tool: its flaky network and `airlift demo`'s
    // server process are the test kit's (see ARCHITECTURE.md).
    (
        "airlift-sim",
        &[
            "airlift-agent",
            "airlift-package",
            "airlift-protocol",
            "airlift-testkit",
        ],
    ),
    // The operator's CLI; `airlift demo` runs a simulated fleet, so the
    // CLI reaches the agent through airlift-sim (see ARCHITECTURE.md).
    (
        "airlift-cli",
        &[
            "airlift-package",
            "airlift-protocol",
            "airlift-sim",
            "airlift-trust",
        ],
    ),
    // The virtual-machine device (image builder, QEMU runner, power-cut
    // lab): a test tool like the simulator, using the test kit's server
    // process and packages; nothing depends on it (see ARCHITECTURE.md).
    (
        "airlift-vm",
        &["airlift-package", "airlift-protocol", "airlift-testkit"],
    ),
    // Test support may use the two leaves (signed packages, the device
    // API's types) and nothing above them, so that every crate's tests may
    // use it.
    ("airlift-testkit", &["airlift-package", "airlift-protocol"]),
];

/// Crates no other crate's library may use: tools. (The test kit is one
/// too, but for the simulator, which the table above allows alone.)
const NEVER_BELOW: &[&str] = &["airlift-cli", "airlift-vm"];

fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// Each workspace crate's Airlift dependencies of kind `normal` (and build).
fn arrows(metadata: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
    let packages = metadata["packages"].as_array().expect("packages");
    packages
        .iter()
        .map(|package| {
            let name = package["name"].as_str().expect("name").to_owned();
            let uses = package["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null() || d["kind"] == "build")
                .filter_map(|d| d["name"].as_str())
                .filter(|d| d.starts_with("airlift-"))
                .map(str::to_owned)
                .collect();
            (name, uses)
        })
        .collect()
}

fn violations(arrows: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (name, uses) in arrows {
        let Some(may) = allowed.get(name.as_str()) else {
            wrong.push(format!(
                "{name} is not in the layering table: add it to ARCHITECTURE.md and tests/layering.rs"
            ));
            continue;
        };
        for used in uses {
            if !may.contains(&used.as_str()) {
                wrong.push(format!("{name} must not depend on {used}"));
            }
            if NEVER_BELOW.contains(&used.as_str()) {
                wrong.push(format!(
                    "{name} depends on {used}, which is a tool, not a library"
                ));
            }
        }
    }
    wrong
}

#[test]
fn crates_depend_only_along_the_documented_layers() {
    let wrong = violations(&arrows(&metadata()));
    assert!(
        wrong.is_empty(),
        "layering broken:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn the_check_catches_a_forbidden_arrow_and_an_unknown_crate() {
    let mut arrows = BTreeMap::new();
    arrows.insert(
        "airlift-agent".to_owned(),
        BTreeSet::from(["airlift-server".to_owned(), "airlift-protocol".to_owned()]),
    );
    arrows.insert("airlift-new".to_owned(), BTreeSet::new());
    arrows.insert(
        "airlift-testkit".to_owned(),
        BTreeSet::from(["airlift-package".to_owned(), "airlift-store".to_owned()]),
    );
    let wrong = violations(&arrows);
    assert_eq!(
        wrong,
        vec![
            "airlift-agent must not depend on airlift-server".to_owned(),
            "airlift-new is not in the layering table: add it to ARCHITECTURE.md and tests/layering.rs".to_owned(),
            "airlift-testkit must not depend on airlift-store".to_owned(),
        ]
    );
}
