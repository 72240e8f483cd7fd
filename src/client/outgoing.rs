//! The sender's half of delivery: each message to a peer numbered, stamped, retransmitted
//! until acknowledged, and reported honestly when it is not.
//!
//! UDP may drop, duplicate or reorder datagrams, so each message to a peer gets a sequence
//! number (counted per peer, starting at 1). The receiver acknowledges every copy it gets
//! (see [`super::inbound`]); the sender retransmits until acknowledged, and gives up after a
//! while. How long it waits between copies, and before it gives up, follows the peer's
//! measured round trip ([`RoundTrip`]): a satellite link is not a LAN.
//!
//! Reports say only what is known. A message with no acknowledgement in time is *not
//! confirmed*: it may well have arrived (its acknowledgement lost, or its recipient slow), so
//! its stamp is kept a while, and an acknowledgement that comes late is reported as such.
//! Only a message that never left is *not sent*. Should a path to its peer be found again
//! meanwhile (a link that came back), a message given up on is sent once more, in its turn
//! before the newer ones, so that it is shown in order: its report stands, since all it said
//! was that it may still arrive.
//!
//! Each message carries a stamp, a nonce only its recipient sees, and an acknowledgement
//! counts only if it echoes that stamp: a stranger cannot acknowledge a lost message blind.
//!
//! This module only keeps the books; the client decides which path each transmission takes
//! (direct, or relayed once a message has [waited](Send::waited) too long: see
//! [`super::paths`]).

use super::rtt::RoundTrip;
use crate::nonce::{Nonce, Nonces};
use crate::wire::Numbered;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long, and for how many messages, a late acknowledgement is still recognized.
const LATE_FOR: Duration = Duration::from_secs(120);
const LATE_KEPT: usize = 256;

/// How far the oldest unacknowledged message may trail the newest one sent. Smaller than
/// [`WINDOW`](super::inbound::WINDOW), so that every message in flight is still inside the receiver's window;
/// messages beyond it wait in a backlog.
pub(super) const MAX_SPAN: u64 = 256;

/// One (re)transmission the client should make now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The peer it is for.
    pub to: String,
    /// Its sequence number.
    pub seq: u64,
    /// The nonce its acknowledgement must echo.
    pub stamp: Nonce,
    /// What it says.
    pub text: String,
    /// How long it has waited for an acknowledgement: long enough, and this copy takes the
    /// relay (see `Paths::route`).
    pub waited: Duration,
}

/// A message no acknowledgement confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconfirmed {
    /// The peer it was for.
    pub to: String,
    /// What it said.
    pub text: String,
    /// Whether it was ever sent (one still in the backlog was not).
    pub sent: bool,
    /// How long it waited for an acknowledgement.
    pub waited: Duration,
}

/// What an acknowledgement did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Acked {
    /// It echoed the stamp of a message of ours: whoever sent it got that message.
    pub confirmed: bool,
    /// Messages from the backlog that may now go.
    pub sends: Vec<Send>,
    /// The text of a message given up on earlier, confirmed now after all.
    pub late: Option<String>,
}

/// A message given up on, kept to recognize a late acknowledgement.
struct GivenUp {
    to: String,
    seq: u64,
    stamp: Nonce,
    text: String,
    at: Instant,
    /// Whether any copy of it had left: one reported *not sent* is never sent later.
    sent: bool,
}

struct InFlight {
    text: String,
    stamp: Nonce,
    /// How many copies of it have left (none: it waits for a path, or for the server).
    copies: u32,
    /// When it was queued.
    first_sent: Instant,
    /// When the latest copy left: its acknowledgement times the round trip, if it was the
    /// only copy.
    last_copy: Option<Instant>,
    /// When to send it again.
    next_try: Instant,
    /// Already reported not confirmed, before it was sent again (see [`Outgoing::revive`]):
    /// not reported twice.
    reported: bool,
}

/// The messages on their way to one peer.
#[derive(Default)]
struct Outbound {
    next_seq: u64,
    in_flight: BTreeMap<u64, InFlight>,
    backlog: VecDeque<String>,
    /// The round trip to the peer, which times everything here.
    round_trip: RoundTrip,
    /// When the timeout last doubled: only a copy sent after that, timed with the doubled
    /// timeout, may double it again (forty messages timing out together double it once).
    doubled_at: Option<Instant>,
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
                waited: Duration::ZERO,
            });
            let message = InFlight {
                text,
                stamp,
                copies: 0,
                first_sent: now,
                last_copy: None,
                next_try: now + self.round_trip.first_wait(),
                reported: false,
            };
            self.in_flight.insert(self.next_seq, message);
        }
    }
}

