//! Matching received frames (as canonical proto3 JSON) against expectations.
//!
//! An expectation is a JSON tree matched as a *subset*: every key it names
//! must match, keys it does not name are ignored. Because proto3 JSON omits
//! fields holding their default value, an expected `0`, `"0"`, `false`, `""`,
//! `[]` or `*_UNSPECIFIED` also matches an absent field; an expected object
//! (a message) must be present, so `{sendAck: {}}` requires a SendAck. Objects with
//! `$`-keys are operators:
//!
//! | operator | matches |
//! |---|---|
//! | `$any` (string) or `{$any: true}` | anything, even absent |
//! | `{$absent: true}` | absent or default |
//! | `{$regex: "^[0-9a-f-]{36}$"}` | a string matching the regex |
//! | `{$capture: name}` | any present value, bound to `$name` on success |
//! | `{$gt: n}` `$ge` `$lt` `$le` | integers (also proto3 string integers) |
//! | `{$contains: [m, ...]}` | an array with a distinct element matching each m |
//! | `{$len: n}` | an array (or string) of that length |
//! | `{$not: m}` | anything m does not match |
//! | `{$one_of: [m, ...]}` | anything one of the m match |
//! | `{$sorted_by: [-lastActivityMs, name]}` | an array of objects sorted by those keys (`-`: descending; integers numerically, strings by bytes) |
//!
//! Expected keys may be written in snake_case; when the actual object has no
//! such key they are compared in the camelCase proto3 JSON uses. Variables are substituted before matching, so
//! a captured value is required by writing `$name`.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use crate::vars::{Vars, as_integer};

/// Where and why a frame did not match.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// JSON path of the first difference, e.g. `sendAck.seq`.
    pub path: String,
    /// What was expected there.
    pub expected: String,
    /// What was there.
    pub actual: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "(frame)"
        } else {
            &self.path
        };
        write!(
            f,
            "at {path}: expected {}, got {}",
            self.expected, self.actual
        )
    }
}

/// Captured values of a successful match.
pub type Captures = BTreeMap<String, Value>;

/// Matches `actual` against an already-substituted `expected`.
pub fn matches(expected: &Value, actual: &Value) -> Result<Captures, Mismatch> {
    let mut captures = Captures::new();
    match_at(expected, Some(actual), "", &mut captures)?;
    Ok(captures)
}

/// Substitutes variables into `expected`, then matches.
pub fn matches_with(vars: &Vars, expected: &Value, actual: &Value) -> Result<Captures, Mismatch> {
    let expected = vars.substitute(expected).map_err(|e| Mismatch {
        path: String::new(),
        expected: format!("a valid expectation ({e})"),
        actual: "-".into(),
    })?;
    matches(&expected, actual)
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 200 {
                format!("{}...", s.chars().take(200).collect::<String>())
            } else {
                s
            }
        }
    }
}

