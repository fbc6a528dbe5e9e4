//! TLS and mTLS between clients and the broker (the certificate as principal), and TLS to
//! Redis with a private CA and a password that never leaks.

use super::*;

fn tls_channel(addr: std::net::SocketAddr, pki: &Pki, with_client_cert: bool) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

#[tokio::test]
async fn tls_and_mtls_handshakes_and_the_certificate_as_principal() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki("orders-service");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (cert, key, ca) = (
        write("server.pem", &pki.server.0),
        write("server.key", &pki.server.1),
        write("ca.pem", &pki.ca),
    );

    // TLS: a client that trusts the CA works; a plaintext client does not.
    let tls = BrokerProcess::start_in_memory(&["--tls-cert", &cert, "--tls-key", &key]);
    let mut client = BrokerClient::new(tls_channel(tls.addr, &pki, false));
    let ids = client
        .produce(numbered("orders.eu", 0..1))
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(ids.len(), 1);
    let mut plain = BrokerClient::new(tls.channel());
    assert!(plain.produce(numbered("orders.eu", 0..1)).await.is_err());

    // mTLS with principals: the certificate's CN is the principal.
    let file = principals_file(dir.path());
    let mtls = BrokerProcess::start_in_memory(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
        "--principals-file",
        file.to_str().unwrap(),
    ]);
    let mut with_cert = BrokerClient::new(tls_channel(mtls.addr, &pki, true));
    with_cert
        .produce(numbered("orders.eu", 0..1))
        .await
        .unwrap();
    let (c, message) = code(with_cert.produce(numbered("payments", 0..1)).await);
    assert_eq!(c, Code::PermissionDenied, "{message}");
    assert!(message.contains("orders-service"), "{message}");
    // No client certificate: the handshake is refused.
    let mut without = BrokerClient::new(tls_channel(mtls.addr, &pki, false));
    let refused = without
        .produce(numbered("orders.eu", 0..1))
        .await
        .unwrap_err();
    // Refused in the handshake, never by a handler: the client sees a transport error (the TLS
    // alert, or the connection closed or broken under it, depending on timing), not a status
    // the broker sent.
    assert!(
        std::error::Error::source(&refused).is_some()
            && matches!(
                refused.code(),
                Code::Unknown | Code::Unavailable | Code::Cancelled
            ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn redis_over_tls_with_a_private_ca_and_a_password_that_never_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki("unused");
    let redis = TlsRedis::start(dir.path(), &pki, &["--requirepass", "tls-s3cret"]);
    let (_, _, ca) = write_pki(dir.path(), &pki);
    let port = redis.port;
    let url = format!("rediss://:tls-s3cret@127.0.0.1:{port}");

    let trusted = BrokerProcess::start_in_memory(&["--redis-url", &url, "--redis-ca-file", &ca]);
    let mut client = BrokerClient::new(trusted.channel());
    let ids = produce_numbered(&mut client, "over-tls", 0..3).await;
    assert_eq!(ids.len(), 3);

    // Without the CA, Redis's certificate is not trusted: UNAVAILABLE, saying why, and the
    // password appears nowhere.
    let untrusted = BrokerProcess::start_in_memory(&["--redis-url", &url]);
    let mut client = BrokerClient::new(untrusted.channel());
    let (c, message) = code(client.produce(numbered("over-tls", 0..1)).await);
    assert_eq!(c, Code::Unavailable, "{message}");
    assert!(!message.contains("tls-s3cret"), "{message}");
    let log = untrusted.log_text() + &trusted.log_text();
    assert!(!log.contains("tls-s3cret"), "{log}");
}
