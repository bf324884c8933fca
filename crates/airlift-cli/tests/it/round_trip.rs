//! build → inspect → verify, on a 64 MiB image in each encoding and on a
//! package with several payloads.

use crate::support::{airlift, build, json_of, payload, verify, Scratch, MIB};
use serde_json::{json, Value};
use std::fs;

const IMAGE_LEN: usize = 64 * MIB;

fn stdout_of(command: &mut assert_cmd::Command) -> String {
    let output = command.assert().success().get_output().stdout.clone();
    String::from_utf8(output).expect("UTF-8")
}

fn round_trip(compress: &str, encrypt: bool) {
    let scratch = Scratch::new();
    let key = scratch.signing_key("release");
    let age = encrypt.then(|| scratch.age_keys("fleet"));
    let image = scratch.random_file("rootfs.img", IMAGE_LEN, 7);
    let out = scratch.path("rootfs.airlift");

    let mut command = build(&key, &out);
    payload(&mut command, "image:rootfs", &image);
    command.args(["--compress", compress, "--json"]);
    if let Some(age) = &age {
        command.arg("--encrypt-to").arg(&age.recipient);
    }
    let summary = json_of(&mut command);
    assert_eq!(
        summary["size"],
        json!(fs::metadata(&out).expect("package").len())
    );
    assert!(scratch.leftovers().is_empty(), "{:?}", scratch.leftovers());
    let entry = &summary["manifest"]["payloads"][0];
    assert_eq!(entry["type"], "image");
    assert_eq!(entry["target"], "rootfs");
    assert_eq!(entry["compression"], compress);
    assert_eq!(entry["encryption"], if encrypt { "age" } else { "none" });
    assert_eq!(entry["installed"]["size"], json!(IMAGE_LEN));
    if compress == "none" && !encrypt {
        assert_eq!(entry["stored"], entry["installed"]);
    }

    let text = stdout_of(airlift().args(["package", "inspect"]).arg(&out));
    for needle in ["rootfs 1.2.0", "image rootfs", "NOT VERIFIED", "rpi4"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let inspection = json_of(airlift().args(["package", "inspect", "--json"]).arg(&out));
    assert_eq!(inspection["verified"], false);
    assert_eq!(inspection["manifest"], summary["manifest"]);
    assert_eq!(inspection["signatures"], summary["signed_by"]);

    let report = json_of(verify(&out, &[&key.public]).arg("--json"));
    assert_eq!(report["verified"], true);
    assert_eq!(report["package"]["signed_by"], summary["signed_by"]);
    let result = &report["package"]["payloads"][0];
    assert_eq!(result["stored_digest"], "verified");
    let text = stdout_of(&mut verify(&out, &[&key.public]));
    if let Some(age) = &age {
        assert_eq!(result["installed_digest"], "not_checked");
        assert!(text.contains("installed digest NOT checked"), "{text}");

        let report = json_of(
            verify(&out, &[&key.public])
                .arg("--identity")
                .arg(&age.identity)
                .arg("--json"),
        );
        assert_eq!(
            report["package"]["payloads"][0]["installed_digest"],
            "verified"
        );
        let text = stdout_of(
            verify(&out, &[&key.public])
                .arg("--identity")
                .arg(&age.identity),
        );
        assert!(text.contains("installed size and digest ok"), "{text}");
    } else {
        assert_eq!(result["installed_digest"], "verified");
        assert!(text.contains("installed size and digest ok"), "{text}");
    }
}

#[test]
fn round_trip_64_mib_uncompressed() {
    round_trip("none", false);
}

#[test]
fn round_trip_64_mib_zstd() {
    round_trip("zstd", false);
}

#[test]
fn round_trip_64_mib_encrypted() {
    round_trip("none", true);
}

#[test]
fn round_trip_64_mib_zstd_and_encrypted() {
    round_trip("zstd", true);
}

#[test]
fn several_payloads_keep_their_order_types_and_targets() {
    let scratch = Scratch::new();
    let key = scratch.signing_key("release");
    let image = scratch.random_file("rootfs.img", 300 * 1024, 1);
    let config = scratch.text_file("config.toml", "answer = 42\n", 100);
    let compose = scratch.text_file("compose.yaml", "services: {}\n", 10);
    let out = scratch.path("multi.airlift");

    let mut command = build(&key, &out);
    payload(&mut command, "image:rootfs", &image);
    payload(&mut command, "file:/etc/app/config.toml", &config);
    payload(&mut command, "module:foo:stack:v2", &compose);
    command.args(["--device-type", "rpi5", "--hardware-revision", "1.2"]);
    command.args([
        "--requires",
        "bootloader=>=2.0",
        "--provides",
        "kernel=6.6.30",
    ]);
    command.args(["--security-version", "3", "--description", "three payloads"]);
    command.assert().success();

    let inspection = json_of(airlift().args(["package", "inspect", "--json"]).arg(&out));
    let manifest = &inspection["manifest"];
    assert_eq!(manifest["name"], "rootfs");
    assert_eq!(manifest["version"], "1.2.0");
    assert_eq!(manifest["security_version"], 3);
    assert_eq!(manifest["description"], "three payloads");
    assert_eq!(
        manifest["compatible"]["device_types"],
        json!(["rpi4", "rpi5"])
    );
    assert_eq!(manifest["compatible"]["hardware_revisions"], json!(["1.2"]));
    assert_eq!(
        manifest["compatible"]["requires"],
        json!({"bootloader": ">=2.0"})
    );
    assert_eq!(
        manifest["provides"],
        json!({"kernel": "6.6.30", "rootfs": "1.2.0"})
    );
    let kinds: Vec<(Value, Value)> = manifest["payloads"]
        .as_array()
        .expect("payloads")
        .iter()
        .map(|p| (p["type"].clone(), p["target"].clone()))
        .collect();
    let expected = [
        ("image", "rootfs"),
        ("file", "/etc/app/config.toml"),
        ("module:foo", "stack:v2"),
    ]
    .map(|(kind, target)| (json!(kind), json!(target)));
    assert_eq!(kinds, expected);
    assert_eq!(manifest["payloads"][1]["installed"]["size"], 1200);

    let report = json_of(verify(&out, &[&key.public]).arg("--json"));
    assert_eq!(report["verified"], true);
    let payloads = report["package"]["payloads"].as_array().expect("payloads");
    assert_eq!(payloads.len(), 3);
    for (index, result) in payloads.iter().enumerate() {
        assert_eq!(result["index"], index);
        assert_eq!(result["type"], expected[index].0);
        assert_eq!(result["installed_digest"], "verified");
    }
}

#[test]
fn two_signers_meet_a_threshold_of_two() {
    let scratch = Scratch::new();
    let (a, b) = (scratch.signing_key("a"), scratch.signing_key("b"));
    let out = scratch.path("two.airlift");
    let mut command = build(&a, &out);
    payload(
        &mut command,
        "image:rootfs",
        &scratch.random_file("img", 4096, 2),
    );
    command.arg("--key").arg(&b.private).assert().success();

    let report =
        json_of(verify(&out, &[&a.public, &b.public]).args(["--threshold", "2", "--json"]));
    assert_eq!(report["verified"], true);
    assert_eq!(report["package"]["threshold"], 2);
    assert_eq!(
        report["package"]["signed_by"].as_array().map(Vec::len),
        Some(2)
    );
}
