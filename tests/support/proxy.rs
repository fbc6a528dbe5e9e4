//! A loopback TCP proxy that misbehaves on demand: what a network between two processes does to
//! them. Put between a client and a broker (a client whose machine vanished), or between the
//! broker and Redis (latency, a dropped connection, a partition, a half-open socket).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// What the proxy does to the bytes passing through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards everything at once.
    None,
    /// Holds each chunk this long before forwarding it, both ways.
    Latency(Duration),
    /// Forwards nothing either way and closes nothing (a partition, or a machine that
    /// vanished): what was held passes once the fault ends, as TCP retransmits it.
    BlackHole,
    /// Forwards requests but holds every reply (a half-open path: the server acts on what it
    /// is sent, and the client hears nothing back until the fault ends).
    HoldReplies,
}

impl Fault {
    /// Whether bytes going `to_server` (else back to the client) wait under this fault.
    fn holds(self, to_server: bool) -> bool {
        match self {
            Fault::BlackHole => true,
            Fault::HoldReplies => !to_server,
            Fault::None | Fault::Latency(_) => false,
        }
    }
}

/// A loopback TCP proxy to one target, with a [`Fault`] that can change at any moment, a
/// one-shot lost reply, and a way to drop every connection through it.
pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    trigger: Arc<Mutex<Option<Trigger>>>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    task: JoinHandle<()>,
}

/// An armed [`FaultProxy::lose_reply_to`].
struct Trigger {
    marker: Vec<u8>,
    /// Chunks containing the marker still to let by before the one that trips it.
    left: usize,
    hold: Duration,
}

/// What one direction of one connection obeys.
#[derive(Clone)]
struct Link {
    fault: watch::Receiver<Fault>,
    trigger: Arc<Mutex<Option<Trigger>>>,
    /// This connection's replies are held (a tripped trigger).
    held: Arc<watch::Sender<bool>>,
}

impl FaultProxy {
    /// Proxies a fresh loopback port to `target`, faultless.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (fault, watching) = watch::channel(Fault::None);
        let trigger: Arc<Mutex<Option<Trigger>>> = Arc::default();
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let open = connections.clone();
        let armed = trigger.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let link = Link {
                    fault: watching.clone(),
                    trigger: armed.clone(),
                    held: Arc::new(watch::channel(false).0),
                };
                let mut handles = open.lock().unwrap();
                handles.retain(|h: &AbortHandle| !h.is_finished());
                for (from, to, to_server) in [
                    (client_read, server_write, true),
                    (server_read, client_write, false),
                ] {
                    let task = tokio::spawn(forward(from, to, to_server, link.clone()));
                    handles.push(task.abort_handle());
                }
            }
        });
        Self {
            addr,
            fault,
            trigger,
            connections,
            task,
        }
    }

    /// Arms a one-shot fault: the `nth` chunk sent to the server that contains `marker`
    /// (counting from 1) makes the connection that carried it hold its replies for `hold`.
    /// The server acts on that request; the client does not hear back in time: the reply to
    /// one chosen request is lost, and little else is.
    pub fn lose_reply_to(&self, marker: &[u8], nth: usize, hold: Duration) {
        *self.trigger.lock().unwrap() = Some(Trigger {
            marker: marker.to_vec(),
            left: nth.saturating_sub(1),
            hold,
        });
    }

    /// Whether the fault armed by [`lose_reply_to`](Self::lose_reply_to) has tripped.
    pub fn reply_lost(&self) -> bool {
        self.trigger.lock().unwrap().is_none()
    }

    /// From now on, `fault` applies (to bytes already read and waiting too).
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Closes every connection open through the proxy (new ones are accepted as before).
    pub fn drop_connections(&self) {
        for handle in self.connections.lock().unwrap().drain(..) {
            handle.abort();
        }
    }

    /// From now on nothing passes in either direction, and nothing is closed.
    pub fn freeze(&self) {
        self.set(Fault::BlackHole);
    }
}

/// Copies one direction of a connection, applying the proxy's faults to each chunk read.
async fn forward(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    to_server: bool,
    mut link: Link,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut held = link.held.subscribe();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to_server {
            trip(&link, &buf[..n]);
        }
        let now = *link.fault.borrow_and_update();
        if let Fault::Latency(delay) = now {
            tokio::time::sleep(delay).await;
        }
        if link
            .fault
            .wait_for(|fault| !fault.holds(to_server))
            .await
            .is_err()
        {
            return;
        }
        if !to_server && held.wait_for(|held| !*held).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Trips the armed trigger when `chunk` (on its way to the server) is the one it waits for.
fn trip(link: &Link, chunk: &[u8]) {
    let mut trigger = link.trigger.lock().unwrap();
    let Some(armed) = trigger.as_mut() else {
        return;
    };
    if !chunk
        .windows(armed.marker.len())
        .any(|window| window == armed.marker)
    {
        return;
    }
    if armed.left > 0 {
        armed.left -= 1;
        return;
    }
    let hold = armed.hold;
    *trigger = None;
    link.held.send_replace(true);
    let held = link.held.clone();
    tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        held.send_replace(false);
    });
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.drop_connections();
    }
}
