//! The schema registry: the shape of each stream's table (fields, their columns and
//! types), read from and written to `cairn.warehouse_tables` / `cairn.warehouse_columns`,
//! and the DDL that creates tables and adds columns.
//!
//! A shape carries a version drawn from a sequence, so a cached shape is current exactly
//! when its version matches the registry's, as seen by the caller's transaction. Shape
//! changes take a per-stream advisory lock and re-check the version under it, so two
//! workers adding the same column serialise instead of failing.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{AssertSqlSafe, PgConnection};

use super::error::WarehouseError;
use super::ident::{RESERVED_COLUMNS, column_name, hashed_name, quote_ident};
use super::types::ColumnType;

/// One vendor field of a stream and where it lands.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) column: String,
    /// `None` while only nulls have been seen, or for a field kept in `_raw` only: no
    /// column exists.
    pub(crate) ty: Option<ColumnType>,
    /// Some records omit it: its absence is not a removal.
    pub(crate) optional: bool,
    /// Past the table's column cap: kept in `_raw` only, for good.
    pub(crate) raw_only: bool,
}

/// The registered shape of one stream's table, with its landing statement.
#[derive(Debug)]
pub(crate) struct Shape {
    pub(crate) version: i64,
    /// The source that writes the table; `None` for a table from before tables had
    /// owners, which the first source to land in it claims.
    pub(crate) owner: Option<String>,
    /// `"schema"."table"`, quoted.
    pub(crate) table: String,
    pub(crate) primary_key: String,
    /// The primary key's column, quoted.
    pub(crate) pk_column: String,
    /// Every registered field but the primary key, in registration order.
    pub(crate) fields: Vec<Field>,
    /// The one-statement upsert for a page (see [`super::land`]).
    pub(crate) upsert_sql: Arc<str>,
}

impl Shape {
    fn new(
        (version, owner): (i64, Option<String>),
        table: String,
        primary_key: String,
        pk_column: String,
        fields: Vec<Field>,
    ) -> Result<Self, WarehouseError> {
        let upsert_sql = super::land::upsert_sql(&table, &pk_column, &fields)?.into();
        Ok(Self {
            version,
            owner,
            table,
            primary_key,
            pk_column,
            fields,
            upsert_sql,
        })
    }

    /// The fields that have a column, in the order the landing statement lists them.
    pub(crate) fn typed(&self) -> impl Iterator<Item = (&Field, ColumnType)> {
        self.fields.iter().filter_map(|f| f.ty.map(|ty| (f, ty)))
    }
}

/// A field a page brings that the registry does not know.
#[derive(Debug)]
pub(crate) struct NewField {
    pub(crate) name: String,
    /// `None`: only nulls so far (or kept in `_raw` only).
    pub(crate) ty: Option<ColumnType>,
    pub(crate) optional: bool,
    pub(crate) raw_only: bool,
}

/// What a page needs the shape to become.
#[derive(Debug, Default)]
pub(crate) struct ShapeChange {
    /// Fields never seen before.
    pub(crate) new_fields: Vec<NewField>,
    /// Registered fields seen only as null until now that have a type at last.
    pub(crate) typed: Vec<(String, ColumnType)>,
    /// Registered fields some records turned out to omit.
    pub(crate) optional: Vec<String>,
    /// Registered fields seen only as null until now that have a value at last, when the
    /// table has no room for another column.
    pub(crate) raw_only: Vec<String>,
}

impl ShapeChange {
    pub(crate) fn is_empty(&self) -> bool {
        self.new_fields.is_empty()
            && self.typed.is_empty()
            && self.optional.is_empty()
            && self.raw_only.is_empty()
    }
}

/// The outcome of [`change`].
pub(crate) enum Changed {
    /// The new shape, and the columns the DDL added (unquoted names).
    Done(Shape, Vec<String>),
    /// Another transaction changed the shape first: reload and classify again.
    Stale,
}

/// The registry's version of a stream's shape, as this transaction sees it, and the
/// source that owns the table.
pub(crate) async fn version(
    conn: &mut PgConnection,
    schema: &str,
    stream: &str,
) -> Result<Option<(i64, Option<String>)>, WarehouseError> {
    sqlx::query_as(
        "SELECT version, source FROM cairn.warehouse_tables WHERE schema_name = $1 AND stream = $2",
    )
    .bind(schema)
    .bind(stream)
    .fetch_optional(conn)
    .await
    .map_err(WarehouseError::db(stream, "reading the shape version"))
}

