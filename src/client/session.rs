//! Starting a client session: connect, register, announce the UDP endpoint, receive the
//! list, and start the three reader threads ([`super::readers`]); and registering again,
//! in the background, when the connection to the server is lost.
//!
//! Registration runs step by step on the main thread, because each step needs the answer to
//! the one before:
//!
//! ```text
//!  client                           server
//!    ── TCP  REGISTER alice 192.168.1.2:10081 ─▶
//!    ◀─ TCP  WELCOME <nonce> ───────────────────   (a challenge: prove your UDP address)
//!    ── UDP  HELLO alice <nonce> ──────────────▶   (repeated, less and less often)
//!    ◀─ TCP  READY 10.0.0.1:10081, PEER ..., LIST_END
//! ```
//!
//! When no `READY` has come [`BLOCKED_AFTER`] the first `HELLO` (a network that forwards
//! only TCP), the client says `UDP_BLOCKED` over TCP and stops announcing; the server lists
//! it as relayed (`READY relayed`), and all its chats go through the server's relay. A
//! `READY` with an address that comes even then (a `HELLO` got through, only its answer
//! was slow) counts as it always does.
//!
//! A slow, lossy link is not a dead server: each answer may take [`STEP_TIMEOUT`], longer
//! than the server's own registration time, and after [`STILL_WAITING`] the user is told
//! that the client is still waiting.
//!
//! An Asleep client (`--asleep`) registers with `REGISTER carol <private> asleep` and sends
//! no `HELLO`: the server answers `READY asleep` and the list at once, and the event loop
//! wakes it later with an Awake request (`@awake`, or a first `@chat`).
//!
//! When the ID was typed at the prompt rather than given with `--id`, an ID that is not
//! valid, or that someone else holds, is asked for again.
//!
//! The same handshake registers again after the connection is lost ([`spawn_reconnect`]),
//! on a thread of its own, so that the event loop (and direct chats) never wait for it.

use super::readers::{
    read_events, spawn_input, spawn_tcp_reader, spawn_udp_reader, FromServer, FromUdp, Input,
    CHANNEL,
};
use super::Config;
use crate::failure::{connect, in_words, spawn, Failure};
use crate::lines::{clean, is_timeout, LineError, LineReader};
use crate::nonce::{Nonce, Nonces};
use crate::wire::{check_id, Announce, Event, IdInUse, PeerInfo, Public, Request, MAX_LINE};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

/// A registered session, ready for the event loop.
pub struct Session {
    pub me: PeerInfo,
    /// Asleep, the server's challenge in `WELCOME`, not yet answered: the Awake request
    /// brings it back.
    pub challenge: Option<Nonce>,
    /// Where probe nonces come from.
    pub nonces: Nonces,
    /// Where message stamps come from.
    pub stamps: Nonces,
    pub server_addr: SocketAddr,
    pub tcp: TcpStream,
    pub udp: UdpSocket,
    /// The list the server sent after `READY`.
    pub list: Vec<PeerInfo>,
    pub input: Receiver<Input>,
    pub from_server: Receiver<FromServer>,
    /// For a reconnect thread, to reach the loop as the TCP thread did.
    pub to_loop: Sender<FromServer>,
    pub from_peers: Receiver<FromUdp>,
    /// For port prediction's threads, to reach the loop as the UDP thread does.
    pub to_loop_udp: Sender<FromUdp>,
}

/// How long each answer of the server's may take during registration before the client gives
/// up: longer than the server's own registration time (`--register-secs`, 30 s unless told),
/// so that on a slow, lossy link (where TCP itself retransmits after 1, 2, 4 ... s) the
/// server's verdict, not our impatience, ends a registration.
const STEP_TIMEOUT: Duration = Duration::from_secs(40);
/// After this long without an answer, the user is told (once) that we are still waiting.
const STILL_WAITING: Duration = Duration::from_secs(8);
/// `HELLO` goes at once, again after the first pause, then after pauses half as long again
/// each time, up to the longest: quick on a good link, and no flood on a slow one.
const HELLO_FIRST: Duration = Duration::from_millis(250);
const HELLO_MOST: Duration = Duration::from_secs(1);
/// No `READY` this long after the first `HELLO` (eight of them): our UDP does not get
/// through, and we say so (`UDP_BLOCKED`). Well inside the server's registration time, which
/// counts from accept.
pub const BLOCKED_AFTER: Duration = Duration::from_secs(6);

/// Why a registration did not go through.
enum Refusal {
    /// Someone else holds the ID: a typed one is asked for again.
    IdInUse(String),
    /// Anything else: the session cannot start.
    Failed(Failure),
}

impl From<Failure> for Refusal {
    fn from(failure: Failure) -> Refusal {
        Refusal::Failed(failure)
    }
}

