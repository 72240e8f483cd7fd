//! Port prediction: a direct path between a NAT that gives each destination its own random
//! public port ("symmetric", the *hard* side) and one that keeps one public port for every
//! destination but admits only replies ("cone", the *easy* side). A plain punch cannot work
//! there: the hard side's punch leaves from a port nobody told the easy side about, and the
//! easy side's punch is aimed at a port the hard side's NAT never opened toward it.
//!
//! So both sides guess, at the moment the server's `PUNCH` starts the punch on both (the
//! birthday paradox, as Tailscale describes it publicly):
//!
//! - the hard side opens [`MAPPINGS`] extra UDP sockets and sends from each one genuine probe
//!   to the easy side's public endpoint: its NAT makes that many random mappings toward it,
//!   each of which admits what the easy side sends to it;
//! - the easy side sends at most [`GUESSES`] probes from its one socket to distinct random
//!   ports (1024 to 65535) of the hard side's public IP, [`GUESS_EVERY`] apart.
//!
//! With 64,512 ports, each guess misses every mapping with probability 1 − 256/64,512, so all
//! 512 miss with (1 − 256/64,512)^512 ≈ 0.13: one attempt succeeds about 87 % of the time.
//! Attempts are [`ATTEMPT_GAP`] apart at least (conntrack's 30 s for an unanswered UDP flow:
//! the failed attempt's entries have expired), and the paths module retries no faster than
//! its `DIRECT_RETRY` (35 s): two attempts succeed about 98 % of the time, three 99.8 %.
//!
//! When a guess lands on one of the mappings, the hard side hears it on that socket and from
//! then on sends everything for that peer from it ([`Prediction::socket`]); the easy side sees
//! the hard side's probes come from the guessed port and validates it as a peer-reflexive
//! candidate, as any other ([`super::paths`]). Nothing is trusted that is not tagged with the
//! pair's key: a datagram on a guessing socket that is not the peer's genuine datagram is
//! ignored.
//!
//! This is the one place the client has more than one UDP receive thread: during an attempt,
//! one short-lived guesser thread owns the hard side's sockets (polling them, for at most
//! [`ATTEMPT_FOR`]), and once a guess lands that thread keeps reading the one socket that
//! won, feeding the same channel as the main UDP reader, until the peer's path no longer
//! needs it. Everything else is closed when the attempt ends: a hit, the deadline, the peer
//! gone or moved, the client's exit. At most one attempt per peer is under way.

use super::readers::{FromPeer, FromUdp};
use super::transport::{probes_due, Via};
use super::Client;
use crate::failure::{spawn, Failure};
use crate::nonce::{Key, Nonces};
use crate::wire::{Datagram, Nat, Public};
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many mappings the hard side opens.
pub const MAPPINGS: usize = 256;
/// How many ports of the hard side the easy side guesses, at most.
pub const GUESSES: usize = 512;
/// The pause between two guesses: a paced stream, not one burst that a NAT or a link drops.
const GUESS_EVERY: Duration = Duration::from_millis(4);
/// How long the easy side waits before its first guess: the hard side's mappings must exist
/// before a guess can land on one (both sides got `PUNCH` at about the same moment).
const HEAD_START: Duration = Duration::from_millis(150);
/// How long an attempt lasts: the guesses take about 2 s; the rest is for their answers.
const ATTEMPT_FOR: Duration = Duration::from_secs(10);
/// The shortest time between two attempts with one peer: conntrack's timeout for a UDP flow
/// that was never answered, so that the last attempt's hundreds of entries are gone.
const ATTEMPT_GAP: Duration = Duration::from_secs(30);
/// How often the guesser looks at its sockets, and how often a thread checks it is still
/// wanted.
const POLL_EVERY: Duration = Duration::from_millis(5);
const STOP_CHECK: Duration = Duration::from_millis(200);
/// The ports a NAT gives out (Linux's MASQUERADE: 1024 to 65535 for a client port above
/// 1023).
const FIRST_PORT: u16 = 1024;

/// Which part we play in an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Our NAT gives each destination its own port: we open many mappings.
    Hard,
    /// Our NAT keeps one port for every destination: we guess the other side's ports.
    Easy,
}

