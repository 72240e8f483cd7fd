//! The UDP thread: `HELLO`, `ALIVE` and `AWAKE` from every client, on the registration port.
//!
//! Where a client's datagram comes from is its public endpoint: what its NAT made of its
//! private one, and what peers behind other NATs must send to. The registry believes a new
//! address only when it comes with the answer to a challenge sent over the client's own TCP
//! connection (see [`Registry::announce`](super::registry::Registry::announce)).

use super::registry::Announced;
use super::Shared;
use crate::wire::Announce;
use crate::worker::Stop;
use std::net::UdpSocket;
use std::time::Duration;

/// How long the UDP thread pauses after a failed receive.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The UDP thread: hands every well-formed announcement to the registry, which believes
/// only what is proven (see [`Registry::announce`](super::registry::Registry::announce)); drops everything else.
pub(super) fn receive_announcements(udp: &UdpSocket, registry: &Shared, stop: &Stop) {
    let mut buf = [0u8; 1500];
    while !stop.requested() {
        let (len, from) = match udp.recv_from(&mut buf) {
            Ok(received) => received,
            // ICMP errors and the like are reported on later calls: not fatal. A pause, so
            // that an error that keeps coming cannot spin a core.
            Err(_) => {
                stop.pause(ERROR_PAUSE);
                continue;
            }
        };
        // A trailing newline (`echo ... | nc -u` adds one) is forgiven: an announcement holds
        // no free text. (A peer's chat datagram does, and is taken exactly as sent.)
        let Some(announce) = std::str::from_utf8(&buf[..len])
            .ok()
            .and_then(|text| text.trim_end().parse::<Announce>().ok())
        else {
            continue;
        };
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
