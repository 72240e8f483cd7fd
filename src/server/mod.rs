//! `natchat server`: the registration server of the P2P chat.
//!
//! Clients register over TCP and announce their UDP endpoint over UDP, on the same port
//! number. The server tells everyone who is online, coordinates hole punching, and relays
//! chat datagrams when no direct path works. Its threads:
//!
//! ```text
//!  accept ──spawn──▶ connection thread (one per client): REGISTER, PUNCH, RELAY,
//!                     │                              UDP_BLOCKED, EXIT
//!                     │ ▲ writes go through the client's Outbox (its own writer thread)
//!  udp thread ────────┤ │ HELLO / ALIVE / AWAKE: learns public endpoints, keep-alives
//!  reaper thread ─────┤ │ every 250 ms: clients silent for --timeout-secs "disappear",
//!                     │ │ and those not listed within --register-secs are closed
//!  rounds thread ─────┘ │ ends each round of joins and leaves: see crate::rounds
//!                  Arc<Mutex<Registry>>
//! ```

mod registry;

use crate::lines::{is_timeout, DeadlineStream, LineError, LineReader};
use crate::listener;
use crate::outbox::Outbox;
use crate::rounds::{self, Round};
use crate::wire::{Announce, Event, LeaveReason, Public, Request, MAX_LINE};
use parking_lot::Mutex;
use registry::{Announced, Departed, Registry};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How the server runs: from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub bind: IpAddr,
    /// TCP and UDP port; 0 picks a free one.
    pub port: u16,
    /// A client not heard from over UDP for this long has disappeared.
    pub timeout: Duration,
    /// A connection that has not registered by then is closed: its `REGISTER` line, and its
    /// UDP announcement (`HELLO`) or `UDP_BLOCKED`, all count from accept.
    pub register_timeout: Duration,
    /// Connections beyond this are refused; `None`: as many as the machine allows, up to
    /// [`listener::DEFAULT_MAX`].
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

/// Binds both sockets, prints where it listens, and serves for ever.
pub fn run(config: Config) -> io::Result<()> {
    let (listener, udp) = bind_pair(config.bind, config.port)?;
    let port = listener.local_addr()?.port();
    crate::say!(
        "natchat server listening on {}:{port} (TCP registration, UDP keep-alive)",
        config.bind
    );
    crate::output::start();
    let (round, rounds) = Round::new();
    let registry: Shared = Arc::new(Mutex::new(Registry::new(round)?));
    let shared = registry.clone();
    rounds::start_ender(rounds, move || shared.lock().end_round())?;

    let shared = registry.clone();
    thread::Builder::new()
        .name("udp".into())
        .spawn(move || receive_announcements(udp, shared))?;
    let shared = registry.clone();
    let timeout = config.timeout;
    thread::Builder::new()
        .name("reaper".into())
        .spawn(move || reap_silent(shared, timeout))?;

    let cap = listener::cap(config.max_clients, "--max-clients");
    let refusal = Event::Error {
        message: format!("server full ({} clients); try again later", cap.connections),
    };
    listener::serve(listener, cap, refusal.to_string(), move |stream, addr| {
        serve_client(stream, addr, &registry, config.register_timeout)
    });
    Ok(())
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
    stream: TcpStream,
    addr: SocketAddr,
    registry: &Shared,
    register_timeout: Duration,
) {
    // The registration time counts from accept, whatever trickles in: see DeadlineStream.
    let deadline = Instant::now() + register_timeout;
    // One socket: this thread reads it, the outbox's writer thread writes it.
    let stream = Arc::new(stream);
    let Ok(outbox) = Outbox::start(stream.clone(), QUEUE) else {
        return;
    };
    // A request cut short by the end of the stream is not acted on.
    let mut reader = LineReader::new(DeadlineStream::new(&stream), MAX_LINE).complete_lines_only();
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
        (Departed::Listed(Public::At(public)), _) => crate::event!("{id} is {how} {public}"),
        (Departed::Listed(Public::Asleep), _) => crate::event!("{id} is {how} (Asleep)"),
        (Departed::Listed(Public::Relayed), _) => crate::event!("{id} is {how} (relayed)"),
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
                return match members.register(&id, private, outbox.clone(), asleep, deadline) {
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
            } else if members.is_relayed(&peer) || members.is_relayed(id) {
                // No probe of either side's could get through: the relay carries their chats.
                let whose = if members.is_relayed(id) {
                    "your"
                } else {
                    "its"
                };
                refuse(format!(
                    "cannot punch to '{peer}': {whose} UDP is blocked; the relay carries your chats"
                ));
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
        Request::UdpBlocked => {
            // Only for this connection's own registration, and only before it is listed:
            // again, or after its HELLO got through first, it changes nothing.
            if registry.lock().udp_blocked(id, conn) {
                crate::event!("{id} relayed (UDP blocked)");
            }
        }
        Request::Register { .. } => refuse(format!("already registered as '{id}'")),
        Request::Exit => return false,
    }
    true
}

/// The UDP thread: hands every well-formed announcement to the registry, which believes
/// only what is proven (see [`Registry::announce`]); drops everything else.
fn receive_announcements(udp: UdpSocket, registry: Shared) {
    let mut buf = [0u8; 1500];
    loop {
        let (len, from) = match udp.recv_from(&mut buf) {
            Ok(received) => received,
            // ICMP errors and the like are reported on later calls: not fatal. A pause, so
            // that an error that keeps coming cannot spin a core.
            Err(_) => {
                thread::sleep(ERROR_PAUSE);
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
fn reap_silent(registry: Shared, timeout: Duration) {
    let mut last = Instant::now();
    loop {
        thread::sleep(REAP_EVERY);
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
                Departed::Unannounced => {
                    "neither a UDP announcement from you nor UDP_BLOCKED reached the server \
                     within the registration time"
                        .to_string()
                }
                Departed::Listed(_) => format!(
                    "no UDP keep-alive from you reached the server for {} s",
                    timeout.as_secs_f64()
                ),
            };
            print_departure(&id, LeaveReason::Disappeared, departed, None);
            outbox.push_line(&format!("ERROR {why}; closing the connection"));
            outbox.close_after_queued();
        }
    }
}
