//! The P2P chat end to end on loopback: the real `natchat server` and `natchat client`
//! binaries, talking over real sockets.

mod support;

use std::time::Duration;
use support::{natchat, p2p_client, p2p_server, Proc, SOON};

#[test]
fn a_client_registers_and_receives_the_list() {
    let (server, port) = p2p_server(&[]);
    let alice = p2p_client("alice", port);
    let registered = server.wait_line("registering alice", SOON, |l| {
        l.starts_with("alice 127.0.0.1:")
    });
    let endpoint = registered.split_whitespace().nth(1).unwrap().to_string();
    alice.wait_for("Online (1):");
    alice.wait_for(&format!("alice {endpoint} Awake  private=127.0.0.1:"));
}

#[test]
fn show_list_shows_everyone_and_the_list_stays_current() {
    let (server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    let bob = p2p_client("bob", port);
    bob.wait_for("Online (2):");
    bob.wait_line("alice in bob's list", SOON, |l| {
        l.starts_with("alice 127.0.0.1:")
    });
    alice.wait_for("bob joined (127.0.0.1:");

    let carol = p2p_client("carol", port);
    alice.wait_for("carol joined");
    bob.wait_for("carol joined");
    alice.send("@show_list");
    alice.wait_for("Online (3):");
    for id in ["alice", "bob", "carol"] {
        alice.wait_line(&format!("{id} listed"), SOON, |l| {
            l.starts_with(&format!("{id} 127.0.0.1:"))
        });
    }

    drop(carol); // killed
    server.wait_for("carol is disconnected 127.0.0.1:");
    alice.wait_for("carol left (disconnected)");
    bob.wait_for("carol left (disconnected)");
    alice.send("@show_list");
    alice.wait_for("Online (2):");
}

#[test]
fn chat_goes_both_ways_with_unicode_and_shows_each_message_once() {
    let (_server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    let mut bob = p2p_client("bob", port);
    alice.wait_for("bob joined");

    alice.send("@chat bob héllo wörld, 你好 👋 with  two spaces");
    bob.wait_for("From alice [héllo wörld, 你好 👋 with  two spaces]");
    bob.send("@chat alice and back");
    alice.wait_for("From bob [and back]");
    for i in 0..20 {
        alice.send(&format!("@chat bob burst {i}"));
    }
    bob.wait_for("From alice [burst 19]");
    // Leaving reports every message still unacknowledged, and comes after all of alice's
    // datagrams: then bob has seen everything it will see.
    alice.send("@exit");
    assert!(alice.wait_exit(SOON).success());
    bob.wait_for("alice left (deregistered)");
    for i in 0..20 {
        assert_eq!(
            bob.count(&format!("From alice [burst {i}]")),
            1,
            "burst {i} shown once"
        );
    }
    assert_eq!(alice.count("not delivered"), 0);
}

#[test]
fn exit_ctrl_c_and_end_of_input_unregister_cleanly() {
    let (server, port) = p2p_server(&[]);
    let mut watcher = p2p_client("watcher", port);

    let mut alice = p2p_client("alice", port);
    watcher.wait_for("alice joined");
    alice.send("@exit");
    assert!(alice.wait_exit(SOON).success());
    alice.wait_for("Successfully Terminated");
    server.wait_for("alice is deregistered 127.0.0.1:");
    watcher.wait_for("alice left (deregistered)");

    let mut bob = p2p_client("bob", port);
    watcher.wait_for("bob joined");
    bob.signal("INT");
    assert!(bob.wait_exit(SOON).success());
    bob.wait_for("Successfully Terminated");
    server.wait_for("bob is deregistered");

    let mut carol = p2p_client("carol", port);
    watcher.wait_for("carol joined");
    carol.close_stdin();
    assert!(carol.wait_exit(SOON).success());
    server.wait_for("carol is deregistered");
    watcher.wait_for("carol left (deregistered)");

    watcher.send("@show_list");
    watcher.wait_count("Online (1):", 2, SOON);
}

#[test]
fn a_frozen_client_disappears_after_the_timeout_and_messages_to_it_are_not_delivered() {
    let (server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    let bob = p2p_client("bob", port);
    alice.wait_for("bob joined");

    bob.signal("STOP");
    alice.send("@chat bob are you there?");
    alice.wait_for("Message to bob was not delivered");
    server.wait_line("bob disappearing", Duration::from_secs(15), |l| {
        l.starts_with("bob is disappeared 127.0.0.1:")
    });
    alice.wait_for("bob left (disappeared)");
}

#[test]
fn refusals_and_mistakes_get_one_clear_line() {
    let (_server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    let port_arg = port.to_string();

    let mut twin = Proc::spawn(
        "twin",
        &[
            "client",
            "--port",
            &port_arg,
            "--udp-port",
            "0",
            "--id",
            "alice",
        ],
    );
    assert_eq!(twin.wait_exit(SOON).code(), Some(1));
    twin.wait_for("natchat: registration refused: ID 'alice' is already in use");

    let mut bad = Proc::spawn("bad", &["client", "--port", &port_arg, "--id", "no spaces"]);
    assert_eq!(bad.wait_exit(SOON).code(), Some(2));
    bad.wait_for("natchat: invalid ID 'no spaces'");

    alice.send("@chat nobody hi");
    alice.wait_for("No client named 'nobody' is online");
    alice.send("@dance");
    alice.wait_for("Unknown command '@dance'. Commands: @show_list");
    alice.send("@chat alice me");
    alice.wait_for("That is you");
    alice.send("@show_list");
    alice.wait_count("Online (1):", 2, SOON);
}

#[test]
fn no_server_no_subcommand_and_bad_flags_fail_clearly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free = listener.local_addr().unwrap().port().to_string();
    drop(listener);
    let mut client = Proc::spawn("client", &["client", "--port", &free, "--id", "alice"]);
    assert_eq!(client.wait_exit(SOON).code(), Some(1));
    client.wait_for(&format!(
        "natchat: cannot reach the server at 127.0.0.1:{free}"
    ));

    let bad_port = natchat()
        .args(["server", "--port", "nope"])
        .output()
        .unwrap();
    assert_eq!(bad_port.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad_port.stderr);
    assert!(
        stderr.contains("invalid value 'nope' for --port"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));

    let help = natchat().args(["client", "--help"]).output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--keepalive-secs SECS"));
}

#[test]
fn a_client_asks_for_its_id_when_none_is_given() {
    let (server, port) = p2p_server(&[]);
    let port = port.to_string();
    let mut client = Proc::spawn("prompted", &["client", "--port", &port, "--udp-port", "0"]);
    client.wait_for("Enter ID : ");
    client.send("dora");
    server.wait_for("dora 127.0.0.1:");
    client.wait_for("Registered as dora");
}

#[test]
fn the_server_going_away_ends_the_client_with_one_line() {
    let (server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    drop(server);
    assert_eq!(alice.wait_exit(SOON).code(), Some(1));
    alice.wait_for("natchat: lost the connection to the server");
}
