//! Every rule of spec/protocol.md is covered or explained, and the checked-in
//! table spec/coverage.md is current. Run with `UPDATE_COVERAGE=1` to
//! rewrite the table.

use std::path::PathBuf;

use confab_conformance::{coverage, scenario};

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn every_rule_is_covered_or_explained_and_the_table_is_current() {
    let spec = std::fs::read_to_string(repo_file("spec/protocol.md"))
        .expect("spec/protocol.md is readable");
    let scenarios = scenario::embedded().expect("scenarios load");
    let uncovered =
        coverage::parse_uncovered(coverage::UNCOVERED_YAML).expect("uncovered.yaml parses");
    let cov = coverage::compute(&spec, &scenarios, &uncovered);
    assert!(
        cov.rows.len() > 100,
        "spec/protocol.md has only {} rules",
        cov.rows.len()
    );
    assert!(
        cov.problems.is_empty(),
        "coverage problems:\n{}",
        cov.problems.join("\n")
    );

    let table_path = repo_file("spec/coverage.md");
    let want = cov.to_markdown();
    if std::env::var_os("UPDATE_COVERAGE").is_some() {
        std::fs::write(&table_path, &want).expect("spec/coverage.md is writable");
        return;
    }
    let have = std::fs::read_to_string(&table_path).unwrap_or_default();
    assert!(
        have == want,
        "spec/coverage.md is stale; regenerate it with `UPDATE_COVERAGE=1 cargo test -p confab-conformance --test coverage`"
    );
}

#[test]
fn the_suite_has_enough_multi_user_scenarios() {
    let scenarios = scenario::embedded().expect("scenarios load");
    assert!(scenarios.len() >= 40, "only {} scenarios", scenarios.len());
    let big = scenarios
        .iter()
        .filter(|s| s.actors.len() >= 3 && s.rooms.len() >= 2)
        .count();
    assert!(big >= 3, "only {big} scenarios with 3+ actors in 2+ rooms");
}
