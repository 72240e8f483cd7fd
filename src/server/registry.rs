//! Who is online: the registration server's one piece of shared state.
//!
//! The registry lives behind `Arc<Mutex<Registry>>`. Every change to it, and every event that
//! change causes, happens under the lock, and events are only *queued* there (an
//! [`Outbox`] push never blocks): so each client sees joins and leaves in the order they
//! happened, and no socket is ever written while the lock is held. Joins and leaves go out
//! in [rounds](crate::scale::rounds), a few milliseconds' worth at a time.

use crate::mac;
use crate::nonce::{Key, Nonce, Nonces};
use crate::outbox::{line_message, Outbox};
use crate::scale::rounds::{Round, Since, Woken};
use crate::wire::{Announce, Event, IdInUse, LeaveReason, Nat, PeerInfo, Public, MAX_LINE};
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
    /// `Asleep` (no endpoint) until the client's first UDP announcement arrives: while it is
    /// Asleep, or (not yet listed) while its `HELLO` is on its way. `Relayed` once it said
    /// that its UDP does not get through (`UDP_BLOCKED`): for good, on this connection.
    pub public: Public,
    /// Not yet listed, it is closed at this moment: the registration time (`--register-secs`)
    /// counts from accept to being listed, its `HELLO` or `UDP_BLOCKED` included.
    register_by: Instant,
    /// Which joins and leaves it is told of: those after it was listed.
    since: Option<Since>,
    /// Its session's own random value: with the server's secret, it makes the keys of its
    /// pairs ([`Registry::pair_key`]).
    session: Nonce,
    /// The proof the server waits for: an address it does not know as this client's must
    /// answer it before it counts (path validation).
    challenge: Option<Challenge>,
    /// When the last challenge was sent: see [`CHALLENGE_EVERY`].
    challenged_at: Option<Instant>,
    /// When its last Awake request was told to everyone: see [`AWAKE_TOLD_EVERY`].
    awake_told: Option<Instant>,
    /// The last keep-alive (or proof) from its known endpoint.
    last_heard: Instant,
    /// When it last asked for a hole punch: see [`Registry::may_punch`].
    last_punch: Option<Instant>,
    /// How its NAT behaves, as it reported (`NAT <kind>`); told to everyone.
    nat: Nat,
    /// When it last reported its NAT: see [`NAT_EVERY`].
    nat_told: Option<Instant>,
    /// Its NAT discovery under way (`NAT_TEST`): the probes that count.
    nat_test: Option<NatTest>,
    /// When its last `NAT_TEST` began: see [`NAT_EVERY`].
    nat_tested: Option<Instant>,
}

/// A client's NAT discovery: the nonce its `NAT_PROBE`s must bring, until when, and how many
/// have been answered.
#[derive(Clone, Copy)]
struct NatTest {
    nonce: Nonce,
    until: Instant,
    answered: u32,
}

/// How long a `NAT_TEST`'s probes are answered.
const NAT_TEST_LIFETIME: Duration = Duration::from_secs(10);

/// How many of a `NAT_TEST`'s probes are answered, both ports together: enough for a client
/// that repeats each a few times (UDP loses some), few enough that a test is a handful of
/// short lines.
const NAT_ANSWERS: u32 = 12;

/// At most one `NAT_TEST`, and one `NAT` report, per client this often: a report goes to
/// everyone, so a client saying it again and again must not become a flood.
const NAT_EVERY: Duration = Duration::from_secs(5);

/// What the server does for a `NAT_PROBE` that counts: the line for the client's own
/// connection is queued already; this is the datagram to send, if any.
#[derive(Debug, PartialEq, Eq)]
pub struct NatAnswer {
    /// Send `NAT_OPEN <nonce>` from the port no client sends to (see
    /// [`announcements`](super::announcements)) to this address: the client's known
    /// endpoint, which the probe came from.
    pub open_to: Option<SocketAddr>,
    /// The nonce to echo.
    pub nonce: Nonce,
}

