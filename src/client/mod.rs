//! `natchat client`: registers with the server, then chats with peers over UDP.
//!
//! Three reader threads turn the outside world into messages on channels, and one loop owns
//! all the client's state and reacts to them, so nothing here needs a lock:
//!
//! ```text
//!  stdin thread ──── Input ──────┐
//!  TCP thread ────── FromServer ─┤   (after a lost connection: the reconnect thread, which
//!  UDP thread ────── FromPeer ───┼──▶ registers again, then reads the new connection)
//!  ticker (50 ms) ───────────────┘
//!        event loop (select!) ──▶ stdout, TCP writes, UDP sends
//!        owns: Peers (paths: peers.rs), Outgoing (outgoing.rs) and each peer's Inbound
//!        (inbound.rs)
//! ```
//!
//! A message to a peer waits for a validated path (peers.rs), goes on it or through the
//! server's relay, is retransmitted until acknowledged, and is shown at the other end once,
//! in order (outgoing.rs, inbound.rs). While the server is away, direct paths carry on, and
//! the client registers again by itself.
//!
//! Asleep and Awake (the course's rubric): a client started with `--asleep` is registered
//! over TCP but has told the server no UDP endpoint, so nobody can chat with it. `@awake`
//! sends the Awake request over UDP, repeated until the server's `AWAKE` line for us comes
//! back over TCP; a `@chat` typed while Asleep sends the Awake request first and the chat
//! once we are awake, in that order.

mod inbound;
mod outgoing;
mod paths;
mod peers;
mod readers;
mod rtt;
mod session;

use crate::failure::{in_words, Failure};
use crate::lines::clean;
use crate::nonce::{Nonce, Nonces};
use crate::wire::{Announce, Datagram, Event, Public, Request, MAX_TEXT};
use crossbeam_channel::{select, tick, Receiver, Sender};
use inbound::{Arrival, Shown};
use outgoing::{Outgoing, Send, Unconfirmed};
use paths::Route;
use peers::{Peer, Peers};
use readers::{FromPeer, FromServer, Input};
use session::Back;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

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
}

/// The commands, for the line shown after a mistyped one.
const COMMANDS: &str = "@show_list, @chat <id> <message>, @awake, @exit";

/// How often an unanswered Awake request is sent again, and for how long.
const AWAKE_EVERY: Duration = Duration::from_millis(250);
const AWAKE_PATIENCE: Duration = Duration::from_secs(10);

/// How often, and how long, the answer to a challenge is sent again until the server says
/// it arrived: a `HELLO` lost on the way must not leave the client unproven until it is
/// dropped for silence.
const ANSWER_EVERY: Duration = Duration::from_secs(1);
const ANSWER_PATIENCE: Duration = Duration::from_secs(10);

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
        peers: Peers::new(session.me),
        outgoing: Outgoing::new(session.stamps),
        keepalive: config.keepalive,
        next_keepalive: Instant::now() + config.keepalive,
        waking: None,
        challenge: session.challenge,
        answering: None,
        last_error: None,
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
    client.run(session.input, session.from_server, session.from_peers)
}

/// Everything the event loop owns.
struct Client {
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
    udp: UdpSocket,
    peers: Peers,
    outgoing: Outgoing,
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
}

/// An Awake request on its way: sent again every [`AWAKE_EVERY`] until the server's `AWAKE`
/// for us arrives, or [`AWAKE_PATIENCE`] has passed.
struct Waking {
    next_send: Instant,
    give_up_at: Instant,
    /// Chats typed while Asleep, sent once we are awake: (to, text).
    chats: Vec<(String, String)>,
}

/// The answer to a challenge (`HELLO <id> <nonce>`) on its way: sent every [`ANSWER_EVERY`]
/// until the server says the address is ours, or until `until`.
struct Answer {
    nonce: Nonce,
    next: Instant,
    until: Instant,
}

/// How a datagram reached us.
#[derive(Clone, Copy)]
enum Via {
    Direct(SocketAddr),
    Relay,
}

