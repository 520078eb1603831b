//! `cairn auth`: the OAuth refresh tokens sources with `grant = "refresh_token"` use.
//! `set` stores the one a person just authorized (sealed when keys are configured);
//! `show` says how it stands, never printing a token.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_connectors::secret::Secret;
use cairn_connectors::tokens::TokenStore;

use super::{Failure, Outcome, connect, print};

/// The subcommands of `cairn auth`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AuthCommand {
    /// Store the refresh token for a source (its `[source] name`, or the `credential`
    /// its `[auth]` names), replacing the one before.
    Set {
        /// The source (or credential) name.
        source: String,
        /// A file holding the refresh token (read once; the token is never printed).
        #[arg(long, value_name = "FILE")]
        refresh_token_file: PathBuf,
    },
    /// How a source's stored credential stands: when it was set, refreshed, rotated,
    /// and whether the vendor refused it.
    Show {
        /// The source (or credential) name.
        source: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// The longest refresh token read: vendors' are at most a few kilobytes.
const MAX_TOKEN_BYTES: u64 = 16 * 1024;

pub(crate) async fn run(url: Option<&str>, command: AuthCommand) -> Outcome {
    match command {
        AuthCommand::Set {
            source,
            refresh_token_file,
        } => {
            let token = read_token(&refresh_token_file)?;
            let pool = connect(url, 2).await?;
            TokenStore::new(pool)
                .set(&source, &token)
                .await
                .map_err(|err| Failure::failed(format!("storing the refresh token: {err}")))?;
            outln!("stored the refresh token of {source}");
            Ok(ExitCode::SUCCESS)
        }
        AuthCommand::Show { source, json } => {
            let pool = connect(url, 2).await?;
            let status = TokenStore::new(pool)
                .status(&source)
                .await
                .map_err(|err| Failure::failed(err.to_string()))?
                .ok_or_else(|| {
                    Failure::usage(format!(
                        "no refresh token is stored for {source}; store one with `cairn auth \
                         set {source} --refresh-token-file F`"
                    ))
                })?;
            if json {
                print::json(&status)?;
                return Ok(ExitCode::SUCCESS);
            }
            outln!("credential   {}", status.credential);
            outln!("set          {}", status.set_at.to_rfc3339());
            outln!(
                "refreshed    {} ({} refreshes, {} rotations)",
                status
                    .refreshed_at
                    .map_or("never".to_owned(), |t| t.to_rfc3339()),
                status.refreshes,
                status.rotations
            );
            outln!(
                "sealed       {}",
                if status.sealed { "yes" } else { "no (no key)" }
            );
            if let Some(at) = status.refused_at {
                outln!(
                    "REFUSED      {} by the vendor: {}",
                    at.to_rfc3339(),
                    status.refusal.as_deref().unwrap_or_default()
                );
                outln!(
                    "             {}",
                    cairn_connectors::tokens::reauthorize_hint(&source)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_token(path: &PathBuf) -> Result<Secret, Failure> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|err| Failure::usage(format!("cannot read {shown}: {err}")))?
        .len();
    if size > MAX_TOKEN_BYTES {
        return Err(Failure::usage(format!(
            "{shown} holds {size} bytes; a refresh token is at most {MAX_TOKEN_BYTES}"
        )));
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|err| Failure::usage(format!("cannot read {shown}: {err}")))?,
    );
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(Failure::usage(format!(
            "{shown} must hold one refresh token, on one line"
        )));
    }
    Ok(Secret::new(token))
}
