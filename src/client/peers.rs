//! The other clients, and which path reaches each of them.
//!
//! A peer behind the same NAT as us (same public IP) is reached at its private address: NATs
//! here do not hairpin. A peer behind another NAT is reached at its public address, once a
//! coordinated hole punch has opened both NATs. When no direct path answers within
//! [`RELAY_AFTER`](super::delivery::RELAY_AFTER), messages go through the server's relay, and
//! every [`DIRECT_RETRY`] the direct path is tried again: longer than conntrack's 30 s for an
//! unanswered UDP flow, so that a stale NAT entry from a failed punch has expired by then and
//! a relayed peer can heal back to a direct path.
//!
//! An Asleep peer (registered, not yet awake) has no public endpoint: nothing reaches it,
//! and chats to it are refused until it wakes. While we are Asleep ourselves, we do not know
//! our own public IP, so no peer counts as behind our NAT until we wake.

use super::delivery::{ReplayWindow, RELAY_AFTER};
use crate::wire::PeerInfo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a relayed peer stays relayed before the direct path is tried again.
pub const DIRECT_RETRY: Duration = Duration::from_secs(35);
/// Probes per hole-punching burst, and the pause between them.
const PROBES: u32 = 5;
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// How messages reach a peer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Nothing has come back from the peer's direct address yet.
    Untried,
    /// A datagram came straight from the peer's direct address.
    Direct,
    /// The direct path did not answer; the server relays. Try direct again at `retry_at`.
    Relayed { retry_at: Instant },
}

/// Where one transmission goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Direct(SocketAddr),
    Relay,
}

/// A burst of hole-punching probes in progress.
struct Burst {
    left: u32,
    next: Instant,
}

pub struct Peer {
    pub info: PeerInfo,
    /// Same public IP as ours: behind the same NAT. False while either side is Asleep.
    pub same_nat: bool,
    pub path: Path,
    /// Which of its messages we have shown.
    pub received: ReplayWindow,
    punch_asked: bool,
    burst: Option<Burst>,
}

impl Peer {
    fn new(info: PeerInfo, my_public: Option<SocketAddr>) -> Peer {
        let mut peer = Peer {
            same_nat: false,
            info,
            path: Path::Untried,
            received: ReplayWindow::default(),
            punch_asked: false,
            burst: None,
        };
        peer.relocate(peer.info.public, my_public);
        peer
    }

    /// Asleep: registered, but its UDP endpoint is not known yet.
    pub fn is_asleep(&self) -> bool {
        self.info.public.is_none()
    }

    /// The address that reaches the peer without the server; none while it is Asleep.
    pub fn direct_addr(&self) -> Option<SocketAddr> {
        if self.same_nat {
            Some(self.info.private)
        } else {
            self.info.public
        }
    }

    /// Whether a datagram from `addr` can be from this peer.
    ///
    /// Only the direct address counts: a private address means something only behind the
    /// same NAT (another LAN may well use the same 192.168.1.x), and a peer behind the same
    /// NAT is never heard from at its public address (no hairpinning).
    pub fn sent_from(&self, addr: SocketAddr) -> bool {
        Some(addr) == self.direct_addr()
    }

    /// The peer's public endpoint, or ours, is new (a NAT gave it a new mapping; it or we
    /// woke): every path must be found again, but what it already sent stays known, so
    /// that its retransmissions are not shown twice.
    pub fn relocate(&mut self, public: Option<SocketAddr>, my_public: Option<SocketAddr>) {
        self.info.public = public;
        self.same_nat = matches!((public, my_public), (Some(p), Some(m)) if p.ip() == m.ip());
        self.path = Path::Untried;
        self.punch_asked = false;
        self.burst = None;
    }

