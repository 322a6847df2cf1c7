//! The worker binary's command line. (Being an integration test of this package also makes
//! `cargo test --workspace` build the binary that the end-to-end crash tests spawn.)

use std::process::Command;

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard-worker"))
}

#[test]
fn help_lists_the_documented_settings() {
    let out = worker().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--database-url",
        "--redis-url",
        "--redis-prefix",
        "--retry-schedule",
        "--high-water-mark",
        "--shutdown-timeout",
        "--allow-private-targets",
    ] {
        assert!(help.contains(flag), "--help misses {flag}");
    }
}

#[test]
fn bad_settings_are_rejected_before_starting() {
    let out = worker()
        .args(["--retry-schedule", "5 parsecs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("retry-schedule"), "{err}");
}

#[test]
fn production_mode_refuses_generated_secrets() {
    let out = worker()
        .env_clear()
        .env("SWITCHYARD_ENV", "production")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("production mode needs real secrets"), "{err}");
}
