//! Threshold rules: `RuleConfig` as the config file spells it (`[[rules]]`), and the
//! validated `Rule` the engine runs. Validation refuses a bad rule with its name and the
//! problem, before anything starts.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use trace_core::human::{format_duration, parse_duration};
use trace_core::Severity;

use crate::builtin_rules::builtin_rules;
use crate::catalogue;
use crate::error::MonitorError;
use crate::selector::Selector;
use crate::template::{Template, TemplateValues};

/// The message used when a rule gives none.
pub const DEFAULT_MESSAGE: &str =
    "{{name}}: {{metric}}{{labels}} is {{value}} ({{op}} {{threshold}})";

/// How a rule compares the metric with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Comparison {
    /// `>`
    #[serde(rename = ">")]
    Greater,
    /// `>=`
    #[serde(rename = ">=")]
    GreaterOrEqual,
    /// `<`
    #[serde(rename = "<")]
    Less,
    /// `<=`
    #[serde(rename = "<=")]
    LessOrEqual,
    /// `==`
    #[serde(rename = "==")]
    Equal,
    /// `!=`
    #[serde(rename = "!=")]
    NotEqual,
}

impl Comparison {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Equal => "==",
            Comparison::NotEqual => "!=",
        }
    }

    /// Whether `value <op> threshold` holds. `==` and `!=` allow for float rounding
    /// (a relative tolerance of a few ulps). NaN never satisfies any comparison.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        let scale = value.abs().max(threshold.abs()).max(1.0);
        let equal = (value - threshold).abs() <= 4.0 * f64::EPSILON * scale;
        match self {
            Comparison::Greater => value > threshold,
            Comparison::GreaterOrEqual => value >= threshold,
            Comparison::Less => value < threshold,
            Comparison::LessOrEqual => value <= threshold,
            Comparison::Equal => equal,
            Comparison::NotEqual => !equal,
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Comparison {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            ">" => Comparison::Greater,
            ">=" => Comparison::GreaterOrEqual,
            "<" => Comparison::Less,
            "<=" => Comparison::LessOrEqual,
            "==" | "=" => Comparison::Equal,
            "!=" => Comparison::NotEqual,
            other => return Err(format!("op {other:?} is not one of >, >=, <, <=, ==, !=")),
        })
    }
}

/// A rule as the config file spells it (`[[rules]]`).
///
/// ```toml
/// [[rules]]
/// name = "npc1_quiet"
/// metric = 'trace_source_last_seen_seconds{source="npc1"}'
/// op = ">"          # >, >=, <, <=, ==, != (also accepted as `comparison`)
/// value = 30
/// for = "10s"       # how long the condition must hold before firing (default 0s)
/// severity = "error" # warn (default), error or critical
/// message = "{{labels.source}} silent for {{value}}s"
/// renotify = "15m"  # repeat while firing (default: never)
/// ```
///
/// A rule named like a built-in overrides only the fields it sets; `enabled = false`
/// turns a rule (built-in or not) off. Every other rule needs `metric`, `op` and `value`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name; also the alert's `rule`.
    pub name: String,
    /// `false` turns the rule off (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Metric selector: a catalogue name with optional `{label="value"}` matchers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Comparison operator.
    #[serde(default, alias = "comparison", skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// How long the condition must hold before the alert fires (`30s`).
    #[serde(
        default,
        rename = "for",
        deserialize_with = "duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub for_duration: Option<String>,
    /// `warn`, `error` or `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Message template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Re-notify interval while firing (`15m`).
    #[serde(
        default,
        deserialize_with = "duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub renotify: Option<String>,
}

/// Durations may be written as strings (`"30s"`) or whole seconds (`30`).
fn duration_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => None,
        Some(Raw::Secs(n)) => Some(format!("{n}s")),
        Some(Raw::Text(t)) => Some(t),
    })
}

