// `#[cairn::workflow]` on a function of the wrong shape says what a workflow is.
use cairn::{Context, Error};

#[cairn::workflow]
fn not_async(_ctx: Context, _input: String) -> Result<(), Error> {
    Ok(())
}

#[cairn::workflow]
async fn two_inputs(_ctx: Context, _first: String, _second: u32) -> Result<(), Error> {
    Ok(())
}

fn main() {
    let _ = (not_async, two_inputs);
}
