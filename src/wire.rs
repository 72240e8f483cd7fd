//! Every message of the P2P protocol, with its encoding and its parser side by side.
//!
//! The protocol is line-based text, one message per line (TCP) or per datagram (UDP), the
//! first word naming the message, so that a person can talk to the server with `nc` and read
//! a packet capture. `Display` encodes; `FromStr` parses, and refuses anything malformed: a
//! message that parses is well-formed down to its IDs, numbers and addresses.
//! docs/PROTOCOL.md describes the same messages for people.
//!
//! | channel                 | type          |
//! |-------------------------|---------------|
//! | client → server, TCP    | [`Request`]   |
//! | server → client, TCP    | [`Event`]     |
//! | client → server, UDP    | [`Announce`]  |
//! | server → client, UDP (NAT discovery) | [`NatOpen`] |
//! | client ↔ client, UDP (and relayed over TCP) | [`Datagram`] |

use crate::mac;
use crate::nonce::{Key, Nonce};
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// The longest ID: 1 to 32 characters of `A-Z a-z 0-9 _ . -`.
pub const MAX_ID_LEN: usize = 32;

/// The longest chat message, in bytes: a datagram stays well under a 1280-byte IPv6 MTU,
/// so it is never fragmented.
pub const MAX_TEXT: usize = 1000;

/// The longest line on the registration server's TCP connection: a relayed chat message
/// plus its headers fits comfortably.
pub const MAX_LINE: usize = 2048;

/// Why an ID was refused: said to the user as it is, so each reads as advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    /// Empty, or longer than [`MAX_ID_LEN`].
    Length,
    /// Holds a character other than `A-Z a-z 0-9 _ . -`.
    Character(char),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IdError::Length => write!(f, "an ID is 1 to {MAX_ID_LEN} characters long"),
            // Shown as itself ('é'), unless it would not show (a control character, a space).
            IdError::Character(c) if c.is_control() || c.is_whitespace() => write!(
                f,
                "'{}' is not allowed in an ID (use letters, digits, '_', '.', '-')",
                c.escape_default()
            ),
            IdError::Character(c) => write!(
                f,
                "'{c}' is not allowed in an ID (use letters, digits, '_', '.', '-')"
            ),
        }
    }
}

impl std::error::Error for IdError {}

/// Checks an ID: 1 to [`MAX_ID_LEN`] characters of `A-Z a-z 0-9 _ . -`.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(IdError::Length);
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
    {
        Some(c) => Err(IdError::Character(c)),
        None => Ok(()),
    }
}

/// A registration refused because someone else holds the ID: its owner keeps it. The server
/// sends this in an `ERROR`, and the client, recognising the text, asks for another ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdInUse {
    /// The ID asked for.
    pub id: String,
}

impl fmt::Display for IdInUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ID '{}' is already in use; choose another", self.id)
    }
}

impl std::error::Error for IdInUse {}

/// Why a message could not be parsed. A server answers a bad request line with this in an
/// `ERROR`; a client ignores a bad datagram. The peer's own words appear only
/// [`quoted`]: short and escaped, so an error line can never carry control characters back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A word the message needs is not there: `missing ID`.
    Missing(&'static str),
    /// A word is there but is not what it should be: `bad port 'x'`.
    Bad {
        /// What the word should have been.
        what: &'static str,
        /// The word, quoted.
        word: String,
        /// How it should look, when that is not obvious (`16 hex digits`).
        shape: Option<&'static str>,
    },
    /// The ID is not one (see [`IdError`]).
    Id(IdError),
    /// The chat text is longer than [`MAX_TEXT`] bytes.
    TextTooLong,
    /// Words after the message's end, quoted.
    Unexpected(String),
    /// The first word names no message this side knows: the word, quoted, and the ones
    /// it does.
    Unknown {
        /// The word, quoted.
        word: String,
        /// The messages expected here.
        expected: &'static str,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Missing(what) => write!(f, "missing {what}"),
            WireError::Bad { what, word, shape } => {
                write!(f, "bad {what} {word}")?;
                match shape {
                    Some(shape) => write!(f, " ({shape})"),
                    None => Ok(()),
                }
            }
            WireError::Id(why) => why.fmt(f),
            WireError::TextTooLong => write!(f, "text longer than {MAX_TEXT} bytes"),
            WireError::Unexpected(extra) => write!(f, "unexpected {extra}"),
            WireError::Unknown { word, expected } => {
                write!(f, "unknown message {word} (expected {expected})")
            }
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WireError::Id(why) => Some(why),
            _ => None,
        }
    }
}

impl From<IdError> for WireError {
    fn from(why: IdError) -> Self {
        WireError::Id(why)
    }
}

