//! Verdicts: per scenario, per spec rule, and their three renderings
//! (human summary, JSON, JUnit XML).
//!
//! The human summary ends with the line `N passed, N failed, N skipped`,
//! which CI and people read; its format is pinned by a snapshot test.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::scenario::section_of;

/// `writeln!` into a String, which cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// The result of a whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The first (or only) server's base URL.
    pub server: String,
    /// Every server of the run, in the order given (node 0 first); actors
    /// were spread over them.
    pub servers: Vec<String>,
    /// The per-run suffix of generated names.
    pub run_id: String,
    /// Optional capabilities the server granted to the probe connection.
    pub capabilities: Vec<String>,
    /// One result per selected scenario, in suite order.
    pub scenarios: Vec<ScenarioResult>,
    /// One verdict per rule id or section covered by the selected scenarios.
    pub rules: BTreeMap<String, RuleVerdict>,
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub name: String,
    /// Scenario file.
    pub file: String,
    /// What it proves.
    pub summary: String,
    /// Rules it covers.
    pub covers: Vec<String>,
    /// The verdict.
    pub outcome: Outcome,
    /// Wall time, informative only.
    pub duration_ms: u64,
}

/// A scenario verdict.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// Every step passed.
    Passed,
    /// A step failed.
    Failed(Failure),
    /// Not run, with the reason.
    Skipped {
        /// Why (e.g. a capability the server did not grant).
        reason: String,
    },
}

/// Where and how a scenario failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// 1-based step number.
    pub step: usize,
    /// The step, e.g. `recv bob`.
    pub step_description: String,
    /// What went wrong.
    pub message: String,
    /// The expected frame(s) or value, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    /// What arrived instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Value>,
    /// In a run against several servers, each actor's server at the
    /// failure (`node 1 (http://...)`), so a cross-node failure can be
    /// told from a single-node one; empty with one server.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, String>,
    /// Everything sent and received so far, as JSON.
    pub transcript: Vec<Value>,
}

/// A rule's verdict over the scenarios covering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleStatus {
    /// Every covering scenario that ran passed, and at least one ran.
    Passed,
    /// Some covering scenario failed.
    Failed,
    /// No covering scenario ran.
    Skipped,
}

/// A rule's verdict with the scenarios behind it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleVerdict {
    /// The verdict.
    pub status: RuleStatus,
    /// Covering scenarios.
    pub scenarios: Vec<String>,
}

/// Counts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
}

impl Report {
    /// Builds the report, deriving rule verdicts from scenario outcomes.
    pub fn new(
        server: String,
        run_id: String,
        capabilities: Vec<String>,
        scenarios: Vec<ScenarioResult>,
    ) -> Self {
        let mut rules: BTreeMap<String, RuleVerdict> = BTreeMap::new();
        for result in &scenarios {
            for rule in &result.covers {
                let verdict = rules.entry(rule.clone()).or_insert(RuleVerdict {
                    status: RuleStatus::Skipped,
                    scenarios: Vec::new(),
                });
                verdict.scenarios.push(result.name.clone());
                verdict.status = match (verdict.status, &result.outcome) {
                    (_, Outcome::Failed(_)) | (RuleStatus::Failed, _) => RuleStatus::Failed,
                    (_, Outcome::Passed) | (RuleStatus::Passed, _) => RuleStatus::Passed,
                    (RuleStatus::Skipped, Outcome::Skipped { .. }) => RuleStatus::Skipped,
                };
            }
        }
        Self {
            servers: vec![server.clone()],
            server,
            run_id,
            capabilities,
            scenarios,
            rules,
        }
    }

    /// Names every server of a multi-server run (node 0 first). An empty
    /// list keeps the one given to [`Report::new`].
    #[must_use]
    pub fn with_servers(mut self, servers: Vec<String>) -> Self {
        if let Some(first) = servers.first() {
            self.server = first.clone();
            self.servers = servers;
        }
        self
    }

