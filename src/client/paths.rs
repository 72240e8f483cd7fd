//! Each peer's paths: the addresses that may reach it, which of them are proven, and the
//! route each transmission takes. This is where the punch is decided and the relay chosen
//! ([`Paths::route`]).
//!
//! Each peer has candidate addresses: its private one (what it reported: right if it is on
//! our LAN), its public one (what the server saw: right across NATs, once a hole is
//! punched), and any address a genuine probe of its came from (a NAT that gives each
//! destination its own port shows the peer to us there: ICE calls it peer-reflexive).
//!
//! No candidate carries chat text until it is **validated**: we sent it a probe with a fresh
//! nonce, and the answer came back from that address, tagged with the key only this peer and
//! we share (handed to both by the server over TCP, with the `PUNCH` that starts the probing
//! on both sides at once). So a host that merely owns one of those addresses (another home
//! behind the same carrier NAT, with the same private subnet) gets at most a probe, which
//! reveals nothing, and can never answer as the peer. Until a path is validated, messages are
//! held; if none is validated before a message has waited too long (see [`Paths::route`]),
//! they go through the server's relay, and every [`DIRECT_RETRY`] the direct paths are
//! probed again: longer than conntrack's 30 s for an unanswered UDP flow, so that a stale NAT
//! entry from a failed punch has expired by then and a relayed peer can heal back to a
//! direct path.
//!
//! A message overdue on a validated path does not condemn the path: on a lossy link a
//! message, or its acknowledgement, is lost now and then while the path works. That copy
//! takes the relay, and the path itself is asked, with probes: only a path that answers none
//! of [`ASKS`] bursts, over at least as long as its round trip allows
//! ([`silence_allowed`](super::rtt::RoundTrip::silence_allowed)), is given up for the relay.
//!
//! A path given up is not forgotten for 35 s. When the peer's datagrams come straight again
//! ([`Paths::came_straight`]), or a message is overdue on the relay too (after an outage our
//! own TCP connection may wait many seconds for its next retransmission), the direct path is
//! asked again at once: both NATs still hold the flow, so this cannot collide.
//!
//! An Asleep peer (registered, not yet awake) has no public endpoint: it has only its
//! private candidate, and no punch is asked for. (Chats to it are refused until it wakes:
//! see [`super::commands`].)
//!
//! A relayed peer (its UDP is blocked on the way to the server: the server lists it as
//! `relayed`), and every peer while our own UDP is blocked, is reached through the relay at
//! once: no probe can get through, so nothing is held for one, and no punch is asked for.
//!
//! A peer whose NAT and ours cannot be punched through, as the two NAT discoveries found
//! them ([`Nat::punch_cannot_work`](crate::wire::Nat::punch_cannot_work): one side gives each
//! destination its own public port, and the other admits only replies to the port it sent
//! to), is reached through the relay at once too: no message waits for a punch that cannot
//! work, and none is asked for then. But the kinds are what two discoveries read, and a
//! reading can be wrong (a stale NAT entry that made one probe collide) or grow old (a NAT
//! that changed): so that decision expires as any relay does, and every [`DIRECT_RETRY`]
//! the direct paths are probed again, with a coordinated punch. Should the peer ask for one
//! sooner (it learned our kind later), its probes are answered and ours sent. A path that
//! validates after all is taken. Where the kinds are not known, nothing changes.
//! The exception is a pair that port prediction can connect ([`super::prediction`]: exactly
//! one of the two NATs changes its port with the destination): its paths are kept as for any
//! pair, the coordinated punch starts the guessing on both sides, and [`Paths::asking`] and
//! [`Paths::mapping_found`] are its two hooks here.
//!
//! These are the books only: the client sends what they say (the probes, the punch request,
//! each chat on its route: see [`super::transport`]).

use super::rtt::RoundTrip;
use crate::nonce::{Nonce, Nonces};
use crate::wire::Public;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a relayed peer stays relayed before the direct paths are probed again.
pub const DIRECT_RETRY: Duration = Duration::from_secs(35);
/// How long after a direct path was given up it may be asked again without a coordinated
/// punch, should the relay be slow too: both NATs keep an answered flow's entry at least
/// this long (conntrack's 120 s for an assured UDP stream), so asking it cannot collide.
const DIRECT_REMEMBERED: Duration = Duration::from_secs(120);
/// How many bursts of probes a doubted direct path must leave unanswered before it is given
/// up: a loss burst may swallow one or two whole bursts on a path that works.
const ASKS: u32 = 3;
/// Probes per burst, and the pause between them.
const PROBES: u32 = 5;
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// The most candidate addresses kept for one peer: probes from a peer whose NAT gives every
/// destination a new port may show it at several; a forger must not grow the list for ever.
const MAX_CANDIDATES: usize = 6;

/// How messages reach a peer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// No path validated yet.
    Untried,
    /// This validated address.
    Direct(SocketAddr),
    /// No direct path answered; the server relays. Probe again at `retry_at`.
    Relayed { retry_at: Instant },
    /// The peer's UDP, or ours, is blocked on the way to the server: only the relay can
    /// reach it, and no probe is ever sent.
    RelayOnly,
    /// The two NATs cannot be punched through, as their kinds say: the relay, at once, and
    /// no punch asked for until `retry_at`, when the direct paths are probed again (and the
    /// path is [`Path::Relayed`] from then on, should they not answer).
    NatsRelay { retry_at: Instant },
}