fn fail(path: &str, expected: impl Into<String>, actual: Option<&Value>) -> Mismatch {
    Mismatch {
        path: path.to_owned(),
        expected: expected.into(),
        actual: show(actual),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `client_msg_id` -> `clientMsgId`.
pub fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether an expected scalar is the proto3 default, which JSON omits.
fn is_default(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0" || s.ends_with("_UNSPECIFIED"),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        Value::Object(_) => false,
    }
}

fn match_at(
    expected: &Value,
    actual: Option<&Value>,
    path: &str,
    caps: &mut Captures,
) -> Result<(), Mismatch> {
    match expected {
        Value::String(s) if s == "$any" => Ok(()),
        Value::Object(map) if map.keys().any(|k| k.starts_with('$')) => {
            for (op, arg) in map {
                if op.starts_with('$') {
                    match_operator(op, arg, actual, path, caps)?;
                } else {
                    let sub = Value::Object([(op.clone(), arg.clone())].into_iter().collect());
                    match_at(&sub, actual, path, caps)?;
                }
            }
            Ok(())
        }
        Value::Object(map) => {
            // An expected object requires the message to be present: pbjson
            // writes a set message (even an empty one) as `{}`, and the body
            // of a frame must be the named kind.
            let actual_map = match actual {
                Some(Value::Object(m)) => m,
                other => return Err(fail(path, "an object", other)),
            };
            for (key, want) in map {
                // The key as written (HTTP bodies are snake_case), else its
                // camelCase form (proto3 JSON).
                let key = if actual_map.contains_key(key) {
                    key.clone()
                } else {
                    camel(key)
                };
                match_at(want, actual_map.get(&key), &join(path, &key), caps)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            let empty = Vec::new();
            let actual_items = match actual {
                Some(Value::Array(a)) => a,
                None => &empty,
                Some(other) => return Err(fail(path, "an array", Some(other))),
            };
            if actual_items.len() != items.len() {
                return Err(fail(
                    path,
                    format!("an array of {} items", items.len()),
                    actual,
                ));
            }
            for (i, (want, got)) in items.iter().zip(actual_items).enumerate() {
                match_at(want, Some(got), &format!("{path}[{i}]"), caps)?;
            }
            Ok(())
        }
        scalar => match actual {
            None if is_default(scalar) => Ok(()),
            None => Err(fail(path, show(Some(scalar)), None)),
            Some(got) if scalar_eq(scalar, got) => Ok(()),
            Some(got) => Err(fail(path, show(Some(scalar)), Some(got))),
        },
    }
}

fn scalar_eq(expected: &Value, actual: &Value) -> bool {
    if expected == actual {
        return true;
    }
    // proto3 JSON writes 64-bit integers as strings; scenarios may write numbers.
    match (as_integer(expected), as_integer(actual)) {
        (Some(a), Some(b)) => a == b && !expected.is_boolean(),
        _ => false,
    }
}

fn int_arg(op: &str, arg: &Value, path: &str) -> Result<i64, Mismatch> {
    as_integer(arg).ok_or_else(|| fail(path, format!("{op} to take an integer"), Some(arg)))
}

fn match_operator(
    op: &str,
    arg: &Value,
    actual: Option<&Value>,
    path: &str,
    caps: &mut Captures,
) -> Result<(), Mismatch> {
    match op {
        "$any" => Ok(()),
        "$absent" => match actual {
            None => Ok(()),
            Some(v) if is_default(v) => Ok(()),
            Some(v) => Err(fail(path, "absent", Some(v))),
        },
        "$regex" => {
            let pattern = arg.as_str().unwrap_or_default();
            let re = Regex::new(pattern)
                .map_err(|e| fail(path, format!("a valid regex ({e})"), Some(arg)))?;
            match actual {
                Some(Value::String(s)) if re.is_match(s) => Ok(()),
                // Absent strings are "" in proto3.
                None if re.is_match("") => Ok(()),
                other => Err(fail(path, format!("a string matching /{pattern}/"), other)),
            }
        }
        "$capture" => {
            let name = arg.as_str().unwrap_or_default().to_owned();
            match actual {
                Some(v) => {
                    caps.insert(name, v.clone());
                    Ok(())
                }
                None => Err(fail(path, format!("a value to capture as ${name}"), None)),
            }
        }
        "$gt" | "$ge" | "$lt" | "$le" => {
            let bound = int_arg(op, arg, path)?;
            // Absent integers are 0 in proto3.
            let got = match actual {
                None => Some(0),
                Some(v) => as_integer(v),
            };
            let ok = got.is_some_and(|g| match op {
                "$gt" => g > bound,
                "$ge" => g >= bound,
                "$lt" => g < bound,
                _ => g <= bound,
            });
            if ok {
                Ok(())
            } else {
                Err(fail(path, format!("an integer {op} {bound}"), actual))
            }
        }
        "$len" => {
            let len = match actual {
                None => Some(0),
                Some(Value::Array(a)) => Some(a.len()),
                Some(Value::String(s)) => Some(s.len()),
                _ => None,
            };
            // `{$len: 3}` is an exact length; `{$len: {$le: 100}}` matches
            // the length against any matcher.
            if arg.is_object() {
                let Some(len) = len else {
                    return Err(fail(path, "an array or string", actual));
                };
                let len = Value::from(len as u64);
                return match_at(arg, Some(&len), &join(path, "$len"), caps);
            }
            let want = int_arg(op, arg, path)?;
            if len.is_some_and(|l| i64::try_from(l).ok() == Some(want)) {
                Ok(())
            } else {
                Err(fail(path, format!("length {want}"), actual))
            }
        }
        "$contains" => {
            let wanted = arg.as_array().cloned().unwrap_or_default();
            let items = match actual {
                None => Vec::new(),
                Some(Value::Array(a)) => a.clone(),
                Some(other) => return Err(fail(path, "an array", Some(other))),
            };
            let assignment = assign(&wanted, &items, path).ok_or_else(|| {
                fail(
                    path,
                    format!("an array containing {}", show(Some(arg))),
                    actual,
                )
            })?;
            caps.extend(assignment);
            Ok(())
        }
        "$not" => {
            let mut scratch = Captures::new();
            match match_at(arg, actual, path, &mut scratch) {
                Ok(()) => Err(fail(
                    path,
                    format!("anything but {}", show(Some(arg))),
                    actual,
                )),
                Err(_) => Ok(()),
            }
        }
        "$one_of" => {
            let options = arg.as_array().cloned().unwrap_or_default();
            for option in &options {
                let mut scratch = Captures::new();
                if match_at(option, actual, path, &mut scratch).is_ok() {
                    caps.extend(scratch);
                    return Ok(());
                }
            }
            Err(fail(path, format!("one of {}", show(Some(arg))), actual))
        }
        "$sorted_by" => {
            let keys: Vec<String> = arg
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let items = match actual {
                None => return Ok(()),
                Some(Value::Array(a)) => a,
                Some(other) => return Err(fail(path, "an array", Some(other))),
            };
            for (i, pair) in items.windows(2).enumerate() {
                if compare_by(&pair[0], &pair[1], &keys) == std::cmp::Ordering::Greater {
                    return Err(fail(
                        &format!("{path}[{}]", i + 1),
                        format!("items sorted by {keys:?}"),
                        Some(&Value::Array(pair.to_vec())),
                    ));
                }
            }
            Ok(())
        }
        other => Err(fail(path, format!("a known operator, not {other}"), actual)),
    }
}

/// Orders two objects by `keys` (`-key` descending), proto3 defaults for
/// absent fields, integers (also string integers) numerically.
fn compare_by(a: &Value, b: &Value, keys: &[String]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for key in keys {
        let (descending, name) = match key.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, key.as_str()),
        };
        let name = camel(name);
        let (x, y) = (a.get(&name), b.get(&name));
        let order = match (x.and_then(as_integer), y.and_then(as_integer)) {
            (Some(i), Some(j)) => i.cmp(&j),
            (None, Some(j)) if x.is_none() => 0.cmp(&j),
            (Some(i), None) if y.is_none() => i.cmp(&0),
            _ => {
                let text =
                    |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
                text(x).as_bytes().cmp(text(y).as_bytes())
            }
        };
        let order = if descending { order.reverse() } else { order };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// Finds distinct items matching each wanted matcher (backtracking; the sets
/// in scenarios are small).
fn assign(wanted: &[Value], items: &[Value], path: &str) -> Option<Captures> {
    fn go(
        wanted: &[Value],
        items: &[Value],
        used: &mut Vec<bool>,
        path: &str,
        caps: &mut Captures,
    ) -> bool {
        let Some((first, rest)) = wanted.split_first() else {
            return true;
        };
        for (i, item) in items.iter().enumerate() {
            if used[i] {
                continue;
            }
            let mut local = caps.clone();
            if match_at(first, Some(item), path, &mut local).is_ok() {
                used[i] = true;
                if go(rest, items, used, path, &mut local) {
                    *caps = local;
                    return true;
                }
                used[i] = false;
            }
        }
        false
    }
    let mut used = vec![false; items.len()];
    let mut caps = Captures::new();
    go(wanted, items, &mut used, path, &mut caps).then_some(caps)
}

/// Matches a whole set of frames, in any order, one frame per matcher.
/// Returns the captures, or the best single-matcher explanation of failure.
pub fn match_unordered(expected: &[Value], actual: &[Value]) -> Result<Captures, Mismatch> {
    if expected.len() != actual.len() {
        return Err(Mismatch {
            path: String::new(),
            expected: format!("{} frames", expected.len()),
            actual: format!("{} frames", actual.len()),
        });
    }
    if let Some(caps) = assign(expected, actual, "") {
        return Ok(caps);
    }
    // Explain: the first matcher no frame satisfies.
    for want in expected {
        if !actual.iter().any(|got| matches(want, got).is_ok()) {
            return Err(Mismatch {
                path: String::new(),
                expected: format!("a frame matching {}", show(Some(want))),
                actual: "none of the received frames matches it".into(),
            });
        }
    }
    Err(Mismatch {
        path: String::new(),
        expected: "each frame to match a distinct expectation".into(),
        actual: "every expectation matches some frame, but not all at once".into(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// (expected, actual, should match)
    #[test]
    fn matcher_table() {
        let ack = json!({"requestId": "5", "sendAck": {"room": "r", "seq": "3", "messageId": "0190-ab", "clientMsgId": "c1"}});
        let cases = [
            (json!({"sendAck": {"seq": 3}}), &ack, true),
            (json!({"sendAck": {"seq": "3"}}), &ack, true),
            (json!({"sendAck": {"seq": 4}}), &ack, false),
            (json!({"requestId": 5, "sendAck": {}}), &ack, true),
            (json!({"send_ack": {"client_msg_id": "c1"}}), &ack, true),
            (json!({"sendAck": {"duplicate": false}}), &ack, true),
            (json!({"sendAck": {"duplicate": true}}), &ack, false),
            (
                json!({"sendAck": {"duplicate": {"$absent": true}}}),
                &ack,
                true,
            ),
            (
                json!({"sendAck": {"messageId": {"$regex": "^0190-"}}}),
                &ack,
                true,
            ),
            (
                json!({"sendAck": {"messageId": {"$regex": "^x"}}}),
                &ack,
                false,
            ),
            (
                json!({"sendAck": {"seq": {"$gt": 2, "$lt": 4}}}),
                &ack,
                true,
            ),
            (json!({"sendAck": {"seq": {"$ge": 4}}}), &ack, false),
            (json!({"sendAck": "$any"}), &ack, true),
            (json!({"message": {}}), &ack, false), // the body kind must be present
            (json!({"message": {"seq": 1}}), &ack, false),
            (json!({"sendAck": {"seq": {"$not": 3}}}), &ack, false),
            (json!({"sendAck": {"seq": {"$one_of": [1, 3]}}}), &ack, true),
            (json!({"sendAck": {"room": {"$len": 1}}}), &ack, true),
            (
                json!({"sendAck": {"room": {"$len": {"$le": 1}}}}),
                &ack,
                true,
            ),
            (
                json!({"sendAck": {"room": {"$len": {"$gt": 1}}}}),
                &ack,
                false,
            ),
        ];
        for (expected, actual, ok) in cases {
            assert_eq!(
                matches(&expected, actual).is_ok(),
                ok,
                "{expected} vs {actual}"
            );
        }
    }

    #[test]
    fn arrays_exact_and_contains() {
        let list = json!({"roomList": {"rooms": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        assert!(
            matches(
                &json!({"roomList": {"rooms": {"$contains": [{"name": "c"}, {"name": "a"}]}}}),
                &list
            )
            .is_ok()
        );
        assert!(
            matches(
                &json!({"roomList": {"rooms": {"$contains": [{"name": "d"}]}}}),
                &list
            )
            .is_err()
        );
        assert!(
            matches(
                &json!({"roomList": {"rooms": [{"name": "a"}, {"name": "b"}]}}),
                &list
            )
            .is_err()
        );
        assert!(matches(&json!({"roomList": {"rooms": {"$len": 3}}}), &list).is_ok());
        assert!(
            matches(
                &json!({"roomList": {"rooms": {"$sorted_by": ["name"]}}}),
                &list
            )
            .is_ok()
        );
        assert!(
            matches(
                &json!({"roomList": {"rooms": {"$sorted_by": ["-name"]}}}),
                &list
            )
            .is_err()
        );
        let by_activity = json!([{"name": "b", "lastActivityMs": "9"}, {"name": "a", "lastActivityMs": "10"}, {"name": "c"}]);
        assert!(
            matches(
                &json!({"$sorted_by": ["-lastActivityMs", "name"]}),
                &by_activity
            )
            .is_err()
        );
        let by_activity = json!([{"name": "a", "lastActivityMs": "10"}, {"name": "b", "lastActivityMs": "10"}, {"name": "c"}]);
        assert!(
            matches(
                &json!({"$sorted_by": ["-lastActivityMs", "name"]}),
                &by_activity
            )
            .is_ok()
        );
        // Absent repeated field = empty list.
        assert!(
            matches(
                &json!({"memberList": {"members": []}}),
                &json!({"memberList": {}})
            )
            .is_ok()
        );
    }

    #[test]
    fn captures_are_returned_and_mismatch_names_the_path() {
        let msg = json!({"message": {"seq": "9", "messageId": "m9"}});
        let caps = matches(
            &json!({"message": {"seq": {"$capture": "s"}, "messageId": {"$capture": "id"}}}),
            &msg,
        )
        .unwrap();
        assert_eq!(caps["s"], json!("9"));
        assert_eq!(caps["id"], json!("m9"));
        let err = matches(&json!({"message": {"seq": 8}}), &msg).unwrap_err();
        assert_eq!(err.path, "message.seq");
        assert_eq!(err.to_string(), "at message.seq: expected 8, got \"9\"");
    }

    #[test]
    fn unordered_sets_find_an_assignment() {
        let frames = [
            json!({"message": {"seq": "1"}}),
            json!({"requestId": "2", "sendAck": {"seq": "1"}}),
        ];
        let want = [json!({"sendAck": {}}), json!({"message": {"seq": 1}})];
        assert!(match_unordered(&want, &frames).is_ok());
        let want_bad = [json!({"sendAck": {}}), json!({"sendAck": {}})];
        assert!(match_unordered(&want_bad, &frames).is_err());
        assert!(match_unordered(&want[..1], &frames).is_err());
    }
}