    /// Scenario counts.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.scenarios {
            match r.outcome {
                Outcome::Passed => c.passed += 1,
                Outcome::Failed(_) => c.failed += 1,
                Outcome::Skipped { .. } => c.skipped += 1,
            }
        }
        c
    }

    /// Whether nothing failed.
    pub fn success(&self) -> bool {
        self.counts().failed == 0
    }

    /// Names of failed scenarios.
    pub fn failed(&self) -> Vec<&str> {
        self.scenarios
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .map(|r| r.name.as_str())
            .collect()
    }

    /// The human summary; the last line is `N passed, N failed, N skipped`.
    pub fn human_summary(&self, transcript_lines: usize) -> String {
        let mut out = String::new();
        let caps = if self.capabilities.is_empty() {
            "none".to_owned()
        } else {
            self.capabilities.join(", ")
        };
        let against = if self.servers.len() > 1 {
            let nodes: Vec<String> = self
                .servers
                .iter()
                .enumerate()
                .map(|(i, s)| format!("node {i} {s}"))
                .collect();
            format!("{} servers ({})", self.servers.len(), nodes.join(", "))
        } else {
            self.server.clone()
        };
        w!(
            out,
            "confab-conformance against {against} (run {}; capabilities: {caps})",
            self.run_id
        );
        let width = self
            .scenarios
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0);
        for r in &self.scenarios {
            match &r.outcome {
                Outcome::Passed => {
                    w!(out, "PASS  {:width$}  [{}]", r.name, r.covers.join(" "));
                }
                Outcome::Skipped { reason } => {
                    w!(out, "SKIP  {:width$}  {reason}", r.name);
                }
                Outcome::Failed(f) => {
                    w!(out, "FAIL  {:width$}  [{}]", r.name, r.covers.join(" "));
                    w!(
                        out,
                        "      step {} ({}): {}",
                        f.step,
                        f.step_description,
                        f.message
                    );
                    if let Some(e) = &f.expected {
                        w!(out, "      expected: {e}");
                    }
                    if let Some(a) = &f.actual {
                        w!(out, "      actual:   {a}");
                    }
                    if !f.nodes.is_empty() {
                        w!(out, "      nodes:    {}", nodes_line(&f.nodes));
                    }
                    if transcript_lines > 0 && !f.transcript.is_empty() {
                        let skip = f.transcript.len().saturating_sub(transcript_lines);
                        w!(
                            out,
                            "      transcript (last {} of {}):",
                            f.transcript.len() - skip,
                            f.transcript.len()
                        );
                        for line in &f.transcript[skip..] {
                            w!(out, "        {line}");
                        }
                    }
                }
            }
        }
        let mut rule_counts = Counts::default();
        for v in self.rules.values() {
            match v.status {
                RuleStatus::Passed => rule_counts.passed += 1,
                RuleStatus::Failed => rule_counts.failed += 1,
                RuleStatus::Skipped => rule_counts.skipped += 1,
            }
        }
        let failed_rules: Vec<&str> = self
            .rules
            .iter()
            .filter(|(_, v)| v.status == RuleStatus::Failed)
            .map(|(k, _)| k.as_str())
            .collect();
        w!(
            out,
            "rules: {} passed, {} failed, {} skipped{}",
            rule_counts.passed,
            rule_counts.failed,
            rule_counts.skipped,
            if failed_rules.is_empty() {
                String::new()
            } else {
                format!(" (failed: {})", failed_rules.join(" "))
            }
        );
        let c = self.counts();
        w!(
            out,
            "{} passed, {} failed, {} skipped",
            c.passed,
            c.failed,
            c.skipped
        );
        out
    }

    /// Pretty JSON of the whole report.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// JUnit XML: one testcase per scenario, its rules as properties.
    pub fn to_junit(&self) -> String {
        let c = self.counts();
        let total_secs = self.scenarios.iter().map(|r| r.duration_ms).sum::<u64>() as f64 / 1000.0;
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        w!(
            out,
            "<testsuites name=\"confab-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{total_secs:.3}\">",
            self.scenarios.len(),
            c.failed,
            c.skipped
        );
        w!(
            out,
            "  <testsuite name=\"confab-conformance\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{total_secs:.3}\">",
            self.scenarios.len(),
            c.failed,
            c.skipped
        );
        w!(out, "    <properties>");
        w!(
            out,
            "      <property name=\"server\" value=\"{}\"/>",
            xml(&self.server)
        );
        for (i, server) in self.servers.iter().enumerate() {
            w!(
                out,
                "      <property name=\"node{i}\" value=\"{}\"/>",
                xml(server)
            );
        }
        w!(
            out,
            "      <property name=\"run_id\" value=\"{}\"/>",
            xml(&self.run_id)
        );
        w!(
            out,
            "      <property name=\"capabilities\" value=\"{}\"/>",
            xml(&self.capabilities.join(" "))
        );
        w!(out, "    </properties>");
        for r in &self.scenarios {
            let mut sections: Vec<String> = r.covers.iter().map(|c| section_of(c)).collect();
            sections.dedup();
            w!(
                out,
                "    <testcase name=\"{}\" classname=\"confab.{}\" time=\"{:.3}\">",
                xml(&r.name),
                xml(sections.first().map_or("", String::as_str)),
                r.duration_ms as f64 / 1000.0
            );
            w!(out, "      <properties>");
            w!(
                out,
                "        <property name=\"covers\" value=\"{}\"/>",
                xml(&r.covers.join(" "))
            );
            w!(
                out,
                "        <property name=\"file\" value=\"{}\"/>",
                xml(&r.file)
            );
            w!(out, "      </properties>");
            match &r.outcome {
                Outcome::Passed => {}
                Outcome::Skipped { reason } => {
                    w!(out, "      <skipped message=\"{}\"/>", xml(reason));
                }
                Outcome::Failed(f) => {
                    let message =
                        format!("step {} ({}): {}", f.step, f.step_description, f.message);
                    let mut body = String::new();
                    if let Some(e) = &f.expected {
                        w!(body, "expected: {e}");
                    }
                    if let Some(a) = &f.actual {
                        w!(body, "actual:   {a}");
                    }
                    if !f.nodes.is_empty() {
                        w!(body, "nodes:    {}", nodes_line(&f.nodes));
                    }
                    w!(body, "transcript:");
                    for line in &f.transcript {
                        w!(body, "  {line}");
                    }
                    w!(
                        out,
                        "      <failure message=\"{}\" type=\"ScenarioFailure\">{}</failure>",
                        xml(&message),
                        xml(&body)
                    );
                }
            }
            w!(out, "    </testcase>");
        }
        w!(out, "  </testsuite>");
        w!(out, "</testsuites>");
        out
    }
}

