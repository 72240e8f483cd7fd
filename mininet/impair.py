#!/usr/bin/python3
"""A bad link without netem: holds packets and lets them go late, or drops them.

This machine's kernel has no netem (`tc qdisc add ... netem` says "Specified qdisc kind is
unknown"), so the lab impairs a link from userspace: iptables hands each packet of the link
to a queue (`-j NFQUEUE --queue-num N`), and this program, bound to that queue through
libnetfilter_queue (Debian package libnetfilter-queue1, used here through ctypes), decides
what becomes of it:

  - lost: a Gilbert-Elliott chain (two states, good and bad): in the bad state every packet
    is dropped, in the good state none; at each step it enters the bad state with probability
    p and leaves it with probability r = 1/burst, so losses come in bursts of `burst` steps on
    average and `loss` of the time is bad (p = loss * r / (1 - loss)). The chain steps once
    per 10 ms slot (a link carrying 100 packets a second), also while no packet passes: a
    fade is a stretch of time, as on a radio link. (Stepping once per packet, as netem's
    `loss gemodel` does, turns a burst of 40 on a sparse flow, a keep-alive a second, into
    40 s of silence, and one lost TCP SYN into a minute without a connection.)
  - otherwise held for `delay` plus a uniform jitter in [-jitter, +jitter] (as netem's
    `delay D J`), then accepted. Like netem with jitter, a packet may overtake another.

Run inside a lab host's namespace, one process for both directions of its link:

  impair.py --queue 0 DELAY_MS JITTER_MS LOSS_PERCENT BURST --queue 1 DELAY_MS ...

Prints `ready` once bound to every queue; at SIGTERM prints one line per queue
(`queue N: passed P, dropped D`) and exits. If it dies, the queued packets are dropped: the
link is then cut, never silently clean.
"""

import ctypes
import ctypes.util
import heapq
import os
import random
import select
import signal
import socket
import sys
import time

NF_DROP, NF_ACCEPT = 0, 1
NFQNL_COPY_META = 1
SLOT = 0.010  # the loss chain steps once per slot (s)

lib = ctypes.CDLL(ctypes.util.find_library('netfilter_queue') or 'libnetfilter_queue.so.1',
                  use_errno=True)
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_void_p)
lib.nfq_open.restype = ctypes.c_void_p
lib.nfq_close.argtypes = [ctypes.c_void_p]
lib.nfq_bind_pf.argtypes = [ctypes.c_void_p, ctypes.c_uint16]
lib.nfq_create_queue.restype = ctypes.c_void_p
lib.nfq_create_queue.argtypes = [ctypes.c_void_p, ctypes.c_uint16, CALLBACK, ctypes.c_void_p]
lib.nfq_destroy_queue.argtypes = [ctypes.c_void_p]
lib.nfq_set_mode.argtypes = [ctypes.c_void_p, ctypes.c_uint8, ctypes.c_uint32]
lib.nfq_set_queue_maxlen.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
lib.nfq_fd.argtypes = [ctypes.c_void_p]
lib.nfq_handle_packet.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
lib.nfq_get_msg_packet_hdr.restype = ctypes.POINTER(ctypes.c_uint32)  # packet_id comes first
lib.nfq_get_msg_packet_hdr.argtypes = [ctypes.c_void_p]
lib.nfq_set_verdict.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32,
                                ctypes.c_uint32, ctypes.c_void_p]


