"""A scriptable, byte-logging fake SMTP/LMTP server, and helpers to run
smtp-source (ours or Postfix's) against it and compare what they did.

The server runs in threads of the test process, listens on port 0 (or on a
UNIX-domain socket in a temporary directory), and serves each connection in
its own thread.  For every connection it records what the client sent,
split the way a server sees it:

    ("C", b"HELO client.example\\r\\n")      a command line, CRLF included
    ("D", b"From: ...\\r\\n.\\r\\n")          message content, final "." included
    ("S", b"250 ok\\r\\n")                    what the server replied

plus `raw` (all client bytes, unsplit) and `end`: "reset" (the client
closed with RST), "eof" (FIN) or "server" (the script hung up).

Replies are scripted per stage: greeting, helo (HELO/EHLO/LHLO), mail,
rcpt, data, dot (end of data, also "BDAT n LAST"; in LMTP once per
accepted recipient), rset, quit, starttls, bdat (a chunk other than the
last) and other.  A stage's value is the reply bytes, Close(bytes) to reply
and then hang up, None to hang up without a reply, SILENCE to say nothing
and wait, or a callable(conn, stage) returning one of those; seq() makes
one that answers the n-th use in a connection with the n-th of its
arguments.

For the extensions of smtp-source: with tls_context (a server-side
ssl.SSLContext) a 220 reply to STARTTLS is followed by the TLS handshake
(logged as ("T", b"TLSv1.3")), and implicit_tls=True does the handshake
before the greeting.  "BDAT n [LAST]" is followed by n octets, logged as
("B", chunk); Connection.chunked_messages() puts them together.
"""

import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

from tests import support

DEFAULT_REPLIES = {
    "greeting": b"220 fake ESMTP\r\n",
    "helo": b"250 fake\r\n",
    "mail": b"250 2.1.0 Ok\r\n",
    "rcpt": b"250 2.1.5 Ok\r\n",
    "data": b"354 go\r\n",
    "dot": b"250 2.0.0 Ok\r\n",
    "rset": b"250 2.0.0 Ok\r\n",
    "quit": b"221 Bye\r\n",
    "starttls": b"220 2.0.0 Ready to start TLS\r\n",
    "bdat": b"250 2.0.0 Ok: chunk\r\n",
    "other": b"500 5.5.1 unknown\r\n",
}

VERB_STAGES = {b"HELO": "helo", b"EHLO": "helo", b"LHLO": "helo", b"MAIL": "mail",
               b"RCPT": "rcpt", b"DATA": "data", b"RSET": "rset", b"QUIT": "quit",
               b"STARTTLS": "starttls", b"BDAT": "bdat"}


class Close(bytes):
    """A reply after which the server hangs up (FIN): Close(b"421 bye\\r\\n")."""


SILENCE = b""       # as a reply: send nothing, keep the connection open


def seq(*replies):
    """A stage script: the n-th use in a connection gets replies[n] (the
    last one repeats)."""
    def pick(conn, stage):
        return replies[min(conn.count[stage] - 1, len(replies) - 1)]
    return pick


class Connection:
    """What one client did, as the server saw it."""

    def __init__(self, index, sock):
        self.index = index
        self.sock = sock
        self.events = []
        self.times = []             # time.monotonic() of each event
        self.raw = bytearray()
        self.end = None
        self.count = {}
        self.recipients = 0
        self.tls = None             # the TLS version once the handshake is done
        self.ended_at = None        # time.monotonic() when it ended
        self.done = threading.Event()

    def log(self, kind, data):
        self.events.append((kind, data))
        self.times.append(time.monotonic())

    def client_events(self):
        return [data for kind, data in self.events if kind != "S"]

    def commands(self):
        return [data for kind, data in self.events if kind == "C"]

    def messages(self):
        return [data for kind, data in self.events if kind == "D"]

    def chunked_messages(self):
        """The messages sent with BDAT, each its chunks put together."""
        found, parts = [], []
        for kind, data in self.events:
            if kind == "C" and data.upper().startswith(b"BDAT "):
                last = data.split()[-1].upper() == b"LAST"
            elif kind == "B":
                parts.append(data)
                if last:
                    found.append(b"".join(parts))
                    parts = []
        return found


