//! Credentials: a [`Secret`] never prints itself and is masked wherever it is echoed,
//! and a [`SecretSource`] says where to read one (an environment variable or a file on
//! the worker) so that source files never hold the secret itself.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroize;

/// A credential. `Debug` and `Display` print `[redacted]`; only
/// [`Secret::expose`] gives the value, at the one place it is sent. The value lives in a
/// [`secrecy::SecretString`], so its memory is wiped when the last copy is dropped.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value read from a trusted place, and registers it with the process's
    /// redactor ([`cairn_runner::redact`]) so it is masked wherever it is echoed. The
    /// `String` given is wiped once copied in.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        cairn_runner::redact::register(&value);
        Self::plain(value)
    }

    /// The value, for the header or form field that carries it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A header value that is not a credential: kept in the same type so requests are
    /// built one way, but not registered with the redactor.
    pub(crate) fn plain(mut value: String) -> Self {
        // Copied into a box of its own size, then wiped: turning the `String` into the
        // box directly could move it to a smaller allocation and free the first one
        // unwiped.
        let secret = SecretString::from(value.as_str());
        value.zeroize();
        Self(secret)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl std::hash::Hash for Secret {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.expose().hash(state);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a credential comes from. In TOML: `{ env = "HUBSPOT_TOKEN" }` or
/// `{ file = "/run/secrets/hubspot" }`, read on the worker that runs the sync. There is
/// deliberately no way to write the secret itself into a source file (a literal is
/// refused, without being repeated), and no way to run a command: a source file travels
/// in a run's input, and whoever can start a run must not run code as the worker. A
/// secret manager writes its secrets to files (Vault Agent, Kubernetes secrets,
/// systemd credentials) for the `file` form.
///
/// [`SecretSource::Value`] is for Rust code that holds a secret already; no file can
/// name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The value of an environment variable of the worker.
    Env(String),
    /// The contents of a file on the worker, surrounding whitespace trimmed.
    File(PathBuf),
    /// A value given in code.
    Value(Secret),
}

/// A credential could not be read. Never contains the credential.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is unset or empty.
    #[error(
        "environment variable `{name}` is not set on worker host `{host}` (it should hold a \
         credential; credentials are read where the worker runs, not where `cairn sync` ran)"
    )]
    MissingEnv {
        /// The variable.
        name: String,
        /// The host whose worker looked for it.
        host: String,
    },
    /// The file could not be read.
    #[error("cannot read the credential file {path} on worker host `{host}`: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The host whose worker read it.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The source produced an empty value.
    #[error("the credential from {0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// Reads the credential now. A file that other users may read is used, with a
    /// warning: the credential in it is not as secret as its owner thinks.
    pub async fn resolve(&self) -> Result<Secret, SecretError> {
        let value = match self {
            Self::Value(secret) => return Ok(secret.clone()),
            Self::Env(name) => std::env::var(name).map_err(|_| SecretError::MissingEnv {
                name: name.clone(),
                host: host_name(),
            })?,
            Self::File(path) => {
                let read = |source| SecretError::File {
                    path: path.clone(),
                    host: host_name(),
                    source,
                };
                let metadata = tokio::fs::metadata(path).await.map_err(read)?;
                warn_if_shared(path, &metadata);
                tokio::fs::read_to_string(path).await.map_err(read)?
            }
        };
        let mut value = value;
        let trimmed = value.trim();
        let secret = (!trimmed.is_empty()).then(|| Secret::new(trimmed));
        value.zeroize();
        secret.ok_or_else(|| SecretError::Empty(self.describe()))
    }

    /// Where the secret comes from, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Env(name) => format!("environment variable `{name}`"),
            Self::File(path) => format!("file {}", path.display()),
            Self::Value(_) => "a value given in code".to_owned(),
        }
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &std::path::Path, metadata: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode();
    if mode & 0o004 != 0 {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "a credential file is readable by every user of this host; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_: &std::path::Path, _: &std::fs::Metadata) {}

/// This host's name, for saying where a credential was looked for.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "this host".to_owned())
}

/// Whether `name` can be an environment variable's name: a value that is not one was
/// most likely the secret itself, pasted in the wrong place, and is never repeated.
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How a secret field must be written, for messages.
pub(crate) const SECRET_FORMS: &str =
    "write { env = \"VARIABLE\" } or { file = \"/path/to/file\" } instead";

impl<'de> Deserialize<'de> for SecretSource {
    /// Only `{ env = "NAME" }` or `{ file = "PATH" }`. Errors never quote what was
    /// written: in a secret field, that is likely the secret.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SourceVisitor)
    }
}

