"""Seeded random tests of the sink's command reader and DATA reader.

Thousands of generated client byte streams (commands in any case and
spacing, pipelined transactions, message data full of dots, CR, LF and NUL,
lines around the 2048-byte limit, raw binary noise), cut into random
pieces, are played against the sink, and what comes back is compared, byte
for byte, with an independent reference model (tests/sink_model.py): the
replies and their order, where the sink hangs up, the -D capture records,
and the warnings on stderr.  Three ways:

  CoreFuzzTest      each session's generator driven by hand over a
                    socketpair, one piece per read: exact piece boundaries
  SocketFuzzTest    the sink serving on loopback, many clients at once
  PostfixFuzzTest   a subset against Postfix's smtp-sink (when installed):
                    the model must describe Postfix too

The seed is fixed; a failure prints the seed, the case number and the
input, and saves the input to a file.  Environment:

  FUZZ_SEED=n         another seed (default 20261123)
  FUZZ_CASES=n        cases per mode and way (default 3000; "make fuzz" runs more)
  FUZZ_POSTFIX_CASES=n  of those, how many also go to Postfix (default: all)
  FUZZ_CASE=i         run only case i (to reproduce a failure)
"""

import io
import os
import random
import re
import socket
import sys
import tempfile
import time
import unittest

from tests import load, sink_model, support
from tests.support import InProcessSink

SEED = int(os.environ.get("FUZZ_SEED", "20261123"))
CASES = int(os.environ.get("FUZZ_CASES", "3000"))
POSTFIX_CASES = int(os.environ.get("FUZZ_POSTFIX_CASES", "3000"))
ONLY = os.environ.get("FUZZ_CASE")
BATCH = 50                          # connections at once over sockets
MARK = b"=====8<=====\n"            # -S: where each capture record starts
MARK_OPTION = "=====8<=====\\n"
TOO_LONG = b"smtp-sink: warning: command line too long\n"

# ---------------------------------------------------------------- generator

VERBS = [(b"HELO", 3), (b"EHLO", 3), (b"LHLO", 3), (b"MAIL", 6), (b"RCPT", 6),
         (b"DATA", 5), (b"RSET", 2), (b"NOOP", 2), (b"VRFY", 1), (b"AUTH", 1),
         (b"XCLIENT", 1), (b"XFORWARD", 1), (b"QUIT", 0.4), (b".", 2), (b"STARTTLS", 1),
         (b"CONNECT", 0.5), (b"..", 0.5), (b"", 1), (b"BDAT", 0.5)]
ARGS = [b"", b"", b"FROM:<a@example.com>", b"TO:<b@example.com>", b"FROM::<x> SIZE=10",
        b"<nocolon>", b"TO: <sp@x>", b"x\x00hidden", b"FROM:<\xc3\xa9>", b"from:<a>\tb",
        b":", b"::: spaced"]
NOISE = [b"\r", b"\n", b"\r\n", b"\0", b".", b" ", b"\t", b":", b"A", b"x", b"\xff", b"\x80",
         b"\r\n.\r\n", b"\r\n.", b".\r\n", b"MAIL ", b"DATA\r\n", b"RCPT TO:<r>\r\n"]
LINE_ENDS = [(b"\r\n", 30), (b"\n", 1), (b"\r\r\n", 1), (b"\r", 1), (b"", 0.5)]
DATA_LINES = [b"", b".", b"..", b".x", b"...z", b". ", b"text line", b"From x", b"a\rb",
              b"nul\x00nul", b"\xe9\xff", b"\n.\n", b".\r", b"x" * 300]


def weighted(rng, table):
    total = sum(weight for _, weight in table)
    pick = rng.random() * total
    for value, weight in table:
        pick -= weight
        if pick < 0:
            return value
    return table[-1][0]


def noise(rng, most):
    return b"".join(rng.choice(NOISE) if rng.random() < 0.6 else bytes([rng.randrange(256)])
                    for _ in range(rng.randint(1, most)))


def recase(rng, verb):
    how = rng.random()
    if how < 0.6:
        return verb
    if how < 0.8:
        return verb.lower()
    return bytes(c ^ 0x20 if 0x41 <= c <= 0x5a and rng.random() < 0.5 else c for c in verb)


