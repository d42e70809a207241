//! NATS authentication and TLS, end to end: a nats-server that demands TLS with client
//! certificates and a password, a token, an nkey, or a JWT credentials file (operator mode);
//! the real agent, CLI and publisher client get through with each; wrong or inconsistent
//! settings are refused with a clear message; no secret is ever logged or printed.
//!
//! Certificates are generated with rcgen, nkeys and JWTs with the nkeys crate, all in each
//! test's temp dir. Secrets reach the agent through the environment or a config file, never
//! its command line (which the fixture writes into the logs this module searches).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _};
use tempfile::TempDir;
use trace_core::auth::NatsAuth;
use trace_core::client::TraceClient;
use trace_core::SourceKind;
use trace_tests::{free_local_addr, Agent, AgentOptions, Cli, CliOutput, NatsServer};

use crate::util::{bounded, wait_for_counts};

const USER: &str = "trace-svc";
const PASSWORD: &str = "pw-Q7v3-never-print-me";
const WRONG_PASSWORD: &str = "pw-wrong-K2m9-never-print-me";
const NATS_TOKEN: &str = "tok-X4r8-never-print-me";
const ADMIN_TOKEN: &str = "adm-Z6p1-never-print-me";

/// How long the agent may take to give up on credentials the server refuses.
const REFUSAL_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Fixtures: certificates, keys, JWTs
// ---------------------------------------------------------------------------------------

/// A self-signed CA, a server certificate for 127.0.0.1/localhost and a client certificate,
/// all signed by it, as PEM files.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn generate() -> anyhow::Result<Pki> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let dir = tempfile::Builder::new()
            .prefix("trace-tests-pki-")
            .tempdir()?;
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "trace-tests CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca.self_signed(&ca_key)?;
        let leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(sans)?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key)?;
            anyhow::Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(
            "nats-server",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client_cert, client_key) =
            leaf("trace-agent", vec![], ExtendedKeyUsagePurpose::ClientAuth)?;
        for (name, pem) in [
            ("ca.pem", ca.pem()),
            ("server-cert.pem", server_cert),
            ("server-key.pem", server_key),
            ("client-cert.pem", client_cert),
            ("client-key.pem", client_key),
        ] {
            write_private(&dir.path().join(name), &pem)?;
        }
        Ok(Pki { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    fn client_cert(&self) -> PathBuf {
        self.path("client-cert.pem")
    }

    fn client_key(&self) -> PathBuf {
        self.path("client-key.pem")
    }

    /// The server's `tls` block: its certificate, and client certificates verified against
    /// the CA.
    fn server_tls_block(&self) -> String {
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 5\n}}\n",
            self.path("server-cert.pem"),
            self.path("server-key.pem"),
            self.ca(),
        )
    }
}

/// Writes a file only its owner can read (keys and seeds).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn seed_of(key: &nkeys::KeyPair) -> anyhow::Result<String> {
    key.seed().map_err(|e| anyhow!("nkey seed: {e}"))
}

