//! Both servers run inside the test process, as values: started on a free loopback port,
//! driven by raw sockets, then dropped. Dropping a server must free its port, end its clients'
//! connections and leave none of its threads running.
//!
//! Threads are counted by name in `/proc/self/task`: the names the servers give their
//! threads, which no thread of the test harness has. The tests of this file take turns
//! ([`one_at_a_time`]), so that one test's server is never counted as another's leftover.

use natchat::{room, server};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The deadline for anything that should happen "at once", generous for a loaded machine.
const SOON: Duration = Duration::from_secs(10);

/// The names of the threads a server starts (`printer` is not one: it serves the whole
/// process, and outlives any server).
const SERVER_THREADS: [&str; 6] = ["accept", "connection", "outbox", "udp", "reaper", "rounds"];

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Makes the tests of this file run one after another. (A test that failed while holding
/// the lock poisons it; the others still run.)
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The server threads alive in this process, by name.
fn server_threads() -> Vec<String> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .filter(|name| SERVER_THREADS.contains(&name.as_str()))
        .collect()
}

/// Waits until no server thread is left. A joined thread may take a moment to leave
/// `/proc`, hence the polling.
fn assert_no_server_threads(when: &str) {
    let deadline = Instant::now() + SOON;
    loop {
        let left = server_threads();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{when}: threads left: {left:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Drops `server`, which must be prompt: on a thread of its own, so that a stop that hangs
/// fails the test instead of hanging it.
fn stop<S: Send + 'static>(server: S) {
    let started = Instant::now();
    let (stopped, stopping) = std::sync::mpsc::channel();
    thread::spawn(move || {
        drop(server);
        let _ = stopped.send(());
    });
    let took = stopping.recv_timeout(SOON).map(|()| started.elapsed());
    let took = took.unwrap_or_else(|_| panic!("the server did not stop within {SOON:?}"));
    eprintln!("stopped in {took:?}");
}

/// A raw line-based connection to a server.
struct Line {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Line {
    fn connect(port: u16) -> Line {
        let stream = TcpStream::connect((LOCALHOST, port)).expect("connect");
        stream.set_read_timeout(Some(SOON)).unwrap();
        Line {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    /// Sends `text` as it is: a newline is the caller's to add.
    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).expect("send");
    }

    /// The next line, without its newline; panics at the end of the stream or after
    /// [`SOON`].
    fn line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("the server closed the connection"),
            Ok(_) => line.trim_end().to_string(),
            Err(e) => panic!("no line within {SOON:?}: {e}"),
        }
    }

    /// Reads lines until one starts with `prefix`; returns it.
    fn wait_for(&mut self, prefix: &str) -> String {
        for _ in 0..1000 {
            let line = self.line();
            if line.starts_with(prefix) {
                return line;
            }
        }
        panic!("no line starting {prefix:?} in 1000 lines");
    }

    /// Asserts that the server ends the connection within [`SOON`]: the stream ends (or is
    /// reset), after whatever was still on its way.
    fn assert_ended(mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the connection did not end: {e}"),
        }
    }
}

/// Binds TCP and UDP on `port` again: proof that a stopped server let go of it.
fn assert_port_free(port: u16) {
    TcpListener::bind((LOCALHOST, port)).expect("the TCP port is free again");
    UdpSocket::bind((LOCALHOST, port)).expect("the UDP port is free again");
}

fn p2p_config(timeout: Duration) -> server::Config {
    server::Config {
        bind: LOCALHOST,
        port: 0,
        timeout,
        // Far beyond any deadline here: a connection that has not registered ends with the
        // stop, not of its own accord.
        register_timeout: Duration::from_secs(3600),
        max_clients: None,
    }
}

/// Registers `id` over TCP and proves its UDP endpoint with `HELLO`, as the client does;
/// returns the connection, which has read the list up to `LIST_END`, and the list's
/// `PEER` lines.
fn register(server: &server::Server, id: &str) -> (Line, Vec<String>) {
    let udp = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let mut tcp = Line::connect(server.tcp_addr().port());
    let private = udp.local_addr().unwrap();
    tcp.send(&format!("REGISTER {id} {private}\n"));
    let welcome = tcp.line();
    let nonce = welcome
        .strip_prefix("WELCOME ")
        .unwrap_or_else(|| panic!("not a welcome: {welcome}"));
    // UDP may be lost even on loopback, in principle: HELLO again until READY comes.
    tcp.reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + SOON;
    let ready = loop {
        assert!(Instant::now() < deadline, "no READY for {id}");
        udp.send_to(format!("HELLO {id} {nonce}").as_bytes(), server.udp_addr())
            .unwrap();
        let mut line = String::new();
        match tcp.reader.read_line(&mut line) {
            Ok(n) if n > 0 => break line,
            Ok(_) => panic!("closed during registration"),
            Err(_) => continue,
        }
    };
    assert!(ready.starts_with("READY "), "{ready}");
    tcp.reader.get_ref().set_read_timeout(Some(SOON)).unwrap();
    let mut peers = Vec::new();
    loop {
        let line = tcp.line();
        if line == "LIST_END" {
            return (tcp, peers);
        }
        peers.push(line);
    }
}