class FakeServer:
    """A scripted SMTP (or LMTP) server; start(test) registers its cleanup."""

    def __init__(self, replies=None, family="inet", lmtp=False, tls_context=None,
                 implicit_tls=False):
        self.replies = dict(DEFAULT_REPLIES)
        self.replies.update(replies or {})
        self.family = family
        self.lmtp = lmtp
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.connections = []
        self.lock = threading.Lock()
        self.threads = []
        self.listener = None
        self.stopping = False

    # ------------------------------------------------------------ lifecycle

    def start(self, test):
        if self.family == "unix":
            directory = support.temp_dir(test)
            self.path = os.path.join(directory, "fake.sock")
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(self.path)
            self.target = "unix:" + self.path
        elif self.family == "inet6":
            self.listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            self.listener.bind(("::1", 0))
            self.port = self.listener.getsockname()[1]
            self.target = "[::1]:%d" % self.port
        else:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.bind(("127.0.0.1", 0))
            self.port = self.listener.getsockname()[1]
            self.target = "127.0.0.1:%d" % self.port
        self.listener.listen(128)
        self.listener.settimeout(0.05)
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self.threads.append(thread)
        test.addCleanup(self.stop)
        return self

    def stop(self):
        """Stop accepting, cut every connection, join every thread."""
        self.stopping = True
        with self.lock:
            for conn in self.connections:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in list(self.threads):
            thread.join(support.TIMEOUT)
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def settle(self, timeout=support.TIMEOUT):
        """After the client is gone: wait until every connection it made
        has been accepted and has ended; returns them."""
        def quiet():
            pending, _, _ = select.select([self.listener], [], [], 0)
            with self.lock:
                return not pending and all(c.done.is_set() for c in self.connections)
        support.wait_until(quiet, timeout, what="the fake server to settle")
        # The accept loop may be between accept() and appending: ask twice.
        support.wait_until(quiet, timeout, what="the fake server to settle")
        with self.lock:
            return list(self.connections)

    def wait(self, count, timeout=support.TIMEOUT):
        """Wait until `count` connections have ended; returns them all."""
        def finished():
            with self.lock:
                return (len(self.connections) >= count
                        and all(c.done.is_set() for c in self.connections))
        support.wait_until(finished, timeout, what="%d finished connections" % count)
        with self.lock:
            return list(self.connections)

    # -------------------------------------------------------------- serving

    def _accept_loop(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(support.TIMEOUT)
            with self.lock:
                conn = Connection(len(self.connections), sock)
                self.connections.append(conn)
                thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self.threads.append(thread)
            thread.start()

    def _reply(self, conn, stage):
        """Send the scripted reply; None if the script hung up."""
        conn.count[stage] = conn.count.get(stage, 0) + 1
        value = self.replies[stage]
        if callable(value):
            value = value(conn, stage)
        if value is None:
            conn.end = "server"
            return None
        if value:
            conn.log("S", value)
            conn.sock.sendall(value)
        if isinstance(value, Close):
            conn.end = "server"
            return None
        return value

    def _serve(self, conn):
        buffer = bytearray()
        in_data = False
        try:
            if self.implicit_tls:
                self._handshake(conn)
            if self._reply(conn, "greeting") is None:
                return
            while not self.stopping:
                if in_data:
                    if buffer.startswith(b".\r\n"):
                        end = 3
                    else:
                        end = buffer.find(b"\r\n.\r\n")
                        end = end + 5 if end >= 0 else -1
                    if end < 0:
                        if not self._receive(conn, buffer):
                            return
                        continue
                    conn.log("D", bytes(buffer[:end]))
                    del buffer[:end]
                    in_data = False
                    for _ in range(max(conn.recipients, 1) if self.lmtp else 1):
                        if self._reply(conn, "dot") is None:
                            return
                    conn.recipients = 0
                    continue
                newline = buffer.find(b"\n")
                if newline < 0:
                    if not self._receive(conn, buffer):
                        return
                    continue
                line = bytes(buffer[:newline + 1])
                del buffer[:newline + 1]
                conn.log("C", line)
                stage = VERB_STAGES.get(line.split(b" ", 1)[0].strip().upper(), "other")
                if stage == "bdat":
                    if not self._chunk(conn, line, buffer):
                        return
                    continue
                reply = self._reply(conn, stage)
                if reply is None:
                    return
                if stage == "starttls" and reply.startswith(b"220") and self.tls_context:
                    del buffer[:]           # anything sent in clear is dropped
                    self._handshake(conn)
                if stage == "rcpt" and reply.startswith(b"2"):
                    conn.recipients += 1
                elif stage in ("mail", "rset", "helo"):
                    conn.recipients = 0
                elif stage == "data" and reply.startswith(b"3"):
                    in_data = True
        except ConnectionResetError:
            conn.end = "reset"
        except OSError as err:
            conn.end = "error: %s" % err
        finally:
            conn.ended_at = time.monotonic()
            try:
                conn.sock.close()
            except OSError:
                pass
            conn.done.set()

    def _handshake(self, conn):
        conn.sock = self.tls_context.wrap_socket(conn.sock, server_side=True)
        conn.tls = conn.sock.version()
        conn.log("T", conn.tls.encode())

    def _chunk(self, conn, line, buffer):
        """BDAT n [LAST]: read the n octets, then reply (the last chunk:
        as the end of data).  False when the connection ended."""
        words = line.split()
        size = int(words[1])
        last = len(words) > 2 and words[2].upper() == b"LAST"
        while len(buffer) < size:
            if not self._receive(conn, buffer):
                return False
        conn.log("B", bytes(buffer[:size]))
        del buffer[:size]
        if not last:
            return self._reply(conn, "bdat") is not None
        for _ in range(max(conn.recipients, 1) if self.lmtp else 1):
            if self._reply(conn, "dot") is None:
                return False
        conn.recipients = 0
        return True

    def _receive(self, conn, buffer):
        data = conn.sock.recv(65536)
        if not data:
            conn.end = conn.end or "eof"
            return False
        conn.raw += data
        buffer += data
        return True


# ------------------------------------------------------- running the tools

OURS = "ours"
POSTFIX = "postfix"


class Result:
    """One run of a tool: exit status, output, and what the server saw."""

    def __init__(self, proc, stdout, stderr, elapsed, connections, started=None):
        self.pid = proc.pid
        self.started = started     # time.monotonic() just before it was started
        self.rc = proc.returncode
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.connections = connections

    def __repr__(self):
        return "Result(rc=%r, stdout=%r, stderr=%r, %d connections)" % (
            self.rc, self.stdout, self.stderr, len(self.connections))


def command(tool, args):
    """argv for a tool; both print "smtp-source: ..." in diagnostics."""
    if tool == POSTFIX:
        return ["smtp-source"] + list(args), support.POSTFIX_SOURCE
    return support.tool_cmd(support.SOURCE, *args), None


def run_tool(tool, args, server=None, timeout=support.TIMEOUT, cwd=None):
    """Run a tool to completion (argument "TARGET" is the server's
    endpoint); returns a Result once the server has settled."""
    if server is not None:
        args = [server.target if a == "TARGET" else a for a in args]
    argv, executable = command(tool, args)
    started = time.monotonic()
    proc = subprocess.Popen(argv, executable=executable, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=cwd)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:         # timed out: stop it (by its PID) first
            proc.kill()
            proc.communicate()
    elapsed = time.monotonic() - started
    connections = server.settle() if server is not None else []
    return Result(proc, stdout, stderr, elapsed, connections, started)


def run_both(test, args, replies=None, family="inet", lmtp=False, cwd=None):
    """Run Postfix's tool and ours at the same time, each against its own
    fake server with the same script; returns (postfix, ours)."""
    def one(tool):
        server = FakeServer(replies, family, lmtp).start(test)
        return run_tool(tool, args, server, cwd=cwd)
    with futures.ThreadPoolExecutor(2) as pool:
        postfix = pool.submit(one, POSTFIX)
        ours = pool.submit(one, OURS)
        return postfix.result(), ours.result()


def run_cases(test, cases):
    """run_both() for many cases at once (fatal errors make Postfix's tool
    sleep a second, so they go in parallel).  cases: {name: kwargs};
    returns {name: (postfix, ours)}."""
    with futures.ThreadPoolExecutor(min(16, len(cases))) as pool:
        jobs = {name: pool.submit(run_both, test, **kwargs)
                for name, kwargs in cases.items()}
        return {name: job.result() for name, job in jobs.items()}


# ------------------------------------------------------------ normalising

_DATE = re.compile(rb"^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), [ 1-3][0-9] "
                   rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
                   rb"[0-2][0-9]:[0-5][0-9]:[0-6][0-9] [-+][0-9]{4} \([^)\r\n]*\)\r$", re.M)
_MESSAGE_ID = re.compile(rb"^(Message-Id: <)([0-9a-f]{4,8})\.([0-9a-f]{4,8})\."
                         rb"([0-9a-f]{4,8})@", re.M)


def normalise(data, keep_fd=True):
    """Message bytes with what differs between runs replaced: the Date
    value, the process id (and, unless keep_fd, the descriptor and count)
    of the Message-Id.  Dates must have Postfix's format to be replaced."""
    data = _DATE.sub(b"Date: <date>\r", data)
    if keep_fd:
        return _MESSAGE_ID.sub(rb"\1<pid>.\3.\4@", data)
    return _MESSAGE_ID.sub(rb"\1<pid>.<fd>.<count>@", data)


_SEGMENT = re.compile(rb"(TCP_MAXSEG |stream buffer size old=0 new=)[0-9]+")


def normalise_stderr(data):
    """-v output with the TCP segment size (which the kernel picks per
    connection, 32741 or 32768 on loopback here) and the buffer size made
    from it replaced."""
    return _SEGMENT.sub(rb"\1<n>", data)


def conversation(conn, keep_fd=True):
    """A connection as a comparable value: normalised events and its end."""
    return ([(kind, normalise(data, keep_fd)) for kind, data in conn.events], conn.end)


def conversations(result, keep_fd=True, ordered=True):
    """All connections of a run; sorted unless ordered (parallel sessions)."""
    convs = [conversation(conn, keep_fd) for conn in result.connections]
    return convs if ordered else sorted(convs, key=repr)


def temp_file(test, content, name="message"):
    """Write content (bytes) to a file in a fresh temp dir; returns its path."""
    directory = tempfile.mkdtemp(prefix="smtpsrc-")
    test.addCleanup(shutil.rmtree, directory, True)
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.write(content)
    return path
