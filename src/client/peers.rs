//! Who is online: the book of peers ([`Peers`]), and for each one ([`Peer`]) what the
//! server told us of it, the key we share with it, its paths, and what it has sent us.
//!
//! The book changes as the server's lines come in: a peer joins, wakes, moves or leaves, and
//! after we register again the server's new list replaces the old one. What a peer sent us
//! outlives its leaving: a peer that comes back, or that a restarted server lists again, may
//! retransmit what we already showed, which must not be shown twice. So the book keeps each
//! departed peer aside, in the away list (up to [`AWAY_KEPT`] of them).
//!
//! A peer missing from the list of a server we registered with again (it restarted) has not
//! left: it is registering again itself, most likely from the same addresses, and the key we
//! share and the direct path we found still work. When it is listed again at the same
//! addresses, it comes back whole, its path included: the chat stays direct across the
//! server's restart instead of punching again.
//!
//! How each peer is reached (its candidate addresses, the probes that validate them, and the
//! route of each message) is in [`super::paths`].

use super::inbound::Inbound;
use super::paths::Paths;
use super::prediction::{role, Prediction, Role};
use crate::nonce::{Key, Nonces};
use crate::wire::{Nat, PeerInfo, Public};
use std::collections::BTreeMap;
use std::time::Instant;

/// How many peers that left are remembered (what they sent us): see [`Peers`].
const AWAY_KEPT: usize = 1024;

/// One other client, the paths to it, and what it has sent us.
pub struct Peer {
    /// What the server told us of it.
    pub info: PeerInfo,
    /// The key we share with it: from the server's `PUNCH`.
    key: Option<Key>,
    /// The ways to reach it, and the route each message takes.
    pub paths: Paths,
    /// What it has sent us, shown in order.
    pub inbound: Inbound,
    /// How its NAT behaves, as its discovery found it (the server's `NAT` line).
    pub nat: Nat,
    /// Port prediction with it: the attempt under way, the socket one won.
    pub prediction: Prediction,
}

impl Peer {
    fn new(info: PeerInfo, ours_blocked: bool) -> Peer {
        Peer {
            paths: Paths::new(info.private, info.public, ours_blocked),
            info,
            key: None,
            inbound: Inbound::default(),
            nat: Nat::Unknown,
            prediction: Prediction::default(),
        }
    }

    /// Asleep: registered, but its UDP endpoint is not known yet.
    pub fn is_asleep(&self) -> bool {
        self.info.public == Public::Asleep
    }

    /// The key we share with it, once the server has handed it over.
    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    /// The server keyed us and says: probe now (the peer is doing the same). See
    /// [`Paths::start_burst`].
    pub fn punch(&mut self, key: Key, nonces: &mut Nonces, now: Instant) {
        self.key = Some(key);
        self.paths.start_burst(nonces, now);
    }

    /// Its public endpoint is new (a NAT gave it a new mapping; it woke): every path must be
    /// found again, but what it already sent stays known, so that its retransmissions are
    /// not shown twice, and the key stays (it is the same session).
    pub fn relocate(&mut self, public: Public) {
        self.info.public = public;
        self.paths.relocate(self.info.private, public);
        self.prediction.end();
    }
}

/// Everyone we know of, by ID, sorted for display.
pub struct Peers {
    /// Ourselves, as the server lists us.
    pub me: PeerInfo,
    /// How our own NAT behaves, as our discovery found it.
    my_nat: Nat,
    /// Whether port prediction may be tried (`--no-port-prediction` says no).
    predict: bool,
    others: BTreeMap<String, Peer>,
    /// Peers that left, or that a server we registered with again did not list: kept (at
    /// most [`AWAY_KEPT`] of them), so that a retransmission after they come back is not
    /// shown twice, and, for those that did not leave, so that their paths survive.
    away: BTreeMap<String, Away>,
}

/// A peer no longer listed, kept aside.
struct Away {
    peer: Peer,
    /// It went missing from a server's new list without leaving: should it be listed again
    /// at the same addresses, its key and paths are still good. (One that left and comes back
    /// is a new session, with a new key to come.)
    may_return: bool,
}

impl Peers {
    /// Just us; `predict`: whether port prediction may be tried.
    pub fn new(me: PeerInfo, predict: bool) -> Peers {
        Peers {
            me,
            my_nat: Nat::Unknown,
            predict,
            others: BTreeMap::new(),
            away: BTreeMap::new(),
        }
    }

