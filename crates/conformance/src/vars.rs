//! Variables and their substitution into frame templates and matchers.
//!
//! A scenario never writes a concrete user or room name: it writes `$alice`
//! or `$room_a`, and the runner binds those to per-run names. Captures from
//! matchers (`{$capture: first_seq}`) and request ids (`$req`) are variables
//! too. Rules, applied recursively to every string of a JSON tree:
//! - a string that is exactly `$name` (dots allowed: `$limits.maxTextBytes`)
//!   becomes the variable's JSON value;
//! - `${expr}` inside a string is replaced by the expression's value, where an
//!   expression is integers and variables joined by `+`, `-`, `*`, `/`; a string
//!   that is exactly one `${expr}` becomes a JSON number when it evaluates to one;
//! - `$$` is a literal `$`;
//! - `{$repeat: "ab", times: expr}` becomes the string repeated;
//! - `{$array: template, times: expr}` becomes an array of `times` copies of
//!   the template, the k-th substituted with `$k` bound to k (1-based), e.g.
//!   a Resume naming two thousand rooms;
//! - matcher operators (`$any`, `{$capture: x}`, ...) are left alone.

use std::collections::BTreeMap;

use serde_json::Value;

/// Bound variables of one scenario run.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: BTreeMap<String, Value>,
}

/// A substitution or expression that could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VarError {
    /// A variable is used before it is bound.
    #[error("variable ${0} is not bound (typo, or used before the step that binds it)")]
    Unbound(String),
    /// An expression is not `term (op term)*`.
    #[error("cannot evaluate {0:?}: write integers and variables joined by + - * /")]
    BadExpression(String),
    /// A value used in arithmetic is not an integer.
    #[error("${name} is {value}, not an integer")]
    NotAnInteger {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
    },
}

/// Matcher operator names; never substituted.
pub const OPERATORS: &[&str] = &[
    "$any",
    "$absent",
    "$regex",
    "$capture",
    "$gt",
    "$ge",
    "$lt",
    "$le",
    "$contains",
    "$len",
    "$not",
    "$one_of",
    "$sorted_by",
];

impl Vars {
    /// No variables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds `name` (without `$`).
    pub fn set(&mut self, name: impl Into<String>, value: Value) {
        self.values.insert(name.into(), value);
    }

    /// The value of `name` (without `$`).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    /// Binds every entry of `other`.
    pub fn extend(&mut self, other: BTreeMap<String, Value>) {
        self.values.extend(other);
    }

    /// Substitutes variables throughout a JSON tree (see the module doc).
    pub fn substitute(&self, template: &Value) -> Result<Value, VarError> {
        match template {
            Value::String(s) => self.substitute_str(s),
            Value::Array(items) => items
                .iter()
                .map(|v| self.substitute(v))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) => {
                if let Some(text) = map.get("$repeat") {
                    let text = self.substitute(text)?;
                    let times = map.get("times").cloned().unwrap_or(Value::from(1));
                    let times = self.eval_value(&times)?;
                    let unit = match text {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    let times = usize::try_from(times.max(0)).unwrap_or(0);
                    return Ok(Value::String(unit.repeat(times)));
                }
                if let Some(item) = map.get("$array") {
                    let times = map.get("times").cloned().unwrap_or(Value::from(1));
                    let times = self.eval_value(&times)?.max(0);
                    let mut scope = self.clone();
                    let mut out = Vec::with_capacity(usize::try_from(times).unwrap_or(0));
                    for k in 1..=times {
                        scope.set("k", Value::from(k));
                        out.push(scope.substitute(item)?);
                    }
                    return Ok(Value::Array(out));
                }
                if map.contains_key("$capture") {
                    // The capture target is a name, not a value.
                    return Ok(template.clone());
                }
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.substitute(v)?);
                }
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn substitute_str(&self, s: &str) -> Result<Value, VarError> {
        if OPERATORS.contains(&s) {
            return Ok(Value::String(s.to_owned()));
        }
        if let Some(name) = s.strip_prefix('$')
            && is_name(name)
        {
            return self.lookup(name).cloned();
        }
        if let Some(expr) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}'))
            && !expr.contains('}')
        {
            let n = self.eval(expr)?;
            return Ok(Value::from(n));
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(after_dollar) = after.strip_prefix('$') {
                out.push('$');
                rest = after_dollar;
            } else if let Some(inner) = after.strip_prefix('{') {
                let end = inner
                    .find('}')
                    .ok_or_else(|| VarError::BadExpression(s.to_owned()))?;
                out.push_str(&self.eval_to_string(&inner[..end])?);
                rest = &inner[end + 1..];
            } else {
                // `$name` embedded in a longer string, ending at the first
                // character that cannot be part of a name.
                let len = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                    .unwrap_or(after.len());
                let name = after[..len].trim_end_matches('.');
                if name.is_empty() {
                    out.push('$');
                    rest = after;
                    continue;
                }
                out.push_str(&as_text(self.lookup(name)?));
                rest = &after[name.len()..];
            }
        }
        out.push_str(rest);
        Ok(Value::String(out))
    }

    fn lookup(&self, name: &str) -> Result<&Value, VarError> {
        self.values
            .get(name)
            .ok_or_else(|| VarError::Unbound(name.to_owned()))
    }

