#!/usr/bin/python3
"""What each router did to each datagram: the lab's recorder and its ladder diagram.

A scenario run with `--trace` (make test-nat SCENARIO=home-nat-direct TRACE=1) records, in a
directory of its own that it prints:

  <router>-lan.pcap, <router>-wan.pcap, server.pcap   tcpdump on both sides of every router
                                                       and on the server: UDP, and TCP to and
                                                       from the server's port (the relay)
  <router>-conntrack.txt                               `conntrack -E` in each router: every
                                                       UDP flow it made, updated and destroyed
  lab.json                                             the lab's interfaces, addresses, rules

and then prints a ladder: one row per datagram, with each datagram's addresses before and
after each NAT, what it is (natchat's text protocol, short), and where it stopped. Open the
captures in Wireshark with mininet/natchat.lua to see every field. `python3 recorder.py DIR`
prints the ladder of a recorded directory again (`--all`: every row, nothing elided).

The ladder only says what the captures prove. A datagram is the same one on two interfaces
when its payload is byte for byte the same and it was seen within WINDOW seconds (NAT changes
addresses, never the payload). One that entered a router and never left it stopped there; a
router's conntrack events (tracked from an empty table, or from `conntrack -L` when the
recorder starts late) say whether an entry could have let it in, or whether the router took
it for itself (bare MASQUERADE: an [UNREPLIED] entry that is no client's).

The pcap format is read here in plain Python (no scapy, no tshark), so that the ladder is
printed wherever the lab runs.
"""

import argparse
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import time
from collections import namedtuple

# --- Reading pcap files ----------------------------------------------------------------
# A pcap file: a 24-byte header whose magic number says the byte order and whether stamps
# are in micro- or nanoseconds, then per packet a 16-byte record header and the frame.
PCAP_MAGIC = {
    b'\xd4\xc3\xb2\xa1': ('<', 1e-6), b'\xa1\xb2\xc3\xd4': ('>', 1e-6),
    b'\x4d\x3c\xb2\xa1': ('<', 1e-9), b'\xa1\xb2\x3c\x4d': ('>', 1e-9),
}
LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2 = 1, 113, 276
ETHERTYPE_IPV4, ETHERTYPE_VLAN = 0x0800, 0x8100
IPPROTO_TCP, IPPROTO_UDP = 6, 17


class PcapError(Exception):
    """A file that is not a pcap capture this reader knows; the message says why."""


def read_pcap(path):
    """Yields (timestamp, linktype, frame) for every whole packet in the pcap file `path`.
    A capture still being written, or cut short, ends at its last whole packet; a file
    tcpdump has not written its header to yet holds no packet."""
    with open(path, 'rb') as f:
        header = f.read(24)
        if len(header) < 24:
            return
        if header[:4] not in PCAP_MAGIC:
            raise PcapError(f'{path}: not a pcap file (magic {header[:4].hex()}; pcapng is '
                            'not read here: tcpdump -w writes pcap)')
        order, unit = PCAP_MAGIC[header[:4]]
        linktype = struct.unpack(order + 'I', header[20:24])[0] & 0x0FFFFFFF
        while True:
            record = f.read(16)
            if len(record) < 16:
                return
            seconds, fraction, captured, _original = struct.unpack(order + 'IIII', record)
            frame = f.read(captured)
            if len(frame) < captured:
                return
            yield seconds + fraction * unit, linktype, frame


# One IPv4 UDP or TCP packet, as a frame carried it: who put it on the wire (the frame's
# source MAC), the protocol, both endpoints, and the payload.
Packet = namedtuple('Packet', 'mac proto src sport dst dport payload')