    /// Adds or replaces a peer. Its paths start afresh, unless it is one that went missing
    /// from a restarted server's list and comes back at the same addresses; what it sent us
    /// is kept either way (a new session of it starts its own books afresh: see `Inbound`).
    pub fn insert(&mut self, info: PeerInfo) {
        let id = info.id.clone();
        let before = match self.others.remove(&id) {
            Some(peer) => Some(Away {
                peer,
                may_return: false,
            }),
            None => self.away.remove(&id),
        };
        let peer = match before {
            Some(away) if away.may_return && away.peer.info == info => away.peer,
            before => {
                let mut peer = Peer::new(info, self.me.public == Public::Relayed);
                if let Some(away) = before {
                    peer.inbound = away.peer.inbound;
                }
                peer
            }
        };
        self.others.insert(id, peer);
    }

    /// Our own NAT's kind, as our discovery found it: every peer's paths learn whether a
    /// punch can work.
    pub fn set_my_nat(&mut self, nat: Nat) {
        self.my_nat = nat;
        for peer in self.others.values_mut() {
            hope(&self.me, nat, self.predict, peer);
        }
    }

    /// Peer `id`'s NAT kind, as the server passed it on.
    pub fn set_nat(&mut self, id: &str, nat: Nat) {
        if let Some(peer) = self.others.get_mut(id) {
            peer.nat = nat;
            hope(&self.me, self.my_nat, self.predict, peer);
        }
    }

    /// Our own public endpoint, as the server now lists it. Our UDP blocked, or no longer
    /// (registered again, from elsewhere), every path is found afresh.
    pub fn set_mine(&mut self, public: Public) {
        let blocked = public == Public::Relayed;
        let was = std::mem::replace(&mut self.me.public, public) == Public::Relayed;
        if blocked != was {
            for peer in self.others.values_mut() {
                peer.paths = Paths::new(peer.info.private, peer.info.public, blocked);
                peer.prediction.end();
                hope(&self.me, self.my_nat, self.predict, peer);
            }
        }
    }

