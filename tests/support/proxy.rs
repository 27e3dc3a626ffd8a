//! A TCP relay whose connections can be cut, and which can fail over.
//!
//! - [`Proxy::start`]: 127.0.0.1:<free port> relayed to one target. Put it
//!   in front of a server (or of NATS) and [`Proxy::cut`] is a network
//!   outage for whoever connects through it, and only for them.
//! - [`Proxy::failover`]: each new connection goes to the first of several
//!   targets that accepts it, like a load balancer with health checks by
//!   connect: clients of a node that died reconnect, unchanged, to the next.
//!
//! The relay runs on a thread and runtime of its own, so a `Proxy` works in
//! synchronous tests and in async ones alike (dropping a runtime inside an
//! async context would panic). Dropping the proxy ends every relay.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// How long the relay waits for one target to accept before trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP relay; see the module docs.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    /// Whether new connections are dropped, and the relays to abort on a
    /// cut: one lock, so no connection accepted just before a cut survives it.
    state: Mutex<State>,
    accepted: AtomicU64,
}

#[derive(Default)]
struct State {
    refusing: bool,
    relays: Vec<tokio::task::AbortHandle>,
}

impl Proxy {
    /// Relays 127.0.0.1:<free port> to `target`.
    pub fn start(target: SocketAddr) -> Self {
        Self::failover(vec![target])
    }

    /// Relays 127.0.0.1:<free port> to the first of `targets` that accepts
    /// a TCP connection, tried in order for each new connection.
    pub fn failover(targets: Vec<SocketAddr>) -> Self {
        assert!(!targets.is_empty(), "a proxy needs a target");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let relay_state = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("proxy {addr}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("proxy listener");
                    tokio::select! {
                        _ = stopped => {}
                        () = accept_loop(listener, targets, relay_state) => {}
                    }
                });
                // Dropping the runtime drops every relay task and its sockets.
            })
            .expect("spawn the proxy thread");
        Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` base URL of the relay (for a server behind it).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every relayed connection and refuses new ones (accepted, then
    /// closed at once) until [`Proxy::restore`].
    pub fn cut(&self) {
        let mut state = self.shared.state.lock().expect("proxy state");
        state.refusing = true;
        for relay in state.relays.drain(..) {
            relay.abort();
        }
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.shared.state.lock().expect("proxy state").refusing = false;
    }

    /// Connections accepted so far, relayed or refused.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    targets: Vec<SocketAddr>,
    shared: Arc<Shared>,
) {
    let targets: Arc<[SocketAddr]> = targets.into();
    while let Ok((inbound, _)) = listener.accept().await {
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let mut state = shared.state.lock().expect("proxy state");
        if state.refusing {
            continue; // dropped: the client sees the connection end
        }
        let targets = Arc::clone(&targets);
        let relay = tokio::spawn(relay(inbound, targets));
        state.relays.retain(|relay| !relay.is_finished());
        state.relays.push(relay.abort_handle());
    }
}

/// Connects to the first target that accepts and copies both ways until
/// either side closes; without a target the inbound connection is dropped.
async fn relay(mut inbound: tokio::net::TcpStream, targets: Arc<[SocketAddr]>) {
    for target in targets.iter() {
        let connect = tokio::net::TcpStream::connect(target);
        if let Ok(Ok(mut outbound)) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            inbound.set_nodelay(true).ok();
            outbound.set_nodelay(true).ok();
            // Ends when either side closes; errors end it the same way.
            tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                .await
                .ok();
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the relay thread already ended.
            stop.send(()).ok();
        }
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("addr", &self.addr).finish()
    }
}