impl Member {
    /// What everyone else is told of it.
    fn info(&self, id: &str) -> PeerInfo {
        PeerInfo {
            id: id.to_string(),
            public: self.public,
            private: self.private,
        }
    }

    /// Listed without a UDP endpoint: registered with `--asleep`, and not yet awake.
    fn is_asleep(&self) -> bool {
        self.since.is_some() && self.public == Public::Asleep
    }

    /// Whether the server expects keep-alives from it: listed at a UDP endpoint. An Asleep
    /// client has none yet; a relayed one's UDP is blocked, and its TCP connection is its
    /// liveness.
    fn keeps_alive(&self) -> bool {
        self.since.is_some() && matches!(self.public, Public::At(_))
    }
}

/// What the server knew of a client that left.
#[derive(Debug, PartialEq, Eq)]
pub enum Departed {
    /// It was listed: awake at this public endpoint, Asleep, or relayed.
    Listed(Public),
    /// Its first UDP announcement never arrived, so nobody was told of it.
    Unannounced,
}

/// A challenge sent to a client over TCP: the nonce its `HELLO` (or Awake request) must
/// bring back.
#[derive(Clone, Copy)]
struct Challenge {
    nonce: Nonce,
    until: Instant,
}

/// How long a challenge may take to come back: its `HELLO` goes over UDP, which a slow
/// link may delay or lose (the client sends it again with each Awake request it repeats).
const CHALLENGE_LIFETIME: Duration = Duration::from_secs(10);

/// At most one challenge per client this often: a flood of datagrams claiming someone's ID
/// from elsewhere must not turn into a flood of lines on that client's connection.
const CHALLENGE_EVERY: Duration = Duration::from_secs(1);

/// An Awake request repeated within this long (a client sends it again until the answer
/// comes, and on a slow link the answer may take longer than that) is the same request:
/// answered to the client, not told to everyone again.
const AWAKE_TOLD_EVERY: Duration = Duration::from_secs(1);

/// About how many bytes of the list go in one message: see [`Registry::send_list`].
const LIST_PIECE: usize = 16 * 1024;

/// How often one client may ask for a hole punch.
const PUNCH_EVERY: Duration = Duration::from_millis(100);

/// How the others are told of an endpoint.
#[derive(Clone, Copy)]
enum Telling {
    /// As any event: a client whose queue stays full is cut off rather than miss it.
    Must,
    /// As a hint, dropped for a client whose queue is half full: a client whose endpoint
    /// keeps changing, or who keeps saying it is awake, cannot fill everyone's queue.
    Hint,
}

/// What a UDP announcement changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Announced {
    /// First announcement: the client is now listed, at this public endpoint.
    Ready(SocketAddr),
    /// An Awake request, from this public endpoint (which may be new): an Asleep client
    /// woke, or an awake one announced itself again.
    Awake(SocketAddr),
    /// A keep-alive from a new public endpoint: the NAT mapping changed.
    Moved(SocketAddr),
    /// A keep-alive, nothing new.
    Refreshed,
    /// Unknown ID, a keep-alive from elsewhere (challenged), a wrong or spent nonce:
    /// nothing changed.
    Rejected,
}

pub struct Registry {
    members: HashMap<String, Member>,
    /// The server's own secret, from which each pair's key is derived.
    pair_secret: Key,
    /// Where challenges and sessions' own values come from.
    nonces: Nonces,
    next_conn: u64,
    /// The joins and leaves not yet sent.
    round: Round,
    /// The server's second UDP port, for NAT discovery; `None` when it could not be bound.
    nat_port: Option<u16>,
}

impl Registry {
    /// An empty registry that announces joins and leaves in `round`. Its secrets come from
    /// the operating system's random source, which may fail. `nat_port` is the server's
    /// second UDP port (NAT discovery), if it has one.
    pub fn new(round: Round, nat_port: Option<u16>) -> std::io::Result<Registry> {
        Ok(Registry {
            members: HashMap::new(),
            pair_secret: Key::fresh()?,
            nonces: Nonces::new()?,
            next_conn: 0,
            round,
            nat_port,
        })
    }

