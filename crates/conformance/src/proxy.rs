//! A user-space TCP proxy that injects faults between an actor and the server.
//!
//! Faults are applied to bytes, below WebSocket framing, the way a real
//! network misbehaves: latency with seeded jitter (order is preserved, as TCP
//! does), a cut after N bytes (mid-frame, then both sockets dropped), a hold
//! (blackhole: nothing forwarded until released, so TCP backpressure reaches
//! the sender) and a throttled reader. A seeded RNG makes every run of a
//! scenario inject the same delays. Nothing here is used to wait for the
//! server: scenarios synchronise on frames, and faults only perturb them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a proxy does to the connections through it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    /// Seed of the jitter RNG; the same seed gives the same delays.
    #[serde(default)]
    pub seed: u64,
    /// Delay added to every chunk, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Extra uniform random delay, 0..=jitter_ms.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Cut the first connection after this many server-to-client bytes.
    #[serde(default)]
    pub cut_after_server_bytes: Option<u64>,
    /// Cut the first connection after this many client-to-server bytes.
    #[serde(default)]
    pub cut_after_client_bytes: Option<u64>,
    /// Forward server-to-client bytes at most this fast (a slow reader).
    #[serde(default)]
    pub throttle_server_bytes_per_sec: Option<u64>,
    /// Shrink the upstream socket's receive buffer so a held or throttled
    /// reader pushes back on the server after kilobytes, not megabytes.
    #[serde(default)]
    pub small_buffers: bool,
}

/// Direction of a byte stream through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ClientToServer,
    ServerToClient,
}

#[derive(Debug)]
struct Shared {
    plan: FaultPlan,
    upstream: SocketAddr,
    hold_up: watch::Sender<bool>,
    hold_down: watch::Sender<bool>,
    // A std Mutex: held for a push or a drain, never across an await.
    live: Mutex<Vec<CancellationToken>>,
    accepted: Mutex<u64>,
    // Armed cuts: bytes still forwarded in a direction before the live
    // connections are cut. Set by scenario steps, so a cut lands at a point
    // of the script rather than at a byte count fixed in advance.
    armed_up: Mutex<Option<u64>>,
    armed_down: Mutex<Option<u64>>,
}

/// A running proxy. Dropping it stops accepting and cuts every connection.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr, plan: FaultPlan) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            plan,
            upstream,
            hold_up: watch::Sender::new(false),
            hold_down: watch::Sender::new(false),
            live: Mutex::new(Vec::new()),
            accepted: Mutex::new(0),
            armed_up: Mutex::new(None),
            armed_down: Mutex::new(None),
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown.clone()));
        Ok(Self {
            addr,
            shared,
            shutdown,
        })
    }

    /// The address actors connect to instead of the server.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every live connection at once, mid-stream.
    pub fn cut_all(&self) {
        let live = std::mem::take(&mut *lock(&self.shared.live));
        for token in live {
            token.cancel();
        }
    }

    /// Stops (true) or resumes (false) forwarding client-to-server bytes.
    pub fn hold_client_to_server(&self, hold: bool) {
        self.shared.hold_up.send_replace(hold);
    }

    /// Stops (true) or resumes (false) forwarding server-to-client bytes.
    pub fn hold_server_to_client(&self, hold: bool) {
        self.shared.hold_down.send_replace(hold);
    }

    /// Cuts the live connection after `bytes` more server-to-client bytes.
    pub fn arm_cut_after_server_bytes(&self, bytes: u64) {
        *lock(&self.shared.armed_down) = Some(bytes);
    }

    /// Cuts the live connection after `bytes` more client-to-server bytes.
    pub fn arm_cut_after_client_bytes(&self, bytes: u64) {
        *lock(&self.shared.armed_up) = Some(bytes);
    }

    /// How many connections were accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        *lock(&self.shared.accepted)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.cut_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a proxy task panicked; the data (a list of
    // tokens, a counter) is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else {
            // Accept errors (e.g. out of file descriptors) are transient; the
            // actor sees its connect fail and the step reports it.
            continue;
        };
        let index = {
            let mut n = lock(&shared.accepted);
            *n += 1;
            *n - 1
        };
        let token = shutdown.child_token();
        lock(&shared.live).push(token.clone());
        tokio::spawn(serve(client, Arc::clone(&shared), index, token));
    }
}

