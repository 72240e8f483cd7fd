//! The client's paths on loopback, through the userland NATs of `support::nat`: each client
//! lives in a home of its own, whose NAT can block, lose, delay, duplicate and reorder its
//! traffic, or give it a new public port. The real `natchat server` and two real `natchat
//! client`s; the NATs count what they did, so that each test can assert that the trouble it
//! made really happened.

mod support;

use std::time::{Duration, Instant};
use support::lab::{
    assert_shown_once_in_order, exit, numbered, wait_counts, wait_path, Lab, PATIENCE,
};
use support::nat::{Block, Burst, Conditions, Link, Net, Way};
use support::{p2p_client_with, p2p_server};

/// 20-120 ms of delay, a quarter lost, a tenth duplicated.
fn rough() -> Link {
    Link {
        loss: 0.25,
        burst: None,
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(100),
        duplicate: 0.1,
    }
}

/// The same delays and duplicates, with loss in bursts: a tenth lost while the link is good,
/// four fifths while it is bad (entered before one datagram in ten, left after about three).
fn bursty() -> Link {
    Link {
        loss: 0.1,
        burst: Some(Burst {
            enter: 0.1,
            leave: 0.3,
            loss: 0.8,
        }),
        ..rough()
    }
}

#[test]
fn with_udp_between_the_peers_blocked_chat_goes_through_the_relay_exactly_once() {
    let mut lab = Lab::new();
    // alice's home alone: whichever way a datagram between the two goes, it crosses it.
    lab.a.set(Conditions::blocking(Block::Peers));

    lab.alice.send("@chat bob through the relay");
    lab.bob.wait_for("From alice [through the relay]");
    wait_path(&mut lab.alice, "bob", "relayed");
    lab.bob.send("@chat alice and back through the relay");
    lab.alice.wait_for("From bob [and back through the relay]");
    wait_path(&mut lab.bob, "alice", "relayed");
    exit(&mut lab.alice, &lab.bob);

    assert_eq!(lab.bob.count("From alice [through the relay]"), 1);
    assert_eq!(lab.alice.count("From bob [and back through the relay]"), 1);
    assert_eq!(lab.alice.count("Message to bob not"), 0, "all confirmed");
    let (a, b) = (lab.a.counts(), lab.b.counts());
    let report = lab.net.report();
    eprintln!("{report}"); // shown with --nocapture
    assert!(a.blocked > 0, "the peers tried UDP: {report}");
    for counts in [&a, &b] {
        let direct = counts.of(Way::ToPeer, "CHAT") + counts.of(Way::FromPeer, "CHAT");
        assert_eq!(direct, 0, "no chat over UDP: {report}");
    }
    assert!(a.of(Way::TcpFromServer, "PUNCH") >= 1, "a punch was tried");
    assert!(a.of(Way::TcpToServer, "RELAY") >= 1, "{report}");
    assert!(b.of(Way::TcpFromServer, "RELAYED") >= 1, "{report}");
    assert!(
        b.of(Way::TcpToServer, "RELAY") >= 1,
        "bob's acknowledgement"
    );
}

#[test]
fn a_coordinated_punch_makes_a_direct_path_to_the_public_address_not_the_private_one() {
    let mut lab = Lab::new();
    lab.go_direct();

    // Each lists the other at its NAT's public address, with the decoy as private.
    let bob = wait_path(&mut lab.alice, "bob", "direct");
    let alice = wait_path(&mut lab.bob, "alice", "direct");
    assert!(
        bob.starts_with(&format!(
            "bob {} Awake  private={} ",
            lab.b.public(),
            lab.b.decoy
        )),
        "{bob}"
    );
    assert!(
        alice.starts_with(&format!(
            "alice {} Awake  private={} ",
            lab.a.public(),
            lab.a.decoy
        )),
        "{alice}"
    );
    let (a, b) = (lab.a.counts(), lab.b.counts());
    let report = lab.net.report();
    eprintln!("{report}"); // shown with --nocapture
                           // The server keyed both and told both to probe at once.
    assert!(a.of(Way::TcpToServer, "PUNCH") >= 1, "{report}");
    assert!(a.of(Way::TcpFromServer, "PUNCH") >= 1, "{report}");
    assert!(b.of(Way::TcpFromServer, "PUNCH") >= 1, "{report}");
    // Both probed the other's private address, which never answered, and got no chat text.
    for counts in [&a, &b] {
        assert!(counts.of(Way::ToDecoy, "PROBE") >= 1, "{report}");
        assert_eq!(counts.of(Way::ToDecoy, "CHAT"), 0, "{report}");
        assert!(counts.of(Way::FromPeer, "PROBE_ACK") >= 1, "{report}");
        assert!(counts.of(Way::FromPeer, "CHAT") >= 1, "{report}");
    }
}