/// `alice=node 0 (http://...), bob=node 1 (http://...)`.
fn nodes_line(nodes: &BTreeMap<String, String>) -> String {
    nodes
        .iter()
        .map(|(actor, node)| format!("{actor}={node}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Escapes text for XML attributes and content; drops characters XML 1.0
/// cannot carry at all.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_verdicts_combine_scenarios() {
        let result = |name: &str, covers: &[&str], outcome| ScenarioResult {
            name: name.into(),
            file: format!("{name}.yaml"),
            summary: String::new(),
            covers: covers.iter().map(|s| s.to_string()).collect(),
            outcome,
            duration_ms: 1,
        };
        let failure = Failure {
            step: 1,
            step_description: "x".into(),
            message: "m".into(),
            expected: None,
            actual: None,
            nodes: BTreeMap::new(),
            transcript: vec![],
        };
        let report = Report::new(
            "http://x".into(),
            "r".into(),
            vec![],
            vec![
                result("a", &["R-1.1", "R-1.2"], Outcome::Passed),
                result("b", &["R-1.2"], Outcome::Failed(failure)),
                result(
                    "c",
                    &["R-1.3"],
                    Outcome::Skipped {
                        reason: "no".into(),
                    },
                ),
                result(
                    "d",
                    &["R-1.1"],
                    Outcome::Skipped {
                        reason: "no".into(),
                    },
                ),
            ],
        );
        assert_eq!(report.rules["R-1.1"].status, RuleStatus::Passed);
        assert_eq!(report.rules["R-1.2"].status, RuleStatus::Failed);
        assert_eq!(report.rules["R-1.3"].status, RuleStatus::Skipped);
        assert_eq!(
            report.counts(),
            Counts {
                passed: 1,
                failed: 1,
                skipped: 2
            }
        );
        assert!(
            report
                .human_summary(0)
                .ends_with("1 passed, 1 failed, 2 skipped\n")
        );
    }

    #[test]
    fn xml_escaping() {
        assert_eq!(
            xml("a<b & \"c\"\n\u{1}"),
            "a&lt;b &amp; &quot;c&quot;&#10;?"
        );
    }
}
