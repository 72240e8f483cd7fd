#!/usr/bin/python3
"""Unattended checks of natchat across the NAT lab of topo.py: `execute_mn.sh --test`.

Each scenario builds a fresh lab in the NAT mode it needs (that takes well under a second),
so nothing carries over from one scenario to the next: no conntrack entry in a router, no
registration on the server, no link left down. Each one starts `natchat server` on the
server host and `natchat client` processes on the client hosts, types commands into their
stdin and waits, with a deadline, for the lines they print.

Prints one line per scenario, `PASS name (x.x s)` or `FAIL name: reason` (followed on a
failure by what every process printed and the routers' conntrack tables, indented), then
`N passed, N failed`. Exits 0 only when every scenario passed.

Usage (as root): scenarios.py [--natchat PATH] [-v] [--trace] [NAME ...]
"""

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from subprocess import PIPE, STDOUT, TimeoutExpired

from mininet.log import setLogLevel

import recorder

from topo import (CGNAT_PUBLIC_IP, CLIENT_UDP_PORT, CLIENTS, LabClash, NATPROBE, NatRouter,
                  REFLECT_PORT, SERVER_IP, SERVER_PORT, SITES, TIERS, client_command,
                  finish_tier_check, server_command, set_site_tier, start_lab,
                  start_tier_checks, stop_lab)

# The server forgets a client silent this long; clients send a keep-alive this often. Short,
# so that the link-cut scenario takes seconds, not the 30 s of the defaults.
TIMEOUT_SECS = 5
KEEPALIVE_SECS = 1
# The deadline for anything that should happen "at once". Generous: a loaded 2-core machine
# can stall a process for a second or two, and a deadline only costs time when it fails.
SOON = 10.0
# No scenario may take longer than this, whatever hangs (a stuck Mininet command included).
SCENARIO_LIMIT = 60

# Ask the kernel to kill each natchat process if this script dies without cleaning up
# (even by SIGKILL): setpriv (util-linux) sets the parent-death signal, then runs natchat.
PDEATHSIG = ['setpriv', '--pdeathsig', 'KILL', '--'] if shutil.which('setpriv') else []


class Failed(Exception):
    """A scenario's expectation was not met; the message says which, in one line."""


class Proc:
    """A natchat process on a lab host, with everything it prints collected by a thread."""

    def __init__(self, host, name, argv):
        self.name = name
        self.host = host
        self.lines = []  # (seconds since start, line)
        self.lock = threading.Lock()
        self.eof = threading.Event()
        self.start = time.monotonic()
        self.popen = host.popen(PDEATHSIG + argv, stdin=PIPE, stdout=PIPE, stderr=STDOUT,
                                text=True, bufsize=1)
        threading.Thread(target=self._read, name=f'read-{name}', daemon=True).start()

    def _read(self):
        for line in self.popen.stdout:
            with self.lock:
                self.lines.append((time.monotonic() - self.start, line.rstrip('\n')))
        self.eof.set()

    def mark(self):
        """A position in the output: wait_for(..., since=mark) looks only at what follows."""
        with self.lock:
            return len(self.lines)

    def output(self, since=0):
        with self.lock:
            return [line for _, line in self.lines[since:]]

    def type(self, line):
        """One line on the process's stdin, as a person would type it."""
        try:
            self.popen.stdin.write(line + '\n')
            self.popen.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise Failed(f'{self.name} is no longer running (typed {line!r})')

    def wait_for(self, pattern, timeout=SOON, since=0):
        """Waits for a line (after `since`) that matches the regular expression `pattern`;
        returns its match. Fails when the deadline passes or the process ends first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            ended = self.eof.is_set()  # before reading, so that no last line is missed
            for line in self.output(since):
                match = regex.search(line)
                if match:
                    return match
            if ended:
                raise Failed(f'{self.name} ended (exit code {self.popen.wait()}) '
                             f'without printing a line matching {pattern!r}')
            if time.monotonic() > deadline:
                raise Failed(f'{self.name} printed no line matching {pattern!r} '
                             f'within {timeout:.0f} s')
            time.sleep(0.05)

    def exit_code(self, timeout=SOON):
        try:
            return self.popen.wait(timeout)
        except TimeoutExpired:
            raise Failed(f'{self.name} still running {timeout:.0f} s after it was asked to exit')

    def kill(self):
        """SIGKILL: the process gets no chance to say goodbye; its kernel closes its sockets."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(SOON)

    def transcript(self):
        with self.lock:
            return [f'{self.name:>6} {t:6.2f}s | {line}' for t, line in self.lines]


# Impaired links. Prefer netem where the kernel has it (a student's Ubuntu does); this
# machine's kernel has none, so fall back to NFQUEUE and mininet/impair.py, which holds each
# packet in userspace and lets it go late, or drops it (see that file).
IMPAIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'impair.py')


def netem_works(node, intf):
    """Whether `tc` accepts a netem qdisc on `intf` (tried, then removed)."""
    if 'rc=0' not in node.cmd(f'tc qdisc add dev {intf} root netem delay 1ms 2>/dev/null; echo rc=$?'):
        return False
    node.cmd(f'tc qdisc del dev {intf} root 2>/dev/null')
    return True


def gilbert_elliott(loss_percent, burst):
    """netem's `loss gemodel p r 1-h 1-k` for `loss_percent` lost in bursts of mean `burst`
    packets: every packet lost in the bad state, none in the good one."""
    r = 1 / max(burst, 1)
    loss = loss_percent / 100
    p = loss * r / (1 - loss)
    return f'loss gemodel {100 * p:.4f}% {100 * r:.4f}% 100% 0%'


class Impairment:
    """Delay, jitter and bursty loss on some of the lab's links, until remove().

    Each hop is (node, interface, delay_ms, jitter_ms, loss_percent, burst): with netem, the
    qdisc of that interface's egress; without, an NFQUEUE rule in `node`'s raw table (the
    packets `node` receives on the interface, or with interface 'OUTPUT' the packets it sends)
    and one impair.py process per node holding that node's queues."""

    def __init__(self, lab, hops):
        self.lab, self.netem, self.procs, self.rules = lab, [], [], []
        first_node, first_intf = hops[0][0], hops[0][1]
        if all(netem_works(lab.net[n], i) for n, i, *_ in hops if i != 'OUTPUT'):
            for node, intf, delay, jitter, loss, burst in hops:
                intf = f'{node}-eth0' if intf == 'OUTPUT' else intf
                self.netem.append((node, intf))
                lab.net[node].cmd(f'tc qdisc replace dev {intf} root netem delay {delay}ms '
                                  f'{jitter}ms {gilbert_elliott(loss, burst) if loss else ""}')
            self.how = 'netem'
            return
        self.how = 'NFQUEUE + impair.py'
        by_node = {}
        for node, intf, *params in hops:
            by_node.setdefault(node, []).append((intf, params))
        for node, queues in by_node.items():
            argv = ['/usr/bin/python3', IMPAIR]
            for queue, (intf, params) in enumerate(queues):
                argv += ['--queue', str(queue)] + [str(p) for p in params]
            proc = lab.net[node].popen(PDEATHSIG + argv, stdout=PIPE, stderr=STDOUT, text=True)
            self.procs.append((node, proc))
            ready = proc.stdout.readline().strip()
            if ready != 'ready':
                self.remove()
                raise LabError(f'lab: impair.py did not start in {node}: {ready!r} '
                               '(is libnetfilter-queue1 installed?)')
            for queue, (intf, _) in enumerate(queues):
                rule = (f'OUTPUT -j NFQUEUE --queue-num {queue}' if intf == 'OUTPUT' else
                        f'PREROUTING -i {intf} -j NFQUEUE --queue-num {queue}')
                lab.net[node].cmd(f'iptables -t raw -A {rule}')
                self.rules.append((node, rule))

    def remove(self):
        """Removes the impairment; returns what impair.py counted (passed, dropped)."""
        for node, rule in self.rules:
            self.lab.net[node].cmd(f'iptables -t raw -D {rule}')
        for node, intf in self.netem:
            self.lab.net[node].cmd(f'tc qdisc del dev {intf} root 2>/dev/null')
        counts = []
        for node, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                out = proc.communicate(timeout=5)[0]
            except TimeoutExpired:
                proc.kill()
                out = proc.communicate()[0]
            counts += [f'{node} {line}' for line in out.splitlines() if line.startswith('queue')]
            if proc.returncode not in (0, -signal.SIGTERM):
                counts.append(f'{node} impair.py ended with {proc.returncode}')
        self.rules, self.netem, self.procs = [], [], []
        return counts

    def alive(self):
        return all(proc.poll() is None for _, proc in self.procs)


class Lab:
    """A running lab and the natchat processes started in it."""

    def __init__(self, net):
        self.net = net
        self.procs = []
        self.summary = []  # lines a scenario wants printed under its PASS or FAIL line
        self.kept = []     # transcripts of processes already stopped, for a failure report
        self.recorder = None  # recorder.Recorder: --trace's, or one a scenario asked for

    def record(self):
        """The lab's captures and conntrack events (recorder.py): --trace's recorder, or else
        one started now, whose files are removed when the lab stops."""
        if not self.recorder:
            self.recorder = recorder.Recorder(self.net, tempfile.mkdtemp(prefix='natchat-rec-'),
                                              keep=False)
        return self.recorder

    def server(self, timeout_secs=TIMEOUT_SECS, label='server'):
        server = self._spawn('server', server_command(NATCHAT, timeout_secs=timeout_secs),
                             label=label)
        server.wait_for(r'^natchat server listening on ')
        return server

    def client(self, host, keepalive_secs=KEEPALIVE_SECS, extra=()):
        """Starts natchat client `host` on host `host` (with the `extra` arguments); returns it
        once it is registered, with the public endpoint the server saw as `.public`."""
        self.reachable(host)
        argv = client_command(host, NATCHAT, keepalive_secs=keepalive_secs) + list(extra)
        client = self._spawn(host, argv)
        registered = client.wait_for(rf'^Registered as {host}; public endpoint (\S+)\.$')
        client.public = registered.group(1)
        client.wait_for(r'^Commands: ')
        return client

    def _spawn(self, name, argv, label=None):
        """Starts `argv` on host `name`; `label` names it in transcripts (default: `name`)."""
        proc = Proc(self.net[name], label or name, argv)
        self.procs.append(proc)
        return proc

    def reachable(self, host):
        """Fails early, and says so, when the lab itself cannot carry a packet to the server:
        then a natchat failure would say nothing about natchat."""
        if ' 0% packet loss' not in self.net[host].cmd(f'ping -c1 -W2 {SERVER_IP}'):
            raise Failed(f'lab: {host} cannot ping the server {SERVER_IP}')

    def conntrack(self):
        """Every router's connection-tracking (NAT) table, for a failure report."""
        lines = []
        for router in (node for node in self.net.hosts if isinstance(node, NatRouter)):
            table = router.cmd('cat /proc/net/nf_conntrack').splitlines()
            lines += [f'{router.name:>6} conntrack | {entry.strip()}'
                      for entry in table if ' udp ' in entry]
        return lines

    def stop(self):
        for proc in self.procs:
            try:
                proc.kill()
            except TimeoutExpired:
                pass

    def stop_procs(self, keep=False):
        """Stops every natchat process started so far, so that the next step starts afresh;
        with `keep`, their transcripts and the routers' tables stay for the failure report."""
        if keep:
            for proc in self.procs:
                self.kept += proc.transcript()
            self.kept += self.conntrack()
        self.stop()
        self.procs = []


