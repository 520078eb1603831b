// The transaction's connection is an executor as it stands: `&mut conn` works where
// `&mut *conn` does.
use cairn::sqlx;
use cairn::{Context, Error};

async fn workflow(ctx: Context, _: ()) -> Result<i64, Error> {
    ctx.transaction("count", |tx| async move {
        let mut conn = tx.conn().await?;
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS seen (id bigint)")
            .execute(&mut conn)
            .await?;
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM seen")
            .fetch_one(&mut conn)
            .await?;
        let also: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM seen")
            .fetch_one(&mut *conn)
            .await?;
        Ok(seen + also.unwrap_or(0))
    })
    .await
}

fn main() {
    let _ = workflow;
}