    /// The path, in a word, for `@show_list`.
    pub fn path_label(&self) -> &'static str {
        match (self.path, self.same_nat) {
            (Path::Relayed { .. }, _) => "relayed",
            (_, true) => "private",
            (Path::Direct, false) => "direct",
            (Path::Untried, false) => "new",
        }
    }

    /// Chooses the route for a transmission of a message first sent `age` ago. Returns
    /// it, and whether to ask the server for a coordinated hole punch now.
    pub fn route(&mut self, age: Duration, now: Instant) -> (Route, bool) {
        match self.path {
            Path::Relayed { retry_at } => {
                let mut ask_punch = false;
                if now >= retry_at {
                    self.path = Path::Relayed {
                        retry_at: now + DIRECT_RETRY,
                    };
                    ask_punch = self.try_direct_again(now);
                }
                (Route::Relay, ask_punch)
            }
            _ if age >= RELAY_AFTER => {
                self.path = Path::Relayed {
                    retry_at: now + DIRECT_RETRY,
                };
                self.burst = None;
                (Route::Relay, false)
            }
            path => {
                // Chats to an Asleep peer are refused before they get here; the relay
                // would refuse too.
                let Some(addr) = self.direct_addr() else {
                    return (Route::Relay, false);
                };
                let ask_punch = path == Path::Untried && !self.same_nat && !self.punch_asked;
                self.punch_asked |= ask_punch;
                (Route::Direct(addr), ask_punch)
            }
        }
    }

    /// Starts probing the direct path: the private address at once (no NAT between us), a
    /// public one through the server, so that both sides punch at the same moment.
    fn try_direct_again(&mut self, now: Instant) -> bool {
        if self.same_nat {
            self.start_burst(now);
            false
        } else {
            true
        }
    }

    /// The server says: punch now (the peer is doing the same).
    pub fn start_burst(&mut self, now: Instant) {
        self.burst = Some(Burst {
            left: PROBES,
            next: now,
        });
    }

    /// The address to send a probe to now, if a burst is due.
    pub fn probe_due(&mut self, now: Instant) -> Option<SocketAddr> {
        let burst = self.burst.as_mut()?;
        if burst.next > now {
            return None;
        }
        burst.left -= 1;
        burst.next = now + PROBE_EVERY;
        if burst.left == 0 {
            self.burst = None;
        }
        self.direct_addr()
    }

    /// A datagram came straight from the peer: the direct path works.
    pub fn confirm_direct(&mut self) {
        self.path = Path::Direct;
        self.burst = None;
    }
}

/// Everyone we know of, by ID, sorted for display.
pub struct Peers {
    pub me: PeerInfo,
    others: BTreeMap<String, Peer>,
}

impl Peers {
    pub fn new(me: PeerInfo) -> Peers {
        Peers {
            me,
            others: BTreeMap::new(),
        }
    }

    /// We woke, or the server sees us at a new endpoint: which peers are behind our NAT may
    /// have changed, and with it every direct address.
    pub fn set_my_public(&mut self, public: SocketAddr) {
        if self.me.public == Some(public) {
            return;
        }
        self.me.public = Some(public);
        for peer in self.others.values_mut() {
            peer.relocate(peer.info.public, Some(public));
        }
    }

    /// Adds or replaces a peer (a rejoin starts afresh).
    pub fn insert(&mut self, info: PeerInfo) {
        let peer = Peer::new(info, self.me.public);
        self.others.insert(peer.info.id.clone(), peer);
    }

    pub fn remove(&mut self, id: &str) -> Option<Peer> {
        self.others.remove(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Peer> {
        self.others.get_mut(id)
    }

    pub fn get(&self, id: &str) -> Option<&Peer> {
        self.others.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.others.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.others.values_mut()
    }

    pub fn len(&self) -> usize {
        self.others.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, public: &str, private: &str) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            public: Some(public.parse().unwrap()),
            private: private.parse().unwrap(),
        }
    }

