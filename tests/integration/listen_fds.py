#!/usr/bin/env python3
"""Starts a program with hand-made socket-activation variables, for the cases that
systemd-socket-activate cannot produce (a wrong LISTEN_PID, mismatched names, a file as fd 3).

usage: listen_fds.py [--tcp=PORT] [--file=PATH] [--env=NAME=VALUE] [--unset=NAME] [--pid=self|parent|VALUE]
                    [--hold] -- PROGRAM ARGS...

--tcp and --file put a listening TCP socket on 127.0.0.1:PORT or an open file at fd 3.
LISTEN_PID is our own pid (exec keeps it) unless --pid says otherwise; LISTEN_FDS is 1 unless
--env or --unset change it.

--hold keeps a copy of fd 3 the way a service manager does: the program runs in a child (its
pid printed as "pid N"), and once it has exited we accept one queued client from the same
socket and print "accepted after exit" (or "nothing to accept after exit"); the child's pid goes
to stderr as "pid N".
"""
import os
import socket
import sys


def put_at_3(fd):
    """Makes fd 3 an inheritable copy of fd (which may already be 3)."""
    if fd != 3:
        os.dup2(fd, 3)
    os.set_inheritable(3, True)


args = sys.argv[1:]
split = args.index("--")
options, program = args[:split], args[split + 1:]
env = dict(os.environ)
env["LISTEN_FDS"] = "1"
pid = str(os.getpid())
hold = False
for option in options:
    name, _, value = option.partition("=")
    if name == "--tcp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(value)))
        sock.listen(16)
        put_at_3(sock.fileno())
        print(f"listening on 127.0.0.1:{value}", file=sys.stderr, flush=True)
    elif name == "--file":
        put_at_3(os.open(value, os.O_RDONLY))
    elif name == "--pid":
        pid = {"self": pid, "parent": str(os.getppid())}.get(value, value)
    elif name == "--env":
        key, _, val = value.partition("=")
        env[key] = val
    elif name == "--hold":
        hold = True
    elif name == "--unset":
        env.pop(value, None)
    else:
        sys.exit(f"unknown option {option}")
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
