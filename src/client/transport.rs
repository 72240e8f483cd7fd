//! How a chat leaves, and what each datagram that arrives does.
//!
//! Leaving: [`Client::transmit`] asks the peer's [`Paths`](super::paths::Paths) for a route
//! and sends the chat straight to the peer over UDP, or to the server over TCP as a `RELAY`
//! request, or holds it while a path is being probed (and asks the server for a `PUNCH` the
//! first time).
//!
//! Arriving: [`Client::on_datagram`] takes a datagram straight from a peer, or relayed by
//! the server, and acts on it. A chat is shown ([`super::inbound`] decides when) and
//! acknowledged on the path it came by; an acknowledgement stops the retransmissions
//! ([`super::outgoing`]); a probe is answered; an answer to our probe validates a path
//! ([`super::paths`]), and what was held or relayed goes on it.

use super::inbound::Arrival;
use super::outgoing::Send;
use super::paths::Route;
use super::peers::Peer;
use super::reports::show;
use super::Client;
use crate::failure::Failure;
use crate::lines::clean;
use crate::wire::{Datagram, Request};
use std::net::SocketAddr;
use std::time::Instant;

/// How a datagram reached us.
#[derive(Clone, Copy)]
pub enum Via {
    Direct(SocketAddr),
    Relay,
}

impl Client {
    /// Sends each message on the route its peer's path chooses.
    pub fn transmit(&mut self, sends: Vec<Send>) -> Result<(), Failure> {
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
                    self.send_to_peer(&send.to, &datagram.to_string(), addr);
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

    /// A datagram from a peer, straight or through the relay (which vouches for its sender).
    /// Straight, it must prove itself: a chat or a probe by its tag, an acknowledgement by
    /// the stamp it echoes; anything else, from a peer we do not know, or before we share a
    /// key with it, is dropped.
    pub fn on_datagram(&mut self, datagram: Datagram, via: Via) -> Result<(), Failure> {
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
        if let (Via::Direct(addr), Datagram::Chat { .. } | Datagram::Probe { .. }) =
            (via, &datagram)
        {
            let rtt = self.outgoing.round_trip(&from);
            peer.paths.came_straight(addr, &mut self.nonces, now, &rtt);
        }
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
                let back = match (acked.confirmed, via) {
                    (true, Via::Direct(addr)) => peer.paths.heard(addr),
                    _ => false,
                };
                if let Some(text) = acked.late {
                    crate::say!(
                        "Message to {from} was delivered after all: [{}]",
                        clean(&text)
                    );
                }
                self.transmit(acked.sends)?;
                if back {
                    // Our direct path answers again after a silence: what was given up on
                    // meanwhile goes again on the next tick, in its turn (what is in flight
                    // keeps its own timers: resending it all would double a lossy path's
                    // traffic each time a doubt ends).
                    self.outgoing.revive(&from, now);
                }
            }
            Datagram::Probe { nonce, .. } => {
                let Via::Direct(addr) = via else {
                    return Ok(());
                };
                peer.paths.probed_from(addr, &mut self.nonces, now);
                if let Some(key) = peer.key() {
                    let answer = Datagram::probe_ack(&self.id, nonce, addr, key);
                    self.send_to_peer(&from, &answer.to_string(), addr);
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
                    if let Some(how) = peer.prediction.found(now) {
                        crate::say!("Port prediction found a direct path to {from} ({how}).");
                    }
                    // A path at last: what was held or relayed goes on it now, and what was
                    // given up on lately with it, in its turn.
                    self.outgoing.revive(&from, now);
                    let sends = self.outgoing.resend(&from, now);
                    self.transmit(sends)?;
                } else if answered.back {
                    // Our direct path answers again after a silence: as for an acknowledgement.
                    self.outgoing.revive(&from, now);
                }
            }
        }
        Ok(())
    }

    /// Answers on the path the datagram came by.
    fn reply(&mut self, datagram: Datagram, to: &str, via: Via) -> Result<(), Failure> {
        match via {
            Via::Direct(addr) => {
                self.send_to_peer(to, &datagram.to_string(), addr);
                Ok(())
            }
            Via::Relay => self.request(&Request::Relay {
                to: to.to_string(),
                datagram,
            }),
        }
    }

    /// Sends probes to peer `id` (see [`probes_due`]), each to its address.
    pub fn send_probes(&self, id: &str, probes: Vec<(SocketAddr, Datagram)>) {
        for (addr, probe) in probes {
            self.send_to_peer(id, &probe.to_string(), addr);
        }
    }

    /// Sends to peer `id` at `to`: from the socket port prediction reached it through, if
    /// it did, or else from our one socket.
    fn send_to_peer(&self, id: &str, text: &str, to: SocketAddr) {
        let own = self.peers.get(id).and_then(|peer| peer.prediction.socket());
        let _ = own.unwrap_or(&self.udp).send_to(text.as_bytes(), to);
    }

    /// UDP is best effort: a send that fails is like a datagram lost on the way.
    pub fn send_udp(&self, text: &str, to: SocketAddr) {
        let _ = self.udp.send_to(text.as_bytes(), to);
    }
}

/// The probes due to `peer` now, tagged as from `me` (none before we share a key).
pub fn probes_due(peer: &mut Peer, me: &str, now: Instant) -> Vec<(SocketAddr, Datagram)> {
    let Some(key) = peer.key().copied() else {
        return Vec::new();
    };
    let due = peer.paths.probes_due(now).into_iter();
    due.map(|(addr, nonce)| (addr, Datagram::probe(me, nonce, &key)))
        .collect()
}