    /// Keeps only the peers a server we registered with again lists (`keep` accepts their
    /// ID); the others are kept aside, whole: they may be registering again themselves.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let gone: Vec<String> = self.others.keys().filter(|id| !keep(id)).cloned().collect();
        for id in gone {
            self.put_away(&id, true);
        }
    }

    /// The peer left; what it sent us is kept aside.
    pub fn remove(&mut self, id: &str) {
        self.put_away(id, false);
    }

    fn put_away(&mut self, id: &str, may_return: bool) {
        let Some(mut peer) = self.others.remove(id) else {
            return;
        };
        if !may_return {
            peer.prediction.end();
        }
        if self.away.len() >= AWAY_KEPT {
            self.away.pop_first();
        }
        self.away.insert(id.to_string(), Away { peer, may_return });
    }

    pub fn get(&self, id: &str) -> Option<&Peer> {
        self.others.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Peer> {
        self.others.get_mut(id)
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

    /// Our part in port prediction with peer `id`, if it may be tried: see [`role`].
    pub fn prediction_role(&self, id: &str) -> Option<Role> {
        let peer = self.others.get(id)?;
        let across = across_nats(&self.me, peer)?;
        (self.predict && across)
            .then(|| role(self.my_nat, peer.nat))
            .flatten()
    }
}

/// `@show_list`'s words for a pair of NATs no punch can connect: port prediction could, but
/// is switched off.
const PREDICTION_OFF: &str = "relayed (these NATs cannot be punched; port prediction is off)";
/// And for a pair that nothing direct can connect.
const NOTHING_MEETS: &str = "relayed (both NATs change their port for each destination: no \
                             punch or port guess can meet)";

/// Whether we and `peer` are behind different public addresses (`None`: either has none).
/// Two clients behind the same one may reach each other on their LAN whatever their NAT does
/// to the outside, so for them the kinds say nothing.
fn across_nats(me: &PeerInfo, peer: &Peer) -> Option<bool> {
    match (me.public, peer.info.public) {
        (Public::At(ours), Public::At(theirs)) => Some(ours.ip() != theirs.ip()),
        _ => None,
    }
}

/// Tells `peer`'s paths whether a punch between our NAT (`mine`) and its can work, or port
/// prediction (`predict`: may be tried) in its place.
fn hope(me: &PeerInfo, mine: Nat, predict: bool, peer: &mut Peer) {
    let across = across_nats(me, peer).unwrap_or(true);
    let why = match role(mine, peer.nat) {
        _ if !across || !mine.punch_cannot_work(peer.nat) => None,
        Some(_) if predict => None,
        Some(_) => Some(PREDICTION_OFF),
        None => Some(NOTHING_MEETS),
    };
    peer.paths.set_punch_hopeless(why);
}

#[cfg(test)]
mod tests {
    use super::super::paths::tests::{route, ME};
    use super::super::paths::Route;
    use super::*;
    use std::time::Duration;

    fn info(id: &str, public: &str, private: &str) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            public: Public::At(public.parse().unwrap()),
            private: private.parse().unwrap(),
        }
    }

    /// The first message of a session.
    const ONE: crate::wire::Numbered = crate::wire::Numbered {
        session: 1,
        seq: 1,
        base: 1,
    };

    #[test]
    fn a_peer_missing_from_a_restarted_servers_list_comes_back_with_its_path() {
        let mut nonces = Nonces::new().unwrap();
        let now = Instant::now();
        let mut peers = Peers::new(info("me", "10.0.0.9:10081", "192.168.9.9:10081"), true);
        let far = info("far", "10.0.0.2:10081", "192.168.2.2:10081");
        let direct = |peers: &mut Peers, nonces: &mut Nonces| {
            let peer = peers.get_mut("far").unwrap();
            peer.punch(Key::fresh().unwrap(), nonces, now);
            let probes = peer.paths.probes_due(now);
            peer.paths.answered(probes[1].0, &probes[1].1, ME, ME, now);
            assert_eq!(peer.paths.label(), "direct");
        };
        peers.insert(far.clone());
        direct(&mut peers, &mut nonces);

        // The server restarted: we registered first, and far is not listed yet.
        peers.retain(|id| id == "me");
        assert!(peers.get("far").is_none());
        peers.insert(far.clone());
        let back = peers.get("far").unwrap();
        assert_eq!(
            back.paths.label(),
            "direct",
            "the path survived the restart"
        );
        assert!(back.key().is_some());

        // One that left, and comes back (a new session): found afresh.
        peers.remove("far");
        peers.insert(far.clone());
        assert_eq!(peers.get("far").unwrap().paths.label(), "new");
        // One listed again elsewhere: found afresh too.
        direct(&mut peers, &mut nonces);
        peers.retain(|id| id == "me");
        peers.insert(info("far", "10.0.0.2:40000", "192.168.2.2:10081"));
        assert_eq!(peers.get("far").unwrap().paths.label(), "new");
    }

    #[test]
    fn a_move_keeps_what_was_seen_and_the_key() {
        use super::super::inbound::Arrival;
        let mut nonces = Nonces::new().unwrap();
        let mut peer = Peer::new(info("p", "10.0.0.2:10081", "192.168.2.2:10081"), false);
        let now = Instant::now();
        peer.punch(Key::fresh().unwrap(), &mut nonces, now);
        let probes = peer.paths.probes_due(now);
        assert!(peer
            .paths
            .answered(probes[1].0, &probes[1].1, ME, ME, now)
            .is_some());
        assert_eq!(peer.inbound.arrive(ONE, "hi".into(), now).0, Arrival::New);
        peer.relocate(Public::At("10.0.0.2:40000".parse().unwrap()));
        assert_eq!(peer.paths.label(), "new", "its paths are found afresh");
        assert!(peer.key().is_some());
        assert_eq!(
            peer.inbound.arrive(ONE, "hi".into(), now).0,
            Arrival::Again,
            "a retransmission after the move is no news"
        );
    }

    #[test]
    fn the_kinds_of_both_nats_decide_whether_a_punch_or_port_prediction_is_tried() {
        let mut nonces = Nonces::new().unwrap();
        let now = Instant::now();
        for predict in [true, false] {
            let mut peers = Peers::new(info("me", "10.0.0.9:10081", "192.168.9.9:10081"), predict);
            peers.insert(info("far", "10.0.0.2:10081", "192.168.2.2:10081"));
            peers.insert(info("home", "10.0.0.9:40000", "192.168.9.3:10081"));
            peers.insert(info("open", "10.0.0.3:10081", "192.168.3.3:10081"));
            peers.insert(info("hard", "10.0.0.4:10081", "192.168.4.4:10081"));
            peers.set_my_nat(Nat::Symmetric);
            for id in ["far", "home", "open", "hard"] {
                assert_eq!(peers.get(id).unwrap().paths.label(), "new", "kinds unknown");
                assert_eq!(peers.prediction_role(id), None);
            }
            peers.set_nat("far", Nat::Cone);
            peers.set_nat("home", Nat::Cone);
            peers.set_nat("open", Nat::Open);
            peers.set_nat("hard", Nat::Symmetric);
            let far = peers.get_mut("far").unwrap();
            if predict {
                assert_eq!(
                    route(&mut far.paths, Duration::ZERO, now, &mut nonces),
                    (Route::Hold, true),
                    "symmetric to a filtering NAT: a punch, and our ports guessed"
                );
                assert_eq!(peers.prediction_role("far"), Some(Role::Hard));
            } else {
                assert_eq!(
                    route(&mut far.paths, Duration::ZERO, now, &mut nonces),
                    (Route::Relay, false),
                    "symmetric to a filtering NAT, no port prediction: the relay at once"
                );
                assert_eq!(far.paths.label(), PREDICTION_OFF);
                assert_eq!(peers.prediction_role("far"), None);
            }
            let hard = peers.get_mut("hard").unwrap();
            assert_eq!(
                route(&mut hard.paths, Duration::ZERO, now, &mut nonces),
                (Route::Relay, false),
                "two symmetric NATs: nothing direct can meet"
            );
            assert_eq!(hard.paths.label(), NOTHING_MEETS);
            assert_eq!(peers.prediction_role("hard"), None);
            let home = peers.get_mut("home").unwrap();
            assert_eq!(
                route(&mut home.paths, Duration::ZERO, now, &mut nonces),
                (Route::Hold, true),
                "behind our own NAT: its LAN address may work"
            );
            assert_eq!(peers.prediction_role("home"), None, "and no guessing");
            let open = peers.get_mut("open").unwrap();
            assert_eq!(
                route(&mut open.paths, Duration::ZERO, now, &mut nonces),
                (Route::Hold, true),
                "its NAT does not filter: our probes get in"
            );
            assert_eq!(peers.prediction_role("open"), None);
            // We turn out to be behind a typical home router after all (a new network).
            peers.set_my_nat(Nat::Cone);
            let far = peers.get_mut("far").unwrap();
            assert_eq!(
                route(&mut far.paths, Duration::ZERO, now, &mut nonces),
                (Route::Hold, !predict),
                "a punch (asked for already, if we were to guess)"
            );
            assert_eq!(peers.prediction_role("far"), None);
            let hard = peers.get("hard").unwrap();
            assert_eq!(
                hard.paths.label(),
                if predict { "new" } else { PREDICTION_OFF }
            );
            let easy = predict.then_some(Role::Easy);
            assert_eq!(
                peers.prediction_role("hard"),
                easy,
                "now we guess its ports"
            );
        }
    }

    #[test]
    fn a_relayed_peer_and_every_peer_of_ours_when_our_udp_is_blocked_take_the_relay_at_once() {
        let mut nonces = Nonces::new().unwrap();
        let now = Instant::now();
        let relayed = PeerInfo {
            public: Public::Relayed,
            ..info("walled", "10.0.0.1:1", "192.168.1.3:10081")
        };
        let mut peers = Peers::new(info("me", "10.0.0.9:10081", "192.168.9.9:10081"), true);
        peers.insert(relayed);
        peers.insert(info("far", "10.0.0.2:10081", "192.168.2.2:10081"));
        let walled = peers.get_mut("walled").unwrap();
        assert!(!walled.is_asleep());
        assert_eq!(
            route(&mut walled.paths, Duration::ZERO, now, &mut nonces),
            (Route::Relay, false)
        );
        assert_eq!(walled.paths.label(), "relayed");
        assert!(walled.paths.probes_due(now).is_empty());
        let far = peers.get_mut("far").unwrap();
        assert_eq!(
            route(&mut far.paths, Duration::ZERO, now, &mut nonces),
            (Route::Hold, true)
        );

        // Our own UDP blocked: everyone is relayed, and no punch is asked for; unblocked
        // again, the paths are found afresh.
        peers.set_mine(Public::Relayed);
        let far = peers.get_mut("far").unwrap();
        assert_eq!(
            route(&mut far.paths, Duration::ZERO, now, &mut nonces),
            (Route::Relay, false)
        );
        assert_eq!(far.paths.label(), "relayed");
        peers.insert(info("late", "10.0.0.3:10081", "192.168.3.3:10081"));
        let late = peers.get_mut("late").unwrap();
        assert_eq!(
            route(&mut late.paths, Duration::ZERO, now, &mut nonces),
            (Route::Relay, false)
        );
        peers.set_mine(Public::At("10.0.0.9:10081".parse().unwrap()));
        let far = peers.get_mut("far").unwrap();
        assert_eq!(
            route(&mut far.paths, Duration::ZERO, now, &mut nonces),
            (Route::Hold, true)
        );
        assert_eq!(peers.get("walled").unwrap().paths.label(), "relayed");
    }
}
