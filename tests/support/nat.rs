//! A small Internet on loopback: each client lives in a "home" behind a userland NAT that
//! can lose, delay, duplicate, reorder and block its traffic, so that `cargo test` can prove
//! the client's paths (direct, relayed, moved, cut) without root or a network lab.
//!
//! # Why a NAT, and not just a relay
//!
//! On loopback every socket reaches every other. A proxy that merely relayed datagrams could
//! not stop two clients from talking straight to each other, once either learned the other's
//! real address. So each home is a NAT, and no client ever learns another's real address:
//!
//! ```text
//!                alice's home (a NAT)
//!   alice ──▶ server alias (TCP + UDP) ──TCP, piped, REGISTER rewritten──▶ the server
//!         ◀──                        ──UDP, leaves from O_a─────────────▶ (sees alice at O_a)
//!   alice ◀── alias I_{a,S} ◀── O_a ◀── a datagram from S (bob, say) to alice's public O_a
//!   alice ──▶ alias I_{a,S} ──▶ O_a ──▶ S
//!             decoy: the private address the server lists for alice; swallows everything
//! ```
//!
//! - The **outside** socket `O_x` is the home's public address: the client's datagrams to
//!   the server leave from it, so the server sees the client there and tells every peer so.
//! - The client sees the outside world through **aliases**: a datagram from outside sender
//!   `S` arrives at `O_x` and is handed to the client from an alias socket `I_{x,S}` of the
//!   home's own; what the client sends to `I_{x,S}` leaves from `O_x` to `S`. The server has
//!   an alias made in advance, listening on TCP and UDP on one port (the client uses one
//!   address for both): the client is started with `--server` pointing at it.
//! - TCP to the server alias is a pipe to the real server, delayed as the home's link
//!   says (in order, and never lost: TCP would turn a loss into more delay, which is not
//!   modelled), with one exception: the
//!   proxy is an **application-level gateway** (as NATs are for FTP or SIP), and rewrites
//!   the first line of each connection, `REGISTER <id> <private> ...`, to name the home's
//!   **decoy** instead: a socket that swallows everything, as a private address in another
//!   home would be unreachable from here. Without it, the peers would validate each other's
//!   real address as a private path, and bypass every impairment.
//!
//! The gateway does one more thing, server to client: it turns the server's answer to NAT
//! discovery, `NAT_TEST <port>`, into `NAT_TEST none`. A home has an alias for one server
//! port, not for the second one that discovery probes; the client would otherwise probe the
//! real server's second port straight over loopback, around its home, and read its NAT as
//! one that gives each destination its own port. So clients here find their NAT unknown,
//! and punch as they did before discovery.
//!
//! A client only ever sends to addresses the server or its home handed it (outside sockets,
//! aliases, decoys), and only ever receives from a home's sockets, so every datagram between
//! two clients crosses at least one home. A datagram from a client straight to another
//! home's outside socket crosses both homes: the net knows each client's real address (where
//! its datagrams to the server alias come from), and applies its sender's uplink and its
//! receiver's downlink, as two real NATs would.
//!
//! Impairments are set per home and per direction ([`Conditions`]), and may be changed
//! while the clients run. Every fate is counted ([`Counts`]): a test that impairs a path
//! asserts that the impairment happened, since a loss test where nothing was lost proves
//! nothing. Fates are drawn from a seeded generator (SplitMix64); the seed is printed when
//! a test fails, and `NATCHAT_NET_SEED=<n>` replays the same sequence of draws (which
//! datagram meets which draw still depends on timing).
//!
//! The threads stop when the [`Net`] is dropped: each checks a flag at least every 100 ms.
#![allow(dead_code)] // each test file uses a different part of it

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often a waiting thread looks at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// What happens to the datagrams going one way through a home's NAT.
#[derive(Clone, Debug, Default)]
pub struct Link {
    /// The probability that a datagram is lost (in the good state, with `burst`).
    pub loss: f64,
    /// Bursty loss: a Gilbert-Elliott channel, on top of `loss`.
    pub burst: Option<Burst>,
    /// A fixed delay, and a random one of up to `jitter` on top: datagrams overtake each
    /// other when the jitter is larger than the gap between them.
    pub delay: Duration,
    pub jitter: Duration,
    /// The probability that a datagram arrives twice.
    pub duplicate: f64,
}