struct SourceVisitor;

impl SourceVisitor {
    fn literal<E: serde::de::Error>() -> E {
        E::custom(format!(
            "a secret cannot be written into a source file (the value is not shown); {SECRET_FORMS}"
        ))
    }
}

impl<'de> serde::de::Visitor<'de> for SourceVisitor {
    type Value = SecretSource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{ env = \"VARIABLE\" } or { file = \"/path/to/file\" }")
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(Self::literal())
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(Self::literal())
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(Self::literal())
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(Self::literal())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(Self::literal())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(Self::literal())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let mut found: Option<SecretSource> = None;
        while let Some(key) = map.next_key::<String>()? {
            // The value is read as "any string" and judged here, so a wrong type is
            // refused without serde quoting it.
            let value: Option<String> = map.next_value::<Opaque>()?.0;
            let source = match key.as_str() {
                "env" => {
                    let name = value.ok_or_else(|| {
                        A::Error::custom(
                            "`env` takes the name of an environment variable, as a string",
                        )
                    })?;
                    if !is_env_name(&name) {
                        return Err(A::Error::custom(
                            "`env` takes the name of an environment variable (letters, digits and `_`); \
                             what is written there is not one, and is not shown in case it is the secret itself",
                        ));
                    }
                    SecretSource::Env(name)
                }
                "file" => {
                    let path = value
                        .ok_or_else(|| A::Error::custom("`file` takes a path, as a string"))?;
                    if path.trim().is_empty() {
                        return Err(A::Error::custom("`file` takes a path, and it is empty"));
                    }
                    SecretSource::File(PathBuf::from(path))
                }
                "command" => {
                    return Err(A::Error::custom(
                        "`command` secret sources are not supported: a source file travels in a \
                         run's input, and starting a run must not run code on a worker; have the \
                         secret manager write the secret to a file and use { file = \"...\" }",
                    ));
                }
                _ => {
                    return Err(A::Error::custom(format!(
                        "unknown secret source `{key}`; {SECRET_FORMS}"
                    )));
                }
            };
            if found.replace(source).is_some() {
                return Err(A::Error::custom(format!(
                    "give one secret source, not several; {SECRET_FORMS}"
                )));
            }
        }
        found.ok_or_else(|| A::Error::custom(format!("no secret source given; {SECRET_FORMS}")))
    }
}

/// A value read as a string if it is one, and otherwise dropped unseen.
struct Opaque(Option<String>);

impl<'de> Deserialize<'de> for Opaque {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Opaque;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, v: &str) -> Result<Opaque, E> {
                Ok(Opaque(Some(v.to_owned())))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Opaque, E> {
                Ok(Opaque(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Opaque, E> {
                Ok(Opaque(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Opaque, E> {
                Ok(Opaque(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Opaque, E> {
                Ok(Opaque(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Opaque, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Opaque(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Opaque, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Opaque(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_themselves() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[tokio::test]
    async fn secrets_come_from_files_and_variables_only() {
        let dir = std::env::temp_dir().join(format!("cairn-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  from-file\n").unwrap();
        let from_file = SecretSource::File(file).resolve().await.unwrap();
        assert_eq!(from_file.expose(), "from-file");
        let missing = SecretSource::Env("CAIRN_SURELY_UNSET_VAR".into())
            .resolve()
            .await
            .unwrap_err();
        let message = missing.to_string();
        assert!(message.contains("CAIRN_SURELY_UNSET_VAR"), "{message}");
        assert!(message.contains(&host_name()), "{message}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code, reason = "read through Debug by the assertions")]
    struct Field {
        token: SecretSource,
    }

    #[test]
    fn a_literal_or_a_command_is_refused_without_being_shown() {
        for text in [
            r#"token = "sk_live_abcdef123456""#,
            r#"token = { env = "sk_live_abcdef123456!" }"#,
            r#"token = { command = "cat sk_live_abcdef123456" }"#,
            r#"token = { env = "A", file = "sk_live_abcdef123456" }"#,
            r#"token = { secret = "sk_live_abcdef123456" }"#,
            r#"token = ["sk_live_abcdef123456"]"#,
        ] {
            let err = toml::from_str::<Field>(text).unwrap_err();
            let message = err.message();
            assert!(!message.contains("abcdef"), "{text}: {message}");
            assert!(
                message.contains("env") || message.contains("file"),
                "{text}: {message}"
            );
        }
        let ok: Field = toml::from_str(r#"token = { env = "CRM_TOKEN" }"#).unwrap();
        assert_eq!(ok.token, SecretSource::Env("CRM_TOKEN".into()));
    }
}