@contextmanager
def lab(mode, trace_dir=None):
    """A running lab in `mode`; with `trace_dir`, everything its routers do is recorded there
    from the start (recorder.py)."""
    net = start_lab(mode)
    running = Lab(net)
    try:
        if trace_dir:
            running.recorder = recorder.Recorder(net, trace_dir)
        yield running
    finally:
        # Whatever ended the scenario, the lab is stopped whole: a Ctrl+C or SIGTERM arriving
        # now waits until it is, and the scenario's time limit no longer applies.
        signal.alarm(0)
        with signals_deferred():
            running.stop()
            if running.recorder:
                running.recorder.stop()
            stop_lab(net)


@contextmanager
def signals_deferred():
    """Holds Ctrl+C and SIGTERM back until the block is done, then delivers them."""
    pending = []
    deferred = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _: pending.append(signum)) for s in deferred}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for signum in pending:
            signal.raise_signal(signum)


# What the client prints, as patterns.

def from_line(sender, text):
    return rf'^From {re.escape(sender)} \[{re.escape(text)}\]$'


def left_line(who, reason):
    return rf'^{re.escape(who)} left \({reason}\)$'


def chat(sender, receiver, text, timeout=SOON):
    """`sender` sends `text` to `receiver`, which must show it. (Through the relay, a message
    arrives after the 1 s punch attempt: still well inside SOON.)"""
    since = receiver.mark()
    sender.type(f'@chat {receiver.name} {text}')
    receiver.wait_for(from_line(sender.name, text), timeout=timeout, since=since)


# A row of @show_list for an awake client: `<id> <public> Awake  private=<private>  path=<path>`,
# the path's word maybe followed by why (`relayed (these NATs cannot be punched)`), then
# `  nat=<kind>` once that peer's NAT discovery found its kind; or `(you)` for oneself. (An
# Asleep one reads `<id> Asleep`; the scenarios start none.)
LIST_ROW = re.compile(r'^(?P<id>\S+) (?P<public>\S+) Awake  private=(?P<private>\S+)  '
                      r'(?:path=(?P<path>\S+)(?: \((?P<why>[^)]*)\))?(?:  nat=(?P<nat>\S+))?'
                      r'|\(you\))$')


def show_list(client):
    """Types @show_list; returns {id: path} from the list it prints (the path's word only:
    `relayed`, whatever the reason)."""
    return {peer: row['path'] for peer, row in list_rows(client).items()}


def list_rows(client):
    """Types @show_list; returns {id: row} from the list it prints, each row a LIST_ROW
    match (`row['path']`, `row['why']`, `row['nat']`, ...)."""
    since = client.mark()
    client.type('@show_list')
    count = int(client.wait_for(r'^Online \((\d+)\):$', since=since).group(1))
    deadline = time.monotonic() + SOON
    while time.monotonic() < deadline:
        lines = client.output(since)
        start = max(i for i, line in enumerate(lines) if re.match(r'^Online \(\d+\):$', line))
        rows = [LIST_ROW.match(line) for line in lines[start + 1:start + 1 + count]]
        if len(rows) == count:
            if not all(rows):
                raise Failed(f'{client.name}: @show_list printed a row this script cannot read: '
                             f'{lines[start + 1 + rows.index(None)]!r}')
            return {row['id']: row for row in rows}
        time.sleep(0.05)
    raise Failed(f'{client.name}: @show_list printed fewer than {count} rows')


def expect_path(client, peer, path):
    seen = show_list(client).get(peer.name)
    if seen != path:
        raise Failed(f'{client.name} lists {peer.name} as {seen or "absent"}, expected {path}')


def known(client, peer):
    """Waits until `client` knows `peer`: in its initial list, or from a later join."""
    client.wait_for(rf'^{re.escape(peer.name)} ({re.escape(peer.public)}\s|joined \()')


def pair(lab, a, b, extra=()):
    """Starts clients `a` then `b` (with the `extra` arguments) and waits until each knows the
    other."""
    first, second = lab.client(a, extra=extra), lab.client(b, extra=extra)
    known(first, second)
    known(second, first)
    return first, second


def discovered(server, client, since=0):
    """The NAT kind `client`'s discovery found, as the server printed it when told
    (`<id> NAT <kind>`): a client whose discovery found nothing tells nothing, and fails here."""
    return server.wait_for(rf'^{re.escape(client.name)} NAT (\S+)$', since=since).group(1)


def told_kind(server, client):
    """The NAT kind `client` told the server, if it has by now (None: not, or not yet)."""
    told = [m.group(1) for line in server.output()
            if (m := re.match(rf'^{re.escape(client.name)} NAT (\S+)$', line))]
    return told[-1] if told else None


def expect_kind(server, client, kind, since=0):
    """Fails unless `client`'s NAT discovery found `kind`: a wrong kind is a false statement
    to its user, and may send its chats to the relay for nothing."""
    found = discovered(server, client, since)
    if found != kind:
        raise Failed(f'{client.name} found its NAT {found}, expected {kind}')


# The kind a bare-MASQUERADE router's client must find: the one its router's own conntrack
# table shows. Such a router lets in only replies (an unsolicited datagram is taken by the
# router itself), and keeps the client's port for every destination, except after a punch
# collided on a stale entry: the client then has another public port for that peer, and
# Linux may give a new destination, the server's second port, that one too.
AS_THE_ROUTER_DID = 'as the router did'
SERVER_PROBED = re.compile(rf'src=(\S+) dst={re.escape(SERVER_IP)} sport={CLIENT_UDP_PORT} '
                           rf'dport=({SERVER_PORT}|{SERVER_PORT + 1}) (?:\[UNREPLIED\] )?'
                           rf'src={re.escape(SERVER_IP)} dst=\S+ sport=\d+ dport=(\d+)')


def expect_kind_as_routed(lab, server, client, table=None):
    """Fails unless `client`'s NAT discovery found what its bare-MASQUERADE router did:
    `cone` if the router gave its flows to the server's two UDP ports one public port,
    `symmetric` if two. `table`: conntrack lines (`conntrack -E` events, or the routers'
    tables now). Returns a line for the summary."""
    found = discovered(server, client)
    ip = CLIENTS[client.name][0]
    ports = {}
    for line in table if table is not None else lab.conntrack():
        m = SERVER_PROBED.search(line)
        if m and m.group(1) == ip:
            ports.setdefault(int(m.group(2)), m.group(3))
    if len(ports) < 2:
        raise LabError(f'lab: no conntrack entries for {client.name}\'s flows to both of the '
                       f'server\'s UDP ports (saw {ports}): nothing to compare its NAT kind with')
    routed = 'cone' if ports[SERVER_PORT] == ports[SERVER_PORT + 1] else 'symmetric'
    said = (f'{client.name} found its NAT {found}; its router gave its flows to the server\'s '
            f'ports {SERVER_PORT} and {SERVER_PORT + 1} public ports {ports[SERVER_PORT]} and '
            f'{ports[SERVER_PORT + 1]}')
    if found != routed:
        raise Failed(said + f': {routed}')
    return said


# The scenarios. Each takes a running lab in the mode it is listed with.

def chat_both_ways(lab, a, b, path=None, kind=None):
    """Starts the server and clients on hosts `a` and `b`, has each send the other a message,
    and, when `path` is given, checks that each lists the other on that path, and when `kind`
    is, that each one's NAT discovery found that kind (AS_THE_ROUTER_DID: the kind its
    router's conntrack table shows). Returns the two clients."""
    server = lab.server()
    first, second = pair(lab, a, b)
    chat(first, second, f'hello from {a}')
    chat(second, first, f'hello back from {b}')
    for client, peer in ((first, second), (second, first)):
        if kind == AS_THE_ROUTER_DID:
            lab.summary.append(expect_kind_as_routed(lab, server, client))
        elif kind:
            expect_kind(server, client, kind)
        if path:
            expect_path(client, peer, path)
        else:
            show_list(client)  # not checked, only shown (-v): which path did it end on?
    return first, second


def home_nat_direct(lab):
    """Home routers on both sides: each finds its NAT `cone`; the server coordinates a
    punch, and the path goes direct."""
    chat_both_ways(lab, 'h1', 'h3', 'direct', kind='cone')


def bare_masquerade(lab):
    """No input filter: a probe that arrives first breaks the far side's mapping (see
    topo.py), so the punch may fail; the relay must still deliver, both ways. Each side's NAT
    discovery finds what its router did (AS_THE_ROUTER_DID)."""
    chat_both_ways(lab, 'h1', 'h3', kind=AS_THE_ROUTER_DID)


# bare-heal: how long a pair behind bare MASQUERADE takes to get back to a direct path.
HEAL_WITHIN = 90.0  # issue 14's goal: direct again within 90 s, in every run
HEAL_CHAT_EVERY = 5.0  # the pair keeps chatting: a message each way this often
HEAL_POLL_EVERY = 1.0  # and both sides' @show_list is read this often
# The one-way delay each router's WAN gets (ms): the lab's links are otherwise instant, and
# then two probes sent "at once" by the two sides (within 0.1 ms) still do not cross in flight.
WAN_DELAY_MS = 10
PUBLIC = {'nat1': '10.0.0.1', 'nat2': '10.0.0.2'}