/// Where one transmission goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Direct(SocketAddr),
    Relay,
    /// Nowhere yet: a path is being probed, and the message is young.
    Hold,
}

/// Where a candidate address came from, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The address it reported on its own LAN.
    Private,
    /// The address the server saw.
    Public,
    /// An address a genuine probe of its came from.
    Reflexive,
}

/// One address that may reach the peer.
struct Candidate {
    addr: SocketAddr,
    kind: Kind,
    /// The nonce of the probes we send it now: only the peer can answer it, tagged.
    asking: Option<Nonce>,
    /// When the first probe with that nonce left: its answer times the round trip.
    asked_at: Option<Instant>,
    /// An answer came back from it.
    validated: bool,
}

/// A burst of probes in progress.
struct Burst {
    left: u32,
    next: Instant,
}

/// The paths to one peer: its candidate addresses, the probes that validate them, and the
/// path that carries the chat now.
pub struct Paths {
    candidates: Vec<Candidate>,
    /// How messages reach the peer now.
    path: Path,
    /// The peer is Asleep: it has no public endpoint yet, so no punch is asked for.
    asleep: bool,
    /// Whether we asked the server to key us and punch (once per try).
    punch_asked: bool,
    /// When the current path began: the peer was located, or a path validated. A message
    /// falls back to the relay only after waiting [`RoundTrip::relay_after`] on this path, not
    /// on one before it (one sent before the peer moved would otherwise undo each new path).
    path_since: Instant,
    burst: Option<Burst>,
    /// Since when the direct path is in doubt (a message on it went overdue) and being
    /// asked: a genuine answer from it ends the doubt.
    doubted_since: Option<Instant>,
    /// When to ask a doubted path again, if it has not answered by then.
    next_ask: Instant,
    /// How many bursts of probes the doubted path has been asked since the doubt began.
    asked: u32,
    /// The direct path last given up for the relay, and when.
    last_direct: Option<(SocketAddr, Instant)>,
    /// Our own UDP is blocked on the way to the server (it lists us as relayed): no path of
    /// ours can work either. Kept by [`Peers`](super::peers::Peers), which knows.
    ours_blocked: bool,
    /// The two NATs cannot be punched through, and the words that say why in `@show_list`:
    /// see [`Paths::set_punch_hopeless`]. Kept by [`Peers`](super::peers::Peers), which
    /// knows both kinds.
    punch_hopeless: Option<&'static str>,
}

/// A genuine answer to one of our probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The answering address now carries the chat, and none did before: what was held or
    /// relayed can go straight away.
    pub first_path: bool,
    /// The answering address was our direct path, in doubt, and works again.
    pub back: bool,
    /// The round trip it measured.
    pub round_trip: Duration,
}

impl Paths {
    /// The paths to a peer with these `private` and `public` addresses, all to be found
    /// (`ours_blocked`: our own UDP is blocked, so none can be).
    pub fn new(private: SocketAddr, public: Public, ours_blocked: bool) -> Paths {
        // A peer whose private address is its public one has no NAT: its one address is a
        // public one (reached from anywhere, and seeing our public address, not our
        // private one).
        let on_its_lan = Candidate::new(private, Kind::Private);
        // Its UDP, or ours, is blocked: no address of it can answer anything.
        let blocked = ours_blocked || public == Public::Relayed;
        let candidates = match public {
            _ if blocked => Vec::new(),
            Public::At(public) if public == private => {
                vec![Candidate::new(public, Kind::Public)]
            }
            Public::At(public) => vec![on_its_lan, Candidate::new(public, Kind::Public)],
            Public::Asleep | Public::Relayed => vec![on_its_lan],
        };
        let path = if blocked {
            Path::RelayOnly
        } else {
            Path::Untried
        };
        Paths {
            candidates,
            path,
            asleep: public == Public::Asleep,
            punch_asked: false,
            path_since: Instant::now(),
            burst: None,
            doubted_since: None,
            next_ask: Instant::now(),
            asked: 0,
            last_direct: None,
            ours_blocked,
            punch_hopeless: None,
        }
    }

    /// Whether the two NATs cannot be punched through (`Some`: the path's label in
    /// `@show_list`, which says why). Then a peer with no path yet, or a relayed one, is
    /// relayed at once, and no punch is asked for before the next retry of the direct paths,
    /// [`DIRECT_RETRY`] from now for a peer with no path yet (a direct path that already
    /// works is kept: it proves the kinds wrong). No longer, its paths are tried again, at
    /// the next message.
    pub fn set_punch_hopeless(&mut self, why: Option<&'static str>) {
        self.punch_hopeless = why;
        let hopeless = why.is_some();
        match self.path {
            Path::Untried if hopeless => {
                let now = Instant::now();
                self.path = Path::NatsRelay {
                    retry_at: now + DIRECT_RETRY,
                };
                self.path_since = now;
                self.burst = None;
            }
            Path::Relayed { retry_at } if hopeless => {
                self.path = Path::NatsRelay { retry_at };
            }
            Path::NatsRelay { .. } if !hopeless => {
                self.path = Path::Untried;
                self.punch_asked = false;
                self.path_since = Instant::now();
            }
            _ => {}
        }
    }

