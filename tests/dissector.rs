//! The Wireshark dissector, mininet/natchat.lua, read back against real traffic: a P2P session
//! (an awake client and an Asleep one that wakes, chatting both ways; a hand-driven client
//! that registers in pieces, is refused a punch and chats through the relay) and a chat room
//! session (a message and a small upload) are captured on loopback with `tcpdump`, then
//! decoded by `tshark` with the dissector. Every message type sent must come out decoded with
//! the right fields, and nothing may be flagged malformed.
//!
//! It needs root (to capture), `tcpdump` and `tshark`; without them it says why and passes
//! (`.ci/run` installs both and runs as root). `NATCHAT_DISSECTOR_PCAP=<file>` keeps a copy
//! of the capture, to open in Wireshark.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};
use support::{p2p_client_with, room_client, Proc, TempDir, SOON};

const DISSECTOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mininet/natchat.lua");

/// The bytes of the uploaded file: lines that look like protocol, which must stay data.
const FILE: &[u8] = b"#upload 99 fake.txt\nhello from inside the file\n";

/// Why the test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    // The effective user ID: the second number of /proc/self/status's `Uid:` line.
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("not root, so tcpdump cannot capture".into());
    }
    for tool in ["tcpdump", "tshark"] {
        if tool_path(tool).is_none() {
            return Some(format!("{tool} not found (apt-get install tcpdump tshark)"));
        }
    }
    None
}

/// The tool by name, in PATH or in /usr/sbin (tcpdump's home, not always in PATH).
fn tool_path(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
}

/// The first port of the kernel's ephemeral range (clients' ports come from there).
fn ephemeral_start() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A port free for both TCP and UDP below the ephemeral range, so that it is the lower port
/// of every connection to it: TCP gives a connection to its lower port's dissector first,
/// which must be natchat's, not one that happens to claim a client's random port.
fn free_server_port(seed: u16) -> u16 {
    let end = ephemeral_start().max(20_100);
    let start = end - 20_000;
    (0..2000u32)
        .map(|i| start + ((u32::from(seed) * 7919 + i * 104_729) % 20_000) as u16)
        .find(|&port| {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
                && UdpSocket::bind(("127.0.0.1", port)).is_ok()
                // The server's second port (NAT discovery).
                && UdpSocket::bind(("127.0.0.1", port + 1)).is_ok()
        })
        .expect("a free port below the ephemeral range")
}

/// A free UDP port on loopback (free when asked: the client binds it a moment later).
fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// A line-by-line TCP peer typed by hand, every read bounded.
struct Raw {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(SOON)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Raw { stream, reader }
    }

    /// One write: one TCP segment, on loopback with TCP_NODELAY.
    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        // Keep the next write out of this segment.
        thread::sleep(Duration::from_millis(100));
    }

    /// Reads lines until one satisfies `pred`; returns it.
    fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + SOON;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => panic!("waiting for {what}: {e}; got {seen:?}"),
            }
            let line = line.trim_end().to_string();
            if pred(&line) {
                return line;
            }
            seen.push(line);
        }
        panic!("no line {what}; got {seen:?}");
    }
}

/// `tcpdump` on loopback, for the test's own ports, writing `pcap`; killed when dropped.
fn start_capture(pcap: &Path, filter: &str) -> Proc {
    let mut command = Command::new(tool_path("tcpdump").unwrap());
    // -U: each packet is written at once; -Z root: the file is in a root-owned directory.
    command.args(["-i", "lo", "-n", "-U", "-Z", "root", "-w"]);
    command.arg(pcap).arg(filter);
    let tcpdump = Proc::spawn_command("tcpdump", &mut command);
    tcpdump.wait_for("listening on lo");
    tcpdump
}

/// Stops the capture cleanly (SIGINT: tcpdump closes the file), bounded.
fn stop_capture(mut tcpdump: Proc) {
    // Let the last packets reach tcpdump.
    thread::sleep(Duration::from_millis(500));
    tcpdump.signal("INT");
    tcpdump.wait_exit(SOON);
}

