//! The configuration's layering and validation.

use super::*;

fn args(extra: &[&str]) -> Args {
    let mut argv = vec!["airlift-server"];
    argv.extend_from_slice(extra);
    Args::parse_from(argv)
}

#[test]
fn defaults_are_embedded() {
    let config = Config::from_args(args(&[]), None).expect("valid");
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        config.database,
        DatabaseUrl::Sqlite(PathBuf::from("airlift-data/airlift.db"))
    );
}

#[test]
fn flags_win_over_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("server.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9000\"\npoll_interval = 5\n").expect("write");
    let path = file.to_string_lossy().into_owned();
    let config = Config::from_args(
        args(&["--config", &path, "--listen", "127.0.0.1:9100"]),
        None,
    )
    .expect("valid");
    assert_eq!(config.listen.to_string(), "127.0.0.1:9100");
    assert_eq!(config.poll_interval, Duration::from_secs(5));
}

#[test]
fn every_setting_can_come_from_the_file_and_a_flag_still_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        "write_timeout = 5\nmax_pending_devices = 7\ntrust = [\"a.pub\", \"b.pub\"]\ntrust_threshold = 2\nidle_timeout = 9\n",
    )
    .expect("write");
    let path = file.to_string_lossy().into_owned();
    let config =
        Config::from_args(args(&["--config", &path, "--idle-timeout", "3"]), None).expect("valid");
    assert_eq!(config.connections.write_timeout, Duration::from_secs(5));
    assert_eq!(config.connections.idle_timeout, Duration::from_secs(3));
    assert_eq!(config.admission.max_pending_devices, 7);
    assert_eq!(config.trust.len(), 2);
    assert_eq!(config.trust_threshold, 2);
}

#[test]
fn bad_values_say_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("server.toml");
    std::fs::write(&file, "listn = \"x\"\n").expect("write");
    let path = file.to_string_lossy().into_owned();
    let error = Config::from_args(args(&["--config", &path]), None).expect_err("typo");
    assert!(
        error.to_string().contains("unknown field") && error.to_string().contains("listn"),
        "{error}"
    );
    let error = Config::from_args(args(&["--poll-interval", "0"]), None).expect_err("zero");
    assert!(error.to_string().contains("poll_interval"), "{error}");
    let error =
        Config::from_args(args(&["--max-device-requests", "0"]), None).expect_err("no requests");
    assert!(error.to_string().contains("max_device_requests"), "{error}");
}

#[test]
fn device_requests_in_flight_are_bounded_by_default_and_by_flag() {
    let config = Config::from_args(args(&[]), None).expect("valid");
    assert_eq!(config.connections.max_device_requests, 128);
    let config = Config::from_args(args(&["--max-device-requests", "7"]), None).expect("valid");
    assert_eq!(config.connections.max_device_requests, 7);
}

#[test]
fn the_database_pool_is_ten_unless_set_and_bounded() {
    let config = Config::from_args(args(&[]), None).expect("valid");
    assert_eq!(config.database_max_connections, 10);
    let config =
        Config::from_args(args(&["--database-max-connections", "40"]), None).expect("valid");
    assert_eq!(config.database_max_connections, 40);
    for bad in ["0", "1001"] {
        let error = Config::from_args(args(&["--database-max-connections", bad]), None)
            .expect_err("out of bounds");
        assert!(
            error
                .to_string()
                .contains("database_max_connections must be 1 to 1000"),
            "{error}"
        );
    }
}

#[test]
fn blobs_stay_on_disk_unless_an_s3_url_is_given_and_secrets_never_show() {
    let config = Config::from_args(args(&["--blob-region", "eu-west-1"]), None).expect("valid");
    assert_eq!(
        config.blobs,
        BlobBackend::Local(PathBuf::from("airlift-data/blobs"))
    );
    let config = Config::from_args(
        args(&[
            "--blob-url",
            "s3://packages/fleet",
            "--blob-endpoint",
            "http://127.0.0.1:9000",
            "--blob-path-style",
            "--blob-access-key-id",
            "AKIDEXAMPLE",
            "--blob-secret-access-key",
            "s3-secret-never-shown",
            "--blob-session-token",
            "s3-session-never-shown",
        ]),
        None,
    )
    .expect("valid");
    let BlobBackend::S3(s3) = &config.blobs else {
        panic!("S3 expected: {:?}", config.blobs);
    };
    assert_eq!(s3.bucket, "packages");
    assert!(s3.path_style);
    assert_eq!(
        s3.credentials
            .as_ref()
            .map(|c| c.secret_access_key.expose()),
        Some("s3-secret-never-shown")
    );
    let shown = format!("{config:?}");
    assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
    assert!(!shown.contains("never-shown"), "{shown}");
    let raw = args(&["--blob-secret-access-key", "raw-never-shown"]);
    assert!(!format!("{raw:?}").contains("never-shown"));

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        "blob_url = \"s3://packages\"\nblob_path_style = true\nblob_endpoint = \"http://10.0.0.1:9000\"\n",
    )
    .expect("write");
    let path = file.to_string_lossy().into_owned();
    let config = Config::from_args(args(&["--config", &path]), None).expect("valid");
    assert!(matches!(config.blobs, BlobBackend::S3(ref s3) if s3.path_style));
    let error =
        Config::from_args(args(&["--blob-url", "/srv/blobs"]), None).expect_err("not s3://");
    assert!(error.to_string().contains("AIRLIFT_BLOB_URL"), "{error}");
}

