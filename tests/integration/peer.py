#!/usr/bin/env python3
"""A backend that tells each client the address it sees, and a client that asks it, for the
tests of --transparent (run in network namespaces of the test's own).

usage: peer.py serve udp|tcp HOST PORT
       peer.py ask udp|tcp HOST PORT [--bind=HOST:PORT] [--timeout=S]

serve binds HOST:PORT ("::" is dual-stack), says "ready" on stderr, then for each datagram (udp)
or connection (tcp) says "peer ADDRESS" on stderr and answers with ADDRESS, the peer as the
kernel gave it ("192.0.2.1:4000", "[2001:db8::1]:4000"). Over TCP it first reads one line (the
client's "hello", or a PROXY protocol v1 header and then the "hello") and answers
"ADDRESS\\nFIRST-LINE\\n".

ask sends "hello" (a datagram, or a line over a connection), from --bind if given, and prints one
JSON line: {"saw": ADDRESS, "from": REPLY-SENDER} for udp, {"saw": ADDRESS, "first": LINE} for
tcp; {"timeout": true} (exit 1) without an answer in --timeout seconds (default 10), or
{"closed": true} (exit 1) for a connection closed without an answer.
"""
import json
import socket
import sys


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def text(address):
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split(address):
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def serve(proto, host, port):
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    sock = socket.socket(family_of(host), kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if host == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    if proto == "tcp":
        sock.listen(64)
    print("ready", file=sys.stderr, flush=True)
    while True:
        if proto == "udp":
            _, sender = sock.recvfrom(65535)
            print(f"peer {text(sender)}", file=sys.stderr, flush=True)
            try:
                sock.sendto(text(sender).encode(), sender)
            except OSError as e:  # No route back to that address, say.
                print(f"reply failed: {e}", file=sys.stderr, flush=True)
            continue
        conn, sender = sock.accept()
        print(f"peer {text(sender)}", file=sys.stderr, flush=True)
        with conn, conn.makefile("rb") as lines:
            first = lines.readline().decode().rstrip("\r\n")
            if first.startswith("PROXY "):
                # The "hello" too: a socket closed with unread bytes resets the connection, and
                # the client could lose the answer.
                lines.readline()
            conn.sendall(f"{text(sender)}\n{first}\n".encode())


def ask(proto, host, port, options):
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    sock = socket.socket(family_of(host), kind)
    if "bind" in options:
        sock.bind(split(options["bind"]))
    sock.settimeout(float(options.get("timeout", "10")))
    try:
        if proto == "udp":
            sock.sendto(b"hello", (host, port))
            data, sender = sock.recvfrom(65535)
            print(json.dumps({"saw": data.decode(), "from": text(sender)}), flush=True)
            return
        sock.connect((host, port))
        sock.sendall(b"hello\n")
        data = b""
        while True:
            chunk = sock.recv(65535)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        print(json.dumps({"timeout": True}), flush=True)
        sys.exit(1)
    except ConnectionError:
        data = b""
    if not data:
        print(json.dumps({"closed": True}), flush=True)
        sys.exit(1)
    saw, first = data.decode().split("\n")[:2]
    print(json.dumps({"saw": saw, "first": first}), flush=True)


def main():
    command, proto, host, port, *rest = sys.argv[1:]
    options = {}
    for option in rest:
        name, _, value = option.removeprefix("--").partition("=")
        options[name] = value
    if command == "serve":
        serve(proto, host, int(port))
    elif command == "ask":
        ask(proto, host, int(port), options)
    else:
        sys.exit(f"unknown command {command}")


main()
