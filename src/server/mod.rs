//! `natchat server`: the registration server of the P2P chat.
//!
//! Clients register over TCP and announce their UDP endpoint over UDP, on the same port
//! number. The server tells everyone who is online, coordinates hole punching, and relays
//! chat datagrams when no direct path works. Its threads:
//!
//! ```text
//!  accept ──spawn──▶ connection thread (one per client): REGISTER, PUNCH, RELAY, EXIT
//!                     │ ▲ writes go through the client's Outbox (its own writer thread)
//!  udp thread ────────┤ │ HELLO / ALIVE / AWAKE: learns public endpoints, keep-alives
//!  reaper thread ─────┤ │ every 250 ms: clients silent for --timeout-secs "disappear"
//!  rounds thread ─────┘ │ ends each round of joins and leaves: see crate::scale::rounds
//!                  Arc<Mutex<Registry>>
//! ```
//!
//! Each of these threads stops when the [`Server`] is dropped: see [`crate::worker`].

mod registry;

use crate::failure::{self, Failure};
use crate::lines::{is_timeout, DeadlineStream, LineError, LineReader};
use crate::listener::{self, Listener};
use crate::outbox::Outbox;
use crate::scale::limits;
use crate::scale::rounds::{self, Round};
use crate::wire::{Announce, Event, LeaveReason, Request, MAX_LINE};
use crate::worker::{CtrlC, Stop, Worker};
use parking_lot::Mutex;
use registry::{Announced, Departed, Registry};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the server runs: from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// The address to listen on (TCP and UDP).
    pub bind: IpAddr,
    /// TCP and UDP port; 0 picks a free one.
    pub port: u16,
    /// A client not heard from over UDP for this long has disappeared.
    pub timeout: Duration,
    /// A connection that has not registered by then is closed.
    pub register_timeout: Duration,
    /// Connections beyond this are refused; `None`: as many as the machine allows, up to
    /// [`limits::DEFAULT_MAX`].
    pub max_clients: Option<usize>,
}

/// How many messages may wait for one client before it counts as not reading. Generous: the
/// list of ten thousand clients alone is forty messages. A round of joins and leaves counts
/// as one: a client that has stopped reading is found out by its keep-alives stopping, or
/// its writes timing out once its socket buffers are full, long before its queue fills.
const QUEUE: usize = 16 * 1024;

type Shared = Arc<Mutex<Registry>>;

/// How long the UDP thread pauses after a failed receive.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// How often the reaper looks for silent clients.
const REAP_EVERY: Duration = Duration::from_millis(250);
/// A reaper this much later than it meant to be was not running: see [`reap_silent`].
const STALL: Duration = Duration::from_secs(1);

/// The binary's server: prints where it listens, serves until Ctrl+C, then stops (closing
/// every connection) and prints `Server stopped.`.
pub fn run(config: Config) -> Result<(), Failure> {
    let ctrl_c = CtrlC::catch()?;
    let (bind, port) = (config.bind, config.port);
    let server = Server::start(config)
        .map_err(|e| failure::cannot_listen(&format!("port {port}"), &e, "--port"))?;
    crate::say!(
        "natchat server listening on {bind}:{} (TCP registration, UDP keep-alive)",
        server.tcp_addr().port()
    );
    crate::output::start();
    ctrl_c.wait_and_stop(server, "Server stopped.");
    Ok(())
}

/// A running registration server. Dropping it stops it: no more connections are accepted,
/// every client's connection is closed, and every thread it started has ended by the time
/// the drop returns, its port free again.
///
/// Its fields are its threads, each stopped and joined when dropped, in the order they are
/// declared. Each stops on its own, so the order matters little; connections go first, as
/// what the other threads would still do for them concerns nobody once they are closed.
pub struct Server {
    /// The accept thread, and every connection's two threads.
    listener: Listener,
    udp_addr: SocketAddr,
    /// The UDP thread: HELLO, ALIVE, AWAKE.
    _announcements: Worker,
    _reaper: Worker,
    /// Ends each round of joins and leaves.
    _rounds: Worker,
}