def command_line(rng, verb=None):
    verb = recase(rng, verb if verb is not None else weighted(rng, VERBS))
    lead = rng.choice([b"", b"", b"", b"", b" ", b"\t", b" \t "])
    sep = rng.choice([b" ", b" ", b" ", b"\t", b"  "])
    args = rng.choice(ARGS) if rng.random() < 0.85 else noise(rng, 12)
    return lead + verb + (sep + args if args or rng.random() < 0.2 else b"") \
        + weighted(rng, LINE_ENDS)


def message_body(rng):
    lines = []
    for _ in range(rng.randint(0, 8)):
        line = rng.choice(DATA_LINES) if rng.random() < 0.8 else noise(rng, 30)
        lines.append(line + weighted(rng, LINE_ENDS))
    ending = rng.random()
    if ending < 0.85:
        lines.append(b".\r\n")                  # the end of data (after a CRLF)
    elif ending < 0.9:
        lines.append(b"\r\n.\r\n")
    elif ending < 0.95:
        lines.append(rng.choice([b"\n.\n", b".\r\r\n", b"\r\n.\n"]))   # not an end
    return b"".join(lines)


def transaction(rng):
    steps = []
    if rng.random() < 0.5:
        steps.append(command_line(rng, rng.choice([b"HELO", b"EHLO", b"LHLO"])))
    steps.append(command_line(rng, b"MAIL"))
    for _ in range(rng.randint(0, 3)):
        steps.append(command_line(rng, b"RCPT"))
    steps.append(command_line(rng, b"DATA"))
    steps.append(message_body(rng))
    return b"".join(steps)


def long_line(rng):
    """A command line near the 2048-byte limit (CRLF included), with or
    without its CRLF; or a long line inside message data."""
    total = rng.choice([2046, 2047, 2048, 2048, 2049, 2049, 2050, 2100])
    if rng.random() < 0.25:
        return command_line(rng, b"DATA") + b"y" * (total * 2) + b"\r\n.\r\n"
    body = b"NOOP " + b"x" * (total - 7)
    return body + rng.choice([b"\r\n", b"\r\n", b"\r", b"x\r\n"])


def generate(rng):
    """One client's bytes."""
    parts = []
    for _ in range(rng.randint(1, 10)):
        kind = rng.random()
        if kind < 0.45:
            parts.append(command_line(rng))
        elif kind < 0.75:
            parts.append(transaction(rng))
        elif kind < 0.83:
            parts.append(message_body(rng))
        elif kind < 0.95:
            parts.append(noise(rng, 200))
        else:
            parts.append(long_line(rng))
    return b"".join(parts).replace(MARK[:5], b"====")


def cut(rng, data):
    """Random piece boundaries: mostly a few large pieces, sometimes
    single bytes everywhere."""
    if len(data) <= 1:
        return [data] if data else []
    style = rng.random()
    if style < 0.1:
        return [data]
    if style < 0.25:
        return [data[i:i + 1] for i in range(len(data))]
    cuts = sorted(set(rng.randrange(1, len(data)) for _ in range(rng.randint(1, 12))))
    bounds = [0] + cuts + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


class Case:
    """One generated input and what the model says about it."""

    def __init__(self, seed, index, lmtp):
        rng = random.Random(seed * 1000003 + index * 2 + lmtp)
        self.seed, self.index, self.lmtp = seed, index, lmtp
        self.stream = generate(rng)
        self.expected = sink_model.predict(self.stream, lmtp=lmtp, start_string=MARK)
        consumed = self.expected.consumed
        self.sent = self.stream if consumed is None else self.stream[:consumed]
        self.pieces = cut(rng, self.sent)

    def describe(self, problem, got=None):
        """A failure message: seed, case, input (also saved to a file)."""
        fd, path = tempfile.mkstemp(prefix="fuzz-seed%d-case%d-" % (self.seed, self.index),
                                    suffix=".bin")
        with os.fdopen(fd, "wb") as saved:
            saved.write(self.stream)
        shown = self.stream if len(self.stream) <= 6000 else self.stream[:6000] + b"..."
        lines = ["%s" % problem,
                 "seed=%d case=%d lmtp=%s (rerun: FUZZ_SEED=%d FUZZ_CASE=%d)"
                 % (self.seed, self.index, self.lmtp, self.seed, self.index),
                 "input (%d bytes, sent %d, in %d pieces; saved in %s): %r"
                 % (len(self.stream), len(self.sent), len(self.pieces), path, shown),
                 "piece sizes: %r" % [len(p) for p in self.pieces][:80],
                 "expected replies: %r" % bytes(self.expected.replies)]
        if got is not None:
            lines.append("got:              %r" % got)
        return "\n".join(lines)