    /// Claims `id` for a new connection and sends it `WELCOME <nonce>`: the challenge its
    /// first `HELLO` answers, from the address that is to be its endpoint. An Asleep client
    /// (`asleep`) is listed at once, without an endpoint; any other is listed when its
    /// `HELLO` arrives (or its `UDP_BLOCKED`: see [`udp_blocked`](Self::udp_blocked)), and
    /// closed if neither has by `register_by`. Refuses an ID that someone already holds: its
    /// owner keeps it. Returns the connection's number.
    pub fn register(
        &mut self,
        id: &str,
        private: SocketAddr,
        outbox: Outbox,
        asleep: bool,
        register_by: Instant,
    ) -> Result<u64, IdInUse> {
        if self.members.contains_key(id) {
            return Err(IdInUse { id: id.to_string() });
        }
        let (nonce, session) = (self.nonces.draw(), self.nonces.draw());
        self.next_conn += 1;
        outbox.push_line(&Event::Welcome { nonce }.to_string());
        let now = Instant::now();
        self.members.insert(
            id.to_string(),
            Member {
                conn: self.next_conn,
                outbox,
                private,
                public: Public::Asleep,
                register_by,
                since: None,
                session,
                // Good for as long as the registration may take: on a slow link WELCOME
                // itself may come late, and the HELLOs after it.
                challenge: Some(Challenge {
                    nonce,
                    until: register_by.max(now + CHALLENGE_LIFETIME),
                }),
                // WELCOME's challenge does not count: a client may need a second at once.
                challenged_at: None,
                awake_told: None,
                last_heard: now,
                last_punch: None,
                nat: Nat::Unknown,
                nat_told: None,
                nat_test: None,
                nat_tested: None,
            },
        );
        if asleep {
            self.list(id);
        }
        Ok(self.next_conn)
    }

    /// Lists `id`: sends it the list, and everyone else a `JOIN` (in the round).
    fn list(&mut self, id: &str) {
        let Some(member) = self.members.get(id) else {
            return;
        };
        let joined = Event::Joined(member.info(id));
        self.send_list(id, member.public);
        self.round.announce(&joined.to_string());
        // Everything before this is in the list it was just sent.
        let since = self.round.since_now();
        if let Some(member) = self.members.get_mut(id) {
            member.since = Some(since);
        }
    }

    /// Applies a UDP announcement that came from `from`.
    ///
    /// The server believes an address only when it is proven: a `HELLO` (or an Awake
    /// request) bringing back the nonce of the client's live challenge, which went over its
    /// own TCP connection. Then:
    /// - a client not yet listed is listed (the list to it, a `JOIN` to everyone else);
    /// - an Asleep client wakes, and an Awake request is answered: `AWAKE` to everyone, the
    ///   client included, so it learns its request arrived and the others its endpoint;
    /// - a client at a new address has moved: `MOVE` to everyone else.
    ///
    /// A keep-alive from the known endpoint needs no proof. An Awake request always does,
    /// and a keep-alive from anywhere else (a NAT that gave the client a new mapping, or
    /// somebody replaying or forging its datagrams) only makes the server challenge the
    /// client, which answers from wherever it really is, and says Awake only if it asked to.
    pub fn announce(&mut self, announce: &Announce, from: SocketAddr) -> Announced {
        let id = announce.id();
        let Some(member) = self
            .members
            .get_mut(id)
            .filter(|m| m.public != Public::Relayed)
        else {
            // Unknown, or relayed: its UDP is blocked by its own word, so this is not its.
            return Announced::Rejected;
        };
        let now = Instant::now();
        let (nonce, awake) = match announce {
            Announce::Hello { nonce, .. } => (Some(nonce), false),
            Announce::Awake { nonce, .. } => (nonce.as_ref(), true),
            Announce::Alive { .. } => (None, false),
            // Not an announcement of the endpoint: see `nat_probe`.
            Announce::NatProbe { .. } => return Announced::Rejected,
        };
        let proven = nonce.is_some_and(|nonce| {
            member
                .challenge
                .is_some_and(|c| c.until > now && c.nonce.matches(nonce))
        });
        if proven {
            member.challenge = None;
        } else if awake || member.public != Public::At(from) {
            // An Awake request without proof, even from the known endpoint (whose address
            // anyone can forge), or anything else from elsewhere: a challenge, if it is one
            // that could be the client's (an Asleep client sends no keep-alives; a client
            // not yet listed has its challenge in WELCOME). Only the client can answer it,
            // and it answers as an Awake request only if it is making one.
            if member.since.is_some() && (awake || member.keeps_alive()) {
                self.challenge(id, now);
            }
            return Announced::Rejected;
        }
        member.last_heard = now;
        let listed = member.since.is_some();
        let previous = std::mem::replace(&mut member.public, Public::At(from));
        if !listed {
            self.list(id);
            return Announced::Ready(from);
        }
        let woke = previous == Public::Asleep;
        if woke || awake {
            return self.awake(id, from, woke, now);
        }
        if previous == Public::At(from) {
            return Announced::Refreshed;
        }
        let moved = Event::Moved {
            id: id.to_string(),
            public: from,
        };
        self.tell_everyone(id, &moved, Telling::Hint);
        Announced::Moved(from)
    }

