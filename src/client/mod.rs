//! `natchat client`: registers with the server, then chats with peers over UDP.
//!
//! Three reader threads turn the outside world into messages on channels, and one loop owns
//! all the client's state and reacts to them, so nothing here needs a lock:
//!
//! ```text
//!  stdin thread ──── Input ──────┐
//!  TCP thread ────── FromServer ─┤
//!  UDP thread ────── FromPeer ───┼──▶ event loop (select!) ──▶ stdout, TCP writes, UDP sends
//!  ticker (50 ms) ───────────────┘    owns: Peers (paths), Outgoing (retransmits)
//! ```

mod delivery;
mod peers;
mod session;

use crate::failure::Failure;
use crate::lines::clean;
use crate::wire::{Announce, AnnounceKind, Datagram, Event, Request, Secret, MAX_TEXT};
use crossbeam_channel::{select, tick, Receiver};
use delivery::{Outgoing, Send, Undelivered};
use peers::{Peers, Route};
use session::{FromPeer, FromServer, Input};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// How the client runs: from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: String,
    pub port: u16,
    /// UDP port to chat on; when taken, any free one.
    pub udp_port: u16,
    /// When `None`, asked for at the terminal.
    pub id: Option<String>,
    pub keepalive: Duration,
}

/// The commands, for the line shown after a mistyped one.
const COMMANDS: &str = "@show_list, @chat <id> <message>, @awake, @exit";

/// Registers, then runs the event loop until the user leaves (`Ok`) or the server goes.
pub fn run(config: Config) -> Result<(), Failure> {
    let session = session::start(&config)?;
    let mut client = Client {
        id: session.me.id.clone(),
        secret: session.secret,
        server: session.server_addr,
        tcp: session.tcp,
        udp: session.udp,
        peers: Peers::new(session.me),
        outgoing: Outgoing::default(),
        keepalive: config.keepalive,
        next_keepalive: Instant::now() + config.keepalive,
    };
    for info in session.list {
        if info.id != client.id {
            client.peers.insert(info);
        }
    }
    crate::say!(
        "Registered as {}; public endpoint {}.",
        client.id,
        client.peers.me.public
    );
    client.show_list();
    crate::say!("Commands: {COMMANDS}");
    client.run(session.input, session.from_server, session.from_peers)
}

/// Everything the event loop owns.
struct Client {
    id: String,
    secret: Secret,
    /// The server's address: TCP and UDP share it.
    server: SocketAddr,
    tcp: TcpStream,
    udp: UdpSocket,
    peers: Peers,
    outgoing: Outgoing,
    keepalive: Duration,
    next_keepalive: Instant,
}

/// How a datagram reached us.
#[derive(Clone, Copy)]
enum Via {
    Direct(SocketAddr),
    Relay,
}