#[test]
fn a_p2p_server_in_the_test_process_serves_then_stops_leaving_nothing() {
    let _turn = one_at_a_time();
    assert_no_server_threads("before starting");
    let server = server::Server::start(p2p_config(Duration::from_secs(30))).expect("start");
    let port = server.tcp_addr().port();
    assert_eq!(server.udp_addr().port(), port, "TCP and UDP on one port");

    let (mut alice, peers) = register(&server, "alice");
    assert!(
        peers.iter().any(|p| p.starts_with("PEER alice ")),
        "alice is in her own list: {peers:?}"
    );
    let (bob, peers) = register(&server, "bob");
    assert!(
        peers.iter().any(|p| p.starts_with("PEER alice ")),
        "{peers:?}"
    );
    alice.wait_for("JOIN bob ");
    let running = server_threads();
    for name in ["accept", "connection", "outbox", "udp", "reaper", "rounds"] {
        assert!(running.iter().any(|t| t == name), "no {name}: {running:?}");
    }

    stop(server);
    alice.assert_ended();
    bob.assert_ended();
    assert_port_free(port);
    assert_no_server_threads("after stopping");
}

#[test]
fn a_room_server_in_the_test_process_relays_then_stops_leaving_nothing() {
    let _turn = one_at_a_time();
    assert_no_server_threads("before starting");
    let uploads = std::env::temp_dir().join(format!("natchat-in-process-{}", std::process::id()));
    let server = room::Server::start(room_config(uploads.clone())).expect("start");
    let port = server.addr().port();

    let mut ann = Line::connect(port);
    ann.wait_for("Connected to the chat server (1 user online)");
    let mut ben = Line::connect(port);
    ben.wait_for("Connected to the chat server (2 users online)");
    ann.wait_for("New user ");
    ann.send("hello, ben\n");
    ann.wait_for("[You] hello, ben");
    let relayed = ben.wait_for("[127.0.0.1:");
    assert!(relayed.ends_with("] hello, ben"), "{relayed}");
    // Half an upload: the server's thread is in the middle of receiving a file.
    ben.send("#upload 1000 half.txt\nonly part of it");
    let deadline = Instant::now() + SOON;
    while uploads_in(&uploads).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no temporary file for the upload"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let running = server_threads();
    for name in ["accept", "connection", "outbox", "rounds"] {
        assert!(running.iter().any(|t| t == name), "no {name}: {running:?}");
    }

    stop(server);
    ann.assert_ended();
    ben.assert_ended();
    assert_port_free(port);
    assert_no_server_threads("after stopping");
    // The half upload's temporary file went with its thread.
    let left = uploads_in(&uploads);
    assert!(left.is_empty(), "left in the upload directory: {left:?}");
    let _ = std::fs::remove_dir(&uploads);
}

/// The files in the upload directory.
fn uploads_in(dir: &Path) -> Vec<String> {
    let files = std::fs::read_dir(dir).into_iter().flatten().flatten();
    files
        .map(|file| file.file_name().to_string_lossy().into_owned())
        .collect()
}

fn room_config(upload_dir: PathBuf) -> room::server::Config {
    room::server::Config {
        host: "127.0.0.1".into(),
        port: 0,
        upload_dir,
        max_upload_bytes: 1 << 20,
        max_users: None,
        upload_idle: SOON,
    }
}

/// Stopping in the middle of things: clients arriving all the time, registering and never
/// announcing their UDP endpoint, so that the reaper, with a timeout of a tenth of a second,
/// is removing some of them as the server stops; and one connection half way through its
/// `REGISTER` line.
#[test]
fn a_p2p_server_stops_mid_registration_and_mid_reaping() {
    let _turn = one_at_a_time();
    assert_no_server_threads("before starting");
    let server = server::Server::start(p2p_config(Duration::from_millis(100))).expect("start");
    let port = server.tcp_addr().port();
    let mut half = Line::connect(port);
    half.send("REGISTER carol 127.0.0.1:");

    // The first client registers, falls silent and waits to be reaped, so that the reaper
    // is surely at work; the others are registered one after another until the server stops.
    let (mut first, _) = register(&server, "c0");
    let closing = first.wait_for("ERROR ");
    assert!(closing.contains("no UDP keep-alive"), "{closing}");
    first.assert_ended();
    let churn = thread::spawn(move || {
        let deadline = Instant::now() + SOON;
        let mut clients = Vec::new();
        for n in 1..10_000 {
            if Instant::now() > deadline {
                break;
            }
            let Ok(stream) = TcpStream::connect((LOCALHOST, port)) else {
                break; // the server has stopped listening
            };
            stream.set_read_timeout(Some(SOON)).unwrap();
            let mut client = Line {
                writer: stream.try_clone().unwrap(),
                reader: BufReader::new(stream),
            };
            let register = format!("REGISTER c{n} 127.0.0.1:9\n");
            if client.writer.write_all(register.as_bytes()).is_err() {
                break;
            }
            clients.push(client);
        }
        clients
    });
    thread::sleep(Duration::from_millis(300));
    stop(server);
    let clients = churn.join().unwrap();
    assert!(clients.len() > 1, "only {} clients came", clients.len());
    for client in clients {
        client.assert_ended();
    }
    half.assert_ended();
    assert_port_free(port);
    assert_no_server_threads("after stopping");
}