impl Client {
    /// Runs the event loop until the user leaves (`Ok`) or the session fails; either way,
    /// chats still held for an Awake request that never came back are reported.
    fn run(
        mut self,
        input: Receiver<Input>,
        from_server: Receiver<FromServer>,
        from_peers: Receiver<FromPeer>,
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
        from_peers: &Receiver<FromPeer>,
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
                    Ok(FromServer::Back(back)) => self.back(back),
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
                recv(from_peers) -> datagram => {
                    if let Ok(FromPeer { datagram, from }) = datagram {
                        self.on_datagram(datagram, Via::Direct(from))?;
                    }
                },
                recv(ticker) -> _ => self.on_tick(Instant::now())?,
            }
        }
    }

    /// Reports each chat held for an Awake request that was not answered, saying `why`.
    fn report_unsent(&mut self, why: &str) {
        for (to, text) in self.waking.take().map(|w| w.chats).unwrap_or_default() {
            crate::say!("Message to {to} was not sent ({why}): [{}]", clean(&text));
        }
    }

    /// One line typed by the user. Returns false for `@exit`.
    fn command(&mut self, line: &str) -> Result<bool, Failure> {
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let alone = rest.trim().is_empty();
        match command {
            "" => {}
            "@chat" => self.chat(rest.trim_start())?,
            "@show_list" | "@awake" | "@exit" if !alone => {
                crate::say!("Usage: {command}, with nothing after it; nothing was done.")
            }
            "@show_list" => self.show_list(),
            "@awake" => self.wake(Instant::now()),
            "@exit" => return Ok(false),
            other => match meant(other) {
                // Words after it only for the one command that takes any.
                Some(command) if command == "@chat" && !alone => crate::say!(
                    "Unknown command '{}'. Did you mean '@chat {}'?",
                    clean(other),
                    clean(rest.trim())
                ),
                Some(command) => crate::say!(
                    "Unknown command '{}'. Did you mean '{command}'?",
                    clean(other)
                ),
                None => crate::say!("Unknown command '{}'. Commands: {COMMANDS}", clean(other)),
            },
        }
        Ok(true)
    }

    fn chat(&mut self, args: &str) -> Result<(), Failure> {
        let (to, text) = args.split_once(' ').unwrap_or((args, ""));
        let asleep = self.peers.get(to).map(|peer| peer.is_asleep());
        if to.is_empty() || text.is_empty() {
            crate::say!("Usage: @chat <id> <message>");
        } else if to == self.id {
            crate::say!("That is you; @show_list shows who else is online.");
        } else if asleep.is_none() {
            crate::say!(
                "No client named '{}' is online; @show_list shows who is.",
                clean(to)
            );
        } else if asleep == Some(true) {
            crate::say!(
                "{to} is Asleep: it has no UDP endpoint yet, so it cannot receive chats. \
                 Message not sent; you will see '{to} is awake' when it can."
            );
        } else if text.len() > MAX_TEXT {
            crate::say!(
                "Message too long: {} bytes, at most {MAX_TEXT}.",
                text.len()
            );
        } else if self.peers.me.public == Public::Asleep {
            // Asleep ourselves: the Awake request goes first, the chat once it is answered.
            let now = Instant::now();
            let waking = self.waking.is_some();
            self.wake(now);
            if !waking {
                crate::say!("Waking up first: the message follows once the server has answered.");
            }
            if let Some(waking) = &mut self.waking {
                waking.chats.push((to.to_string(), text.to_string()));
            }
        } else {
            let sends = self.outgoing.queue(to, text.to_string(), Instant::now());
            self.transmit(sends)?;
        }
        Ok(())
    }

    /// Sends the Awake request (and again, until answered: see [`Client::on_tick`]).
    fn wake(&mut self, now: Instant) {
        self.announce_awake();
        if self.waking.is_none() {
            crate::say!("Sent the Awake request to the server.");
        }
        let chats = self.waking.take().map(|w| w.chats).unwrap_or_default();
        self.waking = Some(Waking {
            next_send: now + AWAKE_EVERY,
            give_up_at: now + AWAKE_PATIENCE,
            chats,
        });
    }

    /// The server's `AWAKE` for us: our request arrived, and this is the endpoint it saw.
    /// Chats typed while we were Asleep go now. (A request sent again before the answer
    /// came is answered again: that answer is no news, and is not shown.)
    fn woke(&mut self, public: SocketAddr) -> Result<(), Failure> {
        let was_asleep = self.peers.me.public == Public::Asleep;
        if was_asleep {
            self.next_keepalive = Instant::now() + self.keepalive;
        }
        let news = self.waking.is_some() || self.peers.me.public != Public::At(public);
        self.peers.set_mine(Public::At(public));
        self.challenge = None;
        if news {
            crate::say!("Awake: the server sees our UDP endpoint as {public}.");
        }
        let Some(waking) = self.waking.take() else {
            return Ok(());
        };
        let now = Instant::now();
        for (to, text) in waking.chats {
            let sends = self.outgoing.queue(&to, text, now);
            self.transmit(sends)?;
        }
        Ok(())
    }

    /// Sends each message on the route its peer's path chooses.
    fn transmit(&mut self, sends: Vec<Send>) -> Result<(), Failure> {
        let now = Instant::now();
        for send in sends {
            let Some(peer) = self.peers.get_mut(&send.to) else {
                continue;
            };
            let server = self.tcp.is_some();
            let round_trip = self.outgoing.round_trip(&send.to);
            let (route, ask_punch) =
                peer.paths
                    .route(send.waited, &round_trip, now, server, &mut self.nonces);
            let number = self.outgoing.numbered(&send.to, send.seq);
            let datagram = Datagram::chat(&self.id, number, send.stamp, send.text, peer.key());
            if ask_punch {
                self.request(&Request::Punch {
                    peer: send.to.clone(),
                })?;
            }
            let sent = match route {
                Route::Direct(addr) => {
                    self.send_udp(&datagram.to_string(), addr);
                    true
                }
                Route::Relay if server => {
                    let to = send.to.clone();
                    self.request(&Request::Relay { to, datagram })?;
                    true
                }
                // No validated path yet, or only the relay and the server is away.
                Route::Relay | Route::Hold => false,
            };
            if sent {
                self.outgoing.sent(&send.to, send.seq, now);
            }
        }
        Ok(())
    }

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
            Event::Punch { peer, key } => {
                if let Some(peer) = self.peers.get_mut(&peer) {
                    let now = Instant::now();
                    peer.punch(key, &mut self.nonces, now);
                    // At once, not at the next tick: the peer got its PUNCH at the same
                    // moment, and the closer together the two first probes leave, the likelier
                    // each opens its own NAT before the other's arrives.
                    let probes = probes_due(peer, &self.id, now);
                    self.send_probes(probes);
                }
            }
            Event::Relayed { datagram } => self.on_datagram(datagram, Via::Relay)?,
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

    /// A datagram from a peer, straight or through the relay (which vouches for its sender).
    /// Straight, it must prove itself: a chat or a probe by its tag, an acknowledgement by
    /// the stamp it echoes; anything else, from a peer we do not know, or before we share a
    /// key with it, is dropped.
    fn on_datagram(&mut self, datagram: Datagram, via: Via) -> Result<(), Failure> {
        let my_private = self.peers.me.private;
        let Some(peer) = self.peers.get_mut(datagram.from()) else {
            return Ok(());
        };
        if let Via::Direct(_) = via {
            if !peer.key().is_some_and(|key| datagram.tagged_by(key)) {
                return Ok(());
            }
        }
        let from = peer.info.id.clone();
        let now = Instant::now();
        match datagram {
            Datagram::Chat {
                number,
                stamp,
                text,
                ..
            } => {
                let seq = number.seq;
                let (arrival, shown) = peer.inbound.arrive(number, text, now);
                if arrival == Arrival::Outside {
                    return Ok(());
                }
                show(&from, shown);
                let ack = Datagram::Ack {
                    from: self.id.clone(),
                    seq,
                    stamp,
                };
                self.reply(ack, &from, via)?;
            }
            Datagram::Ack { seq, stamp, .. } => {
                let acked = self.outgoing.acknowledge(&from, seq, &stamp, now);
                if let (true, Via::Direct(addr)) = (acked.confirmed, via) {
                    peer.paths.heard(addr);
                }
                if let Some(text) = acked.late {
                    crate::say!(
                        "Message to {from} was delivered after all: [{}]",
                        clean(&text)
                    );
                }
                self.transmit(acked.sends)?;
            }
            Datagram::Probe { nonce, .. } => {
                let Via::Direct(addr) = via else {
                    return Ok(());
                };
                peer.paths.probed_from(addr, &mut self.nonces, now);
                if let Some(key) = peer.key() {
                    let answer = Datagram::probe_ack(&self.id, nonce, addr, key);
                    self.send_udp(&answer.to_string(), addr);
                }
            }
            Datagram::ProbeAck { nonce, seen, .. } => {
                let Via::Direct(addr) = via else {
                    return Ok(());
                };
                let Some(answered) = peer.paths.answered(addr, &nonce, seen, my_private, now)
                else {
                    return Ok(());
                };
                self.outgoing.measured(&from, answered.round_trip);
                if answered.first_path {
                    // A path at last: what was held or relayed goes on it now.
                    let sends = self.outgoing.resend(&from, now);
                    self.transmit(sends)?;
                }
            }
        }
        Ok(())
    }

    /// Answers on the path the datagram came by.
    fn reply(&mut self, datagram: Datagram, to: &str, via: Via) -> Result<(), Failure> {
        match via {
            Via::Direct(addr) => {
                self.send_udp(&datagram.to_string(), addr);
                Ok(())
            }
            Via::Relay => self.request(&Request::Relay {
                to: to.to_string(),
                datagram,
            }),
        }
    }

    /// The server challenges an address that claimed our ID. If we are awake, or waking,
    /// it may be ours (a NAT gave us a new mapping; our Awake request came from a new
    /// address): prove it from our socket, as an Awake request if we are making one.
    /// Asleep and not waking, it was not us: ignored, so that nobody else can wake us.
    fn on_challenge(&mut self, nonce: Nonce) {
        if self.waking.is_some() {
            self.challenge = Some(nonce);
            self.announce_awake();
        } else if matches!(self.peers.me.public, Public::At(_)) {
            let now = Instant::now();
            self.answering = Some(Answer {
                nonce,
                next: now,
                until: now + ANSWER_PATIENCE,
            });
            self.answer_due(now);
        } else {
            // Kept for our own Awake request, whenever it comes: it saves a round trip.
            self.challenge = Some(nonce);
        }
    }

    /// Sends the answer to the server's challenge, if one is due.
    fn answer_due(&mut self, now: Instant) {
        let Some(answer) = self.answering.as_mut().filter(|a| a.next <= now) else {
            return;
        };
        if now >= answer.until {
            self.answering = None;
            return;
        }
        answer.next = now + ANSWER_EVERY;
        let hello = Announce::Hello {
            id: self.id.clone(),
            nonce: answer.nonce,
        };
        self.announce(hello);
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
        if let Some(waking) = self.waking.as_mut().filter(|_| self.tcp.is_none()) {
            // The server is away: the Awake request waits for us to be registered again.
            waking.give_up_at = now + AWAKE_PATIENCE;
        } else if let Some(waking) = &mut self.waking {
            if now >= waking.give_up_at {
                let still = if self.peers.me.public == Public::Asleep {
                    " We are still Asleep."
                } else {
                    ""
                };
                crate::say!(
                    "The server did not answer our Awake request within {} s; is UDP blocked \
                     on the way?{still}",
                    AWAKE_PATIENCE.as_secs()
                );
                self.report_unsent("no answer to our Awake request");
            } else if now >= waking.next_send {
                waking.next_send = now + AWAKE_EVERY;
                self.announce_awake();
            }
        }
        let (sends, failed) = self.outgoing.due(now);
        self.transmit(sends)?;
        report_unconfirmed(failed, &Gone::TimedOut);
        let mut probes = Vec::new();
        let server = self.tcp.is_some();
        for peer in self.peers.iter_mut() {
            let allowed = self.outgoing.round_trip(&peer.info.id).silence_allowed();
            peer.paths.give_up_silent_path(now, allowed, server);
            let waited = peer.inbound.due(now);
            if !waited.is_empty() {
                show(&peer.info.id, waited);
            }
            probes.extend(probes_due(peer, &self.id, now));
        }
        self.send_probes(probes);
        Ok(())
    }

    fn send_probes(&self, probes: Vec<(SocketAddr, Datagram)>) {
        for (addr, probe) in probes {
            self.send_udp(&probe.to_string(), addr);
        }
    }

    /// Everyone online, each with its status: `<id> <public> Awake  private=<private>  path=`
    /// for an awake peer (`relayed` for its public endpoint if its UDP is blocked), `<id>
    /// Asleep` for one with no endpoint yet.
    fn show_list(&self) {
        let me = &self.peers.me;
        crate::say!("Online ({}):", self.peers.len() + 1);
        match me.public {
            Public::Asleep => crate::say!("{} Asleep  (you)", me.id),
            public => crate::say!("{} {public} Awake  private={}  (you)", me.id, me.private),
        }
        for peer in self.peers.iter() {
            let info = &peer.info;
            match info.public {
                Public::Asleep => crate::say!("{} Asleep", info.id),
                public => crate::say!(
                    "{} {public} Awake  private={}  path={}",
                    info.id,
                    info.private,
                    peer.paths.label()
                ),
            }
        }
    }

    fn announce(&self, announce: Announce) {
        self.send_udp(&announce.to_string(), self.server);
    }

    /// The Awake request, with the nonce of the server's last challenge if one came: the
    /// server believes an Awake request from an address it does not know as ours only with
    /// it.
    fn announce_awake(&self) {
        self.announce(Announce::Awake {
            id: self.id.clone(),
            nonce: self.challenge,
        });
    }

    /// UDP is best effort: a send that fails is like a datagram lost on the way.
    fn send_udp(&self, text: &str, to: SocketAddr) {
        let _ = self.udp.send_to(text.as_bytes(), to);
    }

    /// Sends one request line, with one system call (`writeln!` on a socket would make
    /// several). While the server is away, nothing is sent: a relayed chat stays in flight
    /// (sent again, or reported not confirmed), a punch waits for the next try.
    fn request(&mut self, request: &Request) -> Result<(), Failure> {
        let Some(tcp) = self.tcp.as_mut() else {
            return Ok(());
        };
        if tcp.write_all(format!("{request}\n").as_bytes()).is_err() {
            self.lost()?;
        }
        Ok(())
    }

    /// The connection to the server ended: says so in one line, with the server's reason if
    /// it gave one, keeps every peer and path (direct chats go on), and starts registering
    /// again in the background.
    fn lost(&mut self) -> Result<(), Failure> {
        let Some(tcp) = self.tcp.take() else {
            return Ok(());
        };
        // Closed for good, both ways, so that the server drops our old registration as soon
        // as it can read, and our new one is not refused as a duplicate of it.
        let _ = tcp.shutdown(std::net::Shutdown::Both);
        let server = self.server;
        match self.last_error.take() {
            Some(why) => crate::say!(
                "The server at {server} closed our connection ({why}); registering again."
            ),
            None => crate::say!(
                "Lost the connection to the server at {server}; registering again when it \
                 answers. Meanwhile peers on direct paths still get our chats."
            ),
        }
        let udp = self.udp.try_clone().map_err(|e| {
            Failure::runtime(format!("cannot share the UDP socket: {}", in_words(&e)))
        })?;
        let asleep = self.peers.me.public == Public::Asleep;
        let next = self.generation + 1;
        session::spawn_reconnect(
            server,
            self.id.clone(),
            asleep,
            udp,
            self.to_loop.clone(),
            next,
        )
    }

    /// Registered again (the server restarted, or had dropped us): the peers it lists are
    /// kept, with their paths and what they sent, the others are dropped until they come
    /// back, and a new public endpoint moves what must move.
    fn back(&mut self, back: Back) {
        self.tcp = Some(back.tcp);
        self.generation += 1;
        self.peers.set_mine(back.public);
        if back.public == Public::Asleep {
            self.challenge = Some(back.welcome);
        }
        let listed: Vec<&str> = back.list.iter().map(|info| info.id.as_str()).collect();
        self.peers.retain(|id| listed.contains(&id));
        for info in back.list {
            if info.id == self.id {
                continue;
            }
            match self.peers.get_mut(&info.id) {
                Some(peer) if peer.info.public != info.public => peer.relocate(info.public),
                Some(_) => {}
                None => self.peers.insert(info),
            }
        }
        let status = match self.peers.me.public {
            Public::At(public) => format!("public endpoint {public}"),
            Public::Relayed => {
                "relayed: our UDP seems blocked, so our chats go through the server".to_string()
            }
            Public::Asleep => "still Asleep".to_string(),
        };
        crate::say!(
            "Registered again with the server at {} as {} ({status}).",
            self.server,
            self.id
        );
    }

    /// Unregisters and waits (briefly) for the server to close the connection, so that the
    /// `EXIT` is surely read before this process goes.
    fn exit(mut self, from_server: &Receiver<FromServer>) -> Result<(), Failure> {
        if self.tcp.is_some() && self.request(&Request::Exit).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Ok(FromServer::Event(_)) = from_server.recv_deadline(deadline) {}
        }
        for peer in self
            .peers
            .iter()
            .map(|p| p.info.id.clone())
            .collect::<Vec<_>>()
        {
            report_unconfirmed(self.outgoing.forget(&peer), &Gone::Leaving);
        }
        crate::say!("Successfully Terminated");
        Ok(())
    }
}

