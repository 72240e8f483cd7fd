//! Joins and leaves, told to everyone in rounds.
//!
//! Both servers tell every client of every join and leave, so filling a server with N clients
//! makes N²/2 lines: fifty million for ten thousand. Queued one by one, each line would take
//! a slot in every client's queue (24 bytes, times ten thousand, per join) and, unless the
//! writer happened to be awake, a wake-up and a system call of its own: minutes of CPU and
//! hundreds of megabytes of queues.
//!
//! So these lines are gathered. A [`Round`] collects the joins and leaves of a moment in one
//! buffer; when it ends, a millisecond to a tenth of a second later (see [`hold`]), its text
//! becomes one shared message, queued once for each client, which the client's writer sends
//! with one system call. A client that arrived during the round gets only what was announced
//! after it arrived: what came before is already in the list, or the count, it was greeted
//! with.
//!
//! A round must end before anything from or about a newcomer is queued for others, so that
//! nobody sees a user's message, or hole-punch request, before the line saying that user
//! joined: the registries ask [`Round::has_arrival`] first, and end the round if so. (Only
//! then: ending the round for every message would bring back a wake-up per join.)

use crate::outbox::{Message, Outbox};
use crate::worker::Worker;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::io;
use std::time::Duration;

/// The joins and leaves announced since the last round ended.
pub struct Round {
    text: String,
    /// Counts rounds. A client whose interest began in an earlier round is sent this one
    /// whole; one that arrived during it, only the part after its arrival.
    number: u64,
    /// Tells the [`ender`](start_ender) thread that a round has begun.
    begun: Sender<()>,
}

/// What tells the [ender](start_ender) thread that a round has begun, and, when the server
/// stops, wakes it to end.
pub struct Signals {
    begun: Receiver<()>,
    wake: Sender<()>,
}

/// Where a client's interest in the rounds begins: from this byte of this round on.
#[derive(Clone, Copy, Debug)]
pub struct Since {
    round: u64,
    offset: usize,
}

/// The most a round's buffer keeps between rounds: a round of ten thousand leaves is 600 KB,
/// which need not stay allocated until the next one.
const KEEP: usize = 64 * 1024;

/// A round that has ended: its text, to queue for everyone.
pub struct Ended {
    message: Message,
    number: u64,
}

impl Round {
    /// A first, empty round, and what tells when each round begins: give it to
    /// [`start_ender`].
    pub fn new() -> (Round, Signals) {
        let (begun, rounds) = bounded(1);
        let signals = Signals {
            begun: rounds,
            wake: begun.clone(),
        };
        let round = Round {
            text: String::new(),
            number: 0,
            begun,
        };
        (round, signals)
    }

    /// Adds `line` (a newline is added) for everyone listening.
    pub fn announce(&mut self, line: &str) {
        if self.text.is_empty() {
            // Full means the ender has not yet taken the last signal: it will end this round.
            let _ = self.begun.try_send(());
        }
        self.text.push_str(line);
        self.text.push('\n');
    }

    /// For a client arriving now: it will be sent what is announced from here on.
    pub fn since_now(&self) -> Since {
        Since {
            round: self.number,
            offset: self.text.len(),
        }
    }

    /// Whether the client whose interest began at `since` arrived during this round, which
    /// therefore still holds the line announcing it.
    pub fn has_arrival(&self, since: Since) -> bool {
        since.round == self.number && !self.text.is_empty()
    }

    /// Ends the round and returns it, or `None` if nothing was announced.
    pub fn end(&mut self) -> Option<Ended> {
        if self.text.is_empty() {
            return None;
        }
        let ended = Ended {
            message: self.text.as_bytes().into(),
            number: self.number,
        };
        self.text.clear();
        if self.text.capacity() > KEEP {
            self.text = String::new();
        }
        self.number += 1;
        Some(ended)
    }
}

impl Ended {
    /// Queues the round for each client, whose interest began at its `Since`: all of it,
    /// shared, if the client was there when the round began; else a copy of the part after
    /// its arrival. Returns the writers to wake.
    pub fn send<'a>(&self, clients: impl Iterator<Item = (&'a Outbox, Since)>) -> Woken {
        let mut queued = Vec::new();
        for (outbox, since) in clients {
            if let Some(part) = self.part_for(since) {
                if outbox.push_unwoken(part) {
                    queued.push(outbox.clone());
                }
            }
        }
        Woken(queued)
    }

    /// What of the round a client whose interest began at `since` is to be sent, if anything.
    fn part_for(&self, since: Since) -> Option<Message> {
        debug_assert!(since.round <= self.number, "a client from a later round");
        if since.round < self.number || since.offset == 0 {
            Some(self.message.clone())
        } else if since.offset < self.message.len() {
            Some(self.message[since.offset..].into())
        } else {
            None
        }
    }
}

