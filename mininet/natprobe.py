#!/usr/bin/python3
"""Small UDP probes that tell what a NAT router does, as STUN's behaviour discovery does
(RFC 5780), so that the lab checks each NAT tier itself before natchat runs in it.

  natprobe.py reflect PORT            answer every datagram with the address it came from
  natprobe.py map --bind PORT --listen SECS REFLECTOR...
        from PORT, ask each REFLECTOR (ip:port) where our datagram came from; print
        `mapped A B ...` (one per reflector, in order), then listen for any datagram from
        elsewhere, until one comes, a line or end of input comes on stdin, or SECS pass, and
        print `inbound <addr>` or `inbound none`
  natprobe.py knock --bind PORT TARGET
        send three datagrams to TARGET (ip:port) from PORT, 50 ms apart

Every loop is bounded in count and time; nothing here talks to anything but the lab.
"""

import select
import socket
import sys
import time


def addr(text):
    host, port = text.rsplit(':', 1)
    return host, int(port)


def reflect(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(('0.0.0.0', port))
    print('reflecting', flush=True)
    while True:  # ended by the lab (SIGKILL) with the host it runs on
        _, source = sock.recvfrom(2048)
        sock.sendto(f'{source[0]}:{source[1]}'.encode(), source)


def mapping(port, listen, reflectors):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('0.0.0.0', port))
    seen = []
    for reflector in reflectors:
        answer = None
        for _ in range(5):  # five tries, 0.2 s each
            sock.sendto(b'where am I?', reflector)
            sock.settimeout(0.2)
            try:
                data, source = sock.recvfrom(2048)
            except socket.timeout:
                continue
            if source == reflector:
                answer = data.decode()
                break
        seen.append(answer or 'none')
    print('mapped ' + ' '.join(seen), flush=True)
    deadline = time.monotonic() + listen
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock, sys.stdin], [], [], deadline - time.monotonic())
        if sock in ready:
            _, source = sock.recvfrom(2048)
            if source not in reflectors:
                print(f'inbound {source[0]}:{source[1]}', flush=True)
                return
        elif ready:  # the caller says it has sent all it will send
            break
    print('inbound none', flush=True)


def knock(port, target):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('0.0.0.0', port))
    for _ in range(3):
        sock.sendto(b'knock knock', target)
        time.sleep(0.05)


def main(argv):
    try:
        if argv[0] == 'reflect':
            reflect(int(argv[1]))
        elif argv[0] == 'map':
            assert argv[1] == '--bind' and argv[3] == '--listen'
            mapping(int(argv[2]), float(argv[4]), [addr(a) for a in argv[5:]])
        elif argv[0] == 'knock':
            assert argv[1] == '--bind'
            knock(int(argv[2]), addr(argv[3]))
        else:
            raise IndexError
    except (IndexError, AssertionError, ValueError):
        sys.exit(__doc__)


if __name__ == '__main__':
    main(sys.argv[1:])
