//! Tags that prove who sent a message, without revealing the key: SipHash-2-4, a keyed
//! function designed for exactly this (short messages, a 128-bit key, a 64-bit tag).
//!
//! Two peers that share a [`Key`] tag their probes with it: `tag(key, what they say)`.
//! Anyone can see a tag, but without the key nobody can compute the tag of anything else,
//! nor learn the key from tags they saw. A host that merely owns a peer's old address, or a
//! stranger with the same private address behind another NAT, can therefore never answer a
//! probe as that peer. (SipHash is by Jean-Philippe Aumasson and Daniel J. Bernstein; the
//! test below checks this code against their paper's test vector.)
//!
//! The server uses the same function to derive each pair's key from a secret of its own and
//! the two clients' session nonces, so it keeps no table of pairs: see [`derive()`].

use crate::nonce::{Key, Nonce};

/// The 64-bit tag of `parts` (concatenated) under `key`.
pub fn tag(key: &Key, parts: &[&[u8]]) -> u64 {
    let key = key.bytes();
    let k0 = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(key[8..].try_into().expect("8 bytes"));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let message: Vec<u8> = parts.concat();
    let mut blocks = message.chunks_exact(8);
    for block in &mut blocks {
        let m = u64::from_le_bytes(block.try_into().expect("8 bytes"));
        v[3] ^= m;
        rounds(&mut v, 2);
        v[0] ^= m;
    }
    // The last block: the remaining bytes, and the message length in its top byte.
    let mut last = [0u8; 8];
    let rest = blocks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = message.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    rounds(&mut v, 2);
    v[0] ^= m;
    v[2] ^= 0xff;
    rounds(&mut v, 4);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// `count` SipRounds.
fn rounds(v: &mut [u64; 4], count: usize) {
    for _ in 0..count {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
}

/// The key of the pair of sessions `a` and `b` (in either order), derived from the server's
/// own `secret`: both peers are handed the same key, and the server stores none.
pub fn derive(secret: &Key, a: &Nonce, b: &Nonce) -> Key {
    let (first, second) = if a.bytes() <= b.bytes() {
        (a, b)
    } else {
        (b, a)
    };
    let half = |label: &[u8]| tag(secret, &[label, first.bytes(), second.bytes()]).to_le_bytes();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&half(b"pair key, half 1"));
    bytes[8..].copy_from_slice(&half(b"pair key, half 2"));
    Key::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_siphash_paper() {
        // Key 00 01 .. 0f, message 00 01 .. 0e (15 bytes): tag a129ca6149be45e5.
        let key: Key = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let message: Vec<u8> = (0u8..15).collect();
        assert_eq!(tag(&key, &[&message]), 0xa129_ca61_49be_45e5);
        // The empty message: 726fdb47dd0e0e31.
        assert_eq!(tag(&key, &[]), 0x726f_db47_dd0e_0e31);
        // 63 bytes (seven whole blocks and seven left over): 958a324ceb064572.
        let message: Vec<u8> = (0u8..63).collect();
        assert_eq!(tag(&key, &[&message]), 0x958a_324c_eb06_4572);
        // Parts are simply concatenated.
        assert_eq!(
            tag(&key, &[&message[..20], &message[20..]]),
            0x958a_324c_eb06_4572
        );
    }

    #[test]
    fn a_pair_key_is_the_same_both_ways_and_differs_per_pair() {
        let secret = Key::fresh().unwrap();
        let (a, b, c) = (
            Nonce::fresh().unwrap(),
            Nonce::fresh().unwrap(),
            Nonce::fresh().unwrap(),
        );
        assert_eq!(derive(&secret, &a, &b), derive(&secret, &b, &a));
        assert_ne!(derive(&secret, &a, &b), derive(&secret, &a, &c));
        assert_ne!(
            derive(&secret, &a, &b),
            derive(&Key::fresh().unwrap(), &a, &b)
        );
    }
}
