#!/usr/bin/python3
"""The natchat NAT lab: two home networks behind NAT routers, and a server on the "internet".

                        public LAN 10.0.0.0/24 (switch s0)
        +--------------------------+--------------------------+
        |                          |                          |
     server 10.0.0.3          nat1-wan 10.0.0.1          nat2-wan 10.0.0.2
     natchat server             [ nat1 ]                   [ nat2 ]
     TCP+UDP 10080            nat1-lan 192.168.1.1       nat2-lan 192.168.2.1
                                   |  (switch s1)              |  (switch s2)
                            +------+------+             +------+------+
                            |             |             |             |
                           h1            h2            h3            h4
                      192.168.1.2   192.168.1.3   192.168.2.2   192.168.2.3

nat1 and nat2 are plain hosts that forward (ip_forward=1) and rewrite with iptables inside
their own network namespaces, like a Linux home router. Nothing here is connected to the
machine's real network: the lab only ever talks to its own addresses. (Mininet's addNAT()
would do exactly that, so it is never used.)

NAT modes, the same for both routers:
  home       MASQUERADE, and unsolicited inbound traffic is dropped (what home routers do).
             Coordinated hole punching works: the path between h1 and h3 goes direct.
  bare       MASQUERADE only, no input filter. A probe that arrives before the far side
             has sent is delivered to the router itself and leaves a conntrack entry that
             makes the far client's own mapping collide: punching fails, the relay is needed.
  symmetric  MASQUERADE --random-fully, plus the home filter: a new public port for every
             destination, so the port the server saw is useless to peers. Only the relay works.

What the lab creates in the machine's own network namespace (its three bridges and the
switch ends of its cables) is named after this run, `nc<pid>s0`, `nc<pid>s0p1`, ..., and
marked as this run's with an interface alias (see Owner), so that another lab running at the
same time, someone's own `sudo mn` or a second natchat lab, is never touched. The node names
(s0, h1, nat1, ...) stay as drawn above: the hosts live in namespaces of their own.

Run as root: `python3 topo.py [--mode LAB]` opens the Mininet CLI in a lab (see LABS: these
NAT modes, nat1 hairpinning, the NAT-tier lab with a pair of tiers, the carrier-grade NAT lab;
mininet/execute_mn.sh does that, and builds natchat first). `python3 topo.py --remove-dead`
removes what natchat labs whose process is gone left behind, and nothing else.
"""

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

from mininet.cli import CLI
from mininet.log import error, info, setLogLevel
from mininet.net import Mininet
from mininet.node import Node, Switch
from mininet.nodelib import LinuxBridge
from mininet.term import makeTerm
from mininet.topo import Topo
from mininet.util import quietRun

MODES = ('home', 'bare', 'symmetric')
NATPROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'natprobe.py')

# The addresses natchat uses in the lab.
SERVER_IP = '10.0.0.3'
SERVER_PORT = 10080
CLIENT_UDP_PORT = 10081

# Each router: its public (WAN) address and its address on the home LAN it serves.
ROUTERS = {
    'nat1': ('10.0.0.1', '192.168.1.1'),
    'nat2': ('10.0.0.2', '192.168.2.1'),
}
# Each client host: its private address, and the router it sits behind.
CLIENTS = {
    'h1': ('192.168.1.2', 'nat1'),
    'h2': ('192.168.1.3', 'nat1'),
    'h3': ('192.168.2.2', 'nat2'),
    'h4': ('192.168.2.3', 'nat2'),
}


class Owner:
    """Which run made a device, written into the device itself as its interface alias.

    A process ID alone could be reused, and could belong to another PID namespace (a
    container sharing this network); the process's start time and PID namespace make the
    mark say exactly one process. A device whose mark names a process that provably no longer
    runs is a leftover of a killed lab; anything else, marked or not, belongs to someone else.
    """

    MARK = re.compile(r'^natchat-lab pid=(\d+) start=(\d+) pidns=(\d+)$')

    def __init__(self, pid, start, pidns):
        self.pid, self.start, self.pidns = pid, start, pidns

    @classmethod
    def this_process(cls):
        pid = os.getpid()
        return cls(pid, start_time(pid), os.stat('/proc/self/ns/pid').st_ino)

    @classmethod
    def of_device(cls, name):
        """The owner marked on device `name`, or None when it carries no natchat mark."""
        try:
            with open(f'/sys/class/net/{name}/ifalias') as f:
                match = cls.MARK.match(f.read().strip())
        except OSError:
            return None
        return cls(*map(int, match.groups())) if match else None

    def mark(self):
        return f'natchat-lab pid={self.pid} start={self.start} pidns={self.pidns}'

    def is_dead(self):
        """True only when provably gone: same PID namespace as ours, and no process with
        that ID and start time."""
        if self.pidns != os.stat('/proc/self/ns/pid').st_ino:
            return False  # a PID of another namespace: we cannot see whether it runs
        return start_time(self.pid) != self.start


