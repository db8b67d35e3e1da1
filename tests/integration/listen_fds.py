#!/usr/bin/env python3
"""Starts a program with hand-made socket-activation variables, for the cases that
systemd-socket-activate cannot produce (a wrong LISTEN_PID, mismatched names, a file as fd 3).

usage: listen_fds.py [--tcp=PORT] [--file=PATH] [--env=NAME=VALUE] [--unset=NAME] [--pid=self|parent|VALUE]
                    -- PROGRAM ARGS...

--tcp and --file put a listening TCP socket on 127.0.0.1:PORT or an open file at fd 3.
LISTEN_PID is our own pid (exec keeps it) unless --pid says otherwise; LISTEN_FDS is 1 unless
--env or --unset change it.
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
for option in options:
    name, _, value = option.partition("=")
    if name == "--tcp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(value)))
        sock.listen(16)
        put_at_3(sock.fileno())
    elif name == "--file":
        put_at_3(os.open(value, os.O_RDONLY))
    elif name == "--pid":
        pid = {"self": pid, "parent": str(os.getppid())}.get(value, value)
    elif name == "--env":
        key, _, val = value.partition("=")
        env[key] = val
    elif name == "--unset":
        env.pop(value, None)
    else:
        sys.exit(f"unknown option {option}")
env["LISTEN_PID"] = pid
os.execvpe(program[0], program, env)