    /// An Awake request from `id`, now at `public`: answered to it, and told to everyone,
    /// unless it is the same request again (see [`AWAKE_TOLD_EVERY`]). When the client
    /// `woke` from Asleep, its endpoint is news nobody may miss: the others' only way to learn
    /// where to reach it.
    fn awake(&mut self, id: &str, public: SocketAddr, woke: bool, now: Instant) -> Announced {
        let Some(member) = self.members.get_mut(id) else {
            return Announced::Rejected;
        };
        let awake = Event::Awake {
            id: id.to_string(),
            public,
        };
        let repeated = member
            .awake_told
            .is_some_and(|told| now - told < AWAKE_TOLD_EVERY);
        if repeated && !woke {
            member.outbox.push_line(&awake.to_string());
            return Announced::Refreshed;
        }
        member.awake_told = Some(now);
        let telling = if woke { Telling::Must } else { Telling::Hint };
        self.tell_everyone(id, &awake, telling);
        Announced::Awake(public)
    }

    /// Challenges `id` over its TCP connection: `CHALLENGE <nonce>`, which its next `HELLO`
    /// must bring back. A live challenge is not replaced, and a new one goes out at most
    /// every [`CHALLENGE_EVERY`].
    fn challenge(&mut self, id: &str, now: Instant) {
        let Some(member) = self.members.get_mut(id) else {
            return;
        };
        let live = member.challenge.is_some_and(|c| c.until > now);
        let recent = member
            .challenged_at
            .is_some_and(|at| now - at < CHALLENGE_EVERY);
        if live || recent {
            return;
        }
        let nonce = self.nonces.draw();
        member.challenge = Some(Challenge {
            nonce,
            until: now + CHALLENGE_LIFETIME,
        });
        member.challenged_at = Some(now);
        member
            .outbox
            .push_line(&Event::Challenge { nonce }.to_string());
    }

    /// The key `a` and `b` share, for tagging what they send each other: the same for both,
    /// derived, never stored. `None` unless both are registered.
    pub fn pair_key(&self, a: &str, b: &str) -> Option<Key> {
        let (a, b) = (self.members.get(a)?, self.members.get(b)?);
        Some(mac::derive(&self.pair_secret, &a.session, &b.session))
    }

    /// Tells everyone listed that `id`'s endpoint is now known or changed: `id` itself for
    /// certain (the answer to its Awake request, or the news that its proof of a new
    /// address arrived); the others as `telling` says.
    fn tell_everyone(&mut self, id: &str, event: &Event, telling: Telling) {
        self.announce_first(id);
        let message = line_message(&event.to_string());
        for (other, member) in &self.members {
            if other == id {
                member.outbox.push(message.clone());
            } else if member.since.is_some() {
                match telling {
                    Telling::Must => member.outbox.push(message.clone()),
                    Telling::Hint => drop(member.outbox.offer(message.clone())),
                }
            }
        }
    }

