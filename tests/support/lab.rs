//! Two clients in homes of their own (see [`nat`](super::nat)), and what the tests about
//! their paths ask of them: shared by `tests/paths.rs` and `tests/ladder.rs`.
#![allow(dead_code)] // each test file uses a different part of it

use super::nat::{Counts, Home, Net};
use super::{p2p_client_with, p2p_server, Proc, SOON};
use std::time::{Duration, Instant};

/// Long enough for anything the clients do by themselves (a relay fallback, a move, a late
/// acknowledgement) on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// alice and bob, each in a home of its own, registered with one server.
pub struct Lab {
    // Dropped in this order: the clients, the server, then the NATs.
    pub alice: Proc,
    pub bob: Proc,
    pub server: Proc,
    pub a: Home,
    pub b: Home,
    pub net: Net,
}

impl Lab {
    /// The server is given `--timeout-secs 30`: a client whose keep-alives are lost for a
    /// while is not dropped in the middle of a test about something else.
    pub fn new() -> Lab {
        Lab::with_timeout("30")
    }

    /// The server drops a client silent for `secs`.
    pub fn with_timeout(secs: &str) -> Lab {
        let (server, port) = p2p_server(&["--timeout-secs", secs]);
        let net = Net::new(port);
        let (a, b) = (net.home("alice"), net.home("bob"));
        let alice = p2p_client_with("alice", a.port, &[]);
        let bob = p2p_client_with("bob", b.port, &[]);
        alice.wait_for("bob joined");
        Lab {
            alice,
            bob,
            server,
            a,
            b,
            net,
        }
    }

    /// Chats both ways until each side shows the other on a direct path.
    pub fn go_direct(&mut self) {
        self.alice.send("@chat bob hello bob");
        self.bob.wait_for("From alice [hello bob]");
        self.bob.send("@chat alice hello alice");
        self.alice.wait_for("From bob [hello alice]");
        wait_path(&mut self.alice, "bob", "direct");
        wait_path(&mut self.bob, "alice", "direct");
    }
}

/// Asks `client` for its list until `peer`'s path reads `label`; returns that line
/// (`<peer> <public> Awake  private=<private>  path=<label>`).
pub fn wait_path(client: &mut Proc, peer: &str, label: &str) -> String {
    wait_path_within(client, peer, label, PATIENCE)
}

/// [`wait_path`], for at most `patience`.
pub fn wait_path_within(client: &mut Proc, peer: &str, label: &str, patience: Duration) -> String {
    let deadline = Instant::now() + patience;
    let is_entry = |l: &String| l.starts_with(&format!("{peer} ")) && l.contains("  path=");
    loop {
        let seen = client.output().len();
        client.send("@show_list");
        let listed = Instant::now() + SOON;
        let line = loop {
            let output = client.output();
            if let Some(line) = output
                .get(seen..)
                .and_then(|new| new.iter().find(|l| is_entry(l)))
            {
                break line.clone();
            }
            assert!(
                Instant::now() < listed,
                "{}: @show_list did not list {peer}; output:\n{}",
                client.name,
                output.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The path, without the NAT column that may follow it.
        let path = line.rsplit("path=").next().unwrap_or("");
        if path.split("  ").next() == Some(label) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "{}: {peer}'s path never became {label}; output:\n{}",
            client.name,
            client.output().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Ends `client` with `@exit`, and waits until `peer` has heard: after that `peer` takes
/// nothing more from it (a late copy from `client` finds no such peer).
pub fn exit(client: &mut Proc, peer: &Proc) {
    client.send("@exit");
    assert!(client.wait_exit(SOON).success(), "{} exits", client.name);
    peer.wait_for(&format!("{} left (deregistered)", client.name));
}

/// Where each of `texts` from `from` was shown by `to`: exactly once each, in this order.
pub fn assert_shown_once_in_order(to: &Proc, from: &str, texts: &[String]) {
    let output = to.output();
    let mut last = None;
    for text in texts {
        let line = format!("From {from} [{text}]");
        let at: Vec<usize> = (0..output.len()).filter(|&i| output[i] == line).collect();
        assert_eq!(
            at.len(),
            1,
            "{}: {line:?} shown {} times",
            to.name,
            at.len()
        );
        assert!(
            last < Some(at[0]),
            "{}: {line:?} shown out of order",
            to.name
        );
        last = Some(at[0]);
    }
    let late = output.iter().filter(|l| l.contains("(late:")).count();
    let gaps = output.iter().filter(|l| l.contains("not arrived")).count();
    assert_eq!((late, gaps), (0, 0), "{}: nothing late, no gaps", to.name);
}

/// Polls `home`'s counts until `ready` holds, for at most `PATIENCE`.
pub fn wait_counts(home: &Home, net: &Net, what: &str, ready: impl Fn(&Counts) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ready(&home.counts()) {
        assert!(Instant::now() < deadline, "never {what}: {}", net.report());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` texts: `<what> 01`, `<what> 02`, ...
pub fn numbered(what: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{what} {i:02}")).collect()
}