/// The words of a message, taken one at a time, each parse saying what it expected.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    fn new(line: &'a str) -> Self {
        Words { rest: line }
    }

    fn word(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        let (word, rest) = self.rest.split_once(' ').unwrap_or((self.rest, ""));
        if word.is_empty() {
            return Err(WireError::Missing(what));
        }
        self.rest = rest;
        Ok(word)
    }

    fn id(&mut self) -> Result<String, WireError> {
        let id = self.word("ID")?;
        check_id(id)?;
        Ok(id.to_string())
    }

    fn parse<T: FromStr>(&mut self, what: &'static str) -> Result<T, WireError> {
        let word = self.word(what)?;
        word.parse().map_err(|_| WireError::Bad {
            what,
            word: quoted(word),
            shape: None,
        })
    }

    fn nonce(&mut self) -> Result<Nonce, WireError> {
        self.parse("nonce")
    }

    fn tag(&mut self) -> Result<u64, WireError> {
        self.hex64("tag")
    }

    /// Sixteen hex digits, exactly.
    fn hex64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let word = self.word(what)?;
        let hex = word.len() == 16 && word.bytes().all(|b| b.is_ascii_hexdigit());
        match u64::from_str_radix(word, 16) {
            Ok(tag) if hex => Ok(tag),
            _ => Err(WireError::Bad {
                what,
                word: quoted(word),
                shape: Some("16 hex digits"),
            }),
        }
    }

    /// A public endpoint, or the word that stands for a client without one.
    fn public(&mut self) -> Result<Public, WireError> {
        let word = self.word("public address")?;
        match word {
            ASLEEP => Ok(Public::Asleep),
            RELAYED => Ok(Public::Relayed),
            _ => word.parse().map(Public::At).map_err(|_| WireError::Bad {
                what: "public address",
                word: quoted(word),
                shape: None,
            }),
        }
    }

    /// Everything left, verbatim (chat text may hold spaces).
    fn text(&mut self) -> Result<String, WireError> {
        if self.rest.len() > MAX_TEXT {
            return Err(WireError::TextTooLong);
        }
        Ok(std::mem::take(&mut self.rest).to_string())
    }

    /// Everything left, parsed as a nested message.
    fn nested<T: FromStr<Err = WireError>>(&mut self) -> Result<T, WireError> {
        std::mem::take(&mut self.rest).parse()
    }

    fn end(self) -> Result<(), WireError> {
        match self.rest {
            "" => Ok(()),
            extra => Err(WireError::Unexpected(quoted(extra))),
        }
    }
}

/// The word that stands for the public endpoint of a client that is Asleep: registered over
/// TCP, but not yet awake, so the server has not seen its UDP endpoint.
pub const ASLEEP: &str = "asleep";

/// The word that stands for the public endpoint of a client whose UDP does not get through
/// to the server (a network that forwards only TCP): it is reached only through the relay.
pub const RELAYED: &str = "relayed";

/// Where the others reach a client, as the server lists it: in the public-address position
/// of `READY`, `PEER` and `JOIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Public {
    /// The UDP endpoint the server saw: what peers behind other NATs must send to.
    At(SocketAddr),
    /// [`ASLEEP`]: no endpoint yet (registered with `--asleep`, not yet awake).
    Asleep,
    /// [`RELAYED`]: its UDP is blocked on the way to the server, so no datagram reaches it
    /// and none of its own gets anywhere: only the relay carries its chats.
    Relayed,
}

impl fmt::Display for Public {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Public::At(public) => write!(f, "{public}"),
            Public::Asleep => f.write_str(ASLEEP),
            Public::Relayed => f.write_str(RELAYED),
        }
    }
}

/// What the server knows of a registered client and tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The ID it registered.
    pub id: String,
    /// Where the others reach it: see [`Public`].
    pub public: Public,
    /// The UDP endpoint the client reported: what peers behind the same NAT must send to.
    pub private: SocketAddr,
}

impl PeerInfo {
    fn parse(words: &mut Words) -> Result<PeerInfo, WireError> {
        Ok(PeerInfo {
            id: words.id()?,
            public: words.public()?,
            private: words.parse("private address")?,
        })
    }
}

impl fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.id, self.public, self.private)
    }
}

/// Why a client left, as the server printed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// It said `EXIT` (`@exit`, Ctrl+C, end of input).
    Deregistered,
    /// Its TCP connection ended without `EXIT`.
    Disconnected,
    /// No keep-alive came for the server's timeout.
    Disappeared,
}

impl LeaveReason {
    /// The word on the wire and on the server's console.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Deregistered => "deregistered",
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::Disappeared => "disappeared",
        }
    }
}

impl FromStr for LeaveReason {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, WireError> {
        match s {
            "deregistered" => Ok(LeaveReason::Deregistered),
            "disconnected" => Ok(LeaveReason::Disconnected),
            "disappeared" => Ok(LeaveReason::Disappeared),
            _ => Err(WireError::Bad {
                what: "leave reason",
                word: quoted(s),
                shape: None,
            }),
        }
    }
}

/// How a client's NAT behaves, as its NAT discovery found it (see `docs/PROTOCOL.md`, "NAT
/// discovery"): whether its public mapping stays the same whatever the destination, and
/// whether it admits datagrams from a port it never sent to. The server has one address, so
/// "a port it never sent to" is another port of an address it did send to: a NAT that
/// filters by address only, and one that filters nothing, both read as not filtering
/// (RFC 5780 tells them apart with a second address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nat {
    /// `none`: no NAT (the server sees the client at its own address) and nothing filters.
    None,
    /// `open`: one public mapping for every destination, and no filtering by port.
    Open,
    /// `cone`: one public mapping for every destination, and only replies admitted (to a
    /// port it sent to): the usual home router ("port-restricted cone").
    Cone,
    /// `symmetric`: a public mapping for each destination, and only replies admitted.
    Symmetric,
    /// `open-symmetric`: a public mapping for each destination, but no filtering by port.
    OpenSymmetric,
    /// `unknown`: not found out (no answer, no second port at the server, not tried yet).
    #[default]
    Unknown,
}