impl Client {
    fn run(
        mut self,
        input: Receiver<Input>,
        from_server: Receiver<FromServer>,
        from_peers: Receiver<FromPeer>,
    ) -> Result<(), Failure> {
        let ticker = tick(Duration::from_millis(50));
        loop {
            select! {
                recv(input) -> input => match input {
                    Ok(Input::Line(line)) => {
                        if !self.command(line.trim())? {
                            return self.exit(&from_server);
                        }
                    }
                    Ok(Input::End) | Ok(Input::Interrupt) | Err(_) => return self.exit(&from_server),
                },
                recv(from_server) -> event => match event {
                    Ok(FromServer::Event(event)) => self.on_event(event)?,
                    Ok(FromServer::Closed) | Err(_) => return Err(self.server_lost()),
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

    /// One line typed by the user. Returns false for `@exit`.
    fn command(&mut self, line: &str) -> Result<bool, Failure> {
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        match command {
            "" => {}
            "@show_list" => self.show_list(),
            "@chat" => self.chat(rest.trim_start())?,
            "@awake" => {
                self.announce(AnnounceKind::Awake);
                crate::say!("Announced our UDP endpoint to the server again.");
            }
            "@exit" => return Ok(false),
            other => crate::say!("Unknown command '{}'. Commands: {COMMANDS}", clean(other)),
        }
        Ok(true)
    }

    fn chat(&mut self, args: &str) -> Result<(), Failure> {
        let (to, text) = args.split_once(' ').unwrap_or((args, ""));
        if to.is_empty() || text.is_empty() {
            crate::say!("Usage: @chat <id> <message>");
        } else if to == self.id {
            crate::say!("That is you; @show_list shows who else is online.");
        } else if !self.peers.contains(to) {
            crate::say!(
                "No client named '{}' is online; @show_list shows who is.",
                clean(to)
            );
        } else if text.len() > MAX_TEXT {
            crate::say!(
                "Message too long: {} bytes, at most {MAX_TEXT}.",
                text.len()
            );
        } else {
            let sends = self.outgoing.queue(to, text.to_string(), Instant::now());
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
            let (route, ask_punch) = peer.route(send.age, now);
            let datagram = Datagram::Chat {
                from: self.id.clone(),
                seq: send.seq,
                text: send.text,
            };
            if ask_punch {
                self.request(&Request::Punch {
                    peer: send.to.clone(),
                })?;
            }
            match route {
                Route::Direct(addr) => self.send_udp(&datagram.to_string(), addr),
                Route::Relay => self.request(&Request::Relay {
                    to: send.to,
                    datagram,
                })?,
            }
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event) -> Result<(), Failure> {
        match event {
            Event::Joined(info) => {
                crate::say!("{} joined ({})", info.id, info.public);
                self.peers.insert(info);
            }
            Event::Left { id, reason } => {
                self.peers.remove(&id);
                report_undelivered(self.outgoing.forget(&id));
                crate::say!("{id} left ({})", reason.as_str());
            }
            Event::Moved { id, public } => {
                let my_public = self.peers.me.public;
                if let Some(peer) = self.peers.get_mut(&id) {
                    crate::say!("{id} moved to {public}");
                    peer.moved(public, my_public);
                }
            }
            Event::Punch { peer } => {
                if let Some(peer) = self.peers.get_mut(&peer) {
                    peer.start_burst(Instant::now());
                }
            }
            Event::Relayed { datagram } => self.on_datagram(datagram, Via::Relay)?,
            Event::Error { message } => crate::say!("Server: {}", clean(&message)),
            // Only valid during registration; a server that sends them later is ignored.
            Event::Welcome { .. } | Event::Ready { .. } | Event::Peer(_) | Event::ListEnd => {}
        }
        Ok(())
    }

    /// A datagram from a peer, straight or through the relay. One that claims a peer we do
    /// not know, or arrives straight from an address that is not that peer's, is dropped.
    fn on_datagram(&mut self, datagram: Datagram, via: Via) -> Result<(), Failure> {
        let Some(peer) = self.peers.get_mut(datagram.from()) else {
            return Ok(());
        };
        if let Via::Direct(addr) = via {
            if !peer.sent_from(addr) {
                return Ok(());
            }
            peer.confirm_direct();
        }
        let from = peer.info.id.clone();
        match datagram {
            Datagram::Chat { seq, text, .. } => {
                if peer.received.first_time(seq) {
                    crate::say!("From {from} [{}]", clean(&text));
                }
                self.reply(
                    Datagram::Ack {
                        from: self.id.clone(),
                        seq,
                    },
                    &from,
                    via,
                )?;
            }
            Datagram::Ack { seq, .. } => {
                let sends = self.outgoing.acknowledge(&from, seq, Instant::now());
                self.transmit(sends)?;
            }
            Datagram::Probe { .. } => {
                self.reply(
                    Datagram::ProbeAck {
                        from: self.id.clone(),
                    },
                    &from,
                    via,
                )?;
            }
            Datagram::ProbeAck { .. } => {}
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

    /// Keep-alives, retransmissions, give-ups and punching probes that are due.
    fn on_tick(&mut self, now: Instant) -> Result<(), Failure> {
        if now >= self.next_keepalive {
            self.announce(AnnounceKind::Alive);
            self.next_keepalive = now + self.keepalive;
        }
        let (sends, failed) = self.outgoing.due(now);
        self.transmit(sends)?;
        report_undelivered(failed);
        let probe = Datagram::Probe {
            from: self.id.clone(),
        }
        .to_string();
        let due: Vec<SocketAddr> = self
            .peers
            .iter_mut()
            .filter_map(|p| p.probe_due(now))
            .collect();
        for addr in due {
            self.send_udp(&probe, addr);
        }
        Ok(())
    }

    fn show_list(&self) {
        let me = &self.peers.me;
        crate::say!("Online ({}):", self.peers.len() + 1);
        crate::say!("{} {}  private={}  (you)", me.id, me.public, me.private);
        for peer in self.peers.iter() {
            let info = &peer.info;
            crate::say!(
                "{} {}  private={}  path={}",
                info.id,
                info.public,
                info.private,
                peer.path_label()
            );
        }
    }

    fn announce(&self, kind: AnnounceKind) {
        let announce = Announce {
            kind,
            id: self.id.clone(),
            secret: self.secret.clone(),
        };
        self.send_udp(&announce.to_string(), self.server);
    }

    /// UDP is best effort: a send that fails is like a datagram lost on the way.
    fn send_udp(&self, text: &str, to: SocketAddr) {
        let _ = self.udp.send_to(text.as_bytes(), to);
    }

    fn request(&mut self, request: &Request) -> Result<(), Failure> {
        writeln!(self.tcp, "{request}").map_err(|_| self.server_lost())
    }

    fn server_lost(&self) -> Failure {
        Failure::runtime(format!(
            "lost the connection to the server at {}; exiting. Restart the client when the server is back.",
            self.server
        ))
    }

    /// Unregisters and waits (briefly) for the server to close the connection, so that the
    /// `EXIT` is surely read before this process goes.
    fn exit(mut self, from_server: &Receiver<FromServer>) -> Result<(), Failure> {
        if self.request(&Request::Exit).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Ok(FromServer::Event(_)) = from_server.recv_deadline(deadline) {}
        }
        for peer in self
            .peers
            .iter()
            .map(|p| p.info.id.clone())
            .collect::<Vec<_>>()
        {
            report_undelivered(self.outgoing.forget(&peer));
        }
        crate::say!("Successfully Terminated");
        Ok(())
    }
}

fn report_undelivered(failed: Vec<Undelivered>) {
    for Undelivered { to, text } in failed {
        crate::say!(
            "Message to {to} was not delivered (no acknowledgement): [{}]",
            clean(&text)
        );
    }
}
