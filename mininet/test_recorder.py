#!/usr/bin/python3
"""Unit tests of recorder.py: the pcap reader, the correlation of sightings into datagrams,
and the ladder, on captures written here byte by byte (no lab, no root). execute_mn.sh
--test runs them before the scenarios; alone: python3 mininet/test_recorder.py."""

import json
import os
import shutil
import struct
import tempfile
import unittest

import recorder

MACS = {'nat1-lan': '02:00:00:00:01:01', 'nat1-wan': '02:00:00:00:01:02',
        'nat2-lan': '02:00:00:00:02:01', 'nat2-wan': '02:00:00:00:02:02',
        'server': '02:00:00:00:00:03'}
HOST_MACS = {'192.168.1.2': '02:00:00:00:00:a1', '192.168.2.2': '02:00:00:00:00:a3'}
IPS = {'nat1-lan': '192.168.1.1', 'nat1-wan': '10.0.0.1', 'nat2-lan': '192.168.2.1',
       'nat2-wan': '10.0.0.2', 'server': '10.0.0.3'}
H1, H3, NAT1, NAT2, SERVER = '192.168.1.2', '192.168.2.2', '10.0.0.1', '10.0.0.2', '10.0.0.3'


def mac(text):
    return bytes.fromhex(text.replace(':', ''))


def ip(text):
    return bytes(int(part) for part in text.split('.'))


def udp_frame(src_mac, src, sport, dst, dport, payload):
    udp = struct.pack('!HHHH', sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         ip(src), ip(dst))
    return b'\xff' * 6 + mac(src_mac) + b'\x08\x00' + header + udp


def tcp_frame(src_mac, src, sport, dst, dport, payload):
    tcp = struct.pack('!HHIIBBHHH', sport, dport, 1, 1, 5 << 4, 0x18, 512, 0, 0) + payload
    header = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0,
                         ip(src), ip(dst))
    return b'\xff' * 6 + mac(src_mac) + b'\x08\x00' + header + tcp


def pcap(packets, order='<', nanoseconds=False):
    """A pcap file's bytes: packets are (time, frame)."""
    magic = 0xa1b23c4d if nanoseconds else 0xa1b2c3d4
    unit = 1e9 if nanoseconds else 1e6
    out = struct.pack(order + 'IHHiIII', magic, 2, 4, 0, 0, 262144, 1)
    for at, frame in packets:
        seconds = int(at)
        out += struct.pack(order + 'IIII', seconds, round((at - seconds) * unit), len(frame),
                           len(frame)) + frame
    return out


def event(at, kind, orig, reply):
    """A `conntrack -E -o timestamp` line."""
    o, r = orig, reply
    return (f'[{at:.6f}]\t    [{kind}] udp      17 30 src={o[0]} dst={o[2]} sport={o[1]} '
            f'dport={o[3]} [UNREPLIED] src={r[0]} dst={r[2]} sport={r[1]} dport={r[3]}\n')


