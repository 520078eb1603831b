//! Credentials: a [`Secret`] never prints itself, and a [`SecretSource`] says where to
//! read one (an environment variable, a file, a command for secret managers) so that
//! config files never hold the secret itself.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// A credential. `Debug` and `Display` print `[redacted]`; only
/// [`Secret::expose`] gives the value, at the one place it is sent.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from a trusted place.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the header or form field that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a credential comes from. In TOML: `{ env = "HUBSPOT_TOKEN" }`,
/// `{ file = "/run/secrets/hubspot" }` or `{ command = "vault kv get -field=token crm" }`.
/// There is deliberately no way to write the secret itself into a config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// The value of an environment variable.
    Env(String),
    /// The contents of a file, surrounding whitespace trimmed.
    File(PathBuf),
    /// The standard output of a shell command, surrounding whitespace trimmed.
    Command(String),
}

/// A credential could not be read. Never contains the credential.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is unset or empty.
    #[error("environment variable `{0}` is not set (it should hold a credential)")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read the credential file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The command failed or printed nothing.
    #[error("the credential command `{command}` failed: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status or the error starting it (never its output).
        reason: String,
    },
    /// The source produced an empty value.
    #[error("the credential from {0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// Reads the credential now.
    pub async fn resolve(&self) -> Result<Secret, SecretError> {
        let value = match self {
            Self::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::MissingEnv(name.clone()))?
            }
            Self::File(path) => {
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| SecretError::File {
                        path: path.clone(),
                        source,
                    })?
            }
            Self::Command(command) => {
                let output = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .output()
                    .await
                    .map_err(|err| SecretError::Command {
                        command: command.clone(),
                        reason: err.to_string(),
                    })?;
                if !output.status.success() {
                    return Err(SecretError::Command {
                        command: command.clone(),
                        reason: output.status.to_string(),
                    });
                }
                String::from_utf8(output.stdout).map_err(|_| SecretError::Command {
                    command: command.clone(),
                    reason: "its output is not UTF-8".to_owned(),
                })?
            }
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(SecretError::Empty(self.describe()));
        }
        Ok(Secret::new(value))
    }

    /// Where the secret comes from, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Env(name) => format!("environment variable `{name}`"),
            Self::File(path) => format!("file {}", path.display()),
            Self::Command(command) => format!("command `{command}`"),
        }
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
    async fn secrets_come_from_files_and_commands() {
        let dir = std::env::temp_dir().join(format!("cairn-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  from-file\n").unwrap();
        let from_file = SecretSource::File(file).resolve().await.unwrap();
        assert_eq!(from_file.expose(), "from-file");
        let from_command = SecretSource::Command("printf ' from-cmd '".into())
            .resolve()
            .await
            .unwrap();
        assert_eq!(from_command.expose(), "from-cmd");
        let failing = SecretSource::Command("exit 3".into())
            .resolve()
            .await
            .unwrap_err();
        assert!(failing.to_string().contains("failed"), "{failing}");
        let missing = SecretSource::Env("CAIRN_SURELY_UNSET_VAR".into())
            .resolve()
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("CAIRN_SURELY_UNSET_VAR"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
