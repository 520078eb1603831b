//! Errors: [`Error`] is what steps and workflows return, classified so the engine knows
//! whether to retry, park or give up; [`EngineError`] is what the engine's own
//! operations (start, list, claim, migrate) return.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::RunId;

/// A boxed error with its source chain intact.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How the engine treats a failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum ErrorClass {
    /// Worth retrying with the step's retry policy (network blips, 5xx, deadlocks).
    Transient,
    /// The vendor asked us to wait: the run is parked durably until `until`, holding no
    /// worker slot, and the step runs again then. Does not use up retry attempts.
    RateLimited {
        /// When the step may run again.
        until: DateTime<Utc>,
    },
    /// Retrying cannot help (bad input, auth revoked, constraint violation): the error is
    /// returned to the workflow at once.
    Permanent,
}

/// The error of a step or a workflow.
///
/// `?` converts the errors whose class is known: `sqlx` errors are classified by SQLSTATE
/// (a serialization failure is transient, a constraint violation permanent), I/O errors
/// are transient, JSON errors and text that does not parse (numbers, booleans, UTF-8,
/// `chrono` times, UUIDs) permanent, and `cairn-connectors`' HTTP errors follow their
/// category (a 429 parks the run until its `Retry-After`). Any other error says its class
/// where it is understood, with [`ResultExt::transient`] or [`ResultExt::permanent`]; a
/// crate classifies its own error types once with `impl From<TheirError> for Error`.
pub struct Error {
    class: ErrorClass,
    category: Option<Cow<'static, str>>,
    source: BoxError,
}

impl Error {
    /// An error worth retrying.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self::new(ErrorClass::Transient, source)
    }

    /// An error retrying cannot fix: the step fails at once.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self::new(ErrorClass::Permanent, source)
    }

    /// The vendor refuses service until `until` (a 429 with `Retry-After`, a spent daily
    /// quota): the run is parked until then without holding a worker.
    pub fn rate_limited_until(until: DateTime<Utc>, source: impl Into<BoxError>) -> Self {
        Self::new(ErrorClass::RateLimited { until }, source)
    }

    fn new(class: ErrorClass, source: impl Into<BoxError>) -> Self {
        Self {
            class,
            category: None,
            source: source.into(),
        }
    }

    /// Tags the error with a category (such as `auth`, `validation`, `schema`) that
    /// operators see in `runs show` and the dead-letter list.
    #[must_use]
    pub fn with_category(mut self, category: impl Into<Cow<'static, str>>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// How the engine treats this error.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// The category, when one was given.
    pub fn category(&self) -> Option<&str> {
        self.category.as_deref()
    }

    /// The underlying error, for downcasting and walking the source chain.
    pub fn source_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// Whether this error is worth another attempt.
    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    /// Whether a database could not be reached at all, anywhere along the source chain
    /// (see [`is_unreachable_db_error`]): a step that met this may not have been at fault.
    pub fn is_database_unreachable(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&*self.source);
        while let Some(err) = next {
            if err
                .downcast_ref::<sqlx::Error>()
                .is_some_and(is_unreachable_db_error)
            {
                return true;
            }
            next = err.source();
        }
        false
    }

    /// The same error, now permanent: used when retries are exhausted.
    pub(crate) fn into_permanent(mut self) -> Self {
        self.class = ErrorClass::Permanent;
        self
    }

    /// The message of the error and of each source, outermost first. A source whose
    /// message its parent already quotes (a common `"...: {source}"` pattern) is left
    /// out, so nothing is said twice.
    ///
    /// Every message passes through [`crate::redact`]: this is what is stored, logged
    /// and shown, so a secret a vendor echoed in an error body goes no further.
    pub fn chain(&self) -> Vec<String> {
        let mut out = vec![crate::redact::redact(&self.source.to_string()).into_owned()];
        let mut next = self.source.source();
        while let Some(err) = next {
            let message = crate::redact::redact(&err.to_string()).into_owned();
            if !out.last().is_some_and(|parent| parent.contains(&message)) {
                out.push(message);
            }
            next = err.source();
        }
        out
    }

    /// The stored form of this error, as recorded on a failed run.
    pub fn report(&self) -> ErrorReport {
        ErrorReport {
            class: self.class,
            category: self.category.as_ref().map(|c| c.to_string()),
            message: self.to_string(),
            chain: self.chain(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.chain().join(": "))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("class", &self.class)
            .field("category", &self.category)
            .field("source", &self.source)
            .finish()
    }
}

impl From<sqlx::Error> for Error {
    /// Classified by SQLSTATE: see [`is_transient_db_error`].
    fn from(err: sqlx::Error) -> Self {
        if is_transient_db_error(&err) {
            Self::transient(err)
        } else {
            Self::permanent(err)
        }
    }
}

impl From<std::io::Error> for Error {
    /// I/O fails for passing reasons far more often than for lasting ones: transient.
    fn from(err: std::io::Error) -> Self {
        Self::transient(err)
    }
}

impl From<serde_json::Error> for Error {
    /// Bad data stays bad: permanent.
    fn from(err: serde_json::Error) -> Self {
        Self::permanent(err)
    }
}

/// Text that does not parse stays unparseable: permanent.
macro_rules! bad_data {
    ($($error:ty),* $(,)?) => {
        $(impl From<$error> for Error {
            fn from(err: $error) -> Self {
                Self::permanent(err)
            }
        })*
    };
}