    fn eval_to_string(&self, expr: &str) -> Result<String, VarError> {
        let trimmed = expr.trim();
        if is_name(trimmed) {
            return Ok(as_text(self.lookup(trimmed)?));
        }
        Ok(self.eval(expr)?.to_string())
    }

    /// Evaluates a JSON value as an integer expression: numbers as they are,
    /// strings as expressions (with or without `${}`).
    pub fn eval_value(&self, value: &Value) -> Result<i64, VarError> {
        match value {
            Value::Number(n) => n
                .as_i64()
                .ok_or_else(|| VarError::BadExpression(n.to_string())),
            Value::String(s) => {
                let inner = s
                    .strip_prefix("${")
                    .and_then(|r| r.strip_suffix('}'))
                    .unwrap_or(s);
                self.eval(inner.trim_start_matches('$'))
            }
            other => Err(VarError::BadExpression(other.to_string())),
        }
    }

    /// Evaluates `term (op term)*`: `*` and `/` (integer division) bind
    /// tighter than `+` and `-`.
    pub fn eval(&self, expr: &str) -> Result<i64, VarError> {
        let bad = || VarError::BadExpression(expr.to_owned());
        let mut tokens = Vec::new();
        let mut chars = expr.chars().peekable();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                chars.next();
            } else if "+-*/".contains(c) {
                tokens.push(c.to_string());
                chars.next();
            } else {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "+-*/".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(word);
            }
        }
        // Sum of products.
        let mut total: i64 = 0;
        let mut sign: i64 = 1;
        let mut product: Option<i64> = None;
        let mut pending_op = '*';
        let mut expect_term = true;
        for token in tokens {
            if expect_term {
                let v = self.term(&token)?;
                product = Some(match (product, pending_op) {
                    (None, _) => v,
                    (Some(p), '/') => p.checked_div(v).ok_or_else(bad)?,
                    (Some(p), _) => p.saturating_mul(v),
                });
                expect_term = false;
                continue;
            }
            match token.as_str() {
                "*" | "/" => pending_op = if token == "*" { '*' } else { '/' },
                "+" | "-" => {
                    total =
                        total.saturating_add(sign.saturating_mul(product.take().ok_or_else(bad)?));
                    sign = if token == "+" { 1 } else { -1 };
                    pending_op = '*';
                }
                _ => return Err(bad()),
            }
            expect_term = true;
        }
        if expect_term {
            return Err(bad());
        }
        Ok(total.saturating_add(sign.saturating_mul(product.ok_or_else(bad)?)))
    }

    fn term(&self, token: &str) -> Result<i64, VarError> {
        if let Ok(n) = token.parse::<i64>() {
            return Ok(n);
        }
        let name = token.trim_start_matches('$');
        if !is_name(name) {
            return Err(VarError::BadExpression(token.to_owned()));
        }
        let value = self.lookup(name)?;
        as_integer(value).ok_or_else(|| VarError::NotAnInteger {
            name: name.to_owned(),
            value: value.to_string(),
        })
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// A JSON value as an integer: numbers, and strings of digits (proto3 JSON
/// writes 64-bit integers as strings).
pub fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A JSON value as text for interpolation: strings without quotes.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.set("alice", json!("alice-x1"));
        v.set("room_a", json!("room_a-x1"));
        v.set("limits.maxTextBytes", json!(4096));
        v.set("seq", json!("7"));
        v.set("i", json!(3));
        v
    }

    #[test]
    fn substitution_cases() {
        let v = vars();
        let cases = [
            (json!("$alice"), json!("alice-x1")),
            (json!("to $alice!"), json!("to alice-x1!")),
            (json!("c${i}"), json!("c3")),
            (json!("${limits.maxTextBytes + 1}"), json!(4097)),
            (json!("${seq * 2 - 1}"), json!(13)),
            (json!("$$5"), json!("$5")),
            (json!("$any"), json!("$any")),
            (json!({"$capture": "x"}), json!({"$capture": "x"})),
            (json!({"$repeat": "ab", "times": "${i}"}), json!("ababab")),
            (
                json!({"$array": {"room": "r${k}", "n": "${k * 2}"}, "times": "${i - 1}"}),
                json!([{"room": "r1", "n": 2}, {"room": "r2", "n": 4}]),
            ),
            (
                json!({"sendMessage": {"room": "$room_a", "text": ["$i"]}}),
                json!({"sendMessage": {"room": "room_a-x1", "text": [3]}}),
            ),
            (json!("a.$alice."), json!("a.alice-x1.")),
        ];
        for (template, want) in cases {
            assert_eq!(v.substitute(&template).unwrap(), want, "{template}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let v = vars();
        assert_eq!(
            v.substitute(&json!("$bob")),
            Err(VarError::Unbound("bob".into()))
        );
        assert!(matches!(v.eval("1 +"), Err(VarError::BadExpression(_))));
        assert!(matches!(
            v.eval("alice + 1"),
            Err(VarError::NotAnInteger { .. })
        ));
        assert_eq!(v.eval("2 + 3 * 4").unwrap(), 14);
        assert_eq!(v.eval("limits.maxTextBytes / 17 + 1").unwrap(), 241);
        assert_eq!(v.eval("10 - 6 / 2").unwrap(), 7);
        assert!(v.eval("1 / 0").is_err());
        assert_eq!(v.eval_value(&json!("${i}")).unwrap(), 3);
    }
}