/// Our part, when port prediction can connect our NAT (`mine`) and the peer's (`theirs`)
/// where a plain punch cannot: exactly one of the two changes its port with the destination.
/// `None` when a plain punch can work, when both change it (no guess can meet two random
/// ports), or when either kind is not known.
pub fn role(mine: Nat, theirs: Nat) -> Option<Role> {
    if !mine.punch_cannot_work(theirs) {
        return None;
    }
    match (mine.mapping_changes()?, theirs.mapping_changes()?) {
        (true, false) => Some(Role::Hard),
        (false, true) => Some(Role::Easy),
        _ => None,
    }
}

/// Port prediction with one peer: the attempt under way, and the socket a past one won.
#[derive(Default)]
pub struct Prediction {
    attempt: Option<Attempt>,
    /// How many attempts were started with this peer.
    attempts: u32,
    last_started: Option<Instant>,
    /// The hard side's socket whose mapping the peer's guess found: everything for this peer
    /// leaves from it.
    won: Option<Won>,
}

/// An attempt under way.
struct Attempt {
    role: Role,
    number: u32,
    started: Instant,
    /// Dropped, it tells the attempt's thread to stop (it sees its channel disconnected);
    /// a hit hands it on to the socket won, whose reader it then keeps going.
    stop: Sender<()>,
    /// The easy side's guesses sent so far.
    sent: Arc<AtomicUsize>,
}

/// The hard side's socket that a guess landed on.
struct Won {
    socket: UdpSocket,
    /// Dropped, it ends the thread that reads the socket.
    _stop: Sender<()>,
    /// Not yet said to the user: which mapping, after how long, in which attempt.
    untold: Option<String>,
}

/// A guess landed on one of our mappings: the guesser thread hands the loop the socket, and
/// the peer's datagram that came on it.
pub struct Hit {
    peer: String,
    attempt: u32,
    socket: UdpSocket,
    /// Which of the [`MAPPINGS`] it was (from 1).
    mapping: usize,
    first: FromPeer,
}

/// What an attempt needs: who it is with, what it sends, and how it reaches the loop.
struct Start<'a> {
    peer: &'a str,
    key: Key,
    /// The peer's public endpoint, as the server saw it.
    public: SocketAddr,
    /// A genuine probe, tagged with the pair's key: the hard side sends it from each new
    /// mapping, the easy side to each guessed port.
    probe: Datagram,
    /// Our one socket, the easy side's guesses leave from.
    udp: &'a UdpSocket,
    to_loop: &'a Sender<FromUdp>,
}

impl Client {
    /// The server's `PUNCH` has started a punch with peer `id`: port prediction starts with
    /// it, if our two NATs need it ([`role`]) and it may be tried (see
    /// [`Prediction::may_start`]).
    pub fn predict(&mut self, id: &str, now: Instant) {
        let Some(role) = self.peers.prediction_role(id) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(id) else {
            return;
        };
        let (Some(key), Public::At(public)) = (peer.key().copied(), peer.info.public) else {
            return;
        };
        if !peer.prediction.may_start(now) {
            return;
        }
        // The hard side asks the peer's public endpoint with our punch's own nonce: the
        // answer to any of its mappings' probes validates it.
        let asking = match role {
            Role::Hard => peer.paths.asking(public),
            Role::Easy => None,
        };
        let nonce = asking.unwrap_or_else(|| self.nonces.draw());
        let start = Start {
            peer: id,
            key,
            public,
            probe: Datagram::probe(&self.id, nonce, &key),
            udp: &self.udp,
            to_loop: &self.to_loop_udp,
        };
        peer.prediction.start(role, start, &mut self.nonces, now);
    }

    /// A guess of the peer's landed on one of our mappings: that socket is the peer's from
    /// now on, what came on it is taken as any datagram straight from the peer, and the
    /// peer's public endpoint is asked from it at once.
    pub fn on_hit(&mut self, hit: Hit) -> Result<(), Failure> {
        let id = hit.peer.clone();
        let now = Instant::now();
        let Some(first) = self
            .peers
            .get_mut(&id)
            .and_then(|peer| peer.prediction.won(hit, now))
        else {
            return Ok(());
        };
        self.on_datagram(first.datagram, Via::Direct(first.from))?;
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.paths.mapping_found(first.from, &mut self.nonces, now);
            let probes = probes_due(peer, &self.id, now);
            self.send_probes(&id, probes);
        }
        Ok(())
    }
}

