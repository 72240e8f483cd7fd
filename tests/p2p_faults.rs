//! The registration server and the P2P client under bad input, impersonation and faults.
//! Raw sockets in the test play the attacker or the broken peer; real clients watch that
//! nothing reaches them and that they keep working.

mod support;

use natchat::nonce::{Key, Nonces};
use natchat::wire::{Datagram, Numbered};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use support::raw::Raw;
use support::spoof::Spoofer;
use support::{asleep_client, p2p_client, p2p_server, Proc, SOON};

/// Hand-driven clients send no keep-alives: a server timeout long enough that none of them
/// disappears during a test.
const QUIET_RAW: &[&str] = &["--timeout-secs", "60"];

/// Message `seq` of a test's own session, counting from 1.
fn numbered(seq: u64) -> Numbered {
    Numbered {
        session: 0x7e57,
        seq,
        base: 1,
    }
}

/// A well-formed `CHAT` from `from`, untagged: what a relay carries without checking.
fn untagged_chat(from: &str, seq: u64, text: &str) -> String {
    let stamp = Nonces::new().unwrap().draw();
    Datagram::chat(from, numbered(seq), stamp, text.to_string(), None).to_string()
}

/// A hand-driven client `raw`, registered, keyed with `alice` (a real client): it, alice's
/// endpoint, and their key.
fn raw_paired_with(alice: &Proc, port: u16) -> (Raw, SocketAddr, Key) {
    let mut raw = Raw::register(port, "raw");
    alice.wait_for("raw joined");
    let key = raw.key_for("alice");
    // Alice learns the key from her own PUNCH, and probes us the moment she has it: a chat
    // tagged with it that reached her sooner would be dropped as forged.
    let deadline = Instant::now() + SOON;
    while !raw
        .datagrams(Duration::from_millis(100))
        .iter()
        .any(|d| d.starts_with("PROBE alice "))
    {
        assert!(Instant::now() < deadline, "alice never probed raw");
    }
    (raw, own_endpoint(alice, "alice"), key)
}

