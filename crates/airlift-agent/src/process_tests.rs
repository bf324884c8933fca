//! Tests of the process runner, with `sh` as the program.

use super::*;

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

/// Whether process `pid` is gone (or a zombie waiting for a reaper that is
/// not us: it runs nothing any more).
fn is_gone(pid: u32) -> bool {
    !airlift_testkit::procfs::is_running(pid)
}

#[test]
fn a_command_that_times_out_is_killed_with_its_children() {
    let started = Instant::now();
    let error = run(Run::new(sh("sleep 30 & echo $!; sleep 30")).timeout(Duration::from_secs(1)))
        .expect_err("timed out");
    assert!(started.elapsed() < Duration::from_secs(10), "{error}");
    let RunError::TimedOut {
        command, stdout, ..
    } = &error
    else {
        panic!("not a timeout: {error}");
    };
    assert!(command.starts_with("sh -c"), "{error}");
    assert!(error.to_string().contains("timed out after 1 s"), "{error}");
    let grandchild: u32 = stdout.text().trim().parse().expect("the background pid");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_gone(grandchild) {
        assert!(
            Instant::now() < deadline,
            "the background sleep {grandchild} survived the timeout"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn output_is_capped_and_its_tail_kept() {
    let script = "i=0; while [ $i -lt 2000 ]; do echo line $i; echo err $i >&2; i=$((i+1)); done";
    let finished = run(Run::new(sh(script)).capture(100)).expect("ran");
    assert!(finished.status.success());
    for (captured, prefix) in [(&finished.stdout, "line"), (&finished.stderr, "err")] {
        assert_eq!(captured.bytes.len(), 100);
        assert!(captured.truncated);
        assert!(
            captured.text().ends_with(&format!("{prefix} 1999\n")),
            "{captured:?}"
        );
    }
}

#[test]
fn the_exit_status_and_output_are_reported() {
    let finished = run(Run::new(sh("echo out; echo err >&2; exit 3"))).expect("ran");
    assert_eq!(finished.status.code(), Some(3));
    assert_eq!(finished.stdout.text(), "out\n");
    assert_eq!(finished.stderr.text(), "err\n");
    assert!(!finished.stdout.truncated);
    assert!(finished.input_complete);
}

#[test]
fn merged_output_keeps_the_order() {
    let finished =
        run(Run::new(sh("echo one; echo two >&2; echo three")).merge_stderr()).expect("ran");
    assert_eq!(finished.stdout.text(), "one\ntwo\nthree\n");
    assert!(finished.stderr.bytes.is_empty());
}

#[test]
fn input_is_streamed_and_a_marker_line_seen() {
    let mut input: &[u8] = b"hello\n";
    let finished = run(Run::new(sh("cat >/dev/null; echo reboot; echo rebooting"))
        .input(Some(&mut input))
        .marker("reboot"))
    .expect("ran");
    assert!(finished.marker_seen);
    assert!(finished.input_complete);
    assert_eq!(finished.written, 6);
}

#[test]
fn a_program_that_closes_its_input_early_is_noticed() {
    let big = vec![b'x'; 4 << 20];
    let mut input: &[u8] = &big;
    let finished = run(Run::new(sh("exit 0"))
        .input(Some(&mut input))
        .timeout(Duration::from_secs(10)))
    .expect("ran");
    assert!(finished.status.success());
    assert!(!finished.input_complete);
    assert!(finished.written < big.len() as u64);
}

#[test]
fn an_input_that_fails_kills_the_program() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("the download broke off"))
        }
    }
    let error = run(Run::new(sh("cat >/dev/null; sleep 30")).input(Some(&mut Broken)))
        .expect_err("input failed");
    assert!(matches!(error, RunError::Input { .. }), "{error}");
    assert!(
        error.to_string().contains("the download broke off"),
        "{error}"
    );
}

#[test]
fn a_missing_program_is_named_in_the_error() {
    let mut command = Command::new("/nonexistent/tool");
    command.arg("it's");
    let error = run(Run::new(command)).expect_err("cannot start");
    assert!(matches!(error, RunError::Spawn { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains(r"cannot start `/nonexistent/tool 'it'\''s'`"),
        "{error}"
    );
}

#[test]
fn a_background_process_holding_the_output_does_not_hold_the_run() {
    let started = Instant::now();
    let finished = run(Run::new(sh("sleep 30 & echo $!"))).expect("ran");
    let _ = Command::new("kill")
        .arg(finished.stdout.text().trim())
        .status();
    assert!(finished.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn displays_a_command_a_person_can_paste() {
    let args = ["/boot/grub/grubenv", "set", "a=1", "it's here", ""];
    assert_eq!(
        display(Path::new("grub-editenv"), &args),
        r#"grub-editenv /boot/grub/grubenv set a=1 'it'\''s here' ''"#
    );
}

#[test]
fn last_lines_keeps_the_end_cut_short() {
    assert_eq!(last_lines("a\nb\nc\nlong line\n", 2, 4), "c\nlong");
    assert_eq!(last_lines("", 20, 300), "");
}
