//! NATS authentication and TLS (feature `nats`): one [`NatsAuth`] that the agent reads from its
//! `[nats]` config section, the CLI builds from its `--nats-*`/`--tls-*` flags, and a
//! [`crate::client::TraceClient`] takes through its builder.
//!
//! Secrets (password, token, nkey seed) are never printed: `Debug` shows `<redacted>`, they are
//! not serialized back out, validation errors name the key (and the file) but never the value,
//! and [`NatsAuth::summary`] is what logs show.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bus::BusError;

/// How a connection authenticates and whether it uses TLS. All fields are optional; the empty
/// value (the default) connects without credentials over whatever the server offers.
///
/// At most one authentication method: `user` + `password`, `token`, an nkey (`nkey_seed` or
/// `nkey_seed_file`), or a `creds_file` (JWT + nkey seed, as `nsc` writes them).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsAuth {
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password (with `user`). Secret.
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// Authentication token. Secret.
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// An nkey user seed (`SU...`). Secret; prefer `nkey_seed_file`.
    #[serde(skip_serializing)]
    pub nkey_seed: Option<String>,
    /// A file holding an nkey user seed.
    pub nkey_seed_file: Option<PathBuf>,
    /// A credentials file (`.creds`: user JWT and nkey seed).
    pub creds_file: Option<PathBuf>,
    /// PEM file of the CA(s) the server certificate must chain to (implies TLS).
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with `tls_key`; implies TLS).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Refuse to connect without TLS (also implied by any `tls_*` file or a `tls://` URL).
    pub tls_required: bool,
}

const REDACTED: &str = "<redacted>";

fn redacted(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| REDACTED)
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("nkey_seed", &redacted(&self.nkey_seed))
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("creds_file", &self.creds_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_required", &self.tls_required)
            .finish()
    }
}

/// A [`NatsAuth`] that cannot work: the key at fault (a field name of `NatsAuth`) and why.
/// Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct AuthError {
    /// The field name (`password`, `tls_key`, ...).
    pub key: &'static str,
    /// What is wrong, naming the file when there is one.
    pub reason: String,
}

fn err(key: &'static str, reason: impl Into<String>) -> AuthError {
    AuthError {
        key,
        reason: reason.into(),
    }
}

impl NatsAuth {
    /// No credentials, no TLS settings.
    pub fn is_empty(&self) -> bool {
        *self == NatsAuth::default()
    }

    /// Whether any TLS setting asks for TLS.
    pub fn wants_tls(&self) -> bool {
        self.tls_required
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
    }

    /// What the settings amount to, safe for logs: the method, the user name and file paths,
    /// never a secret (e.g. `user/password (user "alice"), TLS (CA /etc/ca.pem, client cert)`).
    pub fn summary(&self) -> String {
        let method = if let Some(user) = &self.user {
            format!("user/password (user {user:?})")
        } else if self.token.is_some() {
            "token".to_owned()
        } else if let Some(f) = &self.nkey_seed_file {
            format!("nkey (seed file {})", f.display())
        } else if self.nkey_seed.is_some() {
            "nkey".to_owned()
        } else if let Some(f) = &self.creds_file {
            format!("credentials file {}", f.display())
        } else {
            "no authentication".to_owned()
        };
        if !self.wants_tls() {
            return method;
        }
        let mut tls = Vec::new();
        if let Some(ca) = &self.tls_ca {
            tls.push(format!("CA {}", ca.display()));
        }
        if self.tls_cert.is_some() {
            tls.push("client cert".to_owned());
        }
        if tls.is_empty() {
            format!("{method}, TLS required")
        } else {
            format!("{method}, TLS ({})", tls.join(", "))
        }
    }