def bare_heal(lab):
    """Bare MASQUERADE, with a 10 ms one-way delay on each router's WAN (as any real
    internet path has): h1 and h3 chat while a stale conntrack entry from an earlier flow
    (nat1 sent 10.0.0.1:10081 -> 10.0.0.2:10081 just before) makes the first punch collide
    in both routers, so the pair starts relayed: the trap of tailscale issue 20910. They keep
    chatting, a message each way every 5 s, while both lists are polled. Passes when both are
    direct within 90 s of the first message: natchat retries a relayed peer's direct path only
    after 35 s, past conntrack's 30 s for the unanswered stale entry, which has then died. And
    the routers' captures show no chat datagram sent to the peer's public address before
    something came back from that address (the coordinated punch comes first). Each side's
    NAT discovery finds what its router did (AS_THE_ROUTER_DID, read from the routers'
    conntrack events): a `symmetric` read after a collision once kept this pair relayed for
    ever; the relay the kinds choose now expires as any relay does."""
    # Every flow each router makes, and when: the gap between the two sides' first probes of
    # each punch, and which one collided (the events themselves are printed on a failure, or
    # with -v); and what crossed each router's WAN.
    recording = lab.record()
    delay = Impairment(lab, [(r, f'{r}-wan', WAN_DELAY_MS, 0, 0, 1) for r in ('nat1', 'nat2')])
    try:
        server = lab.server()
        h1, h3 = pair(lab, 'h1', 'h3')
        # The stale entry: a flow between the two public 10081s that nobody answers.
        lab.net['nat1'].cmd(f'/usr/bin/python3 {NATPROBE} knock --bind {CLIENT_UDP_PORT} '
                            f'10.0.0.2:{CLIENT_UDP_PORT}')
        heal(lab, h1, h3, recording)
        table = recording.event_lines()
        for client in (h1, h3):
            lab.summary.append(expect_kind_as_routed(lab, server, client, table))
    except Failed:
        lab.kept += recording.event_lines()
        raise
    finally:
        counts = delay.remove()
        lab.summary.append(f'WAN delay {WAN_DELAY_MS} ms each way by {delay.how}'
                           + (f' ({"; ".join(counts)})' if counts else ''))
    if VERBOSE:
        lab.kept += recording.event_lines()
    time.sleep(0.5)
    lab.summary += chats_before_punch(recording.trace())


def heal(lab, h1, h3, recording):
    started, wall_started = time.monotonic(), time.time()
    chat(h1, h3, 'hello from h1')
    chat(h3, h1, 'hello back from h3')
    paths = (show_list(h1).get('h3'), show_list(h3).get('h1'))
    lab.summary.append(f'after the first exchange: h1 lists h3 {paths[0]}, h3 lists h1 {paths[1]}')
    # What the routers hold after the first punch (shown only on a failure, or with -v).
    lab.kept += [f'{line}   (after the first exchange)' for line in lab.conntrack()]
    history = [(0.0, paths)]
    sent, last_chat = 0, time.monotonic()
    while paths != ('direct', 'direct'):
        now = time.monotonic()
        if now - started > HEAL_WITHIN:
            lab.summary += punches(recording.trace(), wall_started)
            changes = ', '.join(f'{t:.0f} s {a}/{b}' for t, (a, b) in history)
            raise Failed(f'not direct within {HEAL_WITHIN:.0f} s: h1 lists h3 {paths[0]}, '
                         f'h3 lists h1 {paths[1]} (paths h1/h3 seen: {changes})')
        if now - last_chat >= HEAL_CHAT_EVERY:
            sent += 1
            last_chat = now
            chat(h1, h3, f'h1 keeps chatting {sent}')
            chat(h3, h1, f'h3 keeps chatting {sent}')
        time.sleep(HEAL_POLL_EVERY)
        paths = (show_list(h1).get('h3'), show_list(h3).get('h1'))
        if paths != history[-1][1]:
            history.append((time.monotonic() - started, paths))
    healed = time.monotonic() - started
    lab.summary.append(f'direct both ways {healed:.1f} s after the first message '
                       f'({sent} messages each way meanwhile; paths h1/h3 seen: '
                       + ', '.join(f'{t:.0f} s {a}/{b}' for t, (a, b) in history) + ')')
    lab.summary += punches(recording.trace(), wall_started)
    # Still carries the chat, both ways, on the healed path.
    chat(h1, h3, 'direct again from h1')
    chat(h3, h1, 'direct again from h3')


PEER_KINDS = ('PROBE_ACK', 'PROBE', 'CHAT', 'ACK')  # natchat's peer datagrams; others: the knock


def chats_before_punch(trace):
    """Reads both routers' WAN captures: fails when a CHAT datagram left for the peer's
    public address before anything had come back from that address; returns a line per
    router counting what went each way."""
    lines = []
    for router, me in PUBLIC.items():
        peer = next(ip for name, ip in PUBLIC.items() if name != router)
        packets = [(at, f'{p.src}.{p.sport}', f'{p.dst}.{p.dport}',
                    next((k for k in PEER_KINDS if p.payload.startswith(k.encode() + b' ')), None))
                   for at, _, p in trace.sightings(f'{router}-wan')
                   if p.proto == 'udp' and {p.src, p.dst} == {me, peer}]
        heard_from, counts, first_chat = set(), {}, None
        for at, src, dst, kind in packets:
            out = src.startswith(me + '.')
            counts[('out ' if out else 'in ') + (kind or 'other')] = \
                counts.get(('out ' if out else 'in ') + (kind or 'other'), 0) + 1
            if not out:
                heard_from.add(src)
            elif kind == 'CHAT' and dst not in heard_from:
                raise Failed(f'{router}: a CHAT left for {dst} before anything came back from '
                             'that address (no coordinated punch first)')
            elif kind == 'CHAT' and first_chat is None:
                first_chat = at
        lines.append(f'{router} WAN capture, peer to peer: '
                     + ', '.join(f'{n} {k}' for k, n in sorted(counts.items()))
                     + '; every CHAT went after an answer from its address')
    return lines


# A flow a router made for its client toward the other router (the peer's public address),
# from `conntrack -E -o timestamp`: when, from which client, and the public port it got.
CLIENTS_BY_IP = {ip: name for name, (ip, _router) in CLIENTS.items()}


def punches(trace, wall_started):
    """One line per punch, read from both routers' conntrack events: which client's first
    probe left first, how much later the other's did, and the public port each one got. A
    port other than the client's own 10081 is a collision: the other side's probe had reached
    this router first and been taken by the router itself, as an [UNREPLIED] flow."""
    flows = sorted((e.time, CLIENTS_BY_IP[e.orig[0]], str(e.reply[3]))
                   for events in trace.events.values() for e in events
                   if e.kind == 'NEW' and e.orig[0] in CLIENTS_BY_IP
                   and e.orig[2] in PUBLIC.values())
    lines, group = [], []
    for flow in flows + [None]:
        if group and (flow is None or flow[0] - group[0][0] > 1.0):
            first_at, first, port = group[0]
            said = [f'{first} first (public port {port})']
            for at, client, port in group[1:]:
                fate = 'collided' if int(port) != CLIENT_UDP_PORT else 'no collision'
                said.append(f'{client} {1000 * (at - first_at):.1f} ms later '
                            f'(public port {port}: {fate})')
            lines.append(f'punch at {first_at - wall_started:5.1f} s: ' + ', '.join(said))
            group = []
        if flow:
            group.append(flow)
    return lines


def symmetric_nat_relay(lab):
    """A new public port per destination: each finds its NAT `symmetric`; no punch can work,
    the server relays."""
    chat_both_ways(lab, 'h1', 'h3', 'relayed', kind='symmetric')


def same_nat_private(lab):
    """Two clients behind one NAT, which does not hairpin: they must use private addresses.
    (Their kinds are not checked: the second one's port 10081 is taken on the router's public
    side, so its mapping may well differ per destination. Behind one public address, the
    kinds rule out nothing.)"""
    h1, h2 = chat_both_ways(lab, 'h1', 'h2', 'private')
    if h1.public.split(':')[0] != h2.public.split(':')[0]:
        raise Failed(f'lab: h1 and h2 should share nat1\'s address; '
                     f'the server saw {h1.public} and {h2.public}')


def discovery_again(lab):
    """h1 is started, finds its home router `cone`, is killed, and is started again on the
    same port at once, as the ladder's next rung is: nat1 still holds the entries its first
    run's probes made, to both of the server's UDP ports (conntrack keeps them 30 s). Its
    second discovery must find `cone` again: the server's answer to the filtering question
    must not get in as a reply to an earlier probe. (It did, when that answer came from the
    server's second port: `open`, a false statement to the user.)"""
    server = lab.server()
    first = lab.client('h1')
    expect_kind(server, first, 'cone')
    first.kill()
    server.wait_for(r'^h1 is disconnected ')
    probed = re.compile(rf'src={re.escape(CLIENTS["h1"][0])} dst={re.escape(SERVER_IP)} '
                        rf'sport={CLIENT_UDP_PORT} dport={SERVER_PORT + 1} ')
    held = [line for line in lab.conntrack() if probed.search(line)]
    if not held:
        raise LabError('lab: nat1 holds no entry for the first run\'s probe to the server\'s '
                       'second port: nothing to test')
    since = server.mark()
    again = lab.client('h1')
    expect_kind(server, again, 'cone', since=since)
    lab.summary.append('h1 found cone twice; the second run started while nat1 held: '
                       + ' '.join(held[0].split('|', 1)[1].split()))


def link_cut_disappears(lab):
    """A host whose cable is pulled goes silent: the server's timeout removes it, and the
    others are told. Nothing else can notice: the host says nothing, its TCP stays open."""
    server = lab.server()
    h1 = lab.client('h1')
    h3 = lab.client('h3')
    h4 = lab.client('h4')
    for client in (h1, h3):
        known(client, h4)
    lab.net.configLinkStatus('h4', 's2', 'down')
    server.wait_for(rf'^h4 is disappeared {re.escape(h4.public)}$', timeout=TIMEOUT_SECS + SOON)
    for client in (h1, h3):
        client.wait_for(left_line('h4', 'disappeared'))
        listed = show_list(client)
        if 'h4' in listed:
            raise Failed(f'{client.name} still lists h4 after it disappeared')


