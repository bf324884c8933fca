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
    for command in ["key", "package"] {
        assert!(help.contains(&format!("  {command} ")), "{help}");
    }
}
