//! Who is online: the registration server's one piece of shared state.
//!
//! The registry lives behind `Arc<Mutex<Registry>>`. Every change to it, and every event that
//! change causes, happens under the lock, and events are only *queued* there (an
//! [`Outbox`] push never blocks): so each client sees joins and leaves in the order they
//! happened, and no socket is ever written while the lock is held. Joins and leaves go out
//! in [rounds](crate::rounds), a few milliseconds' worth at a time.

use crate::outbox::{line_message, Outbox};
use crate::rounds::{Round, Since, Woken};
use crate::wire::{Announce, AnnounceKind, Event, LeaveReason, PeerInfo, Secret, MAX_LINE};
use std::collections::HashMap;
use std::fmt::Write;
use std::iter;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One registered client.
pub struct Member {
    /// Which connection owns the ID, so that a connection that ends late can never remove
    /// a newer registration of the same ID.
    pub conn: u64,
    pub outbox: Outbox,
    pub private: SocketAddr,
    /// Unknown until the client's first UDP announcement arrives.
    pub public: Option<SocketAddr>,
    /// Which joins and leaves it is told of: those after it was listed.
    since: Option<Since>,
    secret: Secret,
    last_heard: Instant,
    /// When it last asked for a hole punch: see [`Registry::may_punch`].
    last_punch: Option<Instant>,
}

impl Member {
    fn info(&self, id: &str) -> Option<PeerInfo> {
        Some(PeerInfo {
            id: id.to_string(),
            public: self.public?,
            private: self.private,
        })
    }
}

/// About how many bytes of the list go in one message: see [`Registry::send_list`].
const LIST_PIECE: usize = 16 * 1024;

/// How often one client may ask for a hole punch.
const PUNCH_EVERY: Duration = Duration::from_millis(100);

/// What a UDP announcement changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Announced {
    /// First announcement: the client is now listed, at this public endpoint.
    Ready(SocketAddr),
    /// `@awake`, at this public endpoint (which may be new).
    Awake(SocketAddr),
    /// A keep-alive from a new public endpoint: the NAT mapping changed.
    Moved(SocketAddr),
    /// A keep-alive, nothing new.
    Refreshed,
    /// Unknown ID or wrong secret: ignored.
    Rejected,
}

pub struct Registry {
    members: HashMap<String, Member>,
    next_conn: u64,
    /// The joins and leaves not yet sent.
    round: Round,
}

impl Registry {
    /// An empty registry that announces joins and leaves in `round`.
    pub fn new(round: Round) -> Registry {
        Registry {
            members: HashMap::new(),
            next_conn: 0,
            round,
        }
    }

    /// Claims `id` for a new connection, which will announce itself with `secret`; the
    /// caller sends `WELCOME <secret>`. Refuses an ID that someone already holds: its owner
    /// keeps it. Returns the connection's number.
    pub fn register(
        &mut self,
        id: &str,
        private: SocketAddr,
        outbox: Outbox,
        secret: Secret,
    ) -> Result<u64, String> {
        if self.members.contains_key(id) {
            return Err(format!("ID '{id}' is already in use; choose another"));
        }
        self.next_conn += 1;
        self.members.insert(
            id.to_string(),
            Member {
                conn: self.next_conn,
                outbox,
                private,
                public: None,
                since: None,
                secret,
                last_heard: Instant::now(),
                last_punch: None,
            },
        );
        Ok(self.next_conn)
    }

    /// Applies a UDP announcement that came from `from`. Only one carrying the ID's secret
    /// changes anything. On the first one, the newcomer gets the list and everyone else a
    /// `JOIN` (in the round); on a new endpoint, everyone else gets a `MOVE`.
    pub fn announce(&mut self, announce: &Announce, from: SocketAddr) -> Announced {
        let Some(member) = self.members.get_mut(&announce.id) else {
            return Announced::Rejected;
        };
        if !member.secret.matches(&announce.secret) {
            return Announced::Rejected;
        }
        member.last_heard = Instant::now();
        let previous = member.public.replace(from);
        match previous {
            None => {
                self.send_list(&announce.id, from);
                let member = &self.members[&announce.id];
                if let Some(info) = member.info(&announce.id) {
                    self.round.announce(&Event::Joined(info).to_string());
                }
                // Everything before this is in the list it was just sent.
                let since = self.round.since_now();
                if let Some(member) = self.members.get_mut(&announce.id) {
                    member.since = Some(since);
                }
                return Announced::Ready(from);
            }
            Some(old) if old != from => {
                let moved = Event::Moved {
                    id: announce.id.clone(),
                    public: from,
                };
                self.announce_first(&announce.id);
                // A hint, not a must: a client whose endpoint keeps changing must not be able
                // to fill everyone's queue with it.
                let moved = line_message(&moved.to_string());
                for (id, member) in &self.members {
                    if *id != announce.id && member.since.is_some() {
                        member.outbox.offer(moved.clone());
                    }
                }
                if announce.kind != AnnounceKind::Awake {
                    return Announced::Moved(from);
                }
            }
            Some(_) => {}
        }
        match announce.kind {
            AnnounceKind::Awake => Announced::Awake(from),
            _ => Announced::Refreshed,
        }
    }

