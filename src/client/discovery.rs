//! NAT discovery: how our own NAT behaves, found out with the server's help, as STUN's
//! behaviour discovery does (RFC 5780), and said to the user in plain words.
//!
//! The server listens on a second UDP port (its port + 1). Two questions, one after the other:
//!
//! ```text
//!  client                                   server
//!    ── TCP  NAT_TEST <nonce> ───────────────▶
//!    ◀─ TCP  NAT_TEST <second port> ──────────     (or `none`: no discovery)
//!  1 ── UDP  NAT_PROBE <id> <nonce> ─▶ port       does our NAT admit a datagram from a port
//!    ◀─ TCP  NAT_SEEN <port> <addr> ──────────     we never sent to?
//!    ◀─ UDP  NAT_OPEN <nonce> ─── a third port     (it arrives, or not)
//!  2 ── UDP  NAT_PROBE <id> <nonce> ─▶ second port   does our public mapping change when
//!    ◀─ TCP  NAT_SEEN <second port> <addr> ───     only the destination port does?
//! ```
//!
//! `NAT_OPEN` comes from a port the OS picked for the server, which no client ever sends to:
//! so no entry in our NAT, however recent (our own probes, or those of an earlier run of
//! ours on the same port, which a NAT keeps for 30 s or more), can let it in as a reply, and
//! the filtering answer is true each time discovery runs. (From the second port, which we
//! probe, it was not: the NAT lab saw a home router read as `open` by a client started again
//! within 30 s, and, where the router takes the unsolicited `NAT_OPEN` for itself, the entry
//! it keeps for it makes our probe to the second port collide: `symmetric`.)
//!
//! Each probe is repeated a few times (UDP loses some), and each question has a deadline:
//! with no answer, the behaviour is [`Nat::Unknown`], and everything works as before
//! discovery.
//!
//! One server address answers only for other ports of that address: a NAT that filters by
//! address alone (admitting any port of a host we sent to) reads as not filtering, and one
//! whose mapping changes only when the destination address does reads as keeping one
//! mapping. RFC 5780 tells those apart with a second address; for a hole punch, where each
//! side sends to the other's address first, the distinction does not matter.

use super::Client;
use crate::failure::Failure;
use crate::nonce::Nonce;
use crate::wire::{Announce, Nat, Public, Request};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the server may take to answer `NAT_TEST` over TCP.
const ASK_WAIT: Duration = Duration::from_secs(10);
/// The pause between two probes of the same question, and how many each gets.
const PROBE_EVERY: Duration = Duration::from_millis(250);
const PROBES: u32 = 6;
/// How long the filtering question waits for `NAT_OPEN`: at least this long from its first
/// probe, and at least [`OPEN_AFTER_SEEN`] after the server said it saw a probe (the two
/// answers leave the server together, and the datagram may be the slower), but never
/// longer than [`QUESTION_MOST`].
const OPEN_WAIT: Duration = Duration::from_secs(2);
const OPEN_AFTER_SEEN: Duration = Duration::from_secs(1);
/// The longest either question waits for its answer.
const QUESTION_MOST: Duration = Duration::from_secs(6);

/// Where discovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `NAT_TEST` sent; waiting for the server's answer until then.
    Asked { until: Instant },
    /// Question 1: probing the registration port, waiting for `NAT_OPEN`.
    Filtering { alt: SocketAddr, since: Instant },
    /// Question 2: probing the second port, `alt`; `open`: whether question 1's answer got in.
    Mapping {
        alt: SocketAddr,
        since: Instant,
        open: bool,
    },
}

/// One run of NAT discovery: the books only; the client sends what they say.
pub struct Discovery {
    /// Our `NAT_TEST`'s nonce: only the server has seen it.
    nonce: Nonce,
    /// The probe, as it goes to either port.
    probe: String,
    /// The server's registration port (UDP).
    server: SocketAddr,
    /// Our own address: a server that sees us there sees no NAT.
    private: SocketAddr,
    stage: Stage,
    /// Probes sent for the current question, and when the next is due.
    sent: u32,
    next: Instant,
    /// Where the server saw our probe to its registration port, and when it said so last.
    seen_main: Option<(SocketAddr, Instant)>,
    /// Where it saw our probe to its second port.
    seen_alt: Option<SocketAddr>,
}

/// What discovery found: a kind, and, when it is unknown, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub nat: Nat,
    pub why_unknown: Option<&'static str>,
}

impl Found {
    fn unknown(why: &'static str) -> Found {
        Found {
            nat: Nat::Unknown,
            why_unknown: Some(why),
        }
    }

