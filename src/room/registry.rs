//! Who is in the room, and how a line reaches all of them.
//!
//! The members sit in a copy-on-write list, `Mutex<Arc<Vec<Member>>>`:
//! - a join or a leave changes the list under the lock, and queues its line for everyone
//!   under the lock too, so every user sees joins and leaves in the same order, each with the
//!   count of that moment. The list is copied only when a broadcast still holds the old one;
//! - a message takes the lock only to clone the `Arc`, then queues one shared line on every
//!   member's [`Outbox`]. Many users' messages go out at once, each user's in the order it
//!   sent them (its connection thread sends them one after another). When a member's queue
//!   is full, the message waits for room a little ([`PATIENCE`]): a flood is slowed to the
//!   pace of its slowest reader rather than lost.
//!
//! Nothing here writes to a socket: a line is only *queued*. A member whose queue stays full
//! has stopped reading; its [`Outbox`] cuts it off, and its own connection thread then sees
//! the end of its stream and leaves like anyone else.

use super::online;
use crate::outbox::{line_message, Outbox};
use parking_lot::Mutex;
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
}

#[derive(Default)]
pub struct Room {
    members: Mutex<Members>,
}

#[derive(Default)]
struct Members {
    list: Arc<Vec<Member>>,
    joined: u64,
}

/// A member's place in the room. Dropping it is leaving, so a member leaves however its
/// connection thread ends.
pub struct Presence<'a> {
    room: &'a Room,
    id: u64,
    addr: SocketAddr,
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
        let members = Arc::clone(&self.room.members.lock().list);
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
    /// Lets `addr` in. Its first line is `Connected to the chat server (...)`; everyone
    /// already here is told `New user ... entered (...)`.
    pub fn join(&self, addr: SocketAddr, outbox: Outbox) -> Presence<'_> {
        let mut members = self.members.lock();
        let count = online(members.list.len() + 1);
        outbox.push_line(&format!("Connected to the chat server ({count})"));
        tell(&members.list, &format!("New user {addr} entered ({count})"));
        members.joined += 1;
        let id = members.joined;
        Arc::make_mut(&mut members.list).push(Member { id, outbox });
        Presence {
            room: self,
            id,
            addr,
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
        tell(&members.list, &format!("The user {addr} left ({count})"));
    }
}

/// Prints `line` and queues it for each of `members`: one message, shared by all, sent in
/// the flusher's next round ([`Outbox::push_later`]).
fn tell(members: &[Member], line: &str) {
    crate::event!("{line}");
    let message = line_message(line);
    for member in members {
        member.outbox.push_later(message.clone());
    }
}
