//! Replays the fuzz corpus in the normal test suite, without cargo-fuzz:
//! every saved crash input (`fuzz/regressions/{target}/`) and every seed
//! (`fuzz/seeds/{target}/`) goes through the same function the fuzz target
//! calls (`fuzz/src/lib.rs`, compiled in here), so a fixed crash stays
//! fixed and the harness itself keeps compiling.

use std::path::Path;

#[path = "../fuzz/src/lib.rs"]
#[allow(unreachable_pub, dead_code)]
mod harness;

/// Feeds every file under `fuzz/{dir}/{target}/` to `run`; returns how many.
fn replay(dir: &str, target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir).join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{}: {e}", root.display())).path();
        if path.file_name().is_some_and(|f| f.to_string_lossy().starts_with('.')) {
            continue;
        }
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} panics {target}", path.display());
        n += 1;
    }
    n
}

fn replay_target(target: &str, run: fn(&[u8])) {
    let seeds = replay("seeds", target, run);
    let crashes = replay("regressions", target, run);
    assert!(seeds > 0, "no seeds for {target}: the corpus was not found");
    eprintln!("{target}: {seeds} seeds and {crashes} saved crash inputs replayed");
}

#[test]
fn search_parameter_inputs_that_once_crashed_the_parser_no_longer_do() {
    replay_target("search_params", harness::search_params);
}

#[test]
fn id_tenant_and_subject_inputs_that_once_crashed_no_longer_do() {
    replay_target("ids_subjects", harness::ids_subjects);
}

#[test]
fn resource_bodies_that_once_crashed_validation_no_longer_do() {
    replay_target("validate_json", harness::validate_json);
}

#[test]
fn bodies_that_once_crashed_conformance_validation_no_longer_do() {
    replay_target("conformance", harness::conformance);
}

#[test]
fn bundles_that_once_crashed_parsing_or_planning_no_longer_do() {
    replay_target("bundle", harness::bundle);
}
