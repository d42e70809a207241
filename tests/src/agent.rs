//! The `Agent` fixture: the real `trace-agent run` process against a test's NATS server, with
//! its own data dir and log files; killed on Drop, its log tail printed when a test fails.

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::api::{api_request_with_timeout, ApiError, StoreInfo};
use crate::http::{free_local_addr, http_get, HttpResponse};
use crate::logs;
use crate::wait::Deadline;

/// How long `wait_ready` waits for the API to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of each log printed in failure messages.
const TAIL_LINES: usize = 40;

/// How to start an agent beyond the NATS URL, data dir and `--http` address the fixture
/// always passes.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// TOML written to a file and passed as `--config`.
    pub config: Option<String>,
    /// Extra environment variables (on top of `RUST_LOG=info`).
    pub env: Vec<(String, String)>,
    /// Where the monitoring endpoints listen, passed as `--http ADDR`. `None`: a free port
    /// of 127.0.0.1 picked at start (never the agent's default `127.0.0.1:9464`, which
    /// tests running in parallel would fight over).
    pub http: Option<SocketAddr>,
    /// More arguments for `trace-agent run`, after the fixture's own.
    pub args: Vec<String>,
    /// The data dir, passed as `--data-dir` (created if missing). `None`: `data/` in the
    /// fixture's temp dir. A test that puts the store on a filesystem of its own (a small
    /// tmpfs, to fill it) sets this.
    pub data_dir: Option<PathBuf>,
}

impl AgentOptions {
    /// Options with this config file content.
    pub fn with_config(toml: impl Into<String>) -> Self {
        AgentOptions {
            config: Some(toml.into()),
            ..AgentOptions::default()
        }
    }

    /// The same options with more `trace-agent run` arguments.
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A `trace-agent run` process owned by one test.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    binary: PathBuf,
    nats_url: String,
    options: AgentOptions,
    /// Holds `data/`, the config file and the logs.
    dir: TempDir,
    client: async_nats::Client,
    /// `--http`: the options' address or a free one picked at start (kept across restarts).
    http_addr: SocketAddr,
    runs: u32,
}