def exit_and_kill(lab):
    """Leaving with @exit (deregistered) and being killed (disconnected), across the NATs."""
    server = lab.server()
    h1 = lab.client('h1')
    h2 = lab.client('h2')
    h3 = lab.client('h3')
    for client in (h2, h3):
        known(client, h1)
    known(h2, h3)

    h1.type('@exit')
    h1.wait_for(r'^Successfully Terminated$')
    if h1.exit_code() != 0:
        raise Failed(f'h1 exited with code {h1.exit_code()} after @exit')
    server.wait_for(rf'^h1 is deregistered {re.escape(h1.public)}$')
    h3.wait_for(left_line('h1', 'deregistered'))

    h3.kill()
    server.wait_for(rf'^h3 is disconnected {re.escape(h3.public)}$')
    h2.wait_for(left_line('h3', 'disconnected'))


# Helpers for the scenarios that check delivery closely: each message shown exactly once, in
# order, and what the sender reported about it.

def shown(receiver, sender, text):
    """How many times `receiver` has shown `sender`'s message `text`."""
    pattern = re.compile(from_line(sender.name, text))
    return sum(1 for line in receiver.output() if pattern.search(line))


def reports(sender, text):
    """What `sender` said about its own message `text`: 'not sent', 'not confirmed',
    'delivered after all' (each line once, in the order said)."""
    said = []
    for line in sender.output():
        if not line.endswith(f'[{text}]') or not line.startswith('Message to '):
            continue
        if ' was delivered after all' in line:
            said.append('delivered after all')
        elif ' not sent' in line:
            said.append('not sent')
        elif ' not confirmed' in line:
            said.append('not confirmed')
    return said


def await_delivery(sender, receiver, texts, timeout):
    """Waits until `receiver` has shown every one of `texts` from `sender`, or the sender has
    said it was not sent; returns the texts still missing when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        missing = [t for t in texts if shown(receiver, sender, t) == 0
                   and 'not sent' not in reports(sender, t)]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.1)


def check_delivery(sender, receiver, texts, in_order=True):
    """Each of `texts` shown exactly once by `receiver` (in the order sent when `in_order`);
    each 'not confirmed' the sender said followed by 'delivered after all'; nothing 'not sent'.
    Returns the sender's reports, as one string for a summary."""
    said = []
    for text in texts:
        count = shown(receiver, sender, text)
        if count != 1:
            raise Failed(f'{receiver.name} showed {sender.name}\'s {text!r} {count} times')
        told = reports(sender, text)
        if 'not sent' in told:
            raise Failed(f'{sender.name} said {text!r} was not sent, yet it arrived')
        if 'not confirmed' in told and told[-1] != 'delivered after all':
            raise Failed(f'{sender.name} said {text!r} was not confirmed and never that it '
                         f'was delivered after all, yet {receiver.name} showed it')
        said += [f'{text}: {" then ".join(told)}'] if told else []
    if in_order:
        order = [line for line in receiver.output()
                 if any(re.search(from_line(sender.name, t), line) for t in texts)]
        expected = [f'From {sender.name} [{t}]' for t in texts]
        if order != expected:
            raise Failed(f'{receiver.name} showed {sender.name}\'s messages out of order: '
                         + ', '.join(line.split('[', 1)[1].rstrip(']') for line in order))
    return said


# server-restart: the server goes away and comes back; the clients outlive it.
LOST_SERVER = r'^(Lost the connection to the server at |The server at \S+ closed our connection)'
SERVER_AWAY = 4.0  # how long the server stays down (s): past the clients' first reconnects
REREGISTER_WITHIN = 40.0  # the clients' backoff is 1-30 s with jitter


def server_restart(lab):
    """h1 and h3 chat direct; the server is killed: both say it is gone, and chat on their
    direct path meanwhile (each message shown once); the server is started again on the same
    address: both register again by themselves, their direct path kept (not punched again),
    and a chat that needs the server works (h2, a newcomer, and h3 chat both ways: they can
    only have learnt of each other from it)."""
    server = lab.server()
    h1, h3 = pair(lab, 'h1', 'h3')
    chat(h1, h3, 'before the restart from h1')
    chat(h3, h1, 'before the restart from h3')
    expect_path(h1, h3, 'direct')
    expect_path(h3, h1, 'direct')
    marks = {c: c.mark() for c in (h1, h3)}
    server.kill()
    down_at = time.monotonic()
    for client in (h1, h3):
        client.wait_for(LOST_SERVER, since=marks[client])
    away = [(h1, h3, 'while the server is away, from h1'),
            (h3, h1, 'while the server is away, from h3')]
    for sender, receiver, text in away:
        chat(sender, receiver, text)
    time.sleep(max(0.0, SERVER_AWAY - (time.monotonic() - down_at)))
    lab.server(label='server2')
    back_at = time.monotonic()
    for client in (h1, h3):
        client.wait_for(rf'^Registered again with the server at \S+ as {client.name} '
                        r'\(public endpoint ', timeout=REREGISTER_WITHIN, since=marks[client])
    again = time.monotonic() - back_at
    time.sleep(1.0)  # a duplicate would come within this
    for sender, receiver, text in away:
        if shown(receiver, sender, text) != 1:
            raise Failed(f'{receiver.name} showed {text!r} {shown(receiver, sender, text)} times')
    # The path found before the restart survived it: listed again, each side lists the other
    # `direct` at once, before any new chat could have punched a new one.
    for client, peer in ((h1, h3), (h3, h1)):
        known(client, peer)
        expect_path(client, peer, 'direct')
    h2 = lab.client('h2')
    known(h2, h3)
    known(h3, h2)
    chat(h2, h3, 'hello from h2, after the restart')
    chat(h3, h2, 'hello back from h3, after the restart')
    chat(h1, h3, 'after the restart from h1')
    chat(h3, h1, 'after the restart from h3')
    lab.summary.append(f'server down {SERVER_AWAY:.0f} s; both registered again within '
                       f'{again:.1f} s of its return; direct chat went on meanwhile; '
                       f'after: h1 lists h3 {show_list(h1).get("h3")}')


# link-outage: a client's access link is down for a while, then back.
OUTAGE = 20.0  # seconds: shorter than the server's default 30 s timeout
# After the link is back, new chats must get through within a few seconds, both ways, and so
# must what was typed during the outage. h1 gave its silent direct path up for the relay
# during the outage, and its TCP connection to the server, whose retransmissions the kernel
# has backed off by then, may not send for another 10 s; but a message overdue on the relay
# has the direct path it lately gave up asked again, at once, and the messages given up on
# go again on it, in their turn (measured: 1.8 s and 3.3 s).
RESUME_WITHIN = 8.0
OUTAGE_MESSAGES_WITHIN = 8.0
SERVER_DEFAULT_TIMEOUT = 30


def link_outage(lab):
    """h1 and h3 chat direct; nat1's LAN side goes down for 20 s (h1's access link), and each
    types a message during the outage; the link comes back: both messages are shown within a
    few seconds, exactly once, with nobody typing a command, and each side's reports are
    honest (a 'not confirmed yet' is followed by 'delivered after all'). Chats go on both
    ways; the server (default 30 s timeout) never reaped h1, and h3 never saw it leave."""
    server = lab.server(timeout_secs=SERVER_DEFAULT_TIMEOUT)
    h1, h3 = pair(lab, 'h1', 'h3')
    chat(h1, h3, 'before the outage from h1')
    chat(h3, h1, 'before the outage from h3')
    nat1 = lab.net['nat1']
    nat1.cmd('ip link set dev nat1-lan down')
    cut_at = time.monotonic()
    try:
        time.sleep(2.0)
        during = [(h1, h3, 'during the outage from h1'), (h3, h1, 'during the outage from h3')]
        for sender, receiver, text in during:
            sender.type(f'@chat {receiver.name} {text}')
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - cut_at)))
    finally:
        nat1.cmd('ip link set dev nat1-lan up')
    up_at = time.monotonic()
    # New chats go through within a few seconds, both ways, with nobody typing a command.
    chat(h1, h3, 'after the outage from h1', timeout=RESUME_WITHIN)
    chat(h3, h1, 'after the outage from h3', timeout=RESUME_WITHIN)
    resumed = time.monotonic() - up_at
    # What was typed during the outage is shown, or its sender said it was not sent.
    for sender, receiver, text in during:
        if await_delivery(sender, receiver, [text], OUTAGE_MESSAGES_WITHIN):
            raise Failed(f'{receiver.name} did not show {text!r} within '
                         f'{OUTAGE_MESSAGES_WITHIN:.0f} s of the link coming back, and '
                         f'{sender.name} did not say it was not sent')
    time.sleep(2.0)  # a duplicate, or a late 'delivered after all', would come within this
    said = []
    for sender, receiver, text in during:
        if shown(receiver, sender, text):
            said += check_delivery(sender, receiver, [text])
            at = next(t for t, line in receiver.lines
                      if re.search(from_line(sender.name, text), line))
            said.append(f'{text}: shown {at - (up_at - receiver.start):.1f} s after the link was back')
        else:
            said.append(f'{text}: not shown; {sender.name} said '
                        f'{" then ".join(reports(sender, text))}')
    for line in server.output():
        if line.startswith('h1 is '):
            raise Failed(f'the server reaped h1 during a {OUTAGE:.0f} s outage: {line!r}')
    if any(re.search(left_line('h1', r'[^)]*'), line) for line in h3.output()):
        raise Failed('h3 was told h1 left during the outage')
    lab.summary.append(f'link down {OUTAGE:.0f} s; new chats both ways {resumed:.1f} s after it '
                       f'was back')
    lab.summary += said


# udp-blocked: a network that forwards TCP but no UDP.

def udp_blocked(lab):
    """nat1 drops all of h1's UDP (FORWARD, both ways) and passes its TCP: h1 registers,
    says its UDP seems blocked, the server lists it relayed, h3 lists it `relayed`, and they
    chat both ways through the relay."""
    nat1 = lab.net['nat1']
    h1_ip = CLIENTS['h1'][0]
    for rule in (f'-i nat1-lan -s {h1_ip} -p udp', f'-o nat1-lan -d {h1_ip} -p udp'):
        nat1.cmd(f'iptables -I FORWARD {rule} -j DROP')
    server = lab.server()
    h3 = lab.client('h3')
    lab.reachable('h1')
    h1 = lab._spawn('h1', client_command('h1', NATCHAT, keepalive_secs=KEEPALIVE_SECS))
    h1.wait_for(r'^Registered as h1, but our UDP seems blocked on the way to the server .*: '
                r'we stay registered, and our chats go through the server\.$', timeout=6 + SOON)
    h1.wait_for(r'^Commands: ')
    server.wait_for(r'^h1 relayed \(UDP blocked\)$')
    h3.wait_for(r'^h1 (joined|\S+ )')
    deadline = time.monotonic() + SOON
    while show_list(h3).get('h1') != 'relayed':
        if time.monotonic() > deadline:
            raise Failed(f'h3 lists h1 as {show_list(h3).get("h1")}, expected relayed')
        time.sleep(0.5)
    chat(h1, h3, 'from h1, whose UDP is blocked')
    chat(h3, h1, 'back to h1, whose UDP is blocked')
    chat(h1, h3, 'from h1 again')
    time.sleep(1.0)
    for sender, receiver, text in ((h1, h3, 'from h1, whose UDP is blocked'),
                                   (h3, h1, 'back to h1, whose UDP is blocked'),
                                   (h1, h3, 'from h1 again')):
        check_delivery(sender, receiver, [text])
    lab.summary.append(f'h3 lists h1 relayed; h1 lists h3 {show_list(h1).get("h3")}')



