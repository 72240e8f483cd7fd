//! `natchat bench p2p`: P2P clients registering with the server, at a steady pace.
//!
//! Each simulated client speaks the real protocol (`REGISTER`, `HELLO` over UDP, the list),
//! and then a thread of its own counts the bytes the server sends it. All announce from one
//! shared UDP socket, so that ten thousand clients cost ten thousand sockets, not twenty.
//! The run reports how long registration took per client, and what one more join costs the
//! server in bytes, which must grow linearly with the number of clients.

use super::stats::Histogram;
use super::{connect_paced, Monitor, Report};
use crate::wire::{Event, Request, Secret};
use std::io::{BufRead, BufReader, Write};
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

/// Shared by every client's reader thread.
#[derive(Default)]
struct Totals {
    bytes: AtomicU64,
    heard_last: AtomicU64,
}

const LAST: &str = "bench-last";
const READER_STACK: usize = 64 * 1024;

pub fn run(server: SocketAddr, run: &P2pRun, monitor: &Monitor) -> Result<Registered, String> {
    let udp = Arc::new(
        UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("cannot open a UDP socket: {e}"))?,
    );
    let totals = Arc::new(Totals::default());
    // Each client registers on its own thread, as independent clients would: connections
    // open at a steady pace, registrations overlap.
    let (done, registered) = crossbeam_channel::unbounded();
    let start = Instant::now();
    let mut index = 0;
    connect_paced(server, run.clients, |stream| {
        index += 1;
        let (id, udp, totals, done) = (
            format!("bench-{index}"),
            udp.clone(),
            totals.clone(),
            done.clone(),
        );
        spawn_client(move || {
            let began = Instant::now();
            let outcome = register(stream, &id, &udp, server);
            let (reader, secret) = match outcome {
                Ok(ok) => ok,
                Err(e) => return drop(done.send(Err(e))),
            };
            let _ = done.send(Ok((id, secret, began.elapsed())));
            watch(reader, &totals);
        })
    })?;
    let mut latency = Histogram::default();
    let mut secrets = Vec::new();
    for _ in 0..run.clients {
        let (id, secret, took) = registered
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "registrations stopped coming".to_string())??;
        latency.record(took);
        secrets.push((id, secret));
    }
    let elapsed = start.elapsed();
    monitor.sample();

    // Keep everyone alive while the run lasts.
    let stop = Arc::new(AtomicBool::new(false));
    let keepalive = {
        let (udp, stop) = (udp.try_clone().map_err(|e| e.to_string())?, stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (id, secret) in &secrets {
                    let _ = udp.send_to(format!("ALIVE {id} {secret}").as_bytes(), server);
                }
                thread::sleep(Duration::from_secs(2));
            }
        })
    };

    // One more join, alone: what it costs is what everyone receives because of it.
    let before = settle(&totals.bytes);
    let stream = TcpStream::connect(server).map_err(|e| e.to_string())?;
    let (reader, _) = register(stream, LAST, &udp, server)?;
    let totals_for_last = totals.clone();
    spawn_client(move || watch(reader, &totals_for_last))?;
    let bytes_per_join = settle(&totals.bytes) - before;
    monitor.sample();
    stop.store(true, Ordering::Relaxed);
    let _ = keepalive.join();

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
            usage: monitor.peak(),
        },
        bytes_per_join,
        heard: totals.heard_last.load(Ordering::Relaxed) as usize,
    })
}

/// Registers `id` on `stream`: `REGISTER`, `WELCOME`, `HELLO` until `READY`, the list.
fn register(
    stream: TcpStream,
    id: &str,
    udp: &UdpSocket,
    server: SocketAddr,
) -> Result<(BufReader<TcpStream>, Secret), String> {
    let fail = |what: String| format!("registering {id}: {what}");
    let private = udp.local_addr().map_err(|e| fail(e.to_string()))?;
    let register = Request::Register {
        id: id.to_string(),
        private,
    };
    (&stream)
        .write_all(format!("{register}\n").as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let mut secret = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    while Instant::now() < deadline {
        if let Some(secret) = &secret {
            let _ = udp.send_to(format!("HELLO {id} {secret}").as_bytes(), server);
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(fail("the server closed the connection".into())),
            Ok(_) => {}
            Err(_) => continue, // timed out: announce again
        }
        match line.trim_end().parse::<Event>() {
            Ok(Event::Welcome { secret: s }) => secret = Some(s),
            Ok(Event::ListEnd) => {
                let _ = reader.get_ref().set_read_timeout(None);
                return secret
                    .map(|s| (reader, s))
                    .ok_or_else(|| fail("no WELCOME".into()));
            }
            Ok(Event::Error { message }) => return Err(fail(message)),
            _ => {}
        }
    }
    Err(fail("no list within 30 s".into()))
}

fn spawn_client(body: impl FnOnce() + Send + 'static) -> Result<(), String> {
    thread::Builder::new()
        .stack_size(READER_STACK)
        .spawn(body)
        .map(drop)
        .map_err(|e| format!("cannot start a client thread: {e}"))
}

/// Counts every byte the server sends this client, and notes the last join, until the
/// connection ends.
fn watch(mut reader: BufReader<TcpStream>, totals: &Totals) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) => totals.bytes.fetch_add(n as u64, Ordering::Relaxed),
        };
        if line.starts_with(format!("JOIN {LAST} ").as_bytes()) {
            totals.heard_last.fetch_add(1, Ordering::Relaxed);
        }
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