/// Base64url without padding, as JWTs use it.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A NATS JWT (v2, `ed25519-nkey`) with these claims, signed by `issuer`: what `nsc` writes,
/// built by hand (nats-io/jwt `ClaimsData.doEncode`; the server does not check `jti`).
fn nats_jwt(
    issuer: &nkeys::KeyPair,
    subject: &str,
    name: &str,
    nats: serde_json::Value,
) -> anyhow::Result<String> {
    let header = base64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": ulid::Ulid::new().to_string(),
        "iat": chrono::Utc::now().timestamp(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let signed = format!("{header}.{}", base64url(&serde_json::to_vec(&claims)?));
    let signature = issuer
        .sign(signed.as_bytes())
        .map_err(|e| anyhow!("signing a JWT: {e}"))?;
    Ok(format!("{signed}.{}", base64url(&signature)))
}

/// Operator mode with a memory resolver: an operator, a system account, an account with
/// JetStream, and a user of it whose JWT and seed make the `.creds` file.
struct Operator {
    server_conf: String,
    creds: String,
    user_seed: String,
}

impl Operator {
    fn generate() -> anyhow::Result<Operator> {
        let operator = nkeys::KeyPair::new_operator();
        let system = nkeys::KeyPair::new_account();
        let account = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        let operator_jwt = nats_jwt(
            &operator,
            &operator.public_key(),
            "trace-tests-operator",
            serde_json::json!({
                "type": "operator", "version": 2, "system_account": system.public_key(),
            }),
        )?;
        let limits = |jetstream: bool| {
            let mut limits = serde_json::json!({
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1,
            });
            if jetstream {
                for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
                    limits[key] = serde_json::json!(-1);
                }
            }
            limits
        };
        let account_claims = |jetstream: bool| {
            serde_json::json!({
                "type": "account", "version": 2, "limits": limits(jetstream),
                "default_permissions": {"pub": {}, "sub": {}},
            })
        };
        let system_jwt = nats_jwt(
            &operator,
            &system.public_key(),
            "SYS",
            account_claims(false),
        )?;
        let account_jwt = nats_jwt(
            &operator,
            &account.public_key(),
            "GAME",
            account_claims(true),
        )?;
        let user_jwt = nats_jwt(
            &account,
            &user.public_key(),
            "trace-agent",
            serde_json::json!({
                "type": "user", "version": 2, "pub": {}, "sub": {},
                "subs": -1, "data": -1, "payload": -1,
            }),
        )?;
        let user_seed = seed_of(&user)?;
        let server_conf = format!(
            "operator: {operator_jwt:?}\nsystem_account: {sys:?}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {system_jwt:?}\n  {acc}: {account_jwt:?}\n}}\n",
            sys = system.public_key(),
            acc = account.public_key(),
        );
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        );
        Ok(Operator {
            server_conf,
            creds,
            user_seed,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn arg(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", path.display()))
}

/// Fails saying where a secret showed up: the text before it, with the secret masked (the
/// failure message must not print it either).
fn ensure_no_secrets(what: &str, text: &str, secrets: &[&str]) -> anyhow::Result<()> {
    for secret in secrets {
        if let Some(at) = text.find(secret) {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(120)
                .map_or(0, |(i, _)| i);
            let context = text[start..at + secret.len()].replace(secret, "<SECRET>");
            anyhow::bail!(
                "{what} contains a secret ({} chars) at byte {at}: ...{context}",
                secret.len()
            );
        }
    }
    Ok(())
}

fn ensure_output_clean(out: &CliOutput, secrets: &[&str]) -> anyhow::Result<()> {
    ensure_no_secrets(
        &format!("stdout of `{}`", mask(&out.command, secrets)),
        &out.stdout,
        secrets,
    )?;
    ensure_no_secrets(
        &format!("stderr of `{}`", mask(&out.command, secrets)),
        &out.stderr,
        secrets,
    )
}

fn mask(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .fold(text.to_owned(), |t, s| t.replace(s, "<SECRET>"))
}

/// Everything the agent wrote to stdout and stderr, in all its runs.
fn agent_logs(agent: &Agent) -> String {
    agent.log_tail(usize::MAX)
}

/// Stops the agent (SIGTERM, a clean drain) so its logs are complete.
async fn stop(agent: &mut Agent) -> anyhow::Result<()> {
    let status = agent.terminate(Duration::from_secs(15)).await?;
    ensure!(status.success(), "the agent exited with {status}");
    Ok(())
}

/// Options for an agent logging at debug level, with these extra environment variables.
fn debug_agent(env: &[(&str, &str)]) -> AgentOptions {
    let mut options = AgentOptions::default();
    options.env.push(("TRACE_AGENT_LOG".into(), "debug".into()));
    options.env.push(("RUST_LOG".into(), "debug".into()));
    options
        .env
        .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    options
}

/// Checks the agent really logged at debug level and named its authentication, then that
/// nothing in its output holds a secret.
fn ensure_logs_clean(agent: &Agent, summary: &str, secrets: &[&str]) -> anyhow::Result<()> {
    let logs = agent_logs(agent);
    ensure!(
        logs.contains("DEBUG"),
        "the agent did not log at debug level, so the check proves little{}",
        agent.log_tail(20)
    );
    ensure!(
        logs.contains(summary),
        "the agent's startup line does not name its authentication ({summary:?}){}",
        agent.log_tail(40)
    );
    ensure_no_secrets("the agent's debug logs", &logs, secrets)
}

/// `trace-agent run` as a one-shot command (not the fixture): for runs that must fail.
async fn run_agent_once(
    cli: &Cli,
    nats_url: &str,
    extra: &[&str],
) -> anyhow::Result<(CliOutput, Duration)> {
    let data = tempfile::tempdir()?;
    let http = free_local_addr()?.to_string();
    let mut args = vec![
        "run",
        "--nats-url",
        nats_url,
        "--data-dir",
        arg(data.path())?,
        "--http",
        &http,
    ];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let out = cli.run_raw(&args).await?;
    Ok((out, started.elapsed()))
}

fn cli_with_env(nats_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Cli> {
    Ok(env
        .iter()
        .fold(Cli::new(nats_url)?, |cli, (k, v)| cli.with_env(k, v))
        .with_timeout(Duration::from_secs(30)))
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// TLS with client certificates verified by the server plus user/password: the agent
/// (password from the environment, TLS files from flags), the publisher client and the CLI
/// (flags, then environment variables) all get through; a CLI without the CA or without a
/// client certificate is refused with a TLS error; nothing secret in the agent's debug logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates_and_password_end_to_end() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let pki = Pki::generate()?;
        let auth = NatsAuth {
            user: Some(USER.into()),
            password: Some(PASSWORD.into()),
            tls_ca: Some(pki.ca()),
            tls_cert: Some(pki.client_cert()),
            tls_key: Some(pki.client_key()),
            ..NatsAuth::default()
        };
        let conf = format!(
            "{}authorization {{\n  user: {USER:?}\n  password: {PASSWORD:?}\n}}\n",
            pki.server_tls_block()
        );
        let fixture_auth = auth.clone();
        let nats = NatsServer::start_with_config(&conf, move || {
            fixture_auth
                .apply(async_nats::ConnectOptions::new())
                .expect("valid test credentials")
        })
        .await?;
        let url = nats.client_url();
        let (ca, cert, key) = (
            arg(&pki.ca())?.to_owned(),
            arg(&pki.client_cert())?.to_owned(),
            arg(&pki.client_key())?.to_owned(),
        );
        let options = debug_agent(&[
            ("TRACE_AGENT_NATS_USER", USER),
            ("TRACE_AGENT_NATS_PASSWORD", PASSWORD),
        ])
        .with_args(["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
        let mut agent = Agent::start_with_client(&url, options, nats.client().await?).await?;

        // The publisher client, over TLS with its certificate and the password.
        let spill = tempfile::tempdir()?;
        let client = TraceClient::builder(&url, "secure-npc", SourceKind::Agent)
            .auth(auth.clone())?
            .spill_dir(spill.path())
            .flush_interval(Duration::from_millis(10))
            .close_timeout(Duration::from_secs(10))
            .connect()
            .await?;
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(
                client
                    .event("secure.tls")
                    .player("p-tls")
                    .metric("i", f64::from(i))
                    .send()
                    .await
                    .to_string(),
            );
        }
        let stats = client.close().await?;
        ensure!(
            stats.acked >= 20 && stats.spilled == 0,
            "the client did not deliver over TLS: {stats:?}"
        );
        wait_for_counts(&agent, 20, 0, Duration::from_secs(20)).await?;

        // The CLI with flags.
        let cli = Cli::new(&url)?.with_timeout(Duration::from_secs(30));
        let mut found: Vec<String> = cli
            .query(&[
                "--type",
                "secure.tls",
                "--limit",
                "100",
                "--tls-ca",
                &ca,
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--nats-user",
                USER,
                "--nats-password",
                PASSWORD,
            ])
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect();
        found.sort();
        ids.sort();
        ensure!(
            found == ids,
            "query with flags found {found:?}, expected {ids:?}"
        );

        // The CLI with environment variables only.
        let env_cli = cli_with_env(
            &url,
            &[
                ("TRACE_AGENT_NATS_USER", USER),
                ("TRACE_AGENT_NATS_PASSWORD", PASSWORD),
                ("TRACE_AGENT_TLS_CA", &ca),
                ("TRACE_AGENT_TLS_CERT", &cert),
                ("TRACE_AGENT_TLS_KEY", &key),
            ],
        )?;
        let by_env = env_cli
            .query(&["--type", "secure.tls", "--limit", "100"])
            .await?;
        ensure!(
            by_env.len() == 20,
            "query with env vars found {}",
            by_env.len()
        );
        let info = env_cli.json(&["store-info", "--json"]).await?;
        ensure!(
            info["events"].as_u64() >= Some(20),
            "store-info over TLS: {info}"
        );

        // Without the CA: the server's certificate cannot be trusted.
        let out = cli
            .run(&["query", "--nats-user", USER, "--nats-password", PASSWORD])
            .await?;
        ensure!(
            !out.status.success() && out.stderr.contains("TLS") && out.stderr.contains("--tls-ca"),
            "a CLI without the CA was not refused with a TLS error: {}",
            mask(&out.describe(), &[PASSWORD])
        );
        ensure_output_clean(&out, &[PASSWORD])?;
        // With the CA but no client certificate: the server (verify: true) refuses it.
        let out = cli
            .run(&[
                "query",
                "--tls-ca",
                &ca,
                "--nats-user",
                USER,
                "--nats-password",
                PASSWORD,
            ])
            .await?;
        ensure!(
            !out.status.success()
                && out.stderr.contains("cannot connect to NATS")
                && out.stderr.contains("TLS failed"),
            "a CLI without a client certificate was not refused with a TLS error: {}",
            mask(&out.describe(), &[PASSWORD])
        );
        ensure_output_clean(&out, &[PASSWORD])?;

        stop(&mut agent).await?;
        ensure_logs_clean(
            &agent,
            &format!("user/password (user \"{USER}\"), TLS (CA {ca}, client cert)"),
            &[PASSWORD],
        )
    })
    .await
}

/// A wrong password: the agent exits non-zero within seconds saying the server refused the
/// credentials, and neither the wrong nor the right password appears in what it prints
/// (at debug level); the CLI says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_quickly_and_never_echoed() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let conf = format!("authorization {{\n  user: {USER:?}\n  password: {PASSWORD:?}\n}}\n");
        let nats = NatsServer::start_with_config(&conf, || {
            async_nats::ConnectOptions::new().user_and_password(USER.into(), PASSWORD.into())
        })
        .await?;
        let url = nats.client_url();
        let secrets = [PASSWORD, WRONG_PASSWORD];
        let cli = cli_with_env(
            &url,
            &[
                ("TRACE_AGENT_LOG", "debug"),
                ("TRACE_AGENT_NATS_USER", USER),
                ("TRACE_AGENT_NATS_PASSWORD", WRONG_PASSWORD),
            ],
        )?;
        let (out, took) = run_agent_once(&cli, &url, &[]).await?;
        ensure!(
            !out.status.success() && took < REFUSAL_LIMIT,
            "the agent with a wrong password did not exit non-zero within {REFUSAL_LIMIT:?} \
             (took {took:?}): {}",
            mask(&out.describe(), &secrets)
        );
        ensure!(
            out.stderr.contains("refused the credentials")
                && out.stderr.contains("authorization violation"),
            "the refusal does not say the credentials were refused: {}",
            mask(&out.describe(), &secrets)
        );
        ensure_output_clean(&out, &secrets)?;

        let out = cli.run(&["query"]).await?;
        ensure!(
            !out.status.success() && out.stderr.contains("refused the credentials"),
            "the CLI with a wrong password: {}",
            mask(&out.describe(), &secrets)
        );
        ensure_output_clean(&out, &secrets)?;
        // Credentials in the URL, which the NATS client would silently drop: refused, redacted.
        let in_url = url.replace("nats://", &format!("nats://{USER}:{PASSWORD}@"));
        let out = Cli::new(&url)?
            .run_raw(&["query", "--nats-url", &in_url])
            .await?;
        ensure!(
            !out.status.success()
                && out.stderr.contains("credentials in the URL are not used")
                && out.stderr.contains("<redacted>@127.0.0.1"),
            "the CLI with credentials in the URL: {}",
            mask(&out.describe(), &secrets)
        );
        ensure_output_clean(&out, &secrets)?;
        // No credentials at all against a server that wants them: the same clear refusal.
        let out = Cli::new(&url)?.run(&["store-info"]).await?;
        ensure!(
            !out.status.success() && out.stderr.contains("refused the credentials"),
            "the CLI without credentials: {}",
            out.describe()
        );
        Ok(())
    })
    .await
}

