//! A hand-driven protocol client: a TCP connection to the registration server and a UDP
//! socket, each line and datagram written by the test. It plays the attacker, the broken
//! peer or the client the binary would not be, where a real `natchat client` cannot.

use super::SOON;
use natchat::nonce::Key;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A hand-driven client of the registration server at `server`.
pub struct Raw {
    pub tcp: TcpStream,
    pub reader: BufReader<TcpStream>,
    pub udp: UdpSocket,
    pub server: SocketAddr,
}

impl Raw {
    /// Connects to the server on loopback port `port`; registers nothing yet.
    pub fn connect(port: u16) -> Raw {
        let server: SocketAddr = ([127, 0, 0, 1], port).into();
        let tcp = TcpStream::connect(server).unwrap();
        tcp.set_read_timeout(Some(SOON)).unwrap();
        let reader = BufReader::new(tcp.try_clone().unwrap());
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Raw {
            tcp,
            reader,
            udp,
            server,
        }
    }

    /// Connects, registers as `id` and proves the UDP socket's address with the nonce of
    /// `WELCOME`; the list has been read.
    pub fn register(port: u16, id: &str) -> Raw {
        let mut raw = Raw::connect(port);
        let nonce = raw.welcome(id);
        raw.hello(id, &nonce);
        raw.expect("LIST_END");
        raw
    }

    /// Sends `REGISTER <id> <our UDP address>`; returns the nonce of `WELCOME`.
    pub fn welcome(&mut self, id: &str) -> String {
        let udp = self.udp.local_addr().unwrap();
        self.send(&format!("REGISTER {id} {udp}"));
        self.expect("WELCOME ")["WELCOME ".len()..].to_string()
    }

    /// Announces our UDP address with `nonce`: `HELLO <id> <nonce>`.
    pub fn hello(&self, id: &str, nonce: &str) {
        self.udp_to(&format!("HELLO {id} {nonce}"), self.server);
    }

    /// Sends one line (the newline is added), in one write.
    pub fn send(&mut self, line: &str) {
        self.tcp.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// The next line from the server, without its newline; empty at the end of the stream.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("a line from the server");
        line.trim_end().to_string()
    }

    /// Reads lines until one starts with `prefix` (others, such as a `JOIN`, may come first).
    pub fn expect(&mut self, prefix: &str) -> String {
        for _ in 0..10_000 {
            let line = self.line();
            assert!(
                !line.is_empty() || prefix.is_empty(),
                "connection closed waiting for {prefix:?}"
            );
            if line.starts_with(prefix) {
                return line;
            }
        }
        panic!("no {prefix:?}");
    }

    /// Every line up to one starting with `prefix`, that one left out.
    pub fn lines_until(&mut self, prefix: &str) -> Vec<String> {
        let mut lines = Vec::new();
        for _ in 0..10_000 {
            let line = self.line();
            assert!(!line.is_empty(), "connection closed waiting for {prefix:?}");
            if line.starts_with(prefix) {
                return lines;
            }
            lines.push(line);
        }
        panic!("no {prefix:?}");
    }

    /// Asks the server to pair us with `peer`: the key we then share.
    pub fn key_for(&mut self, peer: &str) -> Key {
        self.send(&format!("PUNCH {peer}"));
        let line = self.expect(&format!("PUNCH {peer} "));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Sends `text` as one datagram to `to`.
    pub fn udp_to(&self, text: &str, to: SocketAddr) {
        self.udp.send_to(text.as_bytes(), to).unwrap();
    }

    /// The datagrams received within `window`.
    pub fn datagrams(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.udp.recv_from(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).to_string());
            }
        }
        got
    }
}
