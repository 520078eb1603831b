// `#[cairn::workflow]` leaves a well-formed workflow as written.
use cairn::{Context, Error, Registry};

#[cairn::workflow]
async fn greet(ctx: Context, name: String) -> Result<String, Error> {
    ctx.step("compose", || async { Ok(format!("hello, {name}")) }).await
}

fn main() {
    let mut registry = Registry::new();
    registry.register("greet", greet);
}
