// The same mistake under `#[cairn::workflow]`: the answer says to take `String`.
use cairn::{Context, Error, Registry};

#[cairn::workflow]
async fn greet(_ctx: Context, name: &str) -> Result<String, Error> {
    Ok(format!("hello, {name}"))
}

fn main() {
    let mut registry = Registry::new();
    registry.register("greet", greet);
}
