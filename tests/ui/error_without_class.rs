// An error whose class cairn cannot know: the answer says to classify it.
use cairn::{Context, Error};

async fn workflow(ctx: Context, text: String) -> Result<u32, Error> {
    ctx.step("parse", || async { Ok(text.parse::<u32>()?) }).await
}

fn main() {
    let _ = workflow;
}