impl Nat {
    /// Every kind, for parsing and tests.
    pub const ALL: [Nat; 6] = [
        Nat::None,
        Nat::Open,
        Nat::Cone,
        Nat::Symmetric,
        Nat::OpenSymmetric,
        Nat::Unknown,
    ];

    /// The word on the wire and in `@show_list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Nat::None => "none",
            Nat::Open => "open",
            Nat::Cone => "cone",
            Nat::Symmetric => "symmetric",
            Nat::OpenSymmetric => "open-symmetric",
            Nat::Unknown => "unknown",
        }
    }

    /// Whether its public mapping changes with the destination (`None`: not known).
    pub fn mapping_changes(self) -> Option<bool> {
        match self {
            Nat::None | Nat::Open | Nat::Cone => Some(false),
            Nat::Symmetric | Nat::OpenSymmetric => Some(true),
            Nat::Unknown => None,
        }
    }

    /// Whether it drops datagrams from a port it never sent to (`None`: not known).
    pub fn filters(self) -> Option<bool> {
        match self {
            Nat::None | Nat::Open | Nat::OpenSymmetric => Some(false),
            Nat::Cone | Nat::Symmetric => Some(true),
            Nat::Unknown => None,
        }
    }

    /// Whether a hole punch between a client behind `self` and one behind `other` cannot
    /// work: one side shows the other a new port for it (its mapping changes with the
    /// destination), and the other side admits only replies to the port it sent to, which
    /// is not that one. Without port prediction, nothing gets through; only the relay can
    /// carry their chats. False whenever either kind is not known.
    pub fn punch_cannot_work(self, other: Nat) -> bool {
        let cannot =
            |a: Nat, b: Nat| a.mapping_changes() == Some(true) && b.filters() == Some(true);
        cannot(self, other) || cannot(other, self)
    }
}

impl FromStr for Nat {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, WireError> {
        Nat::ALL
            .into_iter()
            .find(|nat| nat.as_str() == s)
            .ok_or_else(|| WireError::Bad {
                what: "NAT kind",
                word: quoted(s),
                shape: None,
            })
    }
}

/// Client → server, over TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `REGISTER <id> <private-ip:port> [asleep]`: the first line of every connection. With
    /// `asleep`, the client stays Asleep (listed, without a UDP endpoint) until it sends
    /// `AWAKE`; without, it announces its endpoint at once with `HELLO`.
    Register {
        /// The ID asked for.
        id: String,
        /// The client's UDP endpoint on its own network.
        private: SocketAddr,
        /// Whether it registers Asleep.
        asleep: bool,
    },
    /// `PUNCH <id>`: please tell us both, now, to send to each other (hole punching).
    Punch {
        /// The peer to punch toward.
        peer: String,
    },
    /// `RELAY <id> <datagram>`: forward this peer datagram, no direct path works.
    Relay {
        /// The peer it is for.
        to: String,
        /// The datagram, as it would have gone over UDP.
        datagram: Datagram,
    },
    /// `UDP_BLOCKED`: my `HELLO`s do not reach you; list me as [`RELAYED`]. Acts only for a
    /// registration not yet listed: once listed, nothing changes.
    UdpBlocked,
    /// `NAT_TEST <nonce>`: I am about to probe your two UDP ports with `NAT_PROBE <id>
    /// <nonce>` (NAT discovery); answer those that bring this nonce. Acts only for the
    /// connection's own registration, listed at a UDP endpoint.
    NatTest {
        /// Chosen by the client, and seen by nobody else: it makes its probes its own.
        nonce: Nonce,
    },
    /// `NAT <kind>`: what my NAT discovery found; please tell the others.
    Nat {
        /// How the client's NAT behaves.
        kind: Nat,
    },
    /// `EXIT`: unregister me.
    Exit,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Register {
                id,
                private,
                asleep,
            } => {
                write!(f, "REGISTER {id} {private}")?;
                if *asleep {
                    write!(f, " {ASLEEP}")?;
                }
                Ok(())
            }
            Request::Punch { peer } => write!(f, "PUNCH {peer}"),
            Request::Relay { to, datagram } => write!(f, "RELAY {to} {datagram}"),
            Request::UdpBlocked => f.write_str("UDP_BLOCKED"),
            Request::NatTest { nonce } => write!(f, "NAT_TEST {nonce}"),
            Request::Nat { kind } => write!(f, "NAT {}", kind.as_str()),
            Request::Exit => f.write_str("EXIT"),
        }
    }
}

impl FromStr for Request {
    type Err = WireError;
    fn from_str(line: &str) -> Result<Self, WireError> {
        let mut words = Words::new(line);
        let request = match words.word("command")? {
            "REGISTER" => Request::Register {
                id: words.id()?,
                private: words.parse("private address")?,
                asleep: match words.rest {
                    "" => false,
                    ASLEEP => {
                        words.rest = "";
                        true
                    }
                    other => return Err(WireError::Unexpected(quoted(other))),
                },
            },
            "PUNCH" => Request::Punch { peer: words.id()? },
            "RELAY" => {
                let to = words.id()?;
                return Ok(Request::Relay {
                    to,
                    datagram: words.nested()?,
                });
            }
            "UDP_BLOCKED" => Request::UdpBlocked,
            "NAT_TEST" => Request::NatTest {
                nonce: words.nonce()?,
            },
            "NAT" => Request::Nat {
                kind: words.parse("NAT kind")?,
            },
            "EXIT" => Request::Exit,
            other => {
                return Err(unknown(
                    other,
                    "REGISTER, PUNCH, RELAY, UDP_BLOCKED, NAT_TEST, NAT, EXIT",
                ))
            }
        };
        words.end()?;
        Ok(request)
    }
}

