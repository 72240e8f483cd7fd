//! A client whose UDP never reaches the server (a network that forwards only TCP) stays
//! registered, relayed, and chats both ways through the server's relay.
//!
//! Made real on loopback: the client is given a server address whose TCP is piped to the
//! real server, and whose UDP port is a black hole, bound by the test, that drops (and
//! counts) everything. The client sends UDP to the same host and port as TCP, as always.

mod support;

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::raw::Raw;
use support::{p2p_client, p2p_client_started, p2p_server, Proc, SOON};

/// How long the blocked client may take to register: its announcement is given up after
/// 6 s, and a loaded machine gets plenty more.
const REGISTERING: Duration = Duration::from_secs(30);

/// A port on 127.0.0.1 whose TCP goes to the real server on `server_port` and whose UDP
/// goes nowhere. Returns the port and how many datagrams the black hole swallowed.
fn udp_black_hole(server_port: u16) -> (u16, Arc<AtomicUsize>) {
    let (listener, hole) = (0..20)
        .find_map(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            UdpSocket::bind(("127.0.0.1", port))
                .ok()
                .map(|hole| (listener, hole))
        })
        .expect("a port free for both TCP and UDP");
    let port = listener.local_addr().unwrap().port();
    let swallowed = Arc::new(AtomicUsize::new(0));
    let count = swallowed.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while hole.recv_from(&mut buf).is_ok() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    thread::spawn(move || {
        // The client connects once; a few more, should it register again.
        for client in listener.incoming().take(4) {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                continue;
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    (port, swallowed)
}

/// Copies `from` to `to` until `from` ends, then ends `to`'s sending side.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// The line about `id` of the `@show_list` typed into `client` now, its `times`th list.
fn listed(client: &mut Proc, id: &str, times: usize) -> String {
    client.send("@show_list");
    client.wait_count("Online (", times, SOON);
    let deadline = Instant::now() + SOON;
    loop {
        let lines = client.output();
        let last = lines
            .iter()
            .rposition(|l| l.starts_with("Online ("))
            .unwrap();
        if let Some(line) = lines[last..]
            .iter()
            .find(|l| l.starts_with(&format!("{id} ")))
        {
            return line.clone();
        }
        assert!(Instant::now() < deadline, "{id} not listed: {lines:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_whose_udp_is_blocked_stays_registered_and_chats_through_the_relay() {
    // The server reaps silence after 3 s (support's default): the blocked client must not be.
    let (server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    let (hole_port, swallowed) = udp_black_hole(port);
    let mut walled = p2p_client_started("walled", hole_port, &[]);

    let blocked = walled.wait_line("saying its UDP is blocked", REGISTERING, |l| {
        l.starts_with("Registered as walled, but")
    });
    assert_eq!(
        blocked,
        format!(
            "Registered as walled, but our UDP seems blocked on the way to the server at \
             127.0.0.1:{hole_port} (no answer to our announcement in 6 s): we stay registered, \
             and our chats go through the server."
        )
    );
    walled.wait_for("Commands:");
    server.wait_for("walled relayed (UDP blocked)");
    let hellos = swallowed.load(Ordering::SeqCst);
    assert!(hellos >= 3, "only {hellos} HELLOs reached the black hole");
    alice.wait_for(
        "walled joined (relayed: its UDP is blocked, so its chats go through the server)",
    );

    // Both lists say so.
    let walled_at_alice = listed(&mut alice, "walled", 2);
    assert!(
        walled_at_alice.starts_with("walled relayed Awake  private=127.0.0.1:")
            && walled_at_alice.contains("  path=relayed"),
        "{walled_at_alice}"
    );
    let itself = listed(&mut walled, "walled", 2);
    assert!(
        itself.starts_with("walled relayed Awake  private=") && itself.ends_with("(you)"),
        "{itself}"
    );

    // Chats both ways, through the relay at once.
    alice.send("@chat walled hello walled");
    walled.wait_for("From alice [hello walled]");
    walled.send("@chat alice hello alice");
    alice.wait_for("From walled [hello alice]");
    let alice_at_walled = listed(&mut walled, "alice", 3);
    assert!(
        alice_at_walled.contains("  path=relayed"),
        "{alice_at_walled}"
    );

    // Past the server's timeout, and then some: a relayed client is never reaped, however
    // silent its UDP; it sends no keep-alives to be silent with.
    thread::sleep(Duration::from_secs(6));
    assert_eq!(server.count("walled is"), 0, "{:?}", server.output());
    assert_eq!(alice.count("walled left"), 0);
    assert_eq!(
        swallowed.load(Ordering::SeqCst),
        hellos,
        "UDP from the relayed client after it said its UDP was blocked"
    );
    alice.send("@chat walled still there?");
    walled.wait_for("From alice [still there?]");
    walled.send("@chat alice still here");
    alice.wait_for("From walled [still here]");

    // Each exactly once, and nothing reported that did not happen.
    thread::sleep(Duration::from_secs(2));
    for (client, text) in [
        (&walled, "From alice [hello walled]"),
        (&alice, "From walled [hello alice]"),
        (&walled, "From alice [still there?]"),
        (&alice, "From walled [still here]"),
    ] {
        assert_eq!(client.count(text), 1, "{:?}", client.output());
    }
    for client in [&alice, &walled] {
        for false_report in [
            "not confirmed",
            "not sent",
            "Server:",
            "Lost the connection",
        ] {
            assert_eq!(client.count(false_report), 0, "{:?}", client.output());
        }
    }
    walled.send("@exit");
    assert!(walled.wait_exit(SOON).success());
    server.wait_for("walled is deregistered (relayed)");
    alice.wait_for("walled left (deregistered)");
    assert!(server.output().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn udp_blocked_acts_only_once_and_only_for_a_registration_not_yet_listed() {
    let (server, port) = p2p_server(&[]);

    // Before REGISTER: refused, and the connection can still register.
    let mut dave = Raw::connect(port);
    dave.send("UDP_BLOCKED");
    assert_eq!(
        dave.line(),
        "ERROR register first: REGISTER <id> <private-ip:port>"
    );
    dave.send("UDP_BLOCKED please");
    assert_eq!(dave.line(), "ERROR unexpected 'please'");
    let nonce = dave.welcome("dave");
    dave.send("UDP_BLOCKED");
    let list = dave.lines_until("LIST_END");
    assert_eq!(list[0], "READY relayed");
    assert!(list
        .iter()
        .any(|l| l.starts_with("PEER dave relayed 127.0.0.1:")));
    server.wait_for("dave relayed (UDP blocked)");

    // Twice: nothing. A HELLO with WELCOME's nonce after it: nothing either, it stays
    // relayed. (The PUNCH's refusal shows that both were read first.)
    dave.send("UDP_BLOCKED");
    dave.hello("dave", &nonce);
    thread::sleep(Duration::from_millis(300));
    dave.send("PUNCH erin");
    assert_eq!(
        dave.expect("ERROR"),
        "ERROR cannot punch to 'erin': not online"
    );

    // A client whose HELLO got through first is listed at its address; its late
    // UDP_BLOCKED changes nothing.
    let mut erin = Raw::connect(port);
    let nonce = erin.welcome("erin");
    erin.hello("erin", &nonce);
    let list = erin.lines_until("LIST_END");
    assert!(list[0].starts_with("READY 127.0.0.1:"), "{list:?}");
    assert!(list.iter().any(|l| l.starts_with("PEER dave relayed ")));
    erin.send("UDP_BLOCKED");
    erin.send("PUNCH dave");
    assert_eq!(
        erin.expect("ERROR"),
        "ERROR cannot punch to 'dave': its UDP is blocked; the relay carries your chats"
    );
    dave.send("PUNCH erin");
    assert_eq!(
        dave.expect("ERROR"),
        "ERROR cannot punch to 'erin': your UDP is blocked; the relay carries your chats"
    );
    // The relay carries dave's chats to erin, and erin's acknowledgement back.
    let stamp = "00112233445566778899aabbccddeeff";
    dave.send(&format!(
        "RELAY erin CHAT dave 00000000000000da 1 1 {stamp} 0000000000000000 hi erin"
    ));
    assert_eq!(
        erin.expect("RELAYED"),
        format!("RELAYED CHAT dave 00000000000000da 1 1 {stamp} 0000000000000000 hi erin")
    );

    // Past the server's timeout: erin, silent on UDP, is reaped; dave, relayed, is not.
    thread::sleep(Duration::from_secs(5));
    server.wait_for("erin is disappeared 127.0.0.1:");
    assert_eq!(server.count("dave is"), 0, "{:?}", server.output());
    assert_eq!(server.count("relayed (UDP blocked)"), 1);
    dave.send("EXIT");
    server.wait_for("dave is deregistered (relayed)");
    assert!(server.output().iter().all(|l| !l.contains("panicked")));
}