/// Registers (asking for the ID at the prompt when `--id` was not given), then starts the
/// reader threads.
pub fn start(config: &Config) -> Result<Session, Failure> {
    let stdin = io::stdin();
    let Some(id) = &config.id else {
        // Typed at the prompt: a mistake is asked about again, until end of input.
        loop {
            let id = ask_id(&stdin)?;
            if let Err(why) = check_id(&id) {
                crate::say!("Invalid ID '{}': {why}.", clean(&id));
                continue;
            }
            match register(config, id) {
                Ok(session) => return Ok(session),
                Err(Refusal::IdInUse(message)) => crate::say!("{message}."),
                Err(Refusal::Failed(failure)) => return Err(failure),
            }
        }
    };
    check_id(id).map_err(|why| Failure::usage(format!("invalid ID '{}': {why}", clean(id))))?;
    register(config, id.clone()).map_err(|refusal| match refusal {
        Refusal::IdInUse(message) => Failure::runtime(format!("registration refused: {message}")),
        Refusal::Failed(failure) => failure,
    })
}

/// Connects, registers `id`, announces the UDP endpoint (unless Asleep) and receives the list.
fn register(config: &Config, id: String) -> Result<Session, Refusal> {
    let (tcp, server_addr) = connect(&config.server, config.port, "server", "server")?;
    let udp = bind_udp(config.udp_port)?;
    let handshake = handshake(tcp, server_addr, &id, config.asleep, &udp, true)?;
    let lost = |e| registration_failed(server_addr, &e);
    let me = PeerInfo {
        id,
        public: handshake.public,
        private: handshake.private,
    };
    let (to_loop, from_server) = bounded(CHANNEL);
    let (to_loop_udp, from_peers) = bounded(CHANNEL);
    spawn_udp_reader(udp.try_clone().map_err(lost)?, to_loop_udp.clone())?;
    spawn_tcp_reader(handshake.reader, &to_loop)?;
    Ok(Session {
        me,
        challenge: (handshake.public == Public::Asleep).then_some(handshake.welcome),
        nonces: nonces()?,
        stamps: nonces()?,
        server_addr,
        input: spawn_input(io::stdin())?,
        from_peers,
        to_loop_udp,
        tcp: handshake.tcp,
        udp,
        list: handshake.list,
        from_server,
        to_loop,
    })
}

/// A registration that went through, on a connection of its own.
pub struct Handshake {
    /// The connection, for requests.
    pub tcp: TcpStream,
    /// The same connection, for the server's lines.
    reader: LineReader<TcpStream>,
    /// The private address we told the server: this machine's address toward it, and our
    /// UDP port.
    private: SocketAddr,
    /// `WELCOME`'s nonce: Asleep, our Awake request will bring it back.
    pub welcome: Nonce,
    /// Where the server sees our UDP endpoint, or that it does not (Asleep, relayed).
    pub public: Public,
    /// Everyone listed, ourselves included.
    pub list: Vec<PeerInfo>,
}

/// Registers `id` on `tcp`, a new connection to the server at `server_addr`: `REGISTER`,
/// `WELCOME`, then (unless `asleep`) `HELLO` from `udp` until `READY`, and the list. A
/// relayed client registering again tries its UDP again first: it may be on another network
/// now. With `tell`, a slow answer is said to the user.
fn handshake(
    tcp: TcpStream,
    server_addr: SocketAddr,
    id: &str,
    asleep: bool,
    udp: &UdpSocket,
    tell: bool,
) -> Result<Handshake, Refusal> {
    let lost = |e| registration_failed(server_addr, &e);
    let _ = tcp.set_nodelay(true);
    let private_ip = tcp.local_addr().map_err(lost)?.ip();
    let private = SocketAddr::new(private_ip, udp.local_addr().map_err(lost)?.port());

    let mut writer = tcp.try_clone().map_err(lost)?;
    let reader = LineReader::new(tcp.try_clone().map_err(lost)?, MAX_LINE);
    let register = Request::Register {
        id: id.to_string(),
        private,
        asleep,
    };
    // One write for the whole line: `writeln!` on a socket would send it in pieces.
    writer
        .write_all(format!("{register}\n").as_bytes())
        .map_err(lost)?;
    let mut answers = Answers {
        reader,
        server: server_addr,
        tell,
    };
    let welcome = match answers.next()? {
        Event::Welcome { nonce } => nonce,
        Event::Error { message } if message == IdInUse { id: id.into() }.to_string() => {
            return Err(Refusal::IdInUse(message))
        }
        Event::Error { message } => {
            return Err(
                Failure::runtime(format!("registration refused: {}", clean(&message))).into(),
            )
        }
        other => return Err(confused(server_addr, &other).into()),
    };

    let public = if asleep {
        match answers.next()? {
            Event::Ready {
                public: Public::Asleep,
            } => Public::Asleep,
            other => return Err(confused(server_addr, &other).into()),
        }
    } else {
        hello(id, welcome, udp, &mut writer, &mut answers)?
    };

    let mut list = Vec::new();
    loop {
        match answers.next()? {
            Event::Peer(info) => list.push(info),
            Event::ListEnd => break,
            other => return Err(confused(server_addr, &other).into()),
        }
    }
    tcp.set_read_timeout(None).map_err(lost)?;
    tcp.set_write_timeout(Some(STEP_TIMEOUT)).map_err(lost)?;
    Ok(Handshake {
        tcp,
        reader: answers.reader,
        private,
        welcome,
        public,
        list,
    })
}

