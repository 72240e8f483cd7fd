//! Asleep and Awake: the Awake request, and answering the server's challenges.
//!
//! A client started with `--asleep` is registered, but the server knows no UDP endpoint of
//! it, so nobody can chat with it. `@awake` (or a first `@chat`) sends the Awake request over
//! UDP, with the nonce of the server's last challenge to us (`WELCOME`'s, or a later
//! `CHALLENGE`'s): only that nonce, which went over our own TCP connection, makes the server
//! believe the address it came from. The server answers with an `AWAKE` line for everyone,
//! us included. UDP may lose the request, so it is sent again until that answer comes
//! ([`Waking`]); chats typed in the meantime wait, and go once we are awake, in the order
//! they were typed.
//!
//! Awake, the server may challenge us again: our NAT gave us a new mapping, and the server
//! heard our keep-alive from an address it does not know as ours. We prove it is ours by
//! sending the challenge's nonce back from our socket (`HELLO`), again until the server says
//! it arrived ([`Answer`]). A challenge that comes while we are Asleep, and not waking, was
//! not caused by us: it is kept for our own Awake request, unanswered, so that nobody else
//! can wake us.

use super::Client;
use crate::failure::Failure;
use crate::nonce::Nonce;
use crate::wire::{Announce, Public};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often an unanswered Awake request is sent again, and for how long.
const AWAKE_EVERY: Duration = Duration::from_millis(250);
const AWAKE_PATIENCE: Duration = Duration::from_secs(10);

/// How often, and how long, the answer to a challenge is sent again until the server says
/// it arrived: a `HELLO` lost on the way must not leave the client unproven until it is
/// dropped for silence.
const ANSWER_EVERY: Duration = Duration::from_secs(1);
const ANSWER_PATIENCE: Duration = Duration::from_secs(10);

/// An Awake request on its way: sent again every [`AWAKE_EVERY`] until the server's `AWAKE`
/// for us arrives, or [`AWAKE_PATIENCE`] has passed.
pub struct Waking {
    next_send: Instant,
    give_up_at: Instant,
    /// Chats typed while Asleep, sent once we are awake: (to, text).
    pub chats: Vec<(String, String)>,
}

/// The answer to a challenge (`HELLO <id> <nonce>`) on its way: sent every [`ANSWER_EVERY`]
/// until the server says the address is ours, or until `until`.
pub struct Answer {
    nonce: Nonce,
    next: Instant,
    until: Instant,
}

impl Client {
    /// Sends the Awake request (and again, until answered: see [`Client::on_tick`]).
    pub fn wake(&mut self, now: Instant) {
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

    /// Sends the Awake request again, if it is due, or gives it up once
    /// [`AWAKE_PATIENCE`] has passed without an answer (and reports the chats it held).
    pub fn awake_due(&mut self, now: Instant) {
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
    }

    /// The server's `AWAKE` for us: our request arrived, and this is the endpoint it saw.
    /// Chats typed while we were Asleep go now. (A request sent again before the answer
    /// came is answered again: that answer is no news, and is not shown.)
    pub fn woke(&mut self, public: SocketAddr) -> Result<(), Failure> {
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
        if was_asleep {
            self.discover(Instant::now())?;
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

    /// The server challenges an address that claimed our ID. If we are awake, or waking,
    /// it may be ours (a NAT gave us a new mapping; our Awake request came from a new
    /// address): prove it from our socket, as an Awake request if we are making one.
    /// Asleep and not waking, it was not us: ignored, so that nobody else can wake us.
    pub fn on_challenge(&mut self, nonce: Nonce) {
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
    pub fn answer_due(&mut self, now: Instant) {
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

    /// The Awake request, with the nonce of the server's last challenge if one came: the
    /// server believes an Awake request from an address it does not know as ours only with
    /// it.
    fn announce_awake(&self) {
        self.announce(Announce::Awake {
            id: self.id.clone(),
            nonce: self.challenge,
        });
    }
}
