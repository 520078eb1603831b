//! The bare bulk-insert baseline: the rows a sync landed, inserted again with nothing
//! of cairn around them, to say what PostgreSQL itself can write on this machine.
//!
//! The rows are read back from the warehouse table as `COPY` text and written by
//! `COPY FROM STDIN` into an empty table made `LIKE` it (the same columns, indexes and
//! compression), in transactions of [`ROWS_PER_COMMIT`] rows: the fastest way
//! PostgreSQL takes rows, in commits as large as a sync's landings, on one connection
//! and on as many as a sync lands on at once. A third run stages each batch by `COPY`
//! and merges it with one `INSERT … SELECT`, to show whether landing that way would pay.

use std::time::Instant;

use sqlx::{AssertSqlSafe, Connection, PgPool};

use super::db_failure;
use crate::cli::Failure;

/// Rows per `COPY` (and commit), as many as a landing's.
pub(super) const ROWS_PER_COMMIT: usize = 1000;

/// What the baseline measured.
pub(super) struct BulkInsert {
    pub(super) rows: usize,
    /// `COPY` on one connection.
    pub(super) one_connection: f64,
    /// `COPY` on [`CONNECTIONS`] connections at once, each taking every other batch.
    pub(super) parallel: f64,
    /// On [`CONNECTIONS`] connections, each batch by `COPY` into a temporary staging
    /// table and one `INSERT … SELECT … ON CONFLICT` from it: the other way a landing
    /// could go.
    pub(super) staged: f64,
}

impl BulkInsert {
    /// The best bare rate: what a sync is held to.
    pub(super) fn rows_per_sec(&self) -> f64 {
        self.one_connection.max(self.parallel)
    }
}

/// Connections of the parallel runs: as many as a sync's landings in flight.
pub(super) const CONNECTIONS: usize = 2;

/// Copies up to `limit` rows of `table` (schema-qualified and quoted) into a fresh table
/// like it, one commit per [`ROWS_PER_COMMIT`] rows, in each of the ways
/// [`BulkInsert`] lists; drops the copy afterwards.
pub(super) async fn bulk_insert(
    pool: &PgPool,
    table: &str,
    limit: usize,
) -> Result<BulkInsert, Failure> {
    let failed = db_failure("sync");
    let text = {
        let mut conn = pool.acquire().await.map_err(&failed)?;
        let stream = conn
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM {table} LIMIT {limit}) TO STDOUT"
            ))
            .await
            .map_err(&failed)?;
        collect(stream).await.map_err(&failed)?
    };
    // COPY's text format escapes newlines inside values: one line is one row.
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let batches: Vec<Vec<u8>> = lines.chunks(ROWS_PER_COMMIT).map(<[_]>::concat).collect();
    // Each way in turn, [`ROUNDS`] times: the median of each stands, so a moment of a
    // slow VM moves no figure.
    let mut rates = [[0.0; ROUNDS]; 3];
    for round in 0..ROUNDS {
        for (way, rates) in [Way::Copy(1), Way::Copy(CONNECTIONS), Way::Staged]
            .iter()
            .zip(&mut rates)
        {
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE {COPY_TABLE} (LIKE {table} INCLUDING ALL)"
            )))
            .execute(pool)
            .await
            .map_err(&failed)?;
            let secs = way.run(pool, &batches).await.map_err(&failed)?;
            rates[round] = super::report::share(lines.len() as f64, secs);
            sqlx::query(AssertSqlSafe(format!("DROP TABLE {COPY_TABLE}")))
                .execute(pool)
                .await
                .map_err(&failed)?;
        }
    }
    let [one_connection, parallel, staged] = rates.map(|mut rates| {
        rates.sort_by(f64::total_cmp);
        rates[ROUNDS / 2]
    });
    Ok(BulkInsert {
        rows: lines.len(),
        one_connection,
        parallel,
        staged,
    })
}

/// Times each way is measured.
const ROUNDS: usize = 3;

/// The table the rows are copied into.
const COPY_TABLE: &str = "cairn_bench_bare_insert";

/// How the batches are written.
enum Way {
    /// `COPY` straight into the table, on this many connections.
    Copy(usize),
    /// `COPY` into a staging table, then one `INSERT … SELECT` from it.
    Staged,
}

impl Way {
    /// Writes every batch, a commit each; returns the seconds it took.
    async fn run(&self, pool: &PgPool, batches: &[Vec<u8>]) -> Result<f64, sqlx::Error> {
        let connections = match self {
            Way::Copy(n) => *n,
            Way::Staged => CONNECTIONS,
        };
        let mut conns = Vec::with_capacity(connections);
        for _ in 0..connections {
            let mut conn = pool.acquire().await?;
            if let Way::Staged = self {
                sqlx::query(AssertSqlSafe(format!(
                    "CREATE TEMPORARY TABLE cairn_bench_stage (LIKE {COPY_TABLE}) \
                     ON COMMIT DELETE ROWS"
                )))
                .execute(&mut *conn)
                .await?;
            }
            conns.push(conn);
        }
        let started = Instant::now();
        let writers = conns.iter_mut().enumerate().map(|(nth, conn)| async move {
            for batch in batches.iter().skip(nth).step_by(connections) {
                let mut tx = conn.begin().await?;
                let into = match self {
                    Way::Copy(_) => COPY_TABLE,
                    Way::Staged => "cairn_bench_stage",
                };
                let mut copy_in = tx.copy_in_raw(&format!("COPY {into} FROM STDIN")).await?;
                copy_in.send(batch.as_slice()).await?;
                copy_in.finish().await?;
                if let Way::Staged = self {
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {COPY_TABLE} SELECT * FROM cairn_bench_stage \
                         ON CONFLICT DO NOTHING"
                    )))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
            Ok::<(), sqlx::Error>(())
        });
        futures::future::try_join_all(writers).await?;
        let secs = started.elapsed().as_secs_f64();
        for mut conn in conns {
            if let Way::Staged = self {
                sqlx::query("DROP TABLE cairn_bench_stage")
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(secs)
    }
}

/// The whole output of a `COPY TO STDOUT`.
async fn collect<B: AsRef<[u8]>>(
    mut stream: impl futures::Stream<Item = Result<B, sqlx::Error>> + Unpin,
) -> Result<Vec<u8>, sqlx::Error> {
    use futures::StreamExt;
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(chunk?.as_ref());
    }
    Ok(text)
}