    /// The peer's public endpoint is new (a NAT gave it a new mapping; it woke): every path
    /// must be found again.
    pub fn relocate(&mut self, private: SocketAddr, public: Public) {
        let hopeless = self.punch_hopeless;
        *self = Paths::new(private, public, self.ours_blocked);
        self.set_punch_hopeless(hopeless);
    }

    /// The path, in a word, for `@show_list`.
    pub fn label(&self) -> &'static str {
        match self.path {
            Path::Relayed { .. } | Path::RelayOnly => "relayed",
            Path::NatsRelay { .. } => self.punch_hopeless.unwrap_or("relayed"),
            Path::Untried => "new",
            Path::Direct(addr) => match self.kind_of(addr) {
                Some(Kind::Private) => "private",
                _ => "direct",
            },
        }
    }

    fn kind_of(&self, addr: SocketAddr) -> Option<Kind> {
        self.candidates
            .iter()
            .find(|c| c.addr == addr)
            .map(|c| c.kind)
    }

    /// Chooses the route for a transmission of a message that has `waited` this long for
    /// its acknowledgement. Once it has waited longer than the round trip allows
    /// ([`RoundTrip::relay_after`]) on the current path (not on one before it: a message
    /// sent before the peer moved would otherwise undo each new path at once), this copy
    /// takes the relay. Returns the route, and whether to ask the server to key us and
    /// start a coordinated punch now. While the
    /// server is away (`!server`), a direct path is kept however long an acknowledgement
    /// takes: it is the only way there is, and punching again would need the server.
    pub fn route(
        &mut self,
        waited: Duration,
        round_trip: &RoundTrip,
        now: Instant,
        server: bool,
        nonces: &mut Nonces,
    ) -> (Route, bool) {
        let on_this_path = waited.min(now.saturating_duration_since(self.path_since));
        let overdue = on_this_path >= round_trip.relay_after();
        match self.path {
            Path::RelayOnly => (Route::Relay, false),
            Path::Direct(addr) if !server => (Route::Direct(addr), false),
            // The kinds said no punch can work: none is asked for until the retry, and from
            // then on this is a relayed peer like any other.
            Path::Relayed { retry_at } | Path::NatsRelay { retry_at } => {
                let retry = now >= retry_at;
                if retry {
                    self.path = Path::Relayed {
                        retry_at: now + DIRECT_RETRY,
                    };
                } else if overdue {
                    // The relay is slow too (after an outage, our own TCP connection to the
                    // server may wait many seconds for its next retransmission): the direct
                    // path we last had may be back already.
                    self.ask_last_direct(now, nonces, round_trip);
                }
                (Route::Relay, retry)
            }
            Path::Direct(addr) if overdue => {
                // This copy takes the relay; the path is asked whether it still works.
                if self.doubted_since.is_none() {
                    self.doubted_since = Some(now);
                    self.asked = 0;
                    self.ask_again(addr, nonces, now, round_trip);
                }
                (Route::Relay, false)
            }
            Path::Untried if overdue => {
                // Nothing validated in time.
                self.fall_back_to_relay(now);
                (Route::Relay, false)
            }
            Path::Direct(addr) => (Route::Direct(addr), false),
            Path::Untried => {
                let ask = !self.punch_asked && !self.asleep;
                self.punch_asked = true;
                (Route::Hold, ask)
            }
        }
    }

    /// Probes the validated address `addr` again, with a fresh nonce; asks once more a
    /// timeout after the burst's last probe, should nothing answer.
    fn ask_again(&mut self, addr: SocketAddr, nonces: &mut Nonces, now: Instant, rtt: &RoundTrip) {
        if let Some(candidate) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            candidate.validated = false;
            candidate.asking = Some(nonces.draw());
            candidate.asked_at = None;
        }
        self.burst = Some(Burst::starting(now));
        self.next_ask = now + PROBE_EVERY * (PROBES - 1) + rtt.rto();
        self.asked += 1;
    }

    /// Asks the direct path last given up again, if it was lately and no burst is under way.
    fn ask_last_direct(&mut self, now: Instant, nonces: &mut Nonces, rtt: &RoundTrip) {
        match self.last_direct {
            Some((addr, at)) if now - at < DIRECT_REMEMBERED && self.may_ask_again(now) => {
                self.ask_again(addr, nonces, now, rtt)
            }
            _ => {}
        }
    }

    /// Whether a path may be asked again now: no burst of probes is under way, and the last
    /// one has had its timeout to be answered ([`Paths::ask_again`] sets when).
    fn may_ask_again(&self, now: Instant) -> bool {
        self.burst.is_none() && now >= self.next_ask
    }

    /// The relay carries the chat from now on; the direct paths are tried again later.
    fn fall_back_to_relay(&mut self, now: Instant) {
        if let Path::Direct(addr) = self.path {
            self.last_direct = Some((addr, now));
        }
        self.path = Path::Relayed {
            retry_at: now + DIRECT_RETRY,
        };
        self.path_since = now;
        self.burst = None;
        self.doubted_since = None;
    }

    /// While the direct path is in doubt: asks it again, one timeout after each unanswered
    /// burst (a burst of loss can swallow a whole burst of probes, or their answers), and
    /// gives it up for the relay once it has answered none of [`ASKS`] bursts, over at least
    /// as long as its round trip allows ([`RoundTrip::silence_allowed`]). Not while the
    /// server is away (`!server`): the path is all there is, and the doubt waits for the
    /// server's return.
    pub fn check_doubted_path(
        &mut self,
        now: Instant,
        rtt: &RoundTrip,
        server: bool,
        nonces: &mut Nonces,
    ) {
        let (Some(since), Path::Direct(addr)) = (self.doubted_since, self.path) else {
            return;
        };
        let allowed = rtt.silence_allowed();
        let unanswered = self.may_ask_again(now);
        if !server {
            self.doubted_since = Some(since.max(now - allowed / 2));
        } else if unanswered && self.asked >= ASKS && now - since >= allowed {
            self.fall_back_to_relay(now);
            return;
        }
        if unanswered && self.asked < ASKS {
            self.ask_again(addr, nonces, now, rtt);
        }
    }

    /// Something genuine came from `addr` that only the peer could have sent in answer to
    /// us (an acknowledgement echoing our stamp, an answer to our probe): if it is our direct
    /// path, the path works. Returns whether that ended a doubt: the path was silent a while
    /// (a link that went down and came back), and what was given up on meanwhile may go
    /// again on it.
    pub fn heard(&mut self, addr: SocketAddr) -> bool {
        self.path == Path::Direct(addr) && self.doubted_since.take().is_some()
    }

    /// The server keyed us and says: probe now (the peer is doing the same). Each candidate
    /// gets a fresh nonce, unless a burst is under way: both peers may ask for the same
    /// punch, and new nonces would void the answers already on their way.
    pub fn start_burst(&mut self, nonces: &mut Nonces, now: Instant) {
        let renew = self.burst.is_none();
        for candidate in &mut self.candidates {
            if renew || candidate.asking.is_none() {
                candidate.asking = Some(nonces.draw());
                candidate.asked_at = None;
            }
        }
        self.burst = Some(Burst::starting(now));
    }

    /// The probes to send now, if a burst is due: each candidate's address and nonce.
    pub fn probes_due(&mut self, now: Instant) -> Vec<(SocketAddr, Nonce)> {
        let Some(burst) = self.burst.as_mut().filter(|b| b.next <= now) else {
            return Vec::new();
        };
        burst.left -= 1;
        burst.next = now + PROBE_EVERY;
        if burst.left == 0 {
            self.burst = None;
        }
        let asking = self.candidates.iter_mut().filter(|c| !c.validated);
        asking
            .filter_map(|c| {
                c.asked_at.get_or_insert(now);
                Some((c.addr, c.asking?))
            })
            .collect()
    }

    /// A genuine datagram of the peer's (its tag checked) came straight from `addr` while
    /// the relay carries our chats: the way back may work again too (a link that came back, a
    /// NAT whose stale entry expired, NAT kinds that were misread). Asks it at once rather
    /// than at the next retry, at most once per unanswered burst and timeout. No collision to
    /// fear: the peer's datagram has just opened our NAT for the answer.
    pub fn came_straight(
        &mut self,
        addr: SocketAddr,
        nonces: &mut Nonces,
        now: Instant,
        rtt: &RoundTrip,
    ) {
        let relayed = matches!(self.path, Path::Relayed { .. } | Path::NatsRelay { .. });
        if !relayed || !self.may_ask_again(now) {
            return;
        }
        if self.kind_of(addr).is_none() {
            if self.candidates.len() >= MAX_CANDIDATES {
                return;
            }
            self.candidates.push(Candidate::new(addr, Kind::Reflexive));
        }
        self.ask_again(addr, nonces, now, rtt);
    }

    /// The nonce we ask `addr` with now, if we do: port prediction sends it from each of its
    /// new mappings (see [`super::prediction`]), so that the peer's answer to any of them
    /// validates `addr` as our own probes' answers would.
    pub fn asking(&self, addr: SocketAddr) -> Option<Nonce> {
        let candidate = self.candidates.iter().find(|c| c.addr == addr)?;
        candidate.asking.filter(|_| !candidate.validated)
    }

    /// Port prediction found a mapping of ours that the peer at `addr` reaches (a genuine
    /// datagram of its came in on it): `addr` is asked at once, with a fresh nonce, from that
    /// mapping, unless it is validated already. The peer then sees our probes come from the
    /// port it guessed, and validates it as the peer-reflexive candidate it is.
    pub fn mapping_found(&mut self, addr: SocketAddr, nonces: &mut Nonces, now: Instant) {
        let Some(candidate) = self.candidates.iter_mut().find(|c| c.addr == addr) else {
            return;
        };
        if !candidate.validated {
            candidate.asking = Some(nonces.draw());
            candidate.asked_at = None;
            self.burst = Some(Burst::starting(now));
        }
    }

    /// A genuine probe of the peer's (its tag checked) came from `addr`. An address we did
    /// not know is where the peer's NAT shows it to us: a new candidate, to validate with
    /// probes of our own.
    pub fn probed_from(&mut self, addr: SocketAddr, nonces: &mut Nonces, now: Instant) {
        if self.kind_of(addr).is_some() || self.candidates.len() >= MAX_CANDIDATES {
            return;
        }
        let mut candidate = Candidate::new(addr, Kind::Reflexive);
        candidate.asking = Some(nonces.draw());
        self.candidates.push(candidate);
        if self.burst.is_none() {
            self.burst = Some(Burst::starting(now));
        }
    }

    /// A genuine answer (its tag checked) to the probe asking `nonce` came from `addr`, and
    /// says the probe was `seen` coming from there: that address is validated. A private
    /// address must have seen ours exactly (`my_private`: no NAT on a LAN); otherwise
    /// someone there forwarded our probe to the peer, and its answer back to us, to sit in
    /// the middle. `None` for anything but a genuine answer.
    pub fn answered(
        &mut self,
        addr: SocketAddr,
        nonce: &Nonce,
        seen: SocketAddr,
        my_private: SocketAddr,
        now: Instant,
    ) -> Option<Answered> {
        let candidate = self.candidates.iter_mut().find(|c| {
            c.addr == addr
                && c.asking.is_some_and(|asked| asked.matches(nonce))
                && (c.kind != Kind::Private || seen == my_private)
        })?;
        candidate.validated = true;
        // The first probe with this nonce may have been lost, and a later one answered: then
        // this overestimates the round trip, by a probe interval or so, which errs on the
        // patient side.
        let round_trip = now - candidate.asked_at.unwrap_or(now);
        let kind = candidate.kind;
        let was_direct = matches!(self.path, Path::Direct(_));
        let better = match self.path {
            Path::Direct(current) => self.kind_of(current).is_none_or(|k| kind < k),
            _ => true,
        };
        if better {
            self.path = Path::Direct(addr);
            self.path_since = now;
        }
        if self.candidates.iter().all(|c| c.validated) {
            self.burst = None;
        }
        let back = self.heard(addr);
        Some(Answered {
            first_path: better && !was_direct,
            back,
            round_trip,
        })
    }
}

