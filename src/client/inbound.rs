//! The receiver's half of delivery: each peer's messages shown once, and in the order they
//! were sent.
//!
//! Every copy that arrives is acknowledged (the sender's retransmissions stop only when one
//! acknowledgement gets through), and each sequence number is shown once ([`ReplayWindow`]).
//! One that arrives ahead of a gap waits for it ([`Inbound`]). The wait is bounded: as long
//! as the sender would go on retransmitting, by our own measure of the path, and at least
//! [`GAP_WAIT`], after the last datagram that said the sender still tries to fill the gap. A
//! sender that gives up on the missing message says so in its next datagram (its `base`
//! moves past the gap), and what waited is shown at once, the gap said.
//!
//! The receiver takes only sequence numbers within [`WINDOW`] of the newest it has seen: one
//! forged datagram numbered 2^64 - 1 cannot push the window past every real message to come.

use crate::wire::Numbered;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The least a message waits for the ones before it once nothing says the sender still tries
/// to fill the gap (a datagram of its whose base is at or below the gap does): past the
/// sender's shortest give-up (5 s).
pub const GAP_WAIT: Duration = Duration::from_secs(6);
/// How many sequence numbers behind the newest one the receiver still tells apart, and how
/// far ahead of it a number may be.
pub const WINDOW: u64 = 1024;
/// What the receiver shows, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// A message, in its turn.
    Text(String),
    /// A message sent before others already shown (it waited out its gap).
    Late(String),
    /// This many messages before the next never arrived.
    Gap(u64),
}

/// What one peer has sent us, shown in order: each message once, none before those sent
/// before it, unless the sender says it gave up on them (its base went past them), or it
/// said nothing for [`GAP_WAIT`] while they were missing.
#[derive(Default)]
pub struct Inbound {
    /// The sender's session these books are about.
    session: Option<u64>,
    window: ReplayWindow,
    /// The sequence number of the next message to show (0: none yet, the first is 1).
    next: u64,
    /// Messages that arrived ahead of a gap, with when they arrived.
    held: BTreeMap<u64, (String, Instant)>,
    /// When a datagram last said the sender still tries to fill the gap (its base at or
    /// below the gap: the missing message is still in its flight).
    still_trying: Option<Instant>,
}

impl Inbound {
    /// Message `number` arrived. Returns what the window makes of it (to acknowledge it or
    /// not), and what can be shown now. A new session of the sender (it restarted) starts
    /// the books afresh, at its base: what came before was for its earlier session, or for
    /// an earlier one of ours.
    pub fn arrive(
        &mut self,
        number: Numbered,
        text: String,
        now: Instant,
    ) -> (Arrival, Vec<Shown>) {
        // A base past the message itself is nonsense, and one far past what we expect is a
        // stream we cannot follow any more: taken as a fresh start.
        let number = Numbered {
            base: number.base.min(number.seq),
            ..number
        };
        let mut shown = Vec::new();
        let lost_track = number.base > self.next.saturating_add(WINDOW);
        if self.session != Some(number.session) || lost_track {
            // What waited for the old session's gaps is shown now, as it is.
            shown.extend(
                self.held
                    .values()
                    .map(|(text, _)| Shown::Late(text.clone())),
            );
            *self = Inbound {
                session: Some(number.session),
                next: number.base.max(1),
                ..Inbound::default()
            };
        }
        let arrival = self.window.arrive(number.seq);
        if arrival == Arrival::Outside {
            return (arrival, shown);
        }
        if number.base <= self.next {
            self.still_trying = Some(now);
        }
        if arrival == Arrival::Again {
            return (arrival, shown);
        }
        if number.seq < self.next {
            shown.push(Shown::Late(text));
            return (arrival, shown);
        }
        self.held.insert(number.seq, (text, now));
        if number.base > self.next {
            shown.extend(self.skip_to(number.base));
        }
        shown.extend(self.release());
        (arrival, shown)
    }

    /// The sender will send nothing below `base` again: show what waited, saying the gaps.
    fn skip_to(&mut self, base: u64) -> Vec<Shown> {
        let mut shown = Vec::new();
        while self.next < base {
            let Some((&first, _)) = self.held.first_key_value() else {
                shown.push(Shown::Gap(base - self.next));
                self.next = base;
                break;
            };
            let upto = first.min(base);
            if upto > self.next {
                shown.push(Shown::Gap(upto - self.next));
                self.next = upto;
            }
            shown.extend(self.release());
        }
        shown
    }

