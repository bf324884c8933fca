//! `airlift root …`: a root made, signed, rotated and revoked from files.

use crate::support::{airlift, Scratch};
use std::path::PathBuf;

fn key(scratch: &Scratch, name: &str) -> (PathBuf, PathBuf) {
    airlift()
        .args(["key", "generate", "--name", name, "--out"])
        .arg(scratch.path("keys"))
        .assert()
        .success();
    (
        scratch.path(&format!("keys/{name}.key")),
        scratch.path(&format!("keys/{name}.pub")),
    )
}

fn show_json(file: &PathBuf, previous: Option<&PathBuf>) -> serde_json::Value {
    let mut command = airlift();
    command.args(["root", "show", "--json"]).arg(file);
    if let Some(previous) = previous {
        command.arg("--previous").arg(previous);
    }
    let output = command.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&output).expect("show --json prints JSON")
}

fn sign(file: &PathBuf, key: &PathBuf) {
    airlift()
        .args(["root", "sign"])
        .arg(file)
        .arg("--key")
        .arg(key)
        .assert()
        .success();
}

#[test]
fn a_root_is_made_signed_rotated_and_revoked_offline() {
    let scratch = Scratch::new();
    let (root_key, root_pub) = key(&scratch, "root");
    let (_, release_pub) = key(&scratch, "release");
    let (_, online_pub) = key(&scratch, "online");
    let first = scratch.path("root-1.json");
    airlift()
        .args(["root", "init", "--root-key"])
        .arg(&root_pub)
        .arg("--release-key")
        .arg(&release_pub)
        .arg("--timestamp-key")
        .arg(&online_pub)
        .arg("--out")
        .arg(&first)
        .assert()
        .success();
    let draft = show_json(&first, None);
    assert_eq!(draft["version"], 1);
    assert!(draft["self_signed"]["Err"].is_string(), "{draft}");
    sign(&first, &root_key);
    let signed = show_json(&first, None);
    assert!(signed["self_signed"]["Ok"].is_null(), "{signed}");
    assert_eq!(signed["signed_by"].as_array().map(Vec::len), Some(1));

    // A signed root is never edited: the next version goes to --out.
    let (new_root_key, new_root_pub) = key(&scratch, "root-2026");
    airlift()
        .args(["root", "add-key", "--role", "root", "--key"])
        .arg(&new_root_pub)
        .arg(&first)
        .assert()
        .failure()
        .stderr(predicates::str::contains("--out"));
    let second = scratch.path("root-2.json");
    airlift()
        .args(["root", "add-key", "--role", "root", "--key"])
        .arg(&new_root_pub)
        .arg(&first)
        .arg("--out")
        .arg(&second)
        .assert()
        .success();
    let release_id = signed["release"]["key_ids"][0]
        .as_str()
        .expect("release key id")
        .to_owned();
    let (_, release2_pub) = key(&scratch, "release-2026");
    airlift()
        .args(["root", "add-key", "--role", "release", "--key"])
        .arg(&release2_pub)
        .arg(&second)
        .assert()
        .success();
    airlift()
        .args([
            "root",
            "revoke",
            "--role",
            "release",
            "--key-id",
            &release_id,
        ])
        .arg(&second)
        .args(["--security-version-reset", "4"])
        .assert()
        .success();
    sign(&second, &new_root_key);
    let half = show_json(&second, Some(&first));
    assert!(half["follows_previous"]["Err"].is_string(), "{half}");
    sign(&second, &root_key);
    let rotated = show_json(&second, Some(&first));
    assert_eq!(rotated["version"], 2);
    assert!(rotated["follows_previous"]["Ok"].is_null(), "{rotated}");
    assert_eq!(rotated["security_version_reset"], 4);
    assert!(!rotated["release"]["key_ids"]
        .as_array()
        .expect("ids")
        .contains(&serde_json::Value::from(release_id.clone())));

    airlift()
        .args(["root", "show"])
        .arg(&second)
        .arg("--previous")
        .arg(&first)
        .assert()
        .success()
        .stdout(predicates::str::contains("follows root version 1: yes"));
    airlift()
        .args([
            "root",
            "revoke",
            "--role",
            "release",
            "--key-id",
            &release_id,
        ])
        .arg(&second)
        .arg("--out")
        .arg(scratch.path("root-3.json"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("not in the release role"));
}
