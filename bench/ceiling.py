#!/usr/bin/env python3
"""The ceiling of each engine: the least a sink in Python can do.

    python3 bench/ceiling.py [--rounds N] [--messages N]

A sink of a few lines that answers Postfix's smtp-source -s 20 -d and
nothing else (no options, no limits, no timeouts), in three shapes:

    block   a thread per connection, waiting for its client in recv()
    poll    the same, waiting in poll() before a recv() (as our threads
            engine must, to keep a deadline and to be stopped)
    loop    one thread, one epoll loop for every connection (as our
            --engine=loop)

The threads are kept to one CPU, as smtp_sink.py's are.  The sketches
run, in turn, beside our sink under both engines and Postfix's
smtp-sink, and it prints messages per second (the median of the rounds)
and the ratio to Postfix.  What a sketch cannot beat, ours cannot
either: it shows what bounds each design (README, Benchmarks), not a
speed of ours.  Not a test, not shipped.
"""

import argparse
import os
import select
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

GREETING = b"220 sketch ESMTP\r\n"
REPLIES = {b"HELO": b"250 sketch\r\n", b"EHLO": b"250 sketch\r\n",
           b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n", b"QUIT": b"221 Bye\r\n"}


class Talk:
    """One SMTP session's state, as little as smtp-source -d needs."""

    def __init__(self):
        self.pending, self.in_data = b"", False

    def answer(self, data):
        """The replies to the bytes that came in (b"": none yet)."""
        pending = self.pending + data
        replies = []
        while True:
            if self.in_data:
                end = pending.find(b"\r\n.\r\n")
                if end < 0:
                    pending = pending[-4:]
                    break
                pending, self.in_data = pending[end + 5:], False
                replies.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            end = pending.find(b"\n")
            if end < 0:
                break
            verb, pending = pending[:4].upper(), pending[end + 1:]
            replies.append(REPLIES.get(verb, b"250 2.1.0 Ok\r\n"))
            if verb == b"DATA":
                self.in_data, pending = True, b"\r\n" + pending
        self.pending = pending
        return b"".join(replies)


def converse(conn, blocking):
    """One SMTP session in a thread of its own."""
    waiter = None
    if not blocking:
        conn.setblocking(False)
        waiter = select.poll()
        waiter.register(conn, select.POLLIN)
    conn.sendall(GREETING)
    talk = Talk()
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
        replies = talk.answer(data)
        if replies:
            conn.sendall(replies)


def serve_threads(listener, blocking):
    """Accept forever, a thread each."""
    def session(conn):
        with conn:
            converse(conn, blocking)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=session, args=(conn,), daemon=True).start()


def serve_loop(listener):
    """Every connection in one epoll loop (a reply that does not fit in
    the socket's buffer is not waited for: smtp-source's never fill it)."""
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener, select.EPOLLIN)
    talks = {}
    lfd = listener.fileno()
    while True:
        for fd, _ in poller.poll():
            if fd == lfd:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                conn.send(GREETING)
                talks[conn.fileno()] = (conn, Talk())
                poller.register(conn, select.EPOLLIN)
                continue
            conn, talk = talks[fd]
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            if not data:
                poller.unregister(fd)
                del talks[fd]
                conn.close()
                continue
            replies = talk.answer(data)
            if replies:
                conn.send(replies)


def serve(port, shape):
    """The sketch's own process."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    if shape == "loop":
        serve_loop(listener)
    else:
        serve_threads(listener, shape == "block")


class Sketch:
    """The sketch in a process of its own, stopped by PID."""

    def __init__(self, shape):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(self.port),
                                      shape])
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
        serve(int(args.serve[0]), args.serve[1])
        return
    kinds = {"sketch/block": lambda: Sketch("block"), "sketch/poll": lambda: Sketch("poll"),
             "sketch/loop": lambda: Sketch("loop"),
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
