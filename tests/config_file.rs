//! The config file and `fhirstream config`, through the real binary: the
//! precedence flag > environment > file > default, refusal of unknown keys
//! and invalid values (naming the setting and the file), redaction of
//! secrets, and that the printed configuration reads back as the same one.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// Runs the binary with no FHIRSTREAM_* variables but `env`.
fn fhirstream(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fhirstream"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FHIRSTREAM_")) {
        cmd.env_remove(k);
    }
    cmd.args(args).envs(env.iter().copied()).output().expect("run fhirstream")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr_of_failure(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected a usage error, got stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The live (not commented-out) value of `key` in rendered TOML.
fn value(rendered: &str, key: &str) -> Option<toml::Value> {
    let table: toml::Table = rendered.parse().expect("fhirstream config prints valid TOML");
    table.get(key).cloned()
}

fn s(v: &str) -> Option<toml::Value> {
    Some(toml::Value::String(v.into()))
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "f.toml",
        "listen = \"127.0.0.1:7001\"\nstream = \"FROM_FILE\"\nprojector-name = \"file-projector\"\n\
         search-max-count = 77\n",
    );
    let file = file.to_str().unwrap();
    let env = [("FHIRSTREAM_LISTEN", "127.0.0.1:7002"), ("FHIRSTREAM_STREAM", "FROM_ENV")];
    let out = stdout(&fhirstream(&["config", "--config", file, "--listen", "127.0.0.1:7003"], &env));
    assert_eq!(value(&out, "listen"), s("127.0.0.1:7003"), "flag over env and file");
    assert_eq!(value(&out, "stream"), s("FROM_ENV"), "env over file");
    assert_eq!(value(&out, "projector-name"), s("file-projector"), "file over default");
    assert_eq!(value(&out, "search-max-count"), Some(toml::Value::Integer(77)));
    assert_eq!(value(&out, "tenant-stream"), s("FHIRSTREAM_TENANTS"), "default where nobody says");

    // The same file through FHIRSTREAM_CONFIG, and --config before the subcommand.
    let via_env = stdout(&fhirstream(&["config"], &[("FHIRSTREAM_CONFIG", file)]));
    assert_eq!(value(&via_env, "listen"), s("127.0.0.1:7001"));
    let before = stdout(&fhirstream(&["--config", file, "config"], &[]));
    assert_eq!(value(&before, "stream"), s("FROM_FILE"));
    let none = stdout(&fhirstream(&["config"], &[]));
    assert_eq!(value(&none, "listen"), s("127.0.0.1:8080"));
}

#[test]
fn the_file_serves_every_subcommand_and_satisfies_required_settings() {
    let dir = tempfile::tempdir().unwrap();
    // `token` requires a secret; the file may give it, and a `serve`-only
    // setting in the same file does not trouble `token`.
    let file =
        write(dir.path(), "f.toml", "jwt-secret = \"file-secret-long-enough-for-hs256!!\"\nlisten = \"127.0.0.1:1\"\n");
    let file = file.to_str().unwrap();
    let token = stdout(&fhirstream(&["token", "--config", file, "--tenant", "acme"], &[]));
    assert_eq!(token.trim().split('.').count(), 3, "a JWT: {token}");
    let missing = fhirstream(&["token", "--tenant", "acme"], &[]);
    assert!(!missing.status.success(), "without the file the secret is missing");
}

#[test]
fn an_unknown_key_is_refused_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "typo.toml", "nats_url = \"nats://x:4222\"\n");
    let err = stderr_of_failure(&fhirstream(&["config", "--config", file.to_str().unwrap()], &[]));
    assert!(err.contains("`nats_url`") && err.contains("typo.toml"), "{err}");
    assert!(err.contains("did you mean `nats-url`"), "{err}");

    let file = write(dir.path(), "made-up.toml", "turbo = true\n");
    let err = stderr_of_failure(&fhirstream(&["serve", "--config", file.to_str().unwrap()], &[]));
    assert!(err.contains("unknown setting `turbo`") && err.contains("made-up.toml"), "{err}");
    // Per-invocation flags without an environment fallback are not settings.
    let file = write(dir.path(), "tenant.toml", "tenant = \"acme\"\n");
    let err = stderr_of_failure(&fhirstream(&["config", "--config", file.to_str().unwrap()], &[]));
    assert!(err.contains("unknown setting `tenant`"), "{err}");
}

