//! Which scenarios cover which spec rule, and the generated table
//! `spec/coverage.md`.
//!
//! Every normative MUST of `spec/protocol.md` carries an id written
//! `**[R-8.3.1]**`. Each must be covered by at least one scenario's `covers`
//! or listed, with a reason, in `uncovered.yaml`. A test fails when a rule
//! is neither, when a scenario cites a rule the spec does not have, or when
//! the checked-in table is stale.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

use crate::error::CoverageError;
use crate::scenario::Scenario;

/// Rules not yet covered, with the reason (the embedded `uncovered.yaml`).
pub const UNCOVERED_YAML: &str = include_str!("../uncovered.yaml");

/// One rule of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `R-8.3.1`.
    pub id: String,
    /// The requirement's text (first line, markdown stripped).
    pub text: String,
}

/// Extracts every `**[R-x.y.z]**` rule of the spec, in document order.
pub fn spec_rules(spec: &str) -> Vec<Rule> {
    let pattern = Regex::new(r"\*\*\[(R-\d+(?:\.\d+)+)\]\*\*(.*)")
        .unwrap_or_else(|_| unreachable!("the rule pattern is valid"));
    let mut seen = BTreeSet::new();
    let mut rules = Vec::new();
    let lines: Vec<&str> = spec.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(c) = pattern.captures(line)
            && seen.insert(c[1].to_owned())
        {
            // A bullet continues on indented lines up to the next bullet or blank line.
            let mut text = c[2].to_owned();
            for next in &lines[i + 1..] {
                let trimmed = next.trim_start();
                if trimmed.is_empty() || trimmed.starts_with("- ") || !next.starts_with(' ') {
                    break;
                }
                text.push(' ');
                text.push_str(trimmed);
            }
            rules.push(Rule {
                id: c[1].to_owned(),
                text: clean(&text),
            });
        }
    }
    rules
}

fn clean(text: &str) -> String {
    let text: String = text.replace("**", "").replace('`', "").replace('|', "/");
    let text = text.trim().trim_start_matches([':', '-', ' ']).trim();
    if text.chars().count() > 110 {
        let cut: String = text.chars().take(107).collect();
        format!("{}...", cut.trim_end())
    } else {
        text.to_owned()
    }
}

/// Parses `uncovered.yaml`: rule id -> reason.
pub fn parse_uncovered(text: &str) -> Result<BTreeMap<String, String>, CoverageError> {
    let map: Option<BTreeMap<String, String>> =
        serde_yaml_ng::from_str(text).map_err(CoverageError::Uncovered)?;
    Ok(map.unwrap_or_default())
}