/// Makes `source` the owner of a table that has none (one from before tables had
/// owners). The version is left alone: the shape did not change.
pub(crate) async fn claim(
    conn: &mut PgConnection,
    schema: &str,
    stream: &str,
    source: &str,
) -> Result<(), WarehouseError> {
    sqlx::query(
        "UPDATE cairn.warehouse_tables SET source = $3
          WHERE schema_name = $1 AND stream = $2 AND source IS NULL",
    )
    .bind(schema)
    .bind(stream)
    .bind(source)
    .execute(conn)
    .await
    .map_err(WarehouseError::db(stream, "claiming the table"))?;
    Ok(())
}

/// A table of the registry joined with one of its fields (none for a table without).
#[derive(sqlx::FromRow)]
struct RegistryRow {
    table_name: String,
    source: Option<String>,
    primary_key: String,
    version: i64,
    field: Option<String>,
    column_name: Option<String>,
    column_type: Option<String>,
    optional: Option<bool>,
    raw_only: Option<bool>,
}

/// Reads a stream's shape from the registry; `None` when it has no table yet.
pub(crate) async fn load(
    conn: &mut PgConnection,
    schema: &str,
    stream: &str,
) -> Result<Option<Shape>, WarehouseError> {
    let rows: Vec<RegistryRow> = sqlx::query_as(
        "SELECT t.table_name, t.source, t.primary_key, t.version, c.field, c.column_name,
                c.column_type, c.optional, c.raw_only
           FROM cairn.warehouse_tables t
           LEFT JOIN cairn.warehouse_columns c USING (schema_name, stream)
          WHERE t.schema_name = $1 AND t.stream = $2
          ORDER BY c.added_at, c.field",
    )
    .bind(schema)
    .bind(stream)
    .fetch_all(&mut *conn)
    .await
    .map_err(WarehouseError::db(stream, "reading the schema registry"))?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let (table_name, primary_key, version) = (
        first.table_name.clone(),
        first.primary_key.clone(),
        (first.version, first.source.clone()),
    );
    let mut pk_column = column_name(&primary_key);
    let mut fields = Vec::new();
    for row in rows {
        let (Some(name), Some(column), ty) = (row.field, row.column_name, row.column_type) else {
            continue;
        };
        if name == primary_key {
            pk_column = column;
            continue;
        }
        // A type this version does not know is treated as not yet typed: its column is
        // left alone rather than guessed at.
        let ty = ty.as_deref().and_then(ColumnType::from_sql);
        fields.push(Field {
            name,
            column,
            ty,
            optional: row.optional.unwrap_or(false),
            raw_only: row.raw_only.unwrap_or(false),
        });
    }
    let table = format!("{}.{}", quote_ident(schema)?, quote_ident(&table_name)?);
    if fields.iter().any(|f| f.ty == Some(ColumnType::Jsonb)) {
        json_kinds(conn, stream, &table, &mut fields).await?;
    }
    Shape::new(
        version,
        table,
        primary_key,
        quote_ident(&pk_column)?,
        fields,
    )
    .map(Some)
}

/// Refines the `jsonb` columns of `fields` to the JSON kind their column comment
/// records (the registry keeps the SQL type only, and cannot grow without a migration).
async fn json_kinds(
    conn: &mut PgConnection,
    stream: &str,
    table: &str,
    fields: &mut [Field],
) -> Result<(), WarehouseError> {
    let comments: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.attname::text, d.description
           FROM pg_attribute a
           JOIN pg_description d ON d.objoid = a.attrelid AND d.objsubid = a.attnum
                                AND d.classoid = 'pg_class'::regclass
          WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(table)
    .fetch_all(conn)
    .await
    .map_err(WarehouseError::db(stream, "reading column comments"))?;
    for (column, comment) in comments {
        let kind = ColumnType::from_comment(&comment);
        let field = fields
            .iter_mut()
            .find(|f| f.column == column && f.ty == Some(ColumnType::Jsonb));
        if let (Some(kind), Some(field)) = (kind, field) {
            field.ty = Some(kind);
        }
    }
    Ok(())
}