def decode(linktype, frame):
    """The Packet in `frame`, or None for anything but IPv4 UDP or TCP (ARP, IPv6, a later
    fragment)."""
    if linktype == LINKTYPE_ETHERNET:
        mac, ethertype, offset = frame[6:12], struct.unpack('!H', frame[12:14])[0], 14
        if ethertype == ETHERTYPE_VLAN and len(frame) >= 18:
            ethertype, offset = struct.unpack('!H', frame[16:18])[0], 18
    elif linktype == LINKTYPE_LINUX_SLL:
        length = struct.unpack('!H', frame[4:6])[0]
        mac, ethertype, offset = frame[6:6 + min(length, 8)], struct.unpack('!H', frame[14:16])[0], 16
    elif linktype == LINKTYPE_LINUX_SLL2:
        length = frame[11]
        mac, ethertype, offset = frame[12:12 + min(length, 8)], struct.unpack('!H', frame[0:2])[0], 20
    else:
        return None
    ip = frame[offset:]
    if ethertype != ETHERTYPE_IPV4 or len(ip) < 20 or ip[0] >> 4 != 4:
        return None
    header = (ip[0] & 0x0F) * 4
    total = struct.unpack('!H', ip[2:4])[0]
    if struct.unpack('!H', ip[6:8])[0] & 0x1FFF:
        return None  # a fragment after the first: no ports in it
    proto, src, dst = ip[9], ip_text(ip[12:16]), ip_text(ip[16:20])
    ip = ip[:total]  # without the Ethernet padding of a short frame
    if proto == IPPROTO_UDP and len(ip) >= header + 8:
        sport, dport, length = struct.unpack('!HHH', ip[header:header + 6])
        return Packet(mac.hex(':'), 'udp', src, sport, dst, dport,
                      bytes(ip[header + 8:header + max(length, 8)]))
    if proto == IPPROTO_TCP and len(ip) >= header + 20:
        sport, dport = struct.unpack('!HH', ip[header:header + 4])
        data_offset = (ip[header + 12] >> 4) * 4
        return Packet(mac.hex(':'), 'tcp', src, sport, dst, dport, bytes(ip[header + data_offset:]))
    return None


def ip_text(raw):
    return '.'.join(str(b) for b in raw)


# --- Reading conntrack events ------------------------------------------------------------
# `conntrack -E -p udp -o timestamp` prints one line per event:
#   [1733080000.123456]	    [NEW] udp      17 30 src=192.168.1.2 dst=10.0.0.3 sport=10081
#       dport=10080 [UNREPLIED] src=10.0.0.3 dst=10.0.0.1 sport=10080 dport=10081
# the original direction's tuple first, then the reply's (whose destination is the public
# address a NAT gave the flow). The recorder writes `conntrack -L` lines (no stamp) as
# [EXISTING] at the moment it started.
Event = namedtuple('Event', 'time kind orig reply')
TUPLE = r'src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)'
EVENT = re.compile(r'^\[(\d+\.\d+)\]\s+\[(\w+)\]\s+udp\s+17\s.*?' + TUPLE + r'.*?' + TUPLE)


def read_events(path):
    """The conntrack events in `path`, oldest first."""
    events = []
    try:
        with open(path) as f:
            for line in f:
                m = EVENT.match(line)
                if m:
                    g = m.groups()
                    events.append(Event(float(g[0]), g[1], (g[2], int(g[4]), g[3], int(g[5])),
                                        (g[6], int(g[8]), g[7], int(g[9]))))
    except FileNotFoundError:
        pass
    return events


def entries_at(events, at):
    """The flows a router held at time `at`: {original tuple: Event that made it}."""
    live = {}
    for event in events:
        if event.time > at:
            break
        if event.kind in ('NEW', 'EXISTING'):
            live[event.orig] = event
        elif event.kind == 'DESTROY':
            live.pop(event.orig, None)
    return live


# --- Recording ---------------------------------------------------------------------------
# What tcpdump keeps: every UDP datagram, and the TCP segments to and from the server's port
# (the relay: RELAY and RELAYED lines). -p: only frames this interface sent or was sent, so
# that a frame a bridge floods past it is not taken for one it carried.
CAPTURE_FILTER = 'udp or tcp port 10080'
# Where --trace keeps each scenario's recording (TRACE_DIR in the environment overrides it).
TRACE_DIR = '/tmp/natchat-trace'


class RecordError(Exception):
    """The recorder could not start: the message says what, in one line."""


def directory_for(scenario):
    """A fresh directory for one scenario's recording: TRACE_DIR/<scenario>-<time>."""
    base = os.environ.get('TRACE_DIR') or TRACE_DIR
    return os.path.join(base, f'{scenario}-{time.strftime("%Y%m%d-%H%M%S")}')