class Recording:
    """A recorded directory as the lab's Recorder writes it, filled by the test: each packet
    is put on the interfaces it crosses, each way, as a real run would capture it."""

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix='natchat-test-recorder-')
        self.packets = {where: [] for where in MACS}
        self.events = {'nat1': [], 'nat2': []}

    def seen(self, where, at, sender_mac, src, sport, dst, dport, payload, frame=udp_frame):
        self.packets[where].append((at, frame(sender_mac, src, sport, dst, dport, payload)))

    def h1_out(self, at, dst, dport, payload, public_port=10081, upto='far'):
        """h1 sends from 10081 to dst:dport: nat1's LAN (in), nat1's WAN (out, as nat1's
        public_port), then the server's or nat2's WAN (in), and nat2's LAN (out) when
        `upto` is 'far'."""
        self.seen('nat1-lan', at, HOST_MACS[H1], H1, 10081, dst, dport, payload)
        self.seen('nat1-wan', at + 0.00001, MACS['nat1-wan'], NAT1, public_port, dst, dport, payload)
        where = 'server' if dst == SERVER else 'nat2-wan'
        self.seen(where, at + 0.00002, MACS['nat1-wan'], NAT1, public_port, dst, dport, payload)
        if where == 'nat2-wan' and upto == 'far':
            self.seen('nat2-lan', at + 0.00003, MACS['nat2-lan'], NAT1, public_port, H3, 10081,
                      payload)

    def h3_out(self, at, dst, dport, payload, upto='far'):
        self.seen('nat2-lan', at, HOST_MACS[H3], H3, 10081, dst, dport, payload)
        self.seen('nat2-wan', at + 0.00001, MACS['nat2-wan'], NAT2, 10081, dst, dport, payload)
        where = 'server' if dst == SERVER else 'nat1-wan'
        self.seen(where, at + 0.00002, MACS['nat2-wan'], NAT2, 10081, dst, dport, payload)
        if where == 'nat1-wan' and upto == 'far':
            self.seen('nat1-lan', at + 0.00003, MACS['nat1-lan'], NAT2, 10081, H1, 10081, payload)

    def write(self):
        lab = {'interfaces': {w: {'node': w.split('-')[0] if '-' in w else 'server',
                                  'device': w if '-' in w else 'server-eth0',
                                  'role': w.split('-')[1] if '-' in w else 'server',
                                  'ip': IPS[w], 'mac': MACS[w]} for w in MACS},
               'hosts': {'h1': [H1], 'h3': [H3], 'server': [SERVER],
                         'nat1': [NAT1, '192.168.1.1'], 'nat2': [NAT2, '192.168.2.1']},
               'routers': {'nat1': {'wan': NAT1, 'lan': '192.168.1.1'},
                           'nat2': {'wan': NAT2, 'lan': '192.168.2.1'}},
               'rules': {}, 'started': 0}
        with open(os.path.join(self.directory, 'lab.json'), 'w') as f:
            json.dump(lab, f)
        for where, packets in self.packets.items():
            with open(os.path.join(self.directory, f'{where}.pcap'), 'wb') as f:
                f.write(pcap(sorted(packets)))
        for router, lines in self.events.items():
            with open(os.path.join(self.directory, f'{router}-conntrack.txt'), 'w') as f:
                f.writelines(lines)
        return recorder.Trace(self.directory)

    def remove(self):
        shutil.rmtree(self.directory, ignore_errors=True)


def home_punch(rec):
    """The home-router punch as the lab records it: keep-alives, h1's first probe dropped at
    nat2 (h3 has not sent yet), h3's probe through both NATs (nat1 has h1's entry), the
    answer, then h1's chat through both."""
    t = 1000.0
    rec.h1_out(t, SERVER, 10080, b'HELLO h1 ' + b'a' * 32)
    rec.events['nat1'].append(event(t + 0.0001, 'NEW', (H1, 10081, SERVER, 10080),
                                    (SERVER, 10080, NAT1, 10081)))
    for n in range(1, 6):
        rec.h1_out(t + n, SERVER, 10080, b'ALIVE h1')
    probe = b'PROBE h1 ' + b'b' * 32 + b' ' + b'c' * 16
    rec.h1_out(t + 10, NAT2, 10081, probe, upto='nat2')
    rec.events['nat1'].append(event(t + 10.0001, 'NEW', (H1, 10081, NAT2, 10081),
                                    (NAT2, 10081, NAT1, 10081)))
    rec.h3_out(t + 10.001, NAT1, 10081, b'PROBE h3 ' + b'd' * 32 + b' ' + b'e' * 16)
    rec.events['nat2'].append(event(t + 10.0011, 'NEW', (H3, 10081, NAT1, 10081),
                                    (NAT1, 10081, NAT2, 10081)))
    rec.h1_out(t + 10.002, NAT2, 10081, b'PROBE_ACK h1 ' + b'd' * 32 + b' 10.0.0.2:10081 ' + b'f' * 16)
    rec.h1_out(t + 10.1, NAT2, 10081, b'CHAT h1 ' + b'1' * 16 + b' 1 1 ' + b'2' * 32 + b' '
               + b'3' * 16 + b' hello from h1')
    rec.h3_out(t + 10.101, NAT1, 10081, b'ACK h3 1 ' + b'2' * 32)