/// Sort key: numeric components (`R-8.10.1` after `R-8.9.2`).
fn rule_key(id: &str) -> Vec<u64> {
    id.trim_start_matches("R-")
        .split('.')
        .map(|p| p.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The coverage of a spec by a suite.
#[derive(Debug, Clone)]
pub struct Coverage {
    /// Rules in spec order, each with its covering scenarios.
    pub rows: Vec<(Rule, Vec<String>, Option<String>)>,
    /// Problems that make the coverage check fail.
    pub problems: Vec<String>,
}

/// Computes coverage; `problems` lists everything that needs fixing.
pub fn compute(
    spec: &str,
    scenarios: &[Scenario],
    uncovered: &BTreeMap<String, String>,
) -> Coverage {
    let rules = spec_rules(spec);
    let ids: BTreeSet<&str> = rules.iter().map(|r| r.id.as_str()).collect();
    let mut by_rule: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for s in scenarios {
        for cover in &s.covers {
            if cover.starts_with("R-") {
                if ids.contains(cover.as_str()) {
                    by_rule
                        .entry(cover.as_str())
                        .or_default()
                        .push(s.name.clone());
                } else if !rules.is_empty() {
                    problems.push(format!(
                        "scenario {} covers {cover}, which spec/protocol.md does not define",
                        s.name
                    ));
                }
            }
        }
    }
    let mut rows = Vec::new();
    for rule in &rules {
        let scenarios = by_rule.remove(rule.id.as_str()).unwrap_or_default();
        let reason = uncovered.get(&rule.id).cloned();
        match (scenarios.is_empty(), &reason) {
            (true, None) => problems.push(format!(
                "{} is covered by no scenario; add one, or list it in crates/conformance/uncovered.yaml with a reason",
                rule.id
            )),
            (false, Some(_)) => problems.push(format!(
                "{} is covered now; remove it from crates/conformance/uncovered.yaml",
                rule.id
            )),
            _ => {}
        }
        rows.push((rule.clone(), scenarios, reason));
    }
    for id in uncovered.keys() {
        if !ids.contains(id.as_str()) && !rules.is_empty() {
            problems.push(format!(
                "uncovered.yaml lists {id}, which spec/protocol.md does not define"
            ));
        }
    }
    rows.sort_by_key(|(rule, _, _)| rule_key(&rule.id));
    Coverage { rows, problems }
}

impl Coverage {
    /// The markdown table checked in as `spec/coverage.md`.
    pub fn to_markdown(&self) -> String {
        let covered = self.rows.iter().filter(|(_, s, _)| !s.is_empty()).count();
        let mut out = String::new();
        out.push_str("# Conformance coverage\n\n");
        out.push_str("<!-- Generated from spec/protocol.md, crates/conformance/scenarios/ and\n");
        out.push_str("     crates/conformance/uncovered.yaml. Do not edit: regenerate with\n");
        out.push_str("     `UPDATE_COVERAGE=1 cargo test -p confab-conformance --test coverage`\n");
        out.push_str("     or `confab-conformance --write-coverage`. -->\n\n");
        out.push_str(&format!(
            "{} rules: {covered} covered by at least one scenario, {} not yet covered (reason given).\n\n",
            self.rows.len(),
            self.rows.len() - covered
        ));
        out.push_str("| Rule | Requirement | Scenarios |\n|---|---|---|\n");
        for (rule, scenarios, reason) in &self.rows {
            let cell = if scenarios.is_empty() {
                format!(
                    "*not yet covered:* {}",
                    reason
                        .as_deref()
                        .unwrap_or("no reason given")
                        .replace('|', "/")
                )
            } else {
                scenarios
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!("| {} | {} | {} |\n", rule.id, rule.text, cell));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_scenario;

    const SPEC: &str = "## 8.3\n- **[R-8.3.1]** The server MUST send `SendAck`\n  only after commit.\n- **[R-8.3.2]** Second | rule.\n- **[R-8.10.1]** Later.\n";

    fn scenario(name: &str, covers: &str) -> Scenario {
        let text = format!("name: {name}\nsummary: s\ncovers: [{covers}]\nsteps: []\n");
        parse_scenario("x.yaml", &text).unwrap()
    }

    #[test]
    fn rules_are_extracted_in_order_with_text() {
        let rules = spec_rules(SPEC);
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].id, "R-8.3.1");
        assert_eq!(
            rules[0].text,
            "The server MUST send SendAck only after commit."
        );
        assert_eq!(rules[1].text, "Second / rule.");
    }

    #[test]
    fn every_gap_is_a_problem() {
        let uncovered = BTreeMap::from([
            ("R-8.10.1".to_owned(), "needs a clock".to_owned()),
            ("R-9.9.9".to_owned(), "x".to_owned()),
        ]);
        let cov = compute(SPEC, &[scenario("a", "R-8.3.1, R-7.7.7")], &uncovered);
        let problems = cov.problems.join("\n");
        assert!(
            problems.contains("R-7.7.7, which spec/protocol.md does not define"),
            "{problems}"
        );
        assert!(
            problems.contains("R-8.3.2 is covered by no scenario"),
            "{problems}"
        );
        assert!(problems.contains("lists R-9.9.9"), "{problems}");
        assert!(!problems.contains("R-8.10.1 is covered"), "{problems}");
        let md = cov.to_markdown();
        assert!(
            md.contains("| R-8.3.1 | The server MUST send SendAck only after commit. | `a` |"),
            "{md}"
        );
        assert!(md.contains("*not yet covered:* needs a clock"), "{md}");
        // Numeric order: 8.3.x before 8.10.1.
        assert!(md.find("R-8.3.2").unwrap() < md.find("R-8.10.1").unwrap());
    }
}