/// Server → client, over TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `WELCOME <nonce>`: the ID is yours; prove your UDP endpoint with `HELLO <id> <nonce>`.
    Welcome {
        /// The challenge's nonce.
        nonce: Nonce,
    },
    /// `CHALLENGE <nonce>`: a datagram claiming your ID came from an address the server
    /// does not know as yours; if it was you, prove it with `HELLO <id> <nonce>`.
    Challenge {
        /// The challenge's nonce.
        nonce: Nonce,
    },
    /// `READY <public-ip:port>`: your announcement arrived from this address; the list
    /// follows. `READY asleep` answers an Asleep registration at once, `READY relayed` a
    /// `UDP_BLOCKED`.
    Ready {
        /// Where the server saw the client's UDP endpoint, or why there is none.
        public: Public,
    },
    /// `PEER <id> <public> <private>`: one entry of the list sent after `READY`.
    Peer(PeerInfo),
    /// `LIST_END`: the list is complete.
    ListEnd,
    /// `JOIN <id> <public> <private>`: someone joined.
    Joined(PeerInfo),
    /// `AWAKE <id> <public>`: someone sent the server an Awake request from this endpoint:
    /// an Asleep client woke, or an awake one announced itself again (`@awake`). Sent to
    /// everyone, the client itself included, which so learns that its request arrived.
    Awake {
        /// Who woke.
        id: String,
        /// Its UDP endpoint, as the server saw it.
        public: SocketAddr,
    },
    /// `MOVE <id> <public>`: someone's public endpoint changed (a NAT mapping was renewed).
    Moved {
        /// Who moved.
        id: String,
        /// Its new UDP endpoint.
        public: SocketAddr,
    },
    /// `LEAVE <id> <reason>`: someone left.
    Left {
        /// Who left.
        id: String,
        /// Why.
        reason: LeaveReason,
    },
    /// `PUNCH <id> <key>`: probe this peer's addresses now, tagging the probes with the key
    /// the two of you share; it is probing yours at the same moment.
    Punch {
        /// The peer to probe.
        peer: String,
        /// The key the two peers share, for tagging.
        key: Key,
    },
    /// `RELAYED <datagram>`: a peer datagram forwarded by the server, which checked its sender.
    Relayed {
        /// The datagram, as its sender gave it.
        datagram: Datagram,
    },
    /// `NAT_TEST <port>|none`: the answer to `NAT_TEST`: probe my registration port and
    /// this second port now; `none`: I have no second port, so no NAT discovery.
    NatTest {
        /// The server's second UDP port, when it has one.
        alt: Option<u16>,
    },
    /// `NAT_SEEN <port> <addr>`: your `NAT_PROBE` to my UDP port `<port>` came from
    /// `<addr>`: your NAT's mapping toward that port (STUN's mapped address).
    NatSeen {
        /// The server's port the probe was sent to.
        port: u16,
        /// Where it came from, as the server saw it.
        seen: SocketAddr,
    },
    /// `NAT <id> <kind>`: how `<id>`'s NAT behaves, as its discovery found it. Sent after
    /// `LIST_END` for everyone listed who reported one, and to everyone when someone does.
    Nat {
        /// Whose NAT.
        id: String,
        /// How it behaves.
        kind: Nat,
    },
    /// `ERROR <text>`: a request was refused; the text is for the user.
    Error {
        /// What went wrong, in words.
        message: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Welcome { nonce } => write!(f, "WELCOME {nonce}"),
            Event::Challenge { nonce } => write!(f, "CHALLENGE {nonce}"),
            Event::Ready { public } => write!(f, "READY {public}"),
            Event::Peer(info) => write!(f, "PEER {info}"),
            Event::ListEnd => f.write_str("LIST_END"),
            Event::Joined(info) => write!(f, "JOIN {info}"),
            Event::Awake { id, public } => write!(f, "AWAKE {id} {public}"),
            Event::Moved { id, public } => write!(f, "MOVE {id} {public}"),
            Event::Left { id, reason } => write!(f, "LEAVE {id} {}", reason.as_str()),
            Event::Punch { peer, key } => write!(f, "PUNCH {peer} {key}"),
            Event::Relayed { datagram } => write!(f, "RELAYED {datagram}"),
            Event::NatTest { alt: Some(port) } => write!(f, "NAT_TEST {port}"),
            Event::NatTest { alt: None } => f.write_str("NAT_TEST none"),
            Event::NatSeen { port, seen } => write!(f, "NAT_SEEN {port} {seen}"),
            Event::Nat { id, kind } => write!(f, "NAT {id} {}", kind.as_str()),
            Event::Error { message } => write!(f, "ERROR {message}"),
        }
    }
}

