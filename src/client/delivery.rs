//! Confirmed delivery of chat messages over an unreliable path.
//!
//! UDP may drop, duplicate or reorder datagrams, so each message to a peer gets a sequence
//! number (counted per peer, starting at 1). The receiver acknowledges every copy it gets and
//! shows each number once ([`ReplayWindow`]); the sender retransmits until acknowledged, and
//! gives up after [`GIVE_UP_AFTER`].
//!
//! Two rules keep a stranger out of these books. Each message carries a stamp, a nonce
//! only its recipient sees, and an acknowledgement counts only if it echoes that stamp: a
//! lost message cannot be acknowledged blind. And the receiver takes only sequence numbers
//! within [`WINDOW`] of the newest it has seen: one forged datagram numbered 2^64 - 1 cannot
//! push the window past every real message to come. This module only keeps the books; the client decides
//! which path each transmission takes (direct, or relayed once a message is
//! [`RELAY_AFTER`] old).

use crate::nonce::{Nonce, Nonces};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How often an unacknowledged message is sent again.
pub const RETRY_EVERY: Duration = Duration::from_millis(250);
/// A message not acknowledged this long after it was first sent goes through the relay.
pub const RELAY_AFTER: Duration = Duration::from_secs(1);
/// A message not acknowledged this long after it was first sent was not delivered.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(5);

/// How many sequence numbers behind the newest one the receiver still tells apart, and how
/// far ahead of it a number may be.
pub const WINDOW: u64 = 1024;
/// How far the oldest unacknowledged message may trail the newest one sent. Smaller than
/// [`WINDOW`], so that every message in flight is still inside the receiver's window;
/// messages beyond it wait in a backlog.
const MAX_SPAN: u64 = 256;

/// One (re)transmission the client should make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub to: String,
    pub seq: u64,
    /// The nonce its acknowledgement must echo.
    pub stamp: Nonce,
    pub text: String,
    /// Since the first transmission of this message.
    pub age: Duration,
}

/// A message given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub to: String,
    pub text: String,
}

struct InFlight {
    text: String,
    stamp: Nonce,
    first_sent: Instant,
    last_sent: Instant,
}

/// The messages on their way to one peer.
#[derive(Default)]
struct Outbound {
    next_seq: u64,
    in_flight: BTreeMap<u64, InFlight>,
    backlog: VecDeque<String>,
}

impl Outbound {
    /// Moves messages from the backlog into flight while the span allows, each stamped.
    fn release(&mut self, to: &str, now: Instant, nonces: &mut Nonces, sends: &mut Vec<Send>) {
        while !self.backlog.is_empty() {
            let oldest = self
                .in_flight
                .keys()
                .next()
                .copied()
                .unwrap_or(self.next_seq + 1);
            if self.next_seq + 1 >= oldest + MAX_SPAN {
                break;
            }
            let text = self.backlog.pop_front().unwrap_or_default();
            let stamp = nonces.draw();
            self.next_seq += 1;
            sends.push(Send {
                to: to.to_string(),
                seq: self.next_seq,
                stamp,
                text: text.clone(),
                age: Duration::ZERO,
            });
            let message = InFlight {
                text,
                stamp,
                first_sent: now,
                last_sent: now,
            };
            self.in_flight.insert(self.next_seq, message);
        }
    }
}

/// The sender's books: what is in flight to whom.
pub struct Outgoing {
    peers: HashMap<String, Outbound>,
    /// Where the stamps come from.
    nonces: Nonces,
}

impl Outgoing {
    /// Empty books, stamping messages with nonces from `nonces`.
    pub fn new(nonces: Nonces) -> Outgoing {
        Outgoing {
            peers: HashMap::new(),
            nonces,
        }
    }

