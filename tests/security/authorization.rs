//! Credentials and per-stream permissions: what every RPC answers without them, and what a
//! principal limited to some streams may not do.

use super::*;

#[tokio::test]
async fn without_credentials_every_service_is_unauthenticated_but_probes_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = principals_file(dir.path());
    let broker = BrokerProcess::start_in_memory(&["--principals-file", file.to_str().unwrap()]);
    let channel = broker.channel();
    for token in [None, Some("wrong-token")] {
        let (mut b, mut a) = clients(&channel, token);
        let codes = codes_of_every_rpc(&mut b, &mut a, "orders.eu").await;
        assert!(
            codes.iter().all(|(_, c)| *c == Code::Unauthenticated),
            "{token:?}: {codes:?}"
        );
        let (c, _) = code(a.list_streams(pb::ListStreamsRequest::default()).await);
        assert_eq!(c, Code::Unauthenticated);
    }
    // Meshes and load balancers probe without credentials.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    // Tokens never reach the log.
    let log = broker.log_text();
    assert!(
        !log.contains("wrong-token") && !log.contains(ORDERS_TOKEN),
        "{log}"
    );

    let protected = BrokerProcess::start_in_memory(&[
        "--principals-file",
        file.to_str().unwrap(),
        "--auth-probes",
    ]);
    let mut health = tonic_health::pb::health_client::HealthClient::new(protected.channel());
    let (c, _) = code(
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await,
    );
    assert_eq!(c, Code::Unauthenticated);
}

#[tokio::test]
async fn a_principal_limited_to_orders_can_neither_read_nor_list_nor_delete_payments() {
    let dir = tempfile::tempdir().unwrap();
    let file = principals_file(dir.path());
    let broker = BrokerProcess::start_in_memory(&["--principals-file", file.to_str().unwrap()]);
    let channel = broker.channel();
    let (mut b, mut a) = clients(&channel, Some(ORDERS_TOKEN));
    let (mut auditor_b, mut auditor) = clients(&channel, Some(READER_TOKEN));

    // Allowed on its own streams (errors other than permission are fine: no such group...).
    let mine = codes_of_every_rpc(&mut b, &mut a, "orders.eu").await;
    assert!(
        mine.iter()
            .all(|(_, c)| *c != Code::PermissionDenied && *c != Code::Unauthenticated),
        "{mine:?}"
    );
    // Denied everywhere else, naming the permission and the stream.
    let theirs = codes_of_every_rpc(&mut b, &mut a, "payments").await;
    assert!(
        theirs.iter().all(|(_, c)| *c == Code::PermissionDenied),
        "{theirs:?}"
    );
    let (c, message) = code(b.produce(numbered("payments", 0..1)).await);
    assert_eq!(c, Code::PermissionDenied);
    assert_eq!(
        message,
        "principal `orders-service` lacks `produce` on stream `payments`"
    );

    // The auditor may look at everything and change nothing.
    let (c, message) = code(
        auditor
            .delete_stream(pb::DeleteStreamRequest {
                stream: "orders.eu".into(),
            })
            .await,
    );
    assert_eq!(
        (c, message.contains("admin-write")),
        (Code::PermissionDenied, true)
    );
    let (c, _) = code(auditor_b.produce(numbered("orders.eu", 0..1)).await);
    assert_eq!(c, Code::PermissionDenied);

    // Listing shows each caller only what it may see.
    let (mut auditor_producer, _) = clients(&channel, Some(ORDERS_TOKEN));
    auditor_producer
        .produce(numbered("orders.us", 0..1))
        .await
        .unwrap();
    let listed = |mut admin: Admin| async move {
        let mut names = admin
            .list_streams(pb::ListStreamsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .streams;
        names.sort();
        names
    };
    let everything = listed(auditor.clone()).await;
    assert!(
        everything.iter().any(|s| s.starts_with("orders.")),
        "{everything:?}"
    );
    let own = listed(a.clone()).await;
    assert!(own.iter().all(|s| s.starts_with("orders.")), "{own:?}");
}