/// The Gilbert-Elliott model of bursty loss: the link is good or bad, switches state before
/// each datagram with these probabilities, and loses `loss` of the datagrams while bad.
#[derive(Clone, Copy, Debug)]
pub struct Burst {
    /// From good to bad.
    pub enter: f64,
    /// From bad to good.
    pub leave: f64,
    pub loss: f64,
}

/// What a home lets through at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Block {
    #[default]
    Nothing,
    /// UDP between the client and its peers; UDP with the server passes ("relay only").
    Peers,
    /// All UDP (a campus network); TCP passes.
    Udp,
    /// Everything, TCP too (the link is down): TCP bytes wait in the pipe until it is back.
    Everything,
}

/// Everything a home's NAT does to its traffic.
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    /// Datagrams the client sends.
    pub up: Link,
    /// Datagrams the client receives.
    pub down: Link,
    pub block: Block,
}

impl Conditions {
    /// The same impairment both ways.
    pub fn both(link: Link) -> Conditions {
        Conditions {
            up: link.clone(),
            down: link,
            block: Block::Nothing,
        }
    }

    /// Nothing impaired, `block` blocked.
    pub fn blocking(block: Block) -> Conditions {
        Conditions {
            block,
            ..Conditions::default()
        }
    }
}

/// Which way a datagram or a TCP line went, as one home saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Way {
    /// UDP from the client to the server.
    ToServer,
    /// UDP from the server to the client.
    FromServer,
    /// UDP from the client to a peer.
    ToPeer,
    /// UDP from a peer to the client.
    FromPeer,
    /// UDP to the home's decoy (swallowed).
    ToDecoy,
    /// A TCP line from the client to the server.
    TcpToServer,
    /// A TCP line from the server to the client.
    TcpFromServer,
}

/// What a home did, since it was made.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Datagrams lost to `loss` or a burst.
    pub lost: u64,
    /// Datagrams dropped by a [`Block`] (or at a retired outside socket after a remap).
    pub blocked: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Datagrams held back by a delay or jitter (and TCP reads, each a line or more).
    pub delayed: u64,
    /// Datagrams this home delayed that are released before one that arrived earlier.
    pub reordered: u64,
    /// New public ports given ([`Home::remap`]).
    pub remaps: u64,
    /// What went through (each copy of a datagram, even one lost in another home further
    /// on; each TCP line), by way and first word:
    /// `CHAT`, `PROBE`, `PUNCH`, `RELAY`, ... A relayed peer datagram is counted twice: as
    /// `RELAY` (or `RELAYED`), and with the datagram's own first word, as `RELAY CHAT`.
    pub seen: BTreeMap<(Way, String), u64>,
    /// Datagrams lost to `loss` or a burst, by way and first word (`lost` in all).
    pub dropped: BTreeMap<(Way, String), u64>,
    /// Each acknowledgement delivered (past the delay line, or written on), direct
    /// (`ACK <acker> <seq> ...`) or relayed (`RELAY <to> ACK ...`, `RELAYED ACK ...`): its
    /// way, who acknowledged, and which message. A test can tell when every message of a
    /// sender was confirmed to it.
    pub acks: BTreeSet<(Way, String, u64)>,
}

impl Counts {
    /// How many datagrams or lines starting with `word` went `way`.
    pub fn of(&self, way: Way, word: &str) -> u64 {
        let key = (way, word.to_string());
        self.seen.get(&key).copied().unwrap_or(0)
    }

