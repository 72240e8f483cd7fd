//! A slow server is not a dead one: a client whose server takes longer to answer than the
//! client used to wait (10 s) keeps waiting, says so, and registers.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};
use support::{p2p_client_started, SOON};

/// How long the server below takes to answer `REGISTER`.
const SLOW: Duration = Duration::from_secs(12);

#[test]
fn a_server_that_answers_slowly_is_waited_for() {
    // A server that reads the REGISTER line, then takes its time to answer it, and then
    // lists the client at once (without waiting for its HELLO).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut register = String::new();
        BufReader::new(tcp.try_clone().unwrap())
            .read_line(&mut register)
            .unwrap();
        thread::sleep(SLOW);
        let private = register.split(' ').nth(2).unwrap().trim_end().to_string();
        let answer = format!(
            "WELCOME 0123456789abcdef0123456789abcdef\nREADY 127.0.0.1:40000\n\
             PEER slow 127.0.0.1:40000 {private}\nLIST_END\n"
        );
        tcp.write_all(answer.as_bytes()).unwrap();
        register
    });

    let started = Instant::now();
    let client = p2p_client_started("slow", port, &[]);
    client.wait_line("saying it still waits", SLOW + SOON, |l| {
        l == format!(
            "Still waiting for the server at 127.0.0.1:{port} to answer (slow or lossy link?)..."
        )
    });
    client.wait_line("registered", SLOW + SOON, |l| {
        l == "Registered as slow; public endpoint 127.0.0.1:40000."
    });
    assert!(started.elapsed() >= SLOW);
    assert!(server
        .join()
        .unwrap()
        .starts_with("REGISTER slow 127.0.0.1:"));
    assert_eq!(client.count("Still waiting"), 1, "{:?}", client.output());
    assert!(client.errors().is_empty(), "{:?}", client.errors());
}