    /// The messages whose gap has been waited out, with the gap before them. The wait,
    /// `sender_tries` but at least [`GAP_WAIT`], counts from the latest word that the sender
    /// still tries: on a slow, lossy path its retransmissions go on far longer than
    /// [`GAP_WAIT`] (and a burst of loss may silence them all a while), and we must not give
    /// up first. The caller estimates `sender_tries` from its own measure of the path.
    pub fn due(&mut self, now: Instant, sender_tries: Duration) -> Vec<Shown> {
        let Some((&first, (_, arrived))) = self.held.first_key_value() else {
            return Vec::new();
        };
        let since = self.still_trying.map_or(*arrived, |t| t.max(*arrived));
        if now - since < sender_tries.max(GAP_WAIT) {
            return Vec::new();
        }
        let mut shown = vec![Shown::Gap(first - self.next)];
        self.next = first;
        shown.extend(self.release());
        shown
    }

    /// Everything held that is next in line.
    fn release(&mut self) -> Vec<Shown> {
        let mut shown = Vec::new();
        while let Some((text, _)) = self.held.remove(&self.next) {
            shown.push(Shown::Text(text));
            self.next += 1;
        }
        shown
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

/// The receiver's memory of which sequence numbers from one peer it has seen: the newest,
/// and a bitmap of the [`WINDOW`] before it (the anti-replay window of IPsec).
#[derive(Default)]
struct ReplayWindow {
    newest: u64,
    seen: [u64; (WINDOW / 64) as usize],
}

impl ReplayWindow {
    /// Whether `seq` is new, seen, or outside the window: more than [`WINDOW`] behind the
    /// newest (too old to tell), or ahead of it (a sender keeps at most
    /// [`MAX_SPAN`](super::outgoing::MAX_SPAN) in flight, so anything further is not from our peer).
    fn arrive(&mut self, seq: u64) -> Arrival {
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
    fn a_gap_waits_while_the_sender_still_tries_to_fill_it() {
        use Shown::*;
        let now = Instant::now();
        let mut inbound = Inbound::default();
        let n = |seq, base| Numbered {
            session: 7,
            seq,
            base,
        };
        inbound.arrive(n(2, 1), "two".into(), now);
        // The sender goes on sending, its base still at the gap: it still tries.
        let later = now + GAP_WAIT - Duration::from_secs(1);
        inbound.arrive(n(3, 1), "three".into(), later);
        assert_eq!(inbound.due(now + GAP_WAIT, Duration::ZERO), vec![]);
        assert_eq!(
            inbound.due(later + GAP_WAIT, Duration::ZERO),
            vec![Gap(1), Text("two".into()), Text("three".into())]
        );
        // A sender that gives up on 4 says so at once, with its base.
        assert_eq!(inbound.arrive(n(5, 4), "five".into(), later).1, vec![]);
        assert_eq!(
            inbound.arrive(n(6, 6), "six".into(), later).1,
            vec![Gap(1), Text("five".into()), Text("six".into())]
        );
    }

    #[test]
    fn messages_are_shown_in_order_and_a_gap_is_waited_out() {
        use Shown::*;
        let now = Instant::now();
        let mut inbound = Inbound::default();
        let text = |s: &str| s.to_string();
        let n = |seq| Numbered {
            session: 7,
            seq,
            base: 1,
        };
        assert_eq!(inbound.arrive(n(2), text("two"), now).1, vec![]);
        assert_eq!(inbound.arrive(n(3), text("three"), now).1, vec![]);
        assert_eq!(
            inbound.arrive(n(1), text("one"), now).1,
            vec![Text(text("one")), Text(text("two")), Text(text("three"))]
        );
        assert_eq!(inbound.arrive(n(2), text("two"), now).0, Arrival::Again);
        // 4 never comes: 5 and 6 wait for it, then go with the gap said.
        assert_eq!(inbound.arrive(n(5), text("five"), now).1, vec![]);
        assert_eq!(inbound.arrive(n(6), text("six"), now).1, vec![]);
        assert_eq!(inbound.due(now + GAP_WAIT / 2, Duration::ZERO), vec![]);
        // On a slow path, whose sender goes on longer, the gap waits longer too.
        let slow = GAP_WAIT * 3;
        assert_eq!(inbound.due(now + GAP_WAIT, slow), vec![]);
        assert_eq!(
            inbound.due(now + slow, slow),
            vec![Gap(1), Text(text("five")), Text(text("six"))]
        );
        // And if it comes after all, it is shown, marked late.
        assert_eq!(
            inbound.arrive(n(4), text("four"), now).1,
            vec![Late(text("four"))]
        );
        assert_eq!(
            inbound.arrive(n(7), text("seven"), now).1,
            vec![Text(text("seven"))]
        );
    }
}
