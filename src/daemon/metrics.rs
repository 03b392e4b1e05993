//! The Prometheus endpoint: off unless `[metrics] listen` is set (the
//! example binds loopback). Text exposition format 0.0.4, rendered from
//! the same state `status` shows, plus counters of every action by reason
//! and outcome, and each worker's thread stacks as `inspect` sees them.
//! A deliberately small HTTP/1.0 responder: GET /metrics and nothing else,
//! one request per connection.
//!
//! Any local user can connect, so nothing a client does may cost the
//! daemon more than a bounded share of its file descriptors or of its one
//! thread (see [`Limits`]): at most `connections` are served at once, and
//! one more is closed as soon as it is accepted; each has `read_timeout`
//! for its whole request (however slowly it trickles in) and
//! `write_timeout` for the answer; the page is rendered by one task for
//! all of them, once per change of state (see `bodies`).

mod bodies;
mod render;
#[cfg(test)]
mod tests;

pub use render::render;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

use super::Shared;
use crate::procfs::ProcFs;
use bodies::Bodies;

/// Counts of actions: (app, action, reason kind, outcome) → n.
pub type ActionCounts = std::collections::BTreeMap<(String, String, String, String), u64>;

/// Thread stacks come from each worker's smaps, a walk of every mapping:
/// read at most this often however often the endpoint is scraped.
const STACKS_EVERY: Duration = Duration::from_secs(60);

/// One worker's thread stacks, summed as `inspect` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StackFigures {
    pub threads: usize,
    /// Threads (not the main one) with glibc's default-sized stack.
    pub default_stacks: usize,
    pub reserved_bytes: u64,
    pub resident_bytes: u64,
    /// Address space `inspect`'s recommendation would give back.
    pub saves_reserved_bytes: u64,
}

/// What one client, or many, can make the endpoint do.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once. A scraper makes one every scrape
    /// interval; 16 leave room for a few scrapers and an operator's curl,
    /// and bound the endpoint's file descriptors to 16 + the listener + the
    /// one being refused.
    pub connections: usize,
    /// For the whole request (the line and the headers), not per read: a
    /// client that sends a byte a second is dropped when it runs out.
    pub read_timeout: Duration,
    /// Bytes of request read at most; the first line is all that is used.
    pub request_max: usize,
    /// For the page to be ready. Only the first scrape waits long (it reads
    /// every worker's smaps); the renderer goes on if a client gives up.
    pub render_timeout: Duration,
    /// For the whole answer: a client that does not read is dropped.
    pub write_timeout: Duration,
    /// A page made from state read this recently is served as it is: the
    /// state is read (and compared) at most this often, whatever the rate
    /// of requests.
    pub reuse_for: Duration,
    /// After a failed accept (EMFILE, ENFILE, ENOBUFS...): the connection
    /// stays queued, so trying again at once would spin.
    pub accept_pause: Duration,
    /// Refusals and accept errors are logged at most this often.
    pub log_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 16,
            // Prometheus sends its request at once; 5 s spare a loaded host.
            read_timeout: Duration::from_secs(5),
            request_max: 8 << 10,
            // Prometheus' default scrape_timeout.
            render_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(5),
            reuse_for: Duration::from_millis(250),
            accept_pause: Duration::from_millis(100),
            log_every: Duration::from_secs(60),
        }
    }
}

/// What the endpoint did, for tests (and a debugger).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections being served now, and the most at any time.
    pub serving: AtomicUsize,
    pub most_serving: AtomicUsize,
    /// Connections closed at once because `connections` were being served.
    pub refused: AtomicU64,
    pub accept_errors: AtomicU64,
    /// Pages rendered.
    pub renders: AtomicU64,
}

/// A running endpoint.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
}

/// Binds the endpoint and serves it in the background with the default
/// limits; returns the address bound (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    procfs: ProcFs,
) -> std::io::Result<SocketAddr> {
    let endpoint = serve_with(addr, shared, procfs, Limits::default()).await?;
    Ok(endpoint.addr)
}

pub async fn serve_with(
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    procfs: ProcFs,
    limits: Limits,
) -> std::io::Result<Endpoint> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!("metrics on http://{addr}/metrics");
    let stats = Arc::new(Stats::default());
    let bodies = Bodies::start(shared, procfs, limits.reuse_for, stats.clone());
    tokio::spawn(accept_loop(listener, limits, stats.clone(), bodies));
    Ok(Endpoint { addr, stats })
}

/// What a connection beyond the cap is told, if it can be without waiting.
const BUSY: &[u8] = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n";