/// The command a mistyped one most likely meant: `chat`, `@Chat`, `@show-list` and
/// `@showlist` are `@chat`, `@chat`, `@show_list`, `@show_list`.
fn meant(typed: &str) -> Option<&'static str> {
    let squashed: String = typed
        .trim_start_matches('@')
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect();
    ["@show_list", "@chat", "@awake", "@exit"]
        .into_iter()
        .find(|command| command[1..].replace('_', "") == squashed)
}

/// The probes due to `peer` now, tagged as from `me` (none before we share a key).
fn probes_due(peer: &mut Peer, me: &str, now: Instant) -> Vec<(SocketAddr, Datagram)> {
    let Some(key) = peer.key().copied() else {
        return Vec::new();
    };
    let due = peer.paths.probes_due(now).into_iter();
    due.map(|(addr, nonce)| (addr, Datagram::probe(me, nonce, &key)))
        .collect()
}

/// Prints what a peer sent, in order: messages, late ones, and gaps that were waited out.
fn show(from: &str, shown: Vec<Shown>) {
    for item in shown {
        match item {
            Shown::Text(text) => crate::say!("From {from} [{}]", clean(&text)),
            Shown::Late(text) => crate::say!(
                "From {from} [{}] (late: sent before messages shown already)",
                clean(&text)
            ),
            Shown::Gap(1) => crate::say!("(a message from {from} before the next has not arrived)"),
            Shown::Gap(n) => {
                crate::say!("({n} messages from {from} before the next have not arrived)")
            }
        }
    }
}

