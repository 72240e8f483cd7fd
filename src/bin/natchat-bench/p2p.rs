//! `natchat-bench p2p`: P2P clients registering with the server, at a steady pace.
//!
//! Each simulated client speaks the real protocol (`REGISTER`, `HELLO` over UDP, the list).
//! Once registered, its connection is handed to one of a few drain threads, which read every
//! connection in turn without blocking and count the bytes the server sends. A thread per
//! client would measure ten thousand wake-ups of the bench itself for every join; a few
//! threads that each read many sockets measure the server. All clients announce from one
//! shared UDP socket, so that ten thousand clients cost ten thousand sockets, not twenty.
//!
//! The run reports how long each registration took, how long all of them took, and what one
//! more join then costs the server in bytes (it must grow linearly with the clients).

use crate::monitor::Monitor;
use crate::pace::paced;
use crate::report::Report;
use crate::stats::Histogram;
use crossbeam_channel::{bounded, unbounded, Receiver};
use natchat::nonce::Nonce;
use natchat::wire::{Event, Request};
use parking_lot::Mutex;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct P2pRun {
    pub name: String,
    pub clients: usize,
}

/// What the run learned beyond the table row.
pub struct Registered {
    pub report: Report,
    /// Bytes the server sent, to everyone, for one more join.
    pub bytes_per_join: u64,
    /// How many of the clients heard of that join.
    pub heard: usize,
}

/// Shared by the drain threads.
#[derive(Default)]
struct Totals {
    bytes: AtomicU64,
    heard_last: AtomicU64,
    stop: AtomicBool,
}

/// The ID of the one join that is measured alone.
const LAST: &str = "bench-last";
const DRAIN_THREADS: usize = 2;
/// The pause between two passes over all connections. The server sends joins in rounds a
/// few milliseconds apart, so reading more often would mostly find nothing, at the cost of
/// a system call per connection: the load generator's CPU, taken from the server it measures.
const DRAIN_PAUSE: Duration = Duration::from_millis(20);
const REGISTERING_THREADS: usize = 16;
/// How often each simulated client says it is alive: well within the server's timeout.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);