    /// How many datagrams starting with `word` going `way` were lost.
    pub fn dropped_of(&self, way: Way, word: &str) -> u64 {
        let key = (way, word.to_string());
        self.dropped.get(&key).copied().unwrap_or(0)
    }

    /// Whether an acknowledgement by `acker` of message `seq` came in, direct or relayed.
    pub fn acked(&self, acker: &str, seq: u64) -> bool {
        [Way::FromPeer, Way::TcpFromServer]
            .into_iter()
            .any(|way| self.acks.contains(&(way, acker.to_string(), seq)))
    }
}

/// The small Internet: the real server, and the homes made so far.
pub struct Net {
    shared: Arc<Shared>,
}

/// One home: a handle for the test.
#[derive(Clone)]
pub struct Home {
    shared: Arc<Shared>,
    index: usize,
    /// The server's alias inside the home: give the client this port (`--server 127.0.0.1`).
    pub port: u16,
    /// The address the home's client is listed with as private: it swallows everything.
    /// (The first one: [`Home::change_network`] gives another.)
    pub decoy: SocketAddr,
}

struct Shared {
    /// The real server: TCP and UDP on one address.
    server: SocketAddr,
    seed: u64,
    stop: AtomicBool,
    state: Mutex<State>,
    /// Datagrams waiting for their release time, and the delay thread's wake-up call.
    line: Mutex<BinaryHeap<Reverse<Pending>>>,
    line_changed: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

struct State {
    rng: SplitMix64,
    homes: Vec<HomeState>,
}

struct HomeState {
    name: String,
    /// The client's own UDP address: where its datagrams to the server alias come from.
    inside: Option<SocketAddr>,
    /// The public address: the NAT's mapping.
    outside: Arc<UdpSocket>,
    /// The server alias's UDP socket.
    server_alias: Arc<UdpSocket>,
    /// The private address a `REGISTER` through this home is rewritten to name.
    decoy: SocketAddr,
    /// The client's end of each TCP connection through the home: [`Home::change_network`]
    /// resets them.
    tcp: Vec<TcpStream>,
    /// Outside sender → the alias the client sees it as.
    aliases: HashMap<SocketAddr, Arc<UdpSocket>>,
    conditions: Conditions,
    /// Each direction's Gilbert-Elliott state (true: bad) and latest release time.
    up: LinkState,
    down: LinkState,
    counts: Counts,
}

#[derive(Default)]
struct LinkState {
    bad: bool,
    /// The next datagram finds the link bad, without a transition ([`Home::start_burst`]).
    forced: bool,
    latest: Option<Instant>,
}

/// One side of a home a datagram crosses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Up,
    Down,
}

/// What a socket of a home is for: tells its receiving thread what a datagram means.
#[derive(Clone, Copy)]
enum Role {
    Outside,
    ServerAlias,
    /// The alias of this outside sender.
    Alias(SocketAddr),
    Decoy,
}

/// An acknowledgement: who acknowledged, and which message.
type Ack = (String, u64);

/// What a pipe's reader hands its writer: lines, when to write them, and the
/// acknowledgements (acker, sequence number) relayed in them.
type Held = mpsc::Receiver<(Instant, Vec<u8>, Vec<Ack>)>;