impl FromStr for Event {
    type Err = WireError;
    fn from_str(line: &str) -> Result<Self, WireError> {
        let mut words = Words::new(line);
        let event = match words.word("event")? {
            "WELCOME" => Event::Welcome {
                nonce: words.nonce()?,
            },
            "CHALLENGE" => Event::Challenge {
                nonce: words.nonce()?,
            },
            "READY" => Event::Ready {
                public: words.public()?,
            },
            "PEER" => Event::Peer(PeerInfo::parse(&mut words)?),
            "LIST_END" => Event::ListEnd,
            "JOIN" => Event::Joined(PeerInfo::parse(&mut words)?),
            "AWAKE" => Event::Awake {
                id: words.id()?,
                public: words.parse("public address")?,
            },
            "MOVE" => Event::Moved {
                id: words.id()?,
                public: words.parse("public address")?,
            },
            "LEAVE" => Event::Left {
                id: words.id()?,
                reason: words.parse("reason")?,
            },
            "PUNCH" => Event::Punch {
                peer: words.id()?,
                key: words.parse("key")?,
            },
            "RELAYED" => Event::Relayed {
                datagram: words.nested()?,
            },
            "NAT_TEST" => Event::NatTest {
                alt: match words.word("port")? {
                    "none" => None,
                    port => Some(port_number(port)?),
                },
            },
            "NAT_SEEN" => Event::NatSeen {
                port: port_number(words.word("port")?)?,
                seen: words.parse("address")?,
            },
            "NAT" => Event::Nat {
                id: words.id()?,
                kind: words.parse("NAT kind")?,
            },
            "ERROR" => Event::Error {
                message: words.text()?,
            },
            other => return Err(unknown(other, "a server event")),
        };
        words.end()?;
        Ok(event)
    }
}

/// Client → server, over UDP. The server learns the client's public endpoint from the
/// datagram's source address, but believes a new one only when it comes with the answer to a
/// challenge that it sent over the client's own TCP connection: no datagram carries anything
/// that a copy of it could reuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    /// `HELLO <id> <nonce>`: this address is mine; here is the nonce you sent me over TCP
    /// (`WELCOME` or `CHALLENGE`). Each nonce is good for one answer.
    Hello {
        /// Whose address this is.
        id: String,
        /// The nonce the server sent over that client's TCP connection.
        nonce: Nonce,
    },
    /// `ALIVE <id>`: the periodic keep-alive.
    Alive {
        /// Who is still here.
        id: String,
    },
    /// `NAT_PROBE <id> <nonce>`: NAT discovery, sent to each of the server's two UDP ports;
    /// `<nonce>` is the one the client gave in its `NAT_TEST` over TCP. The server tells the
    /// client over TCP where each came from (`NAT_SEEN`), and answers one to its registration
    /// port that came from the client's known endpoint with [`NatOpen`], from a third port.
    NatProbe {
        /// Whose probe.
        id: String,
        /// The nonce of its `NAT_TEST`.
        nonce: Nonce,
    },
    /// `AWAKE <id> [<nonce>]`: the Awake request, which wakes an Asleep client or
    /// (`@awake`) announces an awake one again; the server says so, and tells everyone. From
    /// an address the server does not know as the client's, it counts only with the nonce
    /// of the client's challenge.
    Awake {
        /// Who asks to be Awake.
        id: String,
        /// The nonce of its challenge, when it has one.
        nonce: Option<Nonce>,
    },
}

impl Announce {
    /// The ID it claims to come from.
    pub fn id(&self) -> &str {
        match self {
            Announce::Hello { id, .. }
            | Announce::Alive { id }
            | Announce::Awake { id, .. }
            | Announce::NatProbe { id, .. } => id,
        }
    }
}

impl fmt::Display for Announce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Announce::Hello { id, nonce } => write!(f, "HELLO {id} {nonce}"),
            Announce::Alive { id } => write!(f, "ALIVE {id}"),
            Announce::NatProbe { id, nonce } => write!(f, "NAT_PROBE {id} {nonce}"),
            Announce::Awake { id, nonce: None } => write!(f, "AWAKE {id}"),
            Announce::Awake {
                id,
                nonce: Some(nonce),
            } => write!(f, "AWAKE {id} {nonce}"),
        }
    }
}

impl FromStr for Announce {
    type Err = WireError;
    fn from_str(line: &str) -> Result<Self, WireError> {
        let mut words = Words::new(line);
        let announce = match words.word("announcement")? {
            "HELLO" => Announce::Hello {
                id: words.id()?,
                nonce: words.nonce()?,
            },
            "ALIVE" => Announce::Alive { id: words.id()? },
            "AWAKE" => Announce::Awake {
                id: words.id()?,
                nonce: match words.rest {
                    "" => None,
                    _ => Some(words.nonce()?),
                },
            },
            "NAT_PROBE" => Announce::NatProbe {
                id: words.id()?,
                nonce: words.nonce()?,
            },
            other => return Err(unknown(other, "HELLO, ALIVE, AWAKE, NAT_PROBE")),
        };
        words.end()?;
        Ok(announce)
    }
}

/// `NAT_OPEN <nonce>`: server → client, over UDP, the answer to a `NAT_PROBE` sent to the
/// registration port, from a port the OS picked for the server, which no client ever sends
/// to (neither of the two it listens on). If it gets in, the client's NAT admits datagrams
/// from a port it never sent to, and no entry left by an earlier probe can have let it in as
/// a reply. It goes only to the client's known endpoint, one per probe, shorter than the
/// probe, and echoes only the client's own nonce: nobody can aim it elsewhere, or learn
/// anything from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatOpen {
    /// The nonce of the client's `NAT_TEST`.
    pub nonce: Nonce,
}

impl fmt::Display for NatOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NAT_OPEN {}", self.nonce)
    }
}

