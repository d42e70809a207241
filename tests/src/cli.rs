//! The `Cli` helper: runs `trace-agent <subcommand> ... --nats-url URL` as a user would and
//! captures what it prints; [`EntryLine`] is one line of `query --json`.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use trace_core::Severity;

use crate::agent::agent_binary;

/// The default time one CLI invocation may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the `trace-agent` CLI against one NATS server.
#[derive(Debug, Clone)]
pub struct Cli {
    binary: PathBuf,
    nats_url: String,
    timeout: Duration,
    env: Vec<(String, String)>,
}

/// What one invocation did.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The command line, for messages.
    pub command: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Its stdout, as text.
    pub stdout: String,
    /// Its stderr, as text.
    pub stderr: String,
}

impl CliOutput {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// A summary for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status,
            clip(&self.stdout, 4000),
            clip(&self.stderr, 4000)
        )
    }
}

impl Cli {
    /// A CLI that talks to `nats_url` (the agent binary is located or built as for [`crate::Agent`]).
    pub fn new(nats_url: &str) -> anyhow::Result<Cli> {
        Ok(Cli {
            binary: agent_binary()?,
            nats_url: nats_url.to_owned(),
            timeout: CLI_TIMEOUT,
            env: Vec::new(),
        })
    }

    /// The same CLI with another time limit per invocation.
    pub fn with_timeout(mut self, timeout: Duration) -> Cli {
        self.timeout = timeout;
        self
    }

    /// The same CLI with one more environment variable (`TRACE_AGENT_*` from the caller's
    /// environment are never passed on; these are).
    pub fn with_env(mut self, key: &str, value: &str) -> Cli {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs `trace-agent <args> --nats-url URL`; any exit status is returned, not judged.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--nats-url", &self.nats_url]);
        self.run_raw(&all).await
    }

    /// Runs `trace-agent <args>` exactly as given (no `--nats-url` appended).
    pub async fn run_raw(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        let command_line = format!("trace-agent {}", args.join(" "));
        let mut command = std::process::Command::new(&self.binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::agent::clean_env(&mut command);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let output = tokio::time::timeout(self.timeout, command.output())
            .await
            .map_err(|_| anyhow!("`{command_line}` did not finish within {:?}", self.timeout))?
            .with_context(|| format!("running `{command_line}`"))?;
        Ok(CliOutput {
            command: command_line,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs and requires exit status 0.
    pub async fn success(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        let output = self.run(args).await?;
        if !output.status.success() {
            bail!("expected success: {}", output.describe());
        }
        Ok(output)
    }

    /// Runs, requires success, and parses stdout as JSON Lines.
    pub async fn json_lines(&self, args: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
        let output = self.success(args).await?;
        parse_json_lines(&output.stdout).with_context(|| output.describe())
    }

    /// Runs, requires success, and parses stdout as one JSON value.
    pub async fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let output = self.success(args).await?;
        serde_json::from_str(output.stdout.trim())
            .with_context(|| format!("stdout is not one JSON value: {}", output.describe()))
    }

    /// `trace-agent query --json <args>`, each line parsed as an entry.
    pub async fn query(&self, args: &[&str]) -> anyhow::Result<Vec<EntryLine>> {
        let mut all = vec!["query", "--json"];
        all.extend_from_slice(args);
        self.json_lines(&all)
            .await?
            .into_iter()
            .map(EntryLine::from_json)
            .collect()
    }
}

/// Parses JSON Lines (blank lines ignored); the error names the bad line.
pub fn parse_json_lines(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("line {} is not JSON: {}", n + 1, clip(line, 300)))
        })
        .collect()
}

/// One entry as `query --json` prints it, with the wire field names. Optional fields may be
/// absent; `raw` keeps the whole line.
#[derive(Debug, Clone, Deserialize)]
pub struct EntryLine {
    /// The event id (ULID).
    pub id: String,
    /// When it happened.
    pub ts: DateTime<Utc>,
    /// Dotted type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Category wire name.
    pub category: String,
    /// Source.
    pub source: String,
    /// Severity.
    pub severity: Severity,
    /// Session id.
    #[serde(default)]
    pub session: Option<String>,
    /// Player id.
    #[serde(default)]
    pub player: Option<String>,
    /// Parent event id.
    #[serde(default)]
    pub parent: Option<String>,
    /// Performance figures.
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// The payload.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Metadata (`subject`, `received_at`, `wrapped`, ...).
    #[serde(default)]
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// The whole line.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

impl EntryLine {
    /// Parses one JSON entry.
    pub fn from_json(value: serde_json::Value) -> anyhow::Result<EntryLine> {
        let mut entry: EntryLine = serde_json::from_value(value.clone()).with_context(|| {
            format!(
                "not an entry with the wire field names: {}",
                clip(&value.to_string(), 500)
            )
        })?;
        entry.raw = value;
        Ok(entry)
    }

    /// Whether the agent wrapped this from a raw game payload (`meta.wrapped == true`).
    pub fn is_wrapped(&self) -> bool {
        self.meta
            .get("wrapped")
            .and_then(serde_json::Value::as_bool)
            == Some(true)
    }
}

fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