/// A datagram on the delay line.
struct Pending {
    at: Instant,
    /// Arrival order, to break ties: equal release times keep their order.
    order: u64,
    from: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Vec<u8>,
    /// An acknowledgement's acker and sequence number, and the homes (and ways) to count it
    /// in once it is delivered.
    ack: Option<(Ack, Vec<(usize, Way)>)>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

impl Net {
    /// An Internet around the server at `127.0.0.1:server_port`, with no homes yet.
    pub fn new(server_port: u16) -> Net {
        let seed = std::env::var("NATCHAT_NET_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                nanos ^ u64::from(std::process::id()) << 32
            });
        let shared = Arc::new(Shared {
            server: SocketAddr::from(([127, 0, 0, 1], server_port)),
            seed,
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                rng: SplitMix64(seed),
                homes: Vec::new(),
            }),
            line: Mutex::new(BinaryHeap::new()),
            line_changed: Condvar::new(),
            threads: Mutex::new(Vec::new()),
        });
        let delay = shared.clone();
        shared.spawn(move || delay.run_delay_line());
        Net { shared }
    }

    /// A new home, nothing impaired, for the client called `name` (in reports).
    pub fn home(&self, name: &str) -> Home {
        let (listener, server_alias) = bind_pair();
        let port = listener.local_addr().unwrap().port();
        let decoy = udp_socket();
        let decoy_addr = decoy.local_addr().unwrap();
        let outside = udp_socket();
        let index = {
            let mut state = self.shared.lock();
            state.homes.push(HomeState {
                name: name.to_string(),
                inside: None,
                outside: outside.clone(),
                server_alias: server_alias.clone(),
                decoy: decoy_addr,
                tcp: Vec::new(),
                aliases: HashMap::new(),
                conditions: Conditions::default(),
                up: LinkState::default(),
                down: LinkState::default(),
                counts: Counts::default(),
            });
            state.homes.len() - 1
        };
        self.shared.receive(index, outside, Role::Outside);
        self.shared.receive(index, server_alias, Role::ServerAlias);
        self.shared.receive(index, decoy, Role::Decoy);
        let shared = self.shared.clone();
        self.shared.spawn(move || shared.accept(index, listener));
        Home {
            shared: self.shared.clone(),
            index,
            port,
            decoy: decoy_addr,
        }
    }

    /// The seed, and what each home counted: for failure messages.
    pub fn report(&self) -> String {
        self.shared.report()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.shared.report());
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.line_changed.notify_all();
        // Threads may start threads (an accept, a new alias) until they see the flag.
        loop {
            let threads = std::mem::take(&mut *self.shared.threads.lock().unwrap());
            if threads.is_empty() {
                break;
            }
            for thread in threads {
                let _ = thread.join();
            }
        }
    }
}

impl Home {
    /// Sets what the NAT does from now on.
    pub fn set(&self, conditions: Conditions) {
        self.shared.lock().homes[self.index].conditions = conditions;
    }

    /// What the NAT has done so far.
    pub fn counts(&self) -> Counts {
        self.shared.lock().homes[self.index].counts.clone()
    }

    /// The public address: where the server and the peers see the client.
    pub fn public(&self) -> SocketAddr {
        self.shared.lock().homes[self.index]
            .outside
            .local_addr()
            .unwrap()
    }

    /// The NAT gives the client a new mapping: a new public port. The old one is closed, and
    /// what is sent to it is lost. Returns the new public address.
    pub fn remap(&self) -> SocketAddr {
        let outside = udp_socket();
        let addr = outside.local_addr().unwrap();
        {
            let mut state = self.shared.lock();
            let home = &mut state.homes[self.index];
            home.outside = outside.clone();
            home.counts.remaps += 1;
        }
        self.shared.receive(self.index, outside, Role::Outside);
        addr
    }

    /// A burst begins on both sides of the link: the next datagram each way finds it bad
    /// (and is lost, if the burst's `loss` is 1), and the burst lasts as the link's
    /// [`Burst`] says. Without a `burst`, nothing changes.
    pub fn start_burst(&self) {
        let mut state = self.shared.lock();
        let home = &mut state.homes[self.index];
        for side in [Side::Up, Side::Down] {
            let (link, link_state) = home.link(side);
            if link.burst.is_some() {
                link_state.forced = true;
            }
        }
    }

