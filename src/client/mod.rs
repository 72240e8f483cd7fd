//! `natchat client`: registers with the server, then chats with peers over UDP.
//!
//! Three reader threads turn the outside world into messages on channels, and one loop owns
//! all the client's state and reacts to them, so nothing here needs a lock:
//!
//! ```text
//!  stdin thread ──── Input ──────┐
//!  TCP thread ────── FromServer ─┤   (after a lost connection: the reconnect thread, which
//!  UDP thread ────── FromUdp ────┼──▶ registers again, then reads the new connection)
//!  ticker (50 ms) ───────────────┘
//!        event loop (select!) ──▶ stdout, TCP writes, UDP sends
//!        owns: Peers (peers.rs), each with its Paths (paths.rs) and its Inbound
//!        (inbound.rs), and Outgoing (outgoing.rs)
//! ```
//!
//! The files, in the order the data flows:
//!
//! - [`session`]: registering (`REGISTER`, the challenge answered with `HELLO`, `READY` and
//!   the list; `UDP_BLOCKED` when no `READY` comes), and registering again, in the
//!   background, after the connection is lost.
//! - [`readers`]: the three reader threads, and the messages they hand the loop.
//! - this file: [`run`], the [`Client`] the loop owns, the loop itself ([`Client::serve`]),
//!   and what each server event and each tick sets off ([`Client::on_event`],
//!   [`Client::on_tick`]).
//! - [`commands`]: what the user types (`@chat`, `@show_list`, `@nat`, `@awake`, `@exit`), and a hint
//!   for a mistyped command.
//! - [`outgoing`]: a chat numbered, stamped, and retransmitted until it is acknowledged.
//! - [`transport`]: how a chat leaves (direct, or through the server's `RELAY`), and what
//!   each datagram that arrives does: a chat is shown and acknowledged, an acknowledgement
//!   ends a retransmission, a probe is answered, an answer validates a path.
//! - [`paths`]: where the punch is decided and the relay chosen: each peer's candidate
//!   addresses, their validation by probes, and the route each message takes.
//! - [`peers`]: who is online.
//! - [`inbound`]: what a peer sent, shown once and in order.
//! - [`reports`]: what the user is told about messages: each one shown, and those not
//!   confirmed or not sent.
//! - [`awake`]: Asleep and Awake: the Awake request, and answering the server's challenges.
//! - [`discovery`]: NAT discovery: how our NAT behaves, said once at start (and by `@nat`),
//!   told to the server for the others, and used by [`paths`] to skip a punch that cannot
//!   work.
//! - [`prediction`]: port prediction, for a pair that a plain punch cannot connect but a
//!   guess can (a symmetric NAT and a home router): the one place with more UDP sockets,
//!   and a receive thread more, than the three readers above; see its doc for why, and how
//!   it stays bounded (`--no-port-prediction` switches it off).
//! - [`link`]: the link to the server: requests, announcements, losing it,
//!   getting it back, and leaving.
//! - [`rtt`]: how long to wait for a peer's answer: its measured round trip.
//!
//! A message to a peer waits for a validated path ([`paths`]), goes on it or through the
//! server's relay, is retransmitted until acknowledged, and is shown at the other end once,
//! in order ([`outgoing`], [`inbound`]). While the server is away, direct paths carry on, and
//! the client registers again by itself.
//!
//! Asleep and Awake (the course's rubric): a client started with `--asleep` is registered
//! over TCP but has told the server no UDP endpoint, so nobody can chat with it. `@awake`
//! sends the Awake request over UDP, repeated until the server's `AWAKE` line for us comes
//! back over TCP; a `@chat` typed while Asleep sends the Awake request first and the chat
//! once we are awake, in that order ([`awake`]).

mod awake;
mod commands;
mod discovery;
mod inbound;
mod link;
mod outgoing;
mod paths;
mod peers;
mod prediction;
mod readers;
mod reports;
mod rtt;
mod session;
mod transport;