impl Prediction {
    /// Whether an attempt may start now: none under way, and the last one long enough ago.
    pub fn may_start(&self, now: Instant) -> bool {
        self.attempt.is_none()
            && self
                .last_started
                .is_none_or(|last| now.duration_since(last) >= ATTEMPT_GAP)
    }

    /// Starts an attempt in `role`, in a thread of its own. A thread that cannot be started
    /// leaves no attempt: the relay carries on.
    fn start(&mut self, role: Role, start: Start, nonces: &mut Nonces, now: Instant) {
        let (stop, stopped) = bounded(0);
        let sent = Arc::new(AtomicUsize::new(0));
        let number = self.attempts + 1;
        let text = start.probe.to_string();
        let until = now + ATTEMPT_FOR;
        let started = match role {
            Role::Hard => {
                let guesser = Guesser {
                    peer: start.peer.to_string(),
                    key: start.key,
                    attempt: number,
                    to_loop: start.to_loop.clone(),
                    stopped,
                };
                let public = start.public;
                spawn("guesser", move || guesser.run(&text, public, until))
            }
            Role::Easy => {
                let ports = guesses(nonces);
                let sent = Arc::clone(&sent);
                let ip = start.public.ip();
                match start.udp.try_clone() {
                    Ok(udp) => spawn("guesses", move || {
                        guess(&udp, &text, ip, &ports, &stopped, &sent)
                    }),
                    Err(_) => return,
                }
            }
        };
        if started.is_ok() {
            self.attempts = number;
            self.last_started = Some(now);
            self.attempt = Some(Attempt {
                role,
                number,
                started: now,
                stop,
                sent,
            });
        }
    }

    /// The attempt is over if its time is up; its threads stop and its sockets close.
    pub fn expire(&mut self, now: Instant) {
        if self
            .attempt
            .as_ref()
            .is_some_and(|a| now.duration_since(a.started) >= ATTEMPT_FOR)
        {
            self.attempt = None;
        }
    }

    /// A guess landed on one of our mappings (`hit`): that socket is the peer's from now on,
    /// and the datagram that came on it is returned; unless the hit belongs to no attempt
    /// under way (a late one: it is dropped, and its thread stops).
    fn won(&mut self, hit: Hit, now: Instant) -> Option<FromPeer> {
        let attempt = self.attempt.take_if(|a| a.number == hit.attempt)?;
        let untold = format!(
            "attempt {}; its guess reached our mapping {} of {MAPPINGS} after {:.1} s",
            attempt.number,
            hit.mapping,
            now.duration_since(attempt.started).as_secs_f64()
        );
        self.won = Some(Won {
            socket: hit.socket,
            _stop: attempt.stop,
            untold: Some(untold),
        });
        Some(hit.first)
    }

    /// A direct path to the peer validated: the easy side stops guessing. Returns what to
    /// tell the user, once, if port prediction found it.
    pub fn found(&mut self, now: Instant) -> Option<String> {
        if let Some(attempt) = self.attempt.take_if(|a| a.role == Role::Easy) {
            return Some(format!(
                "attempt {}; after {} of our {GUESSES} guesses, {:.1} s",
                attempt.number,
                attempt.sent.load(Ordering::Relaxed),
                now.duration_since(attempt.started).as_secs_f64()
            ));
        }
        self.won.as_mut().and_then(|won| won.untold.take())
    }

    /// The socket a past attempt won, if any: everything for this peer leaves from it.
    pub fn socket(&self) -> Option<&UdpSocket> {
        self.won.as_ref().map(|won| &won.socket)
    }

    /// Ends everything: the attempt under way, and the socket won (the peer left or moved).
    pub fn end(&mut self) {
        self.attempt = None;
        self.won = None;
    }
}

/// [`GUESSES`] distinct random ports, from [`FIRST_PORT`] up.
fn guesses(nonces: &mut Nonces) -> Vec<u16> {
    let span = u64::from(u16::MAX - FIRST_PORT) + 1;
    let mut ports = BTreeSet::new();
    let mut order = Vec::with_capacity(GUESSES);
    while order.len() < GUESSES {
        // `span` fits in a u16 offset from FIRST_PORT, so the sum never overflows.
        let port = FIRST_PORT + (nonces.number() % span) as u16;
        if ports.insert(port) {
            order.push(port);
        }
    }
    order
}

/// Whether the loop has dropped the attempt (or the socket won): the thread must end.
fn stopped(stop: &Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
}

