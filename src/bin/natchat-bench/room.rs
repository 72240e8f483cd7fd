//! `natchat-bench room`: many room users on one process, some of them sending.
//!
//! Every simulated user is a TCP connection with a reader thread (64 KiB stack) that checks
//! each line it receives: who sent it, its sequence number (in order per sender), its filler
//! (intact), and its age (one-way latency, against the bench's own clock: sender and
//! receiver are the same process). Senders write on the same connections from threads of
//! their own. Users connect at a steady pace, so the accept queue is not what gets measured.

use crate::monitor::Monitor;
use crate::pace::connect_paced;
use crate::report::Report;
use crate::stats::Histogram;
use crossbeam_channel::{unbounded, Sender};
use natchat::lines::is_timeout;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// One run's shape.
#[derive(Clone, Debug)]
pub struct RoomRun {
    pub name: String,
    pub clients: usize,
    pub senders: usize,
    /// Per sender.
    pub messages: usize,
    /// Messages per second from all senders together; 0 = as fast as possible.
    pub rate: f64,
    /// Filler bytes per message.
    pub size: usize,
    /// Extra users that connect and never read.
    pub stalled: usize,
}

/// What one reader saw.
#[derive(Default)]
struct Seen {
    latency: Histogram,
    intact: u64,
    corrupted: u64,
    last: Option<Instant>,
}

const READER_STACK: usize = 64 * 1024;

/// Nanoseconds since the bench started: senders stamp messages with it, receivers in the same
/// process subtract, and so measure one-way latency on one clock.
fn epoch_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn run(server: SocketAddr, run: &RoomRun, monitor: &Monitor) -> Result<Report, String> {
    let expected_from_others = |index: usize| {
        let senders = run.senders.min(run.clients);
        let own = usize::from(index < senders);
        ((senders - own) * run.messages) as u64
    };
    // Each user reads from the moment it connects: the join notices of everyone after it
    // are part of the load. The deadline is set once sending starts.
    let deadline: Arc<OnceLock<Instant>> = Arc::default();
    let (joined, all_joined) = unbounded();
    let mut readers = Vec::new();
    let mut sending = Vec::new();
    connect_paced(server, run.clients, |stream| {
        let index = readers.len();
        if index < run.senders {
            sending.push(stream.try_clone().map_err(|e| e.to_string())?);
        }
        let (expected, size) = (expected_from_others(index), run.size);
        let (joined, deadline) = (joined.clone(), deadline.clone());
        let spawned = thread::Builder::new()
            .stack_size(READER_STACK)
            .spawn(move || receive(stream, index, expected, size, &joined, &deadline));
        readers.push(spawned.map_err(|e| format!("cannot start a reader thread: {e}"))?);
        Ok(())
    })?;
    for _ in 0..run.clients {
        all_joined
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| "users stopped joining the room".to_string())?;
    }
    let stalled = connect_paced(server, run.stalled, Ok)?;
    monitor.sample();

    let per_sender_gap = match run.rate {
        r if r > 0.0 => Some(Duration::from_secs_f64(run.senders as f64 / r)),
        _ => None,
    };
    let sending_time =
        per_sender_gap.map_or(Duration::from_secs(30), |gap| gap * run.messages as u32);
    let start = Instant::now();
    let _ = deadline.set(start + sending_time + Duration::from_secs(30));
    let senders: Vec<_> = sending
        .into_iter()
        .enumerate()
        .map(|(index, stream)| {
            let (messages, size) = (run.messages, run.size);
            thread::spawn(move || send(stream, index, messages, size, per_sender_gap))
        })
        .collect();
    for sender in senders {
        let _ = sender.join();
    }
    let mut total = Seen::default();
    let mut expected = 0;
    let mut connected = Vec::new();
    for (index, reader) in readers.into_iter().enumerate() {
        let (seen, stream) = reader
            .join()
            .map_err(|_| "a reader thread failed".to_string())?;
        connected.push(stream);
        total.latency.merge(&seen.latency);
        total.intact += seen.intact;
        total.corrupted += seen.corrupted;
        total.last = total.last.max(seen.last);
        expected += expected_from_others(index);
    }
    monitor.sample();
    // The server's peak with everyone connected: ten thousand hanging up at once is another
    // measurement.
    let usage = monitor.peak();
    drop(connected);
    drop(stalled);
    let elapsed = total.last.map_or(Duration::ZERO, |last| last - start);
    Ok(Report {
        name: run.name.clone(),
        clients: run.clients,
        senders: run.senders,
        messages: (run.senders * run.messages) as u64,
        deliveries_per_sec: total.intact as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: total.latency,
        lost: expected.saturating_sub(total.intact + total.corrupted),
        corrupted: total.corrupted,
        usage,
    })
}