    /// Checks what can be checked before connecting: one method only, a password has a user,
    /// a certificate has a key, seeds look like user seeds, and every file exists and is
    /// readable. The error names the key and the file, never a secret.
    pub fn validate(&self) -> Result<(), AuthError> {
        let non_empty = |key: &'static str, v: &Option<String>| match v {
            Some(s) if s.trim().is_empty() => Err(err(key, "must not be empty")),
            _ => Ok(()),
        };
        non_empty("user", &self.user)?;
        non_empty("password", &self.password)?;
        non_empty("token", &self.token)?;
        non_empty("nkey_seed", &self.nkey_seed)?;
        match (&self.user, &self.password) {
            (None, Some(_)) => return Err(err("password", "a password needs `user` too")),
            (Some(_), None) => return Err(err("user", "a user needs `password` too")),
            _ => {}
        }
        if self.nkey_seed.is_some() && self.nkey_seed_file.is_some() {
            return Err(err(
                "nkey_seed_file",
                "give the nkey seed either inline (`nkey_seed`) or as a file, not both",
            ));
        }
        let methods: Vec<&'static str> = [
            (self.user.is_some(), "user"),
            (self.token.is_some(), "token"),
            (self.nkey_seed.is_some(), "nkey_seed"),
            (self.nkey_seed_file.is_some(), "nkey_seed_file"),
            (self.creds_file.is_some(), "creds_file"),
        ]
        .into_iter()
        .filter_map(|(set, key)| set.then_some(key))
        .collect();
        if let [first, second, ..] = methods[..] {
            return Err(err(
                second,
                format!(
                    "only one authentication method may be set (user/password, token, nkey or \
                     credentials file), but `{first}` is set too"
                ),
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(err(
                    "tls_cert",
                    "a client certificate needs its private key (`tls_key`) too",
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "tls_key",
                    "a private key needs its client certificate (`tls_cert`) too",
                ))
            }
            _ => {}
        }
        if let Some(seed) = &self.nkey_seed {
            check_seed("nkey_seed", seed, None)?;
        }
        for (key, file) in [
            ("nkey_seed_file", &self.nkey_seed_file),
            ("creds_file", &self.creds_file),
            ("tls_ca", &self.tls_ca),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
        ] {
            if let Some(path) = file {
                check_file(key, path)?;
            }
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed = read_file("nkey_seed_file", path)?;
            check_seed("nkey_seed_file", seed.trim(), Some(path))?;
        }
        if let Some(path) = &self.creds_file {
            let text = read_file("creds_file", path)?;
            if !text.contains("BEGIN NATS USER JWT") || !text.contains("BEGIN USER NKEY SEED") {
                return Err(err(
                    "creds_file",
                    format!(
                        "{} is not a NATS credentials file (no user JWT and nkey seed blocks)",
                        path.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Validates, then sets the credentials and TLS settings on `options`.
    pub fn apply(
        &self,
        options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, BusError> {
        self.try_apply(options).map_err(BusError::Auth)
    }

    fn try_apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, AuthError> {
        self.validate()?;
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(seed) = &self.nkey_seed {
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed = read_file("nkey_seed_file", path)?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(path) = &self.creds_file {
            let text = read_file("creds_file", path)?;
            options = options.credentials(&text).map_err(|e| {
                err(
                    "creds_file",
                    format!("{} is not a usable credentials file: {e}", path.display()),
                )
            })?;
        }
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.wants_tls() {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

fn check_file(key: &'static str, path: &Path) -> Result<(), AuthError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(err(key, format!("{} is not a file", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(err(key, format!("file {} does not exist", path.display())))
        }
        Err(e) => Err(err(key, format!("cannot read {}: {e}", path.display()))),
    }
}

fn read_file(key: &'static str, path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path)
        .map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))
}

/// A user seed is 58 base32 characters starting `SU`; the value itself is never echoed.
fn check_seed(key: &'static str, seed: &str, file: Option<&Path>) -> Result<(), AuthError> {
    let ok = seed.len() == 58
        && seed.starts_with("SU")
        && seed
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
    if ok {
        Ok(())
    } else {
        let what = match file {
            Some(p) => format!("{} does not hold", p.display()),
            None => "is not".to_owned(),
        };
        Err(err(
            key,
            format!("{what} an nkey user seed (58 characters starting with SU)"),
        ))
    }
}

/// `url` with any user information (`nats://user:pass@host`, `nats://token@host`) replaced by
/// `<redacted>`, for logs and error messages. Lists (`a,b`) are redacted element-wise.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.find("://") {
                Some(i) => (&one[..i + 3], &one[i + 3..]),
                None => ("", one),
            };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}{REDACTED}{}", &rest[at..]),
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "SUAMK2FG4MI6UE3ACF3FK3OIQBCEIEZV7NSWFFEW63UXMRLFM2XLAXK4GY";

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        dir
    }

    #[test]
    fn debug_and_summary_never_show_secrets() {
        let auth = NatsAuth {
            user: Some("alice".into()),
            password: Some("hunter2-secret".into()),
            token: Some("tok-secret".into()),
            nkey_seed: Some(SEED.into()),
            ..NatsAuth::default()
        };
        let debug = format!("{auth:?} {auth:#?}");
        for secret in ["hunter2-secret", "tok-secret", SEED] {
            assert!(!debug.contains(secret), "{debug}");
            assert!(!auth.summary().contains(secret));
        }
        assert!(
            debug.contains("<redacted>") && debug.contains("alice"),
            "{debug}"
        );
        let json = serde_json::to_string(&auth).expect("json");
        assert!(!json.contains("secret") && !json.contains(SEED), "{json}");
        assert_eq!(
            format!("{:?}", NatsAuth::default()).matches("None").count(),
            9
        );
    }

    #[test]
    fn validation_names_the_key() {
        let bad = |a: NatsAuth| a.validate().expect_err("invalid");
        let e = bad(NatsAuth {
            password: Some("pw-secret".into()),
            ..NatsAuth::default()
        });
        assert_eq!(e.key, "password");
        assert!(!e.to_string().contains("pw-secret"));
        assert_eq!(
            bad(NatsAuth {
                user: Some("u".into()),
                ..NatsAuth::default()
            })
            .key,
            "user"
        );
        let e = bad(NatsAuth {
            user: Some("u".into()),
            password: Some("p".into()),
            token: Some("t".into()),
            ..NatsAuth::default()
        });
        assert_eq!(e.key, "token");
        assert!(e.to_string().contains("`user`"), "{e}");
        let e = bad(NatsAuth {
            tls_cert: Some("/c.pem".into()),
            ..NatsAuth::default()
        });
        assert_eq!(e.key, "tls_cert");
        let e = bad(NatsAuth {
            tls_ca: Some("/no/such/ca.pem".into()),
            ..NatsAuth::default()
        });
        assert_eq!(e.key, "tls_ca");
        assert!(e.reason.contains("/no/such/ca.pem") && e.reason.contains("does not exist"));
        let e = bad(NatsAuth {
            nkey_seed: Some("SUshort-secret".into()),
            ..NatsAuth::default()
        });
        assert_eq!(e.key, "nkey_seed");
        assert!(!e.to_string().contains("short-secret"), "{e}");
        let e = bad(NatsAuth {
            token: Some("  ".into()),
            ..NatsAuth::default()
        });
        assert_eq!(e.key, "token");
    }

    #[test]
    fn files_are_checked() {
        let dir = dir_with(&[
            ("seed.nk", &format!("{SEED}\n")),
            ("bad.nk", "not a seed"),
            ("bad.creds", "hello"),
            ("ca.pem", "x"),
        ]);
        let p = |n: &str| Some(dir.path().join(n));
        NatsAuth {
            nkey_seed_file: p("seed.nk"),
            tls_ca: p("ca.pem"),
            ..NatsAuth::default()
        }
        .validate()
        .expect("valid seed file");
        let e = NatsAuth {
            nkey_seed_file: p("bad.nk"),
            ..NatsAuth::default()
        }
        .validate()
        .expect_err("bad seed");
        assert_eq!(e.key, "nkey_seed_file");
        assert!(e.reason.contains("bad.nk"), "{e}");
        let e = NatsAuth {
            creds_file: p("bad.creds"),
            ..NatsAuth::default()
        }
        .validate()
        .expect_err("bad creds");
        assert_eq!(e.key, "creds_file");
        assert!(e.reason.contains("bad.creds"), "{e}");
        let e = NatsAuth {
            creds_file: Some(dir.path().to_path_buf()),
            ..NatsAuth::default()
        }
        .validate()
        .expect_err("a dir");
        assert!(e.reason.contains("is not a file"), "{e}");
    }

    #[test]
    fn apply_accepts_every_method() {
        let dir = dir_with(&[("seed.nk", SEED)]);
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\neyJhbGciOiJlZDI1NTE5In0.e30.sig\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n"
        );
        std::fs::write(dir.path().join("u.creds"), creds).expect("write");
        for auth in [
            NatsAuth::default(),
            NatsAuth {
                user: Some("u".into()),
                password: Some("p".into()),
                tls_required: true,
                ..NatsAuth::default()
            },
            NatsAuth {
                token: Some("t".into()),
                ..NatsAuth::default()
            },
            NatsAuth {
                nkey_seed: Some(SEED.into()),
                ..NatsAuth::default()
            },
            NatsAuth {
                nkey_seed_file: Some(dir.path().join("seed.nk")),
                ..NatsAuth::default()
            },
            NatsAuth {
                creds_file: Some(dir.path().join("u.creds")),
                ..NatsAuth::default()
            },
        ] {
            auth.apply(async_nats::ConnectOptions::new())
                .unwrap_or_else(|e| panic!("{auth:?}: {e}"));
        }
        let e = NatsAuth {
            password: Some("p".into()),
            ..NatsAuth::default()
        }
        .apply(async_nats::ConnectOptions::new())
        .expect_err("invalid");
        assert!(e.to_string().contains("password"), "{e}");
    }

    #[test]
    fn parses_from_toml_keys() {
        let a: NatsAuth = serde_json::from_value(serde_json::json!({
            "user": "u", "password": "p", "tls_ca": "/ca.pem", "tls_required": true
        }))
        .expect("parse");
        assert_eq!(a.user.as_deref(), Some("u"));
        assert!(a.wants_tls());
        assert!(serde_json::from_value::<NatsAuth>(serde_json::json!({"pasword": "p"})).is_err());
    }

    #[test]
    fn urls_lose_their_user_info() {
        assert_eq!(
            redact_url("nats://bob:s3cret@host:4222"),
            "nats://<redacted>@host:4222"
        );
        assert_eq!(
            redact_url("tok@h:1,nats://h2:2"),
            "<redacted>@h:1,nats://h2:2"
        );
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
    }
}