_made = {}


def cases(lmtp, count=CASES, seed=SEED):
    """The first `count` cases (made once per run, shared by the tests)."""
    if ONLY is not None:
        return [Case(seed, int(ONLY), lmtp)]
    made = _made.setdefault((seed, lmtp), [])
    while len(made) < count:
        made.append(Case(seed, len(made), lmtp))
    return made[:count]


def normalise_record(record):
    return re.sub(rb" id [0-9a-f]{8};\n\t[^\n]*\n", b" id <ID>;\n\t<DATE>\n", record, count=1)


def split_records(content):
    return [MARK + part for part in content.split(MARK)[1:]]


def warnings_expected(batch):
    return sum(1 for case in batch if case.expected.closed_by_server
               and not case.expected.replies.endswith(sink_model.REPLIES["bye"]))


# ------------------------------------------------------------------- tests

class FuzzCase(unittest.TestCase):

    maxDiff = None

    def check_records(self, batch, content, address=b"127.0.0.1"):
        """The -D records of a batch (in any order between connections)."""
        got = sorted(normalise_record(r) for r in split_records(content))
        wanted = sorted(r.replace(b"127.0.0.1", address) if address != b"127.0.0.1" else r
                        for case in batch for r in case.expected.records)
        if got == wanted:
            return
        # Find the case that went wrong, to show its input.
        got_set = set(got)
        for case in batch:
            for record in case.expected.records:
                if record.replace(b"127.0.0.1", address) not in got_set:
                    self.fail(case.describe("capture record missing or different: %r" % record))
        self.fail("records differ: %d found, %d expected; first of batch: %s"
                  % (len(got), len(wanted), batch[0].describe("")))

    def report(self, what, started, count):
        load.report(what, cases=count, seed=SEED, seconds="%.1f" % (time.monotonic() - started))


class CoreFuzzTest(FuzzCase):
    """Each session driven by hand: its generator (the run() of a sink
    session, as the event loop would drive it) gets one piece per read
    over a socketpair, so the piece boundaries are exactly the generated
    ones."""

    def harness(self, options):
        sys.path.insert(0, support.ROOT) if support.ROOT not in sys.path else None
        import smtp_sink
        from smtpcore import endpoints, engine, messages
        self.smtp_sink, self.engine = smtp_sink, engine
        self.err = io.BytesIO()
        msg = messages.Messages("smtp-sink", stream=self.err)
        settings = smtp_sink.parse_options(list(options) + ["127.0.0.1:0", "10"], msg)
        listener, _ = endpoints.listen(settings.endpoint, settings.backlog, msg,
                                       settings.family, settings.window)
        self.server = smtp_sink.new_server(settings, listener, msg)
        self.addCleanup(self.server.server_close)

    def play(self, case):
        """One session over a socketpair; returns (replies, ended by the server)."""
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            theirs.setblocking(False)
            number = self.server.session_begun()        # as an accept does
            session = self.smtp_sink.Session(self.server, ours, "")
            session.number = number
            replies = bytearray()

            def collect():
                while True:
                    try:
                        chunk = theirs.recv(65536)
                    except BlockingIOError:
                        return
                    if not chunk:
                        return
                    replies.extend(chunk)

            def resume(value):
                """Run the session to its next wait for input; False when it ended."""
                while True:
                    try:
                        wanted = session.steps.send(value)
                    except StopIteration:
                        return False
                    if wanted is self.engine.READABLE:
                        return True
                    if wanted is self.engine.WRITABLE:
                        collect()
                        value = True
                        continue
                    raise AssertionError(case.describe("unexpected wait %r" % (wanted,)))

            alive = resume(None)
            for piece in case.pieces:
                if not alive:
                    break
                theirs.sendall(piece)
                alive = resume(True)
                collect()
            if alive:
                theirs.shutdown(socket.SHUT_WR)
                alive = resume(True)
            collect()
            if alive:
                self.fail(case.describe("the session did not end after EOF"))
            return bytes(replies), alive

    def run_mode(self, lmtp):
        directory = support.temp_dir(self)
        path = os.path.join(directory, "all")
        self.harness((["-L"] if lmtp else []) + ["-D", path, "-S", MARK_OPTION])
        started = time.monotonic()
        batch = cases(lmtp)
        for case in batch:
            got, _ = self.play(case)
            if got != bytes(case.expected.replies):
                self.fail(case.describe("replies differ", got))
            if self.server.counts.active != 0:
                self.fail(case.describe("the session was not cleaned up"))
        content = b""
        if os.path.exists(path):
            with open(path, "rb") as f:
                content = f.read()
        self.check_records(batch, content, address=b"local")
        self.assertEqual(self.err.getvalue(), TOO_LONG * warnings_expected(batch))
        self.assertEqual(os.listdir(directory), ["all"] if content else [])
        self.report("core fuzz %s" % ("LMTP" if lmtp else "SMTP"), started, len(batch))

    def test_smtp(self):
        self.run_mode(False)

    def test_lmtp(self):
        self.run_mode(True)


