//! The course's rubric (seed 001): a client registers over TCP as Asleep, wakes with an
//! Awake request over UDP, and everyone is told. Each test is one item of the rubric, driven
//! through the real `natchat server` and `natchat client` binaries on loopback, asserting the
//! exact lines a grader reads.

mod support;

use std::thread;
use std::time::Duration;
use support::{asleep_client, p2p_client, p2p_server, Proc, SOON};

/// The `<ip>:<port>` at the end of the server's `<id> Awake <ip>:<port>` line.
fn awake_endpoint(server: &Proc, id: &str) -> String {
    let line = server.wait_for(&format!("{id} Awake "));
    line.rsplit(' ').next().unwrap().to_string()
}

#[test]
fn an_asleep_client_is_registered_and_listed_as_asleep_by_everyone() {
    let (server, port) = p2p_server(&[]);
    let alice = p2p_client("alice", port);
    let mut carol = asleep_client("carol", port);
    server.wait_line("the server's Asleep line", SOON, |l| l == "carol Asleep");
    carol.wait_for(
        "Registered as carol and Asleep: the server knows our ID, not yet our UDP endpoint",
    );
    carol.wait_line("carol's own entry", SOON, |l| l == "carol Asleep  (you)");
    alice.wait_line("alice told of carol", SOON, |l| {
        l == "carol joined (Asleep)"
    });

    // A newcomer's list shows carol Asleep, with no endpoint.
    let mut bob = p2p_client("bob", port);
    bob.wait_line("carol in bob's list", SOON, |l| l == "carol Asleep");
    bob.send("@show_list");
    bob.wait_count("Online (3):", 2, SOON);
    bob.wait_count("carol Asleep", 2, SOON);
    // And carol's list shows the others awake.
    carol.send("@show_list");
    carol.wait_line("bob in carol's list", SOON, |l| {
        l.starts_with("bob 127.0.0.1:") && l.contains(" Awake  private=127.0.0.1:")
    });
    carol.send("@exit");
    assert!(carol.wait_exit(SOON).success());
    server.wait_line("carol's leave", SOON, |l| {
        l == "carol is deregistered (Asleep)"
    });
    bob.wait_for("carol left (deregistered)");
}

#[test]
fn awake_is_printed_by_the_server_and_told_to_every_client() {
    let (server, port) = p2p_server(&[]);
    let alice = p2p_client("alice", port);
    let mut carol = asleep_client("carol", port);
    alice.wait_for("carol joined (Asleep)");

    carol.send("@awake");
    carol.wait_for("Sent the Awake request to the server.");
    let endpoint = awake_endpoint(&server, "carol");
    assert!(endpoint.starts_with("127.0.0.1:"), "{endpoint}");
    alice.wait_line("alice told carol woke", SOON, |l| {
        l == format!("carol is awake ({endpoint})")
    });
    carol.wait_line("carol's confirmation", SOON, |l| {
        l == format!("Awake: the server sees our UDP endpoint as {endpoint}.")
    });
    let mut alice = alice;
    alice.send("@show_list");
    alice.wait_line("carol awake in alice's list", SOON, |l| {
        l.starts_with(&format!("carol {endpoint} Awake  private=127.0.0.1:"))
    });

    // An awake client's @awake is an Awake request too: printed, and told to everyone.
    alice.send("@awake");
    let alice_endpoint = awake_endpoint(&server, "alice");
    carol.wait_for(&format!("alice is awake ({alice_endpoint})"));
    alice.wait_for(&format!(
        "Awake: the server sees our UDP endpoint as {alice_endpoint}."
    ));
    // Seed 000's line for a client that wakes at once is unchanged.
    server.wait_line("alice's registration line", SOON, |l| {
        l == format!("alice {alice_endpoint}")
    });
    assert_eq!(server.count("is awake"), 0, "the old server line is gone");

    // Awake, carol and alice chat both ways.
    carol.send("@chat alice hello, I am up");
    alice.wait_for("From carol [hello, I am up]");
    alice.send("@chat carol good morning");
    carol.wait_for("From alice [good morning]");
}

#[test]
fn an_asleep_clients_chat_sends_the_awake_request_first_then_the_chat() {
    let (server, port) = p2p_server(&[]);
    let alice = p2p_client("alice", port);
    let mut carol = asleep_client("carol", port);
    alice.wait_for("carol joined (Asleep)");

    carol.send("@chat alice first words");
    carol.wait_for("Sent the Awake request to the server.");
    carol.wait_for("Waking up first: the message follows once the server has answered.");
    alice.wait_for("From carol [first words]");
    awake_endpoint(&server, "carol");
    // In that order, as alice saw them: carol woke, then carol spoke.
    let seen = alice.output();
    let woke = seen.iter().position(|l| l.starts_with("carol is awake ("));
    let spoke = seen.iter().position(|l| l == "From carol [first words]");
    assert!(woke.is_some() && woke < spoke, "{seen:?}");
    assert_eq!(
        server.count("carol Awake"),
        1,
        "one request, answered at once"
    );
}