#[test]
fn an_invalid_value_is_refused_at_start_naming_the_setting_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listen = \"nowhere\"", "`listen`", "invalid socket address"),
        ("db-pool-size = -3", "`db-pool-size`", "-3"),
        ("roles = [\"command\", \"chef\"]", "`roles`", "chef"),
        ("auth-disabled = \"yes\"", "`auth-disabled`", "true or false"),
        ("listen = [\"127.0.0.1:1\"]", "`listen`", "not a list"),
        ("stream = { name = \"x\" }", "`stream`", "expected a string"),
    ];
    for (i, (text, setting, why)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("bad{i}.toml"), text);
        // `serve` must fail before connecting to anything: no NATS runs here.
        let err = stderr_of_failure(&fhirstream(&["serve", "--config", file.to_str().unwrap()], &[]));
        assert!(err.contains(setting) && err.contains(&format!("bad{i}.toml")) && err.contains(why), "{text}: {err}");
    }
    let file = write(dir.path(), "syntax.toml", "listen = \n");
    let err = stderr_of_failure(&fhirstream(&["config", "--config", file.to_str().unwrap()], &[]));
    assert!(err.contains("syntax.toml") && err.contains("not valid TOML"), "{err}");
    let err = stderr_of_failure(&fhirstream(&["config", "--config", "/nonexistent/fhirstream.toml"], &[]));
    assert!(err.contains("/nonexistent/fhirstream.toml"), "{err}");
}

#[test]
fn secrets_are_redacted_wherever_they_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "f.toml",
        "jwt-secret = \"jwt-from-file-xyzzy\"\ndatabase-url = \"postgres://fhir:pg-pass-xyzzy@db:5432/fs\"\n",
    );
    let env = [
        ("FHIRSTREAM_CURSOR_SECRET", "cursor-from-env-xyzzy"),
        ("FHIRSTREAM_NATS_URL", "nats://fhirstream:nats-pass-xyzzy@nats1:4222"),
    ];
    let out = stdout(&fhirstream(&["config", "--config", file.to_str().unwrap()], &env));
    assert!(!out.contains("xyzzy"), "a secret leaked:\n{out}");
    assert!(out.contains("# jwt-secret = \"<redacted>\"") && out.contains("# cursor-secret = \"<redacted>\""), "{out}");
    assert_eq!(value(&out, "jwt-secret"), None, "a placeholder must not read back as the secret");
    assert_eq!(value(&out, "database-url"), s("postgres://fhir:REDACTED@db:5432/fs"));
    assert_eq!(value(&out, "nats-url"), s("nats://fhirstream:REDACTED@nats1:4222"));
    let unset = stdout(&fhirstream(&["config"], &[]));
    assert!(unset.contains("# jwt-secret = (unset)"), "{unset}");
}

#[test]
fn the_printed_configuration_reads_back_as_the_same_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("FHIRSTREAM_ROLES", "projector"),
        ("FHIRSTREAM_STREAM_REPLICAS", "3"),
        ("FHIRSTREAM_LOG_JSON", "true"),
        ("FHIRSTREAM_BASE_URL", "https://fhir.example.org"),
        ("FHIRSTREAM_SHAREABLE_TYPES", "Organization,Location"),
    ];
    let first = stdout(&fhirstream(&["config", "--max-body-bytes", "1234", "--auth-disabled"], &env));
    assert_eq!(value(&first, "roles"), Some(toml::Value::Array(vec![toml::Value::String("projector".into())])));
    assert_eq!(value(&first, "auth-disabled"), Some(toml::Value::Boolean(true)));
    assert_eq!(value(&first, "log-json"), Some(toml::Value::Boolean(true)));
    let file = write(dir.path(), "effective.toml", &first);
    let second = stdout(&fhirstream(&["config", "--config", file.to_str().unwrap()], &[]));
    assert_eq!(first, second, "fed back, the file gives the same configuration");
    let default = stdout(&fhirstream(&["config"], &[]));
    assert_ne!(first, default, "the settings above changed something");
}