    /// The line said once at start, and by `@nat`.
    pub fn describe(&self) -> String {
        match (self.nat, self.why_unknown) {
            (Nat::None, _) => "No NAT between us and the server (it sees our own address), and \
                nothing filters: peers can reach us directly."
                .into(),
            (Nat::Open, _) => "Our NAT keeps one public port for every destination and admits \
                datagrams from ports we never sent to: direct chats should work with any peer."
                .into(),
            (Nat::Cone, _) => "Our NAT keeps one public port for every destination and admits \
                only replies: a typical home router (direct chats need a coordinated punch, \
                which natchat does)."
                .into(),
            (Nat::Symmetric, _) => "Our NAT gives every destination its own public port and \
                admits only replies (symmetric): a punch cannot work from here to a peer whose \
                NAT admits only replies; those chats go through the server."
                .into(),
            (Nat::OpenSymmetric, _) => "Our NAT gives every destination its own public port, \
                but admits datagrams from ports we never sent to: a punch cannot work from \
                here to a peer whose NAT admits only replies; those chats go through the \
                server."
                .into(),
            (Nat::Unknown, why) => format!(
                "Our NAT's behaviour is unknown ({}): chats try a punch, and the relay if it \
                 fails.",
                why.unwrap_or("not found out")
            ),
        }
    }
}

impl Discovery {
    /// Starts discovery for `id`, whose UDP socket is at `private`, with the server whose
    /// registration port is `server`: send the returned `NAT_TEST` nonce over TCP.
    pub fn start(
        id: &str,
        nonce: Nonce,
        server: SocketAddr,
        private: SocketAddr,
        now: Instant,
    ) -> Discovery {
        let probe = Announce::NatProbe {
            id: id.to_string(),
            nonce,
        };
        Discovery {
            nonce,
            probe: probe.to_string(),
            server,
            private,
            stage: Stage::Asked {
                until: now + ASK_WAIT,
            },
            sent: 0,
            next: now,
            seen_main: None,
            seen_alt: None,
        }
    }

    /// The probe, as sent to either port.
    pub fn probe(&self) -> &str {
        &self.probe
    }

    /// The server's answer to `NAT_TEST`: its second port, or none.
    pub fn on_test(&mut self, alt: Option<u16>, now: Instant) -> Option<Found> {
        let Stage::Asked { .. } = self.stage else {
            return None;
        };
        let Some(port) = alt else {
            return Some(Found::unknown(
                "the server has no second UDP port to test with",
            ));
        };
        self.stage = Stage::Filtering {
            alt: SocketAddr::new(self.server.ip(), port),
            since: now,
        };
        self.sent = 0;
        self.next = now;
        None
    }

    /// `NAT_SEEN <port> <seen>`: where the server saw our probe to its `port`. Once it has
    /// said so for both ports (in either order: `NAT_OPEN` may overtake the first), the
    /// answer is complete.
    pub fn on_seen(&mut self, port: u16, seen: SocketAddr, now: Instant) -> Option<Found> {
        match self.stage {
            Stage::Asked { .. } => return None,
            Stage::Filtering { alt, .. } | Stage::Mapping { alt, .. } if port != alt.port() => {
                self.seen_main = Some((seen, now));
            }
            Stage::Filtering { .. } => return None,
            Stage::Mapping { .. } => self.seen_alt = Some(seen),
        }
        let Stage::Mapping { open, .. } = self.stage else {
            return None;
        };
        let ((main, _), alt) = (self.seen_main?, self.seen_alt?);
        Some(Found {
            nat: classify(main, alt, open, self.private),
            why_unknown: None,
        })
    }

    /// A `NAT_OPEN` arrived: if it bears our nonce, it came from the server's port that we
    /// never send to, and our NAT let it in.
    pub fn on_open(&mut self, nonce: &Nonce, now: Instant) {
        if let Stage::Filtering { alt, .. } = self.stage {
            if self.nonce.matches(nonce) {
                self.stage = Stage::Mapping {
                    alt,
                    since: now,
                    open: true,
                };
                self.sent = 0;
                self.next = now;
            }
        }
    }