use crate::failure::Failure;
use crate::lines::clean;
use crate::nonce::{Nonce, Nonces};
use crate::wire::{Announce, Event, Public};
use awake::{Answer, Waking};
use commands::COMMANDS;
use crossbeam_channel::{select, tick, Receiver, Sender};
use discovery::{Discovery, Found};
use outgoing::Outgoing;
use peers::Peers;
use readers::{FromPeer, FromServer, FromUdp, Input};
use reports::{report_unconfirmed, show, Gone};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use transport::{probes_due, Via};

/// How the client runs: from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// The registration server's host name or address.
    pub server: String,
    /// Its TCP port, which is its UDP port too.
    pub port: u16,
    /// UDP port to chat on; when taken, any free one.
    pub udp_port: u16,
    /// When `None`, asked for at the terminal.
    pub id: Option<String>,
    /// How often to tell the server over UDP that we are still here (and keep our NAT's
    /// mapping open): well inside the server's timeout, and a NAT's.
    pub keepalive: Duration,
    /// Register Asleep: listed, but without a UDP endpoint until `@awake` (or a `@chat`).
    pub asleep: bool,
    /// Try port prediction with a peer whose NAT and ours no plain punch can connect
    /// (`--no-port-prediction`: never; such a peer is relayed at once).
    pub predict: bool,
}

/// Registers, then runs the event loop until the user leaves (`Ok`) or the server goes.
pub fn run(config: Config) -> Result<(), Failure> {
    let session = session::start(&config)?;
    let mut client = Client {
        id: session.me.id.clone(),
        nonces: session.nonces,
        server: session.server_addr,
        tcp: Some(session.tcp),
        to_loop: session.to_loop,
        generation: 0,
        udp: session.udp,
        to_loop_udp: session.to_loop_udp,
        peers: Peers::new(session.me, config.predict),
        outgoing: Outgoing::new(session.stamps),
        keepalive: config.keepalive,
        next_keepalive: Instant::now() + config.keepalive,
        waking: None,
        challenge: session.challenge,
        answering: None,
        last_error: None,
        discovery: None,
        nat: None,
    };
    for info in session.list {
        if info.id != client.id {
            client.peers.insert(info);
        }
    }
    match client.peers.me.public {
        Public::At(public) => {
            crate::say!("Registered as {}; public endpoint {public}.", client.id)
        }
        Public::Relayed => crate::say!(
            "Registered as {}, but our UDP seems blocked on the way to the server at {} (no \
             answer to our announcement in {} s): we stay registered, and our chats go through \
             the server.",
            client.id,
            client.server,
            session::BLOCKED_AFTER.as_secs()
        ),
        Public::Asleep => crate::say!(
            "Registered as {} and Asleep: the server knows our ID, not yet our UDP endpoint, \
             so nobody can chat with us. @awake wakes us (a @chat does too).",
            client.id
        ),
    }
    client.show_list();
    crate::say!("Commands: {COMMANDS}");
    client.discover(Instant::now())?;
    client.run(session.input, session.from_server, session.from_peers)
}