impl Server {
    /// Binds TCP and UDP on `config.port` (0: a free port, the same for both) and serves on
    /// threads of its own; prints each event (see [`crate::output`]).
    pub fn start(config: Config) -> io::Result<Server> {
        let (listener, udp) = bind_pair(config.bind, config.port)?;
        let (round, signals) = Round::new();
        let registry: Shared = Arc::new(Mutex::new(Registry::new(round)?));
        // Should a later step fail, the threads already started are stopped as these
        // variables are dropped.
        let shared = registry.clone();
        let rounds = rounds::start_ender(signals, move || shared.lock().end_round())?;

        let udp = Arc::new(udp);
        let udp_addr = udp.local_addr()?;
        let (socket, shared) = (udp.clone(), registry.clone());
        let wake_at = listener::reachable(udp_addr);
        // An empty datagram ends the `recv_from` the thread is blocked in. It could only be
        // lost to a full receive buffer, and then `recv_from` does not block.
        let wake = move || {
            let _ = udp.send_to(&[], wake_at);
        };
        let announcements = Worker::spawn("udp", wake, move |stop| {
            receive_announcements(&socket, &shared, &stop)
        })?;

        let (shared, timeout) = (registry.clone(), config.timeout);
        // It only sleeps, in `Stop::pause`: being unparked wakes it.
        let reaper = Worker::spawn(
            "reaper",
            || {},
            move |stop| reap_silent(&shared, timeout, &stop),
        )?;

        let cap = limits::cap(config.max_clients, "--max-clients");
        let refusal = Event::Error {
            message: format!("server full ({} clients); try again later", cap.connections),
        };
        let register_timeout = config.register_timeout;
        let listener = Listener::start(
            listener,
            cap,
            refusal.to_string(),
            QUEUE,
            move |stream, outbox, addr| {
                serve_client(stream, outbox, addr, &registry, register_timeout)
            },
        )?;
        Ok(Server {
            listener,
            udp_addr,
            _announcements: announcements,
            _reaper: reaper,
            _rounds: rounds,
        })
    }

    /// Where clients register (TCP).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// Where clients announce themselves and keep alive (UDP): the same port.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }
}

