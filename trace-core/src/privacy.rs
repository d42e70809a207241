//! Privacy before storage: configured fields are removed (redacted) or replaced by a keyed
//! pseudonym (HMAC-SHA256), so the same player stays the same id across events and restarts
//! without the real id being recoverable from what is stored or analysed.

use hmac::{Hmac, Mac};
use rmpv::Value;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::entry::TraceEntry;

/// `[privacy]`: field paths are `player`, `session`, `source`, `data.<key>[.<key>...]` or
/// `meta.<key>[.<key>...]`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Fields removed before anything is stored or analysed.
    pub redact: Vec<String>,
    /// Fields replaced by `ps_<hex>`, a keyed hash of their value.
    pub pseudonymise: Vec<String>,
    /// The HMAC key (at least 16 characters); never logged or printed.
    #[serde(skip_serializing)]
    pub key: Option<String>,
}

impl std::fmt::Debug for PrivacyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivacyConfig")
            .field("redact", &self.redact)
            .field("pseudonymise", &self.pseudonymise)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FieldPath {
    Player,
    Session,
    Source,
    Data(Vec<String>),
    Meta(Vec<String>),
}

impl FieldPath {
    fn parse(path: &str) -> Result<FieldPath, String> {
        let mut parts = path.split('.');
        let head = parts.next().unwrap_or("");
        let rest: Vec<String> = parts.map(str::to_owned).collect();
        if rest.iter().any(String::is_empty) {
            return Err(format!("{path:?} has an empty segment"));
        }
        match (head, rest.is_empty()) {
            ("player", true) => Ok(FieldPath::Player),
            ("session", true) => Ok(FieldPath::Session),
            ("source", true) => Ok(FieldPath::Source),
            ("data", false) => Ok(FieldPath::Data(rest)),
            ("meta", false) => Ok(FieldPath::Meta(rest)),
            _ => Err(format!(
                "{path:?} is not a field path: use player, session, source, data.<key>... or meta.<key>..."
            )),
        }
    }
}