    /// Where a probe is due now, if one is; or what was found, if a deadline passed.
    pub fn due(&mut self, now: Instant) -> Result<Option<SocketAddr>, Found> {
        let (to, since) = match self.stage {
            Stage::Asked { until } if now >= until => {
                return Err(Found::unknown(
                    "the server did not answer our NAT test: an older server?",
                ))
            }
            Stage::Asked { .. } => return Ok(None),
            Stage::Filtering { alt, since } => {
                let seen = self.seen_main.map(|(_, at)| at + OPEN_AFTER_SEEN);
                let deadline = (since + OPEN_WAIT)
                    .max(seen.unwrap_or(now))
                    .min(since + QUESTION_MOST);
                if now >= deadline {
                    if self.seen_main.is_none() {
                        return Err(Found::unknown(
                            "no answer to our probes of the server's port",
                        ));
                    }
                    // The server saw our probes, and its answers from a port we never sent
                    // to did not get in: our NAT drops what it did not ask for.
                    self.stage = Stage::Mapping {
                        alt,
                        since: now,
                        open: false,
                    };
                    self.sent = 0;
                    self.next = now;
                    return Ok(None);
                }
                (self.server, since)
            }
            Stage::Mapping { alt, since, .. } => {
                if now >= since + QUESTION_MOST {
                    return Err(Found::unknown(
                        "no answer from the server's second port: a firewall on the way?",
                    ));
                }
                (alt, since)
            }
        };
        if self.sent >= PROBES || now < self.next {
            return Ok(None);
        }
        self.sent += 1;
        self.next = now.max(since) + PROBE_EVERY;
        Ok(Some(to))
    }
}

impl Client {
    /// Starts NAT discovery, once: when we are listed at a UDP endpoint (not Asleep, not
    /// relayed: there is no mapping to test) and the server is there.
    pub fn discover(&mut self, now: Instant) -> Result<(), Failure> {
        let listed = matches!(self.peers.me.public, Public::At(_));
        if !listed || self.tcp.is_none() || self.discovery.is_some() || self.nat.is_some() {
            return Ok(());
        }
        let nonce = self.nonces.draw();
        let private = self.peers.me.private;
        self.discovery = Some(Discovery::start(&self.id, nonce, self.server, private, now));
        self.request(&Request::NatTest { nonce })
    }

    /// The server's answer to our `NAT_TEST`.
    pub fn on_nat_test(&mut self, alt: Option<u16>) -> Result<(), Failure> {
        let found = self
            .discovery
            .as_mut()
            .and_then(|d| d.on_test(alt, Instant::now()));
        self.found(found)
    }

    /// The server says where it saw one of our probes.
    pub fn on_nat_seen(&mut self, port: u16, seen: SocketAddr) -> Result<(), Failure> {
        let now = Instant::now();
        let found = self
            .discovery
            .as_mut()
            .and_then(|d| d.on_seen(port, seen, now));
        self.found(found)
    }

    /// A `NAT_OPEN` got in.
    pub fn on_nat_open(&mut self, nonce: &Nonce) {
        if let Some(discovery) = &mut self.discovery {
            discovery.on_open(nonce, Instant::now());
        }
    }