async fn connect_upstream(shared: &Shared) -> std::io::Result<TcpStream> {
    let socket = if shared.upstream.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if shared.plan.small_buffers {
        socket.set_recv_buffer_size(4096)?;
    }
    socket.connect(shared.upstream).await
}

async fn serve(client: TcpStream, shared: Arc<Shared>, index: u64, cut: CancellationToken) {
    let Ok(server) = connect_upstream(&shared).await else {
        // Dropping the client socket tells the actor the server is unreachable.
        return;
    };
    client.set_nodelay(true).ok();
    server.set_nodelay(true).ok();
    if shared.plan.small_buffers {
        client.set_nodelay(true).ok();
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let first = index == 0;
    let up = pump(
        client_read,
        server_write,
        Direction::ClientToServer,
        &shared,
        index,
        first,
        cut.clone(),
    );
    let down = pump(
        server_read,
        client_write,
        Direction::ServerToClient,
        &shared,
        index,
        first,
        cut.clone(),
    );
    tokio::select! {
        // A cut drops all four halves here: the actor and the server each see
        // the connection end without a WebSocket close.
        () = cut.cancelled() => {}
        _ = async { tokio::join!(up, down) } => {}
    }
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    mut src: OwnedReadHalf,
    mut dst: OwnedWriteHalf,
    direction: Direction,
    shared: &Shared,
    index: u64,
    first: bool,
    cut: CancellationToken,
) {
    let plan = &shared.plan;
    let (mut hold, cut_after, armed) = match direction {
        Direction::ClientToServer => (
            shared.hold_up.subscribe(),
            plan.cut_after_client_bytes,
            &shared.armed_up,
        ),
        Direction::ServerToClient => (
            shared.hold_down.subscribe(),
            plan.cut_after_server_bytes,
            &shared.armed_down,
        ),
    };
    let mut hold_writer = hold.clone();
    let cut_after = cut_after.filter(|_| first);
    let throttle = match direction {
        Direction::ServerToClient => plan.throttle_server_bytes_per_sec.filter(|r| *r > 0),
        Direction::ClientToServer => None,
    };
    let seed = plan.seed ^ (index << 1) ^ u64::from(direction == Direction::ServerToClient);
    let mut rng = StdRng::seed_from_u64(seed);
    // Bounded, so a held or throttled writer stops the reader and TCP
    // backpressure reaches the sender.
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(8);
    let read_size = if throttle.is_some() { 1024 } else { 16 * 1024 };

    // Tells the writer that the reader stopped for a cut rather than EOF.
    let cut_requested = std::sync::atomic::AtomicBool::new(false);
    let reader = async {
        let mut buf = vec![0u8; read_size];
        let mut forwarded: u64 = 0;
        let mut last_release = Instant::now();
        loop {
            while *hold.borrow_and_update() {
                if hold.changed().await.is_err() {
                    return;
                }
            }
            let n = match src.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut chunk = Bytes::copy_from_slice(&buf[..n]);
            let mut cut_now = false;
            if let Some(limit) = cut_after {
                let room = limit.saturating_sub(forwarded);
                if (n as u64) >= room {
                    chunk.truncate(usize::try_from(room).unwrap_or(n));
                    cut_now = true;
                }
            }
            {
                let mut budget = lock(armed);
                if let Some(left) = *budget {
                    if (chunk.len() as u64) >= left {
                        chunk.truncate(usize::try_from(left).unwrap_or(chunk.len()));
                        *budget = None;
                        cut_now = true;
                    } else {
                        *budget = Some(left - chunk.len() as u64);
                    }
                }
            }
            forwarded += chunk.len() as u64;
            let jitter = if plan.jitter_ms > 0 {
                rng.random_range(0..=plan.jitter_ms)
            } else {
                0
            };
            let release = (Instant::now() + Duration::from_millis(plan.latency_ms + jitter))
                .max(last_release);
            last_release = release;
            if !chunk.is_empty() && tx.send((release, chunk)).await.is_err() {
                return;
            }
            if cut_now {
                // Let the writer deliver the partial chunk, then cut.
                cut_requested.store(true, std::sync::atomic::Ordering::Relaxed);
                drop(tx);
                return;
            }
        }
    };
    let writer = async {
        while let Some((release, chunk)) = rx.recv().await {
            // An elapsed deadline would still cost a timer tick per chunk.
            if release > Instant::now() {
                tokio::time::sleep_until(release).await;
            }
            while *hold_writer.borrow_and_update() {
                if hold_writer.changed().await.is_err() {
                    return;
                }
            }
            if dst.write_all(&chunk).await.is_err() {
                return;
            }
            if let Some(rate) = throttle {
                let pause = Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
                tokio::time::sleep(pause).await;
            }
        }
        if cut_requested.load(std::sync::atomic::Ordering::Relaxed) {
            cut.cancel();
        } else {
            dst.shutdown().await.ok();
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await.ok();
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn forwards_in_order_with_latency_and_jitter() {
        let upstream = echo_server().await;
        let proxy = FaultProxy::start(
            upstream,
            FaultPlan {
                seed: 7,
                latency_ms: 1,
                jitter_ms: 3,
                ..FaultPlan::default()
            },
        )
        .await
        .unwrap();
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let sent: Vec<u8> = (0..=255u8).cycle().take(50_000).collect();
        let (mut r, mut w) = s.split();
        let write = async {
            for chunk in sent.chunks(997) {
                w.write_all(chunk).await.unwrap();
            }
        };
        let mut got = vec![0u8; sent.len()];
        let read = r.read_exact(&mut got);
        let (_, read) = tokio::join!(write, read);
        read.unwrap();
        assert_eq!(got, sent);
        assert_eq!(proxy.connections_accepted(), 1);
    }

    #[tokio::test]
    async fn cuts_the_first_connection_after_n_server_bytes() {
        let upstream = echo_server().await;
        let proxy = FaultProxy::start(
            upstream,
            FaultPlan {
                cut_after_server_bytes: Some(10),
                ..FaultPlan::default()
            },
        )
        .await
        .unwrap();
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        s.write_all(&[1u8; 64]).await.unwrap();
        let mut got = Vec::new();
        // The proxy delivers exactly 10 bytes, then closes: read_to_end ends.
        s.read_to_end(&mut got).await.ok();
        assert_eq!(got.len(), 10);
        // The second connection is not cut.
        let mut s2 = TcpStream::connect(proxy.local_addr()).await.unwrap();
        s2.write_all(&[2u8; 64]).await.unwrap();
        let mut got2 = [0u8; 64];
        s2.read_exact(&mut got2).await.unwrap();
    }

    #[tokio::test]
    async fn hold_blocks_until_release_and_cut_all_ends_connections() {
        let upstream = echo_server().await;
        let proxy = FaultProxy::start(upstream, FaultPlan::default())
            .await
            .unwrap();
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        // Prove the connection is up before holding.
        s.write_all(b"a").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        proxy.hold_server_to_client(true);
        s.write_all(b"b").await.unwrap();
        // Nothing can arrive while held: a read racing the release must see
        // the byte only after it.
        proxy.hold_server_to_client(false);
        s.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"b");
        proxy.cut_all();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.ok();
        assert!(rest.is_empty());
    }
}
