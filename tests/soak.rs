//! Soak: both servers under mixed load, clients joining and leaving throughout, in rounds.
//! After each round the server must be back to where it was: the same threads and file
//! descriptors (counted in /proc), and memory that does not grow from round to round.
//! Bounded: a fixed number of rounds of a fixed number of clients, each wait with a deadline.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};
use support::{p2p_server, room_server, Proc};

/// Threads, open file descriptors and resident KiB of a process, from /proc.
fn usage(pid: u32) -> (usize, usize, u64) {
    let count = |dir: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{dir}"))
            .unwrap()
            .count()
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    (count("task"), count("fd"), rss)
}

/// Waits until the server is back to `threads` and `fds`; fails with what it has.
fn settles_back(pid: u32, threads: usize, fds: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (t, f, rss) = usage(pid);
        if t == threads && f == fds {
            return rss;
        }
        assert!(
            Instant::now() < deadline,
            "server kept {t} threads (was {threads}) and {f} fds (was {fds})"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `round` several times; after the first (which warms allocators and thread caches
/// up), every round must end with the same threads and fds, and memory within a margin.
fn soak(server: &Proc, rounds: usize, round: impl Fn(usize)) {
    let pid = server.pid();
    // At rest: two readings a little apart agree.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (threads, fds) = loop {
        let (t, f, _) = usage(pid);
        thread::sleep(Duration::from_millis(200));
        let (t2, f2, _) = usage(pid);
        if (t, f) == (t2, f2) || Instant::now() > deadline {
            break (t2, f2);
        }
    };
    round(0);
    let warm = settles_back(pid, threads, fds);
    for n in 1..rounds {
        round(n);
        let rss = settles_back(pid, threads, fds);
        assert!(
            rss < warm + 8 * 1024,
            "round {n}: RSS {rss} KiB, {warm} KiB after the first round"
        );
    }
}

fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    line
}

#[test]
fn the_registration_server_returns_to_its_resting_state_after_every_round() {
    let (server, port) = p2p_server(&["--register-secs", "2"]);
    soak(&server, 4, |round| {
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                thread::spawn(move || {
                    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
                    for i in 0..25 {
                        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
                        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let mut reader = BufReader::new(tcp.try_clone().unwrap());
                        let mut tcp = tcp;
                        let id = format!("s{round}-{worker}-{i}");
                        match i % 5 {
                            // Never registers: closed by the registration timeout or by us.
                            0 => writeln!(tcp, "hello?").unwrap(),
                            // Garbage, then gone.
                            1 => tcp.write_all(b"\xff\x00REGISTER\n").unwrap(),
                            _ => {
                                writeln!(tcp, "REGISTER {id} {}", udp.local_addr().unwrap())
                                    .unwrap();
                                let welcome = line(&mut reader);
                                let secret = welcome
                                    .trim_end()
                                    .strip_prefix("WELCOME ")
                                    .unwrap()
                                    .to_string();
                                udp.send_to(
                                    format!("HELLO {id} {secret}").as_bytes(),
                                    ("127.0.0.1", port),
                                )
                                .unwrap();
                                while !line(&mut reader).starts_with("LIST_END") {}
                                writeln!(tcp, "RELAY s0-0-2 ACK {id} 1").unwrap();
                                if i % 5 == 2 {
                                    writeln!(tcp, "EXIT").unwrap();
                                    while !line(&mut reader).is_empty() {}
                                }
                                // The others just vanish.
                            }
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    });
}

#[test]
fn the_room_server_returns_to_its_resting_state_after_every_round() {
    let dir = std::env::temp_dir().join(format!("natchat-soak-{}", std::process::id()));
    let dir_arg = dir.to_string_lossy().into_owned();
    let (server, port) = room_server(&["--upload-dir", &dir_arg]);
    soak(&server, 4, |round| {
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                thread::spawn(move || {
                    for i in 0..25 {
                        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
                        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let mut reader = BufReader::new(tcp.try_clone().unwrap());
                        assert!(line(&mut reader).starts_with("Connected to the chat server"));
                        for n in 0..20 {
                            writeln!(tcp, "round {round} worker {worker} user {i} line {n}")
                                .unwrap();
                        }
                        if i % 4 == 0 {
                            // An upload, whole or cut short.
                            let body = vec![b'x'; 10_000];
                            writeln!(tcp, "#upload 10000 soak-{round}-{worker}-{i}.bin").unwrap();
                            let sent = if i % 8 == 0 { &body[..] } else { &body[..5000] };
                            tcp.write_all(sent).unwrap();
                        }
                        // Leave without a word, some while lines are still coming.
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
