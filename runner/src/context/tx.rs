//! The transaction a transactional step's closure writes through.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::postgres::{PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, PgConnection, PgPool, Postgres, SqlStr};

use crate::Error;

/// The transaction of a transactional step, handed to its closure.
///
/// The transaction begins when the closure first asks for its connection, so a step
/// that writes nothing pays for no transaction. Cloning the handle is cheap; once the
/// closure returns, the engine takes the transaction back to store the checkpoint and
/// commit, and the handle no longer works.
#[derive(Clone)]
pub struct Tx {
    slot: Arc<tokio::sync::Mutex<TxState>>,
    position: i32,
}

pub(super) enum TxState {
    /// Not begun yet: the pool to begin it on.
    Unused(PgPool),
    Open(sqlx::Transaction<'static, Postgres>),
    /// The step took the transaction back.
    Ended,
}

/// The step's transaction, borrowed: `&mut conn` is a `sqlx` executor
/// (`query.execute(&mut conn)`), and so is `&mut *conn`, the `PgConnection` itself.
pub struct TxConn<'a> {
    guard: tokio::sync::MappedMutexGuard<'a, sqlx::Transaction<'static, Postgres>>,
}

/// A [`Tx`] was used after its step ended.
#[derive(Debug, thiserror::Error)]
#[error("this transaction belongs to a step that has already ended")]
pub struct TxFinished;

impl Tx {
    pub(super) fn new(pool: PgPool, position: i32) -> Self {
        Self {
            slot: Arc::new(tokio::sync::Mutex::new(TxState::Unused(pool))),
            position,
        }
    }

    /// The step's position in its run: unique in the run, the same on every attempt.
    pub fn position(&self) -> i32 {
        self.position
    }

    /// The connection of the step's transaction, which begins on the first call.
    pub async fn conn(&self) -> Result<TxConn<'_>, Error> {
        let mut guard = self.slot.lock().await;
        match &*guard {
            TxState::Open(_) => {}
            TxState::Ended => return Err(Error::permanent(TxFinished)),
            TxState::Unused(pool) => {
                let tx = pool.begin().await?;
                *guard = TxState::Open(tx);
            }
        }
        tokio::sync::MutexGuard::try_map(guard, |state| match state {
            TxState::Open(tx) => Some(tx),
            TxState::Unused(_) | TxState::Ended => None,
        })
        .map(|guard| TxConn { guard })
        .map_err(|_| Error::permanent(TxFinished))
    }

    pub(super) fn take(&self) -> Option<TxState> {
        let mut slot = self.slot.try_lock().ok()?;
        Some(std::mem::replace(&mut *slot, TxState::Ended))
    }
}

impl std::ops::Deref for TxConn<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.guard
    }
}

impl std::ops::DerefMut for TxConn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.guard
    }
}

impl std::fmt::Debug for TxConn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TxConn")
    }
}

/// Every call goes to the transaction's connection, so a query runs on `&mut conn`
/// exactly as on `&mut *conn`.
impl<'c> sqlx::Executor<'c> for &'c mut TxConn<'_> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, Postgres>,
    {
        let conn: &'c mut PgConnection = self;
        conn.fetch_many(query)
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, Postgres>,
    {
        let conn: &'c mut PgConnection = self;
        conn.fetch_optional(query)
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        let conn: &'c mut PgConnection = self;
        conn.prepare_with(sql, parameters)
    }

    // sqlx declares this only with its `offline` feature, which its `macros` feature
    // (on in cairn's sqlx) turns on, so it is always there beside cairn.
    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        let conn: &'c mut PgConnection = self;
        conn.describe(sql)
    }
}