/// The P2P session: carol starts Asleep and wakes, alice and carol chat both ways, dave
/// registers by hand in two segments, is refused a punch and chats through the relay; then
/// everyone leaves.
fn p2p_session(server: &Proc, port: u16, udp: [u16; 2], dave_udp: &UdpSocket) {
    let (alice_udp, carol_udp) = (udp[0].to_string(), udp[1].to_string());
    let mut alice = p2p_client_with("alice", port, &["--udp-port", &alice_udp]);
    let mut carol = p2p_client_with("carol", port, &["--udp-port", &carol_udp, "--asleep"]);
    alice.wait_for("carol joined (Asleep)");
    // NAT discovery: alice's, done before carol wakes (carol's, after).
    alice.wait_for("No NAT between us and the server");
    carol.send("@awake");
    server.wait_for("carol Awake 127.0.0.1:");
    alice.wait_for("carol is awake (");

    alice.send("@chat carol hello carol, from alice");
    carol.wait_for("From alice [hello carol, from alice]");
    carol.send("@chat alice good morning alice");
    alice.wait_for("From carol [good morning alice]");
    // Keep-alives go every second.
    thread::sleep(Duration::from_millis(1500));

    let mut dave = Raw::connect(port);
    let dave_port = dave_udp.local_addr().unwrap().port();
    // A line cut in two segments, which the dissector must put back together.
    dave.write(b"REGISTER dave 127.0.");
    dave.write(format!("0.1:{dave_port}\n").as_bytes());
    let welcome = dave.wait_line("WELCOME", |l| l.starts_with("WELCOME "));
    let nonce = welcome.trim_start_matches("WELCOME ");
    dave_udp
        .send_to(
            format!("HELLO dave {nonce}").as_bytes(),
            ("127.0.0.1", port),
        )
        .unwrap();
    dave.wait_line("LIST_END", |l| l == "LIST_END");
    alice.wait_for("dave joined");
    // Two lines in one segment.
    let stamp = "00112233445566778899aabbccddeeff";
    dave.write(
        format!(
            "PUNCH nobody\nRELAY alice CHAT dave 00000000000000da 1 1 {stamp} 0000000000000000 hello through the relay\n"
        )
        .as_bytes(),
    );
    dave.wait_line("ERROR", |l| l.starts_with("ERROR "));
    alice.wait_for("From dave [hello through the relay]");
    dave.wait_line("the relayed ACK", |l| {
        l == format!("RELAYED ACK alice 1 {stamp}")
    });
    dave.write(b"EXIT\n");
    server.wait_for("dave is deregistered");

    // erin's UDP is blocked, by her own word: listed as relayed.
    let mut erin = Raw::connect(port);
    erin.write(b"REGISTER erin 127.0.0.1:9\n");
    erin.wait_line("WELCOME", |l| l.starts_with("WELCOME "));
    erin.write(b"UDP_BLOCKED\n");
    erin.wait_line("READY relayed", |l| l == "READY relayed");
    erin.wait_line("LIST_END", |l| l == "LIST_END");
    alice.wait_for("erin joined (relayed");
    erin.write(b"EXIT\n");
    server.wait_for("erin is deregistered (relayed)");

    carol.send("@exit");
    assert!(carol.wait_exit(SOON).success());
    alice.wait_for("carol left (deregistered)");
    alice.send("@exit");
    assert!(alice.wait_exit(SOON).success());
}

/// The room session: a message, then an upload sent as a header and, in a second segment,
/// the file, then a message after it.
fn room_session(port: u16) {
    let listener = room_client("listener", port);
    let mut user = Raw::connect(port);
    user.wait_line("the greeting", |l| {
        l.starts_with("Connected to the chat server")
    });
    user.write(b"hello room\n");
    user.wait_line("the echo", |l| l == "[You] hello room");
    user.write(format!("#upload {} notes.txt\n", FILE.len()).as_bytes());
    user.write(FILE);
    user.wait_line("the upload's answer", |l| {
        l == "File notes.txt has uploaded!"
    });
    user.write(b"after the upload\n");
    user.wait_line("the echo", |l| l == "[You] after the upload");
    listener.wait_for(&format!(
        "has uploaded a file notes.txt ({} bytes)",
        FILE.len()
    ));
    listener.wait_for("] after the upload");
}