impl FromStr for NatOpen {
    type Err = WireError;
    fn from_str(line: &str) -> Result<Self, WireError> {
        let mut words = Words::new(line);
        match words.word("datagram")? {
            "NAT_OPEN" => {}
            other => return Err(unknown(other, "NAT_OPEN")),
        }
        let nonce = words.nonce()?;
        words.end()?;
        Ok(NatOpen { nonce })
    }
}

/// Where a chat message stands in its sender's stream of messages to one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbered {
    /// The sender's session: a random number drawn when its client starts. Numbering starts
    /// afresh with each session, so a receiver that sees a new one starts afresh too.
    pub session: u64,
    /// The message's number, from 1.
    pub seq: u64,
    /// The lowest number the sender may still send: every one below was acknowledged or
    /// given up on, so a receiver need wait for none of them.
    pub base: u64,
}

impl fmt::Display for Numbered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x} {} {}", self.session, self.seq, self.base)
    }
}

impl Numbered {
    fn parse(words: &mut Words) -> Result<Numbered, WireError> {
        Ok(Numbered {
            session: words.hex64("session")?,
            seq: words.parse("sequence number")?,
            base: words.parse("base")?,
        })
    }
}

/// Client ↔ client, over UDP, or wrapped in `RELAY`/`RELAYED` when no direct path works.
///
/// Tags are [`mac::tag`]s under the key the pair shares (see
/// [`Event::Punch`]): over a direct path, only the real peer can make them. Stamps are
/// nonces that only the datagram's recipient has seen: an acknowledgement must echo the
/// stamp of the message it acknowledges, so nobody can acknowledge a message blind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram {
    /// `CHAT <from> <session> <seq> <base> <stamp> <tag> <text>`: a chat message, numbered
    /// per sender session and recipient, its tag over everything before the tag and the text.
    Chat {
        /// The sender's ID.
        from: String,
        /// Its place in the sender's stream to us.
        number: Numbered,
        /// The nonce its acknowledgement must echo.
        stamp: Nonce,
        /// The pair key's tag over the rest.
        tag: u64,
        /// The message.
        text: String,
    },
    /// `ACK <from> <seq> <stamp>`: message `seq`, stamped `stamp`, arrived (sent by its
    /// recipient, `from`).
    Ack {
        /// The acknowledging recipient's ID.
        from: String,
        /// The sequence number acknowledged.
        seq: u64,
        /// That message's stamp, echoed.
        stamp: Nonce,
    },
    /// `PROBE <from> <nonce> <tag>`: is this a path to you? Please answer.
    Probe {
        /// The prober's ID.
        from: String,
        /// A fresh nonce, which the answer must echo.
        nonce: Nonce,
        /// The pair key's tag over the rest.
        tag: u64,
    },
    /// `PROBE_ACK <from> <nonce> <seen> <tag>`: it is; here is your nonce, and the address
    /// your probe came from as I saw it (STUN's mapped address), tagged by me. The prober
    /// checks `seen`: an answer that comes back through someone who forwarded the probe
    /// shows that someone's address, not the prober's.
    ProbeAck {
        /// The answering peer's ID.
        from: String,
        /// The probe's nonce, echoed.
        nonce: Nonce,
        /// Where the probe came from, as the answering peer saw it.
        seen: SocketAddr,
        /// The pair key's tag over the rest.
        tag: u64,
    },
}

impl Datagram {
    /// A `CHAT`, tagged with the pair's key. Without one yet (a message relayed before the
    /// pair was keyed) its tag is 0: through the relay, the server vouches for the sender.
    pub fn chat(
        from: &str,
        number: Numbered,
        stamp: Nonce,
        text: String,
        key: Option<&Key>,
    ) -> Datagram {
        let signed = chat_signed(from, &number, &stamp);
        let tag = key.map_or(0, |key| {
            mac::tag(key, &[signed.as_bytes(), text.as_bytes()])
        });
        Datagram::Chat {
            from: from.to_string(),
            number,
            stamp,
            tag,
            text,
        }
    }

    /// A `PROBE` asking `nonce`, tagged with the pair's key.
    pub fn probe(from: &str, nonce: Nonce, key: &Key) -> Datagram {
        Datagram::Probe {
            from: from.to_string(),
            nonce,
            tag: mac::tag(key, &[b"PROBE ", from.as_bytes(), b" ", nonce.bytes()]),
        }
    }

    /// The `PROBE_ACK` answering `nonce`, from a probe seen coming from `seen`, tagged with
    /// the pair's key.
    pub fn probe_ack(from: &str, nonce: Nonce, seen: SocketAddr, key: &Key) -> Datagram {
        let signed = format!("PROBE_ACK {from} {nonce} {seen}");
        Datagram::ProbeAck {
            from: from.to_string(),
            nonce,
            seen,
            tag: mac::tag(key, &[signed.as_bytes()]),
        }
    }

    /// Whether its tag is the one `key` makes: only the peer that shares the key could have
    /// sent it. (An `ACK` has no tag: its stamp is its proof.)
    pub fn tagged_by(&self, key: &Key) -> bool {
        let expected = match self {
            Datagram::Chat {
                from,
                number,
                stamp,
                text,
                ..
            } => {
                let signed = chat_signed(from, number, stamp);
                mac::tag(key, &[signed.as_bytes(), text.as_bytes()])
            }
            Datagram::Probe { from, nonce, .. } => Datagram::probe(from, *nonce, key).tag(),
            Datagram::ProbeAck {
                from, nonce, seen, ..
            } => Datagram::probe_ack(from, *nonce, *seen, key).tag(),
            Datagram::Ack { .. } => return true,
        };
        expected == self.tag()
    }

