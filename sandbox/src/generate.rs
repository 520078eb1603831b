//! Deterministic fake CRM records: nested objects, arrays and nullable fields.

use fastrand::Rng;
use serde_json::{Map, Value, json};

use super::stream::Stream;

const FIRST_NAMES: [&str; 12] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Niklaus",
    "Radia", "Tony",
];
const LAST_NAMES: [&str; 10] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton",
    "Wirth",
];
const CITIES: [(&str, &str); 8] = [
    ("Lyon", "FR"),
    ("Leeds", "GB"),
    ("Porto", "PT"),
    ("Austin", "US"),
    ("Osaka", "JP"),
    ("Recife", "BR"),
    ("Turku", "FI"),
    ("Perth", "AU"),
];
const WORDS: [&str; 10] = [
    "Granite",
    "Harbor",
    "Lumen",
    "Northwind",
    "Orchid",
    "Quartz",
    "Summit",
    "Tidal",
    "Vector",
    "Willow",
];
const INDUSTRIES: [&str; 5] = ["software", "retail", "logistics", "health", "energy"];
const STAGES: [&str; 5] = [
    "appointment",
    "qualified",
    "proposal",
    "closed_won",
    "closed_lost",
];
const LIFECYCLE: [&str; 4] = ["subscriber", "lead", "opportunity", "customer"];
const TAGS: [&str; 6] = [
    "vip",
    "newsletter",
    "trial",
    "churn-risk",
    "partner",
    "beta",
];
const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];

/// Formats Unix seconds as the RFC 3339 UTC timestamp every record carries.
pub(crate) fn timestamp(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn pick<'a>(rng: &mut Rng, options: &[&'a str]) -> &'a str {
    options[rng.usize(..options.len())]
}

fn maybe(rng: &mut Rng, percent_null: u8, value: impl FnOnce(&mut Rng) -> Value) -> Value {
    if rng.u8(..100) < percent_null {
        Value::Null
    } else {
        value(rng)
    }
}

fn address(rng: &mut Rng) -> Value {
    let (city, country) = CITIES[rng.usize(..CITIES.len())];
    json!({
        "street": format!("{} {} Street", rng.u16(1..400), pick(rng, &WORDS)),
        "city": city,
        "country": country,
        "postal_code": maybe(rng, 15, |rng| Value::from(format!("{:05}", rng.u32(1000..99_999)))),
    })
}

/// A record with nothing but its id and times, for benchmarks of id sets.
pub(crate) fn lean(id: u64, created: i64, updated: i64) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("id".to_owned(), Value::from(id.to_string()));
    fields.insert("created_at".to_owned(), Value::from(timestamp(created)));
    fields.insert("updated_at".to_owned(), Value::from(timestamp(updated)));
    fields
}

/// A new record of `stream`, before any schema drift is applied. `population`
/// bounds the ids that cross-references point at.
pub(crate) fn record(
    stream: Stream,
    id: u64,
    created: i64,
    updated: i64,
    population: u64,
    rng: &mut Rng,
) -> Map<String, Value> {
    let population = population.max(1);
    let reference = |rng: &mut Rng| Value::from(rng.u64(1..=population).to_string());
    let body = match stream {
        Stream::Contacts => {
            let first = pick(rng, &FIRST_NAMES);
            let last = pick(rng, &LAST_NAMES);
            let tags: Vec<&str> = (0..rng.usize(0..3)).map(|_| pick(rng, &TAGS)).collect();
            let company = reference(rng);
            json!({
                "email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), id),
                "first_name": first,
                "last_name": last,
                "phone": maybe(rng, 30, |rng| Value::from(format!("+1-555-{:04}", rng.u16(0..10_000)))),
                "lifecycle_stage": pick(rng, &LIFECYCLE),
                "company_id": maybe(rng, 20, |_| company),
                "score": rng.u32(0..100),
                "subscribed": rng.bool(),
                "tags": tags,
                "address": address(rng),
            })
        }
        Stream::Companies => {
            let name = format!("{} {}", pick(rng, &WORDS), pick(rng, &WORDS));
            let owners: Vec<Value> = (0..rng.usize(1..3))
                .map(|_| json!({"user_id": rng.u32(1..50), "role": pick(rng, &["owner", "support", "sales"])}))
                .collect();
            json!({
                "name": name,
                "domain": format!("{}{}.example", name.replace(' ', "-").to_lowercase(), id),
                "industry": maybe(rng, 25, |rng| Value::from(pick(rng, &INDUSTRIES))),
                "employees": maybe(rng, 20, |rng| Value::from(rng.u32(1..20_000))),
                "annual_revenue_cents": maybe(rng, 40, |rng| Value::from(rng.u64(1_000_000..100_000_000_000))),
                "owners": owners,
                "address": address(rng),
            })
        }
        Stream::Deals => {
            let contacts: Vec<Value> = (0..rng.usize(0..4)).map(|_| reference(rng)).collect();
            let items: Vec<Value> = (0..rng.usize(1..4))
                .map(|_| {
                    json!({
                        "sku": format!("SKU-{:04}", rng.u16(0..10_000)),
                        "quantity": rng.u32(1..20),
                        "unit_price_cents": rng.u32(100..100_000),
                    })
                })
                .collect();
            let company = reference(rng);
            json!({
                "name": format!("{} renewal", pick(rng, &WORDS)),
                "amount_cents": rng.u64(1_000..10_000_000),
                "currency": pick(rng, &CURRENCIES),
                "stage": pick(rng, &STAGES),
                "close_date": maybe(rng, 35, |_| Value::from(timestamp(updated)[..10].to_owned())),
                "company_id": company,
                "contact_ids": contacts,
                "line_items": items,
                "properties": {
                    "source": pick(rng, &["inbound", "outbound", "referral"]),
                    "priority": maybe(rng, 50, |rng| Value::from(pick(rng, &["low", "medium", "high"]))),
                },
            })
        }
    };
    let mut fields = match body {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    fields.insert("id".to_owned(), Value::from(id.to_string()));
    fields.insert("created_at".to_owned(), Value::from(timestamp(created)));
    fields.insert("updated_at".to_owned(), Value::from(timestamp(updated)));
    fields
}

/// The field an update changes, so an updated record differs in more than its
/// timestamp.
pub(crate) fn volatile_field(stream: Stream) -> &'static str {
    match stream {
        Stream::Contacts => "score",
        Stream::Companies => "employees",
        Stream::Deals => "amount_cents",
    }
}
