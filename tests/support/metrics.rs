//! Reading a broker's Prometheus endpoint (`--metrics-addr`) the way a scraper does.

use std::io::{Read, Write};
use std::net::TcpStream;

/// The whole exposition of the metrics endpoint on `port`.
pub fn scrape(port: u16) -> String {
    let response = http_get(port, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// An HTTP/1.1 GET of `path` on loopback `port`: the whole response, head and body, or what
/// the server said before closing ("" when it closed without a word).
pub fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect for an HTTP GET");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// The value of the sample whose line starts with `prefix` (name and labels).
pub fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
