//! The schema split by crate: a database made by the one legacy chain of migrations,
//! from any point of it, ends with exactly the schema a new database starts with, and
//! each crate's migrations are recorded in a table of their own.

use cairn_testkit::TestDb;

/// Every column (in order, with type, default and nullability), constraint, index,
/// function, trigger, sequence and column compression of the `cairn` schema, one per
/// line, leaving out the bookkeeping tables.
const SCHEMA: &str = r"
SELECT line FROM (
  SELECT 'col ' || table_name || '.' || column_name || ' #' || ordinal_position || ' '
         || data_type || ' ' || coalesce(column_default, '') || ' ' || is_nullable AS line
    FROM information_schema.columns
   WHERE table_schema = 'cairn' AND table_name NOT LIKE '\_%'
  UNION ALL
  SELECT 'con ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint
   WHERE connamespace = 'cairn'::regnamespace AND conrelid::regclass::text NOT LIKE 'cairn.\_%'
  UNION ALL
  SELECT 'idx ' || indexdef FROM pg_indexes
   WHERE schemaname = 'cairn' AND tablename NOT LIKE '\_%'
  UNION ALL
  SELECT 'fn ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') '
         || l.lanname || ' ' || p.provolatile::text || ' ' || p.prosrc
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
   WHERE p.pronamespace = 'cairn'::regnamespace
  UNION ALL
  SELECT 'trg ' || pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE c.relnamespace = 'cairn'::regnamespace AND NOT t.tgisinternal
  UNION ALL
  SELECT 'seq ' || sequence_name || ' ' || data_type || ' ' || start_value || ' ' || increment
    FROM information_schema.sequences WHERE sequence_schema = 'cairn'
  UNION ALL
  SELECT 'cmp ' || c.relname || '.' || a.attname || ' ' || a.attcompression::text
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
   WHERE c.relnamespace = 'cairn'::regnamespace AND a.attcompression::text <> ''
) schema ORDER BY line";

async fn schema(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(SCHEMA)
        .fetch_all(db.pool())
        .await
        .unwrap()
}

/// The versions each crate's bookkeeping table records.
async fn recorded(db: &TestDb) -> Vec<(String, i64)> {
    let mut recorded = Vec::new();
    for table in [
        "_migrations_engine",
        "_migrations_warehouse",
        "_migrations_sync",
    ] {
        let versions: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT version FROM cairn.{table} WHERE success ORDER BY version"
        )))
        .fetch_all(db.pool())
        .await
        .unwrap();
        recorded.extend(versions.into_iter().map(|v| (table.to_owned(), v)));
    }
    recorded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_database_from_any_point_ends_with_the_schema_a_new_one_starts_with() {
    let new = TestDb::new().await;
    let expected = schema(&new).await;
    assert!(
        expected
            .iter()
            .any(|line| line.starts_with("col sync_cursors.watermark"))
            && expected
                .iter()
                .any(|line| line.starts_with("col warehouse_tables."))
            && expected
                .iter()
                .any(|line| line.starts_with("fn lease_held(")),
        "the new schema holds every crate's tables: {expected:#?}"
    );
    for version in [1, 9, 14, 20] {
        let old = TestDb::migrated_up_to(version).await;
        cairn::migrate(old.pool()).await.unwrap();
        assert_eq!(
            schema(&old).await,
            expected,
            "from legacy version {version}"
        );
        assert_eq!(recorded(&old).await, recorded(&new).await, "from {version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_again_changes_nothing_and_keeps_the_data() {
    let db = TestDb::migrated_up_to(20).await;
    sqlx::query("INSERT INTO cairn.runs (id, workflow) VALUES (gen_random_uuid(), 'kept')")
        .execute(db.pool())
        .await
        .unwrap();
    cairn::migrate(db.pool()).await.unwrap();
    let first = (schema(&db).await, recorded(&db).await);
    cairn::migrate(db.pool()).await.unwrap();
    assert_eq!((schema(&db).await, recorded(&db).await), first);
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.runs WHERE workflow = 'kept'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(kept, 1);
}
