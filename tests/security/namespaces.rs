//! `--key-prefix`: every RPC confined to its namespace.

use super::*;

#[tokio::test]
async fn a_key_prefix_confines_every_rpc_to_its_namespace() {
    let redis = RedisServer::start();
    let _: () = redis.cmd(&["SET", "outside", "x"]).await;
    let _: String = redis.cmd(&["XADD", "tenant-b:s", "*", "f", "v"]).await;
    let broker = BrokerProcess::start(&redis, &["--key-prefix", "tenant-a:"]);
    let channel = broker.channel();
    let mut client = BrokerClient::new(channel.clone());
    let mut admin = AdminClient::new(channel);

    produce_numbered(&mut client, "s", 0..2).await;
    let exists: u64 = redis.cmd(&["EXISTS", "tenant-a:s"]).await;
    assert_eq!(exists, 1);
    let listed = admin
        .list_streams(pb::ListStreamsRequest {
            pattern: "*".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .streams;
    assert_eq!(listed, ["s"]);
    // Names that could act as patterns, or reach other keys, are refused or stay inside.
    for name in ["*", "tenant-b:*", "s\n", "a b"] {
        let (c, _) = code(client.produce(numbered(name, 0..1)).await);
        assert_eq!(c, Code::InvalidArgument, "{name:?}");
    }
    let (c, message) = code(
        admin
            .delete_stream(pb::DeleteStreamRequest {
                stream: "outside".into(),
            })
            .await,
    );
    assert_eq!(c, Code::NotFound);
    assert!(
        !message.contains("tenant-a"),
        "the prefix leaked: {message}"
    );
    let outside: u64 = redis.cmd(&["EXISTS", "outside"]).await;
    assert_eq!(outside, 1);
    let info = admin
        .get_stream_info(pb::GetStreamInfoRequest {
            stream: "tenant-b:s".into(),
        })
        .await;
    assert_eq!(code(info).0, Code::NotFound);
    // Reserved consumer names cannot be used to read as the broker.
    let mut request = group_request(&["s"], "g", "streamgate:parked");
    request.create_group = true;
    let (c, _) = code(client.subscribe(request).await);
    assert_eq!(c, Code::InvalidArgument);
}
