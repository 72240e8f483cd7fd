//! `natchat-bench`: a load generator for both natchat servers, in one process.
//!
//! It is a program of its own, not a part of the chat: it uses the `natchat` library only
//! through its public API (the wire messages, to speak the P2P protocol; the listener's thread
//! and mapping counts, to check the kernel's limits), and the `natchat` binary beside it as
//! the servers and clients it measures.
//!
//! - `natchat-bench room`: room users, some sending, as fast as possible or at a set rate;
//! - `natchat-bench p2p`: P2P clients registering at a steady pace; the cost of one join;
//! - `natchat-bench chat`: two real `natchat client` processes chatting over loopback;
//! - `natchat-bench all`: the standard set (`make bench`), each run against a fresh server
//!   that the bench starts itself, printed as one table; `natchat-bench scale`
//!   (`make bench-scale`): the same for 10,000 clients.
//!
//! Each run reports clients, senders, messages, intact deliveries per second, one-way latency
//! (p50, p99, max), lost and corrupted messages, and the server's peak RSS and thread count
//! (read from /proc when the server runs on this machine: give its pid with `--server-pid`).

mod chat;
mod limits;
mod monitor;
mod p2p;
mod pace;
mod processes;
mod report;
mod room;
mod stats;
mod suite;

use monitor::Monitor;
use natchat::cli::{CliError, Command, Opt};
use natchat::failure::Failure;
use report::header;
use std::net::SocketAddr;
use std::process::ExitCode;

const BENCH: Command = Command {
    name: "natchat-bench",
    about:
        "load generator: KIND is room, p2p, chat, all (the standard set) or scale (10,000 clients)",
    positionals: &[("KIND", "room | p2p | chat | all | scale")],
    options: &[
        Opt {
            name: "server",
            value: "ADDR",
            default: Some("127.0.0.1:8888"),
            help: "the running server (room, p2p, chat)",
        },
        Opt {
            name: "server-pid",
            value: "PID",
            default: None,
            help: "its pid, to report its RSS and threads",
        },
        Opt {
            name: "clients",
            value: "N",
            default: Some("100"),
            help: "simulated clients (room, p2p)",
        },
        Opt {
            name: "senders",
            value: "N",
            default: Some("10"),
            help: "how many of them send (room)",
        },
        Opt {
            name: "messages",
            value: "N",
            default: Some("1000"),
            help: "messages per sender (room), in all (chat)",
        },
        Opt {
            name: "rate",
            value: "PER_SEC",
            default: Some("0"),
            help: "messages per second in all; 0: flat out (room), 2000 (chat)",
        },
        Opt {
            name: "size",
            value: "BYTES",
            default: Some("32"),
            help: "filler bytes per message (room)",
        },
        Opt {
            name: "stalled",
            value: "N",
            default: Some("0"),
            help: "extra clients that never read (room)",
        },
    ],
    flags: &[],
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr().lock(), "natchat-bench: {failure}");
            ExitCode::from(failure.code())
        }
    }
}

fn run(args: &[String]) -> Result<(), Failure> {
    let m = match BENCH.parse(args) {
        Ok(matches) => matches,
        Err(CliError::Help(text)) => {
            print!("{text}");
            return Ok(());
        }
        Err(e) => return Err(usage(e)),
    };
    let server: SocketAddr = m.value("server").map_err(usage)?;
    let pid: Option<u32> = m.get("server-pid").map_err(usage)?;
    let clients: usize = m.value("clients").map_err(usage)?;
    let messages: usize = m.value("messages").map_err(usage)?;
    let rate: f64 = m.value("rate").map_err(usage)?;
    // Below a message every 1,000 s, a gap between messages no longer fits a Duration.
    if !(rate == 0.0 || (0.001..=1e7).contains(&rate)) {
        return Err(Failure::usage(
            "--rate must be 0 (flat out) or from 0.001 to 10000000 messages per second".into(),
        ));
    }
    let result = match m.positional::<String>(0, "KIND").map_err(usage)?.as_str() {
        "room" => {
            let run = room::RoomRun {
                name: "room".into(),
                clients,
                senders: m.value::<usize>("senders").map_err(usage)?.min(clients),
                messages,
                rate,
                size: m.value("size").map_err(usage)?,
                stalled: m.value("stalled").map_err(usage)?,
            };
            run_room(server, &run, pid)
        }
        "p2p" => {
            let run = p2p::P2pRun {
                name: "p2p register".into(),
                clients,
            };
            run_p2p(server, &run, pid)
        }
        "chat" => {
            let rate = if rate > 0.0 { rate } else { 2000.0 };
            run_chat(server, &chat::ChatRun { messages, rate }, pid)
        }
        "all" => suite::run(false),
        "scale" => suite::run(true),
        other => {
            return Err(Failure::usage(format!(
                "unknown bench '{other}': use room, p2p, chat, all or scale"
            )))
        }
    };
    result.map_err(Failure::runtime)
}

fn usage(e: CliError) -> Failure {
    Failure::usage(e.to_string())
}

/// `natchat-bench room`: one run against a running room server; prints the table.
fn run_room(server: SocketAddr, run: &room::RoomRun, pid: Option<u32>) -> Result<(), String> {
    limits::ensure(run.clients)?;
    let report = room::run(server, run, &Monitor::start(pid))?;
    natchat::say!("{}\n{}", header(), report.row());
    Ok(())
}

/// `natchat-bench p2p`: registration against a running server; prints the table and what
/// one more join costs.
fn run_p2p(server: SocketAddr, run: &p2p::P2pRun, pid: Option<u32>) -> Result<(), String> {
    limits::ensure(run.clients)?;
    let result = p2p::run(server, run, &Monitor::start(pid))?;
    natchat::say!("{}\n{}", header(), result.report.row());
    natchat::say!(
        "one more join: {} bytes sent by the server, heard by {} of {} clients",
        result.bytes_per_join,
        result.heard,
        run.clients
    );
    Ok(())
}

/// `natchat-bench chat`: two client processes against a running server; prints the table.
fn run_chat(server: SocketAddr, run: &chat::ChatRun, pid: Option<u32>) -> Result<(), String> {
    let report = chat::run(server, run, &Monitor::start(pid))?;
    natchat::say!("{}\n{}", header(), report.row());
    Ok(())
}
