//! The subject scheme: which subjects the agent records, and how a subject names the source
//! kind, the source and the event type (`game.<kind>.<source>.<type...>`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::entry::Category;
use crate::error::SubjectError;

/// The kind of service that emits on a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// NPC / game agents (`game.agent.>`).
    Agent,
    /// The story graph (`game.story.>`).
    Story,
    /// The state manager (`game.state.>`).
    State,
    /// The trace agent itself (`trace.>` outputs recorded as entries).
    System,
}

impl SourceKind {
    /// The subject token and config name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Agent => "agent",
            SourceKind::Story => "story",
            SourceKind::State => "state",
            SourceKind::System => "system",
        }
    }

    /// The category given to an event from this kind when neither the envelope nor the type
    /// names one.
    pub fn default_category(self) -> Category {
        match self {
            SourceKind::Agent => Category::AgentDecision,
            SourceKind::Story | SourceKind::State => Category::StateChange,
            SourceKind::System => Category::SystemEvent,
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(SourceKind::Agent),
            "story" => Ok(SourceKind::Story),
            "state" => Ok(SourceKind::State),
            "system" => Ok(SourceKind::System),
            other => Err(format!(
                "unknown source kind {other:?}: use agent, story, state or system"
            )),
        }
    }
}

/// One recorded subject pattern and the kind of source publishing on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSubject {
    /// A NATS subject pattern, e.g. `game.agent.>`.
    pub subject: String,
    /// Who publishes there.
    pub kind: SourceKind,
}

impl InputSubject {
    /// Validates and builds an input; the pattern must be a valid NATS subject whose `>` (if
    /// any) is the last token.
    pub fn new(subject: impl Into<String>, kind: SourceKind) -> Result<Self, SubjectError> {
        let subject = subject.into();
        validate_pattern(&subject)?;
        Ok(InputSubject { subject, kind })
    }

    /// Number of leading tokens before the first wildcard: the tokens that name the kind, so
    /// the next one is the source.
    fn prefix_len(&self) -> usize {
        self.subject
            .split('.')
            .take_while(|t| *t != "*" && *t != ">")
            .count()
    }
}

/// The defaults: agents, story graph and state manager.
pub fn default_inputs() -> Vec<InputSubject> {
    vec![
        InputSubject {
            subject: "game.agent.>".into(),
            kind: SourceKind::Agent,
        },
        InputSubject {
            subject: "game.story.>".into(),
            kind: SourceKind::Story,
        },
        InputSubject {
            subject: "game.state.>".into(),
            kind: SourceKind::State,
        },
    ]
}

/// What a subject says about the message on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectInfo {
    /// The kind of source (from the matching input).
    pub kind: SourceKind,
    /// The source: the token after the input's literal prefix, or the kind's name.
    pub source: String,
    /// The event type: the remaining tokens joined by `.`, or `message`.
    pub event_type: String,
}

/// Maps subjects to `SubjectInfo` with the configured inputs.
#[derive(Debug, Clone)]
pub struct SubjectScheme {
    inputs: Vec<InputSubject>,
}

impl SubjectScheme {
    /// A scheme over these inputs (first match wins).
    pub fn new(inputs: Vec<InputSubject>) -> Self {
        SubjectScheme { inputs }
    }

    /// The inputs, in match order.
    pub fn inputs(&self) -> &[InputSubject] {
        &self.inputs
    }

    /// Classifies a subject. A subject that matches no input (possible when the stream binds
    /// more subjects than configured) is treated as the first input's kind with the whole
    /// subject as its type's source.
    ///
    /// The source and type are always valid names (non-empty, no control characters), since
    /// entries carrying them must read back from the store: nats-server accepts subjects with
    /// control characters, which become U+FFFD here; empty tokens are skipped.
    pub fn classify(&self, subject: &str) -> SubjectInfo {
        // Every message passes here: two allocations (the names), no token vectors.
        let matched = self
            .inputs
            .iter()
            .find(|i| subject_matches(&i.subject, subject));
        let (kind, prefix) = match matched {
            Some(i) => (i.kind, i.prefix_len()),
            // no input matches: no token is taken as the source
            None => (
                self.inputs.first().map_or(SourceKind::Agent, |i| i.kind),
                usize::MAX,
            ),
        };
        let mut tokens = subject.split('.').skip(prefix);
        let source = match tokens.next() {
            Some(s) if !s.is_empty() => token_name(s),
            _ => kind.as_str().to_owned(),
        };
        let mut event_type = String::with_capacity(subject.len());
        for token in tokens.filter(|t| !t.is_empty()) {
            if !event_type.is_empty() {
                event_type.push('.');
            }
            push_token_name(&mut event_type, token);
        }
        if event_type.is_empty() {
            event_type.push_str("message");
        }
        SubjectInfo {
            kind,
            source,
            event_type,
        }
    }
}

