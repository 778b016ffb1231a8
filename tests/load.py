"""Helpers for the hostile-input, dump-safety and soak tests: many clients
at once in one thread, and our sink as a subprocess whose memory can be
read.

Clients(...) plays any number of clients over non-blocking sockets with
one selector, each from a script (bytes to send, in pieces, and whether to
half-close, reset or hold the connection); every wait has a deadline.
SinkProcess runs smtp_sink.py (as root with -u nobody) with its stdout and
stderr going to files, so that a chatty sink (-c, thousands of warnings)
never blocks on a full pipe, and reads its resident set size from
/proc/PID/status.
"""

import errno
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from tests import support

# What a normal transaction gets from our sink with default options.
GREETING = b"220 smtp-sink ESMTP\r\n"
TRANSACTION = (b"HELO client.example\r\nMAIL FROM:<a@example.com>\r\n"
               b"RCPT TO:<b@example.com>\r\nDATA\r\n")
TRANSACTION_REPLIES = (b"250 smtp-sink\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
                       b"354 End data with <CR><LF>.<CR><LF>\r\n")
MESSAGE = b"Subject: load\r\n\r\nline one\r\n..dotted\r\n.\r\n"
MESSAGE_REPLY = b"250 2.0.0 Ok\r\n"
QUIT, BYE = b"QUIT\r\n", b"221 Bye\r\n"


def session(messages=1):
    """(what a pipelining client sends, what it must get back) for a whole
    session of `messages` transactions and a QUIT."""
    send = (TRANSACTION + MESSAGE) * messages + QUIT
    expect = GREETING + (TRANSACTION_REPLIES + MESSAGE_REPLY) * messages + BYE
    return send, expect