/// The compiled policy.
#[derive(Clone)]
pub struct Privacy {
    redact: Vec<FieldPath>,
    pseudonymise: Vec<FieldPath>,
    key: Vec<u8>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("redact", &self.redact)
            .field("pseudonymise", &self.pseudonymise)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Privacy {
    /// Checks the configuration; the error names the key (`redact`, `pseudonymise`, `key`).
    pub fn new(cfg: &PrivacyConfig) -> Result<Privacy, (&'static str, String)> {
        let redact = cfg
            .redact
            .iter()
            .map(|p| FieldPath::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ("redact", e))?;
        let pseudonymise = cfg
            .pseudonymise
            .iter()
            .map(|p| FieldPath::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ("pseudonymise", e))?;
        let key = cfg.key.clone().unwrap_or_default();
        if !pseudonymise.is_empty() && key.chars().count() < 16 {
            return Err((
                "key",
                "pseudonymise needs a key of at least 16 characters (set [privacy] key or TRACE_AGENT_PRIVACY__KEY)".into(),
            ));
        }
        Ok(Privacy {
            redact,
            pseudonymise,
            key: key.into_bytes(),
        })
    }

    /// Whether the policy changes anything.
    pub fn is_active(&self) -> bool {
        !self.redact.is_empty() || !self.pseudonymise.is_empty()
    }

    /// Whether `player` is pseudonymised (then `forget --player` must hash its argument).
    pub fn pseudonymises_player(&self) -> bool {
        self.pseudonymise.contains(&FieldPath::Player)
    }

    /// Whether `value` has the shape of a pseudonym (`ps_` and 20 lowercase hex digits).
    pub fn is_pseudonym(&self, value: &str) -> bool {
        value.len() == 23
            && value.starts_with("ps_")
            && value[3..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// The pseudonym of a value: `ps_` and 20 hex digits of HMAC-SHA256(key, value).
    pub fn pseudonym(&self, value: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return "ps_".to_owned();
        };
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(23);
        out.push_str("ps_");
        for b in digest.iter().take(10) {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// Applies the policy to an entry: redactions first, then pseudonyms.
    pub fn apply(&self, e: &mut TraceEntry) {
        for path in &self.redact {
            match path {
                FieldPath::Player => e.player = None,
                FieldPath::Session => e.session = None,
                FieldPath::Source => e.source = "redacted".to_owned(),
                FieldPath::Data(keys) => {
                    remove_in(&mut e.data, keys);
                }
                FieldPath::Meta(keys) => remove_in_meta(&mut e.meta, keys),
            }
        }
        for path in &self.pseudonymise {
            match path {
                FieldPath::Player => e.player = e.player.as_deref().map(|p| self.pseudonym(p)),
                FieldPath::Session => e.session = e.session.as_deref().map(|s| self.pseudonym(s)),
                FieldPath::Source => e.source = self.pseudonym(&e.source),
                FieldPath::Data(keys) => {
                    if let Some(v) = get_in(&mut e.data, keys) {
                        *v = Value::from(self.pseudonym(&value_text(v)));
                    }
                }
                FieldPath::Meta(keys) => {
                    if let Some((first, rest)) = keys.split_first() {
                        if let Some(v) = e.meta.get_mut(first) {
                            let target = if rest.is_empty() {
                                Some(v)
                            } else {
                                get_in(v, rest)
                            };
                            if let Some(t) = target {
                                *t = Value::from(self.pseudonym(&value_text(t)));
                            }
                        }
                    }
                }
            }
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{v}")),
        other => format!("{other}"),
    }
}

fn get_in<'a>(v: &'a mut Value, keys: &[String]) -> Option<&'a mut Value> {
    let (first, rest) = keys.split_first()?;
    let Value::Map(entries) = v else { return None };
    let child = entries
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some(first))
        .map(|(_, v)| v)?;
    if rest.is_empty() {
        Some(child)
    } else {
        get_in(child, rest)
    }
}

fn remove_in(v: &mut Value, keys: &[String]) {
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let parent = if parents.is_empty() {
        Some(v)
    } else {
        get_in(v, parents)
    };
    if let Some(Value::Map(entries)) = parent {
        entries.retain(|(k, _)| k.as_str() != Some(last));
    }
}

fn remove_in_meta(meta: &mut std::collections::BTreeMap<String, Value>, keys: &[String]) {
    match keys {
        [] => {}
        [only] => {
            meta.remove(only);
        }
        [first, rest @ ..] => {
            if let Some(v) = meta.get_mut(first) {
                remove_in(v, rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(redact: &[&str], pseudo: &[&str]) -> Privacy {
        Privacy::new(&PrivacyConfig {
            redact: redact.iter().map(|s| (*s).to_owned()).collect(),
            pseudonymise: pseudo.iter().map(|s| (*s).to_owned()).collect(),
            key: Some("a-long-enough-secret-key".into()),
        })
        .expect("valid policy")
    }

    #[test]
    fn redacts_and_pseudonymises_consistently() {
        let p = policy(&["data.email", "meta.ip"], &["player", "data.profile.name"]);
        let mut e = TraceEntry::new("player.login", "auth");
        e.player = Some("alice".into());
        e.data = Value::Map(vec![
            ("email".into(), Value::from("alice@example.com")),
            (
                "profile".into(),
                Value::Map(vec![("name".into(), Value::from("Alice A."))]),
            ),
            ("level".into(), Value::from(7)),
        ]);
        e.meta.insert("ip".into(), Value::from("10.1.2.3"));
        let mut e2 = e.clone();
        p.apply(&mut e);
        p.apply(&mut e2);
        let pseudo = e.player.clone().expect("player kept as a pseudonym");
        assert!(pseudo.starts_with("ps_") && pseudo.len() == 23 && !pseudo.contains("alice"));
        assert_eq!(
            e.player, e2.player,
            "the same player stays the same pseudonym"
        );
        assert_eq!(p.pseudonym("alice"), pseudo);
        assert_ne!(p.pseudonym("bob"), pseudo);
        let text = format!("{:?}", e.data);
        assert!(
            !text.contains("alice@example.com") && !text.contains("Alice A."),
            "{text}"
        );
        assert!(text.contains("level"));
        assert!(!e.meta.contains_key("ip"));
        // another key gives other pseudonyms: not reversible without the key
        let other = Privacy::new(&PrivacyConfig {
            pseudonymise: vec!["player".into()],
            key: Some("another-secret-key-here".into()),
            ..PrivacyConfig::default()
        })
        .expect("valid");
        assert_ne!(other.pseudonym("alice"), pseudo);
        assert!(
            !format!("{p:?}").contains("a-long-enough-secret-key"),
            "the key is never printed"
        );
    }

    #[test]
    fn bad_policies_name_the_key() {
        let bad = |cfg: PrivacyConfig| Privacy::new(&cfg).expect_err("refused").0;
        assert_eq!(
            bad(PrivacyConfig {
                redact: vec!["nowhere".into()],
                ..Default::default()
            }),
            "redact"
        );
        assert_eq!(
            bad(PrivacyConfig {
                pseudonymise: vec!["player".into()],
                ..Default::default()
            }),
            "key"
        );
        assert_eq!(
            bad(PrivacyConfig {
                pseudonymise: vec!["data..x".into()],
                key: Some("k".repeat(20)),
                ..Default::default()
            }),
            "pseudonymise"
        );
    }
}