#[test]
fn a_client_whose_nat_gives_it_a_new_port_is_moved_and_the_chat_goes_on() {
    let mut lab = Lab::new();
    lab.go_direct();

    let old = lab.a.public();
    let new = lab.a.remap();
    assert_ne!(old, new);
    // Typed at once, before anyone knows: bob's go to a port that is no more.
    let from_bob = numbered("bob during the move", 3);
    let from_alice = numbered("alice during the move", 3);
    for text in &from_bob {
        lab.bob.send(&format!("@chat alice {text}"));
    }
    for text in &from_alice {
        lab.alice.send(&format!("@chat bob {text}"));
    }
    // alice's next keep-alive comes from the new port: the server challenges, alice answers
    // from there, and everyone is told.
    lab.server.wait_line("the move", PATIENCE, |l| {
        l.contains(&format!("alice moved to {new}"))
    });
    lab.alice.wait_line("alice's move", PATIENCE, |l| {
        l.contains(&format!("sees our UDP endpoint as {new}"))
    });
    lab.bob.wait_line("bob hears of it", PATIENCE, |l| {
        l == format!("alice moved to {new}")
    });
    for text in &from_bob {
        lab.alice
            .wait_line(text, PATIENCE, |l| l == format!("From bob [{text}]"));
    }
    for text in &from_alice {
        lab.bob
            .wait_line(text, PATIENCE, |l| l == format!("From alice [{text}]"));
    }
    lab.bob.send("@chat alice after the move");
    lab.alice.wait_for("From bob [after the move]");
    lab.alice.send("@chat bob after the move");
    lab.bob.wait_for("From alice [after the move]");
    let line = wait_path(&mut lab.bob, "alice", "direct");
    assert!(line.starts_with(&format!("alice {new} ")), "{line}");
    exit(&mut lab.alice, &lab.bob);

    assert_shown_once_in_order(&lab.alice, "bob", &from_bob);
    assert_shown_once_in_order(&lab.bob, "alice", &from_alice);
    assert_eq!(lab.alice.count("From bob [after the move]"), 1);
    assert_eq!(lab.bob.count("From alice [after the move]"), 1);
    assert_eq!(lab.alice.count("Message to bob not"), 0);
    assert_eq!(lab.bob.count("Message to alice not sent"), 0);
    assert_eq!(lab.a.counts().remaps, 1);
}

/// Sends `texts` from `sender` to `receiver` in one paste, waits for all of them, ends the
/// sender, and checks that each was shown exactly once, in order, and reported truthfully.
fn paste_and_check(lab: &mut Lab, texts: &[String]) {
    let lines: Vec<String> = texts.iter().map(|t| format!("@chat bob {t}")).collect();
    lab.alice.send_all(&lines);
    let last = texts.last().unwrap();
    lab.bob.wait_line("the last message", PATIENCE, |l| {
        l == format!("From alice [{last}]")
    });
    for text in texts {
        lab.bob
            .wait_line(text, PATIENCE, |l| l == format!("From alice [{text}]"));
    }
    exit(&mut lab.alice, &lab.bob);
    assert_shown_once_in_order(&lab.bob, "alice", texts);
    // Every message arrived: "not sent" would be false. ("Not confirmed before we left" is
    // true of one whose acknowledgement was still on its way.)
    assert_eq!(lab.alice.count("not sent"), 0);
    assert_eq!(lab.alice.count("not confirmed yet"), 0, "none waited 5 s");
}

#[test]
fn forty_messages_through_loss_jitter_and_duplicates_are_shown_once_and_in_order() {
    let mut lab = Lab::new();
    lab.go_direct();
    // Impaired on the way in to each home: every datagram between the peers crosses one
    // impaired link (the chat bob's, the acknowledgements alice's, lost in bursts);
    // datagrams to the server cross none.
    for (home, down) in [(&lab.a, bursty()), (&lab.b, rough())] {
        home.set(Conditions {
            down,
            ..Conditions::default()
        });
    }
    let texts = numbered("through the storm", 40);
    paste_and_check(&mut lab, &texts);
    let (a, b) = (lab.a.counts(), lab.b.counts());
    let report = lab.net.report();
    eprintln!("{report}"); // shown with --nocapture
    assert!(
        b.lost > 0 && b.duplicated > 0 && b.reordered > 0,
        "{report}"
    );
    assert!(a.lost > 0, "{report}");
    // Chat text went over the impaired UDP path (and maybe, once a message waited a second,
    // through the relay).
    assert!(b.of(Way::FromPeer, "CHAT") >= 10, "{report}");
}

#[test]
fn forty_messages_through_the_relay_with_lossy_udp_to_the_server_are_shown_once_and_in_order() {
    let mut lab = Lab::new();
    // Relay only, and half of alice's keep-alives lost: TCP, and so the relay, is untouched.
    let lossy = Link {
        loss: 0.5,
        ..Link::default()
    };
    lab.a.set(Conditions {
        up: lossy.clone(),
        down: lossy,
        block: Block::Peers,
    });
    wait_counts(&lab.a, &lab.net, "a keep-alive lost", |c| c.lost > 0);
    let texts = numbered("over the relay", 40);
    paste_and_check(&mut lab, &texts);
    let (a, b) = (lab.a.counts(), lab.b.counts());
    let report = lab.net.report();
    eprintln!("{report}"); // shown with --nocapture
    assert!(a.of(Way::TcpToServer, "RELAY") >= 40, "{report}");
    assert_eq!(b.of(Way::FromPeer, "CHAT"), 0, "{report}");
    assert!(lab.server.count("alice is disappeared") == 0, "not reaped");
}

