//! Looking one person up: every profile's lookup finds exactly the records that hold the
//! address (whatever its case), pages through the vendor's answer, keeps nothing a
//! vendor answers that is not the person's, and escapes an address inside a SOQL string.

use std::collections::BTreeSet;

use cairn_connectors::paginate::{PageCursor, Traversal};
use cairn_connectors::rest::{IdentityKind, RestSource};
use cairn_sandbox::{Mutation, SandboxHandle, Stream};
use serde_json::json;

use crate::common::{inline, profile, sandbox_config, source, start};

const SUBJECT: &str = "Ada.Subject@Example.com";

/// Sets `email` on the contacts `ids`.
fn plant(sandbox: &SandboxHandle, email: &str, ids: &[&str]) {
    sandbox
        .vendor()
        .mutate(
            Stream::Contacts,
            Mutation::Assign {
                field: "email".to_owned(),
                value: json!(email),
                ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            },
        )
        .unwrap();
}

/// Every page of a lookup, through a traversal (which refuses loops and short counts):
/// the ids kept, and how many records were answered but not kept.
async fn look_up(
    source: &RestSource,
    kind: IdentityKind,
    value: &str,
) -> (BTreeSet<String>, usize, u64) {
    let mut traversal = Traversal::new(PageCursor::start());
    let (mut found, mut rejected) = (BTreeSet::new(), 0);
    while let Some(cursor) = traversal.cursor().cloned() {
        let page = source
            .lookup("contacts", kind, value, &cursor)
            .await
            .unwrap_or_else(|error| panic!("{value}: {error}"));
        traversal.advance(&page).unwrap();
        rejected += page.rejected;
        found.extend(page.found.into_iter().map(|found| found.id));
    }
    (found, rejected, traversal.pages())
}

fn ids(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

#[tokio::test]
async fn every_profile_finds_exactly_the_persons_records() {
    let sandbox = start(sandbox_config().0).await;
    // 30 records of the subject (more than a page of 25), in three spellings.
    let planted: Vec<String> = (1..=30).map(|n| (n * 4).to_string()).collect();
    let planted: Vec<&str> = planted.iter().map(String::as_str).collect();
    plant(&sandbox, SUBJECT, &planted[..10]);
    plant(&sandbox, &SUBJECT.to_lowercase(), &planted[10..20]);
    plant(&sandbox, &SUBJECT.to_uppercase(), &planted[20..]);
    // Near misses: not the subject.
    plant(&sandbox, "x.ada.subject@example.com", &["1"]);
    plant(&sandbox, "ada.subject@example.com.evil", &["2"]);
    plant(&sandbox, "ada.subject@example.co", &["3"]);
    for name in [
        "sandbox-hubspot",
        "sandbox-salesforce",
        "sandbox-stripe",
        "sandbox-graphql",
    ] {
        let source = source(profile(name, sandbox.base_url())).await;
        assert!(
            source
                .lookups()
                .contains(&("contacts".to_owned(), IdentityKind::Email)),
            "{name}"
        );
        let (found, rejected, pages) = look_up(&source, IdentityKind::Email, SUBJECT).await;
        assert_eq!(found, ids(&planted), "{name}");
        assert_eq!(rejected, 0, "{name}: the vendor's search is exact");
        assert_eq!(pages, 2, "{name}: 30 records in pages of 25");
        let (found, _, _) = look_up(&source, IdentityKind::Email, "nobody@example.com").await;
        assert!(found.is_empty(), "{name}");
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn lookups_by_id_find_one_record_or_none() {
    let sandbox = start(sandbox_config().0).await;
    for name in ["sandbox-hubspot", "sandbox-stripe"] {
        let source = source(profile(name, sandbox.base_url())).await;
        let (found, _, _) = look_up(&source, IdentityKind::Id, "42").await;
        assert_eq!(found, ids(&["42"]), "{name}");
        for absent in ["100000", "../42", "42?x=1", "a/b"] {
            let (found, _, _) = look_up(&source, IdentityKind::Id, absent).await;
            assert!(found.is_empty(), "{name}: {absent:?} finds nothing");
        }
    }
    sandbox.shutdown().await;
}

#[tokio::test]
async fn what_a_vendor_answers_beyond_the_person_is_never_kept() {
    let sandbox = start(sandbox_config().0).await;
    plant(&sandbox, SUBJECT, &["7", "8"]);
    // A "search" that ignores its filter and answers every contact.
    let source = inline(&format!(
        r#"name = "fuzzy"
base_url = "{}"

[streams.contacts]
path = "/crm/v3/objects/contacts"
records_path = "results"
primary_key = "id"

[streams.contacts.paginator]
kind = "cursor"
param = "after"
next_path = "paging.next.after"

[streams.contacts.identity]
email = ["email"]

[streams.contacts.lookup]
path = "/crm/v3/objects/contacts"
query = {{ limit = "25", q = "{{email}}" }}
records_path = "results"

[streams.contacts.lookup.paginator]
kind = "cursor"
param = "after"
next_path = "paging.next.after"
"#,
        sandbox.base_url()
    ))
    .await;
    let (found, rejected, _) = look_up(&source, IdentityKind::Email, SUBJECT).await;
    assert_eq!(found, ids(&["7", "8"]));
    assert_eq!(
        rejected,
        137 - 2,
        "every other contact was answered and dropped"
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn an_address_inside_a_soql_string_is_escaped() {
    let sandbox = start(sandbox_config().0).await;
    plant(&sandbox, "o'brien@example.com", &["9"]);
    plant(&sandbox, "back\\slash@example.com", &["10"]);
    let source = source(profile("sandbox-salesforce", sandbox.base_url())).await;
    let (found, _, _) = look_up(&source, IdentityKind::Email, "O'Brien@example.com").await;
    assert_eq!(found, ids(&["9"]));
    let (found, _, _) = look_up(&source, IdentityKind::Email, "back\\slash@example.com").await;
    assert_eq!(found, ids(&["10"]));
    // An address that would close the literal and widen the query stays one literal.
    let (found, rejected, _) = look_up(
        &source,
        IdentityKind::Email,
        "x' OR Email != 'y@example.com",
    )
    .await;
    assert!(found.is_empty() && rejected == 0);
    sandbox.shutdown().await;
}