class SocketFuzzTest(support.BothEngines, FuzzCase):
    """The sink serving on loopback, BATCH connections at once, each
    sending its pieces as separate writes and then half-closing."""

    def run_mode(self, lmtp):
        directory = support.temp_dir(self)
        path = os.path.join(directory, "all")
        sink = InProcessSink(self, (["-L"] if lmtp else []) + ["-D", path, "-S", MARK_OPTION],
                             backlog="256")
        started = time.monotonic()
        all_cases = cases(lmtp)
        offset = 0
        for first in range(0, len(all_cases), BATCH):
            batch = all_cases[first:first + BATCH]
            clients = [load.Client(case.pieces) for case in batch]
            load.Clients(sink.address, sink.family).run(clients)
            for case, client in zip(batch, clients):
                if bytes(client.received) != bytes(case.expected.replies):
                    self.fail(case.describe("replies differ (%s)" % client.outcome,
                                            bytes(client.received)))
            content = b""
            if os.path.exists(path):
                with open(path, "rb") as f:
                    content = f.read()
            self.check_records(batch, content[offset:])
            offset = len(content)
            self.assertTrue(sink.thread.is_alive(), "the sink stopped")
        self.assertEqual(sink.stderr(), TOO_LONG * warnings_expected(all_cases))
        self.report("socket fuzz %s" % ("LMTP" if lmtp else "SMTP"), started, len(all_cases))

    def test_smtp(self):
        self.run_mode(False)

    def test_lmtp(self):
        self.run_mode(True)


class PostfixFuzzTest(support.BothEngines, FuzzCase):
    """Differential: a subset of the cases against Postfix's smtp-sink,
    compared with the same model (and so with ours).  Postfix may hold
    back replies of a pipelined batch until more input comes; after the
    half-close everything must have come."""

    def setUp(self):
        support.need_postfix()

    def run_mode(self, lmtp):
        directory = support.temp_dir(self)
        path = os.path.join(directory, "all")
        # stderr goes to a file: Postfix blocks when a pipe of warnings fills.
        server = load.SinkProcess(self, (["-L"] if lmtp else [])
                                  + ["-D", path, "-S", MARK_OPTION], backlog=256,
                                  program=[support.POSTFIX_SINK])
        started = time.monotonic()
        subset = cases(lmtp, count=min(POSTFIX_CASES, CASES))
        offset = 0
        for first in range(0, len(subset), BATCH):
            batch = subset[first:first + BATCH]
            clients = [load.Client(case.pieces) for case in batch]
            load.Clients(server.address).run(clients)
            for case, client in zip(batch, clients):
                if bytes(client.received) != bytes(case.expected.replies):
                    self.fail(case.describe("Postfix's replies differ from the model (%s)"
                                            % client.outcome, bytes(client.received)))
            # Postfix finishes a session after closing it: wait for its records.
            wanted = sum(len(case.expected.records) for case in batch)
            support.wait_until(lambda: len(split_records(self.read(path)[offset:])) >= wanted,
                               what="Postfix's records")
            content = self.read(path)
            self.check_records(batch, content[offset:])
            offset = len(content)
        self.assertTrue(server.alive())
        err = server.stderr().replace(support.POSTFIX_SINK.encode() + b":", b"smtp-sink:")
        self.assertEqual(err, TOO_LONG * warnings_expected(subset))
        self.report("Postfix fuzz %s" % ("LMTP" if lmtp else "SMTP"), started, len(subset))

    @staticmethod
    def read(path):
        if not os.path.exists(path):
            return b""
        with open(path, "rb") as f:
            return f.read()

    def test_smtp(self):
        self.run_mode(False)

    def test_lmtp(self):
        self.run_mode(True)


