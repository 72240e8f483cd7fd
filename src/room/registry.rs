//! Who is in the room, and how a line reaches all of them.
//!
//! The members sit in a copy-on-write list, `Mutex<Arc<Vec<Member>>>`:
//! - a join or a leave changes the list under the lock, and announces its line in the
//!   current [round](crate::scale::rounds) under the lock too, so every user sees joins and leaves
//!   in the same order, each with the count of that moment. The list is copied only when a
//!   broadcast still holds the old one;
//! - a message takes the lock only to clone the `Arc` (and, if its sender's arrival is still
//!   in the round, to end the round first), then queues one shared line on every member's
//!   [`Outbox`]. Many users' messages go out at once, each user's in the order it sent them
//!   (its connection thread sends them one after another). When a member's queue is full,
//!   the message waits for room a little ([`PATIENCE`]): a flood is slowed to the pace of
//!   its slowest reader rather than lost.
//!
//! Nothing here writes to a socket: a line is only *queued*. A member whose queue stays full
//! has stopped reading; its [`Outbox`] cuts it off, and its own connection thread then sees
//! the end of its stream and leaves like anyone else.

use super::online;
use crate::outbox::{line_message, Outbox};
use crate::scale::rounds::{self, Round, Since, Woken};
use crate::worker::Worker;
use parking_lot::Mutex;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a message waits for room in a full queue before its reader counts as stopped.
/// A reader that is only slow frees a slot within microseconds; a stopped one frees none.
const PATIENCE: Duration = Duration::from_millis(500);

#[derive(Clone)]
struct Member {
    /// Which connection: numbered as they join, so never mistaken for another.
    id: u64,
    outbox: Outbox,
    /// Which joins and leaves it is told of: those after its own.
    since: Since,
}

pub struct Room {
    members: Arc<Mutex<Members>>,
    /// The thread that ends the rounds: stopped and joined when the room is dropped.
    _rounds: Worker,
}

struct Members {
    list: Arc<Vec<Member>>,
    joined: u64,
    /// The joins and leaves not yet sent.
    round: Round,
}

impl Members {
    /// Ends the round of joins and leaves: queues it for everyone. Returns their writers, to
    /// wake once the lock is let go.
    fn end_round(&mut self) -> Woken {
        let Some(ended) = self.round.end() else {
            return Woken::default();
        };
        ended.send(self.list.iter().map(|m| (&m.outbox, m.since)))
    }
}

/// A member's place in the room. Dropping it is leaving, so a member leaves however its
/// connection thread ends.
pub struct Presence<'a> {
    room: &'a Room,
    id: u64,
    addr: SocketAddr,
    /// Where its arrival stands in the rounds.
    since: Since,
}

impl Drop for Presence<'_> {
    fn drop(&mut self) {
        self.room.leave(self.id, self.addr);
    }
}

impl Presence<'_> {
    /// Prints `for_others` and queues it for every member but this one, who gets
    /// `for_sender`.
    pub fn relay(&self, for_others: &str, for_sender: &str) {
        let (members, _woken) = {
            let mut members = self.room.members.lock();
            // Nobody may read a user's message before the line saying the user came in.
            let woken = match members.round.has_arrival(self.since) {
                true => members.end_round(),
                false => Woken::default(),
            };
            (Arc::clone(&members.list), woken)
        };
        crate::event!("{for_others}");
        let shared = line_message(for_others);
        for member in members.iter() {
            let message = match member.id == self.id {
                true => line_message(for_sender),
                false => shared.clone(),
            };
            member.outbox.push_patiently(message, PATIENCE);
        }
    }
}

impl Room {
    /// An empty room, and the thread that ends its rounds of joins and leaves.
    pub fn start() -> io::Result<Room> {
        let (round, signals) = Round::new();
        let members = Arc::new(Mutex::new(Members {
            list: Arc::default(),
            joined: 0,
            round,
        }));
        let shared = members.clone();
        let rounds = rounds::start_ender(signals, move || shared.lock().end_round())?;
        Ok(Room {
            members,
            _rounds: rounds,
        })
    }

    /// Lets `addr` in. Its first line is `Connected to the chat server (...)`; everyone
    /// already here is told `New user ... entered (...)`.
    pub fn join(&self, addr: SocketAddr, outbox: Outbox) -> Presence<'_> {
        let mut members = self.members.lock();
        let count = online(members.list.len() + 1);
        outbox.push_line(&format!("Connected to the chat server ({count})"));
        announce(
            &mut members.round,
            &format!("New user {addr} entered ({count})"),
        );
        members.joined += 1;
        let id = members.joined;
        let since = members.round.since_now();
        Arc::make_mut(&mut members.list).push(Member { id, outbox, since });
        Presence {
            room: self,
            id,
            addr,
            since,
        }
    }

    fn leave(&self, id: u64, addr: SocketAddr) {
        let mut members = self.members.lock();
        let list = Arc::make_mut(&mut members.list);
        let Some(index) = list.iter().position(|m| m.id == id) else {
            return;
        };
        list.swap_remove(index);
        let count = online(list.len());
        announce(
            &mut members.round,
            &format!("The user {addr} left ({count})"),
        );
    }
}

/// Prints `line` and announces it in `round`.
fn announce(round: &mut Round, line: &str) {
    crate::event!("{line}");
    round.announce(line);
}
