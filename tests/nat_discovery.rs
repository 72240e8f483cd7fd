//! NAT discovery end to end on loopback: the real server and client, and a hand-made client
//! speaking the protocol over raw sockets, to see exactly what the server answers to whom.
//!
//! Loopback has no NAT: the server sees a client at its own address, from either port, and
//! its answer (from a port the client never sent to) gets in. So a real client must
//! conclude "no NAT". (The
//! other kinds need a NAT that gives each destination its own port, or drops what comes
//! from a port it never sent to; `src/client/discovery.rs` tests their classification, and
//! `src/client/paths.rs` and `peers.rs` what the path choice does with them.)

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use support::{p2p_client, p2p_server, Proc, SOON};

const NO_NAT: &str = "No NAT between us and the server (it saw our own address from both of \
                      its ports), and a datagram from a port we never sent to got in: peers can \
                      reach us directly.";

#[test]
fn a_client_without_a_nat_finds_none_says_it_and_its_peers_learn_it() {
    let (server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    alice.wait_for(NO_NAT);
    server.wait_for("alice NAT none");
    // A client listed later learns it after its list; one listed before, in a round.
    let mut bob = p2p_client("bob", port);
    bob.wait_for(NO_NAT);
    bob.send("@show_list");
    bob.wait_line("alice's NAT in bob's list", SOON, |l| {
        l.starts_with("alice 127.0.0.1:") && l.ends_with("  path=new  nat=none")
    });
    alice.send("@show_list");
    alice.wait_line("bob's NAT in alice's list", SOON, |l| {
        l.starts_with("bob 127.0.0.1:") && l.ends_with("  nat=none")
    });
    // @nat says it again; it is said once at start otherwise.
    alice.send("@nat");
    alice.wait_count(NO_NAT, 2, SOON);
    // Nothing filters: a direct path, as ever.
    alice.send("@chat bob hi");
    bob.wait_for("From alice [hi]");
}

#[test]
fn a_server_whose_second_port_is_taken_still_serves_and_discovery_says_unknown() {
    // A port whose next one we hold: bounded tries, each on ports the OS says are free.
    let (port, _held) = (0..50)
        .find_map(|_| {
            let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
            let port = probe.local_addr().ok()?.port();
            let next = UdpSocket::bind(("127.0.0.1", port.checked_add(1)?)).ok()?;
            drop(probe);
            Some((port, next))
        })
        .expect("a free port whose next one is free");
    let port_arg = port.to_string();
    let server = Proc::spawn(
        "server",
        &["server", "--bind", "127.0.0.1", "--port", &port_arg],
    );
    server.wait_line("the server says there is no discovery", SOON, |l| {
        l.contains(&format!("listening on 127.0.0.1:{port}"))
            && l.contains(&format!("UDP port {} could not be bound", port + 1))
    });
    let mut alice = p2p_client("alice", port);
    alice.wait_for(
        "Our NAT's behaviour is unknown (the server has no second UDP port to test with): chats \
         try a punch, and the relay if it fails.",
    );
    let bob = p2p_client("bob", port);
    bob.wait_for("Our NAT's behaviour is unknown");
    alice.send("@chat bob still here");
    bob.wait_for("From alice [still here]");
    assert_eq!(
        server.count("alice NAT") + server.count("bob NAT"),
        0,
        "nobody reported a kind"
    );
}

/// A client by hand: registered over TCP, listed from `udp`.
struct Raw {
    tcp: TcpStream,
    lines: BufReader<TcpStream>,
}

impl Raw {
    fn register(id: &str, port: u16, udp: &UdpSocket) -> Raw {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(SOON)).unwrap();
        let mut raw = Raw {
            lines: BufReader::new(tcp.try_clone().unwrap()),
            tcp,
        };
        let private = udp.local_addr().unwrap();
        raw.send(&format!("REGISTER {id} {private}"));
        let welcome = raw.line();
        let nonce = welcome
            .strip_prefix("WELCOME ")
            .expect("WELCOME")
            .to_string();
        udp.send_to(
            format!("HELLO {id} {nonce}").as_bytes(),
            ("127.0.0.1", port),
        )
        .unwrap();
        assert_eq!(raw.line(), format!("READY {private}"));
        while raw.line() != "LIST_END" {}
        raw
    }

    fn send(&mut self, line: &str) {
        self.tcp.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.lines
            .read_line(&mut line)
            .expect("a line from the server");
        line.trim_end().to_string()
    }

    /// The next line within `wait`, if any.
    fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.tcp.set_read_timeout(Some(wait)).unwrap();
        let mut line = String::new();
        let got = self.lines.read_line(&mut line).ok().filter(|&n| n > 0);
        self.tcp.set_read_timeout(Some(SOON)).unwrap();
        got.map(|_| line.trim_end().to_string())
    }
}