class Direction:
    """One queue: one direction of the link, with its own loss chain and delay."""

    def __init__(self, queue, delay_ms, jitter_ms, loss_percent, burst):
        self.queue = queue
        self.delay, self.jitter = delay_ms / 1000, jitter_ms / 1000
        loss = loss_percent / 100
        self.leave_bad = 1 / max(burst, 1)
        self.enter_bad = loss * self.leave_bad / (1 - loss) if loss < 1 else 1.0
        self.bad = False
        self.stepped = time.monotonic()
        self.passed = self.dropped = 0
        self.handle = None  # the nfq queue handle

    def lost(self):
        """Advances the Gilbert-Elliott chain to now; True when this packet is lost."""
        now = time.monotonic()
        steps = max(1, int((now - self.stepped) / SLOT))
        self.stepped = max(self.stepped + steps * SLOT, now - SLOT)
        # After k steps of a two-state chain, the chance of being bad is pi + (start - pi)
        # * lam**k, with pi = p / (p + r) the share of bad time and lam = 1 - p - r.
        total = self.enter_bad + self.leave_bad
        share = self.enter_bad / total if total else 0.0
        lam = 1 - total
        bad_chance = share + ((1.0 if self.bad else 0.0) - share) * lam ** steps
        self.bad = random.random() < bad_chance
        return self.bad

    def hold(self):
        return max(0.0, self.delay + random.uniform(-self.jitter, self.jitter))


def main(argv):
    directions, i = [], 0
    while i < len(argv):
        if argv[i] != '--queue' or len(argv) - i < 6:
            sys.exit('usage: impair.py --queue N DELAY_MS JITTER_MS LOSS_PERCENT BURST ...')
        n, d, j, loss, burst = argv[i + 1:i + 6]
        directions.append(Direction(int(n), float(d), float(j), float(loss), float(burst)))
        i += 6
    if not directions:
        sys.exit('usage: impair.py --queue N DELAY_MS JITTER_MS LOSS_PERCENT BURST ...')

    held = []  # (release time, sequence, direction index, packet id)
    sequence = [0]

    def on_packet(_qh, _nfmsg, nfad, data):
        direction = directions[data or 0]
        packet_id = socket.ntohl(lib.nfq_get_msg_packet_hdr(nfad)[0])
        if direction.lost():
            direction.dropped += 1
            lib.nfq_set_verdict(direction.handle, packet_id, NF_DROP, 0, None)
        else:
            direction.passed += 1
            sequence[0] += 1
            heapq.heappush(held, (time.monotonic() + direction.hold(), sequence[0],
                                  data or 0, packet_id))
        return 0

    callback = CALLBACK(on_packet)  # kept referenced for as long as the queues live
    h = lib.nfq_open()
    if not h:
        sys.exit(f'impair.py: nfq_open failed (errno {ctypes.get_errno()}): '
                 'is nfnetlink_queue available, and are we root?')
    lib.nfq_bind_pf(h, socket.AF_INET)  # a no-op on kernels since 3.8; harmless
    for index, direction in enumerate(directions):
        direction.handle = lib.nfq_create_queue(h, direction.queue, callback, index)
        if not direction.handle:
            sys.exit(f'impair.py: cannot bind queue {direction.queue} (in use?)')
        lib.nfq_set_mode(direction.handle, NFQNL_COPY_META, 0)
        lib.nfq_set_queue_maxlen(direction.handle, 4096)
    fd = lib.nfq_fd(h)
    sock = socket.socket(fileno=os.dup(fd))  # only for setsockopt and recv
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    print('ready', flush=True)
    buffer = ctypes.create_string_buffer(65536)
    while not stopping:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, index, packet_id = heapq.heappop(held)
            lib.nfq_set_verdict(directions[index].handle, packet_id, NF_ACCEPT, 0, None)
        timeout = max(0.0, held[0][0] - now) if held else 0.5
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        except InterruptedError:
            continue
        if ready:
            try:
                n = os.readv(fd, [buffer])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # ENOBUFS: the kernel dropped queue messages; go on
                continue
            lib.nfq_handle_packet(h, buffer, n)
    # Let what is held go at once, so that the link is clean again when the rules go.
    for _, _, index, packet_id in held:
        lib.nfq_set_verdict(directions[index].handle, packet_id, NF_ACCEPT, 0, None)
    for direction in directions:
        print(f'queue {direction.queue}: passed {direction.passed}, dropped {direction.dropped}',
              flush=True)
        lib.nfq_destroy_queue(direction.handle)
    lib.nfq_close(h)


if __name__ == '__main__':
    main(sys.argv[1:])
