//! Certificates for the TLS tests, made on the spot with rcgen: no files, no openssl; and a
//! `redis-server` that speaks only TLS with them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A CA, a server certificate for localhost / 127.0.0.1, and a client certificate with `cn`.
pub struct Pki {
    /// The CA's certificate (PEM).
    pub ca: String,
    /// The server's certificate and key (PEM).
    pub server: (String, String),
    /// The client's certificate and key (PEM).
    pub client: (String, String),
}

pub fn pki(cn: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "streamgate test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issue = |names: Vec<String>, common_name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca_cert.pem(),
        server: issue(vec!["localhost".into(), "127.0.0.1".into()], "localhost"),
        client: issue(vec![], cn),
    }
}

/// The PEM files of `pki` written into `dir`: (server certificate, server key, CA).
pub fn write_pki(dir: &Path, pki: &Pki) -> (String, String, String) {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    (
        write("server.pem", &pki.server.0),
        write("server.key", &pki.server.1),
        write("ca.pem", &pki.ca),
    )
}

/// A `redis-server` on a free loopback port that speaks only TLS (clients need not present a
/// certificate); killed when dropped.
pub struct TlsRedis {
    /// Its TLS port.
    pub port: u16,
    child: Child,
}

impl TlsRedis {
    /// Starts one with the certificates in `dir` (see [`write_pki`]) and `extra` arguments.
    pub fn start(dir: &Path, pki: &Pki, extra: &[&str]) -> Self {
        let (cert, key, ca) = write_pki(dir, pki);
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
            ])
            .args([
                "--tls-auth-clients",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", dir.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        let redis = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server with TLS did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