bad_data!(
    std::num::ParseIntError,
    std::num::ParseFloatError,
    std::str::ParseBoolError,
    std::str::Utf8Error,
    std::string::FromUtf8Error,
    chrono::ParseError,
    uuid::Error,
);

impl From<BoxError> for Error {
    /// An error of unknown kind is worth a retry: transient.
    fn from(err: BoxError) -> Self {
        Self::transient(err)
    }
}

impl From<Error> for BoxError {
    fn from(err: Error) -> Self {
        err.source
    }
}

/// The message a panic carried, for the error it becomes.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Whether a database error means the server could not be reached or went away: the
/// connection failed or was cut (I/O, TLS, SQLSTATE class 08), no connection came within
/// the pool's timeout, or the server is shutting down, crashed or starting up (57P01,
/// 57P02, 57P03). A restart of the server gives these; nothing about the statement does.
pub fn is_unreachable_db_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            code.starts_with("08") || ["57P01", "57P02", "57P03"].contains(&code.as_ref())
        }
        _ => false,
    }
}

/// Whether a database error may succeed on retry: lost connections, pool timeouts,
/// serialization failures, deadlocks, lock and statement timeouts, server shutdown and
/// resource exhaustion. Constraint, data and syntax errors are not.
pub fn is_transient_db_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 40: transaction rollback (serialization, deadlock); 08: connection;
            // 53: insufficient resources; 57: operator intervention (shutdown,
            // statement timeout 57014); 55P03: lock not available.
            ["40", "08", "53", "57"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "55P03"
        }
        _ => false,
    }
}

/// Shorthands to classify any `Result` at the point where the failure is understood.
pub trait ResultExt<T> {
    /// Marks the error permanent: the step will not be retried.
    fn permanent(self) -> Result<T, Error>;
    /// Marks the error transient: the step is retried with its policy.
    fn transient(self) -> Result<T, Error>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, Error> {
        self.map_err(Error::permanent)
    }

    fn transient(self) -> Result<T, Error> {
        self.map_err(Error::transient)
    }
}

/// An error as stored on a failed run and shown by `runs show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// How the engine classified it.
    #[serde(flatten)]
    pub class: ErrorClass,
    /// The category the workflow gave it, if any.
    pub category: Option<String>,
    /// The whole message, sources joined by `: `.
    pub message: String,
    /// The message of each error in the source chain, outermost first.
    pub chain: Vec<String>,
}

/// An error raised by the engine itself rather than by a workflow.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No workflow is registered under that name.
    #[error("unknown workflow `{name}`; registered workflows: {known}")]
    UnknownWorkflow {
        /// The name asked for.
        name: String,
        /// The registered names, comma separated.
        known: String,
    },
    /// The input does not deserialize into the workflow's input type.
    #[error("invalid input for workflow `{workflow}`: {source}")]
    InvalidInput {
        /// The workflow whose input was rejected.
        workflow: String,
        /// Why serde rejected it.
        #[source]
        source: serde_json::Error,
    },
    /// No run has that id.
    #[error("no run with id {0}")]
    RunNotFound(RunId),
    /// The run has ended, so nothing can be delivered to it.
    #[error("run {run} has ended ({status}); it takes no more events")]
    RunEnded {
        /// The run.
        run: RunId,
        /// How it ended.
        status: crate::RunStatus,
    },
    /// The `cairn` schema has not been created in this database.
    #[error("the cairn schema is missing from this database; run `cairn migrate` first")]
    NotMigrated,
    /// Applying migrations failed.
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A database operation failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A sealed value could not be opened (no key, another key, or altered).
    #[error("{0}")]
    Sealed(#[from] crate::seal::OpenError),
    /// A worker's identity is not a usable name, or another live worker holds it.
    #[error("{0}")]
    Identity(String),
}

impl EngineError {
    /// Whether the error is the caller's fault (bad name, bad input, unknown id) rather
    /// than a failed operation; the CLI exits 2 for these.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::UnknownWorkflow { .. }
                | Self::InvalidInput { .. }
                | Self::RunNotFound(_)
                | Self::RunEnded { .. }
        )
    }

    /// Whether the database could not be reached (see [`is_unreachable_db_error`]): the
    /// same call may well succeed once it is back.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Database(err) if is_unreachable_db_error(err))
    }

    /// Wraps a database error, recognising an unmigrated database.
    pub(crate) fn db(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("42P01" | "3F000")) =>
            {
                Self::NotMigrated
            }
            _ => Self::Database(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, ErrorClass};

    fn class(result: Result<(), Error>) -> ErrorClass {
        result.expect_err("an error").class()
    }

    #[test]
    fn text_that_does_not_parse_is_a_permanent_error() {
        let parse = |text: &str| -> Result<(), Error> {
            let _: u32 = text.parse()?;
            let _: f64 = text.parse()?;
            Ok(())
        };
        assert!(matches!(class(parse("twelve")), ErrorClass::Permanent));
        let id = || -> Result<(), Error> {
            uuid::Uuid::parse_str("not a uuid")?;
            Ok(())
        };
        assert!(matches!(class(id()), ErrorClass::Permanent));
        let time = || -> Result<(), Error> {
            chrono::DateTime::parse_from_rfc3339("yesterday")?;
            Ok(())
        };
        assert!(matches!(class(time()), ErrorClass::Permanent));
    }
}