/// Token authentication: the agent takes its NATS token from the environment, the CLI from a
/// flag (`emit`) and the environment (`query`, `verify`). The NATS token grants no admin
/// rights: `verify --repair` needs the agent's admin token. Neither token is ever logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_authentication_end_to_end_and_the_admin_token_is_separate() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let conf = format!("authorization {{\n  token: {NATS_TOKEN:?}\n}}\n");
        let nats = NatsServer::start_with_config(&conf, || {
            async_nats::ConnectOptions::new().token(NATS_TOKEN.into())
        })
        .await?;
        let url = nats.client_url();
        let mut options = debug_agent(&[("TRACE_AGENT_NATS_TOKEN", NATS_TOKEN)]);
        options.config = Some(format!("[api]\nadmin_token = {ADMIN_TOKEN:?}\n"));
        let mut agent = Agent::start_with_client(&url, options, nats.client().await?).await?;
        let secrets = [NATS_TOKEN, ADMIN_TOKEN];

        let cli = Cli::new(&url)?.with_timeout(Duration::from_secs(30));
        let out = cli
            .success(&[
                "emit",
                "--type",
                "secure.token",
                "--source",
                "npc-tok",
                "--nats-token",
                NATS_TOKEN,
            ])
            .await?;
        let id = out.stdout.trim().to_owned();
        wait_for_counts(&agent, 1, 0, Duration::from_secs(20)).await?;
        let env_cli = cli_with_env(&url, &[("TRACE_AGENT_NATS_TOKEN", NATS_TOKEN)])?;
        let found = env_cli.query(&["--type", "secure.token"]).await?;
        ensure!(
            found.len() == 1 && found[0].id == id,
            "query with the token found {found:?}, emitted {id}"
        );

        // The NATS token is not the admin token.
        let out = env_cli
            .run(&["verify", "--repair", "--token", NATS_TOKEN])
            .await?;
        ensure!(
            !out.status.success() && out.stderr.contains("admin_token"),
            "verify --repair with the NATS token as admin token was not refused: {}",
            mask(&out.describe(), &secrets)
        );
        ensure_output_clean(&out, &secrets)?;
        let out = env_cli
            .with_env("TRACE_AGENT_ADMIN_TOKEN", ADMIN_TOKEN)
            .run(&["verify", "--repair"])
            .await?;
        ensure!(
            out.status.success() && out.stdout.contains("0 corrupt"),
            "verify --repair with the admin token (from TRACE_AGENT_ADMIN_TOKEN): {}",
            mask(&out.describe(), &secrets)
        );
        ensure_output_clean(&out, &secrets)?;

        stop(&mut agent).await?;
        ensure_logs_clean(&agent, "nats_auth=token", &secrets)
    })
    .await
}

