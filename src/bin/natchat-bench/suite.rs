//! `natchat-bench all` (`make bench`): the standard set of runs, each against a fresh server
//! that the bench starts (so each run's peak RSS is its own), printed as one table.

use crate::chat::{self, ChatRun};
use crate::limits;
use crate::monitor::Monitor;
use crate::p2p::{self, P2pRun};
use crate::processes::{self, KillOnDrop};
use crate::report::{header, Report};
use crate::room::{self, RoomRun};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;

/// A server started by the bench; killed when dropped, whatever happened.
struct Server {
    process: KillOnDrop,
    addr: SocketAddr,
}

impl Server {
    /// Starts `natchat <args>` and reads its port from the first line that `port_of` accepts.
    fn start(args: &[&str], port_of: fn(&str) -> Option<u16>) -> Result<Server, String> {
        let mut process = processes::start(args, Stdio::null())?;
        let mut lines = BufReader::new(process.0.stdout.take().ok_or("no stdout")?).lines();
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| port_of(&line))
            .ok_or("the server did not start")?;
        // Keep reading its output, so that its event lines never fill the pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Server {
            process,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    fn room() -> Result<Server, String> {
        let uploads = std::env::temp_dir().join("natchat-bench-uploads");
        let uploads = uploads.to_string_lossy().into_owned();
        Server::start(
            &["room-server", "127.0.0.1", "0", "--upload-dir", &uploads],
            |line| {
                line.strip_prefix("Chat Server started on port ")?
                    .trim_end_matches('.')
                    .parse()
                    .ok()
            },
        )
    }

    fn p2p() -> Result<Server, String> {
        let args = [
            "server",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--timeout-secs",
            "120",
        ];
        Server::start(&args, |line| {
            let rest = line.strip_prefix("natchat server listening on 127.0.0.1:")?;
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    fn monitor(&self) -> Monitor {
        Monitor::start(Some(self.process.0.id()))
    }
}

fn room_run(
    name: &str,
    clients: usize,
    senders: usize,
    messages: usize,
    rate: f64,
    stalled: usize,
) -> RoomRun {
    RoomRun {
        name: name.into(),
        clients,
        senders,
        messages,
        rate,
        size: 32,
        stalled,
    }
}

/// Runs the standard set (up to 1,000 clients, about 20 seconds), or with `scale` the
/// 10,000-client runs (about two minutes: every join is announced to everyone, so filling a
/// server sends on the order of 10,000² / 2 lines), printing each row as it completes, then
/// the notes. Refuses to start when this machine cannot hold the largest run (see
/// [`limits`]).
pub fn run(scale: bool) -> Result<(), String> {
    let sizes: &[usize] = if scale { &[10_000] } else { &[10, 100, 1000] };
    limits::ensure(sizes.iter().copied().max().unwrap_or(0))?;
    let mut notes = Vec::new();
    natchat::say!("{}", header());
    let print = |report: &Report| natchat::say!("{}", report.row());

    if !scale {
        let runs = [
            room_run("room flood", 100, 10, 5000, 0.0, 0),
            room_run("room flood, 1 stalled", 100, 10, 5000, 0.0, 1),
            room_run("room paced 1000/s", 100, 10, 500, 1000.0, 0),
        ];
        let mut flood = Vec::new();
        for run in &runs {
            let server = Server::room()?;
            let report = room::run(server.addr, run, &server.monitor())?;
            print(&report);
            flood.push(report.deliveries_per_sec);
        }
        notes.push(format!(
            "one stalled reader: the others' throughput {:.1}% of the run without it",
            100.0 * flood[1] / flood[0]
        ));
    }

    for &clients in sizes {
        let server = Server::room()?;
        let run = room_run(&format!("room scale {clients}"), clients, 1, 10, 0.0, 0);
        print(&room::run(server.addr, &run, &server.monitor())?);
    }

    for &clients in sizes.iter().filter(|&&n| n >= 100) {
        let server = Server::p2p()?;
        let run = P2pRun {
            name: format!("p2p register {clients}"),
            clients,
        };
        let result = p2p::run(server.addr, &run, &server.monitor())?;
        print(&result.report);
        notes.push(format!(
            "p2p: one join at {clients} clients: {} bytes sent by the server ({:.1} per client), heard by {} of {clients}",
            result.bytes_per_join,
            result.bytes_per_join as f64 / clients as f64,
            result.heard
        ));
    }

    if !scale {
        let server = Server::p2p()?;
        let chat_run = ChatRun {
            messages: 10_000,
            rate: 2000.0,
        };
        print(&chat::run(server.addr, &chat_run, &server.monitor())?);
    }

    natchat::say!();
    for note in notes {
        natchat::say!("{note}");
    }
    Ok(())
}