/// The first pause before registering again, and the longest: each failed try doubles it.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MOST: Duration = Duration::from_secs(30);

/// How long our ID may be refused as in use before we believe someone else has it: the
/// holder may be our own old registration, which a server that did not see the connection
/// end drops only once it has heard nothing from it for its timeout (30 s unless told).
pub const ID_PATIENCE: Duration = Duration::from_secs(40);

/// The reconnect thread: registers `id` again with the server at `server`, as long as it
/// takes, pausing longer after each failed try, and by a random part of the pause more or
/// less: a thousand clients whose server restarted come back spread out, not all at once.
/// Once registered, it hands the new connection to the loop (`Back`) and becomes its TCP
/// thread, of connection `generation`. If the ID is refused as in use for [`ID_PATIENCE`],
/// it says so (`Taken`) and ends.
pub fn spawn_reconnect(
    server: SocketAddr,
    id: String,
    asleep: bool,
    udp: UdpSocket,
    to_loop: Sender<FromServer>,
    generation: u64,
) -> Result<(), Failure> {
    let mut jitter = nonces()?;
    spawn("reconnect", move || {
        let mut pause = RETRY_FIRST;
        let mut refused_since = None;
        loop {
            // Between half the pause and one and a half times it.
            let random = (jitter.number() % 256) as u32;
            thread::sleep(pause / 2 + pause * random / 255);
            pause = (pause * 2).min(RETRY_MOST);
            let Ok(tcp) = TcpStream::connect_timeout(&server, STEP_TIMEOUT) else {
                continue;
            };
            match handshake(tcp, server, &id, asleep, &udp, false) {
                Ok(handshake) => {
                    let reader = handshake.reader;
                    let back = Back {
                        tcp: handshake.tcp,
                        public: handshake.public,
                        welcome: handshake.welcome,
                        list: handshake.list,
                    };
                    if to_loop.send(FromServer::Back(back)).is_ok() {
                        read_events(reader, &to_loop, generation);
                    }
                    return;
                }
                Err(Refusal::IdInUse(_)) => {
                    let since = *refused_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= ID_PATIENCE {
                        let _ = to_loop.send(FromServer::Taken);
                        return;
                    }
                }
                Err(Refusal::Failed(_)) => {}
            }
        }
    })
}

/// A registration again, for the loop.
pub struct Back {
    pub tcp: TcpStream,
    pub public: Public,
    pub welcome: Nonce,
    pub list: Vec<PeerInfo>,
}

/// `Enter ID : `, and one line from the terminal; end of input is a failure.
fn ask_id(stdin: &io::Stdin) -> Result<String, Failure> {
    print!("Enter ID : ");
    let _ = io::stdout().flush();
    let mut line = String::new();
    match stdin.lock().read_line(&mut line) {
        Ok(0) | Err(_) => Err(Failure::usage(
            "no ID given; pass --id ID or type one at the prompt".into(),
        )),
        Ok(_) => Ok(line.trim().to_string()),
    }
}

/// A supply of nonces; the operating system's random source failing is a runtime failure.
fn nonces() -> Result<Nonces, Failure> {
    Nonces::new()
        .map_err(|e| Failure::runtime(format!("cannot read random bits: {}", in_words(&e))))
}

/// Binds the UDP port asked for; when it is taken (several clients on one machine), any free
/// port, saying so.
fn bind_udp(port: u16) -> Result<UdpSocket, Failure> {
    match UdpSocket::bind(("0.0.0.0", port)) {
        Ok(udp) => Ok(udp),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let udp = UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| {
                Failure::runtime(format!("cannot open a UDP socket: {}", in_words(&e)))
            })?;
            let actual = udp.local_addr().map(|a| a.port()).unwrap_or(0);
            crate::say!("UDP port {port} is in use; using port {actual} instead.");
            Ok(udp)
        }
        Err(e) => Err(Failure::runtime(format!(
            "cannot bind UDP port {port}: {}",
            in_words(&e)
        ))),
    }
}