/// Nkey authentication: the agent reads its seed file from `[nats] nkey_seed_file` in its
/// config file, the CLI from `--nats-nkey`, the publisher client takes the seed inline. An
/// agent without an admin token refuses `verify --repair` whatever token is sent. The seed
/// is never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey_authentication_from_seed_files() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let user = nkeys::KeyPair::new_user();
        let seed = seed_of(&user)?;
        let keys = tempfile::tempdir()?;
        let seed_file = keys.path().join("agent.nk");
        write_private(&seed_file, &format!("{seed}\n"))?;
        let conf = format!(
            "authorization {{\n  users = [\n    {{ nkey: {:?} }}\n  ]\n}}\n",
            user.public_key()
        );
        let fixture_seed = seed.clone();
        let nats = NatsServer::start_with_config(&conf, move || {
            async_nats::ConnectOptions::new().nkey(fixture_seed.clone())
        })
        .await?;
        let url = nats.client_url();
        let mut options = debug_agent(&[]);
        options.config = Some(format!("[nats]\nnkey_seed_file = {:?}\n", arg(&seed_file)?));
        let mut agent = Agent::start_with_client(&url, options, nats.client().await?).await?;

        let spill = tempfile::tempdir()?;
        let client = TraceClient::builder(&url, "nkey-npc", SourceKind::Agent)
            .auth(NatsAuth {
                nkey_seed: Some(seed.clone()),
                ..NatsAuth::default()
            })?
            .spill_dir(spill.path())
            .flush_interval(Duration::from_millis(10))
            .close_timeout(Duration::from_secs(10))
            .connect()
            .await?;
        for _ in 0..5 {
            client
                .log_event("secure.nkey", serde_json::json!({"ok": true}), [("k", "v")])
                .await;
        }
        let stats = client.close().await?;
        ensure!(
            stats.acked >= 5,
            "the nkey client did not deliver: {stats:?}"
        );
        wait_for_counts(&agent, 5, 0, Duration::from_secs(20)).await?;

        let cli = Cli::new(&url)?.with_timeout(Duration::from_secs(30));
        let seed_arg = arg(&seed_file)?;
        let found = cli
            .query(&["--type", "secure.nkey", "--nats-nkey", seed_arg])
            .await?;
        ensure!(
            found.len() == 5,
            "query with --nats-nkey found {}",
            found.len()
        );
        let out = cli
            .run(&[
                "verify",
                "--repair",
                "--token",
                ADMIN_TOKEN,
                "--nats-nkey",
                seed_arg,
            ])
            .await?;
        ensure!(
            !out.status.success() && out.stderr.contains("admin_token"),
            "verify --repair on an agent without an admin token was not refused: {}",
            out.describe()
        );
        ensure_output_clean(&out, &[&seed])?;

        stop(&mut agent).await?;
        ensure_logs_clean(
            &agent,
            &format!("nkey (seed file {seed_arg})"),
            &[&seed, &seed[2..]],
        )
    })
    .await
}

