// A step whose output cairn cannot store: the answer names the type and what to derive.
use cairn::{Context, Error};

struct Report {
    total: u64,
}

async fn workflow(ctx: Context, _: ()) -> Result<u64, Error> {
    let report = ctx.step("make", || async { Ok(Report { total: 1 }) }).await?;
    Ok(report.total)
}

fn main() {
    let _ = workflow;
}