/// Announces the UDP endpoint (`HELLO`) until the server has seen it, and returns the public
/// endpoint it saw (`READY`). If it has not seen it [`BLOCKED_AFTER`] the first `HELLO`,
/// tells it so over TCP (`writer`), and returns what it answers then: `relayed`, or the
/// address a late `HELLO` came from after all.
fn hello(
    id: &str,
    nonce: Nonce,
    udp: &UdpSocket,
    writer: &mut TcpStream,
    answers: &mut Answers,
) -> Result<Public, Failure> {
    let server = answers.server;
    let hello = Announce::Hello {
        id: id.to_string(),
        nonce,
    }
    .to_string();
    let blocked_at = Instant::now() + BLOCKED_AFTER;
    let mut pause = HELLO_FIRST;
    // At most one HELLO per HELLO_FIRST until BLOCKED_AFTER: a bounded loop.
    let public = loop {
        let now = Instant::now();
        if now >= blocked_at {
            let blocked = format!("{}\n", Request::UdpBlocked);
            writer
                .write_all(blocked.as_bytes())
                .map_err(|e| registration_failed(server, &e))?;
            break answers.next()?;
        }
        let _ = udp.send_to(hello.as_bytes(), server);
        let wait = pause.min(blocked_at - now);
        pause = (pause * 3 / 2).min(HELLO_MOST);
        if let Some(event) = answers.within(wait)? {
            break event;
        }
    };
    match public {
        Event::Ready { public } if public != Public::Asleep => Ok(public),
        other => Err(confused(server, &other)),
    }
}

/// The server's answers during registration, each awaited with patience.
struct Answers {
    reader: LineReader<TcpStream>,
    server: SocketAddr,
    /// Whether to tell the user when an answer is slow: not when registering again in the
    /// background.
    tell: bool,
}

impl Answers {
    /// The next event, waiting up to [`STEP_TIMEOUT`] for it, and saying once after
    /// [`STILL_WAITING`] that we still are.
    fn next(&mut self) -> Result<Event, Failure> {
        if let Some(event) = self.within(STILL_WAITING)? {
            return Ok(event);
        }
        if self.tell {
            crate::say!(
                "Still waiting for the server at {} to answer (slow or lossy link?)...",
                self.server
            );
        }
        self.within(STEP_TIMEOUT - STILL_WAITING)?.ok_or_else(|| {
            Failure::runtime(format!(
                "the server at {} did not answer within {} s. Is it a natchat server \
                 ('natchat server'), and are --server and --port right?",
                self.server,
                STEP_TIMEOUT.as_secs()
            ))
        })
    }

    /// The next event, if one comes within `wait`. A line cut short by the wait is kept,
    /// and finished by the next call.
    fn within(&mut self, wait: Duration) -> Result<Option<Event>, Failure> {
        let server = self.server;
        // A zero timeout is refused by the socket: wait at least a millisecond.
        let wait = wait.max(Duration::from_millis(1));
        self.reader
            .get_ref()
            .set_read_timeout(Some(wait))
            .map_err(|e| registration_failed(server, &e))?;
        match self.reader.read_line() {
            Ok(Some(line)) => parse_event(&line, server).map(Some),
            Err(LineError::Io(e)) if is_timeout(&e) => Ok(None),
            Ok(None) => Err(closed_during_registration(server)),
            Err(LineError::Io(e)) => Err(registration_failed(server, &e)),
            Err(e) => Err(Failure::runtime(format!(
                "registration with {server} failed: the server sent a {e}"
            ))),
        }
    }
}

/// Registering with the server at `server` failed on `e`: the line for it.
fn registration_failed(server: SocketAddr, e: &io::Error) -> Failure {
    Failure::runtime(format!(
        "registration with {server} failed: {}",
        in_words(e)
    ))
}

fn parse_event(line: &str, server: SocketAddr) -> Result<Event, Failure> {
    line.parse().map_err(|e| {
        Failure::runtime(format!(
            "the server at {server} sent something unexpected ({e})"
        ))
    })
}

fn closed_during_registration(server: SocketAddr) -> Failure {
    Failure::runtime(format!(
        "the server at {server} closed the connection during registration"
    ))
}

/// The server answered `event`, which is not what registration expected at this step.
fn confused(server: SocketAddr, event: &Event) -> Failure {
    match event {
        // Its registration time ran out, say, on a very slow link.
        Event::Error { message } => Failure::runtime(format!(
            "the server at {server} ended our registration: {}",
            clean(message)
        )),
        _ => Failure::runtime(format!(
            "the server at {server} sent '{event}' out of turn during registration"
        )),
    }
}
