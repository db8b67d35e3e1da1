#!/usr/bin/env python3
"""Starts a program with hand-made socket-activation variables, for the cases that
systemd-socket-activate cannot produce (a wrong LISTEN_PID, mismatched names, a file as fd 3).

usage: listen_fds.py [--tcp=PORT] [--udp=PORT] [--file=PATH] [--env=NAME=VALUE] [--unset=NAME]
                    [--pid=self|parent|VALUE] [--hold] -- PROGRAM ARGS...

--tcp, --udp and --file put a listening TCP socket on 127.0.0.1:PORT, a UDP socket bound there
or an open file at fd 3; each further one of them goes to the next fd (4, 5, ...), as a
.socket unit with several Listen lines passes them (LISTEN_FDNAMES can be set with --env).
LISTEN_PID is our own pid (exec keeps it) unless --pid says otherwise; LISTEN_FDS is the number
of fds put in place (at least 1) unless --env or --unset change it.

--hold keeps a copy of fd 3 the way a service manager does: the program runs in a child (its
pid printed as "pid N"), and once it has exited we accept one queued client from the same
socket and print "accepted after exit" (or "nothing to accept after exit"); the child's pid goes
to stderr as "pid N".
"""
import os
import socket
import sys


placed = []


def put_next(fd):
    """Makes the next fd from 3 on an inheritable copy of fd (which may already be that one)."""
    at = 3 + len(placed)
    if fd != at:
        os.dup2(fd, at)
    os.set_inheritable(at, True)
    placed.append(at)


args = sys.argv[1:]
split = args.index("--")
options, program = args[:split], args[split + 1:]
env = dict(os.environ)
count_set = False
pid = str(os.getpid())
hold = False
for option in options:
    name, _, value = option.partition("=")
    if name == "--tcp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(value)))
        sock.listen(16)
        put_next(sock.detach())
        print(f"listening on 127.0.0.1:{value}", file=sys.stderr, flush=True)
    elif name == "--udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", int(value)))
        put_next(sock.detach())
        print(f"bound to 127.0.0.1:{value}/udp", file=sys.stderr, flush=True)
    elif name == "--file":
        put_next(os.open(value, os.O_RDONLY))
    elif name == "--pid":
        pid = {"self": pid, "parent": str(os.getppid())}.get(value, value)
    elif name == "--env":
        key, _, val = value.partition("=")
        env[key] = val
        count_set = count_set or key == "LISTEN_FDS"
    elif name == "--hold":
        hold = True
    elif name == "--unset":
        env.pop(value, None)
        count_set = count_set or value == "LISTEN_FDS"
    else:
        sys.exit(f"unknown option {option}")
if not count_set:
    env["LISTEN_FDS"] = str(max(1, len(placed)))
if hold:
    child = os.fork()
    if child == 0:
        env["LISTEN_PID"] = str(os.getpid())
        os.execvpe(program[0], program, env)
    print(f"pid {child}", file=sys.stderr, flush=True)
    _, status = os.waitpid(child, 0)
    print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)
    listener = socket.socket(fileno=os.dup(3))
    listener.settimeout(5)
    try:
        conn, _ = listener.accept()
        conn.sendall(b"from the service manager")
        conn.close()
        print("accepted after exit", flush=True)
    except OSError as e:
        print(f"nothing to accept after exit: {e}", flush=True)
    sys.exit(0)
env["LISTEN_PID"] = pid
os.execvpe(program[0], program, env)