impl Agent {
    /// Starts `trace-agent run --nats-url URL --data-dir DIR --http ADDR [--config FILE]`
    /// and waits until its API answers `store_info`.
    pub async fn start(nats_url: &str, options: AgentOptions) -> anyhow::Result<Agent> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(nats_url)
            .await
            .with_context(|| format!("connecting the test's API client to {nats_url}"))?;
        Self::start_with_client(nats_url, options, client).await
    }

    /// Like [`Agent::start`], with `client` (e.g. one with credentials and TLS, for a server
    /// that requires them) as the fixture's API client. The agent's own credentials come from
    /// `options` (flags, environment or config file).
    pub async fn start_with_client(
        nats_url: &str,
        options: AgentOptions,
        client: async_nats::Client,
    ) -> anyhow::Result<Agent> {
        let binary = agent_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("trace-tests-agent-")
            .tempdir()
            .context("creating the agent temp dir")?;
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
        if let Some(config) = &options.config {
            let path = dir.path().join("agent.toml");
            std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        }
        let http_addr = match options.http {
            Some(addr) => addr,
            None => free_local_addr()?,
        };
        let mut agent = Agent {
            child: None,
            binary,
            nats_url: nats_url.to_owned(),
            http_addr,
            options,
            dir,
            client,
            runs: 0,
        };
        // The free HTTP port can be taken between picking and binding (tests run in
        // parallel): an agent that exits at startup because of it is retried on another port.
        let mut attempt = 0;
        loop {
            attempt += 1;
            agent.spawn()?;
            match agent.wait_ready().await {
                Ok(()) => return Ok(agent),
                Err(e)
                    if agent.child.is_none()
                        && agent.options.http.is_none()
                        && attempt < 3
                        && logs::tail(&agent.stderr_path(), 20)
                            .contains("Address already in use") =>
                {
                    eprintln!(
                        "trace-tests: trace-agent could not bind its HTTP port ({e:#}); new port"
                    );
                    agent.http_addr = free_local_addr()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The agent's data dir (kept across restarts).
    pub fn data_dir(&self) -> PathBuf {
        self.options
            .data_dir
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// The pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The client the fixture uses for API requests.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Where its HTTP endpoints (`/metrics`, `/health`) listen.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `GET path` on its HTTP endpoints.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<HttpResponse> {
        http_get(self.http_addr, path).await
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Polls `trace.api.store_info` until the agent answers (30 s), failing early if the
    /// process exits; errors carry the log tail.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Deadline::after(READY_TIMEOUT);
        let mut last;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("polling trace-agent")? {
                    self.child = None;
                    bail!(
                        "trace-agent exited before it was ready ({status}){}",
                        self.log_tail(TAIL_LINES)
                    );
                }
            } else {
                bail!("wait_ready on an agent that is not running");
            }
            let body = serde_json::json!({});
            match api_request_with_timeout(
                &self.client,
                &self.own_verb("store_info"),
                &body,
                Duration::from_secs(2),
            )
            .await
            {
                // with several agents on the bus the shared subject may be another one's
                Ok(v) if self.answers_for_me(&v) => return Ok(()),
                Ok(v) => last = format!("answered by another agent ({})", v["dir"]),
                Err(e) => last = e.to_string(),
            }
            if deadline.expired() {
                bail!(
                    "trace-agent did not answer trace.api.store_info within {READY_TIMEOUT:?} \
                     (last: {last}){}",
                    self.log_tail(TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One API request to this agent.
    pub async fn request(
        &self,
        verb: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        crate::api::api_request(&self.client, verb, body).await
    }

    /// Whether a `store_info` answer is about this agent's store.
    fn answers_for_me(&self, info: &serde_json::Value) -> bool {
        let mine = self.data_dir();
        let mine = mine.canonicalize().unwrap_or(mine);
        info["dir"].as_str().is_some_and(|dir| {
            let dir = std::path::Path::new(dir);
            dir.canonicalize()
                .unwrap_or_else(|_| dir.to_path_buf())
                .starts_with(&mine)
        })
    }

    /// The instance name the agent keeps in `<data_dir>/instance.id` (written at start).
    pub fn instance(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir().join("instance.id"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// `verb` on this agent's own subject (`i.<instance>.<verb>`) once its instance name is
    /// known, so that with several agents on one bus the answer is this one's.
    pub fn own_verb(&self, verb: &str) -> String {
        match self.instance() {
            Some(name) => format!("i.{name}.{verb}"),
            None => verb.to_owned(),
        }
    }

    /// The agent's `store_info`, parsed.
    pub async fn store_info(&self) -> anyhow::Result<StoreInfo> {
        let value = self
            .request(&self.own_verb("store_info"), &serde_json::json!({}))
            .await
            .map_err(|e| anyhow!("store_info: {e}"))?;
        StoreInfo::from_json(&value)
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = pid_of(&child)?;
        // ESRCH means it already died; wait() still reaps it.
        let _ = kill(pid, Signal::SIGKILL);
        child.wait().context("reaping trace-agent after SIGKILL")?;
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for the exit and returns its status. If it does not
    /// exit in time it is killed and this is an error.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("terminate on an agent that is not running");
        };
        let pid = pid_of(&child)?;
        kill(pid, Signal::SIGTERM).context("sending SIGTERM to trace-agent")?;
        let deadline = Deadline::after(timeout);
        loop {
            if let Some(status) = child.try_wait().context("waiting for trace-agent")? {
                return Ok(status);
            }
            if deadline.expired() {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "trace-agent did not exit within {timeout:?} of SIGTERM (killed it){}",
                    self.log_tail(TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts it again with the same arguments and data dir (SIGKILLing it first if it still
    /// runs) and waits until it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill()?;
        self.spawn()?;
        self.wait_ready().await
    }

    /// The last lines of the agent's stdout and stderr logs (all runs).
    pub fn log_tail(&self, lines: usize) -> String {
        logs::tails(
            "trace-agent",
            &[&self.stdout_path(), &self.stderr_path()],
            lines,
        )
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("agent.stdout.log")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("agent.stderr.log")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.runs += 1;
        let mut args: Vec<String> = vec![
            "run".into(),
            "--nats-url".into(),
            self.nats_url.clone(),
            "--data-dir".into(),
            path_arg(&self.data_dir())?,
        ];
        if self.options.config.is_some() {
            args.push("--config".into());
            args.push(path_arg(&self.dir.path().join("agent.toml"))?);
        }
        args.push("--http".into());
        args.push(self.http_addr.to_string());
        args.extend(self.options.args.iter().cloned());
        let stdout = open_log(&self.stdout_path(), self.runs, &args)?;
        let stderr = open_log(&self.stderr_path(), self.runs, &args)?;
        let mut command = Command::new(&self.binary);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        clean_env(&mut command);
        command.env("RUST_LOG", "info");
        for (key, value) in &self.options.env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Always printed: the test harness captures it and shows it only when the test fails,
        // which covers tests that fail by returning `Err` (no panic while dropping).
        eprintln!("{}", self.log_tail(TAIL_LINES));
    }
}

/// Removes `TRACE_AGENT_*` variables inherited from the developer's shell, so a test runs the
/// agent with exactly the settings it chose.
pub(crate) fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TRACE_AGENT_") {
            command.env_remove(&key);
        }
    }
}

fn pid_of(child: &Child) -> anyhow::Result<Pid> {
    Ok(Pid::from_raw(
        i32::try_from(child.id()).context("pid out of range")?,
    ))
}

fn path_arg(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("path {} is not UTF-8", path.display()))
}

/// Opens a log in append mode (every run of one agent goes to the same file) and marks the run.
fn open_log(path: &Path, run: u32, args: &[String]) -> anyhow::Result<File> {
    let mut file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(
        file,
        "===== trace-tests: run {run}: trace-agent {} =====",
        args.join(" ")
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(file)
}

/// The `trace-agent` binary the tests run.
///
/// `$TRACE_AGENT_BIN` if set. Otherwise the one next to this test executable's `deps/` dir
/// (`target/<profile>/trace-agent`), built first with `cargo build -p trace-agent-bin --bin
/// trace-agent` for that profile, once per test process: `cargo test` does not build other
/// packages' binaries, and a stale binary would test old code. If cargo cannot be run, an
/// existing binary is used as it is.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TRACE_AGENT_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("TRACE_AGENT_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_agent().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_agent() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let deps = exe
        .parent()
        .ok_or_else(|| anyhow!("test executable {} has no parent dir", exe.display()))?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("the tests crate has no parent dir"))?
        .to_path_buf();
    // target/<profile>/deps/<test exe>; anything else: the workspace's target/debug.
    let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent()
            .ok_or_else(|| anyhow!("{} has no parent", deps.display()))?
            .to_path_buf()
    } else {
        workspace.join("target").join("debug")
    };
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", profile_dir.display()))?;
    let binary = profile_dir.join("trace-agent");

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args([
            "build",
            "--quiet",
            "-p",
            "trace-agent-bin",
            "--bin",
            "trace-agent",
        ])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            command.arg("--release");
        }
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    eprintln!("trace-tests: building trace-agent ({command:?})");
    match command.output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => bail!(
            "building trace-agent failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) if binary.is_file() => {
            eprintln!(
                "trace-tests: cannot run {} ({e}); using the existing {}",
                Path::new(&cargo).display(),
                binary.display()
            );
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "running {} to build trace-agent (and {} does not exist)",
                    Path::new(&cargo).display(),
                    binary.display()
                )
            })
        }
    }
    if !binary.is_file() {
        bail!(
            "cargo built trace-agent but {} does not exist",
            binary.display()
        );
    }
    Ok(binary)
}