# The ladder of bad links (iroh's tests/patchbay/degrade.rs): one side's access link gets
# worse rung by rung, the other side stays clean. Per rung: name, round-trip time added (ms),
# its jitter (ms), loss (%), mean burst of losses (packets). Each direction of h1's link gets
# half the delay and half the jitter, and loses `loss` % of its packets (Gilbert-Elliott).
RUNGS = [
    ('good wifi', 16, 0, 0.1, 1),
    ('congested wifi', 40, 12, 1, 6),
    ('weak 4G', 90, 15, 2, 8),
    ('slow 3G', 200, 30, 3, 10),
    ('congested cellular', 300, 40, 5, 12),
    ('very bad cellular', 450, 60, 8, 20),
    ('satellite', 600, 40, 1.5, 6),
    ('barely usable', 450, 80, 12, 25),
    ('absurd', 800, 150, 25, 40),
]
DIRECT_UP_TO = 'satellite'   # the path at the end must be direct on this rung and the ones before
LADDER_MESSAGES = 10         # each way, per rung
LADDER_SPACING = 0.5         # s between one pair of messages and the next: they meet different fades


def ladder_rung(lab, rung):
    """One rung: impairs h1's access link, starts a server and h1 and h3, sends 10 messages
    each way, and checks each shown exactly once and in order, nothing `not sent`, every
    `not confirmed yet` followed by `delivered after all`. Returns a row for the table."""
    name, rtt, jitter, loss, burst = rung
    started = time.monotonic()
    hop = (rtt / 2, jitter / 2, loss, burst)
    # h1's packets out (its own OUTPUT, or netem on h1-eth0) and in (its raw PREROUTING, or
    # netem on the LAN side of nat1, toward h1).
    impairment = Impairment(lab, [('h1', 'OUTPUT', *hop), ('h1', 'h1-eth0', *hop)]
                            if not netem_works(lab.net['nat1'], 'nat1-lan') else
                            [('h1', 'OUTPUT', *hop), ('nat1', 'nat1-lan', *hop)])
    slow = 1 + rtt / 100  # deadlines grow with the round trip
    try:
        server = lab.server(timeout_secs=SERVER_DEFAULT_TIMEOUT, label=f'server {name}')
        h3 = lab._spawn('h3', client_command('h3', NATCHAT, keepalive_secs=KEEPALIVE_SECS))
        h3.wait_for(r'^Commands: ')
        h1 = lab._spawn('h1', client_command('h1', NATCHAT, keepalive_secs=KEEPALIVE_SECS))
        h1.wait_for(r'^Commands: ', timeout=SOON * slow)
        h3.wait_for(r'^h1 joined', timeout=SOON * slow)
        texts = {h1: [], h3: []}
        for n in range(1, LADDER_MESSAGES + 1):
            for sender, receiver in ((h1, h3), (h3, h1)):
                text = f'{name} {n} from {sender.name}'
                sender.type(f'@chat {receiver.name} {text}')
                texts[sender].append(text)
            time.sleep(LADDER_SPACING)
        for sender, receiver in ((h1, h3), (h3, h1)):
            missing = await_delivery(sender, receiver, texts[sender], min(3 * SOON * slow, 60))
            if missing:
                raise Failed(f'{name}: {receiver.name} did not show {len(missing)} of '
                             f'{sender.name}\'s messages, first {missing[0]!r}')
        # A late duplicate, or a late `delivered after all`, would come within this.
        deadline = time.monotonic() + min(2 * SOON * slow, 40)
        while time.monotonic() < deadline:
            pending = [t for s in (h1, h3) for t in texts[s]
                       if 'not confirmed' in reports(s, t)
                       and reports(s, t)[-1] != 'delivered after all']
            if not pending:
                break
            time.sleep(0.2)
        time.sleep(max(1.0, 2 * rtt / 1000))
        said = check_delivery(h1, h3, texts[h1]) + check_delivery(h3, h1, texts[h3])
        paths = (show_list(h1).get('h3'), show_list(h3).get('h1'))
        # Each rung's clients start within conntrack's 30 s of the last rung's, on the same
        # ports: a NAT discovery that says anything must say `cone` (on a bad link it may
        # find nothing, and say the kind is unknown).
        kinds = [told_kind(server, client) for client in (h1, h3)]
        wrong = [f'{c.name} found its NAT {k}' for c, k in zip((h1, h3), kinds)
                 if k not in (None, 'cone')]
        if wrong:
            raise Failed(f'{name}: ' + ', '.join(wrong) + ', expected cone')
        alive = impairment.alive()
    finally:
        counts = impairment.remove()
    if not alive:
        raise LabError(f'lab: impair.py ended during rung {name}: {counts}')
    dropped = sum(int(m.group(2)) for c in counts if (m := DROPPED.search(c)))
    handled = sum(int(m.group(1)) + int(m.group(2)) for c in counts if (m := DROPPED.search(c)))
    row = (name, '/'.join(p or 'absent' for p in paths), '/'.join(k or '-' for k in kinds),
           f'{2 * LADDER_MESSAGES}/{2 * LADDER_MESSAGES}', 'yes',
           f'{len(said)} late' if said else 'none',
           f'{dropped}/{handled}' if handled else 'netem', f'{time.monotonic() - started:.0f}')
    return row, paths, counts


DROPPED = re.compile(r'passed (\d+), dropped (\d+)')


def run_ladder(lab, rungs):
    rows, failures = [], []
    must_direct = [r[0] for r in RUNGS[:[r[0] for r in RUNGS].index(DIRECT_UP_TO) + 1]]
    for rung in rungs:
        try:
            row, paths, counts = ladder_rung(lab, rung)
            if rung[0] in must_direct and paths != ('direct', 'direct'):
                failures.append(f'{rung[0]}: path {row[1]}, expected direct/direct')
                lab.stop_procs(keep=True)
            else:
                lab.stop_procs(keep=VERBOSE)
            if VERBOSE:
                lab.kept += [f'{rung[0]}: {c}' for c in counts]
        except LabError:
            lab.stop_procs(keep=True)
            raise
        except Failed as e:
            row = (rung[0], 'FAIL', '', '', '', '', '', '')
            failures.append(str(e))
            lab.stop_procs(keep=True)
        rows.append(row)
    lab.summary.append(f'{"rung":<20}{"path h1/h3":<17}{"NAT h1/h3":<11}{"delivered":<11}'
                       f'{"in order":<10}{"reports":<10}{"dropped":<10}seconds')
    for row in rows:
        lab.summary.append(f'{row[0]:<20}{row[1]:<17}{row[2]:<11}{row[3]:<11}{row[4]:<10}'
                           f'{row[5]:<10}{row[6]:<10}{row[7]}')
    lab.summary.append('NAT: the kind each client\'s discovery found (-: none found, the kind '
                       'is unknown); dropped: packets impair.py dropped / packets it handled on '
                       'h1\'s link, both ways')
    if failures:
        raise Failed(f'{len(failures)} of {len(rungs)} rungs wrong: ' + '; '.join(failures))


def ladder(lab):
    """Every rung of the ladder, one after another, in one lab (home NATs): see RUNGS. With
    LADDER_RUNGS set in the environment (names, comma-separated), only those."""
    chosen = [n.strip() for n in os.environ.get('LADDER_RUNGS', '').split(',') if n.strip()]
    unknown = set(chosen) - {r[0] for r in RUNGS}
    if unknown:
        raise LabError(f'lab: no rung named {", ".join(sorted(unknown))} in LADDER_RUNGS')
    run_ladder(lab, [r for r in RUNGS if not chosen or r[0] in chosen])


# cgnat: a stranger at the peer's private address (topo.py: CgnatLab).
DECOY_LOG = '/tmp/natchat-cgnat-decoy-{pid}.log'
# The decoy: every datagram that reaches UDP 10081 on its host, one line each, as Python bytes
# literals, written at once. It never answers.
DECOY = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', int(sys.argv[1])))
with open(sys.argv[2], 'w', buffering=1) as log:
    print('listening', flush=True)
    while True:
        data, addr = s.recvfrom(65536)
        log.write(f'{addr[0]}:{addr[1]} {data!r}\n')