    fn tag(&self) -> u64 {
        match self {
            Datagram::Chat { tag, .. }
            | Datagram::Probe { tag, .. }
            | Datagram::ProbeAck { tag, .. } => *tag,
            Datagram::Ack { .. } => 0,
        }
    }

    /// The ID this datagram claims to come from (checked against where it came from).
    pub fn from(&self) -> &str {
        match self {
            Datagram::Chat { from, .. }
            | Datagram::Ack { from, .. }
            | Datagram::Probe { from, .. }
            | Datagram::ProbeAck { from, .. } => from,
        }
    }
}

impl fmt::Display for Datagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Datagram::Chat {
                from,
                number,
                stamp,
                tag,
                text,
            } => write!(f, "CHAT {from} {number} {stamp} {tag:016x} {text}"),
            Datagram::Ack { from, seq, stamp } => write!(f, "ACK {from} {seq} {stamp}"),
            Datagram::Probe { from, nonce, tag } => write!(f, "PROBE {from} {nonce} {tag:016x}"),
            Datagram::ProbeAck {
                from,
                nonce,
                seen,
                tag,
            } => write!(f, "PROBE_ACK {from} {nonce} {seen} {tag:016x}"),
        }
    }
}

impl FromStr for Datagram {
    type Err = WireError;
    fn from_str(line: &str) -> Result<Self, WireError> {
        let mut words = Words::new(line);
        let datagram = match words.word("datagram")? {
            "CHAT" => Datagram::Chat {
                from: words.id()?,
                number: Numbered::parse(&mut words)?,
                stamp: words.nonce()?,
                tag: words.tag()?,
                text: words.text()?,
            },
            "ACK" => Datagram::Ack {
                from: words.id()?,
                seq: words.parse("sequence number")?,
                stamp: words.nonce()?,
            },
            "PROBE" => Datagram::Probe {
                from: words.id()?,
                nonce: words.nonce()?,
                tag: words.tag()?,
            },
            "PROBE_ACK" => Datagram::ProbeAck {
                from: words.id()?,
                nonce: words.nonce()?,
                seen: words.parse("address")?,
                tag: words.tag()?,
            },
            other => return Err(unknown(other, "CHAT, ACK, PROBE, PROBE_ACK")),
        };
        words.end()?;
        Ok(datagram)
    }
}

/// What a `CHAT`'s tag covers before its text: everything else it says.
fn chat_signed(from: &str, number: &Numbered, stamp: &Nonce) -> String {
    format!("CHAT {from} {number} {stamp} ")
}

/// A port number: digits only (`u16`'s parser would take `+80`), 1 to 65535.
fn port_number(word: &str) -> Result<u16, WireError> {
    match word.parse::<u16>() {
        Ok(port) if port > 0 && word.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(WireError::Bad {
            what: "port",
            word: quoted(word),
            shape: None,
        }),
    }
}

fn unknown(word: &str, expected: &'static str) -> WireError {
    WireError::Unknown {
        word: quoted(word),
        expected,
    }
}

