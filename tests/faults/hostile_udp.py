#!/usr/bin/env python3
"""Hostile datagram peers for tests/faults/hostile_traffic_test.ts, in a process of their own so
that the test's own clients (and their timings) do not share an event loop with the attack.

usage: hostile_udp.py flood RATE PORT...
       hostile_udp.py stream

flood sends RATE datagrams a second in all to 127.0.0.1:PORT, the ports in turn, each from a
socket of its own (a new source port, a client that sends once), one in twenty of 65,507 bytes and
one in twenty empty, until killed; it says "flooding" on stderr once started.

stream is a UDP backend on 127.0.0.1 (its port on stderr as "port N") that answers every datagram
with a copy every 10 ms, to its sender, until killed.
"""
import selectors
import socket
import sys
import time


def flood(rate, ports):
    big = bytes(i % 251 for i in range(65_507))
    print("flooding", file=sys.stderr, flush=True)
    sent = 0
    started = time.monotonic()
    while True:
        data = big if sent % 20 == 0 else b"" if sent % 20 == 1 else bytes([sent & 255])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(data, ("127.0.0.1", ports[sent % len(ports)]))
            except OSError:
                pass  # A full buffer under the flood: the next one goes.
        sent += 1
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)


def stream():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    print(f"port {sock.getsockname()[1]}", file=sys.stderr, flush=True)
    peers = {}
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    while True:
        for _ in selector.select(timeout=0.01):
            try:
                while True:
                    data, peer = sock.recvfrom(65_536)
                    peers[peer] = data
            except BlockingIOError:
                pass
        for peer, data in peers.items():
            try:
                sock.sendto(data, peer)
            except OSError:
                pass  # The session has ended: ICMP port unreachable. It keeps trying.


if sys.argv[1] == "flood":
    flood(int(sys.argv[2]), [int(p) for p in sys.argv[3:]])
else:
    stream()