/// Everything the event loop owns.
struct Client {
    /// Our ID, as registered.
    id: String,
    /// Where probe nonces come from.
    nonces: Nonces,
    /// The server's address: TCP and UDP share it.
    server: SocketAddr,
    /// The connection to the server; `None` while it is lost and a reconnect thread is
    /// registering again.
    tcp: Option<TcpStream>,
    /// For the reconnect thread, to reach the loop.
    to_loop: Sender<FromServer>,
    /// Which connection to the server this is (0, then one more each time we register
    /// again): the end of an older one is old news.
    generation: u64,
    /// Our UDP socket: chats, acknowledgements and probes to peers, and announcements to
    /// the server, all leave from it (the UDP thread reads it through a clone), except what
    /// goes to a peer that port prediction reached through a socket of its own.
    udp: UdpSocket,
    /// For port prediction's threads, to hand the loop what they receive.
    to_loop_udp: Sender<FromUdp>,
    /// Ourselves and everyone else online, each with its paths and what it sent us.
    peers: Peers,
    /// Our messages until they are acknowledged, or reported.
    outgoing: Outgoing,
    /// How often to say `ALIVE` to the server (`--keepalive-secs`), and when next.
    keepalive: Duration,
    next_keepalive: Instant,
    /// An Awake request waiting for the server's answer.
    waking: Option<Waking>,
    /// The server's last challenge while we wake, or before (`WELCOME`'s, when we registered
    /// Asleep): sent back with each Awake request.
    challenge: Option<Nonce>,
    /// Awake, the answer to the server's last challenge, sent again until it arrives.
    answering: Option<Answer>,
    /// The server's last `ERROR` line: the reason, if it then closes the connection.
    last_error: Option<String>,
    /// Our NAT discovery, while it runs.
    discovery: Option<Discovery>,
    /// What it found, once it has.
    nat: Option<Found>,
}

impl Client {
    /// Runs the event loop until the user leaves (`Ok`) or the session fails; either way,
    /// chats still held for an Awake request that never came back are reported.
    fn run(
        mut self,
        input: Receiver<Input>,
        from_server: Receiver<FromServer>,
        from_peers: Receiver<FromUdp>,
    ) -> Result<(), Failure> {
        let ended = self.serve(&input, &from_server, &from_peers);
        self.report_unsent(match ended {
            Ok(()) => "the client ended before the server answered our Awake request",
            Err(_) => "the connection to the server ended first",
        });
        ended?;
        self.exit(&from_server)
    }

    /// Reacts to whatever comes first, until the user leaves (`Ok`) or the server goes.
    fn serve(
        &mut self,
        input: &Receiver<Input>,
        from_server: &Receiver<FromServer>,
        from_peers: &Receiver<FromUdp>,
    ) -> Result<(), Failure> {
        let ticker = tick(Duration::from_millis(50));
        loop {
            select! {
                recv(input) -> input => match input {
                    Ok(Input::Line(line)) => {
                        if !self.command(line.trim())? {
                            return Ok(());
                        }
                    }
                    Ok(Input::Interrupt) => {
                        crate::output::end_interrupted_line();
                        return Ok(());
                    }
                    Ok(Input::End) | Err(_) => return Ok(()),
                },
                recv(from_server) -> event => match event {
                    Ok(FromServer::Event(event)) => self.on_event(event)?,
                    Ok(FromServer::Closed(generation)) if generation != self.generation => {}
                    Ok(FromServer::Closed(_)) | Err(_) => self.lost()?,
                    Ok(FromServer::Back(back)) => self.back(back)?,
                    Ok(FromServer::Taken) => {
                        return Err(Failure::runtime(format!(
                            "the server at {} has said for {} s that the ID '{}' is in use by \
                             another client; start the client again with another ID.",
                            self.server,
                            session::ID_PATIENCE.as_secs(),
                            self.id
                        )))
                    }
                },
                recv(from_peers) -> datagram => match datagram {
                    Ok(FromUdp::Peer(FromPeer { datagram, from })) => {
                        self.on_datagram(datagram, Via::Direct(from))?;
                    }
                    Ok(FromUdp::NatOpen(open)) => self.on_nat_open(&open.nonce)?,
                    Ok(FromUdp::Predicted(hit)) => self.on_hit(hit)?,
                    Err(_) => {}
                },
                recv(ticker) -> _ => self.on_tick(Instant::now())?,
            }
        }
    }