/// One message: `B <sender> <seq> <sent-at-ns> <filler>`; the filler repeats one letter
/// that depends on the sequence number, so a receiver can check it.
fn send(stream: TcpStream, sender: usize, messages: usize, size: usize, gap: Option<Duration>) {
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    let started = Instant::now();
    for seq in 0..messages {
        if let Some(gap) = gap {
            let due = started + gap * seq as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        let filler = filler(seq, size);
        if writeln!(out, "B {sender} {seq} {} {filler}", epoch_nanos()).is_err() {
            return;
        }
        if gap.is_some() && out.flush().is_err() {
            return;
        }
    }
    let _ = out.flush();
}

fn filler(seq: usize, size: usize) -> String {
    let letter = (b'a' + (seq % 26) as u8) as char;
    std::iter::repeat_n(letter, size).collect()
}

/// Waits for the greeting and says so on `joined`, then reads until `expected` messages from
/// others arrived, or the deadline (once there is one) has passed. Returns the connection
/// still open: the run measures the server with everyone connected, not as they hang up.
fn receive(
    stream: TcpStream,
    me: usize,
    expected: u64,
    size: usize,
    joined: &Sender<()>,
    deadline: &OnceLock<Instant>,
) -> (Seen, TcpStream) {
    let mut seen = Seen::default();
    let mut next_seq: Vec<usize> = Vec::new();
    let mut reader = BufReader::with_capacity(32 * 1024, stream);
    let mut line = Vec::new();
    let mut greeted = false;
    // Wake up at least once a second to check the deadline.
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(1)));
    while seen.intact + seen.corrupted < expected || !greeted {
        if deadline.get().is_some_and(|d| Instant::now() >= *d) {
            break;
        }
        // A read that times out leaves what it got of a line in `line`; the next goes on.
        match reader.read_until(b'\n', &mut line) {
            Ok(_) if line.ends_with(b"\n") => {}
            Err(e) if is_timeout(&e) => continue,
            Ok(_) | Err(_) => break,
        }
        if !greeted && line.starts_with(b"Connected to the chat server") {
            greeted = true;
            let _ = joined.send(());
        }
        tally(&line, me, size, &mut next_seq, &mut seen);
        line.clear();
    }
    (seen, reader.into_inner())
}

/// Counts one received line: `[ip:port] B ...` from others. `[You] ...` echoes, joins and
/// leaves are not counted.
fn tally(line: &[u8], me: usize, size: usize, next_seq: &mut Vec<usize>, seen: &mut Seen) {
    let text = String::from_utf8_lossy(line);
    let Some((from, payload)) = text.trim_end().split_once("] ") else {
        return;
    };
    if from == "[You" || !payload.starts_with("B ") {
        return;
    }
    match check(payload, size, next_seq) {
        Some((sender, sent_at)) if sender != me => {
            seen.intact += 1;
            seen.latency
                .record(Duration::from_nanos(epoch_nanos().saturating_sub(sent_at)));
        }
        _ => seen.corrupted += 1,
    }
    seen.last = Some(Instant::now());
}

/// Checks one payload; returns its sender and send time when intact and in order.
fn check(payload: &str, size: usize, next_seq: &mut Vec<usize>) -> Option<(usize, u64)> {
    let mut words = payload.split(' ').skip(1);
    let sender: usize = words.next()?.parse().ok()?;
    let seq: usize = words.next()?.parse().ok()?;
    let sent_at: u64 = words.next()?.parse().ok()?;
    let body = words.next().unwrap_or("");
    if words.next().is_some() || body != filler(seq, size) {
        return None;
    }
    if next_seq.len() <= sender {
        next_seq.resize(sender + 1, 0);
    }
    if next_seq[sender] != seq {
        return None;
    }
    next_seq[sender] += 1;
    Some((sender, sent_at))
}
