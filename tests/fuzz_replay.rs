//! Replays the fuzz corpus on stable (issue 22): every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` goes through the
//! same target bodies cargo-fuzz runs (`fuzz/src/lib.rs`, included here as
//! a module), so a parser change that panics on a known input, or breaks a
//! round trip, fails `cargo test`. Fuzzing itself: `scripts/fuzz.sh`.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

#[test]
fn every_corpus_and_regression_input_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    for &(name, target) in targets::TARGETS {
        let corpus = files(&root.join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ is empty: every target keeps a seed corpus");
        let regressions = files(&root.join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "fuzz inputs that panic: {failures:?}");
}

#[test]
fn every_target_has_a_cargo_fuzz_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for &(name, _) in targets::TARGETS {
        let path = root.join("fuzz_targets").join(format!("{name}.rs"));
        let body = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} missing", path.display()));
        assert!(body.contains(&format!("ccfd_fuzz::{name}(data)")), "{} does not call ccfd_fuzz::{name}", path.display());
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no [[bin]] {name}");
    }
}