/// Applies `change` to the stream's shape (`current`, `None` for a new table) inside the
/// caller's transaction: creates the table if needed, adds the columns, registers the
/// fields and bumps the version. Returns [`Changed::Stale`] when the registry moved on
/// since `current` was read.
pub(crate) async fn change(
    conn: &mut PgConnection,
    (source, schema): (&str, &str),
    stream: &str,
    primary_key: &str,
    current: Option<&Shape>,
    change: &ShapeChange,
) -> Result<Changed, WarehouseError> {
    let db = |during| WarehouseError::db(stream, during);
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("cairn.warehouse {schema:?} {stream:?}"))
        .execute(&mut *conn)
        .await
        .map_err(db("locking the shape"))?;
    if version(conn, schema, stream).await?.map(|(v, _)| v) != current.map(|s| s.version) {
        return Ok(Changed::Stale);
    }
    let quoted_schema = quote_ident(schema)?;
    let (table, table_name, pk_column) = match current {
        Some(shape) => (shape.table.clone(), None, shape.pk_column.clone()),
        None => {
            let table_name = column_name(stream);
            let table = format!("{quoted_schema}.{}", quote_ident(&table_name)?);
            (
                table,
                Some(table_name),
                quote_ident(&column_name(primary_key))?,
            )
        }
    };
    if let Some(table_name) = &table_name {
        create_table(
            conn,
            (source, schema),
            stream,
            primary_key,
            &table,
            table_name,
            &pk_column,
        )
        .await?;
    }

    // Name the new columns: the natural name when free, else a hashed one.
    let mut taken: HashSet<String> = RESERVED_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    taken.insert(column_name(primary_key));
    let mut fields = current.map(|s| s.fields.clone()).unwrap_or_default();
    taken.extend(fields.iter().map(|f| f.column.clone()));
    // What the registry is told: (field, column, type, optional, raw only).
    let mut registered: Vec<(String, String, Option<ColumnType>, bool, bool)> = Vec::new();
    for new in &change.new_fields {
        let mut column = column_name(&new.name);
        let mut attempt = 0;
        while taken.contains(&column) {
            attempt += 1;
            column = hashed_name(&new.name, attempt);
        }
        taken.insert(column.clone());
        registered.push((
            new.name.clone(),
            column.clone(),
            new.ty,
            new.optional,
            new.raw_only,
        ));
        fields.push(Field {
            name: new.name.clone(),
            column,
            ty: new.ty,
            optional: new.optional,
            raw_only: new.raw_only,
        });
    }
    for field in &mut fields {
        let typed = change.typed.iter().find(|(name, _)| name == &field.name);
        let optional = change.optional.contains(&field.name);
        let raw_only = change.raw_only.contains(&field.name);
        if typed.is_none() && !optional && !raw_only {
            continue;
        }
        if let Some((_, ty)) = typed {
            field.ty = Some(*ty);
        }
        field.optional |= optional;
        field.raw_only |= raw_only;
        let column_type = typed.map(|(_, ty)| *ty).or(field.ty);
        registered.push((
            field.name.clone(),
            field.column.clone(),
            column_type,
            field.optional,
            field.raw_only,
        ));
    }

    // Columns for new fields with a type, and for fields typed at last.
    let added: Vec<(&str, ColumnType)> = registered
        .iter()
        .filter(|(name, _, _, _, raw_only)| {
            !raw_only
                && (change.new_fields.iter().any(|f| &f.name == name)
                    || change.typed.iter().any(|(typed, _)| typed == name))
        })
        .filter_map(|(_, column, ty, _, _)| ty.map(|ty| (column.as_str(), ty)))
        .collect();
    if !added.is_empty() {
        let mut clauses = Vec::with_capacity(added.len());
        for (column, ty) in &added {
            clauses.push(format!(
                "ADD COLUMN IF NOT EXISTS {} {ty}",
                quote_ident(column)?
            ));
        }
        let ddl = format!("ALTER TABLE {table} {}", clauses.join(", "));
        sqlx::query(AssertSqlSafe(ddl))
            .execute(&mut *conn)
            .await
            .map_err(db("adding columns"))?;
        for (column, ty) in &added {
            if let Some(comment) = ty.comment() {
                // The comment is one of two constants, never vendor text.
                let ddl = format!(
                    "COMMENT ON COLUMN {table}.{} IS '{comment}'",
                    quote_ident(column)?
                );
                sqlx::query(AssertSqlSafe(ddl))
                    .execute(&mut *conn)
                    .await
                    .map_err(db("recording a column's JSON kind"))?;
            }
        }
    }
    let names: Vec<&str> = registered.iter().map(|r| r.0.as_str()).collect();
    let columns: Vec<&str> = registered.iter().map(|r| r.1.as_str()).collect();
    let types: Vec<Option<&str>> = registered
        .iter()
        .map(|r| r.2.map(ColumnType::sql))
        .collect();
    let optional: Vec<bool> = registered.iter().map(|r| r.3).collect();
    let raw_only: Vec<bool> = registered.iter().map(|r| r.4).collect();
    sqlx::query(
        "INSERT INTO cairn.warehouse_columns
                (schema_name, stream, field, column_name, column_type, optional, raw_only)
         SELECT $1, $2, f, c, t, o, r
           FROM unnest($3::text[], $4::text[], $5::text[], $6::bool[], $7::bool[])
                AS u(f, c, t, o, r)
         ON CONFLICT (schema_name, stream, field) DO UPDATE
            SET column_type = EXCLUDED.column_type, optional = EXCLUDED.optional,
                raw_only = EXCLUDED.raw_only",
    )
    .bind(schema)
    .bind(stream)
    .bind(&names)
    .bind(&columns)
    .bind(&types)
    .bind(&optional)
    .bind(&raw_only)
    .execute(&mut *conn)
    .await
    .map_err(db("registering fields"))?;
    let version: i64 = sqlx::query_scalar(
        "UPDATE cairn.warehouse_tables
            SET version = nextval('cairn.warehouse_shape_version'), updated_at = now()
          WHERE schema_name = $1 AND stream = $2
         RETURNING version",
    )
    .bind(schema)
    .bind(stream)
    .fetch_one(&mut *conn)
    .await
    .map_err(db("bumping the shape version"))?;
    let added = added.into_iter().map(|(c, _)| c.to_owned()).collect();
    let shape = Shape::new(
        (version, Some(source.to_owned())),
        table,
        primary_key.to_owned(),
        pk_column,
        fields,
    )?;
    Ok(Changed::Done(shape, added))
}