/// A JWT credentials file in operator mode (memory resolver, JWTs signed here with nkeys):
/// the agent takes it from `--nats-creds`, `emit` from `TRACE_AGENT_NATS_CREDS`, `query` from
/// the flag. The seed inside the file is never logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_file_in_operator_mode() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let operator = Operator::generate()?;
        let keys = tempfile::tempdir()?;
        let creds = keys.path().join("agent.creds");
        write_private(&creds, &operator.creds)?;
        let fixture_creds = operator.creds.clone();
        let nats = NatsServer::start_with_config(&operator.server_conf, move || {
            async_nats::ConnectOptions::new()
                .credentials(&fixture_creds)
                .expect("a valid creds file")
        })
        .await?;
        let url = nats.client_url();
        let creds_arg = arg(&creds)?.to_owned();
        let options = debug_agent(&[]).with_args(["--nats-creds", creds_arg.as_str()]);
        let mut agent = Agent::start_with_client(&url, options, nats.client().await?).await?;

        let env_cli = cli_with_env(&url, &[("TRACE_AGENT_NATS_CREDS", &creds_arg)])?;
        let out = env_cli
            .success(&["emit", "--type", "secure.creds", "--source", "npc-jwt"])
            .await?;
        let id = out.stdout.trim().to_owned();
        wait_for_counts(&agent, 1, 0, Duration::from_secs(20)).await?;
        let found = Cli::new(&url)?
            .query(&["--type", "secure.creds", "--nats-creds", &creds_arg])
            .await?;
        ensure!(
            found.len() == 1 && found[0].id == id,
            "query with --nats-creds found {found:?}, emitted {id}"
        );
        // Without the creds file the operator-mode server refuses the connection.
        let out = Cli::new(&url)?.run(&["store-info"]).await?;
        ensure!(
            !out.status.success() && out.stderr.contains("refused the credentials"),
            "store-info without credentials: {}",
            out.describe()
        );

        stop(&mut agent).await?;
        ensure_logs_clean(
            &agent,
            &format!("credentials file {creds_arg}"),
            &[&operator.user_seed],
        )
    })
    .await
}