#[test]
fn across_a_cut_link_reports_stay_true_and_the_chat_resumes() {
    let mut lab = Lab::new();
    lab.go_direct();

    let cut = Instant::now();
    lab.a.set(Conditions::blocking(Block::Everything));
    lab.bob.send("@chat alice while alice is cut off");
    lab.alice.send("@chat bob while the link is down");
    // Neither can be confirmed: both senders say so, and no more than that.
    lab.bob.wait_line("bob's report", PATIENCE, |l| {
        l.starts_with("Message to alice not confirmed yet")
            && l.ends_with("[while alice is cut off]")
    });
    lab.alice.wait_line("alice's report", PATIENCE, |l| {
        l.starts_with("Message to bob not confirmed yet") && l.ends_with("[while the link is down]")
    });
    // The scenario: the link stays down for 8 s at least.
    let down_for = Duration::from_secs(8);
    if let Some(rest) = down_for.checked_sub(cut.elapsed()) {
        std::thread::sleep(rest);
    }
    assert_eq!(lab.alice.count("From bob [while alice is cut off]"), 0);
    assert_eq!(lab.bob.count("From alice [while the link is down]"), 0);
    let blocked = lab.a.counts().blocked;
    assert!(blocked > 0, "{}", lab.net.report());
    lab.a.set(Conditions::default());

    // What waited in TCP (the relayed copies) arrives now, and each sender hears of it.
    lab.alice.wait_line("bob's message", PATIENCE, |l| {
        l == "From bob [while alice is cut off]"
    });
    lab.bob.wait_line("alice's message", PATIENCE, |l| {
        l == "From alice [while the link is down]"
    });
    lab.bob.wait_line("bob's late confirmation", PATIENCE, |l| {
        l == "Message to alice was delivered after all: [while alice is cut off]"
    });
    lab.alice
        .wait_line("alice's late confirmation", PATIENCE, |l| {
            l == "Message to bob was delivered after all: [while the link is down]"
        });
    lab.alice.send("@chat bob back again");
    lab.bob.wait_for("From alice [back again]");
    lab.bob.send("@chat alice welcome back");
    lab.alice.wait_for("From bob [welcome back]");
    exit(&mut lab.alice, &lab.bob);

    assert_eq!(lab.alice.count("From bob [while alice is cut off]"), 1);
    assert_eq!(lab.bob.count("From alice [while the link is down]"), 1);
    for client in [&lab.alice, &lab.bob] {
        assert_eq!(
            client.count("not sent"),
            0,
            "{}: everything left",
            client.name
        );
        assert_eq!(client.count("not confirmed yet"), 1, "{}", client.name);
    }
    assert_eq!(lab.server.count("disappeared"), 0, "nobody reaped");
}

#[test]
fn a_client_whose_link_is_cut_disappears_within_the_timeout() {
    let mut lab = Lab::with_timeout("3");
    lab.a.set(Conditions::blocking(Block::Everything));
    lab.server.wait_line("alice reaped", PATIENCE, |l| {
        l.starts_with("alice is disappeared")
    });
    lab.bob
        .wait_line("bob told", PATIENCE, |l| l == "alice left (disappeared)");
    lab.bob.send("@show_list");
    lab.bob.wait_for("Online (1):");
    assert!(lab.a.counts().blocked > 0, "{}", lab.net.report());
    assert_eq!(lab.bob.count("alice left"), 1);
}

#[test]
fn a_client_on_a_network_without_udp_registers_and_chats_through_the_relay() {
    let (server, port) = p2p_server(&[]);
    let net = Net::new(port);
    let (a, b) = (net.home("alice"), net.home("bob"));
    a.set(Conditions::blocking(Block::Udp));
    let bob = p2p_client_with("bob", b.port, &[]);
    let mut alice = p2p_client_with("alice", a.port, &[]);
    bob.wait_for("alice joined (relayed");
    alice.wait_for("but our UDP seems blocked");
    alice.send("@chat bob no UDP here");
    bob.wait_line("alice's message", PATIENCE, |l| {
        l == "From alice [no UDP here]"
    });
    // Past the server's timeout (3 s), alice is still listed, and still reachable.
    std::thread::sleep(Duration::from_secs(5));
    let mut bob = bob;
    bob.send("@chat alice still here?");
    alice.wait_line("bob's message", PATIENCE, |l| l == "From bob [still here?]");
    assert_eq!(server.count("alice is disappeared"), 0);
    assert!(a.counts().blocked > 0, "{}", net.report());
}