    /// Queues `text` for `to`; returns the transmissions to make now (none while the
    /// backlog is held back).
    pub fn queue(&mut self, to: &str, text: String, now: Instant) -> Vec<Send> {
        let outbound = self.peers.entry(to.to_string()).or_default();
        outbound.backlog.push_back(text);
        let mut sends = Vec::new();
        outbound.release(to, now, &mut self.nonces, &mut sends);
        sends
    }

    /// `to` acknowledged `seq`, echoing `stamp`. Returns backlog messages that may now be
    /// sent. An acknowledgement for nothing in flight (a duplicate, or a stray), or with
    /// another stamp (a guess), changes nothing.
    pub fn acknowledge(&mut self, to: &str, seq: u64, stamp: &Nonce, now: Instant) -> Vec<Send> {
        let mut sends = Vec::new();
        if let Some(outbound) = self.peers.get_mut(to) {
            if outbound
                .in_flight
                .get(&seq)
                .is_some_and(|m| m.stamp.matches(stamp))
            {
                outbound.in_flight.remove(&seq);
                outbound.release(to, now, &mut self.nonces, &mut sends);
            }
        }
        sends
    }

    /// Every message in flight to `to`, to send again now: a path to it was just found.
    pub fn resend(&mut self, to: &str, now: Instant) -> Vec<Send> {
        let Some(outbound) = self.peers.get_mut(to) else {
            return Vec::new();
        };
        let resend = outbound.in_flight.iter_mut().map(|(&seq, m)| {
            m.last_sent = now;
            Send {
                to: to.to_string(),
                seq,
                stamp: m.stamp,
                text: m.text.clone(),
                age: now - m.first_sent,
            }
        });
        resend.collect()
    }

    /// Retransmissions due now, and the messages given up on.
    pub fn due(&mut self, now: Instant) -> (Vec<Send>, Vec<Undelivered>) {
        let (mut sends, mut failed) = (Vec::new(), Vec::new());
        for (to, outbound) in &mut self.peers {
            outbound.in_flight.retain(|&seq, m| {
                let age = now - m.first_sent;
                if age >= GIVE_UP_AFTER {
                    failed.push(Undelivered {
                        to: to.clone(),
                        text: m.text.clone(),
                    });
                    return false;
                }
                if now - m.last_sent >= RETRY_EVERY {
                    m.last_sent = now;
                    sends.push(Send {
                        to: to.clone(),
                        seq,
                        stamp: m.stamp,
                        text: m.text.clone(),
                        age,
                    });
                }
                true
            });
            outbound.release(to, now, &mut self.nonces, &mut sends);
        }
        (sends, failed)
    }

    /// `to` left: everything on its way to it is undelivered.
    pub fn forget(&mut self, to: &str) -> Vec<Undelivered> {
        let Some(outbound) = self.peers.remove(to) else {
            return Vec::new();
        };
        let in_flight = outbound.in_flight.into_values().map(|m| m.text);
        in_flight
            .chain(outbound.backlog)
            .map(|text| Undelivered {
                to: to.to_string(),
                text,
            })
            .collect()
    }
}

/// What the receiver makes of a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Never seen: show the message, and acknowledge it.
    New,
    /// Seen before (a retransmission whose acknowledgement was lost): acknowledge it again.
    Again,
    /// Outside the window: no sender of ours could have sent it. Neither shown nor
    /// acknowledged.
    Outside,
}

/// The receiver's memory of which sequence numbers from one peer it has shown: the newest,
/// and a bitmap of the [`WINDOW`] before it (the anti-replay window of IPsec).
#[derive(Default)]
pub struct ReplayWindow {
    newest: u64,
    seen: [u64; (WINDOW / 64) as usize],
}

