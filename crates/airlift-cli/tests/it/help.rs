//! Every command explains itself with examples.

use crate::support::airlift;

#[test]
fn every_command_has_help_with_examples() {
    for command in [
        &[][..],
        &["key"],
        &["key", "generate"],
        &["key", "generate-encryption"],
        &["key", "id"],
        &["package"],
        &["package", "build"],
        &["package", "inspect"],
        &["package", "verify"],
        &["package", "upload"],
        &["package", "list"],
        &["package", "show"],
        &["package", "delete"],
        &["package", "download"],
        &["server"],
        &["server", "login"],
        &["server", "logout"],
        &["server", "status"],
        &["device"],
        &["device", "list"],
        &["device", "show"],
        &["device", "accept"],
        &["device", "reject"],
        &["device", "decommission"],
        &["device", "preauthorize"],
        &["device", "tag"],
        &["device", "config"],
        &["device", "config", "get"],
        &["device", "config", "set"],
        &["device", "config", "unset"],
        &["deployment"],
        &["deployment", "create"],
        &["deployment", "list"],
        &["deployment", "show"],
        &["deployment", "cancel"],
        &["token"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["root"],
        &["root", "init"],
        &["root", "add-key"],
        &["root", "revoke"],
        &["root", "sign"],
        &["root", "show"],
    ] {
        let output = airlift()
            .args(command)
            .arg("--help")
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let help = String::from_utf8(output).expect("UTF-8");
        assert!(help.contains("Usage: airlift"), "{command:?}:\n{help}");
        assert!(
            help.contains("Examples:"),
            "{command:?} has no examples:\n{help}"
        );
    }
}

#[test]
fn top_level_help_says_what_airlift_is_and_lists_commands() {
    let output = airlift()
        .arg("--help")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(output).expect("UTF-8");
    assert!(
        help.starts_with("Airlift ships signed over-the-air updates"),
        "{help}"
    );
    for command in ["key", "package", "server", "device", "deployment", "token"] {
        assert!(help.contains(&format!("  {command} ")), "{help}");
    }
}

#[test]
fn help_never_shows_the_token_from_the_environment() {
    let output = airlift()
        .env("AIRLIFT_TOKEN", "alt_secret_from_the_environment")
        .args(["package", "list", "--help"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let help = String::from_utf8(output).expect("UTF-8");
    assert!(help.contains("--token"), "{help}");
    assert!(!help.contains("alt_secret_from_the_environment"), "{help}");
}