    #[test]
    fn same_nat_goes_private_other_nat_punches_then_relays_then_retries() {
        let me = info("me", "10.0.0.1:10081", "192.168.1.2:10081");
        let mut peers = Peers::new(me);
        peers.insert(info("near", "10.0.0.1:40000", "192.168.1.3:10081"));
        peers.insert(info("far", "10.0.0.2:10081", "192.168.2.2:10081"));
        let now = Instant::now();

        let near = peers.get_mut("near").unwrap();
        assert_eq!(
            near.route(Duration::ZERO, now),
            (Route::Direct("192.168.1.3:10081".parse().unwrap()), false)
        );
        assert_eq!(near.path_label(), "private");

        let far = peers.get_mut("far").unwrap();
        let public = Route::Direct("10.0.0.2:10081".parse().unwrap());
        assert_eq!(
            far.route(Duration::ZERO, now),
            (public, true),
            "first send asks for a punch"
        );
        assert_eq!(
            far.route(Duration::from_millis(250), now),
            (public, false),
            "only once"
        );
        assert_eq!(far.path_label(), "new");
        assert_eq!(far.route(RELAY_AFTER, now), (Route::Relay, false));
        assert_eq!(far.path_label(), "relayed");
        assert_eq!(
            far.route(Duration::ZERO, now + Duration::from_secs(1)),
            (Route::Relay, false)
        );
        assert_eq!(
            far.route(Duration::ZERO, now + DIRECT_RETRY),
            (Route::Relay, true),
            "heal attempt"
        );
        far.confirm_direct();
        assert_eq!(far.path_label(), "direct");
        assert_eq!(far.route(Duration::ZERO, now), (public, false));
    }

    #[test]
    fn only_the_direct_address_speaks_for_a_peer_and_a_move_keeps_what_was_seen() {
        let me = info("me", "10.0.0.1:10081", "192.168.1.2:10081");
        let mut peer = Peer::new(
            info("far", "10.0.0.2:10081", "192.168.1.3:10081"),
            me.public,
        );
        assert!(peer.sent_from("10.0.0.2:10081".parse().unwrap()));
        assert!(
            !peer.sent_from("192.168.1.3:10081".parse().unwrap()),
            "a LAN neighbour's address"
        );
        assert!(peer.received.first_time(1));
        peer.confirm_direct();
        peer.relocate(Some("10.0.0.2:40000".parse().unwrap()), me.public);
        assert_eq!(peer.path, Path::Untried);
        assert!(peer.sent_from("10.0.0.2:40000".parse().unwrap()));
        assert!(
            !peer.received.first_time(1),
            "a retransmission after the move is no news"
        );
    }

    #[test]
    fn an_asleep_peer_has_no_direct_address_until_it_wakes_and_neither_do_we() {
        let mut peers = Peers::new(PeerInfo {
            public: None,
            ..info("me", "10.0.0.1:10081", "192.168.1.2:10081")
        });
        peers.insert(PeerInfo {
            public: None,
            ..info("sleepy", "10.0.0.1:1", "192.168.1.3:10081")
        });
        peers.insert(info("near", "10.0.0.1:40000", "192.168.1.4:10081"));
        let sleepy = peers.get_mut("sleepy").unwrap();
        assert!(sleepy.is_asleep());
        assert_eq!(sleepy.direct_addr(), None);
        assert!(!peers.get_mut("near").unwrap().same_nat, "we are Asleep");

        peers.set_my_public("10.0.0.1:10081".parse().unwrap());
        let near = peers.get_mut("near").unwrap();
        assert!(near.same_nat, "awake, we see it is behind our NAT");
        assert_eq!(
            near.direct_addr(),
            Some("192.168.1.4:10081".parse().unwrap())
        );
        let sleepy = peers.get_mut("sleepy").unwrap();
        sleepy.relocate(
            Some("10.0.0.1:50000".parse().unwrap()),
            Some("10.0.0.1:10081".parse().unwrap()),
        );
        assert_eq!(
            sleepy.direct_addr(),
            Some("192.168.1.3:10081".parse().unwrap())
        );
    }

    #[test]
    fn a_burst_sends_a_few_spaced_probes() {
        let me = info("me", "10.0.0.1:10081", "192.168.1.2:10081");
        let mut peer = Peer::new(
            info("far", "10.0.0.2:10081", "192.168.2.2:10081"),
            me.public,
        );
        let now = Instant::now();
        peer.start_burst(now);
        let mut sent = 0;
        for step in 0..20 {
            if peer.probe_due(now + PROBE_EVERY * step).is_some() {
                sent += 1;
            }
        }
        assert_eq!(sent, PROBES);
    }
}
