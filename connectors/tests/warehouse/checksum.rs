//! The warehouse's checksum equals the sandbox vendor's for the same records, through
//! updates, creations, deletes and reconciliation.

use cairn_connectors::warehouse::StreamSpec;
use cairn_sandbox::{Mutation, Sandbox, SandboxConfig, Stream};
use serde_json::Value;

use crate::common::{land, setup};

#[tokio::test]
async fn landed_sandbox_records_checksum_like_the_vendor() {
    let (db, wh) = setup().await;
    let config = SandboxConfig {
        records_per_stream: 750,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let vendor = sandbox.vendor();
    for stream in Stream::ALL {
        let spec = StreamSpec::new(stream.to_string(), "id").with_cursor("updated_at");
        for page in vendor.records(stream).chunks(200) {
            let report = land(&db, &wh, &spec, page).await;
            assert_eq!(report.quarantined, 0, "{stream}: {:?}", report.alerts);
        }
        let mut conn = db.pool().acquire().await.unwrap();
        assert_eq!(
            wh.checksum(&mut conn, &spec.name).await.unwrap(),
            vendor.checksum(stream),
            "{stream}"
        );
    }

    // Changes on the vendor: land the changed records, reconcile the deletes.
    let spec = StreamSpec::new("contacts", "id").with_cursor("updated_at");
    let updated = vendor
        .mutate(Stream::Contacts, Mutation::Update { count: 40 })
        .unwrap();
    let created = vendor
        .mutate(Stream::Contacts, Mutation::Create { count: 10 })
        .unwrap();
    vendor
        .mutate(Stream::Contacts, Mutation::Delete { count: 25 })
        .unwrap();
    let changed: Vec<&String> = updated.ids.iter().chain(&created.ids).collect();
    let records = vendor.records(Stream::Contacts);
    let page: Vec<Value> = records
        .iter()
        .filter(|r| changed.iter().any(|id| r["id"] == id.as_str()))
        .cloned()
        .collect();
    land(&db, &wh, &spec, &page).await;
    let ids: Vec<String> = records
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    let mut tx = db.pool().begin().await.unwrap();
    for chunk in ids.chunks(300) {
        wh.stage_ids(&mut tx, "contacts", "run-1", chunk)
            .await
            .unwrap();
    }
    wh.apply_deletes(
        &mut tx,
        &spec,
        "run-1",
        crate::reconcile::checks(0.2, false),
    )
    .await
    .unwrap();
    assert_eq!(
        wh.checksum(&mut tx, "contacts").await.unwrap(),
        vendor.checksum(Stream::Contacts)
    );
    tx.commit().await.unwrap();
    sandbox.shutdown().await;
}