/// Why messages end without a confirmation.
enum Gone {
    /// No acknowledgement came in time.
    TimedOut,
    /// The peer left.
    PeerLeft,
    /// We are leaving.
    Leaving,
}

/// Reports each message no acknowledgement confirmed, saying only what is known: one that
/// was sent may have arrived; only one that never left surely did not.
fn report_unconfirmed(messages: Vec<Unconfirmed>, gone: &Gone) {
    for Unconfirmed {
        to,
        text,
        sent,
        waited,
    } in messages
    {
        let text = clean(&text);
        let waited = waited.as_secs();
        match (gone, sent) {
            (Gone::TimedOut, true) => crate::say!(
                "Message to {to} not confirmed yet (no acknowledgement in {waited} s; it may \
                 still arrive): [{text}]"
            ),
            (Gone::TimedOut, false) => crate::say!(
                "Message to {to} not sent: with the server away, no path to {to} was found in \
                 {waited} s: [{text}]"
            ),
            (Gone::PeerLeft, true) => {
                crate::say!("Message to {to} not confirmed before {to} left: [{text}]")
            }
            (Gone::PeerLeft, false) => {
                crate::say!("Message to {to} not sent: {to} left first: [{text}]")
            }
            (Gone::Leaving, true) => {
                crate::say!("Message to {to} not confirmed before we left: [{text}]")
            }
            (Gone::Leaving, false) => {
                crate::say!("Message to {to} not sent: we left first: [{text}]")
            }
        }
    }
}
