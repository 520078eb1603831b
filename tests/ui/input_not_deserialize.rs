// A workflow input that cannot be read from the run's stored JSON.
use cairn::{Context, Error, Registry};

struct Order {
    id: u64,
}

async fn ship(_ctx: Context, order: Order) -> Result<u64, Error> {
    Ok(order.id)
}

fn main() {
    let mut registry = Registry::new();
    registry.register("ship", ship);
}