/// Settings that cannot work are refused before any connection (the URL points at a port
/// where nothing listens, so a connection attempt would say so), naming the key and where it
/// came from, never the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_auth_settings_are_refused_before_connecting() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let url = format!("nats://{}", free_local_addr()?);
        let dir = tempfile::tempdir()?;
        let config = |name: &str, text: &str| -> anyhow::Result<String> {
            let path = dir.path().join(name);
            std::fs::write(&path, text)?;
            Ok(arg(&path)?.to_owned())
        };
        let no_user = config(
            "no-user.toml",
            &format!("[nats]\npassword = {PASSWORD:?}\n"),
        )?;
        let cert_only = config(
            "cert-only.toml",
            "[nats]\ntls_cert = \"/etc/ssl/certs/none.pem\"\n",
        )?;
        let two_methods = config(
            "two.toml",
            &format!("[nats]\nuser = {USER:?}\npassword = {PASSWORD:?}\ntoken = {NATS_TOKEN:?}\n"),
        )?;
        let bad_toml = config(
            "bad.toml",
            &format!("[nats]\nuser = {USER:?}\npassword = {PASSWORD:?} oops\n"),
        )?;
        let numeric = config(
            "numeric.toml",
            "[nats]\nuser = \"u\"\npassword = 918273645\n",
        )?;
        let cli = Cli::new(&url)?;
        let env_only = cli.clone().with_env("TRACE_AGENT_NATS_PASSWORD", PASSWORD);
        let secrets = [PASSWORD, NATS_TOKEN, "918273645"];
        let cases: Vec<(&Cli, Vec<&str>, &[&str])> = vec![
            (
                &cli,
                vec!["--config", &no_user],
                &["`nats.password`", "no-user.toml", "`user`"],
            ),
            (
                &env_only,
                vec![],
                &["password", "TRACE_AGENT_NATS_PASSWORD", "`user`"],
            ),
            (
                &cli,
                vec!["--config", &cert_only],
                &["`nats.tls_cert`", "`tls_key`"],
            ),
            (
                &cli,
                vec!["--config", &two_methods],
                &["`nats.token`", "only one authentication method"],
            ),
            (
                &cli,
                vec!["--config", &bad_toml],
                &["bad.toml", "not valid TOML", "line 3", "may hold a secret"],
            ),
            (
                &cli,
                vec!["--config", &numeric],
                &["`nats.password`", "numeric.toml"],
            ),
        ];
        for (cli, extra, wanted) in cases {
            let (out, took) = run_agent_once(cli, &url, &extra).await?;
            let described = mask(&out.describe(), &secrets);
            ensure!(
                !out.status.success() && took < Duration::from_secs(5),
                "not refused at once ({took:?}): {described}"
            );
            ensure!(
                out.stderr.contains("invalid configuration")
                    && !out.stderr.contains("cannot connect"),
                "not refused as configuration before connecting: {described}"
            );
            for w in wanted {
                ensure!(
                    out.stderr.contains(w),
                    "the refusal does not say {w:?}: {described}"
                );
            }
            ensure_output_clean(&out, &secrets)?;
        }
        // Client commands check their flags the same way, naming the flag.
        let flag_cases: [(&[&str], &[&str]); 3] = [
            (
                &["query", "--nats-password", PASSWORD],
                &["--nats-password", "`user`"],
            ),
            (
                &[
                    "store-info",
                    "--nats-user",
                    USER,
                    "--nats-password",
                    PASSWORD,
                    "--nats-token",
                    NATS_TOKEN,
                ],
                &["--nats-token", "only one authentication method"],
            ),
            (
                &["query", "--tls-ca", "/no/such/ca.pem"],
                &["--tls-ca", "/no/such/ca.pem", "does not exist"],
            ),
        ];
        for (args, wanted) in flag_cases {
            let out = cli.run(args).await?;
            let described = mask(&out.describe(), &secrets);
            ensure!(
                !out.status.success() && !out.stderr.contains("cannot connect"),
                "not refused before connecting: {described}"
            );
            for w in wanted {
                ensure!(
                    out.stderr.contains(w),
                    "the refusal does not say {w:?}: {described}"
                );
            }
            ensure_output_clean(&out, &secrets)?;
        }
        Ok(())
    })
    .await
}

