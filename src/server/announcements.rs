//! The UDP threads: `HELLO`, `ALIVE` and `AWAKE` from every client, on the registration port;
//! and `NAT_PROBE` (NAT discovery) on that port and on the second one.
//!
//! Where a client's datagram comes from is its public endpoint: what its NAT made of its
//! private one, and what peers behind other NATs must send to. The registry believes a new
//! address only when it comes with the answer to a challenge sent over the client's own TCP
//! connection (see [`Registry::announce`](super::registry::Registry::announce)).
//!
//! NAT discovery (`docs/PROTOCOL.md`): a client sends `NAT_PROBE` to both ports, and is told
//! over TCP where each came from (`NAT_SEEN`): the same address both times, or not, says
//! whether its NAT keeps one mapping for every destination. A probe to the registration port
//! is also answered with a `NAT_OPEN` from a third port, one the OS picked for this server
//! and that no client ever sends to: whether that gets in says whether the client's NAT
//! admits what it never asked for. Not from the second port: a client probes that one too,
//! and a NAT keeps the entry a probe made for 30 s or more, so the answer of a later run (a
//! client restarted on the same port, or registering again) would get in as a reply, and a
//! home router would read as one that filters nothing (the NAT lab saw it). And a NAT whose
//! router takes an unsolicited `NAT_OPEN` for itself keeps an entry for that flow, which
//! would make the client's own probe to the same port collide and leave on another port: a
//! home router read as symmetric (the lab's bare MASQUERADE, every run).
//!
//! Only the client's own probes count (their nonce came over its TCP connection), and the
//! one datagram the server sends goes to the client's known endpoint only, shorter than the
//! probe that asked for it.

use super::registry::Announced;
use super::Shared;
use crate::wire::{Announce, NatOpen};
use crate::worker::Stop;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// How long the UDP thread pauses after a failed receive.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The UDP thread: hands every well-formed announcement to the registry, which believes
/// only what is proven (see [`Registry::announce`](super::registry::Registry::announce)); drops everything else.
/// `opener` is the port that answers NAT probes that came here (see the top of this file).
pub(super) fn receive_announcements(
    udp: &UdpSocket,
    opener: Option<&UdpSocket>,
    registry: &Shared,
    stop: &Stop,
) {
    let port = udp.local_addr().map_or(0, |a| a.port());
    let mut buf = [0u8; 1500];
    while !stop.requested() {
        let Some((announce, from)) = receive(udp, &mut buf, stop) else {
            continue;
        };
        if let Announce::NatProbe { id, nonce } = &announce {
            let answer = registry.lock().nat_probe(id, nonce, from, port, true);
            // The datagram leaves once the lock is let go.
            if let (Some(opener), Some(answer)) = (opener, answer) {
                if let Some(to) = answer.open_to {
                    let open = NatOpen {
                        nonce: answer.nonce,
                    };
                    let _ = opener.send_to(open.to_string().as_bytes(), to);
                }
            }
            continue;
        }
        let mut members = registry.lock();
        let id = announce.id();
        match members.announce(&announce, from) {
            Announced::Ready(public) => crate::event!("{id} {public}"),
            Announced::Awake(public) => crate::event!("{id} Awake {public}"),
            Announced::Moved(public) => crate::event!("{id} moved to {public}"),
            Announced::Refreshed | Announced::Rejected => {}
        }
    }
}

/// The second port's thread: NAT probes only (see the top of this file); the registry
/// answers each over the client's TCP connection, and nothing is sent from here.
pub(super) fn receive_nat_probes(udp: &UdpSocket, registry: &Shared, stop: &Stop) {
    let port = udp.local_addr().map_or(0, |a| a.port());
    let mut buf = [0u8; 1500];
    while !stop.requested() {
        if let Some((Announce::NatProbe { id, nonce }, from)) = receive(udp, &mut buf, stop) {
            registry.lock().nat_probe(&id, &nonce, from, port, false);
        }
    }
}

/// The next datagram, if it is a well-formed announcement, and where it came from.
fn receive(udp: &UdpSocket, buf: &mut [u8], stop: &Stop) -> Option<(Announce, SocketAddr)> {
    let (len, from) = match udp.recv_from(buf) {
        Ok(received) => received,
        // ICMP errors and the like are reported on later calls: not fatal. A pause, so
        // that an error that keeps coming cannot spin a core.
        Err(_) => {
            stop.pause(ERROR_PAUSE);
            return None;
        }
    };
    // A trailing newline (`echo ... | nc -u` adds one) is forgiven: an announcement holds
    // no free text. (A peer's chat datagram does, and is taken exactly as sent.)
    let text = std::str::from_utf8(&buf[..len]).ok()?;
    Some((text.trim_end().parse().ok()?, from))
}