/// Creates the schema (under a lock per schema, as concurrent `CREATE SCHEMA IF NOT
/// EXISTS` can collide) and the table with the warehouse's own columns, and
/// registers the table with its primary key. Keys compare as bytes (`COLLATE "C"`):
/// the index needs no locale and sorts as the checksum does.
async fn create_table(
    conn: &mut PgConnection,
    (source, schema): (&str, &str),
    stream: &str,
    primary_key: &str,
    table: &str,
    table_name: &str,
    pk_column: &str,
) -> Result<(), WarehouseError> {
    let db = |during| WarehouseError::db(stream, during);
    let quoted_schema = quote_ident(schema)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("cairn.warehouse schema {schema:?}"))
        .execute(&mut *conn)
        .await
        .map_err(db("locking the schema"))?;
    // Asked of the catalog table, not left to `IF NOT EXISTS`: that looks in this
    // session's catalog cache, which may still say "no such schema" from before the
    // lock was granted (a transaction takes in other sessions' catalog changes only at
    // some lock requests, not an advisory one), and two first landings then both create
    // it. A query reads the committed catalog.
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
    )
    .bind(schema)
    .fetch_one(&mut *conn)
    .await
    .map_err(db("looking for the schema"))?;
    if !exists {
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {quoted_schema}")))
            .execute(&mut *conn)
            .await
            .map_err(db("creating the schema"))?;
    }
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {table} (
             {pk_column} text COLLATE \"C\" PRIMARY KEY,
             \"_raw\" jsonb NOT NULL,
             \"_synced_at\" timestamptz NOT NULL,
             \"_source_updated_at\" timestamptz,
             \"_deleted_at\" timestamptz
         )"
    )))
    .execute(&mut *conn)
    .await
    .map_err(db("creating the table"))?;
    sqlx::query(
        "INSERT INTO cairn.warehouse_tables (schema_name, stream, table_name, primary_key, version, source)
         VALUES ($1, $2, $3, $4, nextval('cairn.warehouse_shape_version'), $5)",
    )
    .bind(schema)
    .bind(stream)
    .bind(table_name)
    .bind(primary_key)
    .bind(source)
    .execute(&mut *conn)
    .await
    .map_err(db("registering the table"))?;
    // The primary key is registered like any field, so its column name is taken.
    sqlx::query(
        "INSERT INTO cairn.warehouse_columns (schema_name, stream, field, column_name, column_type)
         VALUES ($1, $2, $3, $4, 'text')",
    )
    .bind(schema)
    .bind(stream)
    .bind(primary_key)
    .bind(column_name(primary_key))
    .execute(&mut *conn)
    .await
    .map_err(db("registering the primary key"))?;
    Ok(())
}