/// Binds TCP and UDP on the same port. With port 0 the OS picks the TCP port, and the UDP
/// socket follows it (trying again if that UDP port happens to be taken).
fn bind_pair(ip: IpAddr, port: u16) -> io::Result<(TcpListener, UdpSocket)> {
    let tries = if port == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let listener = TcpListener::bind((ip, port))?;
        let actual = listener.local_addr()?.port();
        match UdpSocket::bind((ip, actual)) {
            Ok(udp) => return Ok((listener, udp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one try"))
}

/// One client's connection: registration first, then its requests until it leaves.
fn serve_client(
    stream: &TcpStream,
    outbox: Outbox,
    addr: SocketAddr,
    registry: &Shared,
    register_timeout: Duration,
) {
    // The registration time counts from accept, whatever trickles in: see DeadlineStream.
    let deadline = Instant::now() + register_timeout;
    // A request cut short by the end of the stream is not acted on.
    let mut reader = LineReader::new(DeadlineStream::new(stream), MAX_LINE).complete_lines_only();
    let Some((id, conn)) = register(&mut reader, &outbox, registry, deadline) else {
        return;
    };
    if reader.get_mut().set_deadline(None).is_err() {
        return;
    }
    let reason = loop {
        let line = match reader.read_line() {
            Ok(Some(line)) => line,
            Ok(None) | Err(LineError::Io(_)) => break LeaveReason::Disconnected,
            Err(e @ LineError::TooLong { .. }) => {
                outbox.push_line(&format!("ERROR {e}; closing the connection"));
                break LeaveReason::Disconnected;
            }
        };
        match line.parse::<Request>() {
            Ok(request) => {
                if !handle_request(request, &id, conn, &outbox, registry) {
                    break LeaveReason::Deregistered;
                }
            }
            Err(e) => {
                outbox.push_line(&format!("ERROR {e}"));
            }
        }
    };
    let mut members = registry.lock();
    if let Some(departed) = members.remove(&id, conn, reason) {
        print_departure(&id, reason, departed, Some(addr));
    }
}

/// The server's line for a client that left; `tcp` is where its connection came from, when
/// known.
fn print_departure(id: &str, reason: LeaveReason, departed: Departed, tcp: Option<SocketAddr>) {
    let how = reason.as_str();
    match (departed, tcp) {
        (Departed::Listed(Some(public)), _) => crate::event!("{id} is {how} {public}"),
        (Departed::Listed(None), _) => crate::event!("{id} is {how} (Asleep)"),
        (Departed::Unannounced, Some(addr)) if reason != LeaveReason::Disappeared => {
            crate::event!("{id} left before announcing its UDP endpoint ({addr})")
        }
        (Departed::Unannounced, _) => {
            crate::event!("{id} never announced its UDP endpoint; closed")
        }
    }
}

/// Reads lines until a valid `REGISTER` claims a free ID, answering `WELCOME <nonce>`.
/// Anything else gets an `ERROR`; a refused ID, a silent connection or `deadline` closes the
/// connection.
///
/// The deadline is absolute: every read of the socket, not every line, is bounded by the time
/// left, so a connection trickling a byte every few seconds, never a newline, is closed at
/// the deadline like a silent one. Before, the timeout restarted with each byte, and such
/// connections kept their slots (`--max-clients`) for hours.
///
/// Never inlined, nor is [`handle_request`]: folded into [`serve_client`], their locals made
/// one frame big enough that every connection thread touched a third page of stack, 40 MB
/// more for ten thousand clients (measured: 12 KiB of stack per thread, 8 KiB without).
#[inline(never)]
fn register(
    reader: &mut LineReader<DeadlineStream>,
    outbox: &Outbox,
    registry: &Shared,
    deadline: Instant,
) -> Option<(String, u64)> {
    if reader.get_mut().set_deadline(Some(deadline)).is_err() {
        return None;
    }
    loop {
        let line = match reader.read_line() {
            Ok(Some(line)) => line,
            Ok(None) => return None,
            Err(LineError::Io(e)) if is_timeout(&e) => {
                outbox.push_line("ERROR no REGISTER within the registration time; closing");
                return None;
            }
            Err(LineError::Io(_)) => return None,
            Err(e @ LineError::TooLong { .. }) => {
                outbox.push_line(&format!("ERROR {e}; closing the connection"));
                return None;
            }
        };
        match line.parse::<Request>() {
            Ok(Request::Register {
                id,
                private,
                asleep,
            }) => {
                let mut members = registry.lock();
                return match members.register(&id, private, outbox.clone(), asleep) {
                    Ok(conn) => {
                        if asleep {
                            crate::event!("{id} Asleep");
                        }
                        Some((id, conn))
                    }
                    Err(why) => {
                        let message = why.to_string();
                        outbox.push_line(&Event::Error { message }.to_string());
                        None
                    }
                };
            }
            Ok(_) => {
                outbox.push_line("ERROR register first: REGISTER <id> <private-ip:port>");
            }
            Err(e) => {
                outbox.push_line(&format!("ERROR {e}"));
            }
        }
    }
}

/// A request from registered client `id` on connection `conn`; false when it asks to leave.
/// It can only ever act as itself: the ID comes from its own registration, never from the
/// request. Not inlined: see [`register`].
#[inline(never)]
fn handle_request(
    request: Request,
    id: &str,
    conn: u64,
    outbox: &Outbox,
    registry: &Shared,
) -> bool {
    let refuse = |message: String| {
        outbox.push_line(&Event::Error { message }.to_string());
    };
    match request {
        Request::Punch { peer } => {
            let mut members = registry.lock();
            if peer == id || !members.is_listed(&peer) || !members.is_listed_as(id, conn) {
                refuse(format!("cannot punch to '{peer}': not online"));
            } else if members.is_asleep(&peer) {
                refuse(format!("cannot punch to '{peer}': it is Asleep"));
            } else if members.may_punch(id) {
                // Both at once: each side's probes open its own NAT for the other's, and each
                // is handed the key that tags them.
                if let Some(key) = members.pair_key(id, &peer) {
                    let requester = id.to_string();
                    members.offer(
                        &peer,
                        id,
                        &Event::Punch {
                            peer: requester,
                            key,
                        },
                    );
                    members.offer(
                        id,
                        &peer,
                        &Event::Punch {
                            peer: peer.clone(),
                            key,
                        },
                    );
                }
            }
        }
        Request::Relay { to, datagram } => {
            let mut members = registry.lock();
            if datagram.from() != id {
                refuse(format!("relay: a datagram you send must be from '{id}'"));
            } else if !members.is_listed_as(id, conn) {
                refuse(format!("relay: '{id}' is not online"));
            } else if members.is_asleep(&to) {
                refuse(format!(
                    "relay: '{to}' is Asleep and receives no chats until it wakes"
                ));
            } else {
                // Best effort: a dropped relay is retransmitted by its sender.
                members.offer(&to, id, &Event::Relayed { datagram });
            }
        }
        Request::Register { .. } => refuse(format!("already registered as '{id}'")),
        Request::Exit => return false,
    }
    true
}

/// The UDP thread: hands every well-formed announcement to the registry, which believes
/// only what is proven (see [`Registry::announce`]); drops everything else.
fn receive_announcements(udp: &UdpSocket, registry: &Shared, stop: &Stop) {
    let mut buf = [0u8; 1500];
    while !stop.requested() {
        let (len, from) = match udp.recv_from(&mut buf) {
            Ok(received) => received,
            // ICMP errors and the like are reported on later calls: not fatal. A pause, so
            // that an error that keeps coming cannot spin a core.
            Err(_) => {
                stop.pause(ERROR_PAUSE);
                continue;
            }
        };
        // A trailing newline (`echo ... | nc -u` adds one) is forgiven: an announcement holds
        // no free text. (A peer's chat datagram does, and is taken exactly as sent.)
        let Some(announce) = std::str::from_utf8(&buf[..len])
            .ok()
            .and_then(|text| text.trim_end().parse::<Announce>().ok())
        else {
            continue;
        };
        let mut members = registry.lock();
        let id = announce.id();
        match members.announce(&announce, from) {
            Announced::Ready(public) => crate::event!("{id} {public}"),
            Announced::Awake(public) => crate::event!("{id} Awake {public}"),
            Announced::Moved(public) => crate::event!("{id} moved to {public}"),
            Announced::Refreshed | Announced::Rejected => {}
        }
    }
}

/// The reaper thread: four times a second, every client silent for `timeout` has disappeared.
/// It is told why in a last line, and its connection closed; its connection thread then
/// finds it already removed.
///
/// A client is silent only if the server was listening: when the reaper wakes much later
/// than it meant to (the server was stopped with SIGSTOP, its VM paused, its machine
/// starved), the keep-alives sent meanwhile are still waiting in the UDP socket, unread.
/// So that time is not held against anyone: everyone's silence is counted from after it.
fn reap_silent(registry: &Shared, timeout: Duration, stop: &Stop) {
    let mut last = Instant::now();
    while stop.pause(REAP_EVERY) {
        let now = Instant::now();
        let away = now.saturating_duration_since(last + REAP_EVERY);
        last = now;
        if away > STALL {
            registry.lock().excuse(away);
            continue;
        }
        let mut members = registry.lock();
        for (id, conn) in members.silent(timeout) {
            let Some(outbox) = members.get(&id).map(|m| m.outbox.clone()) else {
                continue;
            };
            let Some(departed) = members.remove(&id, conn, LeaveReason::Disappeared) else {
                continue;
            };
            let why = match departed {
                Departed::Unannounced => "no UDP announcement from you reached the server",
                Departed::Listed(_) => "no UDP keep-alive from you reached the server",
            };
            print_departure(&id, LeaveReason::Disappeared, departed, None);
            let secs = timeout.as_secs_f64();
            outbox.push_line(&format!("ERROR {why} for {secs} s; closing the connection"));
            outbox.close_after_queued();
        }
    }
}
