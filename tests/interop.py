"""Helpers for the interoperability tests (tests/test_interop_*.py).

  Peer         a server process (a sink, ours or Postfix's, or aiosmtpd)
               whose stdout and stderr are read while it runs, stopped by
               its PID in cleanup
  Endpoint     where a server listens, for each transport: IPv4, IPv6, UNIX
  records()    capture records (-d files or one -D file) taken apart
  LA_DE_DA, length_body()
               the bodies smtp-source sends, as a capture record shows them
  MODES        the loads (plain, -d, -r, -l) each pairing runs
  source_cmd, sink_cmd
               the commands of Postfix's tools and ours

Not a test module itself (the name does not start with "test").
"""

import collections
import glob
import os
import re
import socket
import subprocess
import sys
import threading

from tests import support

TRANSPORTS = ("ipv4", "ipv6", "unix")

# What "X-Client-Addr:" says for a client of each transport (Postfix's form).
CLIENT_ADDR = {"ipv4": b"127.0.0.1", "ipv6": b"ipv6:::1", "unix": b"local"}

DATE = rb"[A-Z][a-z][a-z], [ 123]\d [A-Z][a-z][a-z] \d{4} \d\d:\d\d:\d\d [-+]\d{4} \([^)]*\)"


class Endpoint(collections.namedtuple("Endpoint", "transport text address family")):
    """text is the command-line form ("127.0.0.1:PORT", "[::1]:PORT",
    "unix:PATH"); address/family are what support.listening() takes."""


def endpoint(test, transport, directory=None):
    """A fresh endpoint: a free port, or a socket in a world-writable
    temporary directory (sinks run as nobody when root)."""
    if transport == "ipv4":
        port = support.free_port()
        return Endpoint(transport, "127.0.0.1:%d" % port, ("127.0.0.1", port), socket.AF_INET)
    if transport == "ipv6":
        port = support.free_port(socket.AF_INET6)
        return Endpoint(transport, "[::1]:%d" % port, ("::1", port), socket.AF_INET6)
    path = os.path.join(directory or support.temp_dir(test), "peer.sock")
    return Endpoint(transport, "unix:" + path, path, socket.AF_UNIX)


