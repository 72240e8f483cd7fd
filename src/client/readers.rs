//! The three reader threads, and what they hand the event loop.
//!
//! Reading blocks: `read_line` on stdin waits for the user, `recv_from` on the UDP socket
//! for a datagram, a read on the TCP connection for the server's next line. The event loop
//! must never block, or a keep-alive or a retransmission would wait for the user to type.
//! So each blocking read has a thread of its own, which turns what it reads into a message
//! ([`Input`], [`FromServer`], [`FromPeer`]) on a channel, and the loop selects over the
//! three channels (and a ticker): see [`super`].
//!
//! The channels are bounded ([`CHANNEL`]): when one is full, the stdin and TCP threads wait
//! (nothing the user typed, or the server said, is lost), and the UDP thread drops the
//! datagram, as a full socket buffer would: UDP promises nothing, and the sender
//! retransmits.
//!
//! Port prediction's thread, when an attempt runs, hands the loop what it receives on the
//! same channel as the UDP thread ([`FromUdp`]): see [`super::prediction`].

use super::prediction::Hit;
use super::session::Back;
use crate::failure::{spawn, Failure};
use crate::lines::LineReader;
use crate::wire::{Datagram, Event, NatOpen};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::io::{self, BufRead};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// How long the UDP thread pauses after a failed receive.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Channel capacities: small, because the loop keeps up; a full UDP channel drops datagrams
/// (as a full socket buffer would), the others make their thread wait.
pub const CHANNEL: usize = 256;

/// A line from the user, or the reason there will be no more.
pub enum Input {
    Line(String),
    /// End of input (Ctrl+D, or a script that ran out).
    End,
    /// Ctrl+C.
    Interrupt,
}

/// What the TCP thread (or the reconnect thread) hands to the loop.
pub enum FromServer {
    Event(Event),
    /// The connection of this generation ended (see `Client`'s `generation`).
    Closed(u64),
    /// Registered again, on a new connection.
    Back(Back),
    /// Registering again, our ID turned out to be someone else's now.
    Taken,
}

/// What the UDP thread (and port prediction's threads) hand to the loop.
pub enum FromUdp {
    /// A peer's datagram.
    Peer(FromPeer),
    /// Port prediction: a guess landed on one of our new mappings. See
    /// [`super::prediction`].
    Predicted(Hit),
    /// The server's answer to NAT discovery, from a port we never send to: see
    /// [`super::discovery`].
    NatOpen(NatOpen),
}

/// A well-formed datagram, and where it came from.
pub struct FromPeer {
    pub datagram: Datagram,
    pub from: SocketAddr,
}

/// The input thread: lines from stdin, then `End`. Ctrl+C arrives on the same channel.
pub fn spawn_input(stdin: io::Stdin) -> Result<Receiver<Input>, Failure> {
    let (tx, rx) = bounded(CHANNEL);
    let interrupt = tx.clone();
    ctrlc::set_handler(move || {
        let _ = interrupt.send(Input::Interrupt);
    })
    .map_err(|e| Failure::runtime(format!("cannot catch Ctrl+C: {e}")))?;
    spawn("input", move || {
        // Split on newlines and decode leniently: a stray invalid byte typed or piped in
        // must not end the session as if the input had ended.
        for line in stdin.lock().split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(Input::Line(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(Input::End);
    })?;
    Ok(rx)
}

/// The TCP thread: the server's events, on `to_loop`, for the first connection (generation
/// 0). (A reconnect thread does the same work for each later connection: see
/// [`spawn_reconnect`](super::session::spawn_reconnect).)
pub fn spawn_tcp_reader(
    reader: LineReader<TcpStream>,
    to_loop: &Sender<FromServer>,
) -> Result<(), Failure> {
    let to_loop = to_loop.clone();
    spawn("tcp", move || read_events(reader, &to_loop, 0))
}

/// The TCP thread's work: hands each server event to the loop, then `Closed` with the
/// connection's `generation`. Lines that do not parse are skipped.
pub fn read_events(
    mut reader: LineReader<TcpStream>,
    to_loop: &Sender<FromServer>,
    generation: u64,
) {
    while let Ok(Some(line)) = reader.read_line() {
        if let Ok(event) = line.parse() {
            if to_loop.send(FromServer::Event(event)).is_err() {
                return;
            }
        }
    }
    let _ = to_loop.send(FromServer::Closed(generation));
}

/// The UDP thread: well-formed peer datagrams, and the server's `NAT_OPEN`, on `tx`.
/// Anything else is dropped here.
pub fn spawn_udp_reader(udp: UdpSocket, tx: Sender<FromUdp>) -> Result<(), Failure> {
    spawn("udp", move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((len, from)) = udp.recv_from(&mut buf) else {
                // An error that keeps coming must not spin a core.
                std::thread::sleep(RECV_ERROR_PAUSE);
                continue;
            };
            let Ok(text) = std::str::from_utf8(&buf[..len]) else {
                continue;
            };
            if let Ok(datagram) = text.parse() {
                let _ = tx.try_send(FromUdp::Peer(FromPeer { datagram, from }));
            } else if let Ok(open) = text.parse() {
                let _ = tx.try_send(FromUdp::NatOpen(open));
            }
        }
    })
}
