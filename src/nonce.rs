//! Unguessable values, the only kind of trust natchat builds on (it has no cryptography crate).
//!
//! - A [`Nonce`] is used once: the server's challenge to prove an address, a probe's
//!   question, a chat message's stamp that its acknowledgement must echo. Someone who has
//!   not seen it cannot produce it: 128 random bits are not guessed.
//! - A [`Key`] is kept: the pair key two peers share (handed to each over its own TCP
//!   connection by the server), from which they compute [tags](crate::mac) that prove who
//!   sent a probe without revealing the key.
//!
//! Both are 128 bits from the operating system's random source, written as 32 hex digits.
//! A program that needs many nonces draws them from [`Nonces`]: one key read from the
//! operating system, then a keyed function of a counter, which never fails and costs no
//! system call.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::str::FromStr;
use std::sync::OnceLock;

/// 128 random bits.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Random([u8; 16]);

impl Random {
    /// Fresh bits from `/dev/urandom` (opened once per process).
    fn fresh() -> io::Result<Random> {
        static URANDOM: OnceLock<io::Result<File>> = OnceLock::new();
        let file = URANDOM.get_or_init(|| File::open("/dev/urandom"));
        let mut file = file
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
        let mut bytes = [0u8; 16];
        file.read_exact(&mut bytes)?;
        Ok(Random(bytes))
    }

    /// Compares without stopping at the first difference, so that the time a comparison
    /// takes tells an attacker nothing about how much of a guess was right.
    fn matches(&self, other: &Random) -> bool {
        self.0
            .iter()
            .zip(other.0)
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl fmt::Display for Random {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for Random {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(());
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(drop)?;
        }
        Ok(Random(bytes))
    }
}

/// A value used once, to prove that whoever answers with it saw the message that carried it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce(Random);

/// A key two peers share, known to nobody else but the server that handed it out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key(Random);

impl Nonce {
    /// A fresh nonce.
    pub fn fresh() -> io::Result<Nonce> {
        Random::fresh().map(Nonce)
    }

    /// Whether `other` is this nonce (compared in constant time).
    pub fn matches(&self, other: &Nonce) -> bool {
        self.0.matches(&other.0)
    }

    /// The raw bits, to feed a [tag](crate::mac::tag).
    pub fn bytes(&self) -> &[u8; 16] {
        &self.0 .0
    }
}

impl Nonce {
    /// A nonce of these bits.
    fn from_halves(first: u64, second: u64) -> Nonce {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&first.to_le_bytes());
        bytes[8..].copy_from_slice(&second.to_le_bytes());
        Nonce(Random(bytes))
    }
}

/// An endless supply of nonces: the [tag](crate::mac::tag) of a counter under a key of its
/// own. Without the key, the next nonce is as unguessable as a fresh random one (that is
/// what a keyed function such as SipHash promises), and drawing one needs no system call.
pub struct Nonces {
    key: Key,
    drawn: u64,
}

impl Nonces {
    /// A supply keyed with fresh bits from the operating system.
    pub fn new() -> io::Result<Nonces> {
        Ok(Nonces {
            key: Key::fresh()?,
            drawn: 0,
        })
    }

    /// The next nonce.
    pub fn draw(&mut self) -> Nonce {
        Nonce::from_halves(self.half(b"nonce, half 1"), self.half(b"nonce, half 2"))
    }

    /// The next unguessable 64-bit number (a session's name, a random pause).
    pub fn number(&mut self) -> u64 {
        self.half(b"number")
    }

    /// The tag of the next count, labelled `label`.
    fn half(&mut self, label: &[u8]) -> u64 {
        self.drawn += 1;
        crate::mac::tag(&self.key, &[label, &self.drawn.to_le_bytes()])
    }
}

impl Key {
    /// A fresh key.
    pub fn fresh() -> io::Result<Key> {
        Random::fresh().map(Key)
    }

    /// A key made of these bits (derived by [`mac::derive`](crate::mac::derive)).
    pub fn from_bytes(bytes: [u8; 16]) -> Key {
        Key(Random(bytes))
    }

    /// The raw bits, to key a [tag](crate::mac::tag).
    pub fn bytes(&self) -> &[u8; 16] {
        &self.0 .0
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Nonces are not secret once sent; they show in full.
impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({self})")
    }
}

/// A key never shows, not even in a debug line.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a nonce or a key did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotHex128;

impl fmt::Display for NotHex128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not 32 hex digits")
    }
}

impl std::error::Error for NotHex128 {}

impl FromStr for Nonce {
    type Err = NotHex128;
    fn from_str(s: &str) -> Result<Self, NotHex128> {
        s.parse().map(Nonce).map_err(|()| NotHex128)
    }
}

impl FromStr for Key {
    type Err = NotHex128;
    fn from_str(s: &str) -> Result<Self, NotHex128> {
        s.parse().map(Key).map_err(|()| NotHex128)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_values_differ_compare_and_round_trip() {
        let (a, b) = (Nonce::fresh().unwrap(), Nonce::fresh().unwrap());
        assert!(!a.matches(&b));
        let again: Nonce = a.to_string().parse().unwrap();
        assert!(a.matches(&again));
        assert_eq!(a.to_string().len(), 32);
        assert!("0123".parse::<Nonce>().is_err());
        assert!("g".repeat(32).parse::<Nonce>().is_err());
        assert!("ABCDEFabcdef0123456789abcdef0123".parse::<Key>().is_ok());
        assert_eq!(format!("{:?}", Key::fresh().unwrap()), "Key(..)");
    }

    #[test]
    fn drawn_nonces_differ() {
        let mut nonces = Nonces::new().unwrap();
        let drawn: Vec<Nonce> = (0..1000).map(|_| nonces.draw()).collect();
        for (i, a) in drawn.iter().enumerate() {
            assert!(drawn[i + 1..].iter().all(|b| !a.matches(b)));
        }
    }
}
