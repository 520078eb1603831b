//! Personal data encrypted at rest: when keys are configured ([`KEY_ENV`] or
//! [`KEY_FILE_ENV`]), what cairn keeps of vendors' data in its own tables (step outputs,
//! event payloads, quarantined and refused records, stored tokens) is sealed before it
//! leaves the process, and opened when it is read back.
//!
//! Each such column `x` has a companion `x_sealed bytea`: a row holds its value in one
//! of the two, plain when no key was configured as it was written, sealed otherwise. A
//! sealed value names the key that sealed it, so keys can change while values sealed
//! with earlier ones stay readable, and [`rotate`] re-seals them (and the plain ones)
//! with the current key in bounded batches. The warehouse tables are the user's and
//! stay plain; so do ids, cursors and run inputs and outputs, which the engine and the
//! syncs look rows up by.

mod keyring;
mod rotate;

use std::sync::{Arc, OnceLock};

pub use keyring::{KEY_ENV, KEY_FILE_ENV, KeyError, KeyId, Keyring, OpenError};
pub use rotate::{KeyCount, RotateError, Rotation, census, rotate};

/// A column cairn seals, with the companion that holds its sealed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The table, in the `cairn` schema.
    pub table: &'static str,
    /// The column of plain values.
    pub plain: &'static str,
    /// The `bytea` column of sealed values.
    pub sealed: &'static str,
    /// What a value is, for errors ("a step output").
    pub what: &'static str,
}

impl Column {
    /// What a sealed value of this column is bound to: a value copied into another
    /// column does not open there.
    fn label(&self) -> String {
        format!("cairn.{}.{}", self.table, self.plain)
    }
}

/// Step outputs: fetched pages, among others.
pub const STEP_OUTPUTS: Column = Column {
    table: "steps",
    plain: "output",
    sealed: "output_sealed",
    what: "a step output",
};

/// Events' payloads.
pub const EVENT_DATA: Column = Column {
    table: "events",
    plain: "data",
    sealed: "data_sealed",
    what: "an event payload",
};

/// Records the warehouse set aside: the connectors' table, named here because the
/// dead-letter list reads it too.
pub const QUARANTINED_RECORDS: Column = Column {
    table: "quarantine",
    plain: "record",
    sealed: "record_sealed",
    what: "a quarantined record",
};

/// The engine's sealed columns; the connectors and the workflows list theirs.
pub const ENGINE_COLUMNS: &[Column] = &[STEP_OUTPUTS, EVENT_DATA];

/// A value as it is to be stored: in the plain column or the sealed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept<'a> {
    /// No key is configured: the value as it is.
    Plain(&'a str),
    /// The value sealed with the current key.
    Sealed(Vec<u8>),
}

impl<'a> Kept<'a> {
    /// The value for the plain column.
    pub fn plain(&self) -> Option<&'a str> {
        match self {
            Kept::Plain(text) => Some(text),
            Kept::Sealed(_) => None,
        }
    }

    /// The value for the sealed column.
    pub fn sealed(&self) -> Option<&[u8]> {
        match self {
            Kept::Plain(_) => None,
            Kept::Sealed(bytes) => Some(bytes),
        }
    }
}

/// What seals and opens values: the configured keys, none (values stay plain), or the
/// error reading them, which every use then returns rather than writing plain values
/// its operator meant to be sealed.
#[derive(Debug, Clone)]
pub struct Sealer(Mode);

#[derive(Debug, Clone)]
enum Mode {
    Plain,
    Keys(Arc<Keyring>),
    Broken(KeyError),
}

impl Sealer {
    /// Stores values plain and opens no sealed value.
    pub fn plain() -> Self {
        Self(Mode::Plain)
    }

    /// Seals with `keys`.
    pub fn new(keys: Keyring) -> Self {
        Self(Mode::Keys(Arc::new(keys)))
    }

    /// The keys named by [`KEY_ENV`] or [`KEY_FILE_ENV`], or plain when neither is set.
    pub fn from_env() -> Result<Self, KeyError> {
        let inline = std::env::var(KEY_ENV).ok().filter(|v| !v.trim().is_empty());
        let file = std::env::var(KEY_FILE_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let keys = match (inline, file) {
            (None, None) => return Ok(Self::plain()),
            (Some(_), Some(_)) => {
                return Err(KeyError::Source(format!(
                    "both {KEY_ENV} and {KEY_FILE_ENV} are set; set one"
                )));
            }
            (Some(text), None) => Keyring::parse(&zeroize::Zeroizing::new(text), KEY_ENV)?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|err| {
                    KeyError::Source(format!(
                        "cannot read the key file {path:?} named by {KEY_FILE_ENV}: {err}"
                    ))
                })?;
                Keyring::parse(
                    &zeroize::Zeroizing::new(text),
                    &format!("key file {path:?}"),
                )?
            }
        };
        Ok(Self::new(keys))
    }

    /// This process's sealer, read from the environment once ([`Sealer::from_env`]):
    /// what every store and every workflow table of the process seals with unless told
    /// otherwise. When the keys cannot be read, every use fails with that error.
    pub fn process() -> Self {
        static PROCESS: OnceLock<Sealer> = OnceLock::new();
        PROCESS
            .get_or_init(|| Self::from_env().unwrap_or_else(|err| Self(Mode::Broken(err))))
            .clone()
    }

    /// The keys, or none, or why they could not be read.
    pub fn keys(&self) -> Result<Option<&Keyring>, KeyError> {
        match &self.0 {
            Mode::Plain => Ok(None),
            Mode::Keys(keys) => Ok(Some(keys)),
            Mode::Broken(err) => Err(err.clone()),
        }
    }

    /// `value` as `column` stores it: sealed with the current key when there is one.
    pub fn store<'a>(&self, column: &Column, value: &'a str) -> Result<Kept<'a>, KeyError> {
        Ok(match self.keys()? {
            None => Kept::Plain(value),
            Some(keys) => Kept::Sealed(keys.seal(&column.label(), value.as_bytes())),
        })
    }

    /// The value a row of `column` holds, from its plain and sealed columns.
    pub fn read(
        &self,
        column: &Column,
        plain: Option<String>,
        sealed: Option<&[u8]>,
    ) -> Result<Option<String>, OpenError> {
        let Some(sealed) = sealed else {
            return Ok(plain);
        };
        let opened = self.open(column, sealed)?;
        String::from_utf8(opened.to_vec())
            .map(Some)
            .map_err(|_| OpenError::Format { what: column.what })
    }

    /// The bytes of a sealed value of `column`.
    pub fn open(
        &self,
        column: &Column,
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, OpenError> {
        match self.keys()? {
            Some(keys) => keys.open(&column.label(), column.what, sealed),
            None => Err(match KeyId::of_sealed(sealed) {
                Some(id) => OpenError::NoKeys {
                    what: column.what,
                    id,
                },
                None => OpenError::Format { what: column.what },
            }),
        }
    }
}