#[test]
fn downloads_from_s3_are_offloaded_unless_turned_off_and_disk_has_no_offload() {
    let offload = |extra: &[&str]| {
        let mut argv = vec!["--blob-url", "s3://packages"];
        argv.extend_from_slice(extra);
        match Config::from_args(args(&argv), None).map(|c| c.blobs) {
            Ok(BlobBackend::S3(s3)) => Ok(s3.offload),
            Ok(other) => panic!("S3 expected: {other:?}"),
            Err(error) => Err(error.to_string()),
        }
    };
    let default = offload(&[]).expect("valid").expect("on by default");
    assert_eq!(default.expiry, Duration::from_secs(15 * 60));
    assert_eq!(default.base_url, None);
    let tuned = offload(&[
        "--blob-offload",
        "on",
        "--blob-url-expiry",
        "2h",
        "--download-base-url",
        "https://cdn.example.com/airlift",
    ])
    .expect("valid")
    .expect("on");
    assert_eq!(tuned.expiry, Duration::from_secs(7200));
    assert_eq!(
        tuned.base_url.map(|b| b.to_string()).as_deref(),
        Some("https://cdn.example.com/airlift")
    );
    assert_eq!(offload(&["--blob-offload", "off"]), Ok(None));
    for (extra, flag) in [
        (&["--blob-url-expiry", "8d"][..], "--blob-url-expiry"),
        (&["--blob-url-expiry", "0"][..], "--blob-url-expiry"),
        (
            &["--download-base-url", "cdn.example.com"][..],
            "--download-base-url",
        ),
        (
            &[
                "--blob-offload",
                "off",
                "--download-base-url",
                "https://cdn.example.com",
            ][..],
            "--download-base-url",
        ),
    ] {
        let error = offload(extra).expect_err(flag);
        assert!(error.contains(flag), "{extra:?}: {error}");
    }

    let disk = |extra: &[&str]| Config::from_args(args(extra), None).map(|c| c.blobs);
    assert!(disk(&["--blob-offload", "off"]).is_ok_and(|b| b.is_local()));
    for (extra, flag) in [
        (&["--blob-offload", "on"][..], "--blob-offload"),
        (
            &["--download-base-url", "https://cdn.example.com"][..],
            "--download-base-url",
        ),
    ] {
        let error = disk(extra).expect_err(flag).to_string();
        assert!(error.contains(flag), "{extra:?}: {error}");
    }
}

#[test]
fn debug_redacts_the_admin_token() {
    let config = Config::from_args(args(&[]), Some("secret-token".into())).expect("valid");
    assert!(!format!("{config:?}").contains("secret-token"));
}

#[test]
fn the_timestamp_key_can_come_from_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("online.key");
    let signing = airlift_package::SigningKey::generate().expect("key");
    std::fs::write(&key, signing.to_pem().expect("pem").as_bytes()).expect("write key");
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        format!(
            "timestamp_key = {:?}\ntimestamp_expiry = \"12h\"\n",
            key.display().to_string()
        ),
    )
    .expect("write");
    let path = file.to_string_lossy().into_owned();
    let config = Config::from_args(args(&["--config", &path]), None).expect("valid");
    let signer = config.timestamps.expect("a timestamp signer");
    assert_eq!(signer.expiry, Duration::from_secs(12 * 3600));
    let config = Config::from_args(args(&["--config", &path, "--timestamp-expiry", "2h"]), None)
        .expect("valid");
    let signer = config.timestamps.expect("a timestamp signer");
    assert_eq!(
        signer.expiry,
        Duration::from_secs(2 * 3600),
        "the flag wins"
    );
}