class PcapReading(unittest.TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='natchat-test-pcap-')
        self.frame = udp_frame('02:00:00:00:00:01', H1, 10081, SERVER, 10080, b'ALIVE h1')

    def tearDown(self):
        shutil.rmtree(self.directory)

    def write(self, data):
        path = os.path.join(self.directory, 'x.pcap')
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def test_both_byte_orders_and_nanosecond_stamps_read_alike(self):
        for order in '<>':
            for nanoseconds in (False, True):
                path = self.write(pcap([(12.5, self.frame), (13.25, self.frame)], order, nanoseconds))
                packets = list(recorder.read_pcap(path))
                self.assertEqual([round(t, 6) for t, _, _ in packets], [12.5, 13.25])
                self.assertEqual(packets[0][1:], (1, self.frame))

    def test_a_capture_cut_short_ends_at_its_last_whole_packet(self):
        data = pcap([(1.0, self.frame), (2.0, self.frame)])
        self.assertEqual(len(list(recorder.read_pcap(self.write(data[:-3])))), 1)
        self.assertEqual(list(recorder.read_pcap(self.write(data[:10]))), [])

    def test_a_file_that_is_no_pcap_is_refused_with_a_reason(self):
        with self.assertRaisesRegex(recorder.PcapError, 'not a pcap file'):
            list(recorder.read_pcap(self.write(b'\x0a\x0d\x0d\x0a' + b'\0' * 40)))

    def test_decode_gives_addresses_ports_and_payload_without_padding(self):
        padded = self.frame + b'\0' * 10  # Ethernet pads a short frame to 60 bytes
        packet = recorder.decode(1, padded)
        self.assertEqual(packet, recorder.Packet('02:00:00:00:00:01', 'udp', H1, 10081, SERVER,
                                                 10080, b'ALIVE h1'))
        tcp = recorder.decode(1, tcp_frame('02:00:00:00:00:01', H1, 40000, SERVER, 10080,
                                           b'RELAY h3 ACK h1 1 ' + b'2' * 32 + b'\n'))
        self.assertEqual((tcp.proto, tcp.dport, tcp.payload[:8]), ('tcp', 10080, b'RELAY h3'))
        arp = b'\xff' * 12 + b'\x08\x06' + b'\0' * 28
        self.assertIsNone(recorder.decode(1, arp))


class Correlation(unittest.TestCase):
    def setUp(self):
        self.rec = Recording()

    def tearDown(self):
        self.rec.remove()

    def test_one_datagram_across_both_nats_is_one_row_with_each_wires_addresses(self):
        self.rec.h1_out(5.0, NAT2, 10081, b'CHAT h1 x 7 7 y z hi')
        trace = self.rec.write()
        self.assertEqual(len(trace.datagrams), 1)
        _, rows = recorder.rows_of(trace)
        row = rows[0]
        self.assertEqual((row.label, row.start, row.end, row.fate), ('CHAT h1>h3 #7', 0, 4, None))
        self.assertEqual(row.addresses, {0: 'h1:10081>nat2:10081', 1: 'nat1:10081>nat2:10081',
                                         3: 'nat1:10081>h3:10081'})

    def test_the_same_payload_sent_again_is_another_datagram(self):
        self.rec.h1_out(5.0, SERVER, 10080, b'ALIVE h1')
        self.rec.h1_out(6.0, SERVER, 10080, b'ALIVE h1')
        # A retransmission 0.2 s after a copy that was dropped: its own row, delivered.
        self.rec.h1_out(7.0, NAT2, 10081, b'CHAT h1 x 1 1 y z hi', upto='nat2')
        self.rec.h1_out(7.2, NAT2, 10081, b'CHAT h1 x 1 1 y z hi')
        _, rows = recorder.rows_of(self.rec.write())
        self.assertEqual([(r.label, r.end, r.dropped) for r in rows],
                         [('ALIVE h1', 2, False), ('ALIVE h1', 2, False),
                          ('CHAT h1>nat2 #1', 3, True), ('CHAT h1>h3 #1', 4, False)])

    def test_a_relayed_chat_is_labelled_from_the_relay_line(self):
        self.rec.seen('nat1-lan', 3.0, HOST_MACS[H1], H1, 40000, SERVER, 10080,
                      b'RELAY h3 CHAT h1 x 2 2 y z hi\n', frame=tcp_frame)
        self.rec.seen('nat1-wan', 3.00001, MACS['nat1-wan'], NAT1, 40000, SERVER, 10080,
                      b'RELAY h3 CHAT h1 x 2 2 y z hi\n', frame=tcp_frame)
        self.rec.seen('server', 3.00002, MACS['nat1-wan'], NAT1, 40000, SERVER, 10080,
                      b'RELAY h3 CHAT h1 x 2 2 y z hi\n', frame=tcp_frame)
        _, rows = recorder.rows_of(self.rec.write())
        self.assertEqual([(r.label, r.start, r.end) for r in rows], [('RELAY CHAT h1>h3 #2', 0, 2)])