class Recorder:
    """tcpdump on each router's LAN and WAN and on the server, `conntrack -E` in each router,
    into `directory`, until stop(). With `keep` false, stop() removes the directory: a
    scenario that reads the captures for its own checks (bare-heal) leaves nothing behind."""

    def __init__(self, net, directory, keep=True):
        self.directory, self.keep, self.procs, self.files = directory, keep, [], []
        os.makedirs(directory, exist_ok=True)
        lab = {'interfaces': {}, 'hosts': {}, 'routers': {}, 'rules': {}}
        targets = []
        for node in net.hosts:
            lab['hosts'][node.name] = [i.IP() for i in node.intfList() if i.IP()]
            if node.name == 'server':
                targets.append((node, node.defaultIntf(), 'server', 'server'))
            for intf in node.intfList():
                side = intf.name.rsplit('-', 1)[-1]
                if intf.name.startswith(node.name + '-') and side in ('lan', 'wan'):
                    targets.append((node, intf, side, intf.name))
                    lab['routers'].setdefault(node.name, {})[side] = intf.IP()
        for node, intf, role, label in targets:
            lab['interfaces'][label] = {'node': node.name, 'device': intf.name, 'role': role,
                                        'ip': intf.IP(), 'mac': intf.MAC()}
        for router in lab['routers']:  # for whoever reads the directory: what made each drop
            lab['rules'][router] = net[router].cmd('iptables -t nat -S; iptables -S').splitlines()
        with open(os.path.join(directory, 'lab.json'), 'w') as f:
            json.dump(lab, f, indent=1)
        try:
            for node, intf, _, label in targets:
                self._capture(node, intf.name, os.path.join(directory, f'{label}.pcap'))
            for router in lab['routers']:
                self._conntrack(net[router], os.path.join(directory, f'{router}-conntrack.txt'))
        except BaseException:
            self.stop()
            raise

    def _capture(self, node, device, path):
        # --immediate-mode and -U: each packet written as it comes (not in blocks of the
        # kernel's ring), so that the file can be read while tcpdump runs; -Z root: write as
        # root (Debian's tcpdump would drop to its own user).
        proc = node.popen(['tcpdump', '-i', device, '-p', '-n', '--immediate-mode', '-U',
                           '-Z', 'root', '-w', path,
                           CAPTURE_FILTER], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
        self.procs.append(proc)
        ready, _, _ = select.select([proc.stderr], [], [], 10)
        said = proc.stderr.readline().strip() if ready else ''
        if 'listening on' not in said:
            raise RecordError(f'trace: tcpdump did not start on {device}: {said or "no answer"}')

    def _conntrack(self, node, path):
        out = open(path, 'w')
        self.files.append(out)
        proc = node.popen(['stdbuf', '-oL', 'conntrack', '-E', '-p', 'udp', '-o', 'timestamp'],
                          stdout=out, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        # The flows the router held before the events began: a recorder started mid-run.
        # (An event raced by this listing is in both: the same entry, twice, harmless.)
        time.sleep(0.2)  # conntrack -E subscribes within milliseconds; an event before is listed
        now = time.time()
        for line in node.cmd('conntrack -L -p udp 2>/dev/null').splitlines():
            if line.startswith('udp'):
                out.write(f'[{now:.6f}]\t[EXISTING] {line}\n')
        out.flush()

    def stop(self):
        """Stops every capture (tcpdump finishes its file) and removes the files unless kept.
        SIGTERM, not SIGINT: a shell's background job, as execute_mn.sh runs the scenarios,
        and so its children, ignore SIGINT."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in self.files:
            f.close()
        self.procs, self.files = [], []
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def trace(self):
        """What is recorded so far, read (the captures may still be running)."""
        return Trace(self.directory)

    def event_lines(self):
        """Every router's conntrack events so far, as printed, for a failure report."""
        lines = []
        for name in sorted(os.listdir(self.directory)):
            if name.endswith('-conntrack.txt'):
                with open(os.path.join(self.directory, name)) as f:
                    router = name[:-len('-conntrack.txt')]
                    lines += [f'{router + "-ct":>8} | {line.rstrip()}' for line in f]
        return lines


# --- Correlating: one datagram across interfaces -------------------------------------------
# The same payload seen on two interfaces within this many seconds is one datagram (a router
# forwards in microseconds; bare-heal's WAN delay is 10 ms). Identical payloads sent again
# (keep-alives, retransmissions) are told apart because a datagram crosses each interface,
# each way, once.
WINDOW = 0.5

Sighting = namedtuple('Sighting', 'time where direction packet')


class Datagram:
    """One datagram (or TCP segment) and every interface it was seen on, in time order."""

    def __init__(self, sighting):
        self.sightings = [sighting]
        self.payload = sighting.packet.payload
        self.proto = sighting.packet.proto

    @property
    def time(self):
        return self.sightings[0].time

    def at(self, where, direction):
        """The packet as seen on interface `where` going `direction` ('in' or 'out'), or None."""
        return next((s.packet for s in self.sightings
                     if s.where == where and s.direction == direction), None)


class Trace:
    """A recorded directory, read: the lab, every sighting, the datagrams, the routers' events."""

    def __init__(self, directory):
        self.directory = directory
        with open(os.path.join(directory, 'lab.json')) as f:
            self.lab = json.load(f)
        self.interfaces = self.lab['interfaces']
        self.events = {router: read_events(os.path.join(directory, f'{router}-conntrack.txt'))
                       for router in self.lab['routers']}
        sightings = []
        for where, intf in self.interfaces.items():
            path = os.path.join(directory, f'{where}.pcap')
            if not os.path.exists(path):
                continue
            for at, linktype, frame in read_pcap(path):
                packet = decode(linktype, frame)
                if packet and (packet.proto == 'udp' or relay_lines(packet.payload)):
                    direction = 'out' if packet.mac == intf['mac'] else 'in'
                    sightings.append(Sighting(at, where, direction, packet))
        sightings.sort(key=lambda s: s.time)
        self.datagrams = correlate(sightings)
        self.by_interface = {}
        for s in sightings:
            self.by_interface.setdefault(s.where, []).append((s.time, s.direction, s.packet))

    def sightings(self, where):
        """Every packet seen on interface `where`, as (time, direction, Packet), oldest first."""
        return self.by_interface.get(where, [])

    def first_out(self, router, flow, before):
        """When `router` first sent a packet of `flow` (src, sport, dst, dport) out of its WAN
        before time `before`, since its last entry for the flow was destroyed, or None: from
        then on it held a conntrack entry for the flow."""
        destroyed = [e.time for e in self.events.get(router, []) if e.kind == 'DESTROY'
                     and e.reply == reversed_flow(flow) and e.time < before]
        # The packet that needs a stale entry's tuple is what destroys it: a moment before
        # the event is heard.
        since = max(destroyed) - 0.005 if destroyed else float('-inf')
        return next((at for at, direction, p in self.sightings(f'{router}-wan')
                     if since <= at < before and direction == 'out' and flow_of(p) == flow),
                    None)


def flow_of(packet):
    return (packet.src, packet.sport, packet.dst, packet.dport)


def reversed_flow(flow):
    return (flow[2], flow[3], flow[0], flow[1])


def correlate(sightings):
    """Groups sightings (sorted by time) into Datagrams: a sighting joins the latest datagram
    with the same payload seen within WINDOW that has not yet crossed that interface that
    way; else it starts a new one."""
    datagrams, recent = [], {}
    for s in sightings:
        key = (s.packet.proto, s.packet.payload)
        candidates = [d for d in recent.get(key, [])
                      if s.time - d.sightings[-1].time <= WINDOW
                      and d.at(s.where, s.direction) is None]
        if candidates:
            candidates[-1].sightings.append(s)
        else:
            datagram = Datagram(s)
            datagrams.append(datagram)
            recent[key] = [d for d in recent.get(key, []) if s.time - d.sightings[-1].time <= WINDOW]
            recent[key].append(datagram)
    return datagrams


# --- What a datagram is --------------------------------------------------------------------
RELAY_LINE = re.compile(rb'^(PUNCH|RELAY|RELAYED) ')


def relay_lines(payload):
    """The lines of a TCP segment that the ladder shows: the server's PUNCH and the relay."""
    return [line for line in payload.split(b'\n') if RELAY_LINE.match(line)]


# A message in a few words: its name (RELAY and RELAYED: with the relayed datagram's, 'RELAY
# CHAT'), who it says sent it, its sequence number, and whom it names as the receiver.
Kind = namedtuple('Kind', 'name sender number to')
PEER_MESSAGES = {'PROBE': 0, 'PROBE_ACK': 0, 'CHAT': 3, 'ACK': 2}  # where the number is
ANNOUNCEMENTS = ('HELLO', 'ALIVE', 'AWAKE')


def kind_of(datagram):
    """natchat's message in a datagram, or in the relay's lines of a TCP segment."""
    if datagram.proto == 'tcp':
        words = relay_lines(datagram.payload)[0].decode(errors='replace').split(' ')
        if words[0] == 'PUNCH':
            return Kind('PUNCH', None, None, words[1] if len(words) > 1 else None)
        relayed = words_of(words[2:] if words[0] == 'RELAY' else words[1:])
        to = words[1] if words[0] == 'RELAY' and len(words) > 1 else None
        return relayed._replace(name=f'{words[0]} {relayed.name}', to=to)
    return words_of(datagram.payload.decode(errors='replace').split(' '))


def words_of(words):
    name = words[0] if words else ''
    sender = words[1] if len(words) > 1 else None
    if name in ANNOUNCEMENTS:
        return Kind(name, sender, None, None)
    if name in PEER_MESSAGES:
        at = PEER_MESSAGES[name]
        return Kind(name, sender, words[at] if at and len(words) > at else None, None)
    # Not natchat's: its first word, when it is a short printable one (natprobe's `knock`).
    shown = name if 0 < len(name) <= 12 and name.isprintable() and name.isascii() else None
    return Kind('other', shown, None, None)


# --- The ladder ----------------------------------------------------------------------------
# Five lifelines: the hosts behind the first router, the first router, the public side (the
# server), the second router, the hosts behind it. Columns are 22 characters apart: a row is
# 98 characters wide, and an address pair in short form (nat1:54321>nat2:54321) fits between
# two lifelines.
LIFELINES = [9, 31, 53, 75, 97]
# Rows alike (same message, same way, same fate) shown before the rest are counted in one
# line; the server's PUNCH, one per punch, is always shown.
SHOWN_PER_KIND = 2


class Names:
    """Names for the lab's addresses, where each node stands on the ladder, and what the rows
    so far have said (so that each hole opened, each new mapping, is said once)."""

    def __init__(self, trace):
        lab = trace.lab
        self.routers = sorted(lab['routers'])
        self.names = {}  # ip -> short name
        for host, ips in lab['hosts'].items():
            for ip in ips:
                self.names.setdefault(ip, 'srv' if host == 'server' else host)
        for router, sides in lab['routers'].items():
            self.names[sides['wan']] = router
        self.behind = {}  # client host -> its router (by the router's LAN subnet)
        for host, ips in lab['hosts'].items():
            for router, sides in lab['routers'].items():
                lan = sides.get('lan', '')
                if host not in self.routers and any(same_subnet(ip, lan) for ip in ips):
                    self.behind[host] = router
        self.mappings = {}  # (public ip, port) -> the client host a router mapped there
        self.opened = set()  # the inbound flows a router already let in (said once each)
        self.ports = {}  # a client's (ip, port) -> {destination: the public port it got}
        self.public = {sides['wan']: router for router, sides in lab['routers'].items()}

    def column(self, name):
        if name in self.routers[:1]:
            return 1
        if name in self.routers[1:2]:
            return 3
        router = self.behind.get(name)
        if router:
            return 0 if router == self.routers[0] else 4
        return 2

    def short(self, ip, port):
        return f'{self.names.get(ip, ip)}:{port}'

    def pair(self, packet):
        return self.pair_of(flow_of(packet))

    def pair_of(self, t):
        """A (src, sport, dst, dport) tuple in short form: h1:10081>nat2:10081."""
        return f'{self.short(t[0], t[1])}>{self.short(t[2], t[3])}'


def same_subnet(ip, other):
    return bool(other) and ip.rsplit('.', 1)[0] == other.rsplit('.', 1)[0] and ip != other


Row = namedtuple('Row', 'time label start end fate addresses notes signature dropped hosts')


def rows_of(trace):
    """One Row per datagram the ladder shows: its way across the lifelines, its addresses on
    each segment, and where it stopped, said as the captures and events prove it."""
    lab = Names(trace)
    learn_mappings(trace, lab)
    started = min((d.time for d in trace.datagrams), default=0.0)
    rows = []
    for d in trace.datagrams:
        kind = kind_of(d)
        rows.append(row_of(trace, lab, d, kind, d.time - started))
    return lab, rows


def learn_mappings(trace, lab):
    """Which client each router's public (address, port) belongs to, from the datagrams seen
    entering a router from its LAN and leaving on its WAN (so that `PROBE h1>h3` can name h3
    while the probe is still addressed to nat2:10081)."""
    for d in trace.datagrams:
        for router in lab.routers:
            inside, outside = d.at(f'{router}-lan', 'in'), d.at(f'{router}-wan', 'out')
            if inside and outside:
                lab.mappings.setdefault((outside.src, outside.sport), lab.names.get(inside.src))


def row_of(trace, lab, d, kind, at):
    """Datagram `d` as a Row: where it started (its sender, or the router that sent it
    itself), the last place it was seen, and what that says: delivered on a client's LAN,
    arrived at the server, or stopped in a router (stopped_at says why)."""
    first = d.sightings[0]
    sender_ip = first.packet.src
    sender = lab.names.get(sender_ip, sender_ip)
    start = lab.column(sender)
    if first.direction == 'out' and trace.interfaces[first.where]['role'] in ('lan', 'wan'):
        start = lab.column(trace.interfaces[first.where]['node'])  # the router's own datagram
    last = d.sightings[-1]
    final = last.packet
    receiver = lab.names.get(final.dst) if lab.names.get(final.dst) in lab.behind else \
        lab.mappings.get((final.dst, final.dport)) or lab.names.get(final.dst, final.dst)
    label = label_of(kind, receiver)
    node = trace.interfaces[last.where]['node']
    fate, note, dropped = None, None, False
    if last.direction == 'out' and trace.interfaces[last.where]['role'] == 'lan':
        end = lab.column(lab.names.get(final.dst, ''))  # on the client's LAN: delivered
    elif last.direction == 'in' and trace.interfaces[last.where]['role'] == 'server':
        end = 2
    elif last.direction == 'in':
        end, dropped = lab.column(node), True
        fate, note = stopped_at(trace, lab, d, node, last)
    else:
        # Left a router or the server and seen nowhere after: where it went, nothing saw.
        end = lab.column(lab.names.get(final.dst, '')) if final.dst in lab.names else 2
        fate = f'not seen after it left {node}'
        dropped = True
    addresses = segments(trace, lab, d, start, end)
    notes = [n for n in [note, let_in(trace, lab, d)] + new_mappings(lab, d) if n]
    signature = (kind.name, kind.sender, receiver, start, end, fate)
    hosts = {name for text in addresses.values() for name in re.findall(r'([\w.-]+):\d+', text)}
    return Row(at, label, start, end, fate, addresses, notes, signature, dropped, hosts)


def new_mappings(lab, d):
    """When a router gives a client's port another public port than it gave it toward an
    earlier destination (a symmetric NAT, or a collision with a stale entry): says so, the
    first time for each destination."""
    notes = []
    for router in lab.routers:
        inside, outside = d.at(f'{router}-lan', 'in'), d.at(f'{router}-wan', 'out')
        if not (inside and outside) or inside.proto != 'udp':
            continue
        private, destination = (inside.src, inside.sport), (outside.dst, outside.dport)
        ports = lab.ports.setdefault(private, {})  # destination -> public port, in order
        if destination in ports:
            continue
        ports[destination] = outside.sport
        first, port = next(iter(ports.items()))
        if port != outside.sport:
            notes.append(f'{router} mapped {lab.short(*private)} to {router}:{outside.sport} '
                         f'toward {lab.short(*destination)} (toward {lab.short(*first)}: '
                         f'{router}:{port})')
    return notes


# A router's own packet seen leaving its WAN this soon after an inbound one that it let in
# may still have made the entry first: tcpdump sees an inbound packet before conntrack does,
# an outbound one after.
CROSSING = 0.001


def let_in(trace, lab, d):
    """For the first datagram a router let in from its WAN on a flow between two routers
    (a peer's): which of its client's own sends had made the entry that let it in."""
    for router in lab.routers:
        outside, inside = d.at(f'{router}-wan', 'in'), d.at(f'{router}-lan', 'out')
        if not (outside and inside) or outside.proto != 'udp' or outside.src not in lab.public:
            continue
        flow = flow_of(outside)
        if flow in lab.opened:
            continue
        lab.opened.add(flow)
        at = next(s.time for s in d.sightings if s.where == f'{router}-wan')
        made = trace.first_out(router, reversed_flow(flow), at + CROSSING)
        if made is None:
            continue
        client = lab.mappings.get((flow[2], flow[3]), 'its client')
        sent = f'{router} let it in: {client}'
        if made <= at:
            return (f'{sent} had sent {lab.pair_of(reversed_flow(flow))} {1000 * (at - made):.2f} '
                    'ms before (its conntrack entry)')
        return (f'{sent} sent {lab.pair_of(reversed_flow(flow))} '
                f'{1e6 * (made - at):.0f} us later on the wire: they crossed')
    return None


def label_of(kind, receiver):
    """`PROBE h1>h3`, `CHAT h1>h3 #2`, `RELAY ACK h3>h1 #2`, `ALIVE h1`, `PUNCH h3`: the
    message, who sent it (as it says itself), and whom it went to (as the addresses say)."""
    if kind.name in ANNOUNCEMENTS:
        return f'{kind.name} {kind.sender}'
    if kind.name == 'PUNCH':
        return f'PUNCH {kind.to}'
    if kind.name == 'other':
        return kind.sender or 'other'
    label = f'{kind.name} {kind.sender}>{kind.to or receiver}'
    return f'{label} #{kind.number}' if kind.number else label


def stopped_at(trace, lab, d, router, last):
    """Why a datagram that entered `router` never left it, as far as the router's conntrack
    events tell: (fate, note)."""
    packet = last.packet
    side = trace.interfaces[last.where]['role']
    if side == 'lan':
        private = any(same_subnet(packet.dst, sides.get('lan', ''))
                      for r, sides in trace.lab['routers'].items() if r != router)
        why = f' ({packet.dst} is a private address of another LAN)' if private else ''
        return f'dropped at {router}: never left it{why}', None
    events = trace.events.get(router, [])
    tuple_in = flow_of(packet)
    # The router takes a datagram for itself when its entry for it is one of its own, not a
    # client's: made by this datagram (bare MASQUERADE, nothing filters), or by an earlier one.
    made = next((e for e in events if e.kind == 'NEW' and e.orig == tuple_in
                 and -0.001 <= e.time - last.time <= 0.2), None)
    if made:
        return (f'taken by {router} itself: a new entry {lab.pair_of(tuple_in)} [UNREPLIED], '
                'no client\'s', None)
    live = entries_at(events, last.time)
    if tuple_in in live:
        return (f'taken by {router} itself: its entry {lab.pair_of(tuple_in)} is no client\'s',
                None)
    # A client's entry, which the events may not show yet (conntrack -E hears of it a little
    # late): the router had sent a packet of the reverse flow, whose entry still lives.
    if (any(e.reply == tuple_in for e in live.values())
            or trace.first_out(router, reversed_flow(tuple_in), last.time) is not None):
        return f'dropped at {router}, though a conntrack entry matched it', None
    fate = f'dropped at {router}: no conntrack entry, NEW inbound'
    # What the router would have let in from that address: the replies its entries await.
    awaited = sorted({lab.pair_of(e.reply) for e in live.values()
                      if e.reply[0] == packet.src and e.reply[2] == packet.dst})
    note = (f'{router} lets in from {lab.names.get(packet.src, packet.src)} only '
            f'{", ".join(awaited[:2])} (replies to its client)' if awaited else None)
    return fate, note


def segments(trace, lab, d, start, end):
    """The datagram's addresses on each stretch of wire it was seen on: {segment: text},
    segment i lying between lifelines i and i+1."""
    out = {}
    routers = lab.routers[:2]
    for where, intf in trace.interfaces.items():
        packet = d.at(where, 'in') or d.at(where, 'out')
        if not packet:
            continue
        role, node = intf['role'], intf['node']
        if role == 'lan':
            segment = 0 if node == routers[0] else 3
        elif role == 'wan':
            segment = 1 if node == routers[0] else 2
        else:
            segment = 1 if min(start, end) <= 1 else 2
        out.setdefault(segment, lab.pair(packet))
    # A datagram between the two routers crosses one wire: say its addresses once.
    if out.get(1) and out.get(1) == out.get(2):
        del out[2]
    return out


def arrow(row):
    """The row's first line: the lifelines, and the datagram's way across them."""
    line = [' '] * (LIFELINES[-1] + 1)
    for x in LIFELINES:
        line[x] = '|'
    a, b = LIFELINES[row.start], LIFELINES[row.end]
    if a == b:
        return ''.join(line)
    left, right = min(a, b), max(a, b)
    for x in range(left + 1, right):
        line[x] = '-'
    if row.dropped:
        line[b] = 'x'
    else:
        line[b - 1 if b > a else b + 1] = '>' if b > a else '<'
    # Centred in the first stretch of the arrow, or over the next ones when longer.
    label, room = f' {row.label} ', range(left + 2, right - 1)
    at = left + 2 + max(0, (LIFELINES[1] - LIFELINES[0] - 3 - len(label)) // 2)
    for i, ch in enumerate(label[:room.stop - at]):
        line[at + i] = ch
    return ''.join(line)


def render(lab, rows, every=False):
    """The ladder: a header, then per row its arrow, its addresses and what became of it; rows
    alike past the first SHOWN_PER_KIND counted in one line. Lines of at most 98 characters
    (the scenarios indent them by two)."""
    seen = set().union(*(row.hosts for row in rows)) if rows else set()
    sides = [sorted(h for h, r in lab.behind.items() if r == router and h in seen)
             for router in (lab.routers[0], lab.routers[-1])]
    names = [' '.join(sides[0]) or '-', lab.routers[0], 'server', lab.routers[-1],
             ' '.join(sides[1]) or '-']
    header = list('time (s)') + [' '] * (LIFELINES[-1] + 1 - 8)
    for x, name in zip(LIFELINES, names):
        at = max(LIFELINES[0], min(x - len(name) // 2, len(header) - len(name)))
        header[at:at + len(name)] = name
    lines = [''.join(header).rstrip()]
    shown, elided = {}, []

    def flush():
        if elided:
            kinds = {}
            for row in elided:
                kind = row.label.rsplit(' #', 1)[0]
                kinds[kind] = kinds.get(kind, 0) + 1
            line = f'        ... {len(elided)} more like the rows above:'
            for k, n in sorted(kinds.items(), key=lambda kn: -kn[1]):
                if len(line) + len(f' {n} {k},') > 90:
                    line += ' ...,'
                    break
                line += f' {n} {k},'
            lines.append(line.rstrip(','))
            elided.clear()

    for row in rows:
        count = shown.get(row.signature, 0)
        shown[row.signature] = count + 1
        if not every and count >= SHOWN_PER_KIND and row.signature[0] != 'PUNCH':
            elided.append(row)
            continue
        flush()
        lines.append(f'{row.time:8.4f}' + arrow(row)[8:])
        under = [' '] * (LIFELINES[-1] + 1)
        for segment, text in sorted(row.addresses.items()):
            at = LIFELINES[segment] + 1
            under[at:at + len(text)] = text[:LIFELINES[1] - LIFELINES[0] - 1]
        if ''.join(under).strip():
            lines.append(''.join(under).rstrip())
        lines += [f'        {said}'[:98] for said in [row.fate] + row.notes if said]
    flush()
    return lines


def ladder_lines(lab, rows, every=False):
    """The ladder, under a line naming the addresses it writes short."""
    used = set().union(*(row.hosts for row in rows)) if rows else set()
    legend = [f'{name} {ip}' for ip, name in sorted(lab.names.items(), key=lambda x: x[1])
              if name in used and (name not in lab.routers or ip in lab.public)]
    return [f'ladder: {len(rows)} datagrams, a row each; under each, its addresses on every wire '
            'it was seen on', f'  ({", ".join(legend)})'[:98]] + render(lab, rows, every)


# --- What a scenario's ladder must show (checked when it runs with --trace) -------------------

def punch_shown(rows):
    """home-nat-direct: a punch behind home routers, as the ladder must show it. A peer's
    probe (or its answer) let in by a router through the entry its own client's probe had
    just made: the hole. (Whether one side's first probe is dropped first depends on which
    reaches the far router before that router's client has sent: measured, the probes
    crossed in flight, nothing dropped, in 2 of 11 runs.) And a chat from h1 that reaches
    h3's LAN through both NATs."""
    holes = [r for r in rows if r.signature[0] in ('PROBE', 'PROBE_ACK')
             and any(' let it in: ' in note for note in r.notes)]
    if not holes:
        return 'the ladder shows no probe let in by the entry its own side\'s probe made'
    crossed = [r for r in rows if r.signature[:3] == ('CHAT', 'h1', 'h3') and not r.dropped
               and r.start == 0 and r.end == 4]
    if not crossed:
        return 'the ladder shows no CHAT from h1 delivered to h3 through both NATs'
    return None


CHECKS = {'home-nat-direct': punch_shown}


def report(directory, scenario):
    """What a --trace run prints under the scenario's line: where the files are and the
    ladder; and what the ladder lacks that `scenario` must show (CHECKS), or None."""
    try:
        trace = Trace(directory)
        names, rows = rows_of(trace)
    except Exception as e:  # a recording it cannot read, or a bug here: said, never a crash
        return ([f'trace: {directory}: {type(e).__name__}: {e}'],
                f'trace: could not read the recording: {type(e).__name__}: {e}')
    where = next((w for w in trace.interfaces if w.endswith('-wan')), 'server')
    lines = [f'trace: captures and conntrack events in {directory}',
             f'  read one decoded: tshark -X lua_script:mininet/natchat.lua -r '
             f'{os.path.join(directory, where + ".pcap")}']
    if len(names.routers) != 2:
        return lines + [f'  no ladder: it draws labs of two routers, this one has '
                        f'{len(names.routers)}'], None
    lines += ladder_lines(names, rows)
    check = CHECKS.get(scenario)
    wrong = check(rows) if check else None
    return lines, wrong and f'trace: {wrong}'


def main():
    parser = argparse.ArgumentParser(description='The ladder of a recorded lab run.')
    parser.add_argument('directory', help='the directory a --trace run printed')
    parser.add_argument('--all', action='store_true', help='every row, nothing elided')
    args = parser.parse_args()
    try:
        for line in ladder_lines(*rows_of(Trace(args.directory)), args.all):
            print(line)
    except (OSError, PcapError, ValueError) as e:
        sys.exit(f'recorder.py: {e}')


if __name__ == '__main__':
    main()