/// The writers a round was queued for, still asleep: dropping this wakes them. Kept until the
/// registry's lock is let go, so that nobody waits on the lock while ten thousand writers are
/// woken one by one.
#[must_use = "dropping it at once wakes the writers under the lock"]
#[derive(Default)]
pub struct Woken(Vec<Outbox>);

impl Woken {
    /// How many writers it wakes.
    pub fn count(&self) -> usize {
        self.0.len()
    }
}

impl Drop for Woken {
    fn drop(&mut self) {
        for outbox in &self.0 {
            outbox.wake();
        }
    }
}

/// How long a round gathers: 10 µs for each client it will be sent to, between 1 and 100 ms.
/// Ending a round costs about that much per client (a queue push, a wake-up, a write), so
/// sending rounds never takes much more than one core, whatever the number of clients; and a
/// join in a room of a hundred still shows within a couple of milliseconds.
fn hold(clients: usize) -> Duration {
    let per_client = Duration::from_micros(10);
    (per_client * u32::try_from(clients).unwrap_or(u32::MAX))
        .clamp(Duration::from_millis(1), Duration::from_millis(100))
}

/// Starts the thread that ends each round once it has gathered for a while: `signals` is
/// what [`Round::new`] returned; `end_round` ends the current round under the registry's
/// lock, queues it, and returns the writers to wake, which are woken here, after the lock.
/// The thread runs until the returned [`Worker`] is dropped: a signal wakes it from waiting
/// for a round to begin, its stop flag from gathering one (which it then leaves unsent).
pub fn start_ender(
    signals: Signals,
    end_round: impl Fn() -> Woken + Send + 'static,
) -> io::Result<Worker> {
    let Signals { begun, wake } = signals;
    // Full means a signal is already waiting, which wakes the ender just as well.
    let wake = move || {
        let _ = wake.try_send(());
    };
    Worker::spawn("rounds", wake, move |stop| {
        let mut clients = 0;
        for () in &begun {
            if !stop.pause(hold(clients)) {
                return;
            }
            let woken = end_round();
            clients = woken.count();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_is_its_lines_and_an_empty_round_is_nothing() {
        let (mut round, signals) = Round::new();
        assert!(round.end().is_none());
        round.announce("JOIN a");
        round.announce("JOIN b");
        assert!(
            signals.begun.try_recv().is_ok(),
            "the first line signals the ender"
        );
        assert!(signals.begun.try_recv().is_err(), "once per round");
        let ended = round.end().expect("two lines");
        assert_eq!(&ended.message[..], b"JOIN a\nJOIN b\n");
        assert!(round.end().is_none());
    }

    #[test]
    fn a_client_that_arrives_mid_round_is_told_only_what_came_after() {
        let (mut round, _signals) = Round::new();
        let before = round.since_now();
        round.announce("JOIN a");
        let mid = round.since_now();
        round.announce("JOIN b");
        let after = round.since_now();
        let ended = round.end().unwrap();
        let part = |since| ended.part_for(since).map(|m| m.to_vec());
        assert_eq!(part(before).unwrap(), b"JOIN a\nJOIN b\n");
        assert_eq!(part(mid).unwrap(), b"JOIN b\n");
        assert_eq!(part(after), None);
        round.announce("JOIN c");
        let later = round.end().unwrap();
        assert_eq!(
            &later.part_for(mid).unwrap()[..],
            b"JOIN c\n",
            "rounds after its own come whole"
        );
    }

    #[test]
    fn a_round_begun_while_the_ender_sleeps_is_ended_too() {
        use parking_lot::Mutex;
        use std::sync::Arc;
        let (round, signals) = Round::new();
        let round = Arc::new(Mutex::new(round));
        let (sent, ended) = crossbeam_channel::unbounded();
        let shared = round.clone();
        let _ender = start_ender(signals, move || {
            if let Some(ended) = shared.lock().end() {
                let _ = sent.send(ended.message);
            }
            Woken::default()
        })
        .unwrap();
        for line in ["JOIN a", "JOIN b", "JOIN c"] {
            round.lock().announce(line);
            // Sometimes while the ender sleeps on the last signal, sometimes after.
            std::thread::sleep(Duration::from_micros(700));
        }
        let mut text = Vec::new();
        while text != b"JOIN a\nJOIN b\nJOIN c\n" {
            let message = ended
                .recv_timeout(Duration::from_secs(10))
                .expect("every line sent within 10 s");
            text.extend_from_slice(&message);
        }
    }

    #[test]
    fn rounds_gather_longer_for_more_clients_within_bounds() {
        assert_eq!(hold(0), Duration::from_millis(1));
        assert_eq!(hold(1000), Duration::from_millis(10));
        assert_eq!(hold(1_000_000), Duration::from_millis(100));
    }
}
