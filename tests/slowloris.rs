//! Slowloris against the registration server: a connection that trickles a byte every 300 ms,
//! never a newline, must be closed when the registration time runs out, counted from
//! accept, and its slot under `--max-clients` must be freed for a real client.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};
use support::{p2p_client, p2p_server, SOON};

/// What became of a trickling connection.
#[derive(Debug)]
struct Trickled {
    /// How long after connecting the server closed it; `None`: it never did.
    closed_after: Option<Duration>,
    /// Everything the server sent.
    said: String,
}

/// Connects to the registration server on `port` and sends it one byte every 300 ms, at
/// most 40 (12 s), never a newline, until the server closes the connection.
fn trickle(port: u16) -> Trickled {
    let start = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut said = Vec::new();
    let mut buf = [0u8; 512];
    // The start of a registration, cycled: never a whole line.
    for &byte in b"REGISTER slow 127.0.0.1:9".iter().cycle().take(40) {
        if stream.write_all(&[byte]).is_err() {
            // Written after the server closed: reset.
            return Trickled {
                closed_after: Some(start.elapsed()),
                said: String::from_utf8_lossy(&said).into_owned(),
            };
        }
        // Waits 300 ms for anything from the server: lines, or the end of the stream.
        let wait_until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < wait_until {
            match stream.read(&mut buf) {
                Ok(0) => {
                    return Trickled {
                        closed_after: Some(start.elapsed()),
                        said: String::from_utf8_lossy(&said).into_owned(),
                    }
                }
                Ok(n) => said.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => {
                    return Trickled {
                        closed_after: Some(start.elapsed()),
                        said: String::from_utf8_lossy(&said).into_owned(),
                    }
                }
            }
        }
    }
    Trickled {
        closed_after: None,
        said: String::from_utf8_lossy(&said).into_owned(),
    }
}

/// Closed after the 2 s registration time, not before, and by 8 s (a loaded machine).
fn assert_closed_at_the_deadline(trickled: &Trickled) {
    let Some(after) = trickled.closed_after else {
        panic!("a trickling connection was still open after 40 bytes in 12 s: {trickled:?}");
    };
    assert!(
        after >= Duration::from_millis(1900) && after <= Duration::from_secs(8),
        "closed after {after:?}, not about 2 s: {trickled:?}"
    );
    assert!(
        trickled.said.is_empty()
            || trickled
                .said
                .contains("ERROR no REGISTER within the registration time; closing"),
        "{trickled:?}"
    );
}

#[test]
fn a_connection_trickling_bytes_is_closed_at_the_registration_deadline() {
    let (server, port) = p2p_server(&["--register-secs", "2"]);
    let trickled = trickle(port);
    assert_closed_at_the_deadline(&trickled);
    assert!(server.output().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn tricklers_give_their_slots_back_to_real_clients() {
    let (server, port) = p2p_server(&["--register-secs", "2", "--max-clients", "2"]);
    let tricklers: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || trickle(port)))
        .collect();
    // While they trickle, they hold both slots: a newcomer is turned away. (A second for
    // the server to accept them, well inside their two.)
    thread::sleep(Duration::from_millis(1000));
    let mut newcomer = TcpStream::connect(("127.0.0.1", port)).unwrap();
    newcomer.set_read_timeout(Some(SOON)).unwrap();
    let mut refusal = String::new();
    let _ = newcomer.read_to_string(&mut refusal);
    assert_eq!(refusal, "ERROR server full (2 clients); try again later\n");
    for trickler in tricklers {
        assert_closed_at_the_deadline(&trickler.join().unwrap());
    }
    // Once they are closed, a real client takes a slot.
    let _real = p2p_client("real", port);
    server.wait_for("real 127.0.0.1:");
}
