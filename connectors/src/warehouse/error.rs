//! What can go wrong landing data in the warehouse, and how the engine should treat it.

use crate::checksum::ChecksumError;

/// A warehouse operation that failed. Drifted or malformed *records* are not errors:
/// they are quarantined and reported in the [`PageReport`](super::PageReport).
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// A name cannot be a Postgres identifier (see [`quote_ident`](super::quote_ident)).
    #[error("{name} cannot be a Postgres identifier: {reason}")]
    InvalidIdentifier {
        /// The name, escaped for display.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A statement failed.
    #[error("warehouse stream {stream:?}: {during} failed")]
    Database {
        /// The stream the statement was for.
        stream: String,
        /// What the statement was doing.
        during: &'static str,
        /// The database error.
        #[source]
        source: sqlx::Error,
    },
    /// The encryption keys could not be read, so nothing set aside could be sealed.
    #[error("warehouse stream {stream:?}: cannot seal quarantined records: {source}")]
    Keys {
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: cairn_runner::seal::KeyError,
    },
    /// Reading the open alerts failed.
    #[error("listing the open alerts (cairn.alerts) failed")]
    ListAlerts(#[source] sqlx::Error),
    /// A page could not be encoded for the database.
    #[error("warehouse stream {stream:?}: encoding a page failed")]
    Encode {
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The shape of a stream's table changed under every attempt to land a page (other
    /// writers kept adding columns); retrying the step will reload it.
    #[error("warehouse stream {stream:?}: the table's shape kept changing while a page was landed")]
    ShapeContention {
        /// The stream.
        stream: String,
    },
    /// The live rows of a stream have no checksum (a `_raw` without a string `id`).
    #[error("warehouse stream {stream:?}: cannot checksum the live rows")]
    Checksum {
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: ChecksumError,
    },
    /// The stream's table was created with another primary key.
    #[error(
        "warehouse stream {stream:?}: its table is keyed by {registered:?}, not {requested:?}; \
         a stream's primary key cannot change (land it under a new stream name)"
    )]
    PrimaryKeyChanged {
        /// The stream.
        stream: String,
        /// The primary key its table was created with.
        registered: String,
        /// The primary key asked for now.
        requested: String,
    },
    /// The table belongs to another source: two sources never share a table.
    #[error(
        "warehouse table {table} is written by source {owner:?}, not {requester:?}; two \
         sources never share a table: give one of them its own [warehouse] schema"
    )]
    TableOwned {
        /// `schema.stream`.
        table: String,
        /// The source that writes it.
        owner: String,
        /// The source that asked.
        requester: String,
    },
    /// The share of missing ids allowed in a reconciliation is not between 0 and 1.
    #[error("max_missing_share must be between 0 and 1, got {0}")]
    InvalidShare(f64),
}

impl WarehouseError {
    /// A closure for `map_err` that wraps a database error with its stream and purpose.
    pub(crate) fn db(stream: &str, during: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        let stream = stream.to_owned();
        move |source| Self::Database {
            stream,
            during,
            source,
        }
    }

    /// Whether the error means a table or column the cached shape knows is not there
    /// (another transaction's DDL rolled back, or the table was altered by hand).
    pub(crate) fn is_shape_mismatch(&self) -> bool {
        matches!(self, Self::Database { source: sqlx::Error::Database(db), .. }
            if matches!(db.code().as_deref(), Some("42703" | "42P01")))
    }
}

impl From<WarehouseError> for cairn_runner::Error {
    /// Database errors follow their SQLSTATE, except that a table or column missing
    /// under a cached shape is transient (the shape is re-read on retry); contention is
    /// transient; invalid names, shares and checksums are permanent.
    fn from(err: WarehouseError) -> Self {
        let transient = match &err {
            WarehouseError::Database { source, .. } => {
                err.is_shape_mismatch() || cairn_runner::error::is_transient_db_error(source)
            }
            WarehouseError::ShapeContention { .. } => true,
            WarehouseError::ListAlerts(source) => {
                cairn_runner::error::is_transient_db_error(source)
            }
            WarehouseError::InvalidIdentifier { .. }
            | WarehouseError::Checksum { .. }
            | WarehouseError::Encode { .. }
            | WarehouseError::Keys { .. }
            | WarehouseError::PrimaryKeyChanged { .. }
            | WarehouseError::TableOwned { .. }
            | WarehouseError::InvalidShare(_) => false,
        };
        let engine = if transient {
            Self::transient(err)
        } else {
            Self::permanent(err)
        };
        engine.with_category("warehouse")
    }
}

#[cfg(test)]
mod tests {
    use cairn_runner::ErrorClass;

    use super::WarehouseError;

    #[test]
    fn contention_is_retried_and_bad_names_are_not() {
        let contention = WarehouseError::ShapeContention {
            stream: "contacts".to_owned(),
        };
        assert_eq!(
            cairn_runner::Error::from(contention).class(),
            ErrorClass::Transient
        );
        let name = super::super::quote_ident("").unwrap_err();
        let engine = cairn_runner::Error::from(name);
        assert_eq!(engine.class(), ErrorClass::Permanent);
        assert_eq!(engine.category(), Some("warehouse"));
        let lost = WarehouseError::Database {
            stream: "contacts".to_owned(),
            during: "upserting a page",
            source: sqlx::Error::PoolTimedOut,
        };
        assert_eq!(
            cairn_runner::Error::from(lost).class(),
            ErrorClass::Transient
        );
    }
}
