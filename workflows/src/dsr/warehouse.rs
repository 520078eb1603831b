//! The person's rows in the warehouse: found by their address in a stream's identity
//! fields (without regard to case) or by one of their ids as the primary key, read from
//! each row's `_raw` record so the table's column mapping does not matter; deleted rows
//! count (they still hold the data).

use cairn_connectors::rest::RestSource;
use cairn_connectors::source::Source;
use cairn_connectors::warehouse::ident::quote_ident;
use cairn_runner::Error;
use sqlx::PgConnection;

use super::Subject;

/// One stream's warehouse table, as searched for one person.
pub(crate) struct PersonRows<'a> {
    source: &'a str,
    schema: &'a str,
    stream: &'a str,
    primary_key: Vec<String>,
    /// Identity fields as comma-joined JSON paths (split in SQL).
    fields: Vec<String>,
    email: String,
    ids: Vec<String>,
}

fn path(dotted: &str) -> Vec<String> {
    dotted.split('.').map(str::to_owned).collect()
}

impl<'a> PersonRows<'a> {
    /// `stream` of `source` (named `name`, landing in `schema`), for `subject`; `None`
    /// when the stream has neither identity fields nor ids of the person to search by.
    pub(crate) fn new(
        name: &'a str,
        schema: &'a str,
        source: &RestSource,
        stream: &'a str,
        subject: &Subject,
    ) -> Option<Self> {
        let fields: Vec<String> = source
            .identity_fields(stream)
            .iter()
            .map(|field| path(field).join(","))
            .collect();
        let ids: Vec<String> = subject
            .ids
            .iter()
            .filter(|(at, _)| at == name)
            .map(|(_, value)| value.clone())
            .collect();
        if fields.is_empty() && ids.is_empty() {
            return None;
        }
        let primary_key = source
            .streams()
            .into_iter()
            .find(|info| info.name == stream)
            .map_or_else(|| vec!["id".to_owned()], |info| path(&info.primary_key));
        Some(Self {
            source: name,
            schema,
            stream,
            primary_key,
            fields,
            email: subject.email.trim().to_lowercase(),
            ids,
        })
    }

    /// The table, quoted, if the source has landed this stream.
    async fn table(&self, conn: &mut PgConnection) -> Result<Option<String>, Error> {
        let table: Option<String> = sqlx::query_scalar(
            "SELECT table_name FROM cairn.warehouse_tables
              WHERE schema_name = $1 AND stream = $2 AND source = $3",
        )
        .bind(self.schema)
        .bind(self.stream)
        .bind(self.source)
        .fetch_optional(&mut *conn)
        .await?;
        table
            .map(|table| {
                Ok(format!(
                    "{}.{}",
                    quote_ident(self.schema).map_err(Error::permanent)?,
                    quote_ident(&table).map_err(Error::permanent)?
                ))
            })
            .transpose()
    }

    /// The SQL condition that a row is the person's ($2 fields, $3 address, $4 ids).
    const THEIRS: &'static str = "(EXISTS (SELECT 1 FROM unnest($2::text[]) f
                 WHERE lower(btrim(_raw #>> string_to_array(f, ','))) = $3)
            OR (_raw #>> $1) = ANY($4))";

    /// The person's rows, as (record id, `_raw` text); `None` when the stream was never
    /// landed.
    pub(crate) async fn find(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Option<Vec<(String, String)>>, Error> {
        let Some(table) = self.table(conn).await? else {
            return Ok(None);
        };
        let rows: Vec<(Option<String>, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT _raw #>> $1, _raw::text FROM {table} WHERE {}",
            Self::THEIRS
        )))
        .bind(&self.primary_key)
        .bind(&self.fields)
        .bind(&self.email)
        .bind(&self.ids)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some(
            rows.into_iter()
                .map(|(id, raw)| (id.unwrap_or_default(), raw))
                .collect(),
        ))
    }

    /// Deletes the row of record `id` if it is the person's; how many rows went.
    pub(crate) async fn delete(&self, conn: &mut PgConnection, id: &str) -> Result<u64, Error> {
        let Some(table) = self.table(conn).await? else {
            return Ok(0);
        };
        let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE (_raw #>> $1) = $5 AND {}",
            Self::THEIRS
        )))
        .bind(&self.primary_key)
        .bind(&self.fields)
        .bind(&self.email)
        .bind(&self.ids)
        .bind(id)
        .execute(&mut *conn)
        .await?;
        Ok(deleted.rows_affected())
    }
}
