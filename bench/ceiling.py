#!/usr/bin/env python3
"""The ceiling of a thread per session: the least a threaded sink can do.

    python3 bench/ceiling.py [--rounds N] [--messages N]

A sink of a few lines, a thread per connection, that answers Postfix's
smtp-source -s 20 -d and nothing else (no options, no limits, no
timeouts), its threads kept to one CPU as smtp_sink.py's are, waiting for
its client in one of two ways: in recv() itself ("block"), or in poll()
before a recv() ("poll", as our threads engine must, to keep a deadline
and to be stopped).  It runs, in turn, beside our sink under both
engines and Postfix's smtp-sink, and prints messages per second (the
median of the rounds) and the ratio to Postfix.  What the sketch cannot
beat, ours cannot either: it shows what bounds the design (README,
Benchmarks), not a speed of ours.  Not a test, not shipped.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench import POSTFIX_SOURCE, Sink, free_port  # noqa: E402
from tests.support import listening, wait_until  # noqa: E402

REPLIES = {b"HELO": b"250 sketch\r\n", b"EHLO": b"250 sketch\r\n",
           b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n", b"QUIT": b"221 Bye\r\n"}


def converse(conn, blocking):
    """One SMTP session, as little as smtp-source -d needs."""
    waiter = None
    if not blocking:
        import select
        conn.setblocking(False)
        waiter = select.poll()
        waiter.register(conn, select.POLLIN)
    conn.sendall(b"220 sketch ESMTP\r\n")
    pending, in_data = b"", False
    while True:
        if waiter is not None:
            waiter.poll()
        try:
            data = conn.recv(65536)
        except (BlockingIOError, ConnectionError):
            data = b"" if waiter is None else None
        if data is None:
            continue
        if not data:
            return
        pending += data
        replies = []
        while True:
            if in_data:
                end = pending.find(b"\r\n.\r\n")
                if end < 0:
                    pending = pending[-4:]
                    break
                pending, in_data = pending[end + 5:], False
                replies.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            end = pending.find(b"\n")
            if end < 0:
                break
            verb, pending = pending[:4].upper(), pending[end + 1:]
            replies.append(REPLIES.get(verb, b"250 2.1.0 Ok\r\n"))
            if verb == b"DATA":
                in_data, pending = True, b"\r\n" + pending
        if replies:
            conn.sendall(b"".join(replies))


def serve(port, blocking):
    """The sketch's own process: accept forever, a thread each."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)

    def session(conn):
        with conn:
            converse(conn, blocking)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=session, args=(conn,), daemon=True).start()


class Sketch:
    """The sketch in a process of its own, stopped by PID."""

    def __init__(self, blocking):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(self.port),
                                      "block" if blocking else "poll"])
        wait_until(lambda: listening(("127.0.0.1", self.port), socket.AF_INET),
                   timeout=30, what="sketch")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1] == "block")
        return
    kinds = {"sketch/block": lambda: Sketch(True), "sketch/poll": lambda: Sketch(False),
             "ours": lambda: Sink("ours", [], ""), "ours-loop": lambda: Sink("ours-loop", [], ""),
             "postfix": lambda: Sink("postfix", [], "")}
    rates = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind, start in kinds.items():
            sink = start()
            try:
                began = time.monotonic()
                subprocess.run([POSTFIX_SOURCE, "-s", "20", "-d", "-m", str(args.messages),
                                "127.0.0.1:%d" % sink.port], check=True)
                rates[kind].append(args.messages / (time.monotonic() - began))
            finally:
                sink.stop()
    base = statistics.median(rates["postfix"])
    for kind, values in rates.items():
        print("%-14s %8.0f msg/s  %5.2fx   (%s)" % (
            kind, statistics.median(values), statistics.median(values) / base,
            " ".join("%.0f" % v for v in values)))


if __name__ == "__main__":
    main()
