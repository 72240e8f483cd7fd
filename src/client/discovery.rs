//! NAT discovery: how our own NAT behaves, found out with the server's help, as STUN's
//! behaviour discovery does (RFC 5780), and said to the user in plain words.
//!
//! The server listens on a second UDP port (its port + 1). Both questions are asked at once:
//!
//! ```text
//!  client                                   server
//!    ── TCP  NAT_TEST <nonce> ───────────────▶
//!    ◀─ TCP  NAT_TEST <second port> ──────────     (or `none`: no discovery)
//!    ── UDP  NAT_PROBE <id> <nonce> ─▶ port
//!    ── UDP  NAT_PROBE <id> <nonce> ─▶ second port
//!    ◀─ TCP  NAT_SEEN <port> <addr> ──────────     mapping: does our public address change
//!    ◀─ TCP  NAT_SEEN <second port> <addr> ───     when only the destination port does?
//!    ◀─ UDP  NAT_OPEN <nonce> ─── a third port     filtering: does a datagram from a port
//!                                                  we never sent to get in?
//! ```
//!
//! `NAT_OPEN` answers a probe to the registration port from a port the OS picked for the
//! server, which no client ever sends to: so no entry in our NAT, however recent (our own
//! probes, or those of an earlier run of ours on the same port, which a NAT keeps for 30 s
//! or more), can let it in as a reply, and the filtering answer is true each time discovery
//! runs. (From the second port, which we probe, it was not: the NAT lab saw a home router
//! read as `open` by a client started again within 30 s, and, where the router takes the
//! unsolicited `NAT_OPEN` for itself, the entry it keeps for it made our probe to the
//! second port collide: `symmetric`.) So the two questions need no order, and are asked at
//! once, the moment we are listed: the mapping is measured before our first chat is likely
//! to have punched anything. A punch that collides on a stale NAT entry leaves us on
//! another public port for that peer, and a Linux NAT may then give a new destination that
//! port too: measured after it, a home router reads as one that gives each destination its
//! own port. Hence also the words: they say what was measured, two ports, not every
//! destination, and what follows is never final (see [`super::paths`]: a relay chosen by
//! the kinds expires).
//!
//! Each probe is repeated a few times (UDP loses some), and discovery has a deadline: with
//! an answer missing, the behaviour is [`Nat::Unknown`], and everything works as before
//! discovery.
//!
//! One server address answers only for other ports of that address: a NAT that filters by
//! address alone (admitting any port of a host we sent to) reads as not filtering, and one
//! whose mapping changes only when the destination address does reads as keeping one
//! mapping. RFC 5780 tells those apart with a second address; for a hole punch, where each
//! side sends to the other's address first, the distinction does not matter.

use super::paths::DIRECT_RETRY;
use super::Client;
use crate::failure::Failure;
use crate::nonce::Nonce;
use crate::wire::{Announce, Nat, Public, Request};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the server may take to answer `NAT_TEST` over TCP.
const ASK_WAIT: Duration = Duration::from_secs(10);
/// The pause between two rounds of probes, and how many rounds at most.
const PROBE_EVERY: Duration = Duration::from_millis(250);
const PROBES: u32 = 6;
/// How long the filtering question waits for `NAT_OPEN`: at least this long from the first
/// probe, and at least [`OPEN_AFTER_SEEN`] after the server said it saw a probe to its
/// registration port (the two answers leave the server together, and the datagram may be
/// the slower), but never longer than [`PROBING_MOST`].
const OPEN_WAIT: Duration = Duration::from_secs(2);
const OPEN_AFTER_SEEN: Duration = Duration::from_secs(1);
/// The longest discovery waits for its answers once it probes.
const PROBING_MOST: Duration = Duration::from_secs(6);