def start_time(pid):
    """When process `pid` started (clock ticks since boot), or None when there is none."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            # Field 22; the name in parentheses (field 2) may itself hold spaces.
            return int(f.read().rsplit(')', 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


OWNER = Owner.this_process()
# The prefix of every device this run creates in the machine's namespace: 11 characters at
# most for a 7-digit PID, so that a port name (`nc4194304s0p1`) fits the kernel's 15.
TAG = f'nc{OWNER.pid}'


class LabClash(Exception):
    """A device name this lab needs is taken by something alive: another lab."""


def remove_dead_labs():
    """Removes the devices left by natchat labs whose process is provably gone, and only
    those. (A veth whose host namespace died has gone with it; what a killed run leaves are
    its bridges, and the cables of a host in which some process still runs.)"""
    for name in sorted(os.listdir('/sys/class/net')):
        owner = Owner.of_device(name)
        if owner and owner.is_dead():
            # Deleting one end of a veth deletes the other: a later name may be gone already.
            gone = subprocess.run(['ip', 'link', 'del', 'dev', name], capture_output=True)
            if gone.returncode == 0:
                print(f'*** Removed {name}, left by natchat lab {owner.pid} (no longer running)',
                      file=sys.stderr)


def claim(names):
    """Fails with LabClash when any of `names` exists: it belongs to a running lab (dead
    natchat labs' devices are removed first), which Mininet would otherwise delete."""
    remove_dead_labs()
    for name in names:
        if os.path.exists(f'/sys/class/net/{name}'):
            owner = Owner.of_device(name)
            whose = f'natchat lab {owner.pid}' if owner else 'not a natchat lab'
            raise LabClash(f'{name} already exists ({whose}): another lab uses that name; '
                           'leaving it alone')


def mark_device(node, name):
    node.cmd(f'ip link set dev {name} alias {shlex.quote(OWNER.mark())}')


class LabBridge(LinuxBridge):
    """A switch as a Linux bridge named `device` in the machine's namespace, marked as this
    run's the moment it is made. Mininet's own LinuxBridge names the bridge after the node
    (s0) and deletes any bridge of that name first: someone else's."""

    def __init__(self, name, device, **params):
        self.device = device
        super().__init__(name, **params)

    def start(self, _controllers):
        self.cmd(f'ip link add name {self.device} type bridge')
        mark_device(self, self.device)
        for intf in self.intfList():
            if intf.name.startswith(self.device):
                mark_device(self, intf.name)
                self.cmd(f'ip link set dev {intf.name} master {self.device} up')
        self.cmd(f'ip link set dev {self.device} up')

    def stop(self, deleteIntfs=True):
        self.cmd(f'ip link del dev {self.device}')
        Switch.stop(self, deleteIntfs)  # its ports; not LinuxBridge.stop, which uses the node name

    def connected(self):
        return True  # no spanning tree: forwarding from the start


class NatRouter(Node):
    """A Linux box with a WAN and a LAN interface that forwards and masquerades.

    Its interfaces are named <router>-wan and <router>-lan, so that the iptables rules below
    read like what they mean.
    """

    def config(self, mode='home', **params):
        super().config(**params)
        # A router forwards between its interfaces; a host does not.
        self.cmd('sysctl -qw net.ipv4.ip_forward=1')
        self.set_mode(mode)

    @property
    def wan(self):
        return f'{self.name}-wan'

    def set_mode(self, mode):
        """Installs the NAT rules of `mode`, replacing any others.

        The rules decide how a flow is translated when it starts; a flow already in the
        router's conntrack table keeps its translation whatever the rules say later.
        """
        if mode not in MODES:
            raise ValueError(f'unknown NAT mode {mode!r}; one of {", ".join(MODES)}')
        self.cmd('iptables -t nat -F POSTROUTING; iptables -F INPUT; iptables -F FORWARD')
        # Everything leaving through the WAN gets the router's public address. MASQUERADE keeps
        # the client's source port when it is free; --random-fully picks a random port for
        # every new flow, which is what makes a NAT "symmetric".
        masquerade = f'iptables -t nat -A POSTROUTING -o {self.wan} -j MASQUERADE'
        if mode == 'symmetric':
            masquerade += ' --random-fully'
        self.cmd(masquerade)
        if mode in ('home', 'symmetric'):
            # A home router answers nothing it was not asked for: a packet from the WAN that
            # matches no flow started from inside is dropped, both the ones addressed to the
            # router itself (INPUT: a peer's probe to our public port before we have sent to
            # that peer) and the ones addressed to the LAN behind it (FORWARD).
            for chain in ('INPUT', 'FORWARD'):
                self.cmd(f'iptables -A {chain} -i {self.wan} -m conntrack --ctstate NEW -j DROP')

    def set_tier(self, tier, client_ip):
        """Installs the rules of NAT tier `tier` (see TIERS), replacing any others, for the
        one client host at `client_ip` behind the router, and flushes the router's conntrack
        table, so that no translation made under the previous tier survives."""
        if tier not in TIERS:
            raise ValueError(f'unknown NAT tier {tier!r}; one of {", ".join(TIERS)}')
        wan, lan_port = self.wan, CLIENT_UDP_PORT
        self.cmd('iptables -t nat -F PREROUTING; iptables -t nat -F POSTROUTING; '
                 'iptables -F INPUT; iptables -F FORWARD')
        rules = []
        if tier == 'open':
            # Full cone: the client's UDP port always leaves as the same public port, whatever
            # the destination (endpoint-independent mapping), and anything arriving at that
            # public port goes to the client, whoever sent it (endpoint-independent filtering).
            public_ip = self.intf(wan).IP()
            rules += [
                f'-t nat -A POSTROUTING -o {wan} -p udp -s {client_ip} --sport {lan_port} '
                f'-j SNAT --to-source {public_ip}:{lan_port}',
                f'-t nat -A POSTROUTING -o {wan} -j MASQUERADE',
                f'-t nat -A PREROUTING -i {wan} -p udp --dport {lan_port} '
                f'-j DNAT --to-destination {client_ip}:{lan_port}',
                f'-A FORWARD -i {wan} -m conntrack --ctstate DNAT -j ACCEPT',
            ]
        elif tier in ('moderate', 'strict'):
            # MASQUERADE keeps one public port per client port (endpoint-independent mapping);
            # --random-fully draws a new one for every destination (endpoint-dependent).
            random = ' --random-fully' if tier == 'strict' else ''
            rules.append(f'-t nat -A POSTROUTING -o {wan} -j MASQUERADE{random}')
        if tier != 'none':
            # Nothing unsolicited gets in (for `open`: nothing but what the DNAT above admits).
            rules += [f'-A {chain} -i {wan} -m conntrack --ctstate NEW -j DROP'
                      for chain in ('INPUT', 'FORWARD')]
        for rule in rules:
            self.cmd(f'iptables {rule}')
        self.flush_conntrack()

    def flush_conntrack(self):
        self.cmd('conntrack -F 2>/dev/null')

    def hairpin(self, lan, public_ports, source):
        """Makes the router hairpin: a datagram from its LAN side to its own public address
        reaches the client whose public port it names, as on the way in from the WAN.

        `public_ports` gives each client its fixed public port ({address on `lan`: port}):
        its UDP port 10081 always leaves as that port (a Linux router can hairpin only to
        mappings it knows in advance), and a datagram from `lan` to that public port is
        sent on to the client (DNAT). The hairpinned datagram then needs a new source, or
        the client would answer the sender straight, from an address it never sent to:
        - `router`: the router's own LAN address (MASQUERADE back into the LAN), what a
          Linux home router's "NAT loopback" does;
        - `public`: the sender's own public address and port, what RFC 4787 (REQ-9) asks
          of a NAT that hairpins, so that the receiver sees the sender exactly as the server
          does. Only this one gets through the receiver's own NAT when it has one (two homes
          behind one carrier NAT), and only after the receiver sent to that public endpoint.
        """
        public_ip = self.intf(self.wan).IP()
        # No ICMP redirect telling the sender to go round the router: it would be right for
        # the client's address, which the sender never uses.
        self.cmd(f'sysctl -qw net.ipv4.conf.all.send_redirects=0 '
                 f'net.ipv4.conf.{lan}.send_redirects=0')
        for private_ip, public_port in public_ports.items():
            mapped = f'-s {private_ip} -p udp --sport {CLIENT_UDP_PORT}'
            # Before the MASQUERADE for the rest: inserted at the top.
            self.cmd(f'iptables -t nat -I POSTROUTING -o {self.wan} {mapped} '
                     f'-j SNAT --to-source {public_ip}:{public_port}')
            self.cmd(f'iptables -t nat -A PREROUTING -i {lan} -d {public_ip} -p udp '
                     f'--dport {public_port} '
                     f'-j DNAT --to-destination {private_ip}:{CLIENT_UDP_PORT}')
            if source == 'public':
                self.cmd(f'iptables -t nat -A POSTROUTING -o {lan} {mapped} -m conntrack '
                         f'--ctstate DNAT -j SNAT --to-source {public_ip}:{public_port}')
        if source == 'router':
            self.cmd(f'iptables -t nat -A POSTROUTING -o {lan} -m conntrack --ctstate DNAT '
                     '-j MASQUERADE')

    def rules(self):
        """The router's NAT and filter rules, for a person to read."""
        return self.cmd('iptables -t nat -S PREROUTING; iptables -t nat -S POSTROUTING; '
                        'iptables -S INPUT; iptables -S FORWARD')


class NatLab(Topo):
    """The diagram at the top of this file, as Mininet nodes and links."""

    def build(self, mode='home'):
        # Every device in the machine's namespace, named after this run: see claim().
        self.devices = []
        self.cables = {}  # switch name -> cables so far (Topo has its own self.ports)
        # Three Ethernet segments: the public one, and one home LAN behind each router.
        public = self.switch('s0')
        home_lan = {'nat1': self.switch('s1'), 'nat2': self.switch('s2')}

        # The "internet": the registration server and the routers' WAN sides. The server
        # needs no route: every client reaches it from a public address on this LAN.
        server = self.addHost('server', ip=f'{SERVER_IP}/24')
        self.cable(server, public)

        for name, (wan_ip, lan_ip) in ROUTERS.items():
            router = self.addHost(name, cls=NatRouter, mode=mode, ip=f'{wan_ip}/24')
            self.cable(router, public,
                       intfName1=f'{name}-wan', params1={'ip': f'{wan_ip}/24'})
            self.cable(router, home_lan[name],
                       intfName1=f'{name}-lan', params1={'ip': f'{lan_ip}/24'})

        # The home hosts reach the internet through their router. Nothing routes to
        # 192.168.x.0/24 from outside, so a private address is only reachable on its own LAN.
        for name, (ip, router) in CLIENTS.items():
            gateway = ROUTERS[router][1]
            host = self.addHost(name, ip=f'{ip}/24', defaultRoute=f'via {gateway}')
            self.cable(host, home_lan[router])

    def switch(self, name):
        device = f'{TAG}{name}'
        self.devices.append(device)
        return self.addSwitch(name, cls=LabBridge, device=device)

    def cable(self, host, switch, **params):
        """A link from `host` to `switch`; the switch's end, in the machine's namespace, is
        named after the switch's device and the port: nc<pid>s0p1."""
        self.cables[switch] = self.cables.get(switch, 0) + 1
        port = f'{self.nodeInfo(switch)["device"]}p{self.cables[switch]}'
        self.devices.append(port)
        self.addLink(host, switch, intfName2=port, **params)


class TierLab(NatLab):
    """The NAT-tier lab: one client host behind each router, whose tier (TIERS) is set
    pair by pair, and a second public host for the tier checks.

                        public LAN 10.0.0.0/24 (switch s0)
        +--------------+-----------+-----------------------+
     server 10.0.0.3  stun 10.0.0.4  nat1 10.0.0.1          nat2 10.0.0.2
                                     192.168.1.1 (s1)       192.168.2.1 (s2)
                                     10.0.1.1               10.0.2.1
                                       |                      |
                                      h1 192.168.1.2         h3 192.168.2.2
                                         or 10.0.1.2            or 10.0.2.2 (tier none)

    Tier `none` gives the client host a public address on a routed public subnet (10.0.1.0/24
    behind nat1, 10.0.2.0/24 behind nat2: every public host has a route to both) and the
    router forwards it untouched; the other tiers give it its private address, and the router
    translates. A tier is set with set_site_tier() and checked with check_tier().
    """

    def build(self, mode=None):
        self.devices = []
        self.cables = {}
        public = self.switch('s0')
        home_lan = {'nat1': self.switch('s1'), 'nat2': self.switch('s2')}
        for name, ip in (('server', SERVER_IP), ('stun', STUN_IP)):
            self.cable(self.addHost(name, ip=f'{ip}/24'), public)
        for name, (wan_ip, lan_ip) in ROUTERS.items():
            router = self.addHost(name, cls=NatRouter, mode='home', ip=f'{wan_ip}/24')
            self.cable(router, public,
                       intfName1=f'{name}-wan', params1={'ip': f'{wan_ip}/24'})
            self.cable(router, home_lan[name],
                       intfName1=f'{name}-lan', params1={'ip': f'{lan_ip}/24'})
        for name, site in SITES.items():
            gateway = ROUTERS[site['router']][1]
            host = self.addHost(name, ip=f'{site["private"]}/24', defaultRoute=f'via {gateway}')
            self.cable(host, home_lan[site['router']])



# The carrier-grade NAT lab (CgnatLab): each node's addresses, (interface suffix, address/len).
CGNAT_PUBLIC_IP = '10.0.0.1'     # the carrier NAT's one public address, on the public LAN
CGNAT_CARRIER = '100.64.0.0/10'  # RFC 6598 shared address space, between carrier and homes
CGNAT_HOMES = {
    # home router: (its WAN address on the carrier network, its LAN address)
    'home1': ('100.64.0.2', '192.168.1.1'),
    'home2': ('100.64.0.3', '192.168.1.1'),  # the same private subnet as home1
}
CGNAT_HOSTS = {
    # host: (private address, home router)
    'alice': ('192.168.1.2', 'home1'),
    'decoy': ('192.168.1.3', 'home1'),  # a stranger at bob's private address, in alice's home
    'bob': ('192.168.1.3', 'home2'),
}


class CgnatLab(NatLab):
    """A carrier-grade NAT: two homes behind one carrier router, sharing its one public
    address, and the same private subnet inside each home.

          public LAN 10.0.0.0/24 (switch cs0)
        +-------------------------+
     server 10.0.0.3          cgn-wan 10.0.0.1
                                [ cgn ]   carrier NAT: MASQUERADE, drops unsolicited inbound
                              cgn-lan 100.64.0.1/10
                                  |  carrier network 100.64.0.0/10 (switch cs1)
                  +---------------+---------------+
           home1-wan 100.64.0.2            home2-wan 100.64.0.3
              [ home1 ]                       [ home2 ]      home routers (mode home)
           home1-lan 192.168.1.1           home2-lan 192.168.1.1
                  |  (switch cs2)                 |  (switch cs3)
           +------+------+                        |
         alice         decoy                     bob
      192.168.1.2   192.168.1.3              192.168.1.3

    The server sees alice and bob at the same public address, 10.0.0.1, so each may take the
    other for a LAN neighbour; but bob's private address, 192.168.1.3, is the decoy's in
    alice's home. The carrier router does not hairpin. Node and switch names differ from
    NatLab's; the devices in the machine's namespace carry this run's tag as in NatLab.
    """

    def build(self, mode=None):
        self.devices = []
        self.cables = {}
        public, carrier = self.switch('cs0'), self.switch('cs1')
        home_lan = {'home1': self.switch('cs2'), 'home2': self.switch('cs3')}
        self.cable(self.addHost('server', ip=f'{SERVER_IP}/24'), public)
        prefix = CGNAT_CARRIER.split('/')[1]
        carrier_gateway = CGNAT_CARRIER.split('/')[0][:-1] + '1'  # 100.64.0.1
        cgn = self.addHost('cgn', cls=NatRouter, mode='home', ip=f'{CGNAT_PUBLIC_IP}/24')
        self.cable(cgn, public, intfName1='cgn-wan', params1={'ip': f'{CGNAT_PUBLIC_IP}/24'})
        self.cable(cgn, carrier, intfName1='cgn-lan',
                   params1={'ip': f'{carrier_gateway}/{prefix}'})
        for name, (wan_ip, lan_ip) in CGNAT_HOMES.items():
            router = self.addHost(name, cls=NatRouter, mode='home', ip=f'{wan_ip}/{prefix}',
                                  defaultRoute=f'via {carrier_gateway}')
            self.cable(router, carrier, intfName1=f'{name}-wan',
                       params1={'ip': f'{wan_ip}/{prefix}'})
            self.cable(router, home_lan[name], intfName1=f'{name}-lan',
                       params1={'ip': f'{lan_ip}/24'})
        for name, (ip, router) in CGNAT_HOSTS.items():
            gateway = CGNAT_HOMES[router][1]
            self.cable(self.addHost(name, ip=f'{ip}/24', defaultRoute=f'via {gateway}'),
                       home_lan[router])

# The NAT tiers, in RFC 4787 terms, as iroh's tests/patchbay names them; for each, what the
# lab's own check must see (check_tier): whether the client's address is translated, whether
# the mapping is endpoint-independent (the same public port for two destinations), and whether
# filtering is endpoint-independent (an unsolicited datagram gets in).
TIERS = ('none', 'open', 'moderate', 'strict')
TIER_BEHAVIOUR = {
    'none': (False, True, True),       # a public address: nothing to map or filter
    'open': (True, True, True),        # full cone: 1:1 SNAT to a fixed port, DNAT back
    'moderate': (True, True, False),   # the home router: MASQUERADE, drop NEW inbound
    'strict': (True, False, False),    # symmetric: MASQUERADE --random-fully, drop NEW inbound
}
STUN_IP = '10.0.0.4'
REFLECT_PORT = 3478   # a reflector on the server host and one on the stun host
KNOCK_PORT = 3479     # the stun host's unsolicited datagrams come from here
# Each site of the tier lab: its router, the client's private address, and its public
# address on the routed subnet behind the router (tier none).
SITES = {
    'h1': {'router': 'nat1', 'private': '192.168.1.2', 'public': '10.0.1.2'},
    'h3': {'router': 'nat2', 'private': '192.168.2.2', 'public': '10.0.2.2'},
}


def tier_lab_routes(net):
    """Gives each router a second LAN address on its site's public subnet, and every host
    on the public LAN a route to both subnets. Called once, after the lab has started."""
    subnets = {}
    for name, site in SITES.items():
        router = net[site['router']]
        subnet_gateway = site['public'].rsplit('.', 1)[0] + '.1'
        router.cmd(f'ip addr add {subnet_gateway}/24 dev {router.name}-lan')
        subnets[site['public'].rsplit('.', 1)[0] + '.0/24'] = ROUTERS[router.name][0]
    for node in ('server', 'stun', 'nat1', 'nat2'):
        for subnet, via in subnets.items():
            if via != net[node].IP():
                net[node].cmd(f'ip route replace {subnet} via {via}')


def set_site_tier(net, host, tier):
    """Puts client host `host` behind a router of tier `tier`: the host's address (public
    for tier none, private otherwise), the router's rules, an empty conntrack table."""
    site = SITES[host]
    node, router = net[host], net[site['router']]
    ip = site['public'] if tier == 'none' else site['private']
    gateway = ip.rsplit('.', 1)[0] + '.1'
    intf = node.defaultIntf()
    node.cmd(f'ip addr flush dev {intf}; ip addr add {ip}/24 dev {intf}; '
             f'ip route replace default via {gateway}')
    intf.ip = ip  # what Mininet reports as the host's IP
    router.set_tier(tier, site['private'])


def start_tier_checks(net, host):
    """Starts the check of `host`'s tier (finish_tier_check ends it): from the client's own
    UDP port, ask the reflectors on the server and stun hosts where we came from."""
    reflectors = [f'{SERVER_IP}:{REFLECT_PORT}', f'{STUN_IP}:{REFLECT_PORT}']
    return net[host].popen(['/usr/bin/python3', NATPROBE, 'map', '--bind', str(CLIENT_UDP_PORT),
                            '--listen', '5', *reflectors], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_tier_check(net, host, tier, probe):
    """Reads what the probe saw, has the stun host send an unsolicited datagram to the
    mapped address, and returns None when the router behaves as `tier` should, else what is
    wrong, in words. Leaves the router's conntrack table empty."""
    site = SITES[host]
    router = net[site['router']]
    try:
        first = probe.stdout.readline().split()
        if len(first) != 3 or first[0] != 'mapped' or 'none' in first:
            return f'the reflectors did not answer {host} ({" ".join(first) or "nothing"})'
        to_server, to_stun = first[1], first[2]
        net['stun'].cmd(f'/usr/bin/python3 {NATPROBE} knock --bind {KNOCK_PORT} {to_server}')
        time.sleep(0.1)  # the last knock's way through the router: well under a millisecond
        probe.stdin.close()  # done: a datagram that came by now would have been seen
        second = probe.stdout.readline().split()
        probe.wait(5)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    own_ip = site['public'] if tier == 'none' else site['private']
    translated = to_server.split(':')[0] != own_ip
    eim = to_server == to_stun
    eif = len(second) == 2 and second[1] != 'none'
    seen = (translated, eim, eif)
    router.flush_conntrack()
    if seen == TIER_BEHAVIOUR[tier]:
        return None
    words = lambda t, e, f: (f'{"translated" if t else "untranslated"}, '
                             f'{"endpoint-independent" if e else "endpoint-dependent"} mapping, '
                             f'{"endpoint-independent" if f else "filtering"} inbound')
    return (f'{host} behind {router.name} as tier {tier}: expected {words(*TIER_BEHAVIOUR[tier])}, '
            f'saw {words(*seen)} (mapped {to_server} to the server, {to_stun} to stun)')


class LabCLI(CLI):
    """Mininet's CLI, with two changes so that a natchat client can run in it.

    - A command line that runs natchat is passed on as typed. The CLI replaces every word
      that names a node by that node's IP address (so that `h1 ping h3` works), which would
      turn `server natchat server` into `natchat 10.0.0.3`, and `--id h1` into
      `--id 192.168.1.2`.
    - What is typed while a command runs reaches it at once. The CLI reads one character per
      keystroke from a buffered stdin, so a pasted line sits in the buffer, unseen, until the
      next key is pressed.
    """

    def __init__(self, net, **kwargs):
        stdin = TypedKeys(sys.stdin) if sys.stdin.isatty() else sys.stdin
        super().__init__(net, stdin=stdin, **kwargs)

    def default(self, line):
        first, args, line = self.parseline(line)
        runs_natchat = args and any(os.path.basename(w) == 'natchat' for w in args.split())
        if first in self.mn and runs_natchat:
            node = self.mn[first]
            node.sendCmd(args)
            self.waitForNode(node)
        else:
            super().default(line)


class TypedKeys:
    """The terminal, read as the CLI passes keys to a running command: whatever has been
    typed so far, in one read, straight from the file descriptor."""

    def __init__(self, terminal):
        self.terminal = terminal

    def fileno(self):
        return self.terminal.fileno()

    def isatty(self):
        return True

    def read(self, _size):
        return os.read(self.fileno(), 4096).decode(errors='replace')


# Every lab there is, by the name `--mode` and the scenarios give it: NatLab in each NAT mode
# (MODES), NatLab with nat1 hairpinning (`hairpin`), the tier lab (`tiers`; `tiers:A-B` with
# h1 behind a router of tier A and h3 behind one of tier B; `tiers` alone: both moderate, as
# its routers start), and the carrier-grade NAT lab, with a carrier NAT that hairpins or not
# (`cgnat-hairpin`, `cgnat`).
LABS = MODES + ('hairpin', 'tiers:A-B', 'cgnat', 'cgnat-hairpin')
# The fixed public ports of the routers that hairpin (NatRouter.hairpin): nat1's for the two
# clients of its LAN, and the carrier NAT's for the two home routers behind it (whose own
# MASQUERADE keeps their client's port, 10081).
HAIRPIN_PORTS = {'192.168.1.2': 10081, '192.168.1.3': 10082}
CGNAT_HAIRPIN_PORTS = {'100.64.0.2': 10081, '100.64.0.3': 10082}


def lab_mode(text):
    """`text` if it names a lab (LABS, with a real pair of tiers for `tiers:A-B`), else
    ValueError saying, in one line, which names there are."""
    lab, colon, pair = text.partition(':')
    tiers = pair.split('-')
    if (text in LABS + ('tiers',) and text != 'tiers:A-B') or (
            lab == 'tiers' and colon and len(tiers) == 2 and set(tiers) <= set(TIERS)):
        return text
    raise ValueError(f'unknown lab {text!r}: one of {", ".join(LABS)} '
                     f'(A and B each one of {", ".join(TIERS)})')


def start_lab(mode='home'):
    """Builds and starts the lab `mode` (see LABS). The caller must call stop_lab(net), also
    on failure."""
    lab, _, pair = lab_mode(mode).partition(':')
    # No controller and Linux bridges: this machine has no Open vSwitch datapath, and three
    # plain learning switches are all the lab needs. Mininet then warns "Linux bridge may not
    # work with net.bridge.bridge-nf-call-iptables = 1": with that setting, frames crossing
    # the bridges also pass the iptables of the machine itself, harmless as long as its
    # FORWARD chain lets them through (see bridged_traffic_blocked).
    blocked = bridged_traffic_blocked()
    if blocked:
        error(f'*** Warning: {blocked}\n')
    topo = (TierLab() if lab == 'tiers' else CgnatLab() if lab.startswith('cgnat')
            else NatLab(mode='home' if lab == 'hairpin' else lab))
    claim(topo.devices)
    net = Mininet(topo=topo, controller=None, switch=LabBridge,
                  autoSetMacs=True, waitConnected=False)
    try:
        net.start()
        if lab == 'tiers':
            tier_lab_routes(net)
            for host, tier in zip(SITES, pair.split('-') if pair else ()):
                set_site_tier(net, host, tier)
        elif lab == 'hairpin':
            net['nat1'].hairpin('nat1-lan', HAIRPIN_PORTS, source='router')
        elif lab == 'cgnat-hairpin':
            net['cgn'].hairpin('cgn-lan', CGNAT_HAIRPIN_PORTS, source='public')
    except BaseException:
        stop_lab(net)
        raise
    return net


def bridged_traffic_blocked():
    """Why the machine's own firewall would drop the lab's bridged traffic, or None."""
    try:
        with open('/proc/sys/net/bridge/bridge-nf-call-iptables') as f:
            if f.read().strip() != '1':
                return None
    except OSError:
        return None  # br_netfilter is not loaded: bridged frames skip iptables
    forward = quietRun('iptables -S FORWARD').splitlines()
    if '-P FORWARD DROP' not in forward:
        return None
    if any('--physdev-is-bridged' in rule and '-j ACCEPT' in rule for rule in forward):
        return None
    return ('this machine\'s iptables FORWARD policy is DROP (Docker sets it) and '
            'bridge-nf-call-iptables is 1, so frames between lab hosts may be dropped; '
            'allow them with: iptables -I FORWARD -m physdev --physdev-is-bridged -j ACCEPT')


def stop_lab(net):
    """Ends every process still running inside a lab host, then stops Mininet.

    Mininet only ends each host's shell; a program started in a host some other way (from
    another terminal with mnexec, say) would live on in a namespace without interfaces.
    """
    shells = {host.pid for host in net.hosts if host.pid}
    namespaces = {netns(pid) for pid in shells} - {None, netns(os.getpid())}
    inside = [pid for pid in all_pids() if pid not in shells and netns(pid) in namespaces]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in inside:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(os.path.exists(f'/proc/{pid}') for pid in inside):
            time.sleep(0.05)
    # Our xterms, ended here: Mininet's stop would also kill every Mininet X11 tunnel on the
    # machine (pkill -f mnexec.*socat), another lab's too.
    for term in net.terms:
        if term.poll() is None:
            term.kill()
    net.terms = []
    net.stop()


def netns(pid):
    """The network namespace of process `pid` (an inode number), or None when it is gone."""
    try:
        return os.stat(f'/proc/{pid}/ns/net').st_ino
    except OSError:
        return None


def all_pids():
    return [int(entry) for entry in os.listdir('/proc') if entry.isdigit()]


def server_command(natchat='natchat', timeout_secs=None):
    argv = [natchat, 'server', '--port', str(SERVER_PORT)]
    if timeout_secs is not None:
        argv += ['--timeout-secs', str(timeout_secs)]
    return argv


def client_command(host, natchat='natchat', keepalive_secs=None):
    argv = [natchat, 'client', '--server', SERVER_IP, '--port', str(SERVER_PORT),
            '--udp-port', str(CLIENT_UDP_PORT), '--id', host]
    if keepalive_secs is not None:
        argv += ['--keepalive-secs', str(keepalive_secs)]
    return argv


def lab_clients(mode):
    """The hosts of lab `mode` that run a natchat client, each with where it sits."""
    lab, _, pair = mode.partition(':')
    if lab == 'tiers':
        tiers = pair.split('-') if pair else ('moderate', 'moderate')
        return {host: f'behind {site["router"]}, tier {tier}'
                for (host, site), tier in zip(SITES.items(), tiers)}
    if lab.startswith('cgnat'):
        return {host: f'behind {router}, behind the carrier NAT cgn'
                for host, (_, router) in CGNAT_HOSTS.items() if host != 'decoy'}
    return {host: f'behind {router}' for host, (_, router) in CLIENTS.items()}


# What each lab is, in a line or two, printed when it opens.
LAB_ABOUT = {
    'home': 'home routers: MASQUERADE, unsolicited inbound dropped (h1 and h3 go direct)',
    'bare': 'bare MASQUERADE, no input filter (a punch may collide: relayed, direct again later)',
    'symmetric': 'MASQUERADE --random-fully: a new public port per destination (relayed)',
    'hairpin': 'home routers, and nat1 hairpins: from its LAN, 10.0.0.1:10081 is h1 and '
               '10.0.0.1:10082 is h2\n    (see it: h2 python3 NATPROBE reflect 10081 &  then  '
               'h1 python3 NATPROBE map --bind 10081 --listen 0 10.0.0.1:10082  then  '
               'h2 kill %1)',
    'tiers': 'the NAT-tier lab: h1 behind nat1, h3 behind nat2, each of its tier '
             '(mininet/README.md: the NAT-tier matrix); stun 10.0.0.4 is a second public host',
    'cgnat': 'two homes behind one carrier NAT, both 192.168.1.0/24: alice in home1 (with '
             'the decoy at 192.168.1.3), bob at 192.168.1.3 in home2; cgn does not hairpin',
    'cgnat-hairpin': 'as cgnat, and the carrier NAT hairpins: from the carrier side, '
                     '10.0.0.1:10081 is alice\'s home1 and 10.0.0.1:10082 bob\'s home2',
}


def open_xterms(net, natchat, clients):
    """One xterm for the server and one per client, each already running natchat. Each
    window stays open after natchat ends, so that its last words can be read."""
    def term(node, argv):
        hold = f'{shlex.join(argv)}; echo; read -p "natchat ended; press Enter to close. " _'
        net.terms += makeTerm(node, title='natchat', cmd=f'bash -c {shlex.quote(hold)}')

    term(net['server'], server_command(natchat))
    # A client that starts before the server listens gives up at once: wait for it.
    deadline = time.monotonic() + 10
    while f':{SERVER_PORT} ' not in net['server'].cmd(f'ss -Htln sport = :{SERVER_PORT}'):
        if time.monotonic() > deadline:
            info('*** The server did not start listening; start the clients by hand\n')
            return
        time.sleep(0.2)
    for host in clients:
        term(net[host], client_command(host, natchat))


def print_commands(net, natchat, clients):
    """What to type to run natchat in the lab when no xterm can be opened."""
    server = shlex.join(server_command())
    print(f"""
*** No display for xterms. Run natchat in the lab in either of two ways.
  At the mininet> prompt, one command in the foreground at a time (Ctrl+C ends it):
    server {server} > /tmp/natchat-server.txt 2>&1 &""")
    for host, where in clients.items():
        print(f'    {host} {shlex.join(client_command(host))}    # {where}')
    print('  Or each in a terminal of its own (tmux, another ssh session), inside the host:')
    print(f'    sudo mnexec -a {net["server"].pid} {shlex.join(server_command(natchat))}')
    for host in clients:
        print(f'    sudo mnexec -a {net[host].pid} {shlex.join(client_command(host, natchat))}')
    router = next(node.name for node in net.hosts if isinstance(node, NatRouter))
    print('  Look inside a router:')
    for command, what in ((f'{router} iptables -t nat -S', 'its NAT rules'),
                          (f'{router} cat /proc/net/nf_conntrack',
                           'its translation table (conntrack -L, from package conntrack)'),
                          (f'{router} tcpdump -ni {router}-wan udp',
                           'the traffic on its public side (package tcpdump)')):
        print(f'    {command:<36}{what}')
    print()


def main():
    parser = argparse.ArgumentParser(description='The natchat NAT lab, with the Mininet CLI.')
    parser.add_argument('--mode', default='home',
                        help=f'the lab: {", ".join(LABS)} (default home)')
    parser.add_argument('--natchat', default='natchat',
                        help='the natchat binary (default: on PATH)')
    parser.add_argument('--remove-dead', action='store_true',
                        help='only remove what natchat labs that no longer run left behind')
    args = parser.parse_args()
    try:
        lab_mode(args.mode)
    except ValueError as e:
        parser.exit(2, f'topo.py: {e}\n')
    if os.geteuid() != 0:
        sys.exit('topo.py: Mininet needs root; run: sudo bash mininet/execute_mn.sh')
    if args.remove_dead:
        remove_dead_labs()
        return
    if not shutil.which(args.natchat):
        sys.exit(f'topo.py: no {args.natchat} on PATH; build it (cargo build --release) and add '
                 'target/release to PATH, or pass --natchat PATH')

    setLogLevel('info')
    try:
        net = start_lab(args.mode)
    except LabClash as e:
        sys.exit(f'topo.py: {e}')
    try:
        about = LAB_ABOUT[args.mode.partition(':')[0]].replace('NATPROBE', NATPROBE)
        info(f'*** Lab {args.mode}: {about}\n')
        for router in (node for node in net.hosts if isinstance(node, NatRouter)):
            info(f'*** {router.name} rules:\n{router.rules()}')
        clients = lab_clients(args.mode)
        # Mininet opens an xterm on a local display after allowing root in with xhost.
        x11_tools = [tool for tool in ('xterm', 'xhost') if not shutil.which(tool)]
        if os.environ.get('DISPLAY') and not x11_tools:
            open_xterms(net, args.natchat, clients)
            info(f'*** xterms opened: the server, and a client on each of {", ".join(clients)}\n')
        else:
            if os.environ.get('DISPLAY'):
                info(f'*** No xterms: {" and ".join(x11_tools)} missing '
                     '(apt-get install xterm x11-xserver-utils)\n')
            print_commands(net, shutil.which(args.natchat), clients)
        LabCLI(net)
    finally:
        stop_lab(net)


if __name__ == '__main__':
    main()
