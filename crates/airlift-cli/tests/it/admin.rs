//! The admin commands against a real airlift-server: login, packages,
//! roles, devices, deployments and tokens, as an operator would run them.

use crate::server::{InProcessServer, ADMIN_TOKEN};
use crate::support::{airlift, failure_of, json_of, payload, KeyPair, Scratch, MIB};
use assert_cmd::Command;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A scratch directory, a signing key, a server that trusts it, and a
/// private configuration directory for the CLI.
struct Fleet {
    scratch: Scratch,
    key: KeyPair,
    server: InProcessServer,
}

impl Fleet {
    fn new() -> Self {
        Self::with_server_flags(&[])
    }

    fn with_server_flags(flags: &[&str]) -> Self {
        let scratch = Scratch::new();
        let key = scratch.signing_key("release");
        let server = InProcessServer::start_with(&key.public, flags);
        Self {
            scratch,
            key,
            server,
        }
    }

    fn config_file(&self) -> PathBuf {
        self.scratch.path("config/cli.toml")
    }

    /// `airlift --quiet` with only this test's configuration.
    fn cli(&self) -> Command {
        let mut command = airlift();
        command
            .env("AIRLIFT_CONFIG_DIR", self.scratch.path("config"))
            .env_remove("AIRLIFT_SERVER")
            .env_remove("AIRLIFT_TOKEN")
            .env_remove("XDG_CONFIG_HOME");
        command
    }

    /// `cli()` with `--server URL --token TOKEN`.
    fn as_token(&self, token: &str) -> Command {
        let mut command = self.cli();
        command.args(["--server", &self.server.url, "--token", token]);
        command
    }

    fn login_as_admin(&self) {
        self.cli()
            .args(["server", "login", &self.server.url, "--token", ADMIN_TOKEN])
            .assert()
            .success();
    }

    /// A package signed with `key`, of about `len` incompressible bytes.
    fn package_signed_by(&self, key: &KeyPair, version: &str, len: usize) -> PathBuf {
        let image = self
            .scratch
            .random_file(&format!("rootfs-{version}.img"), len, 3);
        let out = self.scratch.path(&format!("rootfs-{version}.airlift"));
        let mut command = airlift();
        command
            .args(["package", "build", "--name", "rootfs", "--version", version])
            .args(["--device-type", "rpi4", "--key"])
            .arg(&key.private)
            .arg("--out")
            .arg(&out);
        payload(&mut command, "image:rootfs", &image);
        command.assert().success();
        out
    }

    fn package(&self, version: &str) -> PathBuf {
        self.package_signed_by(&self.key, version, 64 * 1024)
    }

    fn upload(&self, file: &Path) -> Value {
        json_of(self.cli().args(["package", "upload", "--json"]).arg(file))
    }
}

fn stdout_of(command: &mut Command) -> String {
    let output = command.assert().success().get_output().stdout.clone();
    String::from_utf8(output).expect("UTF-8")
}

/// Runs a command that clap must refuse (exit code 2) and returns its stderr.
fn usage_error_of(command: &mut Command) -> String {
    let output = command.assert().code(2).get_output().clone();
    String::from_utf8(output.stderr).expect("UTF-8")
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).expect("read file")))
}

fn str_of(value: &Value) -> String {
    value.as_str().expect("a string").to_owned()
}

