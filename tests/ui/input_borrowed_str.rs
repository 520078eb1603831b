// A workflow input borrowed from the stored JSON: it must own its data (`String`). Without
// `#[cairn::workflow]` the answer is rustc's; with it, see workflow_borrowed_input.rs.
use cairn::{Context, Error, Registry};

async fn greet(_ctx: Context, name: &str) -> Result<String, Error> {
    Ok(format!("hello, {name}"))
}

fn main() {
    let mut registry = Registry::new();
    registry.register("greet", greet);
}