impl Default for SubjectScheme {
    fn default() -> Self {
        SubjectScheme::new(default_inputs())
    }
}

/// A subject token as a name: control characters replaced by U+FFFD.
fn token_name(token: &str) -> String {
    let mut name = String::with_capacity(token.len());
    push_token_name(&mut name, token);
    name
}

/// Appends `token` to `name` with control characters replaced by U+FFFD.
fn push_token_name(name: &mut String, token: &str) {
    // printable ASCII, by far the common case, is copied as it is
    if token.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        name.push_str(token);
    } else {
        name.extend(
            token
                .chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c }),
        );
    }
}

/// The subject a publisher uses: `game.<kind>.<source>.<type>`.
pub fn publish_subject(
    kind: SourceKind,
    source: &str,
    event_type: &str,
) -> Result<String, SubjectError> {
    let bad = |reason: &str| SubjectError {
        subject: format!("game.{kind}.{source}.{event_type}"),
        reason: reason.to_owned(),
    };
    if !is_token(source) {
        return Err(bad(
            "the source must be one token: no dots, spaces or wildcards",
        ));
    }
    if event_type.is_empty() || !event_type.split('.').all(is_token) {
        return Err(bad(
            "the type must be dotted tokens without spaces or wildcards",
        ));
    }
    Ok(format!("game.{kind}.{source}.{event_type}"))
}

fn is_token(t: &str) -> bool {
    !t.is_empty()
        && t != "*"
        && t != ">"
        && !t.contains(['.', ' ', '\t', '\r', '\n'])
        && !t.contains(['*', '>'])
}

/// Checks a subject pattern: non-empty tokens, no whitespace, `>` only last.
pub fn validate_pattern(pattern: &str) -> Result<(), SubjectError> {
    let bad = |reason: &str| {
        Err(SubjectError {
            subject: pattern.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if pattern.is_empty() {
        return bad("empty subject");
    }
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return bad("empty token (two dots in a row, or a leading/trailing dot)");
        }
        if t.contains([' ', '\t', '\r', '\n']) {
            return bad("whitespace in a subject");
        }
        if *t == ">" && i + 1 != tokens.len() {
            return bad("`>` must be the last token");
        }
        if t.len() > 1 && t.contains(['*', '>']) {
            return bad("wildcards must be whole tokens");
        }
    }
    Ok(())
}

/// NATS subject matching: `*` matches one token, `>` one or more trailing tokens.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_input_prefix() {
        let scheme = SubjectScheme::default();
        let info = scheme.classify("game.agent.npc7.decision.made");
        assert_eq!(info.kind, SourceKind::Agent);
        assert_eq!(info.source, "npc7");
        assert_eq!(info.event_type, "decision.made");
        let info = scheme.classify("game.story.graph");
        assert_eq!(info.kind, SourceKind::Story);
        assert_eq!(info.source, "graph");
        assert_eq!(info.event_type, "message");
        // a subject outside every input: the first input's kind, first token as source
        let info = scheme.classify("other");
        assert_eq!(info.kind, SourceKind::Agent);
        assert_eq!(info.source, "agent");
        let info = scheme.classify("game.state.world");
        assert_eq!(info.source, "world");
        assert_eq!(info.event_type, "message");
        // always valid names: nats-server takes control characters in subjects
        let info = scheme.classify("game.agent.\u{1}npc.a\u{7f}..b.");
        assert_eq!(info.source, "\u{fffd}npc");
        assert_eq!(info.event_type, "a\u{fffd}.b");
        let info = scheme.classify("game.agent..x");
        assert_eq!(
            (info.source.as_str(), info.event_type.as_str()),
            ("agent", "x")
        );
    }

    #[test]
    fn wildcard_matching() {
        assert!(subject_matches("game.agent.>", "game.agent.a.b"));
        assert!(!subject_matches("game.agent.>", "game.agent"));
        assert!(subject_matches("game.*.x", "game.story.x"));
        assert!(!subject_matches("game.*.x", "game.story.y"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }

    #[test]
    fn patterns_are_validated() {
        assert!(validate_pattern("game.agent.>").is_ok());
        assert!(validate_pattern("game.>.x").is_err());
        assert!(validate_pattern("game..x").is_err());
        assert!(validate_pattern("game.a b").is_err());
        assert!(validate_pattern("game.ab*").is_err());
    }

    #[test]
    fn publish_subject_checks_tokens() {
        assert_eq!(
            publish_subject(SourceKind::Agent, "npc1", "decision.made").ok(),
            Some("game.agent.npc1.decision.made".to_owned())
        );
        assert!(publish_subject(SourceKind::Agent, "npc.1", "x").is_err());
        assert!(publish_subject(SourceKind::Agent, "npc1", "a..b").is_err());
    }
}
