//! How long to wait for an answer from a peer: its round trip, measured (RFC 6298).
//!
//! A fixed timer suits one link only. 250 ms between retransmissions is patient on a LAN
//! (a round trip of a millisecond) and far too eager on a satellite link (600 ms): every
//! message would be sent three times before its first acknowledgement could come back.
//! Five seconds before giving up is ample on a LAN and too short on an 800 ms link that
//! loses a quarter of its datagrams in bursts. So each peer's timers follow its path:
//!
//! - every round trip measured is a **sample**: a probe answered (its nonce says which
//!   probe), or a message acknowledged that was sent only once (Karn's rule: a message sent
//!   twice cannot tell which copy the acknowledgement answers);
//! - the samples are smoothed as TCP smooths them: `srtt`, the average, and `rttvar`, how much
//!   they vary. The retransmission timeout is `srtt + 4 × rttvar`: a little more than the
//!   slowest round trip this path usually has;
//! - a timeout that fires doubles the timeout until a new sample comes (the path may have
//!   become slower than any sample said; without the doubling, a path slower than our first
//!   guess would never yield a sample at all: every message would be sent twice); but a
//!   message's first copy is followed at the latest when it is due for the relay
//!   ([`RoundTrip::first_wait`]), or a dead path would keep it from the relay;
//! - the other timers are multiples of the measured timeout (not the doubled one, or a
//!   silent peer would push them back for ever): when a message goes through the relay as
//!   well, how long a path may stay silent before it is given up, when a message is
//!   reported not confirmed.

use std::time::Duration;

/// The timeout before any sample: today's LAN-friendly guess. A punch measures the path
/// before the first chat goes direct, so this matters mostly for the relay.
const INITIAL_RTO: Duration = Duration::from_millis(250);
/// The shortest timeout: a round trip of a millisecond must not mean a retransmission every
/// two (the receiver's scheduler alone can take longer). Linux's TCP uses the same floor.
const MIN_RTO: Duration = Duration::from_millis(200);
/// The longest timeout, however slow the path or often it doubled.
const MAX_RTO: Duration = Duration::from_secs(8);
/// A message unacknowledged this long is sent through the relay as well, at the least...
const RELAY_AFTER_MIN: Duration = Duration::from_secs(1);
/// ...and after this many timeouts on a slow path.
const RELAY_AFTER_RTOS: u32 = 2;
/// A message is reported not confirmed after this long at the least...
const GIVE_UP_MIN: Duration = Duration::from_secs(5);
/// ...after this many timeouts on a slow path...
const GIVE_UP_RTOS: u32 = 10;
/// ...and at the latest after this long.
const GIVE_UP_MAX: Duration = Duration::from_secs(60);
/// A path that answers nothing at all (no probe answer, no acknowledgement) this long at the
/// least, or this many timeouts on a slow one, is given up for the relay.
const SILENCE_MIN: Duration = Duration::from_secs(2);
const SILENCE_RTOS: u32 = 4;

/// The smoothed round trip to one peer, and the timers that follow from it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundTrip {
    /// The smoothed round trip and its variation, once a sample came.
    smoothed: Option<(Duration, Duration)>,
    /// How many times the timeout doubled since the last sample.
    doubled: u32,
}

impl RoundTrip {
    /// A round trip was measured: folded in with RFC 6298's gains (1/8 for the average,
    /// 1/4 for the variation).
    pub fn sample(&mut self, rtt: Duration) {
        self.smoothed = Some(match self.smoothed {
            None => (rtt, rtt / 2),
            Some((srtt, rttvar)) => {
                let error = srtt.abs_diff(rtt);
                (srtt * 7 / 8 + rtt / 8, rttvar * 3 / 4 + error / 4)
            }
        });
        self.doubled = 0;
    }

    /// A retransmission timer fired: wait twice as long from now on, until a sample says
    /// how long the path really takes.
    pub fn timed_out(&mut self) {
        if self.rto() < MAX_RTO {
            self.doubled += 1;
        }
    }

    /// How long to wait for an acknowledgement before sending again.
    pub fn rto(&self) -> Duration {
        let doubled = self.measured().saturating_mul(1 << self.doubled.min(8));
        doubled.min(MAX_RTO)
    }

    /// How long a message's first copy waits before the second: the timeout, but no longer
    /// than [`RoundTrip::relay_after`]. On a path that has just died the timeout has
    /// doubled to seconds; a message sent then would wait past its relay time, and past the
    /// moment it is given up on, with one copy sent on a dead path and none through the
    /// relay (the lab's `remap-default-keepalive` lost one so). Later copies wait the whole
    /// timeout: a copy that followed a retransmission by less than a round trip would be
    /// spurious, and a dead path is not flooded.
    pub fn first_wait(&self) -> Duration {
        self.rto().min(self.relay_after())
    }

    /// The timeout the samples alone give, before any doubling. The other timers are
    /// multiples of this one: they must not run away while a silent peer doubles the
    /// retransmission timeout again and again (a stalled peer would never be reported).
    fn measured(&self) -> Duration {
        match self.smoothed {
            None => INITIAL_RTO,
            Some((srtt, rttvar)) => (srtt + 4 * rttvar).clamp(MIN_RTO, MAX_RTO),
        }
    }

    /// How long a message waits for its acknowledgement before it goes through the relay
    /// as well.
    pub fn relay_after(&self) -> Duration {
        (self.measured() * RELAY_AFTER_RTOS).max(RELAY_AFTER_MIN)
    }

    /// How long a message is retransmitted before it is reported not confirmed.
    pub fn give_up_after(&self) -> Duration {
        (self.measured() * GIVE_UP_RTOS).clamp(GIVE_UP_MIN, GIVE_UP_MAX)
    }

    /// How long a direct path may answer nothing before the relay replaces it.
    pub fn silence_allowed(&self) -> Duration {
        (self.measured() * SILENCE_RTOS).max(SILENCE_MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_lan_keeps_the_floors() {
        let mut lan = RoundTrip::default();
        assert_eq!(lan.rto(), INITIAL_RTO);
        for _ in 0..20 {
            lan.sample(MS);
        }
        assert_eq!(lan.rto(), MIN_RTO);
        assert_eq!(lan.relay_after(), RELAY_AFTER_MIN);
        assert_eq!(lan.give_up_after(), GIVE_UP_MIN);
        assert_eq!(lan.silence_allowed(), SILENCE_MIN);
    }

    #[test]
    fn a_slow_path_stretches_every_timer() {
        let mut satellite = RoundTrip::default();
        for rtt in [600, 650, 580, 700, 620] {
            satellite.sample(rtt * MS);
        }
        let rto = satellite.rto();
        assert!(rto > 700 * MS && rto < 2000 * MS, "{rto:?}");
        assert!(satellite.give_up_after() > GIVE_UP_MIN);
        assert!(satellite.relay_after() > RELAY_AFTER_MIN);
    }

    #[test]
    fn timeouts_double_until_a_sample_and_stay_bounded() {
        let mut path = RoundTrip::default();
        path.timed_out();
        assert_eq!(path.rto(), 2 * INITIAL_RTO);
        for _ in 0..40 {
            path.timed_out();
        }
        assert_eq!(path.rto(), MAX_RTO);
        assert_eq!(
            path.give_up_after(),
            GIVE_UP_MIN,
            "a silent peer is still reported in time"
        );
        path.sample(10 * MS);
        assert_eq!(path.rto(), MIN_RTO);
    }
}