/// The UDP endpoint a client shows for itself in its list.
fn own_endpoint(client: &Proc, id: &str) -> SocketAddr {
    let line = client.wait_line("own entry", SOON, |l| {
        l.starts_with(&format!("{id} ")) && l.ends_with("(you)")
    });
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn garbage_on_the_registration_port_gets_errors_and_disturbs_no_one() {
    let (server, port) = p2p_server(QUIET_RAW);
    let mut alice = p2p_client("alice", port);
    let bob = p2p_client("bob", port);
    alice.wait_for("bob joined");

    let mut raw = Raw::connect(port);
    for bad in [
        "hello?",
        "\u{0}\u{1}\u{7f}",
        "REGISTER",
        "REGISTER x",
        "REGISTER bad/id 127.0.0.1:5",
        "REGISTER x 127.0.0.1:99999",
        "PUNCH bob",
        "EXIT",
    ] {
        raw.send(bad);
        assert!(raw.line().starts_with("ERROR "), "no error for {bad:?}");
    }
    raw.tcp.write_all(b"\xff\xfe\xfd\n").unwrap();
    assert!(raw.line().starts_with("ERROR "));
    let mut random = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let noise: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = random.write_all(&noise);

    // Registered, then misbehaving.
    let mut carol = Raw::register(port, "carol");
    carol.send("REGISTER carol 127.0.0.1:1");
    assert_eq!(carol.expect("ERROR"), "ERROR already registered as 'carol'");
    carol.send(&format!(
        "RELAY bob {}",
        untagged_chat("alice", 1, "I am alice")
    ));
    assert!(carol.expect("ERROR").contains("must be from 'carol'"));
    carol.send("PUNCH nobody");
    assert!(carol.expect("ERROR").contains("not online"));
    carol.send("CHAT bob");
    assert!(carol.expect("ERROR").contains("unknown message"));

    // Registered but never announced over UDP: not listed, so it may not relay yet.
    let mut dave = Raw::connect(port);
    let dave_udp = dave.udp.local_addr().unwrap();
    dave.send(&format!("REGISTER dave {dave_udp}"));
    dave.expect("WELCOME ");
    dave.send(&format!(
        "RELAY bob {}",
        untagged_chat("dave", 1, "too early")
    ));
    assert_eq!(dave.expect("ERROR"), "ERROR relay: 'dave' is not online");

    // A 10 MB line: an error, and the connection is closed.
    let mut long = Raw::connect(port);
    let _ = long.tcp.write_all(&vec![b'x'; 10 << 20]);
    assert!(long.line().contains("line longer than"));
    let mut rest = Vec::new();
    let _ = long.reader.read_to_end(&mut rest);

    alice.send("@chat bob still here");
    bob.wait_for("From alice [still here]");
    assert_eq!(alice.count("Server:"), 0, "alice saw nothing of it");
    assert!(server.output().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn nobody_can_announce_move_or_speak_for_someone_else() {
    let (server, port) = p2p_server(QUIET_RAW);
    let mut alice = p2p_client("alice", port);
    let bob = p2p_client("bob", port);
    alice.wait_for("bob joined");
    let bob_endpoint = own_endpoint(&bob, "bob");
    let alice_endpoint = own_endpoint(&alice, "alice");

    let mut mallory = Raw::register(port, "mallory");
    alice.wait_for("mallory joined");
    let server_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Announcements for bob from mallory's address: a guessed nonce, a keep-alive, an
    // Awake request. At most they make the server challenge bob, who answers from where
    // he really is.
    for forged in [
        "HELLO bob 0123456789abcdef0123456789abcdef",
        "ALIVE bob",
        "AWAKE bob",
    ] {
        mallory.udp_to(forged, server_addr);
    }
    // Chats claiming to be bob, from mallory's own address: untagged, and tagged with the
    // key mallory shares with alice (not bob's).
    mallory.udp_to(
        &untagged_chat("bob", 1, "send me your password"),
        alice_endpoint,
    );
    let key = mallory.key_for("alice");
    let stamp = Nonces::new().unwrap().draw();
    let wrong_key = Datagram::chat("bob", numbered(2), stamp, "wrong key".into(), Some(&key));
    mallory.udp_to(&wrong_key.to_string(), alice_endpoint);
    // And one from an ID alice does not know.
    mallory.udp_to(&untagged_chat("nobody", 1, "boo"), alice_endpoint);

    // Barriers: mallory's own Awake request and chat, sent after the forgeries, arrive; so
    // the forgeries had their chance before them.
    mallory.udp_to("AWAKE mallory", server_addr);
    let challenge = mallory.expect("CHALLENGE ");
    let nonce = challenge.rsplit(' ').next().unwrap();
    mallory.udp_to(&format!("AWAKE mallory {nonce}"), server_addr);
    server.wait_for("mallory Awake");
    let barrier = Datagram::chat("mallory", numbered(1), stamp, "barrier".into(), Some(&key));
    mallory.udp_to(&barrier.to_string(), alice_endpoint);
    alice.wait_for("From mallory [barrier]");
    // Bob really speaks: it arrives.
    let mut bob = bob;
    bob.send("@chat alice the real bob");
    alice.wait_for("From bob [the real bob]");
    assert_eq!(alice.count("send me your password"), 0);
    assert_eq!(alice.count("wrong key"), 0);
    assert_eq!(alice.count("boo"), 0);
    assert_eq!(server.count("bob Awake"), 0);
    assert_eq!(server.count("bob moved"), 0);
    assert_eq!(alice.count("bob moved"), 0);
    alice.send("@show_list");
    alice.wait_for(&format!("bob {bob_endpoint} Awake  private="));
}

#[test]
fn a_replayed_announcement_moves_nobody() {
    let (server, port) = p2p_server(QUIET_RAW);
    let alice = p2p_client("alice", port);
    let mut victim = Raw::connect(port);
    let victim_udp = victim.udp.local_addr().unwrap();
    victim.send(&format!("REGISTER victim {victim_udp}"));
    let nonce = victim.expect("WELCOME ")["WELCOME ".len()..].to_string();
    let hello = format!("HELLO victim {nonce}");
    victim.udp_to(&hello, victim.server);
    victim.expect("LIST_END");
    let registered = server.wait_for("victim 127.0.0.1:");
    alice.wait_for("victim joined");

    // An attacker who saw those datagrams sends them again, from elsewhere.
    let attacker = UdpSocket::bind("127.0.0.2:0").unwrap();
    for replay in [hello.as_str(), "ALIVE victim", "AWAKE victim"] {
        attacker.send_to(replay.as_bytes(), victim.server).unwrap();
    }
    // The victim is challenged over its own connection, and answers from its own socket
    // (here as an Awake request, whose announcement is the barrier): nothing moves.
    let challenge = victim.expect("CHALLENGE ");
    let nonce = challenge.rsplit(' ').next().unwrap().to_string();
    victim.udp_to(&format!("AWAKE victim {nonce}"), victim.server);
    alice.wait_for(&format!("victim is awake ({victim_udp})"));
    assert_eq!(server.count("victim moved"), 0, "{:?}", server.output());
    assert_eq!(alice.count("victim moved"), 0);
    assert!(registered.ends_with(&victim_udp.to_string()));
    // Spent: the nonce that answered the challenge works no second time, from anywhere.
    for spent in [
        format!("HELLO victim {nonce}"),
        format!("AWAKE victim {nonce}"),
    ] {
        attacker.send_to(spent.as_bytes(), victim.server).unwrap();
    }
    // A barrier: the victim's next Awake request (a challenge may go out once a second),
    // answered on its own connection.
    std::thread::sleep(Duration::from_millis(1100));
    victim.udp_to("AWAKE victim", victim.server);
    let challenge = victim.expect("CHALLENGE ");
    let fresh = challenge.rsplit(' ').next().unwrap();
    victim.udp_to(&format!("AWAKE victim {fresh}"), victim.server);
    victim.expect(&format!("AWAKE victim {victim_udp}"));
    server.wait_count("victim Awake", 2, SOON);
    assert_eq!(server.count("victim moved"), 0);
    assert_eq!(server.count("victim Awake"), 2, "{:?}", server.output());
}

#[test]
fn a_new_address_is_believed_once_it_answers_the_challenge() {
    let (server, port) = p2p_server(QUIET_RAW);
    let alice = p2p_client("alice", port);
    let mut roamer = Raw::register(port, "roamer");
    alice.wait_for("roamer joined");
    // Its NAT gives it a new mapping: the same client, on a new socket.
    let moved = UdpSocket::bind("127.0.0.3:0").unwrap();
    let new_addr = moved.local_addr().unwrap();
    moved.send_to(b"ALIVE roamer", roamer.server).unwrap();
    let challenge = roamer.expect("CHALLENGE ");
    let nonce = challenge.rsplit(' ').next().unwrap();
    moved
        .send_to(format!("HELLO roamer {nonce}").as_bytes(), roamer.server)
        .unwrap();
    server.wait_for(&format!("roamer moved to {new_addr}"));
    alice.wait_for(&format!("roamer moved to {new_addr}"));
}

#[test]
fn duplicated_datagrams_are_shown_once_and_each_copy_is_acknowledged() {
    let (_server, port) = p2p_server(QUIET_RAW);
    let alice = p2p_client("alice", port);
    let (raw, alice_endpoint, key) = raw_paired_with(&alice, port);
    let mut stamps = Nonces::new().unwrap();
    let stamp = stamps.draw();
    let once = Datagram::chat("raw", numbered(1), stamp, "only once".into(), Some(&key));
    for _ in 0..3 {
        raw.udp_to(&once.to_string(), alice_endpoint);
    }
    let escapes = "\u{1b}[2Jno escapes".to_string();
    let escapes = Datagram::chat("raw", numbered(2), stamps.draw(), escapes, Some(&key));
    raw.udp_to(&escapes.to_string(), alice_endpoint);
    // Every copy is acknowledged, echoing the stamp: wait for three ACKs of message 1.
    let ack = format!("ACK alice 1 {stamp}");
    let acks = |replies: &[String]| replies.iter().filter(|d| **d == ack).count();
    let mut replies = Vec::new();
    let deadline = Instant::now() + SOON;
    while acks(&replies) < 3 && Instant::now() < deadline {
        replies.extend(raw.datagrams(Duration::from_millis(200)));
    }
    assert_eq!(acks(&replies), 3, "{replies:?}");
    alice.wait_for("From raw [\u{FFFD}[2Jno escapes]");
    assert_eq!(alice.count("From raw [only once]"), 1);
}

#[test]
fn silent_connections_are_closed_and_the_cap_refuses_newcomers() {
    let (server, port) = p2p_server(&["--register-secs", "2", "--max-clients", "3"]);
    let mut silent = Raw::connect(port);
    assert!(silent
        .line()
        .contains("no REGISTER within the registration time"));

    let _a = p2p_client("a", port);
    let _b = p2p_client("b", port);
    let _c = p2p_client("c", port);
    for _ in 0..2 {
        let mut late = Raw::connect(port);
        assert_eq!(
            late.line(),
            "ERROR server full (3 clients); try again later"
        );
    }
    // Said once, when it filled up; never at start-up for a cap the machine can afford.
    let full = "natchat: server full: 3 connections open; newcomers are refused until some \
                leave. --max-clients allows no more";
    server.wait_for(full);
    assert_eq!(server.count("server full"), 1, "{:?}", server.output());
    assert_eq!(server.count("Serving at most"), 0);
    assert!(server.output().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn the_connection_cap_is_mentioned_at_start_only_when_asked_for_more_than_the_machine_allows() {
    let (server, _) = p2p_server(&[]);
    let (room, _) = support::room_server(&[]);
    let (greedy, _) = p2p_server(&["--max-clients", "100000000"]);
    greedy.wait_for("Serving at most");
    assert!(greedy.wait_for("Serving at most").contains("not 100000000"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.output().len(), 1, "{:?}", server.output());
    assert_eq!(room.output().len(), 1, "{:?}", room.output());
}

#[test]
fn nothing_reaches_an_asleep_client_through_the_server() {
    let (_server, port) = p2p_server(QUIET_RAW);
    let carol = asleep_client("carol", port);
    let mut raw = Raw::register(port, "raw");
    raw.send(&format!(
        "RELAY carol {}",
        untagged_chat("raw", 1, "wake up")
    ));
    assert_eq!(
        raw.expect("ERROR"),
        "ERROR relay: 'carol' is Asleep and receives no chats until it wakes"
    );
    raw.send("PUNCH carol");
    assert_eq!(
        raw.expect("ERROR"),
        "ERROR cannot punch to 'carol': it is Asleep"
    );
    assert_eq!(carol.count("wake up"), 0);
}

#[test]
fn a_server_restarts_at_once_on_the_same_port() {
    let (server, port) = p2p_server(&[]);
    let alice = p2p_client("alice", port);
    drop(server);
    drop(alice);
    let port = port.to_string();
    let again = Proc::spawn("again", &["server", "--bind", "127.0.0.1", "--port", &port]);
    again.wait_for(&format!("listening on 127.0.0.1:{port}"));
    let bob = p2p_client("bob", port.parse().unwrap());
    bob.wait_for("Registered as bob");
}

#[test]
fn running_out_of_file_descriptors_pauses_accepting_and_never_ends_the_server() {
    // The server gets 16 file descriptors; a burst of connections exhausts them.
    let sh = format!(
        "ulimit -n 16 && exec {} server --bind 127.0.0.1 --port 0 --timeout-secs 3",
        env!("CARGO_BIN_EXE_natchat")
    );
    let mut server =
        Proc::spawn_command("server", std::process::Command::new("sh").args(["-c", &sh]));
    let port = support::port_in(&server.wait_for("listening on"));
    let hogs: Vec<TcpStream> = (0..20)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    server.wait_for("pausing new connections");
    drop(hogs);
    // Once the hogs are gone, a real client registers.
    let alice = p2p_client("alice", port);
    alice.wait_for("Registered as alice");
    assert!(server.is_running());
}

#[test]
fn a_server_whose_output_is_gone_keeps_serving() {
    let mut child = support::natchat()
        .args([
            "server",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--timeout-secs",
            "3",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = support::KillOnDrop(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    // The read end is gone now: every line the server prints from here on fails.
    let port = support::port_in(&first);
    let mut alice = p2p_client("alice", port);
    let bob = p2p_client("bob", port);
    alice.wait_for("bob joined");
    alice.send("@chat bob the server prints into the void");
    bob.wait_for("From alice [the server prints into the void]");
    drop(bob);
    alice.wait_for("bob left (disconnected)");
    drop(server);
}

#[test]
fn a_flood_of_punch_requests_cuts_no_one_off() {
    let (server, port) = p2p_server(QUIET_RAW);
    let mut alice = p2p_client("alice", port);
    let bob = p2p_client("bob", port);
    alice.wait_for("bob joined");
    let mut mallory = Raw::register(port, "mallory");
    let flood = "PUNCH bob\n".repeat(50_000);
    mallory.tcp.write_all(flood.as_bytes()).unwrap();
    // mallory's own connection still answers: the flood was all read.
    mallory.send("PUNCH nobody");
    assert!(mallory.expect("ERROR").contains("not online"));
    alice.send("@chat bob still connected?");
    bob.wait_for("From alice [still connected?]");
    assert_eq!(server.count("bob is disconnected"), 0);
}

#[test]
fn clients_registering_at_once_each_learn_of_every_other_exactly_once() {
    let (_server, port) = p2p_server(QUIET_RAW);
    let (listed, all_listed) = std::sync::mpsc::channel();
    let crowd: Vec<_> = (0..20)
        .map(|i| {
            let listed = listed.clone();
            std::thread::spawn(move || {
                let id = format!("crowd{i}");
                let mut raw = Raw::connect(port);
                let udp_addr = raw.udp.local_addr().unwrap();
                raw.send(&format!("REGISTER {id} {udp_addr}"));
                let nonce = raw.expect("WELCOME ")["WELCOME ".len()..].to_string();
                raw.udp_to(&format!("HELLO {id} {nonce}"), raw.server);
                let mut lines = raw.lines_until("LIST_END");
                listed.send(()).unwrap();
                lines.extend(raw.lines_until("JOIN last "));
                (id, lines)
            })
        })
        .collect();
    // Once all twenty are listed, one more join: every line before it has then arrived.
    for _ in 0..20 {
        all_listed.recv_timeout(SOON).expect("all twenty listed");
    }
    let _last = Raw::register(port, "last");
    for thread in crowd {
        let (id, lines) = thread.join().unwrap();
        let mut known: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("PEER ").or(l.strip_prefix("JOIN ")))
            .map(|rest| rest.split(' ').next().unwrap())
            .filter(|other| *other != id)
            .collect();
        let told = known.len();
        known.sort();
        known.dedup();
        assert_eq!(
            told,
            known.len(),
            "{id} was told of someone twice: {lines:?}"
        );
        assert_eq!(known.len(), 19, "{id} does not know everyone: {lines:?}");
        assert!(
            !lines.iter().any(|l| l.starts_with(&format!("JOIN {id} "))),
            "{id} was told of its own join: {lines:?}"
        );
    }
}

#[test]
fn chat_text_goes_only_on_a_validated_path_never_to_a_stranger_at_the_private_address() {
    let (_server, port) = p2p_server(QUIET_RAW);
    let mut alice = p2p_client("alice", port);
    // Two homes behind one carrier NAT, with the same private subnet: the private address bob
    // reports from his home belongs, in alice's home, to a stranger.
    let stranger = UdpSocket::bind("127.0.0.9:0").unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let bobs_private = stranger.local_addr().unwrap();
    let mut bob = Raw::connect(port);
    bob.send(&format!("REGISTER bob {bobs_private}"));
    let nonce = bob.expect("WELCOME ")["WELCOME ".len()..].to_string();
    bob.udp_to(&format!("HELLO bob {nonce}"), bob.server);
    bob.expect("LIST_END");
    alice.wait_for("bob joined");
    let key = bob.key_for("alice");
    bob.udp
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();

    alice.send("@chat bob for bob only");
    // Bob answers the probes that reach him and acknowledges the chat (straight, or through
    // the relay, should the machine be too slow for a path within a second). The stranger
    // does what it can: it forwards alice's probes to bob and bob's answers back to alice,
    // to sit in the middle, and forges an answer of its own, and a chat as bob.
    bob.tcp
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let bobs_public = bob.udp.local_addr().unwrap();
    let (mut bob_got, mut stranger_got) = (Vec::new(), Vec::new());
    let (mut alice_at, mut sent_second) = (None, false);
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + SOON;
    // Two messages: the second goes on whatever path alice has settled on by then.
    while bob_got.len() < 2 && Instant::now() < deadline {
        if bob_got.len() == 1 && !sent_second {
            alice.send("@chat bob second secret");
            sent_second = true;
        }
        if let Ok((n, from)) = bob.udp.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            match text.parse::<Datagram>() {
                Ok(Datagram::Probe { nonce, .. }) => {
                    let answer = Datagram::probe_ack("bob", nonce, from, &key);
                    bob.udp_to(&answer.to_string(), from);
                }
                Ok(Datagram::Chat {
                    number,
                    stamp,
                    text,
                    ..
                }) => {
                    bob.udp_to(&format!("ACK bob {} {stamp}", number.seq), from);
                    if !bob_got.contains(&text) {
                        bob_got.push(text);
                    }
                }
                _ => {}
            }
        }
        let mut line = String::new();
        if bob.reader.read_line(&mut line).is_ok() {
            if let Some(Ok(Datagram::Chat { text, .. })) =
                line.trim_end().strip_prefix("RELAYED ").map(str::parse)
            {
                if !bob_got.contains(&text) {
                    bob_got.push(text);
                }
            }
        }
        if let Ok((n, from)) = stranger.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if from == bobs_public {
                // Bob's answer to a forwarded probe: on to alice.
                if let Some(alice) = alice_at {
                    stranger.send_to(&buf[..n], alice).unwrap();
                }
            } else if let Ok(Datagram::Probe { nonce, .. }) = text.parse() {
                alice_at = Some(from);
                stranger.send_to(&buf[..n], bobs_public).unwrap();
                let forged = Datagram::ProbeAck {
                    from: "bob".into(),
                    nonce,
                    seen: from,
                    tag: 0,
                };
                stranger
                    .send_to(forged.to_string().as_bytes(), from)
                    .unwrap();
                let claim = untagged_chat("bob", 1, "I am bob, trust me");
                stranger.send_to(claim.as_bytes(), from).unwrap();
                stranger_got.push(text);
            } else {
                stranger_got.push(text);
            }
        }
    }
    assert_eq!(bob_got, ["for bob only", "second secret"]);
    assert!(
        !stranger_got.is_empty(),
        "alice never probed the private address"
    );
    assert!(
        stranger_got.iter().all(|d| d.starts_with("PROBE alice ")),
        "the stranger got more than probes: {stranger_got:?}"
    );
    alice.send("@show_list");
    alice.wait_line("bob not reached at the stranger's address", SOON, |l| {
        l.starts_with("bob ") && !l.contains("path=private")
    });
    assert_eq!(alice.count("I am bob"), 0);
}

/// A client's own UDP endpoint, as an IPv4 address.
fn endpoint_v4(client: &Proc, id: &str) -> std::net::SocketAddrV4 {
    match own_endpoint(client, id) {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(v6) => panic!("{id} is at {v6}: loopback tests expect IPv4"),
    }
}

#[test]
fn datagrams_forged_from_a_peers_address_neither_silence_it_nor_acknowledge_for_it() {
    let Some(spoofer) = Spoofer::open("forged datagrams from a peer's address") else {
        return;
    };
    let (server, port) = p2p_server(QUIET_RAW);
    let mut alice = p2p_client("alice", port);
    let mut bob = p2p_client("bob", port);
    alice.wait_for("bob joined");
    alice.send("@chat bob first");
    bob.wait_for("From alice [first]");
    let (alice_at, bob_at) = (endpoint_v4(&alice, "alice"), endpoint_v4(&bob, "bob"));

    // The largest sequence number there is, as if from bob: it would move alice's window
    // past everything bob will ever send.
    let stamp = Nonces::new().unwrap().draw();
    for tag in ["0000000000000000", "00000000deadbeef"] {
        let forged =
            format!("CHAT bob 0000000000007e57 18446744073709551615 1 {stamp} {tag} silenced");
        spoofer.send(bob_at, alice_at, forged.as_bytes());
    }
    // An Awake request forged from bob's own endpoint: the server wants proof, which only
    // bob could give, and he is not asking.
    let server_at = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
    spoofer.send(bob_at, server_at, b"AWAKE bob");
    bob.send("@chat alice still heard");
    alice.wait_for("From bob [still heard]");
    assert_eq!(alice.count("silenced"), 0);
    assert_eq!(alice.count("bob is awake"), 0);

    // Bob stops: alice's next message cannot be delivered. Acknowledgements forged from bob's
    // address, guessing its number, must not make it count as delivered.
    bob.signal("STOP");
    alice.send("@chat bob are you there?");
    let mut guesses = Nonces::new().unwrap();
    for _ in 0..20 {
        for seq in 1..=4 {
            let forged = format!("ACK bob {seq} {}", guesses.draw());
            spoofer.send(bob_at, alice_at, forged.as_bytes());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    alice.wait_line("the honest report", SOON * 2, |l| {
        l == "Message to bob not confirmed yet (no acknowledgement in 5 s; it may still arrive): \
              [are you there?]"
    });
    assert_eq!(server.count("bob Awake"), 0, "{:?}", server.output());
    // Bob stays stopped until he is killed: the report stays true.
}

#[test]
fn a_flood_of_forged_announcements_makes_one_challenge() {
    let (server, port) = p2p_server(QUIET_RAW);
    let _alice = p2p_client("alice", port);
    let mut victim = Raw::register(port, "victim");
    let attacker = UdpSocket::bind("127.0.0.2:0").unwrap();
    for _ in 0..50 {
        for forged in ["ALIVE victim", "AWAKE victim"] {
            attacker.send_to(forged.as_bytes(), victim.server).unwrap();
        }
    }
    let challenge = victim.expect("CHALLENGE ");
    // The victim's own Awake request, proven: its answer is the barrier after which every
    // line the flood caused has arrived. None is a second challenge.
    let nonce = challenge.rsplit(' ').next().unwrap();
    victim.udp_to(&format!("AWAKE victim {nonce}"), victim.server);
    let lines = victim.lines_until("AWAKE victim ");
    assert!(
        lines.iter().all(|l| !l.starts_with("CHALLENGE ")),
        "{lines:?}"
    );
    server.wait_for("victim Awake");
    assert_eq!(server.count("victim Awake"), 1, "{:?}", server.output());
}

#[test]
fn an_asleep_client_answers_no_one_elses_challenge() {
    let (server, port) = p2p_server(QUIET_RAW);
    let alice = p2p_client("alice", port);
    let mut carol = asleep_client("carol", port);
    alice.wait_for("carol joined (Asleep)");
    // WELCOME's challenge lives 10 s; after it, a forged Awake request gets carol a fresh
    // challenge, which she, not waking, must not answer.
    std::thread::sleep(Duration::from_millis(10_500));
    let attacker = UdpSocket::bind("127.0.0.2:0").unwrap();
    let server_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    for _ in 0..3 {
        attacker.send_to(b"AWAKE carol", server_addr).unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(server.count("carol Awake"), 0, "{:?}", server.output());
    assert_eq!(alice.count("carol is awake"), 0);
    // Her own Awake request, when it comes, is answered at once (she kept the nonce).
    carol.send("@awake");
    server.wait_for("carol Awake 127.0.0.1:");
    alice.wait_for("carol is awake (127.0.0.1:");
}

#[test]
fn each_peers_messages_are_shown_in_the_order_they_were_sent() {
    let (_server, port) = p2p_server(QUIET_RAW);
    let alice = p2p_client("alice", port);
    let (raw, alice_endpoint, key) = raw_paired_with(&alice, port);
    let mut stamps = Nonces::new().unwrap();
    let chat = |seq: u64, text: &str, stamps: &mut Nonces| {
        Datagram::chat("raw", numbered(seq), stamps.draw(), text.into(), Some(&key)).to_string()
    };
    // Reordered on the way: 3, 1, 2.
    for (seq, text) in [(3, "three"), (1, "one"), (2, "two")] {
        raw.udp_to(&chat(seq, text, &mut stamps), alice_endpoint);
    }
    alice.wait_for("From raw [three]");
    let shown: Vec<String> = alice
        .output()
        .into_iter()
        .filter(|l| l.starts_with("From raw"))
        .collect();
    assert_eq!(
        shown,
        ["From raw [one]", "From raw [two]", "From raw [three]"]
    );

    // Lost on the way: 4 never comes. 5 waits for it, for a bounded time, then is shown
    // with the gap said; and 4, should it come after all, is shown marked late.
    raw.udp_to(&chat(5, "five", &mut stamps), alice_endpoint);
    let gap = "(a message from raw before the next has not arrived)";
    alice.wait_line("the gap, said", SOON * 2, |l| l == gap);
    alice.wait_for("From raw [five]");
    let output = alice.output();
    let at = |line: &str| output.iter().position(|l| l == line);
    assert!(at(gap) < at("From raw [five]"), "{output:?}");
    raw.udp_to(&chat(4, "four", &mut stamps), alice_endpoint);
    alice.wait_for("From raw [four] (late: sent before messages shown already)");
}

#[test]
fn a_message_reported_unconfirmed_that_arrives_after_all_is_said_so() {
    let (_server, port) = p2p_server(QUIET_RAW);
    let mut alice = p2p_client("alice", port);
    let bob = p2p_client("bob", port);
    alice.wait_for("bob joined");
    alice.send("@chat bob first");
    bob.wait_for("From alice [first]");
    // Bob stalls longer than alice waits for an acknowledgement, then carries on.
    bob.signal("STOP");
    alice.send("@chat bob are you still there?");
    alice.wait_line("not confirmed, and nothing worse", SOON * 2, |l| {
        l == "Message to bob not confirmed yet (no acknowledgement in 5 s; it may still \
              arrive): [are you still there?]"
    });
    bob.signal("CONT");
    bob.wait_for("From alice [are you still there?]");
    alice.wait_for("Message to bob was delivered after all: [are you still there?]");
    assert_eq!(bob.count("are you still there?"), 1);
}

#[test]
fn a_stalled_server_reaps_nobody_who_kept_sending_keep_alives() {
    // Keep-alives every second, silence reaped after 3 s; the server stops for 6.
    let (server, port) = p2p_server(&["--timeout-secs", "3"]);
    let mut alice = p2p_client("alice", port);
    let bob = p2p_client("bob", port);
    alice.wait_for("bob joined");
    server.signal("STOP");
    std::thread::sleep(Duration::from_secs(6));
    server.signal("CONT");
    // The keep-alives sent meanwhile are read now; give the reaper two seconds to misjudge.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(server.count("disappeared"), 0, "{:?}", server.output());
    alice.send("@chat bob still registered?");
    bob.wait_for("From alice [still registered?]");
    assert_eq!(alice.count("left"), 0, "{:?}", alice.output());
}
