// An error whose class cairn cannot know (a type of the author's): the answer lists
// what converts; `.transient()?` or `.permanent()?` says the class.
use cairn::{Context, Error};

#[derive(Debug)]
struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the card was declined")
    }
}

impl std::error::Error for Declined {}

async fn workflow(ctx: Context, _: ()) -> Result<u32, Error> {
    ctx.step("charge", || async {
        let charged: u32 = Err(Declined)?;
        Ok(charged)
    })
    .await
}

fn main() {
    let _ = workflow;
}