/// tshark's view of the capture: one row per packet with natchat in it, each field's values
/// (several messages in one packet: several values).
struct Decoded {
    rows: Vec<Row>,
}

const FIELDS: &[&str] = &[
    "frame.number",
    "_ws.col.Protocol",
    "natchat.type",
    "natchat.id",
    "natchat.peer",
    "natchat.addr",
    "natchat.asleep",
    "natchat.relayed",
    "natchat.seq",
    "natchat.nonce",
    "natchat.text",
    "natchat.reason",
    "natchat.nat",
    "natchat.port",
    "natchat_room.kind",
    "natchat_room.text",
    "natchat_room.user",
    "natchat_room.upload.name",
    "natchat_room.upload.size",
    "natchat_room.upload.data",
    "_ws.col.Info",
];

struct Row(Vec<Vec<String>>);

impl Row {
    fn get(&self, field: &str) -> &[String] {
        let i = FIELDS.iter().position(|f| *f == field).unwrap();
        &self.0[i]
    }

    fn has(&self, field: &str, value: &str) -> bool {
        self.get(field).iter().any(|v| v == value)
    }

    fn info(&self) -> String {
        self.get("_ws.col.Info").join("|")
    }
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

fn tshark(pcap: &Path, ports: (u16, u16), extra: &[&str]) -> String {
    let output = Command::new(tool_path("tshark").unwrap())
        .arg("-r")
        .arg(pcap)
        .args(["-X", &format!("lua_script:{DISSECTOR}")])
        .args(["-o", &format!("natchat.tcp_port:{}", ports.0)])
        .args(["-o", &format!("natchat_room.tcp_port:{}", ports.1)])
        // natchat's heuristic wins over any dissector that claims a client's random UDP port.
        .args(["-o", "udp.try_heuristic_first:TRUE"])
        .args(extra)
        .output()
        .expect("run tshark");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && !stderr.contains("Lua") && !stderr.contains("rror"),
        "tshark failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    stdout
}

fn decode(pcap: &Path, ports: (u16, u16)) -> Decoded {
    let mut args = vec!["-Y", "natchat || natchat_room", "-T", "fields"];
    args.extend([
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=|",
    ]);
    for field in FIELDS {
        args.extend(["-e", field]);
    }
    let rows = tshark(pcap, ports, &args)
        .lines()
        .map(|line| {
            let values = line.split('\t').map(|v| match v {
                "" => Vec::new(),
                v => v.split('|').map(str::to_string).collect(),
            });
            Row(values.collect())
        })
        .collect();
    Decoded { rows }
}

impl Decoded {
    fn find(&self, what: &str, pred: impl Fn(&Row) -> bool) -> &Row {
        self.rows
            .iter()
            .find(|row| pred(row))
            .unwrap_or_else(|| panic!("no packet decoded as {what}; decoded:\n{:#?}", self.rows))
    }
}

#[test]
fn the_dissector_decodes_every_message_of_a_real_session() {
    if let Some(why) = missing_tools() {
        println!("dissector test skipped: {why}");
        return;
    }
    let dir = TempDir::new("dissector");
    let uploads = dir.path("uploads");
    fs::create_dir(&uploads).unwrap();
    let pcap = dir.path("natchat.pcap");

    let seed = std::process::id() as u16;
    let port = free_server_port(seed);
    let server = Proc::spawn(
        "server",
        &["server", "--port", &port.to_string(), "--bind", "127.0.0.1"],
    );
    server.wait_for("listening on");
    let room_port = free_server_port(seed.wrapping_add(1));
    let room = Proc::spawn(
        "room-server",
        &[
            "room-server",
            "127.0.0.1",
            &room_port.to_string(),
            "--upload-dir",
            uploads.to_str().unwrap(),
        ],
    );
    room.wait_for("Chat Server started on port");
    let udp = [free_udp_port(), free_udp_port()];
    let dave_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dave_port = dave_udp.local_addr().unwrap().port();
    let filter = format!(
        "port {port} or tcp port {room_port} or udp port {} or udp port {} or udp port {dave_port}",
        udp[0], udp[1]
    );
    let tcpdump = start_capture(&pcap, &filter);
    p2p_session(&server, port, udp, &dave_udp);
    room_session(room_port);
    room.wait_for("has uploaded a file notes.txt");
    stop_capture(tcpdump);
    if let Some(keep) = std::env::var_os("NATCHAT_DISSECTOR_PCAP") {
        fs::copy(&pcap, keep).unwrap();
    }

    let decoded = decode(&pcap, (port, room_port));
    let types: BTreeSet<&str> = decoded
        .rows
        .iter()
        .flat_map(|row| row.get("natchat.type"))
        .map(String::as_str)
        .collect();
    for sent in [
        "REGISTER",
        "WELCOME",
        "HELLO",
        "READY",
        "PEER",
        "LIST_END",
        "JOIN",
        "AWAKE",
        "ALIVE",
        "PUNCH",
        "PROBE",
        "PROBE_ACK",
        "CHAT",
        "ACK",
        "RELAY",
        "RELAYED",
        "UDP_BLOCKED",
        "ERROR",
        "EXIT",
        "LEAVE",
        "NAT_TEST",
        "NAT_PROBE",
        "NAT_SEEN",
        "NAT_OPEN",
        "NAT",
    ] {
        assert!(types.contains(sent), "{sent} never decoded; saw {types:?}");
    }

    // Registration: carol's Asleep, dave's cut in two segments and put back together.
    decoded.find("carol's Asleep REGISTER", |row| {
        row.has("natchat.type", "REGISTER")
            && row.has("natchat.id", "carol")
            && row.has("natchat.addr", &format!("127.0.0.1:{}", udp[1]))
            && row.has("natchat.asleep", "1")
    });
    decoded.find("dave's REGISTER", |row| {
        row.get("natchat.type") == ["REGISTER"]
            && row.has("natchat.id", "dave")
            && row.has("natchat.addr", &format!("127.0.0.1:{dave_port}"))
            && row.info() == format!("REGISTER dave 127.0.0.1:{dave_port}")
    });
    decoded.find("READY asleep", |row| {
        row.has("natchat.type", "READY") && row.has("natchat.asleep", "1")
    });
    decoded.find("erin's UDP_BLOCKED", |row| {
        row.get("natchat.type") == ["UDP_BLOCKED"] && row.info() == "UDP_BLOCKED"
    });
    decoded.find("READY relayed", |row| {
        row.has("natchat.type", "READY") && row.has("natchat.relayed", "1")
    });
    decoded.find("erin joined, relayed", |row| {
        row.has("natchat.type", "JOIN")
            && row.has("natchat.id", "erin")
            && row.has("natchat.relayed", "1")
    });
    decoded.find("carol's Awake request (UDP)", |row| {
        row.get("natchat.type") == ["AWAKE"]
            && row.get("natchat.id") == ["carol"]
            && row.get("natchat.nonce").len() == 1
    });
    decoded.find("carol is awake (TCP)", |row| {
        row.has("natchat.type", "AWAKE")
            && row.has("natchat.id", "carol")
            && row.has("natchat.addr", &format!("127.0.0.1:{}", udp[1]))
    });
    decoded.find("NAT_SEEN of alice's probe to the second port", |row| {
        row.has("natchat.type", "NAT_SEEN")
            && row.has("natchat.port", &(port + 1).to_string())
            && row.has("natchat.addr", &format!("127.0.0.1:{}", udp[0]))
    });
    decoded.find("alice's NAT kind, passed on", |row| {
        row.has("natchat.type", "NAT")
            && row.has("natchat.id", "alice")
            && row.has("natchat.nat", "none")
    });
    decoded.find(
        "NAT_OPEN, from a port the OS picked for the server",
        |row| row.get("natchat.type") == ["NAT_OPEN"] && row.get("natchat.nonce").len() == 1,
    );
    decoded.find("a keep-alive", |row| {
        row.get("natchat.type") == ["ALIVE"] && !row.get("natchat.id").is_empty()
    });

    // The chats, both ways, and their acknowledgements.
    for (from, to, text) in [
        ("alice", "carol", "hello carol, from alice"),
        ("carol", "alice", "good morning alice"),
    ] {
        decoded.find(&format!("{from}'s CHAT"), |row| {
            row.get("_ws.col.Protocol") == ["NATCHAT"]
                && row.get("natchat.type") == ["CHAT"]
                && row.get("natchat.id") == [from]
                && row.get("natchat.seq") == ["1"]
                && row.get("natchat.text") == [text]
                && row.info() == format!("CHAT {from}→? seq 1 \"{text}\"")
        });
        decoded.find(&format!("{to}'s ACK"), |row| {
            row.get("natchat.type") == ["ACK"]
                && row.get("natchat.id") == [to]
                && row.get("natchat.seq") == ["1"]
        });
    }

    // Two lines in one segment; a datagram inside RELAY and RELAYED.
    decoded.find("PUNCH and RELAY in one segment", |row| {
        row.get("natchat.type") == ["PUNCH", "RELAY", "CHAT"]
            && row.get("natchat.peer") == ["nobody", "alice"]
            && row.get("natchat.id") == ["dave"]
            && row.get("natchat.text") == ["hello through the relay"]
            && row.info()
                == "PUNCH nobody | RELAY CHAT dave→alice seq 1 \"hello through the relay\""
    });
    decoded.find("the refused punch", |row| {
        row.has("natchat.type", "ERROR")
            && row.has("natchat.text", "cannot punch to 'nobody': not online")
    });
    decoded.find("the relayed CHAT", |row| {
        row.get("natchat.type") == ["RELAYED", "CHAT"]
            && row.get("natchat.text") == ["hello through the relay"]
    });
    decoded.find("alice's ACK through the relay", |row| {
        row.get("natchat.type") == ["RELAY", "ACK"]
            && row.get("natchat.peer") == ["dave"]
            && row.get("natchat.id") == ["alice"]
    });
    decoded.find("carol's LEAVE", |row| {
        row.has("natchat.type", "LEAVE")
            && row.has("natchat.id", "carol")
            && row.has("natchat.reason", "deregistered")
    });

    // The room: a message, the upload (header and file in two segments, the file's lines
    // left as data), and what everyone is told.
    decoded.find("the room message", |row| {
        row.get("_ws.col.Protocol") == ["NATCHAT-ROOM"]
            && row.get("natchat_room.kind") == ["message"]
            && row.get("natchat_room.text") == ["hello room"]
    });
    let hex: String = FILE.iter().map(|b| format!("{b:02x}")).collect();
    decoded.find("the upload", |row| {
        row.get("natchat_room.kind") == ["upload"]
            && row.get("natchat_room.upload.name") == ["notes.txt"]
            && row.get("natchat_room.upload.size") == [FILE.len().to_string()]
            && row.get("natchat_room.upload.data") == [hex.as_str()]
    });
    decoded.find("the message after the upload", |row| {
        row.get("natchat_room.kind") == ["message"]
            && row.get("natchat_room.text") == ["after the upload"]
    });
    decoded.find("the upload announced", |row| {
        row.has("natchat_room.kind", "uploaded") && row.has("natchat_room.upload.name", "notes.txt")
    });
    decoded.find("the echo", |row| {
        row.has("natchat_room.kind", "echo") && row.has("natchat_room.text", "hello room")
    });
    assert!(
        !decoded
            .rows
            .iter()
            .any(|row| row.has("natchat_room.upload.name", "fake.txt")),
        "the file's bytes were read as lines"
    );

    // Nothing malformed, no dissector error (a Lua error is an expert item of severity
    // Error, 0x00800000).
    let flagged = tshark(
        &pcap,
        (port, room_port),
        &[
            "-Y",
            "natchat.malformed || natchat_room.malformed || _ws.malformed || _ws.expert.severity >= 0x00800000",
        ],
    );
    assert!(flagged.trim().is_empty(), "flagged packets:\n{flagged}");
}
