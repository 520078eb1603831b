//! Fuzzing with random input for the parts that read what a user or a vendor wrote: the
//! source file loader, the record locator and listing reader, the paginators and the
//! rate-limit header parsers. Each must answer any input with a value or an error, never
//! a panic. Bounded: 2,000 cases per target, seconds in all (`PROPTEST_CASES` sets
//! another number for a longer hunt).

use cairn_connectors::paginate::{JsonPath, PageView, Paginator, Position};
use cairn_connectors::record::listing;
use cairn_connectors::rest::RestConfig;
use cairn_connectors::telemetry::Telemetry;
use proptest::prelude::*;
use serde_json::Value;

const SOURCE: &str = include_str!("../../examples/sources/sandbox-hubspot.toml");

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn paginators() -> Vec<Paginator> {
    let path = |p: &str| p.parse::<JsonPath>().unwrap();
    vec![
        Paginator::Single,
        Paginator::Token {
            param: "after".into(),
            next_path: path("paging.next.after"),
        },
        Paginator::Offset {
            param: "offset".into(),
        },
        Paginator::LinkHeader,
        Paginator::NextUrl {
            next_path: path("next"),
        },
        Paginator::Stripe {
            param: "starting_after".into(),
            has_more_path: path("has_more"),
            id_field: path("id"),
        },
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_source_loader_answers_any_text(text in ".{0,400}") {
        let _ = RestConfig::parse(&text, "fuzz.toml");
    }

    #[test]
    fn the_source_loader_answers_any_damage_to_a_valid_file(at in 0usize..1500, junk in prop::collection::vec(any::<u8>(), 1..6)) {
        let mut bytes = SOURCE.as_bytes().to_vec();
        let at = at.min(bytes.len());
        bytes.splice(at..(at + junk.len()).min(bytes.len()), junk);
        let _ = RestConfig::parse(&String::from_utf8_lossy(&bytes), "fuzz.toml");
    }

    #[test]
    fn the_record_locator_and_listing_reader_answer_any_body(path in "[a-z0-9_.\\[\\]*]{0,10}", body in json(), raw in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(path) = path.parse::<JsonPath>() {
            let _ = path.get(&body);
            let text = body.to_string();
            let _ = listing::read(text.as_bytes(), &path);
            let _ = listing::read(&raw, &path);
        }
    }

    #[test]
    fn paginators_answer_any_page(body in json(), link in prop::collection::vec(".{0,60}", 0..3), items in 0usize..5, total in any::<Option<u64>>(), token in ".{0,20}", offset in any::<u64>()) {
        let url = url::Url::parse("https://api.example.com/v1/contacts?limit=10").unwrap();
        let view = PageView { url: &url, link: &link, body: &body, items, last: None, total, secret_params: &[] };
        for paginator in paginators() {
            for current in [Position::Start, Position::Token(token.clone()), Position::Offset(offset), Position::Url(format!("https://api.example.com/{token}"))] {
                let _ = paginator.param(&current);
                let _ = paginator.next(&current, &view);
            }
        }
    }

    #[test]
    fn rate_limit_headers_answer_any_value(retry in ".{0,40}", reset in ".{0,40}", remaining in ".{0,20}", sforce in ".{0,40}") {
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in [("retry-after", &retry), ("x-ratelimit-reset", &reset), ("x-ratelimit-remaining", &remaining), ("sforce-limit-info", &sforce)] {
            if let Ok(value) = reqwest::header::HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
        let now = chrono::Utc::now();
        let telemetry = Telemetry::parse(&headers, now);
        for at in [telemetry.retry_after, telemetry.reset_at].into_iter().flatten() {
            prop_assert!(at >= now && at <= now + chrono::Duration::days(7), "{at} from {retry:?} / {reset:?}");
        }
    }
}