impl RuleConfig {
    /// Fields set in `self` win over those in `base` (a config rule over a built-in).
    fn over(&self, base: &RuleConfig) -> RuleConfig {
        RuleConfig {
            name: self.name.clone(),
            enabled: self.enabled.or(base.enabled),
            metric: self.metric.clone().or_else(|| base.metric.clone()),
            op: self.op.clone().or_else(|| base.op.clone()),
            value: self.value.or(base.value),
            for_duration: self
                .for_duration
                .clone()
                .or_else(|| base.for_duration.clone()),
            severity: self.severity.clone().or_else(|| base.severity.clone()),
            message: self.message.clone().or_else(|| base.message.clone()),
            renotify: self.renotify.clone().or_else(|| base.renotify.clone()),
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Which series it looks at.
    pub selector: Selector,
    /// The comparison.
    pub op: Comparison,
    /// The threshold.
    pub threshold: f64,
    /// How long the condition must hold before firing.
    pub for_duration: Duration,
    /// Severity of its alerts.
    pub severity: Severity,
    /// The message template.
    pub message: Template,
    /// Re-notify interval while firing.
    pub renotify: Option<Duration>,
    /// True when it comes from the built-in set.
    pub builtin: bool,
}

impl Rule {
    /// Validates one rule; the error names the rule and the problem.
    pub fn from_config(config: &RuleConfig, builtin: bool) -> Result<Rule, MonitorError> {
        let name = config.name.trim();
        let invalid = |problem: String| MonitorError::InvalidRule {
            rule: name.to_string(),
            problem,
        };
        if name.is_empty() {
            return Err(MonitorError::InvalidRule {
                rule: String::new(),
                problem: "every rule needs a name".into(),
            });
        }
        let metric = config
            .metric
            .as_deref()
            .ok_or_else(|| invalid("`metric` is missing".into()))?;
        let selector = Selector::parse(metric).map_err(|e| invalid(format!("metric: {e}")))?;
        let info = catalogue::lookup(&selector.metric).ok_or_else(|| {
            invalid(format!(
                "metric {:?} is not in the catalogue; known metrics: {}",
                selector.metric,
                catalogue::rule_metric_names().join(", ")
            ))
        })?;
        for m in &selector.matchers {
            if !info.labels.contains(&m.label.as_str()) {
                return Err(invalid(format!(
                    "metric {} has no label {:?} (it has: {})",
                    info.name,
                    m.label,
                    if info.labels.is_empty() {
                        "none".to_string()
                    } else {
                        info.labels.join(", ")
                    }
                )));
            }
        }
        let op: Comparison = config
            .op
            .as_deref()
            .ok_or_else(|| invalid("`op` is missing (one of >, >=, <, <=, ==, !=)".into()))?
            .parse()
            .map_err(invalid)?;
        let threshold = config
            .value
            .ok_or_else(|| invalid("`value` is missing".into()))?;
        if !threshold.is_finite() {
            return Err(invalid(format!("value {threshold} is not a finite number")));
        }
        let for_duration = match config.for_duration.as_deref() {
            Some(text) => parse_duration(text).map_err(|e| invalid(format!("for: {e}")))?,
            None => Duration::ZERO,
        };
        let severity = match config.severity.as_deref() {
            None => Severity::Warn,
            Some(text) => match text.parse::<Severity>() {
                Ok(s) if s >= Severity::Warn => s,
                _ => {
                    return Err(invalid(format!(
                        "severity {text:?} is not one of warn, error, critical"
                    )))
                }
            },
        };
        let message = Template::parse(
            config.message.as_deref().unwrap_or(DEFAULT_MESSAGE),
            info.labels,
        )
        .map_err(invalid)?;
        let renotify = match config.renotify.as_deref() {
            None => None,
            Some(text) => {
                let d = parse_duration(text).map_err(|e| invalid(format!("renotify: {e}")))?;
                if d < Duration::from_secs(1) {
                    return Err(invalid(format!(
                        "renotify {text:?} is shorter than 1s; leave it out to never re-notify"
                    )));
                }
                Some(d)
            }
        };
        Ok(Rule {
            name: name.to_string(),
            selector,
            op,
            threshold,
            for_duration,
            severity,
            message,
            renotify,
            builtin,
        })
    }

    /// The alert message for a series with `labels` at `value`.
    pub fn render_message(&self, value: f64, labels: &BTreeMap<String, String>) -> String {
        self.message.render(&TemplateValues {
            name: &self.name,
            value,
            threshold: self.threshold,
            op: self.op.as_str(),
            metric: &self.selector.metric,
            severity: self.severity.as_str(),
            for_duration: &format_duration(self.for_duration),
            labels,
        })
    }
}

/// Validates the configured rules together with the built-ins (when `with_builtins`):
/// a configured rule named like a built-in overrides the fields it sets, `enabled = false`
/// drops a rule, names must be unique. The first problem is returned.
pub fn compile_rules(
    configured: &[RuleConfig],
    with_builtins: bool,
) -> Result<Vec<Rule>, MonitorError> {
    let mut seen = HashSet::new();
    for c in configured {
        let name = c.name.trim();
        if !name.is_empty() && !seen.insert(name.to_string()) {
            return Err(MonitorError::InvalidRule {
                rule: name.to_string(),
                problem: "two rules have this name; names must be unique".into(),
            });
        }
    }
    let find = |name: &str| configured.iter().find(|c| c.name.trim() == name);
    let mut rules = Vec::new();
    let builtins = if with_builtins {
        builtin_rules()
    } else {
        Vec::new()
    };
    for base in &builtins {
        let merged = match find(&base.name) {
            Some(over) => over.over(base),
            None => base.clone(),
        };
        if merged.enabled != Some(false) {
            rules.push(Rule::from_config(&merged, true)?);
        }
    }
    for c in configured {
        let overrides_builtin = builtins.iter().any(|b| b.name == c.name.trim());
        if !overrides_builtin && c.enabled != Some(false) {
            rules.push(Rule::from_config(c, false)?);
        }
    }
    Ok(rules)
}