/// `--help` lists the secret flags and their variables but never the values set in the
/// environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_never_prints_secret_environment_values() -> anyhow::Result<()> {
    bounded(Duration::from_secs(90), async {
        let cli = cli_with_env(
            "nats://127.0.0.1:1",
            &[
                ("TRACE_AGENT_NATS_PASSWORD", PASSWORD),
                ("TRACE_AGENT_NATS_TOKEN", NATS_TOKEN),
                ("TRACE_AGENT_ADMIN_TOKEN", ADMIN_TOKEN),
                ("TRACE_AGENT_NATS_USER", USER),
            ],
        )?;
        let secrets = [PASSWORD, NATS_TOKEN, ADMIN_TOKEN];
        for command in ["run", "query", "emit", "tail", "forget", "verify", "top"] {
            let out = cli.run_raw(&[command, "--help"]).await?;
            ensure!(out.status.success(), "{}", mask(&out.describe(), &secrets));
            ensure_output_clean(&out, &secrets)?;
            ensure!(
                out.stdout.contains("--nats-password")
                    && out.stdout.contains("TRACE_AGENT_NATS_PASSWORD")
                    && out.stdout.contains("--nats-token"),
                "`{command} --help` does not document the credential flags: {}",
                out.stdout
            );
        }
        Ok(())
    })
    .await
}
