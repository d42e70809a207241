//! Metric selectors in rules: `name` or `name{label="value",other!="x"}`, the way PromQL
//! writes them (only `=` and `!=`; a missing label reads as the empty string).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How a label matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    /// `=`
    #[serde(rename = "=")]
    Equal,
    /// `!=`
    #[serde(rename = "!=")]
    NotEqual,
}

/// One `label="value"` condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelMatcher {
    /// Label name.
    pub label: String,
    /// `=` or `!=`.
    pub op: MatchOp,
    /// The value compared with.
    pub value: String,
}

/// A metric name with optional label matchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// Metric name.
    pub metric: String,
    /// All must hold.
    pub matchers: Vec<LabelMatcher>,
}

impl Selector {
    /// Parses `name` or `name{a="x",b!="y"}`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        let (name, rest) = match text.find('{') {
            Some(i) => (text[..i].trim(), Some(&text[i..])),
            None => (text, None),
        };
        if !is_metric_name(name) {
            return Err(format!(
                "{name:?} is not a metric name (letters, digits, `_` and `:`, not starting with a digit)"
            ));
        }
        let matchers = match rest {
            Some(braces) => parse_matchers(braces)?,
            None => Vec::new(),
        };
        Ok(Selector {
            metric: name.to_string(),
            matchers,
        })
    }

    /// Whether a series with this name and these labels is selected.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        name == self.metric
            && self.matchers.iter().all(|m| {
                let actual = labels.get(&m.label).map_or("", String::as_str);
                match m.op {
                    MatchOp::Equal => actual == m.value,
                    MatchOp::NotEqual => actual != m.value,
                }
            })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metric)?;
        if !self.matchers.is_empty() {
            f.write_str("{")?;
            for (i, m) in self.matchers.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                let op = match m.op {
                    MatchOp::Equal => "=",
                    MatchOp::NotEqual => "!=",
                };
                write!(f, "{}{op}{:?}", m.label, m.value)?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `{a="x", b!="y"}` (the braces included).
fn parse_matchers(text: &str) -> Result<Vec<LabelMatcher>, String> {
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.trim_end().strip_suffix('}'))
        .ok_or_else(|| format!("{text:?}: label matchers must be enclosed in {{ }}"))?;
    let mut chars = inner.chars().peekable();
    let mut out = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut label = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == '!' || c.is_whitespace() {
                break;
            }
            label.push(c);
            chars.next();
        }
        if !is_label_name(&label) {
            return Err(format!("{label:?} is not a label name in {text:?}"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let op = match (chars.next(), chars.peek()) {
            (Some('='), Some('~')) | (Some('!'), Some('~')) => {
                return Err(format!(
                "regular-expression matchers (=~, !~) are not supported in {text:?}; use = or !="
            ))
            }
            (Some('='), _) => MatchOp::Equal,
            (Some('!'), Some('=')) => {
                chars.next();
                MatchOp::NotEqual
            }
            _ => return Err(format!("expected = or != after {label:?} in {text:?}")),
        };
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('"') {
            return Err(format!(
                "the value of {label:?} must be in double quotes in {text:?}"
            ));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some(c @ ('"' | '\\')) => value.push(c),
                    Some('n') => value.push('\n'),
                    other => {
                        return Err(format!(
                            "unknown escape \\{} in {text:?}",
                            other.map(String::from).unwrap_or_default()
                        ))
                    }
                },
                Some(c) => value.push(c),
                None => return Err(format!("unterminated string in {text:?}")),
            }
        }
        out.push(LabelMatcher { label, op, value });
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            Some(',') | None => {}
            Some(c) => {
                return Err(format!(
                    "expected , between matchers, got {c:?} in {text:?}"
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches() {
        let s = Selector::parse(r#"trace_source_events_total{source="npc1", type!="x"}"#)
            .expect("parses");
        assert_eq!(s.metric, "trace_source_events_total");
        assert_eq!(s.matchers.len(), 2);
        assert!(s.matches(
            "trace_source_events_total",
            &labels(&[("source", "npc1"), ("type", "y")])
        ));
        assert!(!s.matches(
            "trace_source_events_total",
            &labels(&[("source", "npc1"), ("type", "x")])
        ));
        assert!(!s.matches("other_metric", &labels(&[("source", "npc1")])));
        assert_eq!(
            Selector::parse(&s.to_string()).expect("round trip"),
            s,
            "Display writes what parse reads"
        );
    }

    #[test]
    fn bare_name_and_escapes() {
        let s = Selector::parse("trace_agent_consumer_lag").expect("parses");
        assert!(s.matchers.is_empty());
        let s = Selector::parse(r#"m{source="a\"b"}"#).expect("parses");
        assert_eq!(s.matchers[0].value, "a\"b");
    }

    #[test]
    fn refuses_bad_selectors() {
        for bad in [
            "",
            "9lives",
            "m{source=npc1}",
            "m{source=\"npc1\"",
            "m{source=~\"npc.*\"}",
            "m{source=\"a\" type=\"b\"}",
            "m{=\"a\"}",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