#[test]
fn a_chat_to_an_asleep_client_is_refused_at_once_and_never_arrives() {
    let (_server, port) = p2p_server(&[]);
    let mut alice = p2p_client("alice", port);
    let mut carol = asleep_client("carol", port);
    alice.wait_for("carol joined (Asleep)");

    alice.send("@chat carol are you there?");
    alice.wait_line("the refusal", SOON, |l| {
        l == "carol is Asleep: it has no UDP endpoint yet, so it cannot receive chats. \
              Message not sent; you will see 'carol is awake' when it can."
    });
    // Nothing waits to be reported later: no failure line, ever.
    carol.send("@awake");
    alice.wait_for("carol is awake (");
    alice.send("@chat carol now you are");
    carol.wait_for("From alice [now you are]");
    assert_eq!(carol.count("are you there?"), 0);
    alice.send("@exit");
    assert!(alice.wait_exit(SOON).success());
    assert_eq!(
        alice.count("Message to carol not"),
        0,
        "{:?}",
        alice.output()
    );
}

#[test]
fn an_asleep_client_stays_registered_however_long_it_sleeps() {
    // Silence is reaped after 5 s (keep-alives go every second, so a loaded machine has
    // slack); an Asleep client has no UDP to keep alive.
    let (server, port) = p2p_server(&["--timeout-secs", "5"]);
    let alice = p2p_client("alice", port);
    let mut carol = asleep_client("carol", port);
    alice.wait_for("carol joined (Asleep)");
    thread::sleep(Duration::from_secs(7));
    assert_eq!(server.count("carol is"), 0, "{:?}", server.output());
    assert_eq!(server.count("carol never announced"), 0);
    assert_eq!(alice.count("carol left"), 0);

    // Awake, it keeps alive like everyone else, and is not reaped either.
    carol.send("@awake");
    alice.wait_for("carol is awake (");
    thread::sleep(Duration::from_secs(7));
    assert_eq!(alice.count("carol left"), 0, "{:?}", alice.output());
    carol.send("@chat alice still here");
    alice.wait_for("From carol [still here]");
}

/// Plays a registration server by hand that lists `bob` and never answers an Awake request
/// (as when UDP is blocked on the way): returns its port and the thread serving one client.
fn server_that_never_hears_awake() -> (u16, thread::JoinHandle<()>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let serving = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut register = String::new();
        BufReader::new(&stream).read_line(&mut register).unwrap();
        assert!(register.ends_with(" asleep\n"), "{register:?}");
        let list = "WELCOME 0123456789abcdef0123456789abcdef\nREADY asleep\n\
                    PEER bob 127.0.0.1:9 127.0.0.1:9\nLIST_END\n";
        stream.write_all(list.as_bytes()).unwrap();
        // Hold the connection until the client hangs up.
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    });
    (port, serving)
}

#[test]
fn chats_held_for_an_awake_request_are_reported_when_no_answer_comes() {
    let (port, serving) = server_that_never_hears_awake();
    let mut carol = asleep_client("carol", port);
    carol.send("@chat bob are you there?");
    carol.wait_line("the give-up", SOON * 2, |l| {
        l == "The server did not answer our Awake request within 10 s; is UDP blocked on the \
              way? We are still Asleep."
    });
    carol.wait_line("the held chat", SOON, |l| {
        l == "Message to bob was not sent (no answer to our Awake request): [are you there?]"
    });
    carol.close_stdin();
    assert!(carol.wait_exit(SOON).success());
    serving.join().unwrap();
}

#[test]
fn chats_held_for_an_awake_request_are_reported_when_the_client_ends_first() {
    let (port, serving) = server_that_never_hears_awake();
    let mut carol = asleep_client("carol", port);
    carol.send("@chat bob one");
    carol.send("@chat bob two");
    carol.send("@exit");
    assert!(carol.wait_exit(SOON).success());
    for text in ["one", "two"] {
        carol.wait_line("a held chat", SOON, |l| {
            l == format!(
                "Message to bob was not sent (the client ended before the server answered our \
                 Awake request): [{text}]"
            )
        });
    }
    carol.wait_for("Successfully Terminated");
    serving.join().unwrap();
}