"""
CGNAT_MESSAGES = 2  # each way


def cgnat(lab):
    """A carrier-grade NAT: alice (home 1) and bob (home 2) share the carrier's one public
    address and the same private subnet; the decoy in alice's home owns bob's private
    address, 192.168.1.3, and records every datagram sent to its UDP 10081. alice and bob
    chat both ways: each message is shown exactly once, and the decoy gets no chat text
    (probes it may get: they reveal nothing)."""
    log = DECOY_LOG.format(pid=os.getpid())
    decoy = lab.net['decoy'].popen(PDEATHSIG + ['/usr/bin/python3', '-c', DECOY,
                                                str(CLIENT_UDP_PORT), log],
                                   stdout=PIPE, stderr=STDOUT, text=True)
    try:
        if decoy.stdout.readline().strip() != 'listening':
            raise LabError('lab: the decoy did not start listening')
        lab.server()
        alice, bob = pair(lab, 'alice', 'bob')
        for client in (alice, bob):
            if client.public.split(':')[0] != CGNAT_PUBLIC_IP:
                raise LabError(f'lab: the server saw {client.name} at {client.public}, '
                               f'not at the carrier NAT\'s {CGNAT_PUBLIC_IP}')
        sent = []
        for n in range(1, CGNAT_MESSAGES + 1):
            for sender, receiver in ((alice, bob), (bob, alice)):
                text = f'cgnat secret {n} from {sender.name}'
                chat(sender, receiver, text)
                sent.append((sender, receiver, text))
        paths = (show_list(alice).get('bob'), show_list(bob).get('alice'))
        time.sleep(1.5)  # a duplicate would come within this: the relay follows 1 s after a hold
        for sender, receiver, text in sent:
            shown = sum(1 for line in receiver.output()
                        if re.search(from_line(sender.name, text), line))
            if shown != 1:
                raise Failed(f'{receiver.name} showed {sender.name}\'s {text!r} {shown} times')
    finally:
        decoy.kill()
        decoy.wait()
    try:
        with open(log) as f:
            received = f.read().splitlines()
    finally:
        os.unlink(log)
    kinds = {}
    for line in received:
        payload = line.split(' ', 1)[1]
        kind = re.match(r"b['\"](\S*)", payload).group(1)
        kinds[kind] = kinds.get(kind, 0) + 1
    decoy_saw = ', '.join(f'{count} {kind}' for kind, count in sorted(kinds.items())) or 'nothing'
    lab.summary.append(f'alice lists bob {paths[0]}, bob lists alice {paths[1]}; '
                       f'the decoy at 192.168.1.3 received: {decoy_saw}')
    leaked = [line for line in received
              if 'CHAT' in line or any(text in line for _, _, text in sent)]
    if leaked:
        raise Failed(f'the decoy received {len(leaked)} datagram(s) with chat text, first: '
                     f'{leaked[0]}')
    return paths

# The NAT-tier matrix: every ordered pair of tiers (topo.py: TIERS, TierLab), A on h1 behind
# nat1 and B on h3 behind nat2.

# The path each side ends on, per pair (A's tier, B's tier): (how A lists B, how B lists A).
# Only cells that were the same in every measured run are here: the matrix asserts these,
# and would only report any other. Measured in three runs (December, kernel 6.18), all alike.
# A change to natchat that turns a relayed side direct must update its cell here (see
# mininet/README.md for why the `none` rows and columns are relayed on one side).
MATRIX_EXPECTED = {
    (a, b): tuple(cell.split('/'))
    for a, row in zip(TIERS, [
        # B:  none               open              moderate           strict
        ['direct/direct', 'direct/direct', 'direct/direct', 'direct/direct'],        # A none
        ['direct/direct', 'direct/direct', 'direct/direct', 'direct/direct'],        # A open
        ['direct/direct', 'direct/direct', 'direct/direct', 'direct/direct'],        # moderate
        ['direct/direct', 'direct/direct', 'direct/direct', 'relayed/relayed'],      # strict
    ])
    for b, cell in zip(TIERS, row)
}


# The NAT kind each tier's client must find by its own discovery (src/client/discovery.rs).
TIER_KIND = {'none': 'none', 'open': 'open', 'moderate': 'cone', 'strict': 'symmetric'}


# The cells port prediction connects (src/client/prediction.rs): one NAT keeps one port for
# every destination and filters, the other gives each destination its own random port. One
# attempt finds a path about 87 % of the time; attempts are at least 35 s apart, and the cell
# waits for three (99.8 %), chatting now and then, as a retry is made when a message goes.
PREDICTED = {('moderate', 'strict'), ('strict', 'moderate')}
PREDICTION_ATTEMPTS = 3
PREDICTION_PATIENCE = PREDICTION_ATTEMPTS * 35 + 15
PREDICTION_CHAT_EVERY = 5
# A cell the NAT kinds relay at once, and why, in @show_list's words.
RELAYED_BECAUSE = {('strict', 'strict'): 'both NATs change their port for each destination: '
                                         'no punch or port guess can meet'}
# What a client says when port prediction found its path.
PREDICTION_FOUND = r'^Port prediction found a direct path to \S+ \((.*)\)\.$'


def set_tiers(lab, tier_a, tier_b):
    """Sets both sites' tiers and checks them: a lab whose routers do not behave as their
    tiers should fails the whole matrix, as a lab error."""
    for host, tier in zip(SITES, (tier_a, tier_b)):
        set_site_tier(lab.net, host, tier)
    probes = {host: start_tier_checks(lab.net, host) for host in SITES}
    for host, tier in zip(SITES, (tier_a, tier_b)):
        wrong = finish_tier_check(lab.net, host, tier, probes[host])
        if wrong:
            raise LabError(f'lab: {wrong}')


def nats_known(first, second):
    """Waits until each client lists the other's NAT kind (both discoveries are done), so
    that the first chat's punch already knows whether to guess ports; returns the rows."""
    deadline = time.monotonic() + SOON
    while True:
        rows = (list_rows(first)[second.name], list_rows(second)[first.name])
        if all(row['nat'] for row in rows):
            return rows
        if time.monotonic() > deadline:
            raise Failed(f'the NAT kinds were not known within {SOON:.0f} s: '
                         f'{rows[0].group(0)!r}; {rows[1].group(0)!r}')
        time.sleep(0.5)


def matrix_pair(lab, tier_a, tier_b, found):
    """One cell: sets both sites' tiers, checks them, then chats both ways. Returns
    (A's path to B, B's path to A), and counts the kind each side's discovery found in
    `found` ({tier: {kind: clients}}); a kind that is not its tier's (TIER_KIND), whether
    found or passed on to the peer, fails the pair. A cell that port prediction connects
    waits for it, with a bounded deadline (PREDICTION_PATIENCE), chatting now and then;
    what each side said of how prediction found its path goes into the summary."""
    set_tiers(lab, tier_a, tier_b)
    a, b = SITES  # h1, h3
    server = lab.server()
    first, second = pair(lab, a, b)
    predicted = (tier_a, tier_b) in PREDICTED
    because = RELAYED_BECAUSE.get((tier_a, tier_b))
    if predicted or because:
        nats_known(first, second)
    sent = []
    started = time.monotonic()
    while True:
        n = len(sent) // 2 + 1
        for sender, receiver, text in ((first, second, f'{tier_a} to {tier_b} #{n}'),
                                       (second, first, f'{tier_b} back to {tier_a} #{n}')):
            chat(sender, receiver, text)
            sent.append((sender, receiver, text))
        paths = (show_list(first).get(b), show_list(second).get(a))
        waited = time.monotonic() - started
        if not predicted or paths == ('direct', 'direct') or waited > PREDICTION_PATIENCE:
            break
        time.sleep(PREDICTION_CHAT_EVERY)
    kinds = (discovered(server, first), discovered(server, second))
    for tier, kind in ((tier_a, kinds[0]), (tier_b, kinds[1])):
        found[tier][kind] = found[tier].get(kind, 0) + 1
    time.sleep(0.3)  # a duplicate would come within this: the relay follows 1 s after a hold
    for sender, receiver, text in sent:
        shown = sum(1 for line in receiver.output() if re.search(from_line(sender.name, text), line))
        if shown != 1:
            raise Failed(f'{receiver.name} showed {sender.name}\'s {text!r} {shown} times')
    wrong = [f'{client.name} ({tier}) found its NAT {kind}, expected {TIER_KIND[tier]}'
             for client, tier, kind in ((first, tier_a, kinds[0]), (second, tier_b, kinds[1]))
             if kind != TIER_KIND[tier]]
    if wrong:
        raise Failed('; '.join(wrong))
    # Each side's kind, as the server passed it on: in the other's list (a round may pass
    # before it comes).
    for client, peer, tier in ((first, second, tier_b), (second, first, tier_a)):
        deadline = time.monotonic() + SOON
        while (listed := list_rows(client)[peer.name]['nat']) != TIER_KIND[tier]:
            if time.monotonic() > deadline:
                raise Failed(f'{client.name} lists {peer.name}\'s NAT as {listed}, '
                             f'expected {TIER_KIND[tier]}')
            time.sleep(0.5)
    if because:
        for row in (list_rows(first)[b], list_rows(second)[a]):
            if row['why'] != because:
                raise Failed(f'relayed without saying why ({because}): {row.group(0)!r}')
    if predicted:
        found = [f'{client.name}: {m.group(1)}' for client in (first, second)
                 for m in map(re.compile(PREDICTION_FOUND).match, client.output()) if m]
        lab.summary.append(f'{tier_a} x {tier_b}: {"; ".join(found) or "no prediction found"} '
                           f'({time.monotonic() - started:.0f} s, {len(sent)} messages)')
    return paths


def prediction_off(lab):
    """moderate x strict with --no-port-prediction on both sides: relayed at once, before any
    message, each side saying why; a chat both ways still arrives once."""
    set_tiers(lab, 'moderate', 'strict')
    lab.server()
    first, second = pair(lab, *SITES, extra=['--no-port-prediction'])
    for row in nats_known(first, second):
        if (row['path'], row['why']) != ('relayed', 'these NATs cannot be punched; '
                                                     'port prediction is off'):
            raise Failed(f'with --no-port-prediction, not relayed at once: {row.group(0)!r}')
    chat(first, second, 'no guessing there')
    chat(second, first, 'no guessing back')
    if any(re.match(PREDICTION_FOUND, line) for c in (first, second) for line in c.output()):
        raise Failed('port prediction ran with --no-port-prediction')
    lab.summary.append('moderate x strict with --no-port-prediction: relayed at once on both '
                       'sides, saying why')


class LabError(Failed):
    """The lab itself does not behave as it should: nothing can be said about natchat."""