/// Every datagram `udp` receives within `wait`, with where it came from.
fn received(udp: &UdpSocket, wait: Duration) -> Vec<(String, SocketAddr)> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return got;
        }
        udp.set_read_timeout(Some(left)).unwrap();
        if let Ok((len, from)) = udp.recv_from(&mut buf) {
            got.push((String::from_utf8_lossy(&buf[..len]).to_string(), from));
        }
    }
}

#[test]
fn nat_probes_are_answered_only_for_their_owner_only_at_its_endpoint_and_boundedly() {
    // Mallory sends no keep-alives: a patient server.
    let (_server, port) = p2p_server(&["--timeout-secs", "60"]);
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let second = SocketAddr::from(([127, 0, 0, 1], port + 1));
    let mine = UdpSocket::bind("127.0.0.1:0").unwrap();
    let elsewhere = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut mallory = Raw::register("mallory", port, &mine);

    // Before any NAT_TEST, a probe is nothing: no datagram, no line.
    let nonce = "0123456789abcdef0123456789abcdef";
    let probe = format!("NAT_PROBE mallory {nonce}");
    for to in [server, second] {
        mine.send_to(probe.as_bytes(), to).unwrap();
    }
    assert!(received(&mine, Duration::from_millis(500)).is_empty());
    assert_eq!(mallory.line_within(Duration::from_millis(300)), None);

    mallory.send(&format!("NAT_TEST {nonce}"));
    assert_eq!(mallory.line(), format!("NAT_TEST {}", port + 1));

    // A stranger with the wrong nonce, and one with the right nonce but another ID: nothing.
    let wrong = "NAT_PROBE mallory ffffffffffffffffffffffffffffffff";
    stranger.send_to(wrong.as_bytes(), server).unwrap();
    let other = format!("NAT_PROBE alice {nonce}");
    stranger.send_to(other.as_bytes(), server).unwrap();
    assert!(received(&stranger, Duration::from_millis(500)).is_empty());
    assert_eq!(mallory.line_within(Duration::from_millis(300)), None);

    // The right probe from an address that is not mallory's endpoint: the server says over
    // mallory's TCP where it came from, and sends that address nothing.
    elsewhere.send_to(probe.as_bytes(), server).unwrap();
    let seen = format!("NAT_SEEN {port} {}", elsewhere.local_addr().unwrap());
    assert_eq!(mallory.line(), seen);
    assert!(received(&elsewhere, Duration::from_millis(500)).is_empty());

    // From its endpoint: one NAT_OPEN, shorter than the probe, from a port of the server's
    // that no client sends to: not the registration port, nor the second one (which the
    // client probes, so that its NAT would let the answer in as a reply).
    mine.send_to(probe.as_bytes(), server).unwrap();
    let got = received(&mine, Duration::from_secs(1));
    let open = format!("NAT_OPEN {nonce}");
    assert_eq!(got.len(), 1, "{got:?}");
    let (text, from) = &got[0];
    assert_eq!(text, &open);
    assert_eq!(from.ip(), server.ip());
    assert!(![port, port + 1].contains(&from.port()), "from {from}");
    assert!(open.len() < probe.len());
    assert_eq!(
        mallory.line(),
        format!("NAT_SEEN {port} {}", mine.local_addr().unwrap())
    );
    // To the second port: a line over TCP, no datagram.
    mine.send_to(probe.as_bytes(), second).unwrap();
    assert_eq!(
        mallory.line(),
        format!("NAT_SEEN {} {}", port + 1, mine.local_addr().unwrap())
    );

    // A flood of probes: at most one datagram each, and only a dozen answered per test in all.
    for _ in 0..40 {
        mine.send_to(probe.as_bytes(), server).unwrap();
    }
    let opens = received(&mine, Duration::from_secs(1));
    let mut lines = 3; // answered above
    while let Some(line) = mallory.line_within(Duration::from_millis(500)) {
        assert!(line.starts_with("NAT_SEEN "), "{line}");
        lines += 1;
    }
    assert_eq!(lines, 12, "answers per test");
    assert!(opens.len() <= 12 - 3, "{} NAT_OPENs", opens.len());

    // A second test at once is refused: one every 5 s.
    mallory.send(&format!("NAT_TEST {nonce}"));
    assert!(mallory
        .line()
        .starts_with("ERROR NAT discovery: one test every 5 s"));
}