/// Where discovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `NAT_TEST` sent; waiting for the server's answer until then.
    Asked { until: Instant },
    /// Probing both ports since `since`: the registration port and `alt`, the second one.
    Probing { alt: SocketAddr, since: Instant },
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
    /// Rounds of probes sent, and when the next is due.
    sent: u32,
    next: Instant,
    /// Where the server saw our probe to its registration port, and when it said so last.
    seen_main: Option<(SocketAddr, Instant)>,
    /// Where it saw our probe to its second port.
    seen_alt: Option<SocketAddr>,
    /// A `NAT_OPEN` of ours got in.
    open: bool,
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

    /// The line said once at start, and by `@nat`: what was measured (the public address
    /// the server saw for each of its two ports, and whether its datagram from a port we
    /// never sent to got in), and what follows for our chats.
    pub fn describe(&self) -> String {
        let one_port = "Our NAT showed the server one public port for both of its ports we probed";
        let two_ports = "Our NAT showed the server a different public port for each of its two \
                         ports we probed";
        let retry = DIRECT_RETRY.as_secs();
        match (self.nat, self.why_unknown) {
            (Nat::None, _) => "No NAT between us and the server (it saw our own address from \
                both of its ports), and a datagram from a port we never sent to got in: peers \
                can reach us directly."
                .into(),
            (Nat::Open, _) => format!(
                "{one_port}, and let in a datagram from a port we never sent to: direct chats \
                 should work with any peer."
            ),
            (Nat::Cone, _) => format!(
                "{one_port}, and let in only replies: a typical home router (direct chats need \
                 a coordinated punch, which natchat does)."
            ),
            (Nat::Symmetric, _) => format!(
                "{two_ports}, and let in only replies: it may give every destination its own \
                 port (symmetric), and then no punch reaches a peer whose NAT lets in only \
                 replies: chats with one start on the relay, and a direct path is tried again \
                 every {retry} s."
            ),
            (Nat::OpenSymmetric, _) => format!(
                "{two_ports}, but let in a datagram from a port we never sent to: chats with a \
                 peer whose NAT lets in only replies start on the relay, and a direct path is \
                 tried again every {retry} s."
            ),
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
            open: false,
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
        self.stage = Stage::Probing {
            alt: SocketAddr::new(self.server.ip(), port),
            since: now,
        };
        self.next = now;
        None
    }

    /// `NAT_SEEN <port> <seen>`: where the server saw our probe to its `port`. The answer may
    /// be complete.
    pub fn on_seen(&mut self, port: u16, seen: SocketAddr, now: Instant) -> Option<Found> {
        let Stage::Probing { alt, .. } = self.stage else {
            return None;
        };
        if port == alt.port() {
            self.seen_alt = Some(seen);
        } else {
            self.seen_main = Some((seen, now));
        }
        self.answer(now)
    }

    /// A `NAT_OPEN` arrived: if it bears our nonce, it came from the server's port that we
    /// never send to, and our NAT let it in. The answer may be complete.
    pub fn on_open(&mut self, nonce: &Nonce, now: Instant) -> Option<Found> {
        if !matches!(self.stage, Stage::Probing { .. }) || !self.nonce.matches(nonce) {
            return None;
        }
        self.open = true;
        self.answer(now)
    }

    /// What was found, once the server saw both probes and our `NAT_OPEN` got in, or its
    /// wait is over.
    fn answer(&self, now: Instant) -> Option<Found> {
        let Stage::Probing { since, .. } = self.stage else {
            return None;
        };
        let ((main, seen_at), alt) = (self.seen_main?, self.seen_alt?);
        let open_waited = (since + OPEN_WAIT)
            .max(seen_at + OPEN_AFTER_SEEN)
            .min(since + PROBING_MOST);
        // The server saw our probes, and its answers from a port we never sent to did not
        // get in by then: our NAT drops what it did not ask for.
        (self.open || now >= open_waited).then(|| Found {
            nat: classify(main, alt, self.open, self.private),
            why_unknown: None,
        })
    }

    /// Where probes are due now (both ports, or the one still unanswered); or what was
    /// found, if the answer is complete or a deadline passed.
    pub fn due(&mut self, now: Instant) -> Result<Vec<SocketAddr>, Found> {
        let (alt, since) = match self.stage {
            Stage::Asked { until } if now >= until => {
                return Err(Found::unknown(
                    "the server did not answer our NAT test: an older server?",
                ))
            }
            Stage::Asked { .. } => return Ok(Vec::new()),
            Stage::Probing { alt, since } => (alt, since),
        };
        if let Some(found) = self.answer(now) {
            return Err(found);
        }
        if now >= since + PROBING_MOST {
            return Err(Found::unknown(if self.seen_main.is_none() {
                "no answer to our probes of the server's port"
            } else {
                "no answer from the server's second port: a firewall on the way?"
            }));
        }
        if self.sent >= PROBES || now < self.next {
            return Ok(Vec::new());
        }
        self.sent += 1;
        self.next = now + PROBE_EVERY;
        // The registration port until its NAT_OPEN got in (more tries for a lost one), the
        // second port until it was seen.
        let main = (!self.open).then_some(self.server);
        let second = self.seen_alt.is_none().then_some(alt);
        Ok(main.into_iter().chain(second).collect())
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
    pub fn on_nat_open(&mut self, nonce: &Nonce) -> Result<(), Failure> {
        let found = self
            .discovery
            .as_mut()
            .and_then(|d| d.on_open(nonce, Instant::now()));
        self.found(found)
    }

    /// Sends the probes that are due, or ends discovery with what it found.
    pub fn discovery_due(&mut self, now: Instant) -> Result<(), Failure> {
        let Some(discovery) = &mut self.discovery else {
            return Ok(());
        };
        match discovery.due(now) {
            Ok(ports) => {
                for to in ports {
                    let _ = self.udp.send_to(discovery.probe().as_bytes(), to);
                }
                Ok(())
            }
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
        assert_eq!(d.due(now), Ok(vec![]), "nothing before the server answers");
        assert_eq!(d.on_test(Some(10081), now), None);
        (d, nonce)
    }

    const MAIN: &str = "10.9.9.9:10080";
    const SECOND: &str = "10.9.9.9:10081";

    #[test]
    fn both_questions_are_asked_at_once_and_answered_in_any_order() {
        let now = Instant::now();
        let (mut d, nonce) = tested(now);
        assert_eq!(
            d.due(now),
            Ok(vec![addr(MAIN), addr(SECOND)]),
            "both ports at once"
        );
        assert_eq!(d.due(now), Ok(vec![]), "one round at a time");
        let public = addr("10.0.0.1:10081");
        // NAT_OPEN may overtake the server's lines; a NAT_OPEN with someone else's nonce
        // proves nothing.
        let stranger = crate::nonce::Nonces::new().unwrap().draw();
        assert_eq!(d.on_open(&stranger, now), None);
        assert_eq!(d.on_open(&nonce, now), None, "the mapping is not known yet");
        assert_eq!(d.on_seen(10081, public, now), None);
        // The second port was seen: only the registration port would be probed again.
        assert_eq!(
            d.on_seen(10080, public, now),
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
        let mut rounds = 0;
        // Bounded: the deadline ends it.
        let found = loop {
            match d.due(t) {
                Err(found) => break found,
                Ok(ports) if !ports.is_empty() => {
                    rounds += 1;
                    // The server sees each probe; the NAT_OPENs never get in.
                    assert!(d.on_seen(10080, public, t).is_none());
                    assert!(d.on_seen(10081, addr("10.0.0.1:50000"), t).is_none());
                    let again = d.due(t + PROBE_EVERY);
                    assert_eq!(again, Ok(vec![addr(MAIN)]), "the second port was seen");
                    rounds += 1;
                }
                Ok(_) => {}
            }
            t += Duration::from_millis(50);
            assert!(t < now + PROBING_MOST * 2, "ended by its deadline");
        };
        assert!((2..=PROBES).contains(&rounds), "{rounds} rounds");
        assert!(t >= now + OPEN_WAIT, "waited for the answer");
        assert_eq!(found.nat, Nat::Symmetric);
    }

    #[test]
    fn silence_makes_it_unknown_within_a_bounded_time() {
        let now = Instant::now();
        let nonce = crate::nonce::Nonces::new().unwrap().draw();
        let server = addr(MAIN);
        let mut d = Discovery::start("a", nonce, server, server, now);
        assert!(d.due(now + ASK_WAIT).is_err(), "no answer to NAT_TEST");

        let (mut d, _) = tested(now);
        let found = d.due(now + PROBING_MOST).unwrap_err();
        assert_eq!(found.nat, Nat::Unknown);
        assert!(found
            .describe()
            .contains("no answer to our probes of the server's port"));

        // The registration port answers, the second one never does.
        let (mut d, _) = tested(now);
        d.on_seen(10080, addr("10.0.0.1:10081"), now);
        let found = d.due(now + PROBING_MOST).unwrap_err();
        assert!(found
            .describe()
            .contains("no answer from the server's second port"));

        let mut d = Discovery::start("a", nonce, server, server, now);
        let found = d.on_test(None, now).unwrap();
        assert!(found.describe().contains("no second UDP port"));
    }

    #[test]
    fn the_words_say_what_was_measured_and_promise_no_more() {
        let said = |nat| {
            Found {
                nat,
                why_unknown: None,
            }
            .describe()
        };
        for nat in [Nat::Symmetric, Nat::OpenSymmetric] {
            let words = said(nat);
            assert!(words.contains("a different public port for each of its two ports"));
            assert!(words.contains(&format!("tried again every {} s", DIRECT_RETRY.as_secs())));
            assert!(!words.contains("cannot work"), "{words}");
        }
        for nat in [Nat::Open, Nat::Cone] {
            assert!(said(nat).contains("one public port for both of its ports we probed"));
        }
    }
}