impl Burst {
    /// A whole burst, its first probe due `now`.
    fn starting(now: Instant) -> Burst {
        Burst {
            left: PROBES,
            next: now,
        }
    }
}

impl Candidate {
    fn new(addr: SocketAddr, kind: Kind) -> Candidate {
        Candidate {
            addr,
            kind,
            asking: None,
            asked_at: None,
            validated: false,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! Shared with the [`Peers`](super::super::peers::Peers) tests: [`ME`] and [`route`].

    use super::*;

    /// Our own address, as every answer in these tests saw it.
    pub(in crate::client) const ME: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 2)),
        10081,
    );

    /// The paths to an awake peer at `public` and `private`, our own UDP not blocked.
    fn to(public: &str, private: &str) -> Paths {
        Paths::new(
            private.parse().unwrap(),
            Public::At(public.parse().unwrap()),
            false,
        )
    }

    /// How long a message waits on a LAN's path before it is relayed.
    fn overdue() -> Duration {
        RoundTrip::default().relay_after()
    }

    /// Routes a message that waited `waited`, with the server there, on a LAN.
    pub(in crate::client) fn route(
        paths: &mut Paths,
        waited: Duration,
        now: Instant,
        n: &mut Nonces,
    ) -> (Route, bool) {
        paths.route(waited, &RoundTrip::default(), now, true, n)
    }

    /// The server's `PUNCH`: a burst starts, and its first probes are due.
    fn punched(paths: &mut Paths, nonces: &mut Nonces, now: Instant) -> Vec<(SocketAddr, Nonce)> {
        paths.start_burst(nonces, now);
        paths.probes_due(now)
    }

    #[test]
    fn messages_wait_for_a_validated_path_then_relay_then_retry() {
        let mut nonces = Nonces::new().unwrap();
        let mut far = to("10.0.0.2:10081", "192.168.2.2:10081");
        // A while after we heard of it: a message can have waited a second for a path.
        let now = Instant::now() + overdue();
        assert_eq!(
            route(&mut far, Duration::ZERO, now, &mut nonces),
            (Route::Hold, true),
            "ask once"
        );
        assert_eq!(
            route(&mut far, Duration::ZERO, now, &mut nonces),
            (Route::Hold, false)
        );
        assert_eq!(far.label(), "new");
        let probes = punched(&mut far, &mut nonces, now);
        assert_eq!(probes.len(), 2, "the private and the public address");
        assert_eq!(
            route(&mut far, overdue(), now, &mut nonces),
            (Route::Relay, false)
        );
        assert_eq!(far.label(), "relayed");
        assert_eq!(
            route(
                &mut far,
                Duration::ZERO,
                now + Duration::from_secs(1),
                &mut nonces
            ),
            (Route::Relay, false)
        );
        assert_eq!(
            route(&mut far, Duration::ZERO, now + DIRECT_RETRY, &mut nonces),
            (Route::Relay, true),
            "heal attempt"
        );
        let probes = punched(&mut far, &mut nonces, now);
        let (public, nonce) = probes[1];
        assert!(far
            .answered(public, &nonce, ME, ME, now)
            .is_some_and(|a| a.first_path));
        assert_eq!(far.label(), "direct");
        assert_eq!(
            route(&mut far, Duration::ZERO, now, &mut nonces),
            (Route::Direct(public), false)
        );
    }

    #[test]
    fn a_datagram_straight_from_a_relayed_peer_has_its_address_asked_at_once() {
        let mut nonces = Nonces::new().unwrap();
        let mut far = to("10.0.0.2:10081", "192.168.2.2:10081");
        let now = Instant::now() + overdue();
        let rtt = RoundTrip::default();
        punched(&mut far, &mut nonces, now);
        route(&mut far, overdue(), now, &mut nonces);
        far.burst = None;
        assert_eq!(far.label(), "relayed");
        // Its chat comes straight from an address of its (the link is back): asked at once,
        // long before the retry, and not again while that burst is unanswered.
        let public: SocketAddr = "10.0.0.2:10081".parse().unwrap();
        far.came_straight(public, &mut nonces, now, &rtt);
        let asked = far.probes_due(now);
        let &(_, nonce) = asked.iter().find(|(addr, _)| *addr == public).unwrap();
        far.came_straight(public, &mut nonces, now, &rtt);
        assert_eq!(
            far.probes_due(now + PROBE_EVERY)
                .iter()
                .find(|(addr, _)| *addr == public),
            Some(&(public, nonce)),
            "the same burst goes on"
        );
        // It answers: direct again, and what waited can go on it.
        assert!(far
            .answered(public, &nonce, ME, ME, now)
            .is_some_and(|a| a.first_path));
        assert_eq!(far.label(), "direct");
        // Straight from a direct peer: nothing to ask.
        let later = now + rtt.rto() * 10;
        far.came_straight(public, &mut nonces, later, &rtt);
        assert!(far
            .probes_due(later)
            .iter()
            .all(|(addr, _)| *addr != public));
    }

    #[test]
    fn an_overdue_message_doubts_the_path_and_only_silence_gives_it_up() {
        let mut nonces = Nonces::new().unwrap();
        let mut far = to("10.0.0.2:10081", "192.168.2.2:10081");
        let now = Instant::now();
        let rtt = RoundTrip::default();
        let allowed = rtt.silence_allowed();
        let (public, nonce) = punched(&mut far, &mut nonces, now)[1];
        let answered = far.answered(public, &nonce, ME, ME, now).unwrap();
        assert!(
            answered.first_path && !answered.back,
            "found, not back from a doubt"
        );

        // A late message takes the relay; the path stays, and is asked again.
        let now = now + overdue();
        assert_eq!(
            route(&mut far, overdue(), now, &mut nonces),
            (Route::Relay, false)
        );
        assert_eq!(far.path, Path::Direct(public));
        let asked = far.probes_due(now);
        let &(_, fresh) = asked.iter().find(|(addr, _)| *addr == public).unwrap();
        assert_ne!(fresh, nonce, "a fresh nonce");
        assert_eq!(
            route(&mut far, Duration::ZERO, now, &mut nonces).0,
            Route::Direct(public)
        );
        // It answers (a lossy path, not a dead one): the doubt ends, the path stays, and
        // the answer says it is back (what was given up on meanwhile goes again).
        let answered = far.answered(public, &fresh, ME, ME, now).unwrap();
        assert!(answered.back && !answered.first_path);
        assert!(!far.heard(public), "no doubt left to end");
        far.check_doubted_path(now + allowed, &rtt, true, &mut nonces);
        assert_eq!(far.path, Path::Direct(public));

        // Doubted again: its burst of probes is lost whole, so it is asked again, with a
        // fresh nonce, a timeout after the burst...
        route(&mut far, overdue(), now, &mut nonces);
        let first = far.probes_due(now);
        let mut later = now;
        while far.burst.is_some() {
            later += PROBE_EVERY;
            far.probes_due(later);
        }
        far.check_doubted_path(later, &rtt, true, &mut nonces);
        assert!(far.probes_due(later).is_empty(), "not at once");
        let again = later + rtt.rto();
        far.check_doubted_path(again, &rtt, true, &mut nonces);
        let second = far.probes_due(again);
        assert!(second
            .iter()
            .any(|&(addr, n)| addr == public && first.iter().all(|&(_, old)| old != n)));
        // ...and a third time; given up only then, silent still: three bursts unanswered,
        // over at least the silence its round trip allows.
        let silent_until = |far: &mut Paths, nonces: &mut Nonces, from: Instant, server| {
            let mut t = from;
            for _ in 0..1000 {
                if far.path != Path::Direct(public) {
                    break;
                }
                t += PROBE_EVERY;
                far.probes_due(t);
                far.check_doubted_path(t, &rtt, server, nonces);
            }
            t
        };
        let given_up = silent_until(&mut far, &mut nonces, again, true);
        assert!(matches!(far.path, Path::Relayed { .. }));
        assert_eq!(far.asked, ASKS);
        assert!(given_up - now >= allowed);

        // While the server is away, a silent path is all there is: kept, however long.
        let (public, nonce) = punched(&mut far, &mut nonces, now)[1];
        far.answered(public, &nonce, ME, ME, now);
        let now = now + overdue();
        route(&mut far, overdue(), now, &mut nonces);
        let away = silent_until(&mut far, &mut nonces, now, false);
        assert_eq!(far.path, Path::Direct(public), "the only path there is");
        assert!(away - now > allowed * 10);
        silent_until(&mut far, &mut nonces, away, true);
        assert!(
            matches!(far.path, Path::Relayed { .. }),
            "the server is back"
        );
    }

    #[test]
    fn a_message_overdue_on_the_relay_asks_the_direct_path_lately_given_up() {
        let mut nonces = Nonces::new().unwrap();
        let mut far = to("10.0.0.2:10081", "192.168.2.2:10081");
        let now = Instant::now();
        let (public, nonce) = punched(&mut far, &mut nonces, now)[1];
        far.answered(public, &nonce, ME, ME, now);
        far.burst = None;
        far.fall_back_to_relay(now);
        assert_eq!(far.label(), "relayed");
        // A message fresh on the relay: nothing asked.
        route(&mut far, Duration::ZERO, now, &mut nonces);
        assert!(far.probes_due(now).iter().all(|(addr, _)| *addr != public));
        // Overdue on the relay too: the direct path is asked at once, not at the retry.
        let later = now + overdue();
        assert_eq!(
            route(&mut far, overdue(), later, &mut nonces),
            (Route::Relay, false)
        );
        let asked = far.probes_due(later);
        let &(_, fresh) = asked.iter().find(|(addr, _)| *addr == public).unwrap();
        assert!(far
            .answered(public, &fresh, ME, ME, later)
            .is_some_and(|a| a.first_path));
        assert_eq!(far.label(), "direct");
        // Given up long ago, it is not asked without a punch.
        far.burst = None;
        far.fall_back_to_relay(later);
        let much_later = later + DIRECT_REMEMBERED;
        assert_eq!(
            route(&mut far, overdue(), much_later, &mut nonces),
            (Route::Relay, true),
            "a coordinated retry instead"
        );
        route(&mut far, overdue(), much_later + overdue(), &mut nonces);
        assert!(far.burst.is_none());
    }

    #[test]
    fn only_an_answer_to_our_own_nonce_from_the_address_asked_validates_it() {
        let mut nonces = Nonces::new().unwrap();
        let mut paths = to("10.0.0.1:40000", "192.168.1.3:10081");
        let now = Instant::now();
        let probes = punched(&mut paths, &mut nonces, now);
        let (private, nonce) = probes[0];
        let (public, _) = probes[1];
        assert!(
            paths
                .answered(private, &nonces.draw(), ME, ME, now)
                .is_none(),
            "a guess"
        );
        assert!(
            paths.answered(public, &nonce, ME, ME, now).is_none(),
            "the private nonce, from elsewhere"
        );
        let forwarder: SocketAddr = "192.168.1.3:40000".parse().unwrap();
        assert!(
            paths
                .answered(private, &nonce, forwarder, ME, now)
                .is_none(),
            "someone at the private address forwarded our probe to the peer"
        );
        assert_eq!(paths.path, Path::Untried);
        assert!(paths.answered(private, &nonce, ME, ME, now).is_some());
        assert_eq!(paths.label(), "private");
    }

    #[test]
    fn the_best_validated_path_carries_the_chat() {
        let mut nonces = Nonces::new().unwrap();
        let mut paths = to("10.0.0.1:40000", "192.168.1.3:10081");
        let now = Instant::now();
        let probes = punched(&mut paths, &mut nonces, now);
        assert!(
            paths
                .answered(probes[1].0, &probes[1].1, ME, ME, now)
                .is_some_and(|a| a.first_path),
            "public first"
        );
        assert!(
            paths
                .answered(probes[0].0, &probes[0].1, ME, ME, now)
                .is_some_and(|a| !a.first_path),
            "already direct"
        );
        assert_eq!(
            paths.path,
            Path::Direct(probes[0].0),
            "the private one is better"
        );
        assert!(
            paths.probes_due(now + PROBE_EVERY).is_empty(),
            "all validated"
        );
    }

    #[test]
    fn a_probe_from_a_new_address_makes_a_candidate_to_validate() {
        let mut nonces = Nonces::new().unwrap();
        let mut paths = to("10.0.0.2:10081", "192.168.2.2:10081");
        let now = Instant::now();
        let reflexive: SocketAddr = "10.0.0.2:50123".parse().unwrap();
        paths.probed_from(reflexive, &mut nonces, now);
        let probes = paths.probes_due(now);
        let (addr, nonce) = *probes.iter().find(|(a, _)| *a == reflexive).unwrap();
        assert!(paths.answered(addr, &nonce, ME, ME, now).is_some());
        assert_eq!(paths.label(), "direct");
        for port in 0..20 {
            paths.probed_from(SocketAddr::from(([10, 0, 0, 2], port)), &mut nonces, now);
        }
        assert_eq!(paths.candidates.len(), MAX_CANDIDATES);
    }

    #[test]
    fn a_peer_without_a_nat_is_reached_at_its_one_public_address() {
        let mut nonces = Nonces::new().unwrap();
        let mut paths = to("10.0.1.2:10081", "10.0.1.2:10081");
        let now = Instant::now();
        let probes = punched(&mut paths, &mut nonces, now);
        assert_eq!(probes.len(), 1);
        // It sees our NAT's public address, not our private one: still a valid answer.
        let our_public: SocketAddr = "10.0.0.1:10081".parse().unwrap();
        assert!(paths
            .answered(probes[0].0, &probes[0].1, our_public, ME, now)
            .is_some());
        assert_eq!(paths.label(), "direct");
    }

    #[test]
    fn a_message_sent_before_a_move_waits_on_the_new_path_before_it_is_relayed() {
        let mut nonces = Nonces::new().unwrap();
        let mut paths = to("10.0.0.2:10081", "192.168.2.2:10081");
        let private = "192.168.2.2:10081".parse().unwrap();
        paths.relocate(private, Public::At("10.0.0.2:40000".parse().unwrap()));
        let now = Instant::now();
        let old = Duration::from_secs(3);
        assert_eq!(
            route(&mut paths, old, now, &mut nonces),
            (Route::Hold, true),
            "the new address is punched, not given up on at once"
        );
        let probes = punched(&mut paths, &mut nonces, now);
        assert!(paths
            .answered(probes[1].0, &probes[1].1, ME, ME, now)
            .is_some());
        let now = Instant::now();
        assert_eq!(
            route(&mut paths, old, now, &mut nonces),
            (Route::Direct(probes[1].0), false),
            "a path just validated gets its chance"
        );
        assert_eq!(
            route(&mut paths, old, now + overdue(), &mut nonces),
            (Route::Relay, false)
        );
    }

    #[test]
    fn nats_that_cannot_be_punched_take_the_relay_at_once_and_a_working_path_stays() {
        let mut nonces = Nonces::new().unwrap();
        let mut far = to("10.0.0.2:10081", "192.168.2.2:10081");
        let now = Instant::now();
        let hopeless = "relayed (these NATs cannot be punched)";
        far.set_punch_hopeless(Some(hopeless));
        assert_eq!(
            route(&mut far, Duration::ZERO, now, &mut nonces),
            (Route::Relay, false),
            "no hold, no punch"
        );
        assert_eq!(far.label(), hopeless);
        let private = "192.168.2.2:10081".parse().unwrap();
        far.relocate(private, Public::At("10.0.0.2:40000".parse().unwrap()));
        assert_eq!(far.label(), hopeless, "a move changes no NAT");
        // The peer asked for a punch all the same, and a path validated: it is taken.
        let probes = punched(&mut far, &mut nonces, now);
        assert!(far
            .answered(probes[1].0, &probes[1].1, ME, ME, now)
            .is_some_and(|a| a.first_path));
        far.set_punch_hopeless(Some(hopeless));
        assert_eq!(
            far.label(),
            "direct",
            "a working path proves the kinds wrong"
        );
        // Kinds no longer hopeless: the punch is asked again at the next message.
        let mut far = to("10.0.0.2:10081", "192.168.2.2:10081");
        far.set_punch_hopeless(Some(hopeless));
        far.set_punch_hopeless(None);
        assert_eq!(
            route(&mut far, Duration::ZERO, now, &mut nonces),
            (Route::Hold, true)
        );
    }

    #[test]
    fn the_relay_chosen_by_nat_kinds_expires_and_the_direct_paths_are_punched_again() {
        let mut nonces = Nonces::new().unwrap();
        let mut far = to("10.0.0.2:10081", "192.168.2.2:10081");
        let now = Instant::now();
        far.set_punch_hopeless(Some("relayed (these NATs cannot be punched)"));
        // However long a message waits, no punch before the retry.
        let before = now + DIRECT_RETRY - Duration::from_secs(1);
        assert_eq!(
            route(&mut far, DIRECT_RETRY, before, &mut nonces),
            (Route::Relay, false)
        );
        // The kinds were misread (a probe that collided on a stale entry): at the retry a
        // punch is asked for, as for any relayed peer, and a path that answers is taken.
        let retry = Instant::now() + DIRECT_RETRY;
        assert_eq!(
            route(&mut far, Duration::ZERO, retry, &mut nonces),
            (Route::Relay, true)
        );
        let (public, nonce) = punched(&mut far, &mut nonces, retry)[1];
        assert!(far
            .answered(public, &nonce, ME, ME, retry)
            .is_some_and(|a| a.first_path));
        assert_eq!(
            route(&mut far, Duration::ZERO, retry, &mut nonces),
            (Route::Direct(public), false)
        );
        // Nothing answers the retry: relayed still, and asked again every DIRECT_RETRY.
        let mut far = to("10.0.0.2:10081", "192.168.2.2:10081");
        far.set_punch_hopeless(Some("relayed (these NATs cannot be punched)"));
        let retry = Instant::now() + DIRECT_RETRY;
        assert_eq!(
            route(&mut far, Duration::ZERO, retry, &mut nonces),
            (Route::Relay, true)
        );
        assert_eq!(far.label(), "relayed");
        assert_eq!(
            route(&mut far, Duration::ZERO, retry + DIRECT_RETRY, &mut nonces),
            (Route::Relay, true)
        );
        // A peer already relayed when the kinds arrive keeps its retry.
        let mut far = to("10.0.0.2:10081", "192.168.2.2:10081");
        let failed = Instant::now() + overdue();
        punched(&mut far, &mut nonces, failed);
        route(&mut far, overdue(), failed, &mut nonces);
        assert_eq!(far.label(), "relayed");
        far.set_punch_hopeless(Some("relayed (these NATs cannot be punched)"));
        assert_eq!(far.label(), "relayed (these NATs cannot be punched)");
        assert_eq!(
            route(&mut far, Duration::ZERO, failed + DIRECT_RETRY, &mut nonces),
            (Route::Relay, true)
        );
    }

    #[test]
    fn an_asleep_peer_has_only_its_private_candidate_and_is_never_punched() {
        let mut paths = Paths::new("192.168.1.3:10081".parse().unwrap(), Public::Asleep, false);
        assert!(paths.asleep);
        assert_eq!(paths.candidates.len(), 1);
        assert_eq!(
            route(
                &mut paths,
                Duration::ZERO,
                Instant::now(),
                &mut Nonces::new().unwrap()
            ),
            (Route::Hold, false)
        );
    }
}