class Peer:
    """A server process listening on a known endpoint.

    Its output is collected by two reader threads, so that a test can wait
    for a line (wait_output) and then read everything after the process
    ended (stop, or wait_exit when it stops by itself).  Readiness is seen
    in /proc/net, without a probe connection that would count as a session.
    """

    def __init__(self, test, cmd, where):
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        test.addCleanup(self.stop)
        self.output = {"out": bytearray(), "err": bytearray()}
        self.changed = threading.Condition()
        self.readers = [threading.Thread(target=self._read, args=(stream, self.output[name]),
                                         name="peer-%s" % name)
                        for name, stream in (("out", self.proc.stdout),
                                             ("err", self.proc.stderr))]
        for reader in self.readers:
            reader.start()
        support.wait_until(lambda: self.proc.poll() is not None
                           or support.listening(where.address, where.family),
                           what="%s to listen on %s" % (cmd[0], where.text))
        if self.proc.poll() is not None:
            rc, out, err = self.stop()
            raise AssertionError("%r exited %s at start: %r" % (cmd, rc, err))

    def _read(self, stream, buffer):
        for chunk in iter(lambda: stream.read1(65536), b""):
            with self.changed:
                buffer.extend(chunk)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def stdout(self):
        with self.changed:
            return bytes(self.output["out"])

    def wait_output(self, predicate, what, timeout=support.TIMEOUT):
        """Wait until predicate(stdout so far) is true; returns stdout."""
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(bytes(self.output["out"]))
                                         or self.proc.poll() is not None, timeout) \
                    or not predicate(bytes(self.output["out"])):
                raise AssertionError("no %s from %s; stdout %r, stderr %r" % (
                    what, self.cmd[0], bytes(self.output["out"][-300:]),
                    bytes(self.output["err"][-300:])))
            return bytes(self.output["out"])

    def wait_exit(self, timeout=support.TIMEOUT):
        """Wait until it stops by itself (-n, -M); returns (rc, out, err)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc, out, err = self.stop()
            raise AssertionError("%s did not stop by itself; stdout %r, stderr %r"
                                 % (self.cmd[0], out[-300:], err[-300:]))
        return self.stop()

    def stop(self):
        """Terminate it (by PID) if still running; returns (rc, out, err)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(support.TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(support.TIMEOUT)
        for reader in self.readers:
            reader.join(support.TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        return self.proc.returncode, bytes(self.output["out"]), bytes(self.output["err"])


# ---------------------------------------------------------------- capture records

RECORD = re.compile(
    rb"X-Client-Addr: (?P<addr>.*)\n"
    rb"X-Client-Proto: (?P<proto>.*)\n"
    rb"(?:X-Helo-Args: (?P<helo>.*)\n)?"
    rb"X-Mail-Args: (?P<mail>.*)\n"
    rb"(?P<rcpts>(?:X-Rcpt-Args: .*\n)*)"
    rb"Received: from (?P<received_from>.*) \(\[(?P<received_addr>.*)\]\)\n"
    rb"\tby (?P<by>.*) \(smtp-sink\) with (?P<received_with>\S+) id (?P<id>[0-9a-f]{8});\n"
    rb"\t(?P<received_date>.*)\n"
    rb"(?P<message>(?s:.*))\n\Z")


class Record(dict):
    """One capture record: the fields of RECORD as bytes, rcpts as a list,
    headers/body split at the message's first empty line, and path."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)


def parse_record(data, path=None):
    match = RECORD.match(data)
    if match is None:
        raise AssertionError("not a capture record (%s): %r" % (path, data[:500]))
    record = Record(match.groupdict(), path=path)
    record["rcpts"] = [line[len(b"X-Rcpt-Args: "):]
                       for line in record["rcpts"].splitlines()]
    headers, _, record["body"] = record["message"].partition(b"\n\n")
    record["headers"] = headers
    return record


def records(where):
    """The records in a -d directory (files f.*, in name order) or in one
    -D file."""
    if os.path.isdir(where):
        result = []
        for path in sorted(glob.glob(os.path.join(where, "f.*"))):
            with open(path, "rb") as handle:
                result.append(parse_record(handle.read(), path))
        return result
    with open(where, "rb") as handle:
        data = handle.read()
    return [parse_record(part, where)
            for part in re.split(rb"(?m)^(?=X-Client-Addr: )", data) if part]


def header(record, name):
    """The values of a header of a captured message (exact case)."""
    return re.findall(rb"(?m)^%s: (.*)$" % re.escape(name), record.headers)


# ---------------------------------------------------------------- what smtp-source sends

# smtp-source's default body, CRLF turned into LF by the capture.
LA_DE_DA = b"".join(b"La de da de da %d.\n" % n for n in range(1, 5))


def length_body(length):
    """The body of "smtp-source -l length" as captured: lines of 80 bytes
    counting the CRLF (a digit, line number mod 10, and 77 X), then the
    rest in X, whose CRLF does not count."""
    full = (length - 1) // 80
    lines = [b"%d" % (n % 10) + b"X" * 77 for n in range(1, full + 1)]
    lines.append(b"X" * (length - 80 * full))
    return b"\n".join(lines) + b"\n"


def source_recipients(count, domain):
    """smtp-source -r count without -N: NFOO@domain counting down, the last
    one without a number."""
    return [b"<%dfoo@%s>" % (n, domain) for n in range(count, 1, -1)] + [b"<foo@%s>" % domain]


# The loads every pairing runs: smtp-source options, the number of
# messages, the sessions they take, recipients per message and the body as
# captured.  Kept small: the 24 tests of the matrix take about 10 s on two
# cores.
Mode = collections.namedtuple("Mode", "name flags messages sessions recipients body")
MODES = (
    Mode("plain", ["-s", "2"], 20, 20, 1, LA_DE_DA),                 # a connection each
    Mode("reuse", ["-s", "3", "-d"], 30, 3, 1, LA_DE_DA),            # -d
    Mode("rcpts", ["-s", "2", "-r", "20"], 10, 10, 20, LA_DE_DA),    # -r
    Mode("large", ["-s", "2", "-d", "-l", "100000"], 6, 2, 1,        # -l
         length_body(100000)),
)
PROTOCOLS = ("smtp", "lmtp")


def helo_name(mode, tag=None):
    """The -M name of a load, by which its messages are told apart."""
    return "%s%s.example" % (tag + "-" if tag else "", mode.name)


def counter_lines(count):
    """smtp-source -c on stdout for count messages."""
    return b"".join(b"%d\r" % n for n in range(1, count + 1)) + b"\n"


def sink_counters(stdout):
    """The records of a sink's -c output (each "sess=N quit=N mesg=N")."""
    return stdout.split(b"\r")[:-1] if stdout.endswith(b"\r") else stdout.split(b"\r")


# The two implementations of each tool (sinks with -u nobody when root);
# ours under the running test's engine (support.both_engines).
IMPLEMENTATIONS = ("postfix", "ours")


def source_cmd(kind):
    return [support.POSTFIX_SOURCE] if kind == "postfix" else support.tool_cmd(support.SOURCE)


def sink_cmd(kind):
    return ([support.POSTFIX_SINK] if kind == "postfix" else support.tool_cmd(support.SINK)) \
        + support.PRIVS


def need(kind):
    """Skip loudly when Postfix's tools are needed and missing."""
    if kind == "postfix":
        support.need_postfix()