    /// `READY`, then one `PEER` per listed client (itself included), then `LIST_END`. Sent
    /// in pieces of about [`LIST_PIECE`] bytes, not as one message: the list of ten thousand
    /// clients is 600 KB, and allocations that large, one per join, leave the heap
    /// fragmented long after they are freed.
    fn send_list(&self, id: &str, public: Public) {
        let outbox = &self.members[id].outbox;
        // Everyone listed, and the newcomer itself.
        let peers = self
            .members
            .iter()
            .filter(|(other, m)| m.since.is_some() || *other == id)
            .map(|(other, m)| Event::Peer(m.info(other)));
        // After the list, not in it: a client that does not know `NAT` lines skips them
        // once registered, but would be confused by one inside its list.
        let nats = self
            .members
            .iter()
            .filter(|(other, m)| m.since.is_some() && *other != id && m.nat != Nat::Unknown)
            .map(|(other, m)| Event::Nat {
                id: other.clone(),
                kind: m.nat,
            });
        let list = iter::once(Event::Ready { public })
            .chain(peers)
            .chain(iter::once(Event::ListEnd))
            .chain(nats);
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
    /// Returns what was known of it.
    pub fn remove(&mut self, id: &str, conn: u64, reason: LeaveReason) -> Option<Departed> {
        if self.members.get(id)?.conn != conn {
            return None;
        }
        let member = self.members.remove(id)?;
        if member.since.is_none() {
            return Some(Departed::Unannounced);
        }
        let left = Event::Left {
            id: id.to_string(),
            reason,
        };
        self.round.announce(&left.to_string());
        Some(Departed::Listed(member.public))
    }

    /// The clients not heard from for `timeout`, and those not listed by the end of their
    /// registration time, with their connection numbers. An Asleep or relayed client is
    /// never silent: it has no UDP endpoint to keep alive, and stays registered for as long
    /// as its TCP connection lives.
    pub fn silent(&self, timeout: Duration) -> Vec<(String, u64)> {
        let now = Instant::now();
        self.members
            .iter()
            .filter(|(_, m)| match m.since {
                None => now > m.register_by,
                Some(_) => m.keeps_alive() && m.last_heard.elapsed() > timeout,
            })
            .map(|(id, m)| (id.clone(), m.conn))
            .collect()
    }

    /// The server was not running for `away` (stopped, paused): nobody could be heard, so
    /// nobody's silence counts that time, nor does anyone's registration time.
    pub fn excuse(&mut self, away: Duration) {
        let now = Instant::now();
        for member in self.members.values_mut() {
            member.last_heard = (member.last_heard + away).min(now);
            member.register_by += away;
        }
    }

    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// Whether `id` is registered and listed (awake, or Asleep).
    pub fn is_listed(&self, id: &str) -> bool {
        self.members.get(id).is_some_and(|m| m.since.is_some())
    }

    /// Whether `id` is listed and Asleep: it has no endpoint, so nothing can reach it.
    pub fn is_asleep(&self, id: &str) -> bool {
        self.members.get(id).is_some_and(Member::is_asleep)
    }

    /// Whether `id` is relayed: its UDP is blocked, so no punch can reach it.
    pub fn is_relayed(&self, id: &str) -> bool {
        self.members
            .get(id)
            .is_some_and(|m| m.public == Public::Relayed)
    }

    /// `UDP_BLOCKED` from connection `conn`, registered as `id`: its `HELLO`s do not reach
    /// us. If it is not listed yet, it is listed now as relayed (`READY relayed` and the list
    /// to it, a `JOIN` to everyone else), never reaped for UDP silence, and from now on no
    /// UDP announcement counts for it. Anything else (listed already, its `HELLO` having
    /// come first, or Asleep, or relayed) changes nothing. Returns whether it was listed now.
    pub fn udp_blocked(&mut self, id: &str, conn: u64) -> bool {
        let Some(member) = self
            .members
            .get_mut(id)
            .filter(|m| m.conn == conn && m.since.is_none())
        else {
            return false;
        };
        member.public = Public::Relayed;
        member.challenge = None;
        self.list(id);
        true
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

    /// The server's second UDP port, if it has one: what `NAT_TEST` is answered.
    pub fn nat_port(&self) -> Option<u16> {
        self.nat_port
    }

    /// `NAT_TEST <nonce>` from connection `conn`, registered as `id`: its `NAT_PROBE`s with
    /// this nonce are answered for [`NAT_TEST_LIFETIME`]. Only for a client listed at a UDP
    /// endpoint (an Asleep or relayed one has no mapping to test), at most one test every
    /// [`NAT_EVERY`]. `Err` says why not, for the client.
    pub fn nat_test(&mut self, id: &str, conn: u64, nonce: Nonce) -> Result<(), &'static str> {
        let now = Instant::now();
        let member = self
            .members
            .get_mut(id)
            .filter(|m| m.conn == conn && m.keeps_alive())
            .ok_or("NAT discovery is for a client listed at a UDP endpoint")?;
        if member.nat_tested.is_some_and(|at| now - at < NAT_EVERY) {
            return Err("NAT discovery: one test every 5 s");
        }
        member.nat_tested = Some(now);
        member.nat_test = Some(NatTest {
            nonce,
            until: now + NAT_TEST_LIFETIME,
            answered: 0,
        });
        Ok(())
    }

    /// A `NAT_PROBE <id> <nonce>` that arrived from `from` on the server's UDP port `port`
    /// (`main`: the registration port, else the second one). It counts only with the nonce
    /// of `id`'s live `NAT_TEST`, which went over its own TCP connection, and only
    /// [`NAT_ANSWERS`] times: then `NAT_SEEN <port> <from>` is queued for `id` (over TCP,
    /// to nobody else), and, for a probe to the main port that came from `id`'s known
    /// endpoint, a `NAT_OPEN` is due from the port no client sends to. Anything else:
    /// `None`, and nothing is sent.
    pub fn nat_probe(
        &mut self,
        id: &str,
        nonce: &Nonce,
        from: SocketAddr,
        port: u16,
        main: bool,
    ) -> Option<NatAnswer> {
        let member = self.members.get_mut(id)?;
        let test = member.nat_test.as_mut()?;
        if test.until <= Instant::now()
            || !test.nonce.matches(nonce)
            || test.answered >= NAT_ANSWERS
        {
            return None;
        }
        test.answered += 1;
        let seen = Event::NatSeen { port, seen: from };
        member.outbox.push_line(&seen.to_string());
        Some(NatAnswer {
            open_to: (main && member.public == Public::At(from)).then_some(from),
            nonce: test.nonce,
        })
    }

    /// `NAT <kind>` from connection `conn`, registered and listed as `id`: stored, and told to
    /// everyone else in the round (a client listed later finds it after its list). Only a
    /// change counts, at most one every [`NAT_EVERY`]. Returns whether it was told.
    pub fn set_nat(&mut self, id: &str, conn: u64, kind: Nat) -> Result<bool, &'static str> {
        if !self.is_listed_as(id, conn) {
            return Err("report your NAT once you are listed");
        }
        let now = Instant::now();
        let Some(member) = self.members.get_mut(id) else {
            return Ok(false);
        };
        if member.nat == kind {
            return Ok(false);
        }
        if member.nat_told.is_some_and(|at| now - at < NAT_EVERY) {
            return Err("one NAT report every 5 s");
        }
        member.nat = kind;
        member.nat_told = Some(now);
        let told = Event::Nat {
            id: id.to_string(),
            kind,
        };
        self.round.announce(&told.to_string());
        Ok(true)
    }
}
