//! Starting a client session: connect, register, announce the UDP endpoint, receive the
//! list, and start the three reader threads.
//!
//! Registration runs step by step on the main thread, because each step needs the answer to
//! the one before:
//!
//! ```text
//!  client                           server
//!    ── TCP  REGISTER alice 192.168.1.2:10081 ─▶
//!    ◀─ TCP  WELCOME <secret> ──────────────────
//!    ── UDP  HELLO alice <secret> ─────────────▶   (repeated until READY)
//!    ◀─ TCP  READY 10.0.0.1:10081, PEER ..., LIST_END
//! ```

use super::Config;
use crate::failure::{connect, in_words, spawn, Failure};
use crate::lines::{is_timeout, LineError, LineReader};
use crate::wire::{
    check_id, Announce, AnnounceKind, Datagram, Event, PeerInfo, Request, Secret, MAX_LINE,
};
use crossbeam_channel::{bounded, Receiver};
use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A line from the user, or the reason there will be no more.
pub enum Input {
    Line(String),
    /// End of input (Ctrl+D, or a script that ran out).
    End,
    /// Ctrl+C.
    Interrupt,
}

/// What the TCP thread hands to the loop.
pub enum FromServer {
    Event(Event),
    /// The connection ended.
    Closed,
}

/// A well-formed datagram, and where it came from.
pub struct FromPeer {
    pub datagram: Datagram,
    pub from: SocketAddr,
}

/// A registered session, ready for the event loop.
pub struct Session {
    pub me: PeerInfo,
    pub secret: Secret,
    pub server_addr: SocketAddr,
    pub tcp: TcpStream,
    pub udp: UdpSocket,
    /// The list the server sent after `READY`.
    pub list: Vec<PeerInfo>,
    pub input: Receiver<Input>,
    pub from_server: Receiver<FromServer>,
    pub from_peers: Receiver<FromPeer>,
}

/// How long each registration step may take before the client gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often `HELLO` is repeated until the server answers.
const HELLO_EVERY: Duration = Duration::from_millis(250);

pub fn start(config: &Config) -> Result<Session, Failure> {
    let stdin = io::stdin();
    let id = match &config.id {
        Some(id) => id.clone(),
        None => ask_id(&stdin)?,
    };
    check_id(&id).map_err(|why| Failure::usage(format!("invalid ID '{id}': {why}")))?;

    let (tcp, server_addr) = connect(&config.server, config.port, "server", "server")?;
    let _ = tcp.set_nodelay(true);
    let udp = bind_udp(config.udp_port)?;
    let lost = |e: io::Error| {
        Failure::runtime(format!(
            "registration with {server_addr} failed: {}",
            in_words(&e)
        ))
    };
    let private_ip = tcp.local_addr().map_err(lost)?.ip();
    let private = SocketAddr::new(private_ip, udp.local_addr().map_err(lost)?.port());

    let mut writer = tcp.try_clone().map_err(lost)?;
    let mut reader = LineReader::new(tcp.try_clone().map_err(lost)?, MAX_LINE);
    writeln!(
        writer,
        "{}",
        Request::Register {
            id: id.clone(),
            private
        }
    )
    .map_err(lost)?;
    tcp.set_read_timeout(Some(STEP_TIMEOUT)).map_err(lost)?;
    let secret = match next_event(&mut reader, server_addr)? {
        Event::Welcome { secret } => secret,
        Event::Error { message } => {
            return Err(Failure::runtime(format!("registration refused: {message}")))
        }
        other => return Err(confused(server_addr, &other)),
    };

    // Announce the UDP endpoint until the server has seen it.
    let hello = Announce {
        kind: AnnounceKind::Hello,
        id: id.clone(),
        secret: secret.clone(),
    }
    .to_string();
    tcp.set_read_timeout(Some(HELLO_EVERY)).map_err(lost)?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let public = loop {
        if Instant::now() >= deadline {
            return Err(Failure::runtime(format!(
                "the server at {server_addr} never saw our UDP announcement from port {}; is UDP blocked on the way?",
                private.port()
            )));
        }
        let _ = udp.send_to(hello.as_bytes(), server_addr);
        match reader.read_line() {
            Ok(Some(line)) => match parse_event(&line, server_addr)? {
                Event::Ready { public } => break public,
                other => return Err(confused(server_addr, &other)),
            },
            Err(LineError::Io(e)) if is_timeout(&e) => {}
            Ok(None) | Err(_) => return Err(closed_during_registration(server_addr)),
        }
    };

    tcp.set_read_timeout(Some(STEP_TIMEOUT)).map_err(lost)?;
    let mut list = Vec::new();
    loop {
        match next_event(&mut reader, server_addr)? {
            Event::Peer(info) => list.push(info),
            Event::ListEnd => break,
            other => return Err(confused(server_addr, &other)),
        }
    }
    tcp.set_read_timeout(None).map_err(lost)?;
    tcp.set_write_timeout(Some(STEP_TIMEOUT)).map_err(lost)?;

    let me = PeerInfo {
        id,
        public,
        private,
    };
    Ok(Session {
        me,
        secret,
        server_addr,
        input: spawn_input(stdin)?,
        from_server: spawn_tcp_reader(reader)?,
        from_peers: spawn_udp_reader(udp.try_clone().map_err(lost)?)?,
        tcp,
        udp,
        list,
    })
}

