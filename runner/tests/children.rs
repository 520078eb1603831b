//! Child runs: a parent starts children, parks while it waits for them, survives a
//! crash without starting any twice, and takes its children with it when cancelled.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cairn_runner::{ChildOptions, Client, Context, Error, Registry, RunStatus, StartOptions};
use cairn_testkit::TestDb;
use common::{TestWorker, crash_and_finish, eventually, fast_config, finished, reaches};
use serde_json::json;

fn registry() -> Arc<Registry> {
    let mut registry = Registry::new();
    registry.register("square", |ctx: Context, n: u64| async move {
        // Long enough that the parent waits, parked.
        ctx.sleep(Duration::from_millis(600)).await;
        ctx.step("square", || async move { Ok(n * n) }).await
    });
    registry.register("fan out", |ctx: Context, n: u64| async move {
        let squares = ctx
            .parallel(5, 1..=n, |ctx, k| async move {
                ctx.child::<_, u64>("square", &k).await
            })
            .await;
        squares.into_iter().sum::<Result<u64, Error>>()
    });
    registry.register("fails", |_ctx: Context, (): ()| async move {
        Err::<(), Error>(Error::permanent("no luck"))
    });
    registry.register("minds a failure", |ctx: Context, (): ()| async move {
        match ctx.child::<_, ()>("fails", &()).await {
            Ok(()) => Ok("ok".to_owned()),
            Err(err) => Ok(format!("{} / {}", err.category().unwrap_or_default(), err)),
        }
    });
    registry.register("waits on a sleeper", |ctx: Context, (): ()| async move {
        let child = ctx
            .start_child("sleeper", &(), &ChildOptions::default())
            .await?;
        ctx.child_result::<()>(child).await
    });
    registry.register("sleeper", |ctx: Context, (): ()| async move {
        ctx.sleep(Duration::from_secs(3600)).await;
        Ok::<(), Error>(())
    });
    Arc::new(registry)
}

#[tokio::test]
async fn five_children_joined_survive_a_crash_and_each_starts_once() {
    let db = TestDb::new().await;
    let registry = registry();
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let parent = client
        .start("fan out", &5u64, &StartOptions::default())
        .await
        .unwrap();
    let first = TestWorker::start(db.new_pool(6).await, Arc::clone(&registry), fast_config(8));
    // The parent parks while its children sleep: it holds no worker.
    let parked = reaches(&client, parent.run_id, RunStatus::Sleeping).await;
    assert!(parked.lease_owner.is_none());
    let done = crash_and_finish(&db, &registry, first, parent.run_id, 8).await;
    assert_eq!(
        done.summary.status,
        RunStatus::Completed,
        "{:?}",
        done.error
    );
    assert_eq!(done.output, Some(json!(1 + 4 + 9 + 16 + 25)));
    let children: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.runs WHERE parent_id = $1")
        .bind(parent.run_id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(children, 5, "each child started once");
    assert_eq!(done.steps.len(), 10, "a start and a wait per child");
}

#[tokio::test]
async fn a_failed_child_is_an_error_and_cancelling_a_parent_cancels_its_children() {
    let db = TestDb::new().await;
    let registry = registry();
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(4));
    let minds = client
        .start("minds a failure", &(), &StartOptions::default())
        .await
        .unwrap();
    let minds = finished(&client, minds.run_id).await;
    let said = minds.output.unwrap().as_str().unwrap().to_owned();
    assert!(
        said.starts_with("child / child run") && said.contains("no luck"),
        "{said}"
    );

    let parent = client
        .start("waits on a sleeper", &(), &StartOptions::default())
        .await
        .unwrap();
    let child: cairn_runner::RunId = eventually("the child", Duration::from_secs(20), || async {
        sqlx::query_scalar("SELECT id FROM cairn.runs WHERE parent_id = $1")
            .bind(parent.run_id)
            .fetch_optional(db.pool())
            .await
            .unwrap()
    })
    .await;
    reaches(&client, child, RunStatus::Sleeping).await;
    let before = client.show(parent.run_id).await.unwrap().summary.status;
    let after = client.cancel(parent.run_id).await.unwrap();
    eprintln!(
        "parent {} child {child}: {before} then {after}",
        parent.run_id
    );
    let parent = finished(&client, parent.run_id).await;
    let child = finished(&client, child).await;
    worker.shutdown().await;
    assert_eq!(parent.summary.status, RunStatus::Cancelled);
    assert_eq!(
        child.summary.status,
        RunStatus::Cancelled,
        "taken with its parent"
    );
}

#[tokio::test]
async fn a_child_inherits_priority_gets_its_default_timeout_and_a_bad_input_is_refused() {
    let db = TestDb::new().await;
    let mut registry = Registry::new();
    registry.register(
        "leaf",
        |_ctx: Context, n: u64| async move { Ok::<_, Error>(n) },
    );
    registry.set_timeout("leaf", Duration::from_secs(3600));
    registry.register(
        "parent",
        |ctx: Context, input: serde_json::Value| async move {
            ctx.child::<_, u64>("leaf", &input).await
        },
    );
    let registry = Arc::new(registry);
    let client = Client::new(db.pool().clone()).with_registry(Arc::clone(&registry));
    let worker = TestWorker::start(db.pool().clone(), Arc::clone(&registry), fast_config(2));
    let urgent = StartOptions {
        priority: 7,
        ..StartOptions::default()
    };
    let good = client.start("parent", &json!(4), &urgent).await.unwrap();
    let bad = client
        .start("parent", &json!("four"), &urgent)
        .await
        .unwrap();
    let good = finished(&client, good.run_id).await;
    let bad = finished(&client, bad.run_id).await;
    worker.shutdown().await;
    assert_eq!(good.output, Some(json!(4)));
    let (priority, deadline): (i32, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT priority, deadline FROM cairn.runs WHERE parent_id = $1")
            .bind(good.summary.id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(priority, 7, "the parent's priority");
    assert!(deadline.is_some(), "the child's workflow's default timeout");
    assert_eq!(bad.summary.status, RunStatus::Failed);
    let error = bad.error.unwrap();
    assert_eq!(error["category"], "child", "{error}");
    let children: i64 = sqlx::query_scalar("SELECT count(*) FROM cairn.runs WHERE parent_id = $1")
        .bind(bad.summary.id)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        children, 0,
        "a child whose input does not fit is never created"
    );
}