/// Accepts every connection; serves it if fewer than `connections` are
/// being served, else closes it at once.
///
/// Closing rather than leaving it queued: either way the daemon's file
/// descriptors stay bounded (a queued connection is the kernel's, not an
/// fd of ours), but a queue would hold up to a backlog's worth of idle
/// connections ahead of a real scrape, each served in turn for up to
/// `read_timeout`: minutes after a flood. Closed at once, a client knows
/// at once, and the endpoint works again one `read_timeout` after the
/// flood ends. Refusing costs an accept and a close, no more than the
/// client's connect costs it, and the accepts take turns with the rest of
/// the runtime (tokio's cooperative budget), so a flood cannot starve the
/// daemon's loop.
async fn accept_loop(listener: TcpListener, limits: Limits, stats: Arc<Stats>, bodies: Bodies) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    let mut refusals = Throttle::new(limits.log_every);
    let mut failures = Throttle::new(limits.log_every);
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                if let Some(unsaid) = failures.due() {
                    tracing::warn!(
                        "metrics: cannot accept a connection: {e}{}; trying again every {} ms",
                        more(unsaid),
                        limits.accept_pause.as_millis()
                    );
                }
                tokio::time::sleep(limits.accept_pause).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let slot = Slot::new(permit, stats.clone());
                tokio::spawn(answer(sock, slot, limits, bodies.clone()));
            }
            Err(_) => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                // What the client sent already is read (without waiting)
                // so that the close is not a reset that loses the 503.
                let _ = sock.try_read(&mut [0; 1024]);
                let _ = sock.try_write(BUSY);
                drop(sock);
                if let Some(unsaid) = refusals.due() {
                    tracing::warn!(
                        "metrics: {} connections being served, the most allowed: closing new ones{}",
                        limits.connections,
                        more(unsaid)
                    );
                }
            }
        }
    }
}

fn more(unsaid: u64) -> String {
    if unsaid == 0 {
        String::new()
    } else {
        format!(" ({unsaid} more times since last said)")
    }
}

/// Says when something may be logged again, and how often it was not.
struct Throttle {
    every: Duration,
    said_at: Option<Instant>,
    unsaid: u64,
}

impl Throttle {
    fn new(every: Duration) -> Self {
        Self {
            every,
            said_at: None,
            unsaid: 0,
        }
    }

    /// `Some(times not said since)` when it may be said now.
    fn due(&mut self) -> Option<u64> {
        if self.said_at.is_some_and(|t| t.elapsed() < self.every) {
            self.unsaid += 1;
            return None;
        }
        self.said_at = Some(Instant::now());
        Some(std::mem::take(&mut self.unsaid))
    }
}

/// One of the `connections` permits, counted while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<Stats>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, stats: Arc<Stats>) -> Self {
        let now = stats.serving.fetch_add(1, Ordering::Relaxed) + 1;
        stats.most_serving.fetch_max(now, Ordering::Relaxed);
        Self {
            _permit: permit,
            stats,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.serving.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn answer(mut sock: TcpStream, slot: Slot, limits: Limits, bodies: Bodies) {
    converse(&mut sock, &limits, &bodies).await;
    // Closed before the permit is given back: at most `connections` fds.
    drop(sock);
    drop(slot);
}

/// One request and its answer, each within its time.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    sock: &mut S,
    limits: &Limits,
    bodies: &Bodies,
) {
    let Ok(Some(line)) = timeout(limits.read_timeout, read_request(sock, limits.request_max)).await
    else {
        return;
    };
    let (status, ctype, body) = page(&line, limits, bodies).await;
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = timeout(limits.write_timeout, async {
        sock.write_all(head.as_bytes()).await?;
        sock.write_all(body.as_bytes()).await?;
        sock.flush().await
    })
    .await;
}

/// The request's first line, read until the blank line that ends the
/// headers, the end of input, or `max` bytes.
async fn read_request<R: AsyncRead + Unpin>(sock: &mut R, max: usize) -> Option<String> {
    let mut buf = Vec::with_capacity(max.min(1024));
    let mut chunk = [0u8; 1024];
    loop {
        let room = max.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            break;
        }
        let n = sock.read(&mut chunk[..room]).await.ok()?;
        if n == 0 {
            break;
        }
        // Only the new bytes (and the 3 before) can complete the end.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().map(str::to_owned)
}

/// Status, content type and body for a request line.
async fn page(
    line: &str,
    limits: &Limits,
    bodies: &Bodies,
) -> (&'static str, &'static str, Arc<str>) {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => match timeout(limits.render_timeout, bodies.get()).await
        {
            Ok(Some(text)) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
            _ => (
                "503 Service Unavailable",
                "text/plain",
                Arc::from("the metrics are not ready: try again\n"),
            ),
        },
        (Some("GET"), Some(_)) => ("404 Not Found", "text/plain", Arc::from("try /metrics\n")),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            Arc::from("GET /metrics only\n"),
        ),
    }
}
