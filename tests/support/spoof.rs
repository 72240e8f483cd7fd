//! Sending UDP datagrams with a forged source address, as an off-path attacker does: a raw
//! IPv4 socket, on which the test writes the IP and UDP headers itself. Only root may open
//! one; [`Spoofer::open`] says so in one line and returns `None` for anyone else, and the
//! test that needed it then skips.

use std::net::SocketAddrV4;

// The few C functions and constants needed, from the C library std already links.
extern "C" {
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn sendto(
        fd: i32,
        buf: *const u8,
        len: usize,
        flags: i32,
        addr: *const SockaddrIn,
        addrlen: u32,
    ) -> isize;
    fn close(fd: i32) -> i32;
}
const AF_INET: i32 = 2;
const SOCK_RAW: i32 = 3;
/// With this protocol the kernel takes the IP header from us (IP_HDRINCL), filling in the
/// checksum and the length.
const IPPROTO_RAW: i32 = 255;
const IPPROTO_UDP: u8 = 17;

#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: u16,
    addr: [u8; 4],
    zero: [u8; 8],
}

/// A raw socket for forged datagrams; closed when dropped.
pub struct Spoofer {
    fd: i32,
}

impl Spoofer {
    /// Opens the raw socket, or says in one line why this test is skipped.
    pub fn open(test: &str) -> Option<Spoofer> {
        // SAFETY: socket() takes plain integers and returns a descriptor or -1.
        let fd = unsafe { socket(AF_INET, SOCK_RAW, IPPROTO_RAW) };
        if fd < 0 {
            eprintln!("skipped {test}: forging source addresses needs a raw socket (run as root)");
            return None;
        }
        Some(Spoofer { fd })
    }

    /// Sends `payload` to `to` as a UDP datagram that claims to come from `from`.
    pub fn send(&self, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
        let udp_len = 8 + payload.len();
        let total = 20 + udp_len;
        let mut packet = Vec::with_capacity(total);
        // IPv4 header: version 4, 5 words long; total length; DF; TTL 64; UDP; checksum 0
        // (the kernel fills it in); source; destination.
        packet.extend_from_slice(&[0x45, 0]);
        packet.extend_from_slice(&(total as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0]);
        packet.extend_from_slice(&from.ip().octets());
        packet.extend_from_slice(&to.ip().octets());
        // UDP header: ports, length, checksum 0 (none, which IPv4 allows).
        packet.extend_from_slice(&from.port().to_be_bytes());
        packet.extend_from_slice(&to.port().to_be_bytes());
        packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
        packet.extend_from_slice(&[0, 0]);
        packet.extend_from_slice(payload);
        let addr = SockaddrIn {
            family: AF_INET as u16,
            port: 0,
            addr: to.ip().octets(),
            zero: [0; 8],
        };
        // SAFETY: the buffer and the address live across the call, with their lengths.
        let sent = unsafe {
            sendto(
                self.fd,
                packet.as_ptr(),
                packet.len(),
                0,
                &addr,
                std::mem::size_of::<SockaddrIn>() as u32,
            )
        };
        assert_eq!(
            sent,
            packet.len() as isize,
            "a forged datagram was not sent"
        );
    }
}

impl Drop for Spoofer {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { close(self.fd) };
    }
}
