//! The `NatsServer` fixture: a real `nats-server` with JetStream on a free port, its file store
//! in a temp dir it owns; `stop`/`restart` keep both, Drop kills it. `start_with_config` adds
//! configuration (TLS, authorization, operator mode) and the client options that get past it.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::logs;
use crate::wait::Deadline;

/// How long a server gets to accept connections and answer JetStream.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's `max_payload`. The default (1 MiB) equals the agent's default message limit,
/// so without raising it an oversized message could never reach the agent to be quarantined.
const MAX_PAYLOAD: u64 = 2 * 1024 * 1024;

/// Builds the options of every client connection the fixture makes (credentials, TLS).
#[derive(Clone)]
struct ClientOptions(Arc<dyn Fn() -> async_nats::ConnectOptions + Send + Sync>);

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientOptions(..)")
    }
}

/// A running (or stopped) `nats-server` owned by one test.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    binary: PathBuf,
    client_options: Option<ClientOptions>,
}

impl NatsServer {
    /// Starts a server on a free port of 127.0.0.1 with JetStream in a fresh temp dir and waits
    /// until it accepts clients and JetStream answers.
    pub async fn start() -> anyhow::Result<NatsServer> {
        Self::start_inner("", None).await
    }

    /// Like [`NatsServer::start`] with `extra_conf` appended to the server's configuration file
    /// (e.g. a `tls { ... }` or `authorization { ... }` block), and `client_options` building
    /// the options (credentials, TLS) of every connection the fixture makes: the readiness
    /// probe, [`NatsServer::client`] and [`NatsServer::jetstream`].
    pub async fn start_with_config(
        extra_conf: &str,
        client_options: impl Fn() -> async_nats::ConnectOptions + Send + Sync + 'static,
    ) -> anyhow::Result<NatsServer> {
        Self::start_inner(extra_conf, Some(ClientOptions(Arc::new(client_options)))).await
    }

    async fn start_inner(
        extra_conf: &str,
        client_options: Option<ClientOptions>,
    ) -> anyhow::Result<NatsServer> {
        let binary = nats_server_binary();
        let dir = tempfile::Builder::new()
            .prefix("trace-tests-nats-")
            .tempdir()
            .context("creating the nats-server temp dir")?;
        let config = dir.path().join("nats-server.conf");
        std::fs::write(
            &config,
            format!("max_payload: {MAX_PAYLOAD}\n{extra_conf}\n"),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        std::fs::create_dir_all(dir.path().join("store"))
            .context("creating the JetStream store dir")?;
        let mut server = NatsServer {
            child: None,
            port: free_port()?,
            dir,
            binary,
            client_options,
        };
        // The free port can be taken between picking and binding (tests run in parallel): a
        // server that exits at startup is retried on another port.
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.spawn()?;
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) if server.child.is_none() && attempt < 3 => {
                    eprintln!("trace-tests: nats-server failed to start ({e:#}); new port");
                    server.port = free_port()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn client_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory, `-sd` (kept across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A new client connection (with the credentials and TLS given to
    /// [`NatsServer::start_with_config`], if any).
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let options = match &self.client_options {
            Some(ClientOptions(make)) => make(),
            None => async_nats::ConnectOptions::new(),
        };
        options
            .connection_timeout(Duration::from_secs(5))
            .connect(self.client_url())
            .await
            .with_context(|| format!("connecting to nats-server at {}", self.client_url()))
    }

    /// A JetStream context over a new client connection.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s), keeping port and store dir.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        // The process may have died already; wait() below tells.
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Deadline::after(STOP_TIMEOUT);
        loop {
            if child
                .try_wait()
                .context("waiting for nats-server")?
                .is_some()
            {
                return Ok(());
            }
            if deadline.expired() {
                let _ = child.kill();
                child.wait().context("reaping nats-server after SIGKILL")?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts it again on the same port with the same store, and waits until it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn()?;
        self.wait_ready().await
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        logs::tails("nats-server", &[&self.log_path()], lines)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.path().join("nats-server.conf"))
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store_dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Deadline::after(START_TIMEOUT);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut last_error;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().context("polling nats-server")? {
                    self.child = None;
                    bail!(
                        "nats-server exited during startup ({status}) on port {}{}",
                        self.port,
                        self.log_tail(30)
                    );
                }
            }
            match self.probe(addr).await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = format!("{e:#}"),
            }
            if deadline.expired() {
                bail!(
                    "nats-server on port {} not ready after {START_TIMEOUT:?}: {last_error}{}",
                    self.port,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ready means: the port accepts, a client connects, and JetStream answers its account
    /// info. (The raw API request, because async-nats 0.51's typed account info does not parse
    /// 2.9's answer.)
    async fn probe(&self, addr: SocketAddr) -> anyhow::Result<()> {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).context("tcp connect")?;
        let client = self.client().await?;
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            client.request("$JS.API.INFO", bytes::Bytes::new()),
        )
        .await
        .context("JetStream account info timed out")?
        .context("JetStream account info")?;
        let info: serde_json::Value =
            serde_json::from_slice(&reply.payload).context("JetStream account info not JSON")?;
        if let Some(error) = info.get("error") {
            bail!("JetStream is not available: {error}");
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Captured by the test harness and shown only when the test fails.
        eprintln!("{}", self.log_tail(15));
    }
}

/// Where `nats-server` is: `$NATS_SERVER_BIN`, then `PATH`, then `/usr/sbin/nats-server`.
/// Panics with install instructions when there is none: every end-to-end test needs it.
fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    let in_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| is_executable(candidate))
    });
    if let Some(path) = in_path {
        return path;
    }
    let fallback = Path::new("/usr/sbin/nats-server");
    if is_executable(fallback) {
        return fallback.to_path_buf();
    }
    panic!(
        "nats-server not found (looked in $NATS_SERVER_BIN, PATH and /usr/sbin/nats-server). \
         The end-to-end tests start real servers: install it with \
         `sudo apt-get install nats-server` (Debian/Ubuntu) or from \
         https://github.com/nats-io/nats-server/releases, or run scripts/test which does it."
    );
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A port nothing listens on right now (the kernel picks it; the listener is closed at once).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr().context("local addr")?.port())
}
