//! Starting, refusing to start, and shutting down.

use cairn_sandbox::{ConfigError, RateLimit, Sandbox, SandboxError};

use crate::common::{config, http, start};

#[tokio::test]
async fn shutdown_closes_the_port() {
    let sandbox = start(config().0).await;
    let url = format!("{}/ids/deals", sandbox.base_url());
    assert_eq!(http().get(&url).send().await.unwrap().status(), 200);
    assert!(sandbox.addr().ip().is_loopback());
    sandbox.shutdown().await;
    let error = http().get(&url).send().await.unwrap_err();
    assert!(error.is_connect(), "{error:?}");
}

#[tokio::test]
async fn shutdown_cuts_off_requests_that_do_not_finish() {
    let sandbox = start(config().0).await;
    let url = format!("{}/ids/deals", sandbox.base_url());
    let hold = sandbox.vendor().hold();
    let stuck = tokio::spawn(async move { http().get(&url).send().await });
    hold.until_waiting(1).await;
    sandbox.shutdown().await;
    assert!(stuck.await.unwrap().is_err());
    drop(hold);
}

#[tokio::test]
async fn bad_configs_and_addresses_are_refused() {
    let (mut bad, _clock) = config();
    bad.rate_limit = Some(RateLimit::new(0.0, 1));
    let refused = Sandbox::start(bad, "127.0.0.1:0".parse().unwrap()).await;
    assert!(matches!(
        refused,
        Err(SandboxError::Config(ConfigError::Rate(_)))
    ));

    let public = Sandbox::start(config().0, "0.0.0.0:0".parse().unwrap()).await;
    assert!(matches!(public, Err(SandboxError::NotLoopback(_))));

    let first = start(config().0).await;
    let taken = Sandbox::start(config().0, first.addr()).await;
    assert!(matches!(taken, Err(SandboxError::Bind { .. })));
    first.shutdown().await;
}

#[tokio::test]
async fn a_connection_counts_as_open_until_the_server_is_done_with_it() {
    let sandbox = start(config().0).await;
    let vendor = sandbox.vendor().clone();
    let url = format!("{}/ids/deals", sandbox.base_url());
    assert_eq!(vendor.open_connections(), 0);

    let client = http();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(
        vendor.open_connections(),
        1,
        "an answered request's connection is kept alive"
    );

    // A client that goes away closes its connection; the server then lets go of it.
    drop(client);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while vendor.open_connections() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server still holds the closed connection"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    sandbox.shutdown().await;
}