/// The sender's books: what is in flight to whom.
pub struct Outgoing {
    /// This client's session: numbering starts afresh with each (see [`Numbered`]).
    session: u64,
    peers: HashMap<String, Outbound>,
    /// Where the stamps come from.
    nonces: Nonces,
    /// Messages given up on lately, newest last.
    given_up: VecDeque<GivenUp>,
}

impl Outgoing {
    /// Empty books, stamping messages with nonces from `nonces`.
    pub fn new(mut nonces: Nonces) -> Outgoing {
        Outgoing {
            session: nonces.number(),
            peers: HashMap::new(),
            nonces,
            given_up: VecDeque::new(),
        }
    }

    /// How message `seq` to `to` stands: our session, its number, and the lowest number we
    /// may still send `to` (all below were acknowledged or given up on).
    pub fn numbered(&self, to: &str, seq: u64) -> Numbered {
        let base = self.peers.get(to).map_or(seq, |outbound| {
            let next = outbound.next_seq + 1;
            outbound.in_flight.keys().next().copied().unwrap_or(next)
        });
        Numbered {
            session: self.session,
            seq,
            base: base.min(seq),
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

    /// `to` acknowledged `seq`, echoing `stamp`: backlog messages that may now be sent, or
    /// the text of a message given up on that arrived after all. An acknowledgement for
    /// nothing we know of (a duplicate, a stray), or with another stamp (a guess), changes
    /// nothing.
    pub fn acknowledge(&mut self, to: &str, seq: u64, stamp: &Nonce, now: Instant) -> Acked {
        let mut acked = Acked::default();
        let Some(outbound) = self.peers.get_mut(to) else {
            return acked;
        };
        let ours = |m: &InFlight| m.stamp.matches(stamp);
        if let Some(message) = outbound.in_flight.remove(&seq) {
            if !ours(&message) {
                outbound.in_flight.insert(seq, message);
                return acked;
            }
            acked.confirmed = true;
            // Karn's rule: only a message sent once times the round trip unambiguously.
            if let (1, Some(left)) = (message.copies, message.last_copy) {
                outbound.round_trip.sample(now - left);
            }
            if message.reported {
                acked.late = Some(message.text);
            }
            outbound.release(to, now, &mut self.nonces, &mut acked.sends);
        } else if let Some(at) = self
            .given_up
            .iter()
            .position(|g| g.to == to && g.seq == seq && g.stamp.matches(stamp))
        {
            acked.late = self.given_up.remove(at).map(|g| g.text);
            acked.confirmed = true;
        }
        acked
    }

    /// A round trip to `to` was measured another way (a probe answered).
    pub fn measured(&mut self, to: &str, rtt: Duration) {
        self.peers
            .entry(to.to_string())
            .or_default()
            .round_trip
            .sample(rtt);
    }

    /// The round trip to `to`, as far as it is known.
    pub fn round_trip(&self, to: &str) -> RoundTrip {
        self.peers
            .get(to)
            .map(|outbound| outbound.round_trip)
            .unwrap_or_default()
    }

    /// A path to `to` was just found, or our direct path answers again after a silence: the
    /// messages given up on lately that had left, unless acknowledged since, go back in
    /// flight, each under its own number and stamp, due at once, so that
    /// [`Outgoing::resend`] or the next [`Outgoing::due`] sends them first, in order. Their
    /// report stands.
    pub fn revive(&mut self, to: &str, now: Instant) {
        let outbound = self.peers.entry(to.to_string()).or_default();
        let (back, kept) = std::mem::take(&mut self.given_up)
            .into_iter()
            .partition(|g| g.to == to && g.sent);
        self.given_up = kept;
        for g in back {
            let message = InFlight {
                text: g.text,
                stamp: g.stamp,
                copies: 1,
                first_sent: now,
                last_copy: None,
                next_try: now,
                reported: true,
            };
            outbound.in_flight.insert(g.seq, message);
        }
    }

    /// Every message in flight to `to`, to send again now: a path to it was just found.
    pub fn resend(&mut self, to: &str, now: Instant) -> Vec<Send> {
        let Some(outbound) = self.peers.get_mut(to) else {
            return Vec::new();
        };
        let rto = outbound.round_trip.rto();
        let resend = outbound.in_flight.iter_mut().map(|(&seq, m)| {
            m.next_try = now + rto;
            Send {
                to: to.to_string(),
                seq,
                stamp: m.stamp,
                text: m.text.clone(),
                waited: now - m.first_sent,
            }
        });
        resend.collect()
    }

    /// Retransmissions due now, and the messages given up on (kept a while, in case their
    /// acknowledgement comes late).
    pub fn due(&mut self, now: Instant) -> (Vec<Send>, Vec<Unconfirmed>) {
        let (mut sends, mut failed) = (Vec::new(), Vec::new());
        let given_up = &mut self.given_up;
        while given_up
            .front()
            .is_some_and(|g| now - g.at > LATE_FOR || given_up.len() > LATE_KEPT)
        {
            given_up.pop_front();
        }
        for (to, outbound) in &mut self.peers {
            let Outbound {
                in_flight,
                round_trip,
                doubled_at,
                ..
            } = outbound;
            let give_up = round_trip.give_up_after();
            in_flight.retain(|&seq, m| {
                let age = now - m.first_sent;
                if age >= give_up {
                    if !m.reported {
                        failed.push(Unconfirmed {
                            to: to.clone(),
                            text: m.text.clone(),
                            sent: m.copies > 0,
                            waited: age,
                        });
                    }
                    given_up.push_back(GivenUp {
                        to: to.clone(),
                        seq,
                        stamp: m.stamp,
                        text: m.text.clone(),
                        at: now,
                        sent: m.copies > 0,
                    });
                    return false;
                }
                if now >= m.next_try {
                    // A copy timed with the current timeout went unanswered: the path is
                    // slower than we thought, or lost it. (A message that never left, waiting
                    // for a path, says nothing about the path.)
                    let timed = m
                        .last_copy
                        .is_some_and(|left| doubled_at.is_none_or(|d| left > d));
                    if timed {
                        round_trip.timed_out();
                        *doubled_at = Some(now);
                    }
                    m.next_try = now + round_trip.rto();
                    sends.push(Send {
                        to: to.clone(),
                        seq,
                        stamp: m.stamp,
                        text: m.text.clone(),
                        waited: age,
                    });
                }
                true
            });
            outbound.release(to, now, &mut self.nonces, &mut sends);
        }
        (sends, failed)
    }

    /// A copy of message `seq` to `to` has left, `now`.
    pub fn sent(&mut self, to: &str, seq: u64, now: Instant) {
        let message = self
            .peers
            .get_mut(to)
            .and_then(|o| o.in_flight.get_mut(&seq));
        if let Some(message) = message {
            message.copies += 1;
            message.last_copy = Some(now);
        }
    }

    /// `to` left, or we do: everything on its way to it is unconfirmed (what was sent) or
    /// unsent. The numbering goes on: should `to` come back, it may still hold what we sent
    /// it in this session, and must not take new messages for old ones.
    pub fn forget(&mut self, to: &str) -> Vec<Unconfirmed> {
        let Some(outbound) = self.peers.get_mut(to) else {
            return Vec::new();
        };
        let now = Instant::now();
        let in_flight = std::mem::take(&mut outbound.in_flight)
            .into_values()
            .map(|m| (m.text, m.copies > 0, now - m.first_sent));
        let backlog = std::mem::take(&mut outbound.backlog)
            .into_iter()
            .map(|text| (text, false, Duration::ZERO));
        in_flight
            .chain(backlog)
            .map(|(text, sent, waited)| Unconfirmed {
                to: to.to_string(),
                text,
                sent,
                waited,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonces() -> Nonces {
        Nonces::new().unwrap()
    }

    #[test]
    fn retransmits_then_gives_up_and_acks_stop_it() {
        let start = Instant::now();
        let mut out = Outgoing::new(nonces());
        let sends = out.queue("bob", "hi".into(), start);
        assert_eq!(sends.len(), 1);
        assert_eq!(sends[0].seq, 1);
        out.sent("bob", 1, start);
        let rto = out.round_trip("bob").rto();
        assert_eq!(out.due(start + rto / 2), (vec![], vec![]), "not yet");
        let (again, failed) = out.due(start + rto);
        assert_eq!((again.len(), failed.len()), (1, 0));
        assert_eq!(again[0].waited, rto);
        assert_eq!(out.round_trip("bob").rto(), 2 * rto, "the timeout doubled");
        let give_up = out.round_trip("bob").give_up_after();
        let (_, failed) = out.due(start + give_up);
        assert_eq!(
            failed,
            vec![Unconfirmed {
                to: "bob".into(),
                text: "hi".into(),
                sent: true,
                waited: give_up,
            }]
        );
        let late = out.acknowledge("bob", 1, &sends[0].stamp, start + give_up);
        assert_eq!(late.late.as_deref(), Some("hi"), "confirmed after all");

        let sends = out.queue("bob", "again".into(), start);
        assert_eq!(sends[0].seq, 2);
        let guess = nonces().draw();
        assert!(!out.acknowledge("bob", 2, &guess, start).confirmed);
        assert_eq!(
            out.resend("bob", start).len(),
            1,
            "a blind acknowledgement counts not"
        );
        assert_eq!(
            out.acknowledge("bob", 2, &sends[0].stamp, start),
            Acked {
                confirmed: true,
                ..Acked::default()
            }
        );
        // Acknowledged: neither sent again nor given up on.
        assert_eq!(out.due(start + give_up), (vec![], vec![]));
        assert_eq!(out.forget("bob"), vec![]);
    }

    #[test]
    fn a_message_sent_on_a_dead_path_goes_again_by_its_relay_time_however_far_the_timeout_doubled()
    {
        let start = Instant::now();
        let mut out = Outgoing::new(nonces());
        // A path that just died: a message a second, their copies timed out one after
        // another, and the timeout doubled past the give-up.
        let mut now = start;
        let mut ticks = 0;
        while out.round_trip("bob").rto() <= out.round_trip("bob").give_up_after() {
            assert!(ticks < 600, "never doubled that far");
            if ticks % 20 == 0 {
                let seq = out.queue("bob", "unanswered".into(), now)[0].seq;
                out.sent("bob", seq, now);
            }
            ticks += 1;
            now += Duration::from_millis(50);
            for send in out.due(now).0 {
                // It leaves a moment after it was due.
                out.sent("bob", send.seq, now + Duration::from_millis(1));
            }
        }
        let rtt = out.round_trip("bob");
        assert!(
            rtt.rto() > rtt.give_up_after(),
            "doubled past the give-up: {rtt:?}"
        );

        // A new message, sent once: it goes again when it is due for the relay (which takes
        // that copy), before it is given up on.
        let fresh = out.queue("bob", "typed now".into(), now)[0].seq;
        out.sent("bob", fresh, now);
        let mut copies = Vec::new();
        let mut t = now;
        while t < now + rtt.give_up_after() {
            t += Duration::from_millis(50);
            let (sends, _) = out.due(t);
            for send in sends.iter().filter(|s| s.seq == fresh) {
                copies.push(send.waited);
                out.sent("bob", fresh, t);
            }
        }
        assert!(
            copies
                .first()
                .is_some_and(|w| *w <= rtt.relay_after() + Duration::from_millis(50)),
            "its second copy waited {copies:?}, the relay {:?}",
            rtt.relay_after()
        );
    }

    #[test]
    fn only_a_message_sent_once_times_the_round_trip() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut out = Outgoing::new(nonces());
        let once = out.queue("bob", "once".into(), start);
        out.sent("bob", 1, start);
        out.acknowledge("bob", 1, &once[0].stamp, start + ms(800));
        let rto = out.round_trip("bob").rto();
        assert!(rto >= ms(800), "an 800 ms path waits longer: {rto:?}");

        let twice = out.queue("bob", "twice".into(), start);
        out.sent("bob", 2, start);
        out.sent("bob", 2, start + ms(900));
        out.acknowledge("bob", 2, &twice[0].stamp, start + ms(910));
        assert_eq!(
            out.round_trip("bob").rto(),
            rto,
            "which copy was answered is unknown: no sample"
        );
    }

    #[test]
    fn a_message_given_up_on_goes_again_in_its_turn_when_a_path_is_found() {
        let start = Instant::now();
        let mut out = Outgoing::new(nonces());
        let lost = out.queue("bob", "lost in the outage".into(), start);
        out.sent("bob", 1, start);
        let give_up = out.round_trip("bob").give_up_after();
        let (_, failed) = out.due(start + give_up);
        assert_eq!(failed.len(), 1, "reported not confirmed");
        let later = start + give_up;
        let newer = out.queue("bob", "after the outage".into(), later);
        assert_eq!(newer[0].seq, 2);
        assert_eq!(out.numbered("bob", 2).base, 2, "1 was given up");

        // The link is back: a path is found. 1 goes again, first, and 2 after it.
        out.revive("bob", later);
        assert_eq!(out.numbered("bob", 2).base, 1, "1 is in flight again");
        let again: Vec<u64> = out.resend("bob", later).iter().map(|s| s.seq).collect();
        assert_eq!(again, [1, 2]);
        for seq in again {
            out.sent("bob", seq, later);
        }
        // 2 is lost again, and 1 too, but 1 was reported already: only 2 is reported now.
        let (_, failed) = out.due(later + give_up * 2);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].text, "after the outage");
        // 1's acknowledgement comes at last: delivered after all.
        let acked = out.acknowledge("bob", 1, &lost[0].stamp, later + give_up * 2);
        assert_eq!(acked.late.as_deref(), Some("lost in the outage"));
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
        let freed = out.acknowledge("bob", 1, &sent[0].stamp, now).sends;
        assert_eq!(freed.len(), 1);
        assert_eq!(freed[0].seq, MAX_SPAN + 1);
        for seq in 2..=MAX_SPAN {
            out.sent("bob", seq, now);
        }
        let forgotten = out.forget("bob");
        assert_eq!(forgotten.len() as u64, MAX_SPAN + 9);
        assert_eq!(
            forgotten.iter().filter(|m| !m.sent).count(),
            10,
            "the backlog never left, nor did the one just freed from it"
        );
        // The numbering goes on after it is forgotten.
        assert_eq!(out.queue("bob", "next".into(), now)[0].seq, MAX_SPAN + 2);
    }
}