    /// What the server tells us, as it comes: a peer joins, wakes, moves or leaves; a
    /// challenge; a punch to start; a datagram relayed to us; an error.
    fn on_event(&mut self, event: Event) -> Result<(), Failure> {
        match event {
            Event::Joined(info) => {
                match info.public {
                    Public::At(public) => crate::say!("{} joined ({public})", info.id),
                    Public::Asleep => crate::say!("{} joined (Asleep)", info.id),
                    Public::Relayed => crate::say!(
                        "{} joined (relayed: its UDP is blocked, so its chats go through the \
                         server)",
                        info.id
                    ),
                }
                self.peers.insert(info);
            }
            Event::Awake { id, public } if id == self.id => self.woke(public)?,
            Event::Awake { id, public } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    crate::say!("{id} is awake ({public})");
                    if peer.info.public != Public::At(public) {
                        peer.relocate(Public::At(public));
                    }
                }
            }
            Event::Challenge { nonce } => self.on_challenge(nonce),
            Event::Left { id, reason } => {
                self.peers.remove(&id);
                report_unconfirmed(self.outgoing.forget(&id), &Gone::PeerLeft);
                crate::say!("{id} left ({})", reason.as_str());
            }
            Event::Moved { id, public } if id == self.id => {
                self.answering = None;
                self.peers.set_mine(Public::At(public));
                crate::say!(
                    "The server now sees our UDP endpoint as {public} (our NAT gave us a new \
                     mapping)."
                );
            }
            Event::Moved { id, public } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    crate::say!("{id} moved to {public}");
                    peer.relocate(Public::At(public));
                }
            }
            Event::Punch { peer: id, key } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    let now = Instant::now();
                    peer.punch(key, &mut self.nonces, now);
                    // At once, not at the next tick: the peer got its PUNCH at the same
                    // moment, and the closer together the two first probes leave, the likelier
                    // each opens its own NAT before the other's arrives.
                    let probes = probes_due(peer, &self.id, now);
                    self.send_probes(&id, probes);
                    self.predict(&id, now);
                }
            }
            Event::Relayed { datagram } => self.on_datagram(datagram, Via::Relay)?,
            Event::NatTest { alt } => self.on_nat_test(alt)?,
            Event::NatSeen { port, seen } => self.on_nat_seen(port, seen)?,
            Event::Nat { id, kind } if id != self.id => self.peers.set_nat(&id, kind),
            Event::Nat { .. } => {}
            Event::Error { message } => {
                let message = clean(&message);
                crate::say!("Server: {message}");
                self.last_error = Some(message);
            }
            // Only valid during registration; a server that sends them later is ignored.
            Event::Welcome { .. } | Event::Ready { .. } | Event::Peer(_) | Event::ListEnd => {}
        }
        Ok(())
    }

    /// Keep-alives, Awake requests, retransmissions, give-ups and punching probes that are
    /// due.
    fn on_tick(&mut self, now: Instant) -> Result<(), Failure> {
        // Asleep or relayed, there is no endpoint to keep alive: the server does not expect
        // one, and our UDP would not get there anyway.
        let endpoint = matches!(self.peers.me.public, Public::At(_));
        if now >= self.next_keepalive && endpoint && self.tcp.is_some() {
            self.announce(Announce::Alive {
                id: self.id.clone(),
            });
            self.next_keepalive = now + self.keepalive;
        }
        self.answer_due(now);
        self.awake_due(now);
        self.discovery_due(now)?;
        let (sends, failed) = self.outgoing.due(now);
        self.transmit(sends)?;
        report_unconfirmed(failed, &Gone::TimedOut);
        let mut probes = Vec::new();
        let server = self.tcp.is_some();
        for peer in self.peers.iter_mut() {
            let rtt = self.outgoing.round_trip(&peer.info.id);
            peer.paths
                .check_doubted_path(now, &rtt, server, &mut self.nonces);
            // The peer's retransmissions go on as long as its give-up, which follows the
            // same path's round trip as ours.
            let waited = peer.inbound.due(now, rtt.give_up_after());
            if !waited.is_empty() {
                show(&peer.info.id, waited);
            }
            peer.prediction.expire(now);
            let due = probes_due(peer, &self.id, now);
            if !due.is_empty() {
                probes.push((peer.info.id.clone(), due));
            }
        }
        for (id, probes) in probes {
            self.send_probes(&id, probes);
        }
        Ok(())
    }
}
