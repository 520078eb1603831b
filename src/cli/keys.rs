//! `cairn keys`: the encryption keys personal data is sealed with at rest. `new` makes a
//! key, `status` counts the values each key sealed, `rotate` re-seals everything with
//! the current key while workers run.

use std::process::ExitCode;

use cairn_runner::seal::{self, KeyCount, Sealer};
use serde::Serialize;

use super::{Failure, Outcome, connect, print};

/// The subcommands of `cairn keys`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Print a new random key (base64, 32 bytes) for CAIRN_ENCRYPTION_KEY or a key file.
    New,
    /// Count the stored values each key sealed, and those stored plain.
    Status {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Seal every stored value with the current key (the first configured): values
    /// stored plain and those sealed with earlier keys, in batches, while workers run.
    Rotate {
        /// Rows per batch (each batch its own transaction).
        #[arg(long, default_value_t = 500)]
        batch: u32,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct Count {
    table: &'static str,
    column: &'static str,
    /// The key's id, or `null` for values stored plain.
    key: Option<String>,
    current: bool,
    rows: i64,
}

#[derive(Serialize)]
struct Status {
    current_key: Option<String>,
    configured_keys: Vec<String>,
    values: Vec<Count>,
}

#[derive(Serialize)]
struct Rotated {
    table: &'static str,
    column: &'static str,
    rewritten: u64,
    changed_meanwhile: u64,
}

fn sealer() -> Result<Sealer, Failure> {
    Sealer::from_env().map_err(|err| Failure::usage(err.to_string()))
}

pub(crate) async fn run(url: Option<&str>, command: KeysCommand) -> Outcome {
    match command {
        KeysCommand::New => {
            let key = seal::Keyring::generate();
            outln!("{}", key.as_str());
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Status { json } => {
            let sealer = sealer()?;
            let keys = sealer
                .keys()
                .map_err(|err| Failure::usage(err.to_string()))?;
            let current = keys.map(|k| k.current());
            let pool = connect(url, 2).await?;
            let counts = seal::census(&pool, &cairn_workflows::sealed_columns())
                .await
                .map_err(|err| Failure::failed(format!("counting sealed values: {err}")))?;
            let status = Status {
                current_key: current.map(|id| id.to_string()),
                configured_keys: keys
                    .map(|k| k.ids().map(|id| id.to_string()).collect())
                    .unwrap_or_default(),
                values: counts.iter().map(|c| count(c, current)).collect(),
            };
            if json {
                print::json(&status)?;
                return Ok(ExitCode::SUCCESS);
            }
            match &status.current_key {
                Some(key) => outln!(
                    "sealing with key {key}; configured: {}",
                    status.configured_keys.join(", ")
                ),
                None => outln!(
                    "no key configured ({} / {}): new values are stored plain",
                    seal::KEY_ENV,
                    seal::KEY_FILE_ENV
                ),
            }
            for c in &status.values {
                let key = match &c.key {
                    Some(key) if c.current => format!("key {key} (current)"),
                    Some(key) => format!("key {key}"),
                    None => "plain".to_owned(),
                };
                outln!("{:>10}  {}.{}  {key}", c.rows, c.table, c.column);
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate { batch, json } => {
            if batch == 0 || batch > 100_000 {
                return Err(Failure::usage("--batch: give between 1 and 100000 rows"));
            }
            let sealer = sealer()?;
            let pool = connect(url, 2).await?;
            let done = seal::rotate(&pool, &sealer, &cairn_workflows::sealed_columns(), batch)
                .await
                .map_err(|err| match err {
                    seal::RotateError::NoKey => Failure::usage(err.to_string()),
                    other => Failure::failed(format!("rotation stopped: {other}")),
                })?;
            let rotated: Vec<Rotated> = done
                .iter()
                .map(|r| Rotated {
                    table: r.column.table,
                    column: r.column.plain,
                    rewritten: r.rewritten,
                    changed_meanwhile: r.changed,
                })
                .collect();
            if json {
                print::json(&rotated)?;
            } else {
                for r in &rotated {
                    outln!(
                        "{}.{}: {} values sealed with the current key{}",
                        r.table,
                        r.column,
                        r.rewritten,
                        if r.changed_meanwhile > 0 {
                            format!(
                                "; {} changed meanwhile (run again to cover them)",
                                r.changed_meanwhile
                            )
                        } else {
                            String::new()
                        }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn count(c: &KeyCount, current: Option<seal::KeyId>) -> Count {
    Count {
        table: c.column.table,
        column: c.column.plain,
        key: c.key.map(|id| id.to_string()),
        current: c.key.is_some() && c.key == current,
        rows: c.rows,
    }
}