/// The easy side's thread: sends `probe` to each guessed port of `ip`, paced, until done or
/// stopped. Counts what it sent, for the report.
fn guess(
    udp: &UdpSocket,
    probe: &str,
    ip: IpAddr,
    ports: &[u16],
    stop: &Receiver<()>,
    sent: &AtomicUsize,
) {
    std::thread::sleep(HEAD_START);
    for &port in ports {
        if stopped(stop) {
            return;
        }
        // Best effort, as every UDP send: a guess that fails to leave is a guess lost.
        let _ = udp.send_to(probe.as_bytes(), SocketAddr::new(ip, port));
        sent.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(GUESS_EVERY);
    }
}

/// The hard side's thread.
struct Guesser {
    peer: String,
    key: Key,
    attempt: u32,
    to_loop: Sender<FromUdp>,
    stopped: Receiver<()>,
}

impl Guesser {
    /// Opens the mappings (a probe from each new socket to the peer's `public` endpoint),
    /// then listens on all of them until a genuine datagram of the peer's arrives on one, the
    /// attempt's time is up (`until`), or the loop stops it. After a hit, reads that one
    /// socket for the loop; the others close.
    fn run(self, probe: &str, public: SocketAddr, until: Instant) {
        let mut sockets: Vec<UdpSocket> = (0..MAPPINGS)
            .filter_map(|_| UdpSocket::bind(("0.0.0.0", 0)).ok())
            .filter(|socket| socket.set_nonblocking(true).is_ok())
            .collect();
        for socket in &sockets {
            let _ = socket.send_to(probe.as_bytes(), public);
        }
        let mut buf = [0u8; 1500];
        while Instant::now() < until && !stopped(&self.stopped) {
            for (index, socket) in sockets.iter().enumerate() {
                while let Ok((len, from)) = socket.recv_from(&mut buf) {
                    let Some(datagram) = self.genuine(&buf[..len]) else {
                        continue;
                    };
                    let socket = sockets.swap_remove(index);
                    drop(sockets);
                    self.adopt(socket, index + 1, FromPeer { datagram, from });
                    return;
                }
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// The peer's datagram, if `bytes` is one: well formed, from the peer, tagged with our
    /// key (an acknowledgement, untagged, proves nothing here).
    fn genuine(&self, bytes: &[u8]) -> Option<Datagram> {
        let datagram: Datagram = std::str::from_utf8(bytes).ok()?.parse().ok()?;
        let ours = datagram.from() == self.peer && datagram.tagged_by(&self.key);
        let tagged = !matches!(datagram, Datagram::Ack { .. });
        (ours && tagged).then_some(datagram)
    }

    /// Hands the loop the socket that won, with its first datagram, then reads it for the
    /// loop until stopped: only the peer's datagrams (the loop checks their tags, as ever).
    fn adopt(self, socket: UdpSocket, mapping: usize, first: FromPeer) {
        let (Ok(()), Ok(())) = (
            socket.set_nonblocking(false),
            socket.set_read_timeout(Some(STOP_CHECK)),
        ) else {
            return;
        };
        let Ok(for_loop) = socket.try_clone() else {
            return;
        };
        let hit = Hit {
            peer: self.peer.clone(),
            attempt: self.attempt,
            socket: for_loop,
            mapping,
            first,
        };
        if self.to_loop.send(FromUdp::Predicted(hit)).is_err() {
            return;
        }
        let mut buf = [0u8; 1500];
        while !stopped(&self.stopped) {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let datagram = std::str::from_utf8(&buf[..len])
                .ok()
                .and_then(|text| text.parse::<Datagram>().ok())
                .filter(|datagram| datagram.from() == self.peer);
            if let Some(datagram) = datagram {
                let _ = self
                    .to_loop
                    .try_send(FromUdp::Peer(FromPeer { datagram, from }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Nat::{Cone, Open, OpenSymmetric, Symmetric, Unknown};

    #[test]
    fn prediction_is_tried_only_where_exactly_one_side_changes_its_port() {
        assert_eq!(role(Symmetric, Cone), Some(Role::Hard));
        assert_eq!(role(Cone, Symmetric), Some(Role::Easy));
        assert_eq!(role(OpenSymmetric, Cone), Some(Role::Hard));
        assert_eq!(
            role(Symmetric, Symmetric),
            None,
            "two random ports never meet"
        );
        assert_eq!(role(Symmetric, OpenSymmetric), None);
        for plain in [Nat::None, Open] {
            assert_eq!(role(Symmetric, plain), None, "a plain punch works");
            assert_eq!(role(plain, Symmetric), None);
        }
        assert_eq!(role(Cone, Cone), None);
        assert_eq!(role(Symmetric, Unknown), None);
        assert_eq!(role(Unknown, Cone), None);
    }

    #[test]
    fn the_guesses_are_distinct_ports_a_nat_gives_out() {
        let mut nonces = Nonces::new().unwrap();
        let ports = guesses(&mut nonces);
        assert_eq!(ports.len(), GUESSES);
        assert!(ports.iter().all(|&p| p >= FIRST_PORT));
        assert_eq!(ports.iter().collect::<BTreeSet<_>>().len(), GUESSES);
        assert_ne!(ports, guesses(&mut nonces), "drawn afresh each attempt");
    }

    #[test]
    fn the_arithmetic_of_the_module_doc_holds() {
        let miss = 1.0 - MAPPINGS as f64 / f64::from(u16::MAX - FIRST_PORT + 1);
        let one = 1.0 - miss.powi(GUESSES as i32);
        assert!((0.86..0.88).contains(&one), "{one}");
        assert!(1.0 - (1.0 - one).powi(2) > 0.98);
        assert!(1.0 - (1.0 - one).powi(3) > 0.997);
    }

    /// Generous, for a loaded machine.
    const SOON: Duration = Duration::from_secs(5);

    /// What reaches `socket` within `wait`, until `enough` datagrams.
    fn receive(socket: &UdpSocket, enough: usize, wait: Duration) -> Vec<(String, SocketAddr)> {
        socket.set_read_timeout(Some(wait / 10)).unwrap();
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while got.len() < enough && Instant::now() < deadline {
            if let Ok((len, from)) = socket.recv_from(&mut buf) {
                got.push((String::from_utf8_lossy(&buf[..len]).into_owned(), from));
            }
        }
        got
    }

    /// The hard side, on loopback, against a socket this test owns as the peer's public
    /// endpoint: every probe goes there, and nothing else is sent anywhere.
    #[test]
    fn the_hard_side_takes_only_the_peers_genuine_datagram_then_keeps_that_socket_alone() {
        let mut nonces = Nonces::new().unwrap();
        let key = Key::fresh().unwrap();
        let far = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ours = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tx, rx) = bounded(MAPPINGS);
        let now = Instant::now();
        let mut prediction = Prediction::default();
        assert!(prediction.may_start(now));
        let start = Start {
            peer: "far",
            key,
            public: far.local_addr().unwrap(),
            probe: Datagram::probe("me", nonces.draw(), &key),
            udp: &ours,
            to_loop: &tx,
        };
        prediction.start(Role::Hard, start, &mut nonces, now);
        assert!(!prediction.may_start(now), "one attempt at a time");

        // The mappings' probes: genuine, each from a socket of its own. (A burst this size
        // may overflow a socket buffer: not all need arrive.)
        let probes = receive(&far, MAPPINGS, SOON);
        assert!(!probes.is_empty());
        let sources: BTreeSet<_> = probes.iter().map(|(_, from)| *from).collect();
        assert_eq!(sources.len(), probes.len(), "one probe per mapping");
        for (text, _) in &probes {
            let probe: Datagram = text.parse().unwrap();
            assert!(probe.from() == "me" && probe.tagged_by(&key), "{text}");
        }
        let mapping = probes[probes.len() / 2].1;

        // Anything but the peer's genuine datagram is ignored; that one is handed over.
        let mallory = Key::fresh().unwrap();
        let genuine = Datagram::probe("far", nonces.draw(), &key).to_string();
        for junk in [
            "hello".to_string(),
            Datagram::probe("far", nonces.draw(), &mallory).to_string(),
            Datagram::probe("mallory", nonces.draw(), &key).to_string(),
            // Untagged: an acknowledgement proves itself by its stamp, which only the loop
            // can check.
            Datagram::Ack {
                from: "far".into(),
                seq: 1,
                stamp: nonces.draw(),
            }
            .to_string(),
            genuine.clone(),
        ] {
            far.send_to(junk.as_bytes(), mapping).unwrap();
        }
        let Ok(FromUdp::Predicted(hit)) = rx.recv_timeout(SOON) else {
            panic!("no hit");
        };
        assert_eq!(hit.first.datagram.to_string(), genuine);
        assert_eq!(hit.first.from, far.local_addr().unwrap());
        let first = prediction.won(hit, now).expect("the attempt under way");
        assert_eq!(first.datagram.to_string(), genuine);
        let socket = prediction
            .socket()
            .expect("the mapping's socket is the peer's");
        assert_eq!(socket.local_addr().unwrap().port(), mapping.port());
        let socket = socket.try_clone().unwrap();
        let told = prediction.found(now).expect("said once");
        assert!(
            told.starts_with("attempt 1; its guess reached our mapping "),
            "{told}"
        );
        assert_eq!(prediction.found(now), None);

        // The socket carries on, read for the loop: what the peer sends to it arrives.
        let chat = Datagram::probe("far", nonces.draw(), &key).to_string();
        far.send_to(chat.as_bytes(), mapping).unwrap();
        match rx.recv_timeout(SOON) {
            Ok(FromUdp::Peer(peer)) => assert_eq!(peer.datagram.to_string(), chat),
            _ => panic!("the won socket's datagram did not reach the loop"),
        }
        // Sends for the peer leave from it.
        socket
            .send_to(b"from the mapping", far.local_addr().unwrap())
            .unwrap();
        let got = receive(&far, 1, SOON);
        assert_eq!(got.last().map(|(_, from)| *from), Some(mapping));

        // The peer gone: its socket closes, and its thread stops reading.
        prediction.end();
        assert!(prediction.socket().is_none());
        std::thread::sleep(STOP_CHECK * 3);
        far.send_to(chat.as_bytes(), mapping).unwrap();
        assert!(
            rx.recv_timeout(STOP_CHECK * 3).is_err(),
            "nothing read after the end"
        );
        assert!(
            !prediction.may_start(now + ATTEMPT_GAP / 2),
            "not again so soon"
        );
        assert!(prediction.may_start(now + ATTEMPT_GAP));
    }

    /// The easy side's sending, to ports of sockets this test owns (never to a port of
    /// loopback that someone else may own).
    #[test]
    fn the_easy_side_sends_each_guess_once_paced_and_not_once_stopped() {
        let targets: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = targets
            .iter()
            .map(|t| t.local_addr().unwrap().port())
            .collect();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let sent = AtomicUsize::new(0);
        let (stop, stopped) = bounded::<()>(0);
        let began = Instant::now();
        guess(&udp, "PROBE guess", ip, &ports, &stopped, &sent);
        assert!(began.elapsed() >= HEAD_START + GUESS_EVERY * 3, "paced");
        assert_eq!(sent.load(Ordering::Relaxed), ports.len());
        for target in &targets {
            let got = receive(target, 2, Duration::from_millis(500));
            let from = udp.local_addr().unwrap();
            assert_eq!(got, vec![("PROBE guess".to_string(), from)], "once each");
        }
        drop(stop);
        let sent = AtomicUsize::new(0);
        guess(&udp, "PROBE guess", ip, &ports, &stopped, &sent);
        assert_eq!(sent.load(Ordering::Relaxed), 0, "stopped: nothing sent");
        for target in &targets {
            assert!(receive(target, 1, Duration::from_millis(300)).is_empty());
        }
    }

    #[test]
    fn a_hit_after_its_attempt_ended_is_dropped() {
        let (stop, _stopped) = bounded(0);
        let now = Instant::now();
        let mut prediction = Prediction {
            attempt: Some(Attempt {
                role: Role::Hard,
                number: 1,
                started: now,
                stop,
                sent: Arc::default(),
            }),
            ..Prediction::default()
        };
        prediction.expire(now + ATTEMPT_FOR / 2);
        assert!(prediction.attempt.is_some(), "still under way");
        prediction.expire(now + ATTEMPT_FOR);
        assert!(prediction.attempt.is_none(), "over");
        let key = Key::fresh().unwrap();
        let from = "127.0.0.1:9".parse().unwrap();
        let hit = Hit {
            peer: "far".into(),
            attempt: 1,
            socket: UdpSocket::bind("127.0.0.1:0").unwrap(),
            mapping: 7,
            first: FromPeer {
                datagram: Datagram::probe("far", Nonces::new().unwrap().draw(), &key),
                from,
            },
        };
        assert!(prediction.won(hit, now + ATTEMPT_FOR).is_none());
        assert!(prediction.socket().is_none());
    }
}