def raise_fd_limit(wanted):
    """Raise this process's soft descriptor limit (children inherit it);
    False when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return True
    if hard != resource.RLIM_INFINITY and hard < wanted:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return True


# ------------------------------------------------------------------ clients

class Client:
    """One scripted client.  pieces: bytes to send, one write each (as far
    as the socket takes them); then `end`: "shutdown" (half-close, then
    read to EOF), "reset" (RST at once, read nothing more) or "hold" (keep
    the connection open and read until the server closes it)."""

    def __init__(self, pieces=(), end="shutdown"):
        self.pieces = [p for p in pieces if p]
        self.end = end
        self.sock = None
        self.received = bytearray()
        self.outcome = None         # "eof", "reset", "reset-sent", "refused", "timeout"
        self.closed_at = None       # time.monotonic() of EOF or reset
        self.sent_at = None         # when the last piece went out
        self.sent = 0               # bytes sent

    def __repr__(self):
        return "Client(outcome=%r, received=%r)" % (self.outcome, bytes(self.received[-300:]))


class Clients:
    """Runs clients against an address in one thread until each is done."""

    def __init__(self, address, family=socket.AF_INET):
        self.address, self.family = address, family

    def run(self, clients, timeout=support.TIMEOUT, gate=None, at_gate=None):
        """Connect every client, send, read; returns the clients when all
        are done.  gate: no client sends anything until every client has
        received these bytes (with a greeting: the server then has them
        all open at once); at_gate() is called at that moment.  A client
        that is still going at the deadline fails the call, unless it is
        holding ("timeout" outcome)."""
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        pending = {}
        gated = gate is not None
        try:
            for client in clients:
                self._connect(client)
                pending[client.sock.fileno()] = client
                selector.register(client.sock, selectors.EVENT_READ if gated
                                  else selectors.EVENT_READ | selectors.EVENT_WRITE, client)
            while pending:
                if gated and all(gate in c.received for c in clients):
                    gated = False
                    if at_gate is not None:
                        at_gate()
                    for client in pending.values():
                        selector.modify(client.sock, selectors.EVENT_READ
                                        | selectors.EVENT_WRITE, client)
                left = deadline - time.monotonic()
                if left <= 0:
                    for client in pending.values():
                        client.outcome = client.outcome or "timeout"
                    if not gated and all(c.end == "hold" for c in pending.values()):
                        break
                    raise AssertionError("%d clients not done after %ss, e.g. %r"
                                         % (len(pending), timeout, list(pending.values())[:2]))
                for key, events in selector.select(min(left, 0.5)):
                    client = key.data
                    if self._step(selector, client, events, gated):
                        selector.unregister(client.sock)
                        del pending[client.sock.fileno()]
                        client.sock.close()
        finally:
            for client in pending.values():
                selector.unregister(client.sock)
                client.sock.close()
            selector.close()
        return clients

    def _connect(self, client):
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        client.sock = sock
        err = sock.connect_ex(self.address)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
            client.outcome = "refused"

    def _step(self, selector, client, events, gated):
        """Handle readiness; True when the client is done."""
        sock = client.sock
        if client.outcome == "refused":
            return True
        if events & selectors.EVENT_WRITE and not gated:
            if self._send(client):
                client.sent_at = client.sent_at or time.monotonic()
                if client.end == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.outcome = "reset-sent"
                    return True
                if client.end == "shutdown":
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                selector.modify(sock, selectors.EVENT_READ, client)
        if events & selectors.EVENT_READ:
            while True:
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    return False
                except OSError:
                    client.outcome = "reset"
                    client.closed_at = time.monotonic()
                    return True
                if not chunk:
                    client.outcome = "eof"
                    client.closed_at = time.monotonic()
                    return True
                client.received += chunk
        return False

    @staticmethod
    def _send(client):
        """Send what the socket takes; True when nothing is left."""
        while client.pieces:
            piece = client.pieces[0]
            try:
                sent = client.sock.send(piece)
            except BlockingIOError:
                return False
            except OSError:
                client.pieces = []          # the server hung up: read what it said
                return True
            client.sent += sent
            if sent < len(piece):
                client.pieces[0] = piece[sent:]
                return False
            client.pieces.pop(0)
        return True


# --------------------------------------------------------------- the sink

def status_field(pid, name):
    """A "kB" field of /proc/PID/status (VmRSS, VmHWM) as an int, or None."""
    try:
        with open("/proc/%d/status" % pid) as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class SinkProcess:
    """smtp_sink.py (or program, e.g. [support.POSTFIX_SINK]) as a
    subprocess on 127.0.0.1:<free port>; stopped (by its PID) in cleanup.
    stdout and stderr go to files (stdout: or to the descriptor given)."""

    def __init__(self, test, args, backlog=1024, cwd=None, wrapper=(), env=None,
                 program=None, stdout=None):
        self.test = test
        self.port = support.free_port()
        self.address = ("127.0.0.1", self.port)
        self.family = socket.AF_INET
        files = tempfile.mkdtemp(prefix="sinkout-")
        test.addCleanup(_remove_tree, files)
        self.out_path = os.path.join(files, "stdout")
        self.err_path = os.path.join(files, "stderr")
        program = list(program) if program else support.python_cmd(support.SINK)
        command = list(wrapper) + program + support.PRIVS + list(args) + [
            "127.0.0.1:%d" % self.port, str(backlog)]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(command, stdout=out if stdout is None else stdout,
                                         stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
        self.pid = self.proc.pid
        test.addCleanup(self.stop)
        support.wait_until(lambda: self.proc.poll() is not None
                           or support.listening(self.address, self.family),
                           what="the sink to listen")
        if self.proc.poll() is not None:
            raise AssertionError("sink exited %s: %r" % (self.proc.returncode, self.stderr()))

    def alive(self):
        return self.proc.poll() is None

    def rss(self):
        """Resident set size now, in kB."""
        return status_field(self.pid, "VmRSS")

    def peak(self):
        """Peak resident set size so far (VmHWM), in kB."""
        return status_field(self.pid, "VmHWM")

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read()

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read()

    def signal(self, signum):
        if self.proc.poll() is None:
            os.kill(self.pid, signum)

    def wait(self, timeout=support.TIMEOUT):
        return self.proc.wait(timeout)

    def stop(self):
        """Stop by PID (SIGTERM, then SIGKILL); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(support.TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(support.TIMEOUT)
        return self.proc.returncode


def _remove_tree(path):
    import shutil
    shutil.rmtree(path, True)


def report(what, **figures):
    """Print measured figures on stderr (they go in the closing note)."""
    text = ", ".join("%s=%s" % item for item in sorted(figures.items()))
    sys.stderr.write("\n    [figures] %s: %s\n" % (what, text))
