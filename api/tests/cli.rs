//! The API binary's command line. (Being an integration test of this package also makes
//! `cargo test --workspace` build the binary that the end-to-end crash tests spawn.)

use std::process::Command;

fn api() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard-api"))
}

#[test]
fn help_lists_the_documented_settings() {
    let out = api().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--with-worker",
        "--listen",
        "--database-url",
        "--redis-url",
        "--admin-token",
        "--master-keys",
        "--api-key-pepper",
        "--production",
    ] {
        assert!(help.contains(flag), "--help misses {flag}");
    }
}

#[test]
fn production_mode_refuses_missing_secrets() {
    let out = api()
        .env_clear()
        .arg("--production")
        .arg("--admin-token")
        .arg("an-admin-token-of-some-length")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("SWITCHYARD_MASTER_KEYS"), "{err}");
    assert!(err.contains("SWITCHYARD_API_KEY_PEPPER"), "{err}");
}