/// `Enter ID : `, and one line from the terminal.
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

fn next_event(reader: &mut LineReader<TcpStream>, server: SocketAddr) -> Result<Event, Failure> {
    match reader.read_line() {
        Ok(Some(line)) => parse_event(&line, server),
        Ok(None) => Err(closed_during_registration(server)),
        Err(e) => Err(Failure::runtime(format!(
            "registration with {server} failed: {e}"
        ))),
    }
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

fn confused(server: SocketAddr, event: &Event) -> Failure {
    Failure::runtime(format!(
        "the server at {server} sent '{event}' out of turn during registration"
    ))
}

/// Channel capacities: small, because the loop keeps up; a full UDP channel drops datagrams
/// (as a full socket buffer would), the others make their thread wait.
const CHANNEL: usize = 256;

/// The input thread: lines from stdin, then `End`. Ctrl+C arrives on the same channel.
fn spawn_input(stdin: io::Stdin) -> Result<Receiver<Input>, Failure> {
    let (tx, rx) = bounded(CHANNEL);
    let interrupt = tx.clone();
    ctrlc::set_handler(move || {
        let _ = interrupt.send(Input::Interrupt);
    })
    .map_err(|e| Failure::runtime(format!("cannot catch Ctrl+C: {e}")))?;
    spawn("input", move || {
        // Split on newlines and decode leniently: a stray invalid byte typed or piped in
        // must not end the session as if the input had ended.
        for line in stdin.lock().split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(Input::Line(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(Input::End);
    })?;
    Ok(rx)
}

/// The TCP thread: server events, then `Closed`. Lines that do not parse are skipped.
fn spawn_tcp_reader(mut reader: LineReader<TcpStream>) -> Result<Receiver<FromServer>, Failure> {
    let (tx, rx) = bounded(CHANNEL);
    spawn("tcp", move || {
        while let Ok(Some(line)) = reader.read_line() {
            if let Ok(event) = line.parse() {
                if tx.send(FromServer::Event(event)).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(FromServer::Closed);
    })?;
    Ok(rx)
}

/// The UDP thread: well-formed peer datagrams. Anything else is dropped here.
fn spawn_udp_reader(udp: UdpSocket) -> Result<Receiver<FromPeer>, Failure> {
    let (tx, rx) = bounded(CHANNEL);
    spawn("udp", move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((len, from)) = udp.recv_from(&mut buf) else {
                continue;
            };
            let Ok(text) = std::str::from_utf8(&buf[..len]) else {
                continue;
            };
            if let Ok(datagram) = text.parse() {
                let _ = tx.try_send(FromPeer { datagram, from });
            }
        }
    })?;
    Ok(rx)
}