    /// `READY`, then one `PEER` per listed client (itself included), then `LIST_END`. Sent
    /// in pieces of about [`LIST_PIECE`] bytes, not as one message: the list of ten thousand
    /// clients is 600 KB, and allocations that large, one per join, leave the heap
    /// fragmented long after they are freed.
    fn send_list(&self, id: &str, public: SocketAddr) {
        let outbox = &self.members[id].outbox;
        let peers = self
            .members
            .iter()
            .filter_map(|(other, m)| m.info(other))
            .map(Event::Peer);
        let list = iter::once(Event::Ready { public })
            .chain(peers)
            .chain(iter::once(Event::ListEnd));
        let mut piece = String::with_capacity(LIST_PIECE + MAX_LINE);
        for event in list {
            let _ = writeln!(piece, "{event}");
            if piece.len() >= LIST_PIECE {
                outbox.push(piece.as_bytes().into());
                piece.clear();
            }
        }
        if !piece.is_empty() {
            outbox.push(piece.as_bytes().into());
        }
    }

    /// Removes `id` if connection `conn` still owns it, and tells everyone else.
    /// Returns the public endpoint it had, if it was listed.
    pub fn remove(
        &mut self,
        id: &str,
        conn: u64,
        reason: LeaveReason,
    ) -> Option<Option<SocketAddr>> {
        if self.members.get(id)?.conn != conn {
            return None;
        }
        let member = self.members.remove(id)?;
        if member.since.is_some() {
            let left = Event::Left {
                id: id.to_string(),
                reason,
            };
            self.round.announce(&left.to_string());
        }
        Some(member.public)
    }

    /// The clients not heard from for `timeout`, with their connection numbers.
    pub fn silent(&self, timeout: Duration) -> Vec<(String, u64)> {
        self.members
            .iter()
            .filter(|(_, m)| m.last_heard.elapsed() > timeout)
            .map(|(id, m)| (id.clone(), m.conn))
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// Whether `id` is registered and listed (its UDP endpoint is known).
    pub fn is_listed(&self, id: &str) -> bool {
        self.members.get(id).is_some_and(|m| m.since.is_some())
    }

    /// Whether connection `conn` holds `id` and is listed: what a client must be to ask for
    /// anything. (A connection whose client the reaper removed may still have requests in
    /// flight; they must not act for a newer registration of the same ID.)
    pub fn is_listed_as(&self, id: &str, conn: u64) -> bool {
        self.members
            .get(id)
            .is_some_and(|m| m.conn == conn && m.since.is_some())
    }

    /// Ends the round of joins and leaves: queues it for every listed client. Returns their
    /// writers, to wake once the lock is let go.
    pub fn end_round(&mut self) -> Woken {
        let Some(ended) = self.round.end() else {
            return Woken::default();
        };
        let listed = self.members.values();
        ended.send(listed.filter_map(|m| Some((&m.outbox, m.since?))))
    }

    /// Ends the round if it still holds the line announcing `id`: before anything from or
    /// about `id` is queued for others, so that nobody hears from a client before hearing it
    /// joined.
    fn announce_first(&mut self, id: &str) {
        let since = self.members.get(id).and_then(|m| m.since);
        if since.is_some_and(|since| self.round.has_arrival(since)) {
            // Rare (a newcomer's first words within its round): woken under the lock.
            drop(self.end_round());
        }
    }

    /// Offers `event`, which comes from or is about client `from`, to listed client `to`, best
    /// effort: hole-punch requests and relayed datagrams, which their senders repeat, and
    /// which a flood must not turn into a queue full enough to cut the recipient off.
    /// `from`'s join goes out first if it has not yet ([`announce_first`](Self::announce_first)).
    pub fn offer(&mut self, to: &str, from: &str, event: &Event) {
        self.announce_first(from);
        if let Some(member) = self.members.get(to).filter(|m| m.since.is_some()) {
            member.outbox.offer(line_message(&event.to_string()));
        }
    }

    /// Whether `id` may ask for a hole punch now: at most one every [`PUNCH_EVERY`], so that
    /// nobody can make other clients spray probes.
    pub fn may_punch(&mut self, id: &str) -> bool {
        let Some(member) = self.members.get_mut(id) else {
            return false;
        };
        let now = Instant::now();
        if member
            .last_punch
            .is_some_and(|last| now - last < PUNCH_EVERY)
        {
            return false;
        }
        member.last_punch = Some(now);
        true
    }
}
