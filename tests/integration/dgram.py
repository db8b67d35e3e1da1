#!/usr/bin/env python3
"""Datagram ends for the tests, where Deno's own datagram API cannot do it (a Unix client with
no address, datagrams over 64 KiB, a client in a network namespace of the test's own).

usage: dgram.py echo ADDRESS
       dgram.py ask ADDRESS [--bind=ADDRESS] [--size=N] [--count=N] [--no-reply] [--timeout=S]

ADDRESS is udp:HOST:PORT, udp6:HOST:PORT, unix:PATH or abstract:NAME.

echo says "ready" on stderr once bound, then sends every datagram back to its sender and says
"got N from PEER" for each (PEER is "unnamed" for a Unix client without an address).

ask sends --count datagrams of --size bytes (byte i is i % 251), from --bind if given (for a
Unix socket --bind=auto asks the kernel for a name), and prints one JSON line per reply:
{"size": N, "intact": true|false, "from": PEER}; with --no-reply it prints {"sent": N} instead.
Without a reply in --timeout seconds it prints {"timeout": true} and exits 1.
"""
import json
import socket
import sys


def parse(address):
    kind, _, rest = address.partition(":")
    if kind in ("udp", "udp6"):
        host, _, port = rest.rpartition(":")
        family = socket.AF_INET6 if kind == "udp6" else socket.AF_INET
        return family, (host, int(port))
    if kind == "unix":
        return socket.AF_UNIX, rest
    if kind == "abstract":
        return socket.AF_UNIX, "\0" + rest
    sys.exit(f"unknown address {address}")


def peer(address):
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    if not address:
        return "unnamed"
    if isinstance(address, bytes):
        address = address.decode()
    return "@" + address[1:] if address.startswith("\0") else address


def payload(size):
    return bytes(i % 251 for i in range(size))


def echo(address):
    family, where = parse(address)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(where)
    print("ready", file=sys.stderr, flush=True)
    while True:
        data, sender = sock.recvfrom(1 << 20)
        print(f"got {len(data)} from {peer(sender)}", file=sys.stderr, flush=True)
        if sender:
            sock.sendto(data, sender)


def ask(address, options):
    family, where = parse(address)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    # Room for the largest datagrams in the tests (root may exceed net.core.wmem_max).
    sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_SNDBUFFORCE", 32), 1 << 20)
    bind = options.get("bind")
    if bind == "auto":
        sock.bind("")
    elif bind is not None:
        sock.bind(parse(bind)[1])
    sock.settimeout(float(options.get("timeout", "10")))
    size = int(options.get("size", "1"))
    data = payload(size)
    for _ in range(int(options.get("count", "1"))):
        sock.sendto(data, where)
        if "no-reply" in options:
            print(json.dumps({"sent": size}), flush=True)
            continue
        try:
            back, sender = sock.recvfrom(1 << 20)
        except socket.timeout:
            print(json.dumps({"timeout": True}), flush=True)
            sys.exit(1)
        print(json.dumps({"size": len(back), "intact": back == data, "from": peer(sender)}),
              flush=True)


def main():
    command, address, *rest = sys.argv[1:]
    options = {}
    for option in rest:
        name, _, value = option.removeprefix("--").partition("=")
        options[name] = value
    if command == "echo":
        echo(address)
    elif command == "ask":
        ask(address, options)
    else:
        sys.exit(f"unknown command {command}")


main()