pub fn run(server: SocketAddr, run: &P2pRun, monitor: &Monitor) -> Result<Registered, String> {
    let udp =
        UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let totals = Arc::new(Totals::default());
    let mut drains = Vec::new();
    let mut handoff = Vec::new();
    for _ in 0..DRAIN_THREADS {
        let (give, take) = unbounded();
        let totals = totals.clone();
        drains.push(thread::spawn(move || drain(take, &totals)));
        handoff.push(give);
    }

    // Registrations overlap, as those of independent clients do: at a steady pace, a pool
    // of threads each takes the next client, connects it and takes it through registration.
    // (Connecting here, not ahead, so that no connection waits idle for a free thread until
    // the server's registration timeout closes it.)
    let udp = Arc::new(udp);
    let (next, to_register) = bounded::<usize>(0);
    let (done, registered) = unbounded();
    for _ in 0..REGISTERING_THREADS {
        let (to_register, done, udp, handoff) = (
            to_register.clone(),
            done.clone(),
            udp.clone(),
            handoff.clone(),
        );
        thread::spawn(move || {
            for index in to_register {
                let id = format!("bench-{index}");
                let began = Instant::now();
                let connected = TcpStream::connect(server).map_err(|e| format!("{id}: {e}"));
                let outcome = connected.and_then(|stream| {
                    let _ = stream.set_nodelay(true);
                    register(stream, &id, &udp, server)
                });
                let outcome = outcome.map(|(stream, _)| {
                    let _ = handoff[index % DRAIN_THREADS].send(stream);
                    (id, began.elapsed())
                });
                let _ = done.send(outcome);
            }
        });
    }
    // Keep everyone alive while the run lasts, as real clients do, from their registration
    // on: filling a server with ten thousand takes longer than its timeout.
    let alive = Arc::new(Mutex::new(Vec::new()));
    let keepalive = {
        let (udp, totals) = (udp.try_clone().map_err(|e| e.to_string())?, totals.clone());
        let alive = alive.clone();
        thread::spawn(move || {
            while !totals.stop.load(Ordering::Relaxed) {
                let announcements: Vec<String> = alive.lock().clone();
                let began = Instant::now();
                // Spread over the interval, as the clients' own timers would be: ten thousand
                // at once would overflow the server's UDP receive buffer, and be lost.
                let gap = KEEPALIVE_EVERY / announcements.len().max(1) as u32;
                for (sent, announcement) in announcements.iter().enumerate() {
                    if totals.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = udp.send_to(announcement.as_bytes(), server);
                    if let Some(wait) =
                        (began + gap * sent as u32).checked_duration_since(Instant::now())
                    {
                        thread::sleep(wait);
                    }
                }
                let next = began + KEEPALIVE_EVERY;
                while Instant::now() < next && !totals.stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };

    let start = Instant::now();
    paced(run.clients, |i| next.send(i + 1).map_err(|e| e.to_string()))?;
    drop(next);
    let mut latency = Histogram::default();
    for _ in 0..run.clients {
        let (id, took) = registered
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "registrations stopped coming".to_string())??;
        latency.record(took);
        alive.lock().push(format!("ALIVE {id}"));
    }
    let elapsed = start.elapsed();
    monitor.sample();

    // One more join, alone: what it costs is what everyone receives because of it.
    let before = settle(&totals.bytes);
    let stream = TcpStream::connect(server).map_err(|e| e.to_string())?;
    let (stream, list_bytes) = register(stream, LAST, &udp, server)?;
    let _ = handoff[0].send(stream);
    let bytes_per_join = settle(&totals.bytes) - before + list_bytes;
    monitor.sample();
    // The server's peak with everyone connected: once the drains stop, all the clients
    // hang up at once, and that storm of leaves is another measurement.
    let usage = monitor.peak();
    totals.stop.store(true, Ordering::Relaxed);
    let _ = keepalive.join();
    for drain in drains {
        let _ = drain.join();
    }

    Ok(Registered {
        report: Report {
            name: run.name.clone(),
            clients: run.clients,
            senders: 0,
            messages: run.clients as u64,
            deliveries_per_sec: run.clients as f64 / elapsed.as_secs_f64(),
            latency,
            lost: 0,
            corrupted: 0,
            usage,
        },
        bytes_per_join,
        heard: totals.heard_last.load(Ordering::Relaxed) as usize,
    })
}

/// Registers `id` on `stream`: `REGISTER`, `WELCOME`, `HELLO` until `READY`, the list.
/// Returns the reader (which may hold the start of what followed the list) and the bytes of
/// the registration.
fn register(
    stream: TcpStream,
    id: &str,
    udp: &UdpSocket,
    server: SocketAddr,
) -> Result<(BufReader<TcpStream>, u64), String> {
    let fail = |what: String| format!("registering {id}: {what}");
    let private = udp.local_addr().map_err(|e| fail(e.to_string()))?;
    let register = Request::Register {
        id: id.to_string(),
        private,
        asleep: false,
    };
    (&stream)
        .write_all(format!("{register}\n").as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = BufReader::new(stream);
    let hello = |nonce: &Nonce| udp.send_to(format!("HELLO {id} {nonce}").as_bytes(), server);
    let (mut welcome, mut ready) = (None, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    let mut received = 0;
    while Instant::now() < deadline {
        match reader.read_line(&mut line) {
            Ok(0) => return Err(fail("the server closed the connection".into())),
            Ok(n) => received += n as u64,
            // Timed out, keeping any part of a line in `line`: announce again until READY.
            Err(_) => {
                if let (Some(nonce), false) = (&welcome, ready) {
                    let _ = hello(nonce);
                }
                continue;
            }
        }
        match line.trim_end().parse::<Event>() {
            Ok(Event::Welcome { nonce }) => {
                let _ = hello(&nonce);
                welcome = Some(nonce);
            }
            Ok(Event::Ready { .. }) => ready = true,
            Ok(Event::ListEnd) => {
                welcome.ok_or_else(|| fail("no WELCOME".into()))?;
                return Ok((reader, received));
            }
            Ok(Event::Error { message }) => return Err(fail(message)),
            _ => {}
        }
        line.clear();
    }
    Err(fail("no list within 30 s".into()))
}

/// A drain thread: takes connections as they are registered, and reads all of them in turn
/// without blocking, counting bytes and noting who heard of the last join, until told to stop.
fn drain(new: Receiver<BufReader<TcpStream>>, totals: &Totals) {
    let heard = format!("JOIN {LAST} ");
    // Each connection, and the end of what it last read (a line may span two reads).
    let mut connections: Vec<(BufReader<TcpStream>, Vec<u8>)> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !totals.stop.load(Ordering::Relaxed) {
        for reader in new.try_iter() {
            if reader.get_ref().set_nonblocking(true).is_ok() {
                connections.push((reader, Vec::new()));
            }
        }
        for (stream, tail) in &mut connections {
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(n) if n > 0 => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    _ => break,
                };
                totals.bytes.fetch_add(n as u64, Ordering::Relaxed);
                tail.extend_from_slice(&buf[..n]);
                if tail.windows(heard.len()).any(|w| w == heard.as_bytes()) {
                    totals.heard_last.fetch_add(1, Ordering::Relaxed);
                    tail.clear();
                }
                let keep = tail.len().saturating_sub(heard.len());
                tail.drain(..keep);
            }
        }
        thread::sleep(DRAIN_PAUSE);
    }
}

/// Waits until the byte count has not moved for half a second (at most a minute); returns it.
fn settle(bytes: &AtomicU64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = bytes.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(500));
        let now = bytes.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    last
}
