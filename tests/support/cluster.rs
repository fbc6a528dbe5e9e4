//! A real Redis Cluster of `redis-server` processes on loopback ports, formed with `redis-cli`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A Redis Cluster of real `redis-server --cluster-enabled yes` processes on loopback ports,
/// formed with `redis-cli --cluster create`. Killed on drop.
pub struct RedisCluster {
    nodes: Vec<(u16, Option<Child>)>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// `masters` masters, each with `replicas` replicas; returns once every slot is served.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..masters * (1 + replicas) {
            let node = cluster.spawn_on_a_free_port();
            cluster.nodes.push(node);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for (port, _) in &cluster.nodes {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli (installed with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until_ok();
        cluster
    }

    /// Another test may take a probed port before redis binds it (tests run in parallel):
    /// try afresh a few times, as [`RedisServer::start`] does.
    fn spawn_on_a_free_port(&self) -> (u16, Option<Child>) {
        for _ in 0..5 {
            let port = loop {
                let port = free_port();
                if !self.nodes.iter().any(|(p, _)| *p == port) {
                    break port;
                }
            };
            let mut child = self.spawn(port);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if cli(port, &["PING"]).contains("PONG") {
                    return (port, Some(child));
                }
                let exited = matches!(child.try_wait(), Ok(Some(_)));
                if exited || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("no cluster node could start after 5 attempts; {INSTALL_HINT}");
    }

    fn spawn(&self, port: u16) -> Child {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .args([
                "--cluster-require-full-coverage",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("{INSTALL_HINT} ({err})"))
    }

    /// Waits until every live node says the cluster is ok and knows every slot, and every
    /// replica is in sync with its master (else it could not take over).
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.live_ports().iter().all(|port| {
                let info = cli(*port, &["CLUSTER", "INFO"]);
                let replication = cli(*port, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (!replication.contains("role:slave")
                        || replication.contains("master_link_status:up"))
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ok within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ports of the nodes running now.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|(_, child)| child.is_some())
            .map(|(port, _)| *port)
            .collect()
    }

    /// Seed URLs for `--redis-cluster-url`.
    pub fn urls(&self) -> String {
        self.live_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master serving `key` now.
    pub fn master_of(&self, key: &str) -> u16 {
        self.try_master_of(key)
            .unwrap_or_else(|| panic!("no live master serves `{key}`"))
    }

    /// The port of the live master serving `key` now, if any (none during a failover).
    pub fn try_master_of(&self, key: &str) -> Option<u16> {
        let port = self.live_ports()[0];
        let slot: u16 = cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        for line in cli(port, &["CLUSTER", "NODES"]).lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 9 || !parts[2].contains("master") || parts[2].contains("fail") {
                continue;
            }
            let serves = parts[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => {
                    (a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()).contains(&slot)
                }
                None => range.parse::<u16>().ok() == Some(slot),
            });
            if serves {
                let address = parts[1].split('@').next().unwrap();
                return address.rsplit_once(':').unwrap().1.parse().ok();
            }
        }
        None
    }

    /// Distinct masters.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<u16> = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
            .iter()
            .map(|k| self.master_of(k))
            .collect();
        masters.sort_unstable();
        masters.dedup();
        masters
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some((_, child)) = self.nodes.iter_mut().find(|(p, _)| *p == port)
            && let Some(mut child) = child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `redis-cli -p <port> <args>`'s output (empty on failure).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
