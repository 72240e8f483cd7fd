//! The P2P chat end to end on loopback: the real `natchat server` and `natchat client`
//! binaries, talking over real sockets.

mod support;

use std::time::{Duration, Instant};
use support::tmux::Tmux;
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
    assert_eq!(alice.count("Message to bob not"), 0);
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
fn a_frozen_client_disappears_after_the_timeout_and_messages_to_it_are_not_confirmed() {
    let (server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    let bob = p2p_client("bob", port);
    alice.wait_for("bob joined");

    bob.signal("STOP");
    alice.send("@chat bob are you there?");
    alice.wait_line("the honest report", SOON, |l| {
        l.starts_with("Message to bob not confirmed") && l.ends_with(": [are you there?]")
    });
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
    let mut accented = Proc::spawn("accented", &["client", "--port", &port_arg, "--id", "josé"]);
    assert_eq!(accented.wait_exit(SOON).code(), Some(2));
    accented.wait_line("the character as itself", SOON, |l| {
        l == "natchat: invalid ID 'josé': 'é' is not allowed in an ID (use letters, digits, \
              '_', '.', '-')"
    });

    alice.send("@chat nobody hi");
    alice.wait_for("No client named 'nobody' is online");
    alice.send("@dance");
    alice.wait_line("the list of commands", SOON, |l| {
        l == "Unknown command '@dance'. Commands: @show_list, @chat <id> <message>, @nat, @awake, @exit"
    });
    // Near misses get the command they most likely meant.
    for (typed, meant) in [
        ("chat bob hi there", "'@chat bob hi there'"),
        ("@Chat bob hi", "'@chat bob hi'"),
        ("@show-list", "'@show_list'"),
        ("@showlist", "'@show_list'"),
        ("exit", "'@exit'"),
    ] {
        alice.send(typed);
        let command = typed.split(' ').next().unwrap();
        alice.wait_line(&format!("a hint for {typed:?}"), SOON, |l| {
            l == format!("Unknown command '{command}'. Did you mean {meant}?")
        });
    }
    // Words after a command that takes none: a usage line, and nothing done.
    for typed in ["@exit now", "@awake please", "@show_list all"] {
        alice.send(typed);
        let command = typed.split(' ').next().unwrap();
        alice.wait_for(&format!(
            "Usage: {command}, with nothing after it; nothing was done."
        ));
    }
    assert!(alice.is_running(), "'@exit now' did not exit");
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
    client.wait_line("the refusal, in words", SOON, |l| {
        l == format!(
            "natchat: cannot reach the server at 127.0.0.1:{free}: connection refused. \
             Is 'natchat server' running there?"
        )
    });

    let bad_port = natchat()
        .args(["server", "--port", "nope"])
        .output()
        .unwrap();
    assert_eq!(bad_port.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad_port.stderr);
    assert_eq!(
        stderr,
        "natchat: invalid value 'nope' for --port. Try 'natchat server --help'.\n"
    );

    let help = natchat().args(["client", "--help"]).output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--keepalive-secs SECS"));
}

#[test]
fn a_client_asks_for_its_id_when_none_is_given_and_again_after_a_bad_or_taken_one() {
    let (server, port) = p2p_server(&[]);
    let _alice = p2p_client("alice", port);
    let port = port.to_string();
    let mut client = Proc::spawn("prompted", &["client", "--port", &port, "--udp-port", "0"]);
    client.wait_for("Enter ID : ");
    client.send("no spaces");
    client.wait_line("the reason", SOON, |l| {
        l.ends_with(
            "Invalid ID 'no spaces': ' ' is not allowed in an ID (use letters, digits, '_', \
             '.', '-').",
        )
    });
    client.wait_count("Enter ID : ", 2, SOON);
    client.send("alice");
    // (Piped, the answer does not end the prompt's line as a terminal's echo would.)
    client.wait_line("the ID is taken", SOON, |l| {
        l.ends_with("Enter ID : ID 'alice' is already in use; choose another.")
    });
    client.wait_count("Enter ID : ", 3, SOON);
    client.send("dora");
    server.wait_for("dora 127.0.0.1:");
    client.wait_for("Registered as dora");
    // End of input at the prompt ends the client, with the usual line.
    let mut quiet = Proc::spawn("quiet", &["client", "--port", &port, "--udp-port", "0"]);
    quiet.wait_for("Enter ID : ");
    quiet.close_stdin();
    assert_eq!(quiet.wait_exit(SOON).code(), Some(2));
    quiet.wait_for("natchat: no ID given; pass --id ID or type one at the prompt");
}

#[test]
fn a_server_that_does_not_answer_is_named_in_words() {
    // Accepts, and never says a word.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mute.local_addr().unwrap().port().to_string();
    let mut client = Proc::spawn("client", &["client", "--port", &port, "--id", "alice"]);
    // Patient, as on a slow link (40 s: longer than a server's registration time), saying
    // once that it still waits.
    assert_eq!(client.wait_exit(SOON * 6).code(), Some(1));
    client.wait_line("the timeout, in words", SOON, |l| {
        l == format!(
            "natchat: the server at 127.0.0.1:{port} did not answer within 40 s. Is it a natchat \
             server ('natchat server'), and are --server and --port right?"
        )
    });
    assert_eq!(client.count("Still waiting for the server"), 1);
    assert_eq!(client.count("os error"), 0);
}

#[test]
fn a_client_the_server_drops_is_told_why_and_registers_again() {
    let (server, port) = p2p_server(&["--timeout-secs", "1"]);
    let alice = p2p_client("alice", port);
    // Stopped, alice sends no keep-alives: the server reaps her, and tells her why.
    alice.signal("STOP");
    server.wait_for("alice is disappeared 127.0.0.1:");
    alice.signal("CONT");
    alice.wait_line("the reason", SOON, |l| {
        l == format!(
            "The server at 127.0.0.1:{port} closed our connection (no UDP keep-alive from \
             you reached the server for 1 s; closing the connection); registering again."
        )
    });
    alice.wait_line("back", SOON, |l| {
        l.starts_with(&format!(
            "Registered again with the server at 127.0.0.1:{port} as alice (public endpoint \
             127.0.0.1:"
        ))
    });
    server.wait_count("alice 127.0.0.1:", 2, SOON);
    assert_eq!(alice.count("when the server is back"), 0);
}

#[test]
fn a_client_outlives_its_server_and_registers_again_when_it_is_back() {
    let (server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    let mut bob = p2p_client("bob", port);
    let carol = support::asleep_client("carol", port);
    alice.wait_for("carol joined (Asleep)");
    bob.wait_for("carol joined (Asleep)");
    alice.send("@chat bob before");
    bob.wait_for("From alice [before]");

    drop(server);
    let lost = format!("Lost the connection to the server at 127.0.0.1:{port}; registering again");
    for client in [&alice, &bob, &carol] {
        client.wait_for(&lost);
    }
    // A direct path needs no server.
    alice.send("@chat bob while the server is away");
    bob.wait_for("From alice [while the server is away]");

    // The server comes back on the same port: everyone registers again by itself, carol
    // still Asleep.
    let port_arg = port.to_string();
    let again = Proc::spawn(
        "again",
        &["server", "--bind", "127.0.0.1", "--port", &port_arg],
    );
    for (client, id) in [(&alice, "alice"), (&bob, "bob")] {
        again.wait_for(&format!("{id} 127.0.0.1:"));
        client.wait_for(&format!(
            "Registered again with the server at 127.0.0.1:{port} as {id} (public endpoint"
        ));
    }
    again.wait_line("carol, still Asleep", SOON, |l| l == "carol Asleep");
    carol.wait_for(&format!(
        "Registered again with the server at 127.0.0.1:{port} as carol (still Asleep)."
    ));
    // Bob may have registered again before alice did: then he knows her again only once the
    // server says she is back, and a chat typed before that is refused. Wait until he lists
    // her.
    let deadline = Instant::now() + SOON;
    loop {
        let before = bob.output().len();
        bob.send("@show_list");
        std::thread::sleep(Duration::from_millis(200));
        if bob.output()[before..]
            .iter()
            .any(|l| l.starts_with("alice 127.0.0.1:"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "bob never listed alice again");
    }
    bob.send("@chat alice after");
    alice.wait_for("From bob [after]");
    alice.send("@chat bob after, too");
    bob.wait_for("From alice [after, too]");
    // Each exactly once, in order, and nothing reported lost.
    let shown: Vec<String> = bob
        .output()
        .into_iter()
        .filter(|l| l.starts_with("From alice"))
        .collect();
    assert_eq!(
        shown,
        [
            "From alice [before]",
            "From alice [while the server is away]",
            "From alice [after, too]"
        ]
    );
    assert_eq!(alice.count("Message to bob not"), 0, "{:?}", alice.output());
    assert_eq!(bob.count("has not arrived"), 0, "{:?}", bob.output());
}

#[test]
fn a_client_whose_id_was_taken_while_the_server_was_away_says_so() {
    let (server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    drop(server);
    alice.wait_for("Lost the connection to the server");
    // Alice is held back until someone else has her ID on the server that comes back.
    alice.signal("STOP");
    let port_arg = port.to_string();
    let again = Proc::spawn(
        "again",
        &["server", "--bind", "127.0.0.1", "--port", &port_arg],
    );
    again.wait_for("listening on");
    let _other = p2p_client("alice", port);
    alice.signal("CONT");
    // Refused, she tries again for a while (it could be her own old registration), then
    // says so, once.
    assert_eq!(alice.wait_exit(Duration::from_secs(90)).code(), Some(1));
    alice.wait_line("the one line", SOON, |l| {
        l == format!(
            "natchat: the server at 127.0.0.1:{port} has said for 40 s that the ID 'alice' is \
             in use by another client; start the client again with another ID."
        )
    });
}

#[test]
fn a_reaped_client_that_registers_again_still_gets_new_messages() {
    let (server, port) = p2p_server(&["--timeout-secs", "1"]);
    let alice = p2p_client("alice", port);
    let mut bob = p2p_client("bob", port);
    alice.wait_for("bob joined");
    bob.send("@chat alice one");
    alice.wait_for("From bob [one]");
    alice.signal("STOP");
    server.wait_for("alice is disappeared 127.0.0.1:");
    bob.wait_for("alice left");
    alice.signal("CONT");
    alice.wait_for("Registered again with the server");
    bob.wait_for("alice joined");
    bob.send("@chat alice two");
    alice.wait_for("From bob [two]");
    assert_eq!(alice.count("From bob [one]"), 1);
    assert_eq!(alice.count("has not arrived"), 0, "{:?}", alice.output());
}

#[test]
fn without_the_server_a_direct_path_survives_a_slow_acknowledgement() {
    let (server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    let bob = p2p_client("bob", port);
    alice.wait_for("bob joined");
    alice.send("@chat bob before");
    bob.wait_for("From alice [before]");
    drop(server);
    alice.wait_for("Lost the connection");
    // Bob is slow to answer, longer than the one second after which a path with a server
    // would give way to the relay.
    bob.signal("STOP");
    alice.send("@chat bob slow");
    std::thread::sleep(Duration::from_millis(1500));
    bob.signal("CONT");
    bob.wait_for("From alice [slow]");
    alice.send("@chat bob after");
    bob.wait_for("From alice [after]");
    assert_eq!(alice.count("Message to bob not"), 0, "{:?}", alice.output());
}

#[test]
fn on_a_terminal_the_id_prompt_asks_again_and_ctrl_c_ends_on_lines_of_their_own() {
    let (server, port) = p2p_server(&[]);
    let _alice = p2p_client("alice", port);
    let port = port.to_string();
    let term = Tmux::natchat("terminal", &["client", "--port", &port, "--udp-port", "0"]);
    term.wait_for("Enter ID :");
    term.type_line("no spaces");
    term.wait_screen("asking again after an invalid ID", SOON, |rows| {
        rows == [
            "Enter ID : no spaces",
            "Invalid ID 'no spaces': ' ' is not allowed in an ID (use letters, digits, '_', '.', \
             '-').",
            "Enter ID :",
        ]
    });
    term.type_line("alice");
    term.wait_screen("asking again after a taken ID", SOON, |rows| {
        rows[2..]
            == [
                "Enter ID : alice",
                "ID 'alice' is already in use; choose another.",
                "Enter ID :",
            ]
    });
    term.type_line("dora");
    term.wait_for("Commands:");
    server.wait_for("dora 127.0.0.1:");

    term.send_key("C-c");
    assert_eq!(term.wait_exit(SOON), Some(0));
    term.assert_ended_after_ctrl_c("Successfully Terminated", "^C");
    server.wait_for("dora is deregistered");
}

#[test]
fn on_a_terminal_ctrl_c_stops_the_server_on_a_line_of_its_own() {
    let term = Tmux::natchat("server", &["server", "--port", "0", "--bind", "127.0.0.1"]);
    term.wait_for("listening on");
    term.send_key("C-c");
    assert_eq!(term.wait_exit(SOON), Some(0));
    term.assert_ended_after_ctrl_c("Server stopped.", "^C");
}