#[test]
fn login_checks_the_token_and_stores_it_privately() {
    let fleet = Fleet::new();
    let url = &fleet.server.url;

    let stderr = failure_of(fleet.cli().args([
        "server",
        "login",
        url,
        "--token",
        "alt_wrong_wrong_wrong_wrong",
    ]));
    assert!(stderr.contains("refused the token"), "{stderr}");
    assert!(!stderr.contains("alt_wrong_wrong_wrong_wrong"), "{stderr}");
    assert!(
        !fleet.config_file().exists(),
        "a refused login stores nothing"
    );

    let stderr = failure_of(fleet.cli().args(["server", "login", url]));
    assert!(stderr.contains("--token"), "{stderr}");

    let stdout = stdout_of(fleet.cli().args([
        "server",
        "login",
        &format!("{url}/"),
        "--token",
        ADMIN_TOKEN,
    ]));
    assert!(stdout.contains(&format!("logged in to {url}")), "{stdout}");
    assert!(
        !stdout.contains(ADMIN_TOKEN),
        "the token is printed masked: {stdout}"
    );
    let mode = fs::metadata(fleet.config_file())
        .expect("cli.toml written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = fs::read_to_string(fleet.config_file()).expect("read cli.toml");
    assert!(text.contains(ADMIN_TOKEN) && text.contains(url), "{text}");

    let stdout = stdout_of(fleet.cli().args(["package", "list"]));
    assert!(stdout.contains("no packages"), "{stdout}");
    let stdout = stdout_of(fleet.cli().args(["server", "status"]));
    assert!(stdout.contains("the server accepts the token"), "{stdout}");
    assert!(!stdout.contains(ADMIN_TOKEN), "{stdout}");

    // The stored token is never sent to a server it was not stored for.
    let stderr =
        failure_of(
            fleet
                .cli()
                .args(["package", "list", "--server", "http://127.0.0.1:9"]),
        );
    assert!(
        stderr.contains("no token for http://127.0.0.1:9"),
        "{stderr}"
    );

    let stdout = stdout_of(fleet.cli().args(["server", "logout"]));
    assert!(stdout.contains("logged out"), "{stdout}");
    assert!(!fleet.config_file().exists());
    let stderr = failure_of(fleet.cli().args(["package", "list"]));
    assert!(stderr.contains("airlift server login"), "{stderr}");

    // Flags and the environment work without a login.
    stdout_of(fleet.as_token(ADMIN_TOKEN).args(["package", "list"]));
    stdout_of(
        fleet
            .cli()
            .env("AIRLIFT_SERVER", url)
            .env("AIRLIFT_TOKEN", ADMIN_TOKEN)
            .args(["package", "list"]),
    );
}

#[test]
fn an_unreachable_server_says_so() {
    let scratch = Scratch::new();
    let stderr = failure_of(
        airlift()
            .env("AIRLIFT_CONFIG_DIR", scratch.path("config"))
            .args(["package", "list", "--server", "http://127.0.0.1:1"])
            .args(["--token", "alt_whatever_whatever"]),
    );
    assert!(
        stderr.contains("cannot connect to the server at http://127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn packages_upload_list_show_download_and_delete() {
    let fleet = Fleet::new();
    fleet.login_as_admin();
    let file = fleet.package_signed_by(&fleet.key, "1.2.0", 3 * MIB);

    let package = fleet.upload(&file);
    let id = str_of(&package["id"]);
    assert_eq!(package["name"], "rootfs");
    assert_eq!(package["version"], "1.2.0");
    assert_eq!(package["size"], fs::metadata(&file).expect("file").len());
    assert_eq!(package["sha256"], sha256_hex(&file));
    let key_id = stdout_of(airlift().args(["key", "id"]).arg(&fleet.key.public));
    assert_eq!(package["signed_by"], serde_json::json!([key_id.trim()]));

    let stderr = failure_of(fleet.cli().args(["package", "upload"]).arg(&file));
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(stderr.contains("409"), "{stderr}");

    let stranger = fleet.scratch.signing_key("stranger");
    let untrusted = fleet.package_signed_by(&stranger, "9.9.9", 1024);
    let stderr = failure_of(fleet.cli().args(["package", "upload"]).arg(&untrusted));
    assert!(stderr.contains("package refused"), "{stderr}");

    let not_a_package = fleet.scratch.text_file("notes.txt", "hello\n", 10);
    let stderr = failure_of(fleet.cli().args(["package", "upload"]).arg(&not_a_package));
    assert!(
        stderr.contains("is not a readable Airlift package"),
        "{stderr}"
    );

    let stdout = stdout_of(fleet.cli().args(["package", "list"]));
    assert!(
        stdout.starts_with("ID ") && stdout.contains(&id) && stdout.contains("1.2.0"),
        "{stdout}"
    );
    let list = json_of(fleet.cli().args(["package", "list", "--json"]));
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["total"], 1, "the same envelope as device list: {list}");
    let stdout = stdout_of(fleet.cli().args(["package", "show", &id]));
    assert!(stdout.contains(&sha256_hex(&file)), "{stdout}");
    assert!(stdout.contains(key_id.trim()), "{stdout}");

    // Download, then resume from a partial file.
    let out = fleet.scratch.path("downloaded.airlift");
    let download = |out: &Path| {
        let mut command = fleet.cli();
        command.args(["package", "download", &id, "--out"]).arg(out);
        command
    };
    stdout_of(&mut download(&out));
    assert_eq!(fs::read(&out).expect("out"), fs::read(&file).expect("file"));
    let stdout = stdout_of(&mut download(&out));
    assert!(stdout.contains("already"), "{stdout}");

    let resumed = fleet.scratch.path("resumed.airlift");
    let sha = sha256_hex(&file);
    let part = fleet
        .scratch
        .path(&format!(".resumed.airlift.{}.part", &sha[..16]));
    let bytes = fs::read(&file).expect("file");
    let kept = bytes.len() / 3;
    fs::write(&part, &bytes[..kept]).expect("partial file");
    let stdout = stdout_of(&mut download(&resumed));
    assert!(
        stdout.contains(&format!("resumed an earlier download after {kept} bytes")),
        "{stdout}"
    );
    assert_eq!(fs::read(&resumed).expect("resumed"), bytes);
    assert!(!part.exists(), "the .part file became the output");

    // A partial file that is not a prefix of the package is caught and dropped.
    let corrupt = fleet.scratch.path("corrupt.airlift");
    let part = fleet
        .scratch
        .path(&format!(".corrupt.airlift.{}.part", &sha[..16]));
    fs::write(&part, vec![0u8; 1000]).expect("garbage partial file");
    let stderr = failure_of(&mut download(&corrupt));
    assert!(stderr.contains("SHA-256"), "{stderr}");
    assert!(!part.exists() && !corrupt.exists());
    stdout_of(&mut download(&corrupt));
    assert_eq!(fs::read(&corrupt).expect("corrupt"), bytes);

    let stderr = failure_of(&mut download(&not_a_package));
    assert!(stderr.contains("--force"), "{stderr}");

    stdout_of(fleet.cli().args(["package", "delete", &id]));
    let stderr = failure_of(fleet.cli().args(["package", "show", &id]));
    assert!(stderr.contains(&format!("no package {id}")), "{stderr}");
    let stderr = usage_error_of(fleet.cli().args(["package", "show", "rootfs"]));
    assert!(stderr.contains("airlift package list"), "{stderr}");
}

#[test]
fn a_package_above_the_servers_limit_is_refused_with_the_reason() {
    let fleet = Fleet::with_server_flags(&["--max-package-mib", "1"]);
    fleet.login_as_admin();
    let large = fleet.package_signed_by(&fleet.key, "2.0.0", 8 * MIB);
    let stderr = failure_of(fleet.cli().args(["package", "upload"]).arg(&large));
    assert!(stderr.contains("larger than"), "{stderr}");
    let small = fleet.package("2.0.1");
    fleet.upload(&small);
}

#[test]
fn roles_limit_what_a_token_may_do() {
    let fleet = Fleet::new();
    fleet.login_as_admin();
    let created = json_of(fleet.cli().args([
        "token",
        "create",
        "--name",
        "dashboard",
        "--role",
        "viewer",
        "--json",
    ]));
    let viewer = str_of(&created["secret"]);
    let viewer_id = str_of(&created["id"]);
    assert_eq!(created["role"], "viewer");

    let stdout = stdout_of(
        fleet
            .cli()
            .args(["token", "create", "--name", "ci", "--role", "operator"]),
    );
    let operator = stdout
        .split_whitespace()
        .find(|word| word.starts_with("alt_"))
        .expect("the secret is printed")
        .to_owned();
    assert!(stdout.contains("shown only now"), "{stdout}");

    let stdout = stdout_of(fleet.cli().args(["token", "list"]));
    for needle in ["dashboard", "viewer", "ci", "operator", "admin"] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    assert!(!stdout.contains(&viewer), "{stdout}");
    assert!(stdout.contains("page 1 of 1, 3 of 3 tokens"), "{stdout}");
    let page =
        json_of(
            fleet
                .cli()
                .args(["token", "list", "--page", "2", "--per-page", "2", "--json"]),
        );
    assert_eq!(
        (page["total"].as_u64(), page["page"].as_u64()),
        (Some(3), Some(2)),
        "{page}"
    );
    assert_eq!(page["items"][0]["name"], "ci", "oldest first: {page}");

    // Who made them, in the audit log.
    let stdout = stdout_of(fleet.cli().args(["audit", "list", "--action", "token."]));
    assert!(
        stdout.contains("token.create") && stdout.contains("page 1 of 1, 2 of 2 entries"),
        "{stdout}"
    );
    let audit = json_of(fleet.cli().args([
        "audit",
        "list",
        "--action",
        "token.create",
        "--per-page",
        "1",
        "--json",
    ]));
    assert_eq!(audit["total"], 2, "{audit}");
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");
    let stdout = stdout_of(fleet.cli().args(["audit", "list", "--actor", "nobody"]));
    assert!(stdout.contains("no entry matches"), "{stdout}");

    // A viewer reads but may not change anything.
    stdout_of(fleet.as_token(&viewer).args(["package", "list"]));
    let file = fleet.package("1.0.0");
    let stderr = failure_of(
        fleet
            .as_token(&viewer)
            .args(["package", "upload"])
            .arg(&file),
    );
    assert!(stderr.contains("role viewer"), "{stderr}");
    assert!(stderr.contains("operator or admin"), "{stderr}");

    // A large upload refused at once still shows the server's answer.
    let large = fleet.package_signed_by(&fleet.key, "1.0.1", 24 * MIB);
    let stderr = failure_of(
        fleet
            .as_token(&viewer)
            .args(["package", "upload"])
            .arg(&large),
    );
    assert!(stderr.contains("role viewer"), "{stderr}");

    // An operator uploads but may not manage tokens.
    let package = json_of(
        fleet
            .as_token(&operator)
            .args(["package", "upload", "--json"])
            .arg(&file),
    );
    assert_eq!(package["version"], "1.0.0");
    let stderr = failure_of(fleet.as_token(&operator).args(["token", "list"]));
    assert!(stderr.contains("only an admin"), "{stderr}");

    stdout_of(fleet.cli().args(["token", "revoke", &viewer_id]));
    let stderr = failure_of(fleet.as_token(&viewer).args(["package", "list"]));
    assert!(stderr.contains("refused the token"), "{stderr}");
    assert!(stderr.contains("airlift server login"), "{stderr}");
}

#[test]
fn devices_and_deployments() {
    let fleet = Fleet::new();
    fleet.login_as_admin();
    let package = fleet.upload(&fleet.package("1.2.0"));
    let package_id = str_of(&package["id"]);
    let device_key = fleet.scratch.signing_key("rpi-00017");

    let device = json_of(
        fleet
            .cli()
            .args(["device", "preauthorize", "--identity", "serial=RPI-00017"])
            .args([
                "--identity",
                "mac=dc:a6:32:01:02:03",
                "--tag",
                "canary",
                "--public-key",
            ])
            .arg(&device_key.public)
            .arg("--json"),
    );
    let device_id = str_of(&device["id"]);
    assert_eq!(device["status"], "preauthorized");
    assert_eq!(device["tags"], serde_json::json!(["canary"]));

    let stderr = failure_of(
        fleet
            .cli()
            .args([
                "device",
                "preauthorize",
                "--identity",
                "serial=X",
                "--public-key",
            ])
            .arg(&device_key.private),
    );
    assert!(stderr.contains("is a private key"), "{stderr}");

    // Filters reach the server.
    let total = |filters: &[&str]| {
        let page = json_of(fleet.cli().args(["device", "list", "--json"]).args(filters));
        page["total"].as_u64().expect("total")
    };
    assert_eq!(total(&[]), 1);
    assert_eq!(total(&["--status", "preauthorized"]), 1);
    assert_eq!(total(&["--status", "accepted"]), 0);
    assert_eq!(total(&["--tag", "canary"]), 1);
    assert_eq!(total(&["--tag", "other"]), 0);
    assert_eq!(total(&["--attribute", "region=eu"]), 0);
    assert_eq!(total(&["--installed", "rootfs=1.2.0"]), 0);
    assert_eq!(total(&["--device-type", "rpi4"]), 0);
    let page =
        json_of(
            fleet
                .cli()
                .args(["device", "list", "--json", "--page", "2", "--per-page", "1"]),
        );
    assert_eq!(
        (page["page"].as_u64(), page["per_page"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0));

    let stdout = stdout_of(fleet.cli().args(["device", "list"]));
    assert!(
        stdout.contains(&device_id) && stdout.contains("serial=RPI-00017"),
        "{stdout}"
    );
    assert!(stdout.contains("page 1 of 1, 1 of 1 devices"), "{stdout}");
    let stderr = usage_error_of(fleet.cli().args(["device", "list", "--status", "asleep"]));
    assert!(stderr.contains("preauthorized"), "{stderr}");

    // A device must be accepted before a deployment can name it.
    let create = |target: &[&str]| {
        let mut command = fleet.cli();
        command
            .args([
                "deployment",
                "create",
                "--name",
                "rootfs 1.2.0",
                "--package",
                &package_id,
            ])
            .args(target);
        command
    };
    let stderr = failure_of(&mut create(&["--device", &device_id]));
    assert!(stderr.contains("not accepted or unknown"), "{stderr}");
    assert!(stderr.contains("422"), "{stderr}");

    // Only an accepted device is asked to check in.
    let stderr = failure_of(fleet.cli().args(["device", "check-in", &device_id]));
    assert!(
        stderr.contains("only an accepted device checks in"),
        "{stderr}"
    );
    let stdout = stdout_of(fleet.cli().args(["device", "accept", &device_id]));
    assert!(stdout.contains("is now accepted"), "{stdout}");
    let stdout = stdout_of(fleet.cli().args(["device", "check-in", &device_id]));
    assert!(stdout.contains("asked device"), "{stdout}");
    let deployment = json_of(&mut create(&["--device", &device_id, "--json"]));
    let deployment_id = str_of(&deployment["id"]);
    assert_eq!(deployment["status"], "active");
    assert_eq!(deployment["counts"]["pending"], 1);

    let stdout = stdout_of(fleet.cli().args(["deployment", "list"]));
    assert!(
        stdout.contains(&deployment_id) && stdout.contains("active"),
        "{stdout}"
    );
    let stdout = stdout_of(fleet.cli().args(["deployment", "show", &deployment_id]));
    assert!(
        stdout.contains(&device_id) && stdout.contains("1: 1 pending"),
        "{stdout}"
    );
    let detail = json_of(
        fleet
            .cli()
            .args(["deployment", "show", &deployment_id, "--json"]),
    );
    assert_eq!(
        detail["devices"]["items"][0]["device_id"],
        device_id.as_str()
    );
    assert_eq!(detail["devices"]["items"][0]["state"], "pending");
    assert_eq!(detail["devices"]["total"], 1, "{detail}");
    assert!(
        stdout.contains("page 1 of 1, 1 of 1 devices"),
        "the devices come in pages: {stdout}"
    );
    let listed = json_of(fleet.cli().args(["deployment", "list", "--json"]));
    assert_eq!(
        listed["total"], 1,
        "the same envelope as device list: {listed}"
    );
    assert_eq!(listed["items"][0]["id"], deployment_id.as_str());

    // The package stays while the deployment is active.
    let stderr = failure_of(fleet.cli().args(["package", "delete", &package_id]));
    assert!(stderr.contains("cancel it first"), "{stderr}");
    let cancelled = json_of(
        fleet
            .cli()
            .args(["deployment", "cancel", &deployment_id, "--json"]),
    );
    assert_eq!(cancelled["status"], "cancelled");
    let stderr = failure_of(fleet.cli().args(["deployment", "cancel", &deployment_id]));
    assert!(stderr.contains("only an active deployment"), "{stderr}");
    stdout_of(fleet.cli().args(["package", "delete", &package_id]));

    // Tags, then the end of the device's life.
    let stdout = stdout_of(fleet.cli().args([
        "device",
        "tag",
        &device_id,
        "--tag",
        "site:berlin",
        "--tag",
        "lab",
    ]));
    assert!(stdout.contains("lab, site:berlin"), "{stdout}");
    assert_eq!(total(&["--tag", "canary"]), 0);
    assert_eq!(total(&["--tag", "lab"]), 1);
    let stdout = stdout_of(fleet.cli().args(["device", "show", &device_id]));
    for needle in [
        "serial=RPI-00017",
        "lab, site:berlin",
        "accepted",
        "update history",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    let stdout = stdout_of(fleet.cli().args(["device", "decommission", &device_id]));
    assert!(stdout.contains("is now decommissioned"), "{stdout}");
    let stderr = failure_of(fleet.cli().args(["device", "accept", &device_id]));
    assert!(stderr.contains("stays retired"), "{stderr}");
}

#[test]
fn device_show_names_the_key_id_in_text_and_json() {
    let fleet = Fleet::new();
    fleet.login_as_admin();
    let device_key = fleet.scratch.signing_key("rpi-00018");
    let key_id = stdout_of(airlift().args(["key", "id"]).arg(&device_key.public))
        .trim()
        .to_owned();
    // A public key file with a blank line after the PEM is read all the same.
    let padded = fleet.scratch.path("rpi-00018-padded.pub");
    let pem = fs::read_to_string(&device_key.public).expect("public key");
    fs::write(&padded, format!("{pem}\n")).expect("write public key");
    let device = json_of(
        fleet
            .cli()
            .args(["device", "preauthorize", "--identity", "serial=RPI-00018"])
            .arg("--public-key")
            .arg(&padded)
            .arg("--json"),
    );
    let device_id = str_of(&device["id"]);

    let stdout = stdout_of(fleet.cli().args(["device", "show", &device_id]));
    assert!(stdout.contains(&format!("key id {key_id}")), "{stdout}");
    let detail = json_of(fleet.cli().args(["device", "show", &device_id, "--json"]));
    assert_eq!(detail["key_id"], key_id.as_str(), "{detail}");
    // Beside what the server sends, not instead of it.
    assert_eq!(detail["id"], device_id.as_str());
    assert!(detail["public_key"]
        .as_str()
        .is_some_and(|pem| pem.contains("BEGIN PUBLIC KEY")));
    assert!(detail["history"].is_array(), "{detail}");
}
