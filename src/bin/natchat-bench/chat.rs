//! `natchat-bench chat`: two real `natchat client` processes chat over loopback.
//!
//! The bench types `@chat` lines into one client at a steady rate and reads the other's
//! output: a message's delivery time runs from the moment its line is written to the moment
//! its `From ...` line is read, so it covers both clients' event loops, the UDP hop and the
//! acknowledgement bookkeeping.

use crate::monitor::Monitor;
use crate::processes::{self, KillOnDrop};
use crate::report::Report;
use crate::stats::Histogram;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ChatRun {
    pub messages: usize,
    /// Messages per second.
    pub rate: f64,
}

/// Starts `natchat client` as `id`, with its input and output piped to the bench.
fn spawn_client(server: SocketAddr, id: &str) -> Result<KillOnDrop, String> {
    let (host, port) = (server.ip().to_string(), server.port().to_string());
    let args = [
        "client",
        "--server",
        &host,
        "--port",
        &port,
        "--udp-port",
        "0",
        "--id",
        id,
    ];
    processes::start(&args, Stdio::piped())
}

/// Reads `client`'s output until a line starts with `prefix`.
fn wait_for(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    prefix: &str,
) -> Result<(), String> {
    for line in lines {
        if line.map_err(|e| e.to_string())?.starts_with(prefix) {
            return Ok(());
        }
    }
    Err(format!("a client ended before printing '{prefix}'"))
}

pub fn run(server: SocketAddr, run: &ChatRun, monitor: &Monitor) -> Result<Report, String> {
    let mut sender = spawn_client(server, "bench-a")?;
    let mut receiver = spawn_client(server, "bench-b")?;
    let mut sender_lines = BufReader::new(sender.0.stdout.take().ok_or("no stdout")?).lines();
    let mut receiver_out = BufReader::new(receiver.0.stdout.take().ok_or("no stdout")?).lines();
    wait_for(&mut sender_lines, "Commands:")?;
    wait_for(&mut receiver_out, "Commands:")?;
    // The sender learns of the receiver from the server; wait until it has.
    let mut typing = sender.0.stdin.take().ok_or("no stdin")?;
    writeln!(typing, "@show_list").map_err(|e| e.to_string())?;
    wait_for(&mut sender_lines, "bench-b ")?;

    let sent_at: Arc<Vec<AtomicU64>> =
        Arc::new((0..run.messages).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let typist = {
        let (sent_at, messages, gap) = (
            sent_at.clone(),
            run.messages,
            Duration::from_secs_f64(1.0 / run.rate),
        );
        thread::spawn(move || {
            for seq in 0..messages {
                if let Some(wait) =
                    (start + gap * seq as u32).checked_duration_since(Instant::now())
                {
                    thread::sleep(wait);
                }
                sent_at[seq].store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                if writeln!(typing, "@chat bench-b m{seq}")
                    .and_then(|_| typing.flush())
                    .is_err()
                {
                    break;
                }
            }
            // Returned, not dropped: the end of its input would make the client leave while
            // the last messages may still be retransmitting.
            typing
        })
    };

    // The receiver's output, read on a thread so that the wait below has a deadline.
    let (arrivals, arrived) = crossbeam_channel::unbounded();
    thread::spawn(move || {
        for line in receiver_out.map_while(Result::ok) {
            if let Some(seq) = line
                .strip_prefix("From bench-a [m")
                .and_then(|l| l.strip_suffix(']'))
            {
                let at = start.elapsed().as_nanos() as u64;
                if arrivals.send((seq.parse::<usize>().ok(), at)).is_err() {
                    return;
                }
            }
        }
    });
    // The sender's output must be read too, or it would block once the pipe is full.
    thread::spawn(move || sender_lines.for_each(drop));

    let mut latency = Histogram::default();
    let mut seen = vec![false; run.messages];
    let (mut received, mut corrupted) = (0u64, 0u64);
    let deadline =
        start + Duration::from_secs_f64(run.messages as f64 / run.rate) + Duration::from_secs(10);
    while (received as usize) < run.messages {
        let Ok((seq, at)) = arrived.recv_deadline(deadline) else {
            break;
        };
        match seq.filter(|&s| s < run.messages && !seen[s]) {
            Some(seq) => {
                seen[seq] = true;
                received += 1;
                latency.record(Duration::from_nanos(
                    at.saturating_sub(sent_at[seq].load(Ordering::Relaxed)),
                ));
            }
            None => corrupted += 1,
        }
    }
    let elapsed = start.elapsed();
    monitor.sample();
    let _ = typist.join();
    Ok(Report {
        name: "p2p chat, 2 clients".into(),
        clients: 2,
        senders: 1,
        messages: run.messages as u64,
        deliveries_per_sec: received as f64 / elapsed.as_secs_f64(),
        latency,
        lost: run.messages as u64 - received,
        corrupted,
        usage: monitor.peak(),
    })
}