    /// The client moves to another network: a new public address (as [`Home::remap`]),
    /// a new private address to be listed with (a new decoy, named in its next
    /// `REGISTER`), and every TCP connection through the home reset, as a connection bound
    /// to the old address dies. The client's own socket stays (it is bound to no one
    /// network, as a client's socket on 0.0.0.0 survives a move). Returns the new public
    /// address and the new decoy.
    pub fn change_network(&self) -> (SocketAddr, SocketAddr) {
        let decoy = udp_socket();
        let decoy_addr = decoy.local_addr().unwrap();
        self.shared.receive(self.index, decoy, Role::Decoy);
        let public = self.remap();
        let streams = {
            let mut state = self.shared.lock();
            let home = &mut state.homes[self.index];
            home.decoy = decoy_addr;
            std::mem::take(&mut home.tcp)
        };
        for stream in streams {
            let _ = stream.shutdown(Shutdown::Both);
        }
        (public, decoy_addr)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn spawn(&self, work: impl FnOnce() + Send + 'static) {
        self.threads.lock().unwrap().push(thread::spawn(work));
    }

    fn report(&self) -> String {
        let state = self.lock();
        let mut report = format!("net seed {} (NATCHAT_NET_SEED replays it)", self.seed);
        for home in &state.homes {
            report += &format!("\n  {}'s home: {:?}", home.name, home.counts);
        }
        report
    }

    /// Starts the thread that receives on `socket`, a socket of home `index` with `role`.
    fn receive(self: &Arc<Self>, index: usize, socket: Arc<UdpSocket>, role: Role) {
        let shared = self.clone();
        self.spawn(move || {
            let mut buf = [0u8; 2048];
            while !shared.stopping() {
                if let Role::Outside = role {
                    // Retired by a remap: the mapping is gone.
                    if !Arc::ptr_eq(&shared.lock().homes[index].outside, &socket) {
                        return;
                    }
                }
                match socket.recv_from(&mut buf) {
                    Ok((len, from)) => shared.arrive(index, role, from, &buf[..len]),
                    Err(e) if is_timeout(e.kind()) => {}
                    // ICMP errors from earlier sends, and the like.
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }

    /// A datagram arrived at a socket of home `index`: where it goes, through which sides of
    /// which homes, from which socket.
    fn arrive(self: &Arc<Self>, index: usize, role: Role, from: SocketAddr, bytes: &[u8]) {
        let word = first_word(bytes);
        let mut state = self.lock();
        let me = &mut state.homes[index];
        match role {
            Role::Decoy => {
                *me.counts.seen.entry((Way::ToDecoy, word)).or_default() += 1;
            }
            Role::ServerAlias => {
                me.inside = Some(from);
                let out = me.outside.clone();
                let hops = [(index, Side::Up, Way::ToServer)];
                self.forward(&mut state, &hops, true, word, bytes, out, self.server);
            }
            Role::Alias(to) => {
                let out = me.outside.clone();
                let mut hops = vec![(index, Side::Up, Way::ToPeer)];
                hops.extend(
                    state
                        .home_at(to)
                        .map(|peer| (peer, Side::Down, Way::FromPeer)),
                );
                self.forward(&mut state, &hops, false, word, bytes, out, to);
            }
            Role::Outside => {
                if from == self.server {
                    // Not today: the server sends no datagrams.
                    let Some(inside) = me.inside else { return };
                    let out = me.server_alias.clone();
                    let hops = [(index, Side::Down, Way::FromServer)];
                    self.forward(&mut state, &hops, true, word, bytes, out, inside);
                    return;
                }
                let Some(inside) = me.inside else { return };
                let out = match me.aliases.get(&from) {
                    Some(alias) => alias.clone(),
                    None => {
                        let alias = udp_socket();
                        me.aliases.insert(from, alias.clone());
                        self.receive(index, alias.clone(), Role::Alias(from));
                        alias
                    }
                };
                let mut hops: Vec<_> = state
                    .home_at(from)
                    .map(|peer| (peer, Side::Up, Way::ToPeer))
                    .into_iter()
                    .collect();
                hops.push((index, Side::Down, Way::FromPeer));
                self.forward(&mut state, &hops, false, word, bytes, out, inside);
            }
        }
    }

    /// Takes a datagram through `hops` (each a home, the side of it crossed, and the way it
    /// counts there), with the server at one end or not, and puts what survives on the
    /// delay line: to `to`, from `out`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        state: &mut State,
        hops: &[(usize, Side, Way)],
        server: bool,
        word: String,
        bytes: &[u8],
        out: Arc<UdpSocket>,
        to: SocketAddr,
    ) {
        for &(index, _, _) in hops {
            let home = &mut state.homes[index];
            let blocked = match home.conditions.block {
                Block::Nothing => false,
                Block::Peers => !server,
                Block::Udp | Block::Everything => true,
            };
            if blocked {
                home.counts.blocked += 1;
                return;
            }
        }
        let State { rng, homes } = state;
        for (hop, &(index, side, way)) in hops.iter().enumerate() {
            let home = &mut homes[index];
            let (link, link_state) = home.link(side);
            if link_state.loses(link, rng) {
                home.counts.lost += 1;
                *home.counts.dropped.entry((way, word.clone())).or_default() += 1;
                // It went through the homes before this one.
                for &(index, _, way) in &hops[..hop] {
                    *homes[index]
                        .counts
                        .seen
                        .entry((way, word.clone()))
                        .or_default() += 1;
                }
                return;
            }
        }
        let mut copies = 1;
        for &(index, side, _) in hops {
            let home = &mut homes[index];
            if rng.chance(home.link(side).0.duplicate) {
                copies += 1;
                home.counts.duplicated += 1;
            }
        }
        let now = Instant::now();
        let mut line = self.line.lock().unwrap();
        for _ in 0..copies {
            let delays: Vec<Duration> = hops
                .iter()
                .map(|&(index, side, _)| {
                    let link = homes[index].link(side).0;
                    link.delay + link.jitter.mul_f64(rng.unit())
                })
                .collect();
            let at = now + delays.iter().sum::<Duration>();
            for (&(index, side, way), delay) in hops.iter().zip(delays) {
                let home = &mut homes[index];
                *home.counts.seen.entry((way, word.clone())).or_default() += 1;
                let latest = &mut home.link(side).1.latest;
                let overtakes = latest.is_some_and(|latest| at < latest);
                *latest = Some(latest.map_or(at, |latest| latest.max(at)));
                // Each home counts what its own delay did.
                if !delay.is_zero() {
                    home.counts.delayed += 1;
                    home.counts.reordered += u64::from(overtakes);
                }
            }
            let order = rng.next();
            line.push(Reverse(Pending {
                at,
                order,
                from: out.clone(),
                to,
                bytes: bytes.to_vec(),
                ack: ack_in(bytes).map(|ack| (ack, hops.iter().map(|h| (h.0, h.2)).collect())),
            }));
        }
        self.line_changed.notify_all();
    }

    /// The delay thread: sends each datagram at its release time.
    fn run_delay_line(&self) {
        let mut line = self.line.lock().unwrap();
        while !self.stopping() {
            let now = Instant::now();
            match line.peek() {
                Some(Reverse(next)) if next.at <= now => {
                    let Reverse(next) = line.pop().unwrap();
                    // Never the state's lock while holding the line's: `forward` takes
                    // them the other way round.
                    drop(line);
                    let _ = next.from.send_to(&next.bytes, next.to);
                    if let Some(((acker, seq), hops)) = next.ack {
                        let mut state = self.lock();
                        for (index, way) in hops {
                            let acks = &mut state.homes[index].counts.acks;
                            acks.insert((way, acker.clone(), seq));
                        }
                    }
                    line = self.line.lock().unwrap();
                }
                next => {
                    let wait = next.map_or(TICK, |Reverse(p)| (p.at - now).min(TICK));
                    line = self.line_changed.wait_timeout(line, wait).unwrap().0;
                }
            }
        }
    }

    /// Home `index`'s TCP listener (the server alias): each connection is piped to the real
    /// server, its `REGISTER` line rewritten to name the home's decoy.
    fn accept(self: Arc<Self>, index: usize, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        while !self.stopping() {
            let client = match listener.accept() {
                Ok((client, _)) => client,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(_) => continue,
            };
            let _ = client.set_nonblocking(false);
            let Ok(server) = TcpStream::connect(self.server) else {
                continue; // the client sees its connection closed, as with no server
            };
            for stream in [&client, &server] {
                let _ = stream.set_nodelay(true);
                // A side that stops reading must not hold a pipe thread for ever.
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            }
            let decoy = {
                let mut state = self.lock();
                let home = &mut state.homes[index];
                home.tcp.extend(client.try_clone().ok());
                home.decoy
            };
            let (up_from, up_to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let shared = self.clone();
            self.spawn(move || shared.pipe(index, up_from, up_to, Way::TcpToServer, Some(decoy)));
            let shared = self.clone();
            self.spawn(move || shared.pipe(index, server, client, Way::TcpFromServer, None));
        }
    }

    /// Copies `from` to `to`, counting lines, holding bytes while the link is cut, and
    /// delaying them as the link's `delay` and `jitter` say (in order: TCP does not
    /// reorder; and without loss: TCP hides it, as more delay, which this does not model);
    /// rewrites the first line's private address to `decoy`, if given.
    fn pipe(
        self: Arc<Self>,
        index: usize,
        mut from: TcpStream,
        to: TcpStream,
        way: Way,
        mut decoy: Option<SocketAddr>,
    ) {
        let side = if way == Way::TcpToServer {
            Side::Up
        } else {
            Side::Down
        };
        let (line, held) = mpsc::channel();
        let shared = self.clone();
        self.spawn(move || shared.release(index, way, held, to));
        let _ = from.set_read_timeout(Some(TICK));
        let mut buf = [0u8; 4096];
        let mut pending: Vec<u8> = Vec::new();
        let mut latest = Instant::now();
        while !self.stopping() {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if is_timeout(e.kind()) => continue,
                Err(_) => break,
            };
            pending.extend_from_slice(&buf[..n]);
            // Whole lines only: each is counted, the first maybe rewritten.
            let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let mut lines: Vec<u8> = pending.drain(..=end).collect();
            if let Some(decoy) = decoy.take() {
                lines = register_naming(&lines, decoy);
            }
            if way == Way::TcpFromServer {
                lines = without_second_port(&lines);
            }
            while self.home_cut(index) {
                if self.stopping() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let mut acks = Vec::new();
            {
                let mut state = self.lock();
                let State { rng, homes } = &mut *state;
                let home = &mut homes[index];
                let link = home.link(side).0;
                let delay = link.delay + link.jitter.mul_f64(rng.unit());
                latest = latest.max(Instant::now() + delay);
                let counts = &mut home.counts;
                counts.delayed += u64::from(!delay.is_zero());
                for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    *counts.seen.entry((way, first_word(line))).or_default() += 1;
                    let text = String::from_utf8_lossy(line);
                    let words: Vec<&str> = text.split_whitespace().collect();
                    let inner = match words.first() {
                        Some(&"RELAY") => words.get(2..),
                        Some(&"RELAYED") => words.get(1..),
                        _ => None,
                    };
                    if let Some(inner) = inner.filter(|inner| !inner.is_empty()) {
                        let key = format!("{} {}", words[0], inner[0]);
                        *counts.seen.entry((way, key)).or_default() += 1;
                        acks.extend(ack_of(inner));
                    }
                }
            }
            if line.send((latest, lines, acks)).is_err() {
                break; // the other side is gone
            }
        }
        drop(line);
        let _ = from.shutdown(Shutdown::Read);
    }

    /// A pipe's second half: writes what `held` hands it to `to`, each at its time, and
    /// counts the acknowledgements in it once written.
    fn release(&self, index: usize, way: Way, held: Held, mut to: TcpStream) {
        'lines: while !self.stopping() {
            let (at, lines, acks) = match held.recv_timeout(TICK) {
                Ok(next) => next,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            loop {
                let now = Instant::now();
                if now >= at {
                    break;
                }
                if self.stopping() {
                    break 'lines;
                }
                thread::sleep((at - now).min(TICK));
            }
            if to.write_all(&lines).is_err() {
                break;
            }
            let mut state = self.lock();
            let counts = &mut state.homes[index].counts;
            counts
                .acks
                .extend(acks.into_iter().map(|(acker, seq)| (way, acker, seq)));
        }
        let _ = to.shutdown(Shutdown::Write);
    }

    fn home_cut(&self, index: usize) -> bool {
        self.lock().homes[index].conditions.block == Block::Everything
    }
}

impl State {
    /// The home whose client is at `addr`, if any.
    fn home_at(&self, addr: SocketAddr) -> Option<usize> {
        self.homes.iter().position(|h| h.inside == Some(addr))
    }
}

impl HomeState {
    fn link(&mut self, side: Side) -> (&Link, &mut LinkState) {
        match side {
            Side::Up => (&self.conditions.up, &mut self.up),
            Side::Down => (&self.conditions.down, &mut self.down),
        }
    }
}

impl LinkState {
    /// Whether the next datagram is lost: the burst state moves on, then loss is drawn.
    fn loses(&mut self, link: &Link, rng: &mut SplitMix64) -> bool {
        let Some(burst) = link.burst else {
            return rng.chance(link.loss);
        };
        self.bad = if std::mem::take(&mut self.forced) {
            true
        } else if self.bad {
            !rng.chance(burst.leave)
        } else {
            rng.chance(burst.enter)
        };
        rng.chance(if self.bad { burst.loss } else { link.loss })
    }
}

/// `lines` from the server, its `NAT_TEST <port>` (if any) turned into `NAT_TEST none`: see
/// the top of this file.
fn without_second_port(lines: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(lines);
    if !text.contains("NAT_TEST ") {
        return lines.to_vec();
    }
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with("NAT_TEST ") {
            out.push_str("NAT_TEST none\n");
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

/// `lines`, its first line `REGISTER <id> <private> [...]` naming `decoy` as private.
fn register_naming(lines: &[u8], decoy: SocketAddr) -> Vec<u8> {
    let text = String::from_utf8_lossy(lines);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let mut words: Vec<String> = first.split(' ').map(str::to_string).collect();
    if words.len() >= 3 && words[0] == "REGISTER" {
        words[2] = decoy.to_string();
    }
    format!("{}\n{rest}", words.join(" ")).into_bytes()
}

/// The acknowledger and sequence number of a datagram `ACK <acker> <seq> <stamp>`.
fn ack_in(bytes: &[u8]) -> Option<(String, u64)> {
    let text = String::from_utf8_lossy(bytes);
    ack_of(&text.split_whitespace().collect::<Vec<_>>())
}

fn ack_of(words: &[&str]) -> Option<(String, u64)> {
    match words {
        ["ACK", acker, seq, ..] => Some((acker.to_string(), seq.parse().ok()?)),
        _ => None,
    }
}

fn first_word(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.split_whitespace().next().unwrap_or("").to_string()
}

fn is_timeout(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A UDP socket on a free port of 127.0.0.1, which wakes every [`TICK`].
fn udp_socket() -> Arc<UdpSocket> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TICK)).unwrap();
    Arc::new(socket)
}

/// A TCP listener and a UDP socket on one free port of 127.0.0.1 (the server alias).
fn bind_pair() -> (TcpListener, Arc<UdpSocket>) {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        if let Ok(socket) = UdpSocket::bind(addr) {
            socket.set_read_timeout(Some(TICK)).unwrap();
            return (listener, Arc::new(socket));
        }
    }
    panic!("no port free for both TCP and UDP in 100 tries");
}

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny, good, seedable generator.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}