impl ReplayWindow {
    /// Whether `seq` is new, seen, or outside the window: more than [`WINDOW`] behind the
    /// newest (too old to tell), or ahead of it (a sender keeps at most
    /// [`MAX_SPAN`] in flight, so anything further is not from our peer).
    pub fn arrive(&mut self, seq: u64) -> Arrival {
        if seq == 0 || seq > self.newest.saturating_add(WINDOW) {
            return Arrival::Outside;
        }
        if seq > self.newest {
            let advance = seq - self.newest;
            if advance >= WINDOW {
                self.seen = Default::default();
            } else {
                for old in self.newest + 1..seq {
                    self.set(old, false);
                }
            }
            self.newest = seq;
            self.set(seq, true);
            return Arrival::New;
        }
        if self.newest - seq >= WINDOW {
            return Arrival::Outside;
        }
        if self.get(seq) {
            return Arrival::Again;
        }
        self.set(seq, true);
        Arrival::New
    }

    fn get(&self, seq: u64) -> bool {
        let bit = seq % WINDOW;
        self.seen[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    fn set(&mut self, seq: u64, on: bool) {
        let bit = seq % WINDOW;
        let word = &mut self.seen[(bit / 64) as usize];
        if on {
            *word |= 1 << (bit % 64);
        } else {
            *word &= !(1 << (bit % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonces() -> Nonces {
        Nonces::new().unwrap()
    }

    #[test]
    fn each_number_is_shown_once_in_any_order_and_only_within_the_window() {
        use Arrival::*;
        let mut window = ReplayWindow::default();
        assert_eq!(window.arrive(2), New);
        assert_eq!(window.arrive(1), New);
        assert_eq!(window.arrive(2), Again);
        assert_eq!(window.arrive(1), Again);
        assert_eq!(window.arrive(1000), New);
        assert_eq!(window.arrive(3), New);
        assert_eq!(window.arrive(3), Again);
        assert_eq!(window.arrive(0), Outside);
        assert_eq!(
            window.arrive(u64::MAX),
            Outside,
            "a forged number far ahead"
        );
        assert_eq!(window.arrive(1000 + WINDOW + 1), Outside);
        assert_eq!(window.arrive(4), New, "the forgery moved nothing");
        assert_eq!(window.arrive(1000 + WINDOW), New);
        assert_eq!(window.arrive(5), Outside, "too old to tell");
    }

    #[test]
    fn retransmits_then_gives_up_and_acks_stop_it() {
        let start = Instant::now();
        let mut out = Outgoing::new(nonces());
        let sends = out.queue("bob", "hi".into(), start);
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].seq, 1);
        let (again, failed) = out.due(start + RETRY_EVERY);
        assert_eq!((again.len(), failed.len()), (1, 0));
        assert_eq!(again[0].age, RETRY_EVERY);
        let (_, failed) = out.due(start + GIVE_UP_AFTER);
        assert_eq!(
            failed,
            vec![Undelivered {
                to: "bob".into(),
                text: "hi".into()
            }]
        );

        let sends = out.queue("bob", "again".into(), start);
        assert_eq!(sends[0].seq, 2);
        let guess = nonces().draw();
        out.acknowledge("bob", 2, &guess, start);
        assert_eq!(
            out.resend("bob", start).len(),
            1,
            "a blind acknowledgement counts not"
        );
        assert_eq!(out.acknowledge("bob", 2, &sends[0].stamp, start), vec![]);
        // Acknowledged: neither sent again nor given up on.
        assert_eq!(out.due(start + GIVE_UP_AFTER), (vec![], vec![]));
        assert_eq!(out.forget("bob"), vec![]);
    }

    #[test]
    fn a_long_burst_waits_in_the_backlog_within_the_span() {
        let now = Instant::now();
        let mut out = Outgoing::new(nonces());
        let mut sent = Vec::new();
        for i in 0..MAX_SPAN + 10 {
            sent.extend(out.queue("bob", format!("m{i}"), now));
        }
        assert_eq!(sent.len() as u64, MAX_SPAN);
        let freed = out.acknowledge("bob", 1, &sent[0].stamp, now);
        assert_eq!(freed.len(), 1);
        assert_eq!(freed[0].seq, MAX_SPAN + 1);
        assert_eq!(out.forget("bob").len() as u64, MAX_SPAN + 9);
    }
}