    /// Sends the probe that is due, or ends discovery at its deadline.
    pub fn discovery_due(&mut self, now: Instant) -> Result<(), Failure> {
        let Some(discovery) = &mut self.discovery else {
            return Ok(());
        };
        match discovery.due(now) {
            Ok(Some(to)) => {
                let _ = self.udp.send_to(discovery.probe().as_bytes(), to);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(found) => self.found(Some(found)),
        }
    }

    /// Discovery ended, if `found`: said to the user in one line, kept for `@nat`, used for
    /// each peer's path, and told to the server (for the others) when it is known.
    fn found(&mut self, found: Option<Found>) -> Result<(), Failure> {
        let Some(found) = found else {
            return Ok(());
        };
        self.discovery = None;
        self.nat = Some(found);
        crate::say!("{}", found.describe());
        self.peers.set_my_nat(found.nat);
        self.tell_nat()
    }

    /// Tells the server our NAT's kind, if it is known: after discovery, and after we
    /// registered again (the server forgot it).
    pub fn tell_nat(&mut self) -> Result<(), Failure> {
        match self.nat {
            Some(found) if found.nat != Nat::Unknown => {
                self.request(&Request::Nat { kind: found.nat })
            }
            _ => Ok(()),
        }
    }

    /// `@nat`: what discovery found, or why there is nothing yet.
    pub fn say_nat(&self) {
        match (&self.nat, &self.discovery, self.peers.me.public) {
            (Some(found), _, _) => crate::say!("{}", found.describe()),
            (None, Some(_), _) => {
                crate::say!("Finding out how our NAT behaves; it takes a few seconds.")
            }
            (None, None, Public::Asleep) => crate::say!(
                "Our NAT's behaviour is not known yet: it is found out once we are awake \
                 (@awake)."
            ),
            (None, None, Public::Relayed) => crate::say!(
                "Our NAT's behaviour is unknown: our UDP does not reach the server, so all our \
                 chats go through it."
            ),
            (None, None, Public::At(_)) => crate::say!(
                "Our NAT's behaviour is not known: the server was away when we would have \
                 asked."
            ),
        }
    }
}

/// What the two questions' answers say: the server saw our probe to its registration port
/// come from `main` and the one to its second port from `alt`; `open`: its answer from a
/// port we never sent to got in; `private`: our own address.
pub fn classify(main: SocketAddr, alt: SocketAddr, open: bool, private: SocketAddr) -> Nat {
    match (main == alt, open) {
        (true, true) if main == private => Nat::None,
        (true, true) => Nat::Open,
        (true, false) => Nat::Cone,
        (false, false) => Nat::Symmetric,
        (false, true) => Nat::OpenSymmetric,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_answers_classify_the_nat() {
        let private = addr("192.168.1.2:10081");
        let public = addr("10.0.0.1:10081");
        let other = addr("10.0.0.1:40000");
        assert_eq!(classify(private, private, true, private), Nat::None);
        assert_eq!(classify(public, public, true, private), Nat::Open);
        assert_eq!(classify(public, public, false, private), Nat::Cone);
        assert_eq!(classify(public, other, false, private), Nat::Symmetric);
        assert_eq!(classify(public, other, true, private), Nat::OpenSymmetric);
        // No NAT, but a firewall that admits only replies: what matters is the filter.
        assert_eq!(classify(private, private, false, private), Nat::Cone);
    }

    /// A discovery with the server at 10.9.9.9:10080, answered `NAT_TEST 10081`.
    fn tested(now: Instant) -> (Discovery, Nonce) {
        let nonce = crate::nonce::Nonces::new().unwrap().draw();
        let server = addr("10.9.9.9:10080");
        let mut d = Discovery::start("alice", nonce, server, addr("192.168.1.2:10081"), now);
        assert_eq!(d.due(now), Ok(None), "nothing before the server answers");
        assert_eq!(d.on_test(Some(10081), now), None);
        (d, nonce)
    }

    #[test]
    fn filtering_is_asked_first_then_mapping() {
        let now = Instant::now();
        let (mut d, nonce) = tested(now);
        let server = addr("10.9.9.9:10080");
        let alt = addr("10.9.9.9:10081");
        assert_eq!(d.due(now), Ok(Some(server)));
        assert_eq!(d.due(now), Ok(None), "one probe at a time");
        let public = addr("10.0.0.1:10081");
        assert_eq!(d.on_seen(10080, public, now), None);
        // A NAT_OPEN with someone else's nonce proves nothing.
        d.on_open(&crate::nonce::Nonces::new().unwrap().draw(), now);
        assert_eq!(d.due(now + PROBE_EVERY), Ok(Some(server)));
        d.on_open(&nonce, now + PROBE_EVERY);
        // Only now is the second port probed.
        assert_eq!(d.due(now + PROBE_EVERY), Ok(Some(alt)));
        assert_eq!(
            d.on_seen(10081, public, now + PROBE_EVERY),
            Some(Found {
                nat: Nat::Open,
                why_unknown: None
            })
        );
    }

    #[test]
    fn an_answer_that_never_gets_in_means_a_filter() {
        let now = Instant::now();
        let (mut d, _) = tested(now);
        let public = addr("10.0.0.1:10081");
        let mut t = now;
        let mut probes = 0;
        // Bounded: the question's deadline ends it.
        while t < now + QUESTION_MOST {
            if d.due(t) == Ok(Some(addr("10.9.9.9:10080"))) {
                probes += 1;
                d.on_seen(10080, public, t);
            }
            if matches!(d.stage, Stage::Mapping { .. }) {
                break;
            }
            t += Duration::from_millis(50);
        }
        assert!((2..=PROBES).contains(&probes), "{probes} probes");
        assert!(matches!(d.stage, Stage::Mapping { open: false, .. }));
        assert!(t >= now + OPEN_WAIT, "waited for the answer");
        let next = d.due(t);
        assert_eq!(next, Ok(Some(addr("10.9.9.9:10081"))));
        let found = d.on_seen(10081, addr("10.0.0.1:50000"), t).unwrap();
        assert_eq!(found.nat, Nat::Symmetric);
    }

    #[test]
    fn silence_makes_it_unknown_within_a_bounded_time() {
        let now = Instant::now();
        let nonce = crate::nonce::Nonces::new().unwrap().draw();
        let server = addr("10.9.9.9:10080");
        let mut d = Discovery::start("a", nonce, server, server, now);
        assert!(d.due(now + ASK_WAIT).is_err(), "no answer to NAT_TEST");

        let (mut d, _) = tested(now);
        let found = d.due(now + QUESTION_MOST).unwrap_err();
        assert_eq!(found.nat, Nat::Unknown);

        let mut d = Discovery::start("a", nonce, server, server, now);
        let found = d.on_test(None, now).unwrap();
        assert!(found.describe().contains("no second UDP port"));
    }
}