def nat_matrix(lab):
    """All 16 ordered pairs of NAT tiers in one lab: delivery exactly once both ways in
    every pair, each client's NAT discovery finding its tier's kind, and the path each side
    ends on, printed as a 4x4 matrix, with the kinds found per tier."""
    for host in ('server', 'stun'):
        lab.net[host].popen(['/usr/bin/python3', NATPROBE, 'reflect', str(REFLECT_PORT)])
    cells, failures, wrong_paths = {}, [], []
    found = {tier: {} for tier in TIERS}  # tier -> {kind found: how many clients}
    for tier_a in TIERS:
        for tier_b in TIERS:
            started = time.monotonic()
            try:
                paths = matrix_pair(lab, tier_a, tier_b, found)
                cells[tier_a, tier_b] = '/'.join(p or 'absent' for p in paths)
                expected = MATRIX_EXPECTED.get((tier_a, tier_b))
                keep = bool(expected) and tuple(paths) != expected  # its transcript, to report
                if keep:
                    wrong_paths.append(f'{tier_a} x {tier_b} {cells[tier_a, tier_b]} '
                                       f'(expected {"/".join(expected)})')
            except LabError:
                lab.stop_procs(keep=True)
                raise
            except Failed as e:
                cells[tier_a, tier_b] = 'FAIL'
                failures.append(f'{tier_a} x {tier_b}: {e}')
                keep = True
            lab.stop_procs(keep=keep or VERBOSE)
            if VERBOSE:
                print(f'    {tier_a:>8} x {tier_b:<8} {cells[tier_a, tier_b]:<17} '
                      f'({time.monotonic() - started:.1f} s)', flush=True)
    width = max(len(c) for c in cells.values()) + 2
    lab.summary += ['A \\ B     ' + ''.join(f'{t:<{width}}' for t in TIERS)]
    for tier_a in TIERS:
        lab.summary.append(f'{tier_a:<11}' + ''.join(f'{cells[tier_a, t]:<{width}}' for t in TIERS))
    direct = sum(1 for c in cells.values() if c != 'FAIL' and 'relayed' not in c)
    lab.summary.append(f'{direct} of 16 pairs direct (no side relayed); '
                       'cells: how A lists B / how B lists A')
    lab.summary.append('NAT kinds found, per tier (each client of every pair): '
                       + '; '.join(f'{tier} -> ' + (', '.join(f'{kind} x{n}' for kind, n
                                                              in sorted(found[tier].items()))
                                                    or 'nothing found')
                                   for tier in TIERS)
                       + ' (expected: ' + ', '.join(f'{t} -> {k}' for t, k in TIER_KIND.items())
                       + ')')
    try:
        prediction_off(lab)
    except LabError:
        lab.stop_procs(keep=True)
        raise
    except Failed as e:
        failures.append(f'--no-port-prediction: {e}')
        lab.stop_procs(keep=True)
    else:
        lab.stop_procs(keep=VERBOSE)
    problems = failures + [f'path {w}' for w in wrong_paths]
    if problems:
        raise Failed(f'{len(problems)} of 16 pairs wrong: ' + '; '.join(problems))


# hairpin and cgnat-hairpin: routers that hairpin (topo.py: NatRouter.hairpin, LABS).

def hairpin_check(lab, sender, receiver, target, seen_ip, opener=None):
    """The lab's own check that a router hairpins, before natchat runs in it, so that a
    broken lab is never read as natchat's failure: a reflector on `receiver`'s UDP 10081,
    asked from `sender`'s UDP 10081 at public address `target`, must answer from `target`,
    having seen the datagram come from `seen_ip`. With `opener`, the receiver first sends
    to that address from its 10081 (its own NAT admits only answers). Raises LabError
    otherwise; returns what the reflector saw, and leaves every router's conntrack empty."""
    probe = f'/usr/bin/python3 {NATPROBE}'
    host = lab.net[receiver]
    if opener:
        host.cmd(f'{probe} knock --bind {CLIENT_UDP_PORT} {opener}')
    reflector = host.popen(PDEATHSIG + ['/usr/bin/python3', NATPROBE, 'reflect',
                                        str(CLIENT_UDP_PORT)], stdout=PIPE, stderr=STDOUT,
                           text=True)
    try:
        if reflector.stdout.readline().strip() != 'reflecting':
            raise LabError(f'lab: the reflector did not start on {receiver}')
        said = lab.net[sender].cmd(f'{probe} map --bind {CLIENT_UDP_PORT} --listen 0 {target}')
    finally:
        reflector.kill()
        reflector.wait()
    mapped = re.search(r'^mapped (\S+)', said, re.M)
    seen = mapped.group(1) if mapped else 'nothing'
    if seen.split(':')[0] != seen_ip:
        raise LabError(f'lab: {sender} -> {target} did not hairpin to {receiver} as it should '
                       f'(expected an answer from {target} saying {seen_ip}, got: {seen})')
    for router in (node for node in lab.net.hosts if isinstance(node, NatRouter)):
        router.flush_conntrack()
    return seen


def hairpin(lab):
    """h1 and h2 behind nat1, which hairpins (its home recipe: DNAT from the LAN side to its
    own public address, MASQUERADE back into the LAN). The lab first checks the hairpin both
    ways with natprobe. natchat must end on the private path, both ways: it is validated
    like any other, and shorter than the hairpin, which it also crosses (its probes to the
    public candidate, answered: the routers' conntrack shows them). Each message shown
    exactly once."""
    nat1 = PUBLIC['nat1']
    for sender, receiver, port in (('h1', 'h2', 10082), ('h2', 'h1', 10081)):
        seen = hairpin_check(lab, sender, receiver, f'{nat1}:{port}', '192.168.1.1')
        lab.summary.append(f'lab check: {sender} -> {nat1}:{port} reached {receiver}, seen '
                           f'from {seen} (nat1 hairpins)')
    lab.server()
    h1, h2 = pair(lab, 'h1', 'h2')
    sent = [(h1, h2, 'hello from h1, same router'), (h2, h1, 'hello back from h2')]
    for sender, receiver, text in sent:
        chat(sender, receiver, text)
    paths = (show_list(h1).get('h2'), show_list(h2).get('h1'))
    time.sleep(1.5)  # a duplicate would come within this: the relay follows 1 s after a hold
    for sender, receiver, text in sent:
        check_delivery(sender, receiver, [text])
    table = lab.net['nat1'].cmd('cat /proc/net/nf_conntrack')
    hairpinned = []
    for client, port in (('h1', 10082), ('h2', 10081)):
        entry = re.search(rf'src={CLIENTS[client][0]} dst={nat1} sport={CLIENT_UDP_PORT} '
                          rf'dport={port} .*', table)
        fate = ('none' if not entry else
                'unanswered' if 'UNREPLIED' in entry.group(0) else 'answered')
        hairpinned.append(f'{client} -> {nat1}:{port} {fate}')
    lab.summary.append(f'h1 lists h2 {paths[0]}, h2 lists h1 {paths[1]}; natchat\'s flows '
                       f'through the hairpin: {", ".join(hairpinned)}')
    if paths != ('private', 'private'):
        raise Failed(f'h1 lists h2 {paths[0]}, h2 lists h1 {paths[1]}: expected private both '
                     'ways (the shortest validated path)')


def cgnat_hairpin(lab):
    """cgnat, but the carrier NAT hairpins as RFC 4787 asks (a hairpinned datagram comes
    from the sender's own public endpoint). The lab first checks it: bob sends to alice's
    public endpoint, then alice's probe to bob's public endpoint comes back from it. Then as
    cgnat (each message once, no chat text at the decoy), and alice and bob must go direct
    both ways, through their public endpoints."""
    public = {'alice': f'{CGNAT_PUBLIC_IP}:10081', 'bob': f'{CGNAT_PUBLIC_IP}:10082'}
    seen = hairpin_check(lab, 'alice', 'bob', public['bob'], CGNAT_PUBLIC_IP,
                         opener=public['alice'])
    lab.summary.append(f'lab check: alice -> {public["bob"]} reached bob, seen from {seen} '
                       '(cgn hairpins, from the public endpoint)')
    paths = cgnat(lab)
    if paths != ('direct', 'direct'):
        raise Failed(f'alice lists bob {paths[0]}, bob lists alice {paths[1]}: expected direct '
                     'both ways (the carrier NAT hairpins)')


# remap: in the middle of a conversation, nat1 gives h1 a new public port.
REMAP_PORT = 20081       # h1's public port after the re-map (it was 10081)
REMAP_EVERY = 1.0        # a message each way this often, all along
REMAP_BEFORE = 3         # messages each way before the re-map, and after the pair is direct again
REMAP_DIRECT_WITHIN = 30.0  # after the re-map; generous: measured about 3 s (README)
REMAP_NEW_FLOWS_WITHIN = 10.0


