//! `natchat server`: the registration server of the P2P chat.
//!
//! Clients register over TCP and announce their UDP endpoint over UDP, on the same port
//! number. The server tells everyone who is online, coordinates hole punching, and relays
//! chat datagrams when no direct path works. Its threads, each in a file of its own:
//!
//! ```text
//!  accept ──spawn──▶ connection thread (one per client): REGISTER, PUNCH, RELAY,
//!  (crate::listener)  │                   UDP_BLOCKED, EXIT            connection.rs
//!                     │ ▲ writes go through the client's Outbox
//!                     │ │ (its own writer thread)
//!  udp thread ────────┤ │ HELLO / ALIVE / AWAKE: public endpoints,  announcements.rs
//!                     │ │ keep-alives; NAT_PROBE (NAT discovery),
//!                     │ │ answered from a port the OS picked
//!  nat thread ────────┤ │ NAT_PROBE on the second port (port + 1)   announcements.rs
//!  reaper thread ─────┤ │ every 250 ms: clients silent for           reaper.rs
//!                     │ │ --timeout-secs "disappear", and those
//!                     │ │ not listed within --register-secs close
//!  rounds thread ─────┘ │ ends each round of joins and leaves        crate::scale::rounds
//!                  Arc<Mutex<Registry>>: who is online              registry.rs
//! ```
//!
//! Read them in that order: a client's connection first (where a `REGISTER` is handled),
//! then what it announces over UDP, then how silence ends it. Each thread stops when the
//! [`Server`] is dropped: see [`crate::worker`].

mod announcements;
mod connection;
mod reaper;
mod registry;

use crate::failure::{self, Failure};
use crate::listener::{self, Listener};
use crate::scale::limits;
use crate::scale::rounds::{self, Round};
use crate::wire::Event;
use crate::worker::{CtrlC, Worker};
use announcements::{receive_announcements, receive_nat_probes};
use connection::serve_client;
use parking_lot::Mutex;
use reaper::reap_silent;
use registry::Registry;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// How the server runs: from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// The address to listen on (TCP and UDP).
    pub bind: IpAddr,
    /// TCP and UDP port; 0 picks a free one.
    pub port: u16,
    /// A client not heard from over UDP for this long has disappeared.
    pub timeout: Duration,
    /// A connection that has not registered by then is closed: its `REGISTER` line, and its
    /// UDP announcement (`HELLO`) or `UDP_BLOCKED`, all count from accept.
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

/// The binary's server: prints where it listens, serves until Ctrl+C, then stops (closing
/// every connection) and prints `Server stopped.`.
pub fn run(config: Config) -> Result<(), Failure> {
    let ctrl_c = CtrlC::catch()?;
    let (bind, port) = (config.bind, config.port);
    let server = Server::start(config)
        .map_err(|e| failure::cannot_listen(&format!("port {port}"), &e, "--port"))?;
    let port = server.tcp_addr().port();
    match server.nat_addr() {
        Some(nat) => crate::say!(
            "natchat server listening on {bind}:{port} (TCP registration, UDP keep-alive; UDP \
             {} for NAT discovery)",
            nat.port()
        ),
        None => crate::say!(
            "natchat server listening on {bind}:{port} (TCP registration, UDP keep-alive); UDP \
             port {} could not be bound, so there is no NAT discovery (clients will find their \
             NAT unknown)",
            u32::from(port) + 1
        ),
    }
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
    /// The second UDP port (NAT discovery), if it could be bound.
    nat_addr: Option<SocketAddr>,
    /// The UDP thread: HELLO, ALIVE, AWAKE, NAT_PROBE (answered with NAT_OPEN from a port
    /// the OS picked).
    _announcements: Worker,
    /// The second port's thread: NAT_PROBE.
    _nat_probes: Option<Worker>,
    _reaper: Worker,
    /// Ends each round of joins and leaves.
    _rounds: Worker,
}

impl Server {
    /// Binds TCP and UDP on `config.port` (0: a free port, the same for both), and UDP on the
    /// port after it for NAT discovery (if that is taken, the server runs without) and on a
    /// port the OS picks (where discovery's answers leave from), and serves on threads of
    /// its own; prints each event (see [`crate::output`]).
    pub fn start(config: Config) -> io::Result<Server> {
        let (listener, udp, nat) = bind_ports(config.bind, config.port)?;
        let nat = nat.map(Arc::new);
        let nat_addr = nat.as_ref().map(|nat| nat.local_addr()).transpose()?;
        // NAT discovery's `NAT_OPEN` leaves from a port of its own, which the OS picks and no
        // client ever sends to: see announcements.rs for why not from the second port.
        let opener = match nat {
            Some(_) => Some(UdpSocket::bind((config.bind, 0))?),
            None => None,
        };
        let (round, signals) = Round::new();
        let registry = Registry::new(round, nat_addr.map(|a| a.port()))?;
        let registry: Shared = Arc::new(Mutex::new(registry));
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
            receive_announcements(&socket, opener.as_ref(), &shared, &stop)
        })?;
        let nat_probes = match nat {
            Some(nat) => {
                let (shared, wake_at) = (registry.clone(), listener::reachable(nat.local_addr()?));
                let waker = nat.clone();
                let wake = move || {
                    let _ = waker.send_to(&[], wake_at);
                };
                let work = move |stop| receive_nat_probes(&nat, &shared, &stop);
                Some(Worker::spawn("nat", wake, work)?)
            }
            None => None,
        };

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
            nat_addr,
            _announcements: announcements,
            _nat_probes: nat_probes,
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

    /// The second UDP port, for NAT discovery: the port after [`udp_addr`](Self::udp_addr)'s,
    /// or `None` if it was taken.
    pub fn nat_addr(&self) -> Option<SocketAddr> {
        self.nat_addr
    }
}

/// The sockets [`bind_ports`] binds: TCP and UDP on one port, and UDP on the next if it
/// could be bound.
type Ports = (TcpListener, UdpSocket, Option<UdpSocket>);

/// Binds TCP and UDP on the same port, and UDP on the port after it (NAT discovery). With
/// port 0 the OS picks the TCP port, and the UDP sockets follow it (trying again if either
/// UDP port happens to be taken). The second port is a convenience: when it cannot be had,
/// the server runs without it.
fn bind_ports(ip: IpAddr, port: u16) -> io::Result<Ports> {
    let tries = if port == 0 { 20 } else { 1 };
    let mut last = None;
    let mut without_second = None;
    for _ in 0..tries {
        let listener = TcpListener::bind((ip, port))?;
        let actual = listener.local_addr()?.port();
        let udp = match UdpSocket::bind((ip, actual)) {
            Ok(udp) => udp,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        match actual
            .checked_add(1)
            .map(|next| UdpSocket::bind((ip, next)))
        {
            Some(Ok(nat)) => return Ok((listener, udp, Some(nat))),
            // The first pair is kept in case no try gets both; while the next try runs, it
            // holds its ports, so the OS picks others.
            _ if without_second.is_none() => without_second = Some((listener, udp)),
            _ => {}
        }
    }
    match without_second {
        Some((listener, udp)) => Ok((listener, udp, None)),
        None => Err(last.expect("at least one try")),
    }
}