class Ladder(unittest.TestCase):
    def setUp(self):
        self.rec = Recording()

    def tearDown(self):
        self.rec.remove()

    def test_the_home_punch_shows_the_first_probe_dropped_and_the_chat_through(self):
        home_punch(self.rec)
        names, rows = recorder.rows_of(self.rec.write())
        probe = next(r for r in rows if r.label == 'PROBE h1>h3')
        self.assertEqual(probe.fate, 'dropped at nat2: no conntrack entry, NEW inbound')
        self.assertEqual(probe.notes, [])  # nat2 awaited nothing from nat1 yet
        answer = next(r for r in rows if r.label == 'PROBE h3>h1')
        self.assertEqual((answer.start, answer.end, answer.fate), (4, 0, None))
        self.assertIsNone(recorder.punch_shown(rows))
        lines = recorder.ladder_lines(names, rows)
        # 98 wide: the scenarios indent them by two, and a terminal is 100 wide.
        self.assertTrue(all(len(line) <= 98 for line in lines), max(lines, key=len))
        text = '\n'.join(lines)
        # Five keep-alives alike: two shown, three counted.
        self.assertEqual(text.count('ALIVE h1 '), 2, text)
        self.assertIn('... 3 more like the rows above: 3 ALIVE h1', text)
        self.assertIn('dropped at nat2: no conntrack entry, NEW inbound', text)
        drawn = next(line for line in lines if 'PROBE h1>h3' in line)
        self.assertEqual(drawn.index('x'), recorder.LIFELINES[3], drawn)  # ends at nat2

    def test_the_header_names_the_hosts_seen_and_fits_with_two_on_a_side(self):
        self.rec.h1_out(5.0, NAT2, 10081, b'CHAT h1 x 7 7 y z hi')
        self.rec.seen('nat2-lan', 6.0, '02:00:00:00:00:a4', '192.168.2.3', 10081, SERVER, 10080,
                      b'ALIVE h4')
        trace = self.rec.write()
        trace.lab['hosts']['h4'] = ['192.168.2.3']
        header = recorder.render(*recorder.rows_of(trace))[0]
        self.assertEqual(header.split(), ['time', '(s)', 'h1', 'nat1', 'server', 'nat2', 'h3', 'h4'])
        self.assertLessEqual(len(header), 98)

    def test_a_ladder_without_a_hole_opened_fails_the_home_check(self):
        self.rec.h1_out(5.0, NAT2, 10081, b'CHAT h1 x 7 7 y z hi')
        _, rows = recorder.rows_of(self.rec.write())
        self.assertIn('no probe let in', recorder.punch_shown(rows))

    def test_probes_that_cross_in_flight_are_each_let_in(self):
        # Both leave at once: each reaches the far router's WAN a few microseconds before
        # that router's own probe is seen leaving it (tcpdump taps an inbound packet before
        # conntrack, an outbound one after): nothing dropped, both let in.
        h1_probe, h3_probe = b'PROBE h1 n t', b'PROBE h3 m u'
        self.rec.seen('nat1-lan', 5.0, HOST_MACS[H1], H1, 10081, NAT2, 10081, h1_probe)
        self.rec.seen('nat2-lan', 5.0, HOST_MACS[H3], H3, 10081, NAT1, 10081, h3_probe)
        self.rec.seen('nat1-wan', 5.00002, MACS['nat1-wan'], NAT1, 10081, NAT2, 10081, h1_probe)
        self.rec.seen('nat2-wan', 5.00002, MACS['nat2-wan'], NAT2, 10081, NAT1, 10081, h3_probe)
        self.rec.seen('nat2-wan', 5.00001, MACS['nat1-wan'], NAT1, 10081, NAT2, 10081, h1_probe)
        self.rec.seen('nat1-wan', 5.00001, MACS['nat2-wan'], NAT2, 10081, NAT1, 10081, h3_probe)
        self.rec.seen('nat2-lan', 5.00003, MACS['nat2-lan'], NAT1, 10081, H3, 10081, h1_probe)
        self.rec.seen('nat1-lan', 5.00003, MACS['nat1-lan'], NAT2, 10081, H1, 10081, h3_probe)
        self.rec.h1_out(5.1, NAT2, 10081, b'CHAT h1 x 1 1 y z hi')
        _, rows = recorder.rows_of(self.rec.write())
        probes = [r for r in rows if r.label.startswith('PROBE')]
        self.assertEqual([(r.label, r.dropped) for r in probes],
                         [('PROBE h1>h3', False), ('PROBE h3>h1', False)])
        self.assertEqual(probes[0].notes, ['nat2 let it in: h3 sent nat2:10081>nat1:10081 10 us '
                                           'later on the wire: they crossed'])
        self.assertIsNone(recorder.punch_shown(rows))

    def test_a_probe_bare_masquerade_takes_for_itself_says_so(self):
        probe = b'PROBE h1 ' + b'b' * 32 + b' ' + b'c' * 16
        self.rec.h1_out(5.0, NAT2, 10081, probe, upto='nat2')
        self.rec.events['nat2'].append(event(5.0003, 'NEW', (NAT1, 10081, NAT2, 10081),
                                             (NAT2, 10081, NAT1, 10081)))
        _, rows = recorder.rows_of(self.rec.write())
        self.assertEqual(rows[0].fate, 'taken by nat2 itself: a new entry nat1:10081>nat2:10081 '
                         '[UNREPLIED], no client\'s')

    def test_a_datagram_on_a_flow_the_router_holds_as_its_own_is_taken_by_it(self):
        # The knock of bare-heal: nat1's own datagrams to nat2:10081; the first makes nat2's
        # entry, the second finds it.
        for n, at in enumerate((5.0, 5.05)):
            self.rec.seen('nat1-wan', at, MACS['nat1-wan'], NAT1, 10081, NAT2, 10081, b'knock knock')
            self.rec.seen('nat2-wan', at + 0.0001, MACS['nat1-wan'], NAT1, 10081, NAT2, 10081,
                          b'knock knock')
        self.rec.events['nat2'].append(event(5.0002, 'NEW', (NAT1, 10081, NAT2, 10081),
                                             (NAT2, 10081, NAT1, 10081)))
        _, rows = recorder.rows_of(self.rec.write())
        self.assertEqual([(r.label, r.start, r.end) for r in rows], [('knock', 1, 3)] * 2)
        self.assertEqual([r.fate for r in rows], [
            "taken by nat2 itself: a new entry nat1:10081>nat2:10081 [UNREPLIED], no client's",
            "taken by nat2 itself: its entry nat1:10081>nat2:10081 is no client's"])

    def test_behind_a_symmetric_nat_the_drop_says_which_port_the_far_nat_awaits(self):
        # h3 sent to nat1:40000 (the port the server saw for h1); nat1 gave h1's probe to
        # nat2 another port, 41000: nat2 has no entry for it.
        self.rec.events['nat2'].append(event(4.0, 'NEW', (H3, 10081, NAT1, 40000),
                                             (NAT1, 40000, NAT2, 50000)))
        self.rec.h1_out(5.0, NAT2, 45000, b'PROBE h1 n t', public_port=41000, upto='nat2')
        _, rows = recorder.rows_of(self.rec.write())
        self.assertEqual(rows[0].fate, 'dropped at nat2: no conntrack entry, NEW inbound')
        self.assertIn('nat2 lets in from nat1 only nat1:40000>nat2:50000 (replies to its client)',
                      rows[0].notes)
        self.assertEqual(rows[0].addresses[1], 'nat1:41000>nat2:45000')

    def test_a_new_public_port_for_another_destination_is_pointed_out_once(self):
        self.rec.h1_out(1.0, SERVER, 10080, b'HELLO h1 n', public_port=40000)
        self.rec.h1_out(2.0, NAT2, 45000, b'PROBE h1 n t', public_port=41000, upto='nat2')
        self.rec.h1_out(2.1, NAT2, 45000, b'PROBE h1 m t', public_port=41000, upto='nat2')
        _, rows = recorder.rows_of(self.rec.write())
        said = 'nat1 mapped h1:10081 to nat1:41000 toward nat2:45000 (toward srv:10080: nat1:40000)'
        self.assertEqual([said in r.notes for r in rows], [False, True, False])

    def test_a_destroyed_entry_no_longer_lets_anything_in(self):
        self.rec.events['nat2'] += [
            event(1.0, 'NEW', (H3, 10081, NAT1, 10081), (NAT1, 10081, NAT2, 10081)),
            event(3.0, 'DESTROY', (H3, 10081, NAT1, 10081), (NAT1, 10081, NAT2, 10081))]
        self.rec.h1_out(2.0, NAT2, 10081, b'PROBE h1 n t', upto='nat2')
        self.rec.h1_out(5.0, NAT2, 10081, b'PROBE h1 m t', upto='nat2')
        _, rows = recorder.rows_of(self.rec.write())
        self.assertEqual(rows[0].fate, 'dropped at nat2, though a conntrack entry matched it')
        self.assertEqual(rows[1].fate, 'dropped at nat2: no conntrack entry, NEW inbound')


if __name__ == '__main__':
    unittest.main()
