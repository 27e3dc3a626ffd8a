//! The report renderings: the human summary's format is pinned by a
//! snapshot, and the JUnit XML is parsed and checked.

mod support;

use confab_conformance::report::{Failure, Outcome, Report, ScenarioResult};
use serde_json::json;
use std::collections::BTreeMap;

fn sample() -> Report {
    sample_with_nodes(BTreeMap::new())
}

fn sample_with_nodes(nodes: BTreeMap<String, String>) -> Report {
    let result = |name: &str, covers: &[&str], outcome| ScenarioResult {
        name: name.into(),
        file: format!("{name}.yaml"),
        summary: "s".into(),
        covers: covers.iter().map(|s| s.to_string()).collect(),
        outcome,
        duration_ms: 12,
    };
    let failure = Failure {
        step: 4,
        step_description: "recv bob".into(),
        message: "bob: at message.seq: expected 3, got \"4\"".into(),
        expected: Some(json!({"message": {"seq": 3}})),
        actual: Some(json!({"message": {"seq": "4", "text": "<&>"}})),
        nodes,
        transcript: vec![
            json!({"step": 4, "do": "recv bob"}),
            json!({"actor": "bob", "conn": 1, "recv": {"message": {"seq": "4"}}}),
        ],
    };
    Report::new(
        "http://127.0.0.1:7420".into(),
        "abcde".into(),
        vec!["typing".into(), "presence".into()],
        vec![
            result("ping-pong", &["R-12.1.4"], Outcome::Passed),
            result("fanout", &["R-8.4.1", "R-8.4.3"], Outcome::Failed(failure)),
            result(
                "typing",
                &["R-11.2.3"],
                Outcome::Skipped {
                    reason: "server did not grant capability \"typing\" in Welcome (granted: [])"
                        .into(),
                },
            ),
            result("history", &["R-9.3", "R-8.4.1"], Outcome::Passed),
        ],
    )
}

#[test]
fn human_summary_format() {
    let summary = sample().human_summary(10);
    assert!(summary.ends_with("2 passed, 1 failed, 1 skipped\n"));
    insta::assert_snapshot!(summary);
}

#[test]
fn junit_report_is_valid_xml_with_the_right_counts() {
    let report = sample();
    let xml = report.to_junit();
    support::check_junit(&xml, 4, 1, 1);
    assert!(xml.contains("&lt;&amp;&gt;"), "text is escaped: {xml}");
}

#[test]
fn json_report_has_rule_verdicts() {
    let json: serde_json::Value =
        serde_json::from_str(&sample().to_json()).expect("JSON report parses");
    assert_eq!(json["rules"]["R-8.4.1"]["status"], "failed");
    assert_eq!(json["rules"]["R-12.1.4"]["status"], "passed");
    assert_eq!(json["rules"]["R-11.2.3"]["status"], "skipped");
    assert_eq!(json["scenarios"][1]["outcome"]["status"], "failed");
    assert_eq!(json["scenarios"][1]["outcome"]["step"], 4);
}

#[test]
fn a_multi_server_report_names_every_server_and_each_actors_node() {
    let nodes = BTreeMap::from([
        (
            "alice".to_owned(),
            "node 0 (http://127.0.0.1:7420)".to_owned(),
        ),
        (
            "bob".to_owned(),
            "node 1 (http://127.0.0.1:7421)".to_owned(),
        ),
    ]);
    let report = sample_with_nodes(nodes).with_servers(vec![
        "http://127.0.0.1:7420".into(),
        "http://127.0.0.1:7421".into(),
    ]);
    let summary = report.human_summary(10);
    assert!(
        summary.starts_with(
            "confab-conformance against 2 servers (node 0 http://127.0.0.1:7420, node 1 http://127.0.0.1:7421) (run abcde;"
        ),
        "{summary}"
    );
    assert!(
        summary.contains(
            "      nodes:    alice=node 0 (http://127.0.0.1:7420), bob=node 1 (http://127.0.0.1:7421)\n"
        ),
        "{summary}"
    );
    let xml = report.to_junit();
    support::check_junit(&xml, 4, 1, 1);
    assert!(
        xml.contains("<property name=\"node0\" value=\"http://127.0.0.1:7420\"/>")
            && xml.contains("<property name=\"node1\" value=\"http://127.0.0.1:7421\"/>"),
        "{xml}"
    );
    assert!(xml.contains("bob=node 1 (http://127.0.0.1:7421)"), "{xml}");
    let json: serde_json::Value =
        serde_json::from_str(&report.to_json()).expect("JSON report parses");
    assert_eq!(
        json["servers"],
        json!(["http://127.0.0.1:7420", "http://127.0.0.1:7421"])
    );
    assert_eq!(json["server"], "http://127.0.0.1:7420");
    assert_eq!(
        json["scenarios"][1]["outcome"]["nodes"]["bob"],
        "node 1 (http://127.0.0.1:7421)"
    );
}

#[test]
fn a_single_server_report_has_no_node_lines() {
    let report = sample();
    assert_eq!(report.servers, ["http://127.0.0.1:7420"]);
    assert!(!report.human_summary(10).contains("nodes:"));
    let json: serde_json::Value =
        serde_json::from_str(&report.to_json()).expect("JSON report parses");
    assert!(json["scenarios"][1]["outcome"].get("nodes").is_none());
}
