//! Alert message templates: `{{name}}`, `{{value}}`, `{{threshold}}`, `{{op}}`, `{{metric}}`,
//! `{{severity}}`, `{{for}}`, `{{labels}}` (all labels as `{a="x"}`) and `{{labels.<label>}}`,
//! checked when the rule is loaded so a typo is refused at start rather than shown in an
//! alert.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What a placeholder stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placeholder {
    Name,
    Value,
    Threshold,
    Op,
    Metric,
    Severity,
    For,
    Labels,
    Label(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Placeholder),
}

/// A parsed message template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// The values a template is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct TemplateValues<'a> {
    /// The rule's name.
    pub name: &'a str,
    /// The observed value.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// The comparison, as written (`>`).
    pub op: &'a str,
    /// The metric name.
    pub metric: &'a str,
    /// The severity name.
    pub severity: &'a str,
    /// The `for` duration, as written (`30s`).
    pub for_duration: &'a str,
    /// The series' labels.
    pub labels: &'a BTreeMap<String, String>,
}

impl Template {
    /// Parses `text`; `known_labels` are the labels the rule's metric carries.
    pub fn parse(text: &str, known_labels: &[&str]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("message: unclosed {{{{ in {text:?}"))?;
            let key = after[..close].trim();
            let field = match key {
                "name" => Placeholder::Name,
                "value" => Placeholder::Value,
                "threshold" => Placeholder::Threshold,
                "op" => Placeholder::Op,
                "metric" => Placeholder::Metric,
                "severity" => Placeholder::Severity,
                "for" => Placeholder::For,
                "labels" => Placeholder::Labels,
                _ => match key.strip_prefix("labels.") {
                    Some(label) if known_labels.contains(&label) => {
                        Placeholder::Label(label.to_string())
                    }
                    Some(label) => {
                        return Err(format!(
                            "message: {{{{labels.{label}}}}}: the metric has no label {label:?} (it has: {})",
                            if known_labels.is_empty() { "none".to_string() } else { known_labels.join(", ") }
                        ))
                    }
                    None => {
                        return Err(format!(
                            "message: unknown placeholder {{{{{key}}}}}; use name, value, threshold, op, metric, severity, for, labels or labels.<label>"
                        ))
                    }
                },
            };
            parts.push(Part::Field(field));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template {
            source: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Fills in the placeholders.
    pub fn render(&self, v: &TemplateValues<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => match f {
                    Placeholder::Name => out.push_str(v.name),
                    Placeholder::Value => out.push_str(&format_number(v.value)),
                    Placeholder::Threshold => out.push_str(&format_number(v.threshold)),
                    Placeholder::Op => out.push_str(v.op),
                    Placeholder::Metric => out.push_str(v.metric),
                    Placeholder::Severity => out.push_str(v.severity),
                    Placeholder::For => out.push_str(v.for_duration),
                    Placeholder::Labels => {
                        if !v.labels.is_empty() {
                            out.push('{');
                            for (i, (k, val)) in v.labels.iter().enumerate() {
                                if i > 0 {
                                    out.push(',');
                                }
                                let _ = write!(out, "{k}={val:?}");
                            }
                            out.push('}');
                        }
                    }
                    Placeholder::Label(l) => {
                        out.push_str(v.labels.get(l).map_or("", String::as_str))
                    }
                },
            }
        }
        out
    }
}

/// Whole numbers without decimals, others with up to three.
pub fn format_number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.is_finite() {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_placeholders() {
        let t = Template::parse(
            "{{ name }}: {{labels.source}} at {{value}} ({{op}} {{threshold}}) {{labels}}",
            &["source"],
        )
        .expect("parses");
        let labels: BTreeMap<String, String> = [("source".to_string(), "npc1".to_string())].into();
        let text = t.render(&TemplateValues {
            name: "quiet",
            value: 75.25,
            threshold: 60.0,
            op: ">",
            metric: "m",
            severity: "warn",
            for_duration: "0s",
            labels: &labels,
        });
        assert_eq!(text, "quiet: npc1 at 75.25 (> 60) {source=\"npc1\"}");
    }

    #[test]
    fn refuses_unknown_placeholders() {
        assert!(Template::parse("{{nmae}}", &[]).is_err());
        assert!(Template::parse("{{labels.source}}", &[]).is_err());
        assert!(Template::parse("{{value", &[]).is_err());
        assert!(Template::parse("no placeholders", &[]).is_ok());
    }

    #[test]
    fn numbers() {
        assert_eq!(format_number(10000.0), "10000");
        assert_eq!(format_number(0.05), "0.05");
        assert_eq!(format_number(1.0 / 3.0), "0.333");
    }
}