/// Some of what the peer sent, quoted for an error line: at most 20 characters, escaped, so
/// that an error can be neither long nor a way to send control characters back.
fn quoted(text: &str) -> String {
    let shown: String = text.chars().take(20).collect();
    let more = if text.chars().count() > 20 { "..." } else { "" };
    format!("'{}{more}'", shown.escape_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_rules() {
        assert!(check_id("alice").is_ok());
        assert!(check_id("a.b-c_9").is_ok());
        assert!(check_id(&"x".repeat(32)).is_ok());
        assert_eq!(check_id(&"x".repeat(33)), Err(IdError::Length));
        assert_eq!(check_id(""), Err(IdError::Length));
        assert_eq!(check_id("al ice"), Err(IdError::Character(' ')));
        assert_eq!(
            check_id("é").unwrap_err().to_string(),
            "'é' is not allowed in an ID (use letters, digits, '_', '.', '-')"
        );
        assert!(check_id("a\tb")
            .unwrap_err()
            .to_string()
            .starts_with("'\\t' is not"));
    }

    #[test]
    fn examples_from_the_protocol_document_parse() {
        assert_eq!(
            "REGISTER alice 192.168.1.2:10081".parse(),
            Ok(Request::Register {
                id: "alice".into(),
                private: "192.168.1.2:10081".parse().unwrap(),
                asleep: false,
            })
        );
        assert_eq!(
            "REGISTER carol 192.168.1.3:10081 asleep".parse(),
            Ok(Request::Register {
                id: "carol".into(),
                private: "192.168.1.3:10081".parse().unwrap(),
                asleep: true,
            })
        );
        assert_eq!(
            "JOIN carol asleep 192.168.1.3:10081".parse(),
            Ok(Event::Joined(PeerInfo {
                id: "carol".into(),
                public: Public::Asleep,
                private: "192.168.1.3:10081".parse().unwrap(),
            }))
        );
        assert_eq!(
            "PEER dave relayed 10.1.2.3:10081".parse(),
            Ok(Event::Peer(PeerInfo {
                id: "dave".into(),
                public: Public::Relayed,
                private: "10.1.2.3:10081".parse().unwrap(),
            }))
        );
        assert_eq!("UDP_BLOCKED".parse(), Ok(Request::UdpBlocked));
        assert_eq!("NAT cone".parse(), Ok(Request::Nat { kind: Nat::Cone }));
        assert_eq!(
            "NAT bob open-symmetric".parse(),
            Ok(Event::Nat {
                id: "bob".into(),
                kind: Nat::OpenSymmetric
            })
        );
        assert_eq!("NAT_TEST none".parse(), Ok(Event::NatTest { alt: None }));
        assert_eq!(
            "NAT_SEEN 10081 10.0.0.1:40000".parse(),
            Ok(Event::NatSeen {
                port: 10081,
                seen: "10.0.0.1:40000".parse().unwrap()
            })
        );
        assert_eq!(
            "READY relayed".parse(),
            Ok(Event::Ready {
                public: Public::Relayed
            })
        );
        assert_eq!(
            "AWAKE carol 10.0.0.1:10081".parse(),
            Ok(Event::Awake {
                id: "carol".into(),
                public: "10.0.0.1:10081".parse().unwrap(),
            })
        );
        assert_eq!(
            "READY asleep".parse(),
            Ok(Event::Ready {
                public: Public::Asleep
            })
        );
        let stamp: Nonce = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let relay = "RELAY bob CHAT alice 00000000000000a1 7 5 0123456789abcdef0123456789abcdef \
                     00000000000000ff hi there";
        assert_eq!(
            relay.parse(),
            Ok(Request::Relay {
                to: "bob".into(),
                datagram: Datagram::Chat {
                    from: "alice".into(),
                    number: Numbered {
                        session: 0xa1,
                        seq: 7,
                        base: 5
                    },
                    stamp,
                    tag: 255,
                    text: "hi there".into()
                }
            })
        );
        assert_eq!(
            "LEAVE bob disappeared".parse(),
            Ok(Event::Left {
                id: "bob".into(),
                reason: LeaveReason::Disappeared
            })
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        for bad in [
            "",
            "REGISTER",
            "REGISTER alice",
            "REGISTER alice nowhere",
            "REGISTER bad/id 1.2.3.4:5",
            "REGISTER alice 1.2.3.4:5 extra",
            "REGISTER alice 1.2.3.4:5 asleep extra",
            "REGISTER alice 1.2.3.4:5 ASLEEP",
            "EXIT now",
            "UDP_BLOCKED now",
            "udp_blocked",
            "NAT_TEST",
            "NAT_TEST 1234",
            "NAT",
            "NAT Cone",
            "NAT cone extra",
            "PUNCH",
            "register alice 1.2.3.4:5",
        ] {
            assert!(bad.parse::<Request>().is_err(), "{bad:?} parsed");
        }
        for bad in [
            "CHAT alice x hi",
            "CHAT alice 1 0123456789abcdef0123456789abcdef ff hi",
            "CHAT alice 00000000000000a1 1 0123456789abcdef0123456789abcdef ff hi",
            "ACK alice -1",
            "ACK alice 99999999999999999999",
            "ACK alice 1",
            "PROBE",
            "PROBE alice 0123456789abcdef0123456789abcdef",
            "PROBE alice 0123456789abcdef0123456789abcdef +123456789abcdef",
        ] {
            assert!(bad.parse::<Datagram>().is_err(), "{bad:?} parsed");
        }
        for bad in [
            "READY",
            "READY RELAYED",
            "READY relayed extra",
            "JOIN dave relayed",
            "PEER dave nowhere 1.2.3.4:5",
            "NAT_TEST",
            "NAT_TEST 0",
            "NAT_TEST +80",
            "NAT_TEST 65536",
            "NAT_TEST none extra",
            "NAT_SEEN 80",
            "NAT_SEEN none 1.2.3.4:5",
            "NAT_SEEN 80 1.2.3.4:5 x",
            "NAT bob",
            "NAT bob symmetrical",
        ] {
            assert!(bad.parse::<Event>().is_err(), "{bad:?} parsed");
        }
        assert!("HELLO alice 1234".parse::<Announce>().is_err());
        assert!("NAT_PROBE alice".parse::<Announce>().is_err());
        assert!("NAT_OPEN".parse::<NatOpen>().is_err());
        assert!("NAT_OPEN 0123456789abcdef0123456789abcdef x"
            .parse::<NatOpen>()
            .is_err());
        assert!("ALIVE alice 0123456789abcdef0123456789abcdef"
            .parse::<Announce>()
            .is_err());
        let stamp = "0123456789abcdef0123456789abcdef 0000000000000000";
        assert!(format!(
            "CHAT a 0000000000000001 1 1 {stamp} {}",
            "x".repeat(MAX_TEXT + 1)
        )
        .parse::<Datagram>()
        .is_err());
    }

    #[test]
    fn a_punch_cannot_work_only_between_a_changing_mapping_and_a_filter() {
        use Nat::*;
        assert!(Symmetric.punch_cannot_work(Cone));
        assert!(Cone.punch_cannot_work(Symmetric));
        assert!(Symmetric.punch_cannot_work(Symmetric));
        assert!(OpenSymmetric.punch_cannot_work(Cone));
        assert!(!OpenSymmetric.punch_cannot_work(OpenSymmetric));
        assert!(!Symmetric.punch_cannot_work(Open));
        assert!(!Symmetric.punch_cannot_work(None));
        assert!(!Cone.punch_cannot_work(Cone));
        for kind in Nat::ALL {
            assert!(!kind.punch_cannot_work(Unknown), "unknown: as before");
            assert_eq!(kind.as_str().parse(), Ok(kind));
        }
    }
}