class ModelSelfTest(unittest.TestCase):
    """The model against conversations recorded from Postfix (reference
    notes A3-A7), so that it cannot drift into agreeing with a bug."""

    def test_known_conversations(self):
        table = [
            (b"NOOP\r\n", sink_model.GREETING + sink_model.OK),
            (b"NOOP\n", sink_model.GREETING),                       # bare LF: no line end
            (b"NOOP\nNOOP x\r\r\n", sink_model.GREETING + sink_model.REPLIES["unknown"]),
            (b"NO\x00OP\r\n\x00\r\nNOOP \x00x\r\n", sink_model.GREETING
             + sink_model.REPLIES["unknown"] + sink_model.REPLIES["empty"] + sink_model.OK),
            (b"DATA\r\nMAIL\r\nRCPT\r\nDATA x\r\n.\r\n.\r\n", sink_model.GREETING
             + sink_model.REPLIES["need rcpt"] + sink_model.REPLIES["mail"]
             + sink_model.REPLIES["rcpt"] + sink_model.REPLIES["go ahead"]
             + sink_model.OK + sink_model.OK),
            (b"QUIT\r\nNOOP\r\n", sink_model.GREETING + sink_model.REPLIES["bye"]),
            (b"NOOP " + b"x" * 2041 + b"\r\n", sink_model.GREETING + sink_model.OK),
            (b"NOOP " + b"x" * 2042 + b"\r\n", sink_model.GREETING),
        ]
        for stream, replies in table:
            with self.subTest(stream=stream[:40]):
                self.assertEqual(bytes(sink_model.predict(stream).replies), replies)
        lmtp = sink_model.predict(b"LHLO x\r\nMAIL\r\nRCPT\r\nRCPT\r\nDATA\r\nx\r\n.\r\n.\r\n",
                                  lmtp=True)
        self.assertEqual(bytes(lmtp.replies), sink_model.GREETING + sink_model.EHLO_REPLY
                         + sink_model.REPLIES["mail"] + sink_model.REPLIES["rcpt"] * 2
                         + sink_model.REPLIES["go ahead"] + sink_model.REPLIES["lmtp ok"] * 2)
        record = sink_model.predict(b"HELO  h\r\nMAIL FROM::<a> X\r\nRCPT TO:<b>\r\nDATA\r\n"
                                    b"..a\r\nb\rc\nd\r\n.\r\n").records
        self.assertEqual(record, [b"X-Client-Addr: 127.0.0.1\nX-Client-Proto: SMTP\n"
                                  b"X-Helo-Args: h\nX-Mail-Args: <a> X\nX-Rcpt-Args: <b>\n"
                                  b"Received: from h ([127.0.0.1])\n\tby smtp-sink (smtp-sink) "
                                  b"with SMTP id <ID>;\n\t<DATE>\n.a\nbc\nd\n\n"])

    def test_generator_is_deterministic(self):
        first = Case(SEED, 7, False)
        again = Case(SEED, 7, False)
        self.assertEqual((first.stream, first.pieces), (again.stream, again.pieces))


if __name__ == "__main__":
    unittest.main()