def remap(lab, keepalive_secs=KEEPALIVE_SECS, server_timeout=TIMEOUT_SECS):
    """h1 and h3 chat direct, a message each way every second. nat1 then forgets h1's UDP
    flows (conntrack -D) and maps its next ones to a new public port (SNAT to 20081), then
    goes back to its usual rules once h1's new flows exist (they keep the new port, as
    conntrack does). The chat goes on throughout: every message shown exactly once, in order;
    nothing 'not sent'; each 'not confirmed yet' followed by 'delivered after all'; what
    either side says of the move names the real new endpoint; nobody left; and both list each
    other direct again, through the new port (nat1's flow from it to h3 answered), within
    30 s. (With `keepalive_secs`, the clients send a keep-alive that often, and the server
    forgets a client after `server_timeout`.)"""
    server = lab.server(timeout_secs=server_timeout)
    h1, h3 = lab.client('h1', keepalive_secs), lab.client('h3', keepalive_secs)
    known(h1, h3)
    known(h3, h1)
    nat1, h1_ip = lab.net['nat1'], CLIENTS['h1'][0]
    new_public = f'{PUBLIC["nat1"]}:{REMAP_PORT}'
    texts = {h1: [], h3: []}
    typed_at = {}
    last_exchange = [0.0]

    def exchange(at_once=False):
        """A message each way, once REMAP_EVERY has passed since the last ones (or now)."""
        if not at_once:
            time.sleep(max(0.0, last_exchange[0] + REMAP_EVERY - time.monotonic()))
        last_exchange[0] = time.monotonic()
        n = len(texts[h1]) + 1
        for sender, receiver in ((h1, h3), (h3, h1)):
            texts[sender].append(f'remap {n} from {sender.name}')
            typed_at[texts[sender][-1]] = time.monotonic()
            sender.type(f'@chat {receiver.name} {texts[sender][-1]}')

    for _ in range(REMAP_BEFORE):
        exchange()
    for sender, receiver in ((h1, h3), (h3, h1)):
        if await_delivery(sender, receiver, texts[sender], SOON):
            raise Failed(f'{receiver.name} did not show {sender.name}\'s first messages')
        expect_path(sender, receiver, 'direct')
    snat = (f'POSTROUTING -o nat1-wan -s {h1_ip} -p udp -j SNAT --to-source {new_public}')
    nat1.cmd(f'iptables -t nat -I {snat}; conntrack -D -p udp -s {h1_ip} 2>/dev/null')
    remapped_at = time.monotonic()
    # In flight at once, before anyone knows: h1's leaves from the new port, which nat2 has
    # no flow for, and h3's goes to the old one, which nat1 no longer has.
    exchange(at_once=True)
    # Back to the usual rules once h1's flows to the server and to h3 have the new port.
    new_flows = [rf'src={h1_ip} dst={dst} sport={CLIENT_UDP_PORT} dport={dport} .*'
                 rf'dst={PUBLIC["nat1"]} sport=\d+ dport={REMAP_PORT}\b'
                 for dst, dport in ((SERVER_IP, 10080), (PUBLIC['nat2'], CLIENT_UDP_PORT))]
    try:
        while not all(re.search(f, nat1.cmd('cat /proc/net/nf_conntrack')) for f in new_flows):
            if time.monotonic() - remapped_at > REMAP_NEW_FLOWS_WITHIN:
                raise LabError(f'lab: nat1 made no flows from {new_public} for h1 within '
                               f'{REMAP_NEW_FLOWS_WITHIN:.0f} s')
            if time.monotonic() - last_exchange[0] >= REMAP_EVERY:
                exchange()
            time.sleep(0.1)
    finally:
        nat1.cmd(f'iptables -t nat -D {snat}')
    # Until both list each other direct again, through the new port: h3 only after it heard
    # of the move (before, its 'direct' is the old path), h1 once nat1's flow from the new
    # port to h3 has seen an answer.
    told = None
    nat2 = PUBLIC['nat2']
    answered = (rf'src={h1_ip} dst={nat2} sport={CLIENT_UDP_PORT} dport={CLIENT_UDP_PORT} '
                rf'src={nat2} dst={PUBLIC["nat1"]} sport={CLIENT_UDP_PORT} dport={REMAP_PORT}\b')
    while True:
        moved = [t for t, line in h3.lines if line == f'h1 moved to {new_public}']
        if told is None and moved:
            told = moved[0] - (remapped_at - h3.start)
        direct = (told is not None and show_list(h1).get('h3') == 'direct'
                  and show_list(h3).get('h1') == 'direct'
                  and re.search(answered, nat1.cmd('cat /proc/net/nf_conntrack')))
        if direct:
            break
        if time.monotonic() - remapped_at > REMAP_DIRECT_WITHIN:
            raise Failed(f'not direct again within {REMAP_DIRECT_WITHIN:.0f} s of the re-map '
                         f'(h3 {"told" if told else "not told"} h1 moved; h1 lists h3 '
                         f'{show_list(h1).get("h3")}, h3 lists h1 {show_list(h3).get("h1")})')
        if time.monotonic() - last_exchange[0] >= REMAP_EVERY:
            exchange()
        time.sleep(0.2)
    direct_after = time.monotonic() - remapped_at
    for _ in range(REMAP_BEFORE):
        exchange()
    for sender, receiver in ((h1, h3), (h3, h1)):
        missing = await_delivery(sender, receiver, texts[sender], 2 * SOON)
        if missing:
            raise Failed(f'{receiver.name} did not show {len(missing)} of {sender.name}\'s '
                         f'messages, first {missing[0]!r}')
    time.sleep(2.0)  # a duplicate, or a late 'delivered after all', would come within this
    said = check_delivery(h1, h3, texts[h1]) + check_delivery(h3, h1, texts[h3])
    # Nothing false: a move names the real new endpoint; nobody left; the server stayed.
    for client in (h1, h3, server):
        for line in client.output():
            endpoint = re.search(r'(?:moved to |sees our UDP endpoint as )(\S+?)[ .]*(?: \(|$)',
                                 line)
            if endpoint and endpoint.group(1) != new_public:
                raise Failed(f'{client.name} said {line!r}; h1\'s new endpoint is {new_public}')
            if re.search(LOST_SERVER, line) or re.search(r' left \(|^h1 is ', line):
                raise Failed(f'{client.name} said {line!r} during a re-map')
    waited = max((receiver.start + t - typed_at[text], text)
                 for sender, receiver in ((h1, h3), (h3, h1)) for text in texts[sender]
                 for t, line in receiver.lines if line == f'From {sender.name} [{text}]')
    lab.summary.append(f'h1 re-mapped from 10081 to {REMAP_PORT}: h3 told "h1 moved" '
                       f'{told:.1f} s after, direct both ways again {direct_after:.1f} s after; '
                       f'{len(texts[h1])} messages each way, each shown once, in order; the '
                       f'slowest shown {waited[0]:.1f} s after it was typed ({waited[1]})')
    lab.summary += said


def remap_default_keepalive(lab):
    """remap with natchat's default keep-alive (10 s) and server timeout (30 s): the server
    learns of the move only at h1's next keep-alive, up to 10 s later, and every message
    must still arrive once and in order (it once lost one: see mininet/README.md, remap)."""
    remap(lab, keepalive_secs=None, server_timeout=SERVER_DEFAULT_TIMEOUT)


# name, lab mode, scenario, time limit (s), run by a bare --test
SCENARIOS = [
    ('home-nat-direct', 'home', home_nat_direct, SCENARIO_LIMIT, True),
    ('bare-masquerade', 'bare', bare_masquerade, SCENARIO_LIMIT, True),
    ('bare-heal', 'bare', bare_heal, 150, True),
    ('symmetric-nat-relay', 'symmetric', symmetric_nat_relay, SCENARIO_LIMIT, True),
    ('same-nat-private', 'home', same_nat_private, SCENARIO_LIMIT, True),
    ('discovery-again', 'home', discovery_again, SCENARIO_LIMIT, True),
    ('link-cut-disappears', 'home', link_cut_disappears, SCENARIO_LIMIT, True),
    ('exit-and-kill', 'home', exit_and_kill, SCENARIO_LIMIT, True),
    ('server-restart', 'home', server_restart, 90, True),
    ('link-outage', 'home', link_outage, 90, True),
    ('udp-blocked', 'home', udp_blocked, SCENARIO_LIMIT, True),
    ('nat-matrix', 'tiers', nat_matrix, 600, True),
    ('cgnat', 'cgnat', cgnat, SCENARIO_LIMIT, True),
    ('hairpin', 'hairpin', hairpin, SCENARIO_LIMIT, True),
    ('cgnat-hairpin', 'cgnat-hairpin', cgnat_hairpin, SCENARIO_LIMIT, True),
    ('remap', 'home', remap, 90, True),
    ('remap-default-keepalive', 'home', remap_default_keepalive, 120, True),
    ('ladder', 'home', ladder, 900, True),
]


class TooLong(Exception):
    """A scenario ran past SCENARIO_LIMIT."""


def on_alarm(_signum, _frame):
    raise TooLong()


class Stopped(BaseException):
    """Ctrl+C or SIGTERM: stop the lab and end the run. (Not an Exception, so that no
    scenario can mistake it for a failure of its own.)"""


def on_stop(signum, _frame):
    raise Stopped(signal.Signals(signum).name)


def run(name, mode, scenario, limit, verbose):
    """Runs one scenario in a fresh lab; prints its line; returns whether it passed."""
    started = time.monotonic()
    report, summary = [], []
    trace_dir = recorder.directory_for(name) if TRACE else None
    signal.alarm(limit)
    try:
        with lab(mode, trace_dir) as running:
            try:
                scenario(running)
                passed, reason = True, None
            except Failed as e:
                passed, reason = False, str(e)
            except TooLong:
                passed, reason = False, f'took longer than {limit} s'
            except Exception as e:  # a bug in this script: still a failure, still cleaned up
                passed, reason = False, f'{type(e).__name__}: {e}'
            summary = running.summary
            if verbose or not passed:
                report += running.kept
                for proc in running.procs:
                    report += proc.transcript()
                report += running.conntrack()
    except TooLong:
        passed, reason = False, f'took longer than {limit} s'
    except recorder.RecordError as e:
        passed, reason = False, str(e)
    finally:
        signal.alarm(0)
    elapsed = time.monotonic() - started
    if trace_dir:
        lines, wrong = recorder.report(trace_dir, name)
        summary = summary + lines
        if passed and wrong:
            passed, reason = False, wrong
    if passed:
        print(f'PASS {name} ({elapsed:.1f} s)', flush=True)
    else:
        print(f'FAIL {name}: {reason}', flush=True)
    for line in summary:
        print(f'  {line}')
    for line in report:
        print(f'    {line}')
    return passed


def main():
    global NATCHAT, VERBOSE, TRACE
    parser = argparse.ArgumentParser(description='natchat scenarios in the NAT lab (needs root).')
    parser.add_argument('--natchat', default='natchat',
                        help='the natchat binary (default: on PATH)')
    parser.add_argument('-v', '--verbose', action='store_true',
                        help='print every process\'s output also when a scenario passes')
    parser.add_argument('--trace', action='store_true',
                        help='record what each router did (captures, conntrack events) and '
                        'print a ladder of the datagrams under each scenario (recorder.py)')
    parser.add_argument('names', nargs='*', metavar='NAME',
                        help='run only these scenarios: ' + ', '.join(n for n, *_ in SCENARIOS)
                        + ' (without names: every scenario but those a bare --test leaves out)')
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit('scenarios.py: Mininet needs root; run: sudo bash mininet/execute_mn.sh --test')
    unknown = set(args.names) - {n for n, *_ in SCENARIOS}
    if unknown:
        sys.exit(f'scenarios.py: unknown scenario(s): {", ".join(sorted(unknown))}')
    VERBOSE, TRACE = args.verbose, args.trace
    NATCHAT = shutil.which(args.natchat)
    if not NATCHAT:
        sys.exit(f'scenarios.py: no natchat binary at {args.natchat}')

    # Mininet's own chatter (and its warning about bridge netfilter, harmless here) would
    # drown the one line per scenario.
    setLogLevel('error')
    # Ctrl+C and SIGTERM end the run through the finally blocks that stop the lab. (SIGINT
    # stays ignored when the parent ignores it, as a shell does for a background job.)
    signal.signal(signal.SIGTERM, on_stop)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGALRM, on_alarm)

    chosen = [s for s in SCENARIOS if s[0] in args.names or (not args.names and s[4])]
    try:
        results = [run(name, mode, scenario, limit, args.verbose)
                   for name, mode, scenario, limit, _ in chosen]
    except Stopped as e:
        print(f'Stopped by {e}; the lab is stopped.')
        sys.exit(130)
    except LabClash as e:
        sys.exit(f'scenarios.py: {e}')
    passed = sum(results)
    print(f'{passed} passed, {len(results) - passed} failed')
    sys.exit(0 if all(results) else 1)


NATCHAT = 'natchat'
VERBOSE = False
TRACE = False

if __name__ == '__main__':
    main()
