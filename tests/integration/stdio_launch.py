#!/usr/bin/env python3
"""Starts a program the way an inetd-style service is started, with the standard file
descriptors arranged by hand, for what systemd-socket-activate --inetd cannot arrange.

usage: stdio_launch.py --listen=PORT|PATH [--stderr=socket|full-pipe|journal|inherit] -- PROGRAM ARGS...

It listens on 127.0.0.1:PORT (or a Unix socket PATH), prints "listening" to stderr, accepts one
client and runs PROGRAM with that connection as stdin and stdout, as systemd does for
Accept=yes with StandardInput=socket, and sets no LISTEN_* variables. stderr is:
  socket     the same connection (systemd's default with StandardInput=socket);
  full-pipe  a pipe that is never read, filled to capacity before the program starts;
  journal    a stream socket standing in for the journal's, named by JOURNAL_STREAM as systemd
             does; what arrives on it is copied to this script's stderr;
  inherit    this script's stderr.
Then it waits and prints "exit N" to its stderr.
"""
import fcntl
import os
import socket
import sys
import threading

args = sys.argv[1:]
split = args.index("--")
options, program = args[:split], args[split + 1:]
listen = None
stderr_mode = "inherit"
for option in options:
    name, _, value = option.partition("=")
    if name == "--listen":
        listen = value
    elif name == "--stderr":
        stderr_mode = value
    else:
        sys.exit(f"unknown option {option}")
if listen is None or stderr_mode not in ("socket", "full-pipe", "journal", "inherit"):
    sys.exit(__doc__)

if listen.startswith("/"):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen)
else:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(listen)))
server.listen(1)
print("listening", file=sys.stderr, flush=True)
conn, _ = server.accept()
server.close()

stderr_fd = 2
if stderr_mode == "socket":
    stderr_fd = conn.fileno()
elif stderr_mode == "full-pipe":
    read_end, stderr_fd = os.pipe()
    fcntl.fcntl(stderr_fd, fcntl.F_SETFL, os.O_NONBLOCK)
    try:
        while True:
            os.write(stderr_fd, b"x" * 4096)
    except BlockingIOError:
        pass
    fcntl.fcntl(stderr_fd, fcntl.F_SETFL, 0)  # As a service finds it: blocking.

env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
journal = None
if stderr_mode == "journal":
    journal, theirs = socket.socketpair()
    stderr_fd = theirs.fileno()
    st = os.fstat(stderr_fd)
    env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"

    def copy():
        while data := journal.recv(65536):
            os.write(2, data)

    copier = threading.Thread(target=copy)
    copier.start()
child = os.fork()
if child == 0:
    os.dup2(conn.fileno(), 0)
    os.dup2(conn.fileno(), 1)
    if stderr_fd != 2:
        os.dup2(stderr_fd, 2)
    os.execvpe(program[0], program, env)
conn.close()
if journal is not None:
    theirs.close()
_, status = os.waitpid(child, 0)
if journal is not None:
    copier.join()
print(f"exit {os.waitstatus_to_exitcode(status)}", file=sys.stderr, flush=True)
