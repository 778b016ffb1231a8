"""The sink under hostile input, over loopback: floods far past -m, 1 MB
command lines, random binary, idle clients, clients that reset or never
read, DATA cut off, a 20 MB message, 1000 sessions at once.

The sink is a subprocess (as root with -u nobody), so that its memory can
be read from /proc/PID/status.  After each attack it must still be alive,
serve a normal load exactly (HealthCheck), and its peak resident set size
(VmHWM) must have grown by no more than the test's budget.  The figures are
printed on stderr as "[figures] ..." lines.
"""

import hashlib
import os
import random
import re
import signal
import socket
import subprocess
import time
import unittest

from tests import load, sink_model, support

MB = 1024                           # kB
SLACK = 5.0                         # seconds of scheduling noise allowed
TOO_LONG = b"smtp-sink: warning: command line too long\n"
READ_TIMEOUT = b"smtp-sink: warning: read timeout\n"
WRITE_TIMEOUT = b"smtp-sink: warning: write timeout\n"
RECORD_HEAD = re.compile(rb"\A.*?\nReceived: [^\n]*\n\tby [^\n]*\n\t[^\n]*\n", re.S)


def files_under(top):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs)


class HostileCase(support.BothEngines, unittest.TestCase):

    maxDiff = None

    def start(self, *args, **kw):
        """A sink subprocess; remembers its resident size at rest."""
        self.sink = load.SinkProcess(self, list(args), **kw)
        self.rest = self.sink.rss()
        return self.sink

    def healthy(self, what, budget_mb, clients=20, messages=5):
        """The sink is alive, serves a normal load exactly, and its peak
        resident size grew by less than budget_mb; prints the figures."""
        sink = self.sink
        self.assertTrue(sink.alive(), "the sink died: %r" % sink.stderr()[-2000:])
        send, expect = load.session(messages)
        done = load.Clients(sink.address).run([load.Client([send]) for _ in range(clients)])
        for client in done:
            self.assertEqual(bytes(client.received), expect)
        self.assertTrue(sink.alive())
        peak, now = sink.peak(), sink.rss()
        load.report(what, rss_at_rest_kB=self.rest, peak_rss_kB=peak, rss_after_kB=now,
                    growth_kB=peak - self.rest)
        self.assertLess(peak - self.rest, budget_mb * MB,
                        "%s: peak RSS %d kB, %d kB at rest" % (what, peak, self.rest))
        self.assertNotIn(b"Traceback", sink.stderr())


class SigtermTest(HostileCase):
    """SIGTERM ends the sink however it comes.  Python runs a handler
    between two steps of the main thread; a SIGTERM that came just before
    that thread went to wait in its poller once waited with it, for a
    next client that never came (about one sink in 30 under the loop)."""

    ROUNDS = 40

    def test_sigterm_always_ends_the_sink(self):
        for round_ in range(self.ROUNDS):
            sink = load.SinkProcess(self, [])
            replies, _ = support.converse(sink.address, sink.family, [b"QUIT\r\n"])
            self.assertTrue(replies.endswith(b"221 Bye\r\n"), replies)
            sink.signal(signal.SIGTERM)
            try:
                status = sink.wait(support.TIMEOUT)
            except subprocess.TimeoutExpired:
                self.fail("round %d: SIGTERM did not end the sink" % round_)
            self.assertEqual((status, sink.stderr()), (-signal.SIGTERM, b""))


class FloodTest(HostileCase):

    def test_connection_flood_far_past_m(self):
        # -m 4 and 1000 clients connecting at once, each pipelining a whole
        # session before its greeting: all wait their turn, none is dropped.
        sink = self.start("-m", "4", "-c", backlog=2000)
        send, expect = load.session(1)
        started = time.monotonic()
        clients = load.Clients(sink.address).run([load.Client([send]) for _ in range(1000)],
                                                 timeout=60)
        elapsed = time.monotonic() - started
        self.assertEqual([c for c in clients if bytes(c.received) != expect], [])
        support.wait_until(lambda: sink.stdout().endswith(b"sess=1000 quit=1000 mesg=1000\r"),
                           what="every session counted")
        load.report("flood of 1000 at -m 4", seconds="%.2f" % elapsed)
        self.assertEqual(sink.stderr(), b"")
        self.healthy("flood of 1000 at -m 4", 16)

    def test_1000_concurrent_sessions(self):
        if not load.raise_fd_limit(4096):
            support.loud_skip("a descriptor limit of 4096 (ulimit -Hn)")
        sink = self.start("-m", "1000", "-c", backlog=2000)
        send, expect = load.session(2)
        at_gate = {}

        def all_greeted():
            # Every client has its greeting and none has sent anything: the
            # sink holds 1000 sessions open at once.
            at_gate["rss"] = sink.rss()
        clients = load.Clients(sink.address).run(
            [load.Client([send]) for _ in range(1000)], timeout=60,
            gate=load.GREETING, at_gate=all_greeted)
        self.assertIn("rss", at_gate)
        self.assertEqual([c for c in clients if bytes(c.received) != expect], [])
        support.wait_until(lambda: sink.stdout().endswith(b"sess=1000 quit=1000 mesg=2000\r"),
                           what="every session counted")
        load.report("1000 sessions open at once", rss_with_1000_open_kB=at_gate["rss"])
        self.assertLess(at_gate["rss"] - self.rest, 64 * MB)
        self.healthy("1000 concurrent sessions", 64)


class LongLineTest(HostileCase):
    """Over-long command lines: as Postfix, the connection is closed at
    byte 2049 of a line (CRLF included), without a reply, with one warning;
    the sink keeps at most a line's worth, whatever the client sends."""

    MEGABYTE = 1 << 20

    def conversations(self):
        mb = self.MEGABYTE
        return {
            "1 MB, one write": [b"NOOP " + b"x" * mb],
            "1 MB in 4 kB writes": [b"x" * 4096] * (mb // 4096),
            "1 MB of LF": [b"\n" * mb],
            "1 MB of CR": [b"\r" * mb],
            "1 MB of NUL": [b"\0" * mb],
            "after commands": [b"HELO h\r\nMAIL FROM:<a>\r\n", b"RCPT TO:<" + b"r" * mb],
            "in DATA, then a command": [load.TRANSACTION + b"x" * mb + b"\r\n.\r\n",
                                        b"NOOP " + b"y" * mb],
        }

    def expected(self, pieces):
        return bytes(sink_model.predict(b"".join(pieces)).replies)

    def test_megabyte_lines(self):
        sink = self.start()
        conversations = self.conversations()
        names = sorted(conversations)
        clients = load.Clients(sink.address).run(
            [load.Client(conversations[name]) for name in names])
        for name, client in zip(names, clients):
            with self.subTest(name):
                self.assertEqual(bytes(client.received), self.expected(conversations[name]))
        support.wait_until(lambda: sink.stderr().count(b"\n") >= len(names),
                           what="the warnings")
        self.assertEqual(sink.stderr(), TOO_LONG * len(names))
        self.healthy("1 MB command lines", 8)

    def test_postfix_agrees(self):
        support.need_postfix()
        conversations = self.conversations()
        names = sorted(conversations)
        theirs = load.SinkProcess(self, [], program=[support.POSTFIX_SINK])
        clients = load.Clients(theirs.address).run(
            [load.Client(conversations[name]) for name in names])
        for name, client in zip(names, clients):
            with self.subTest(name):
                self.assertEqual(bytes(client.received), self.expected(conversations[name]))
        support.wait_until(lambda: theirs.stderr().count(b"\n") >= len(names),
                           what="Postfix's warnings")

    def test_many_tiny_commands(self):
        # 1 MB of bare CRLFs: 524288 empty commands, each answered, in order.
        sink = self.start()
        [client] = load.Clients(sink.address).run([load.Client([b"\r\n" * (self.MEGABYTE // 2)])],
                                                  timeout=60)
        empty = sink_model.REPLIES["empty"]
        self.assertEqual(len(client.received), len(load.GREETING) + len(empty) * (self.MEGABYTE // 2))
        self.assertEqual(bytes(client.received), load.GREETING + empty * (self.MEGABYTE // 2))
        self.healthy("1 MB of empty commands", 16)


class BinaryTest(HostileCase):
    """Random bytes, dense in NUL, CR, LF and dots, as commands and as
    message data."""

    ALPHABET = b"\r\n\0. :\tAZaz\x80\xff"

    def noise(self, rng, size):
        dense = bytes(rng.choice(self.ALPHABET) for _ in range(size // 2))
        other = bytes(rng.getrandbits(8) for _ in range(size - size // 2))
        mixed = bytearray(dense + other)
        rng.shuffle(mixed)
        return bytes(mixed)

    def test_random_binary_commands(self):
        sink = self.start()
        rng = random.Random(6)
        streams = [self.noise(rng, 65536) for _ in range(16)]
        pieces = []
        for stream in streams:
            cuts = sorted(rng.sample(range(1, len(stream)), 30))
            pieces.append([stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])])
        clients = load.Clients(sink.address).run([load.Client(p) for p in pieces])
        warnings = 0
        for stream, client in zip(streams, clients):
            expected = sink_model.predict(stream)
            # The whole stream was sent even after the sink hung up, so a
            # reset may cut what we read: it must be a prefix of the model's.
            self.assertTrue(bytes(expected.replies).startswith(bytes(client.received)),
                            (bytes(client.received[-200:]), bytes(expected.replies[-200:])))
            self.assertTrue(client.received.startswith(load.GREETING))
            warnings += expected.closed_by_server and not expected.replies.endswith(b"221 Bye\r\n")
        support.wait_until(lambda: sink.stderr().count(b"\n") >= warnings, what="warnings")
        self.assertEqual(sink.stderr(), TOO_LONG * warnings)
        self.healthy("random binary commands", 8)

    def test_random_binary_message_data(self):
        top = support.temp_dir(self)
        sink = self.start("-d", top + "/m.")
        rng = random.Random(7)
        streams = []
        for _ in range(8):
            body = self.noise(rng, 200000).replace(b"\r\n.\r\n", b"\r\n..\r\n")
            streams.append(load.TRANSACTION + body + b"\r\n.\r\n" + load.QUIT)
        clients = load.Clients(sink.address).run(
            [load.Client([s[i:i + 7000] for i in range(0, len(s), 7000)]) for s in streams])
        wanted = []
        for stream, client in zip(streams, clients):
            expected = sink_model.predict(stream)
            self.assertEqual(bytes(client.received), bytes(expected.replies))
            wanted += expected.records
        found = []
        for path in files_under(top):
            with open(path, "rb") as f:
                found.append(re.sub(rb" id [0-9a-f]{8};\n\t[^\n]*\n", b" id <ID>;\n\t<DATE>\n",
                                    f.read(), count=1))
        self.assertEqual(sorted(found), sorted(wanted))
        self.assertEqual(sink.stderr(), b"")
        self.healthy("random binary message data", 16)


class IdleTest(HostileCase):

    def test_idle_clients_are_dropped_on_time(self):
        # -t 1: 100 silent clients in every state; each is closed, without
        # a reply, about a second after its last byte; a half-received
        # message leaves no capture file.
        top = support.temp_dir(self)
        sink = self.start("-t", "1", "-c", "-d", top + "/i.")
        states = {
            b"": load.GREETING,
            b"NOO": load.GREETING,
            b"HELO h\r\nMAIL FROM:<a>\r\n": load.GREETING + b"250 smtp-sink\r\n250 2.1.0 Ok\r\n",
            load.TRANSACTION + b"half a message\r\n": load.GREETING + load.TRANSACTION_REPLIES,
            load.TRANSACTION + b"x\r\n.": load.GREETING + load.TRANSACTION_REPLIES,
        }
        scripts = list(states.items()) * 20
        clients = load.Clients(sink.address).run(
            [load.Client([send], end="hold") for send, _ in scripts], timeout=1 + 3 * SLACK)
        for (send, expect), client in zip(scripts, clients):
            self.assertEqual((bytes(client.received), client.outcome), (expect, "eof"))
            self.assertGreaterEqual(client.closed_at - client.sent_at, 0.95)
            self.assertLess(client.closed_at - client.sent_at, 1 + SLACK)
        support.wait_until(lambda: sink.stderr().count(b"\n") >= 100, what="the warnings")
        self.assertEqual(sink.stderr(), READ_TIMEOUT * 100)
        self.assertEqual(files_under(top), [])
        support.wait_until(lambda: sink.stdout().endswith(b"sess=100 quit=0 mesg=0\r"),
                           what="the sessions counted")
        self.healthy("100 idle clients", 8)

    def test_clients_that_never_read(self):
        # 100 clients pipeline EHLO after EHLO (a 25-fold longer reply
        # each) and never read.  The sink must keep its memory bounded and
        # drop each after -t seconds: "write timeout" when its replies no
        # longer fit in the socket buffers, "read timeout" when they all
        # did (the client's burst was short).
        sink = self.start("-t", "1")
        socks = []
        for _ in range(100):
            sock = socket.create_connection(sink.address, timeout=support.TIMEOUT)
            self.addCleanup(sock.close)
            sock.setblocking(False)
            socks.append(sock)
        flood = b"EHLO x\r\n" * 100000
        for sock in socks:
            try:
                sock.send(flood)
            except BlockingIOError:
                pass
        support.wait_until(lambda: sink.stderr().count(b"\n") >= 100,
                           timeout=60, what="100 timeouts")
        err = sink.stderr()
        self.assertEqual(err.count(WRITE_TIMEOUT) + err.count(READ_TIMEOUT), 100, err)
        self.assertGreater(err.count(WRITE_TIMEOUT), 0)
        for sock in socks:
            sock.close()
        # Bounded: a stalled client may cost the sink its socket buffers
        # and one read's worth of replies, not megabytes.
        self.healthy("100 clients that never read", 50)


class ResetTest(HostileCase):

    def test_clients_that_reset(self):
        # With -m 2 most of them are reset while still in the listen queue.
        top = support.temp_dir(self)
        sink = self.start("-m", "2", "-d", top + "/r.", backlog=1000)
        scripts = ([[]] * 300 + [[b"HELO h\r\nMAIL FR"]] * 50
                   + [[load.TRANSACTION + b"part of a message\r\n"]] * 50
                   + [[load.TRANSACTION + b"x" * 300000]] * 20)
        load.Clients(sink.address).run([load.Client(s, end="reset") for s in scripts])
        # Let the sink get through its queue, then check that it is quiet.
        self.healthy("420 clients that reset", 16)
        self.assertEqual(sink.stderr(), b"")
        self.assertEqual(len(files_under(top)), 20 * 5)        # the health check's messages


class CutOffTest(HostileCase):
    """DATA that never ends: the client half-closes or resets mid-message."""

    def run_cut(self, options, end):
        """Seven clients cut off at different points of a message (FIN:
        half-close, reset: RST); with FIN, one sends a whole message first.
        Returns the dump directory."""
        top = support.temp_dir(self)
        sink = self.start("-c", *[a.replace("{dir}", top) for a in options])
        body = b"".join(b"line %d\r\n" % i for i in range(50000))
        scripts = [[load.TRANSACTION, body[:size]] for size in (0, 1, 1000, 65536, len(body))]
        scripts.append([load.TRANSACTION, body, b"\r\n."])          # one byte short
        if end == "shutdown":
            scripts.append([load.TRANSACTION + b"x\r\n.\r\n" + load.TRANSACTION, body])
        clients = load.Clients(sink.address).run([load.Client(s, end=end) for s in scripts])
        whole = 1 if end == "shutdown" else 0
        if end == "shutdown":
            for client in clients[:-1]:
                self.assertEqual(bytes(client.received), load.GREETING + load.TRANSACTION_REPLIES)
            self.assertEqual(bytes(clients[-1].received), load.GREETING + load.TRANSACTION_REPLIES
                             + load.MESSAGE_REPLY + load.TRANSACTION_REPLIES)
        counters = b"sess=%d quit=0 mesg=%d\r" % (len(scripts), whole)
        support.wait_until(lambda: sink.stdout().endswith(counters), what="the sessions counted")
        self.assertEqual(sink.stderr(), b"")
        self.healthy("DATA cut off (%s, %s)" % (options[0], end), 8)
        return top, whole

    def test_d(self):
        for end in ("shutdown", "reset"):
            with self.subTest(end=end):
                top, whole = self.run_cut(["-d", "{dir}/m."], end)
                self.assertEqual(len(files_under(top)), whole + 5 * 20)   # + the health check

    def test_D(self):
        for end in ("shutdown", "reset"):
            with self.subTest(end=end):
                top, whole = self.run_cut(["-D", "{dir}/all", "-S", "From x\\n"], end)
                with open(os.path.join(top, "all"), "rb") as f:
                    content = f.read()
                records = content.split(b"From x\n")[1:]
                self.assertEqual(len(records), whole + 5 * 20)
                for record in records:
                    self.assertTrue(record.endswith(b"\nline one\n.dotted\n\n")
                                    or record.endswith(b"\nx\n\n"), record)
                self.assertEqual(files_under(top), [os.path.join(top, "all")])


class BigMessageTest(HostileCase):
    """A 20 MB message is stored whole, streamed to disk."""

    SIZE = 20 * (1 << 20)

    def body(self):
        rng = random.Random(20)
        lines = []
        total = 0
        while total < self.SIZE:
            kind = rng.random()
            if kind < 0.05:
                line = b"." * rng.randint(1, 3) + b"dotted"
            elif kind < 0.08:
                line = b"z" * rng.randint(5000, 70000)          # long lines are fine in DATA
            else:
                line = b"%08d " % total + b"m" * rng.randint(0, 120)
            lines.append(line + b"\r\n")
            total += len(line) + 2
        return b"".join(lines)

    def stored_form(self, body):
        # CRLF -> LF, a leading dot dropped (the body has no bare CR or LF).
        return b"".join((line[1:] if line.startswith(b".") else line) + b"\n"
                        for line in body.split(b"\r\n")[:-1])

    def send_big(self, sink, body):
        pieces = [load.TRANSACTION] + [body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)]
        [client] = load.Clients(sink.address).run([load.Client(pieces + [b".\r\n", load.QUIT])],
                                                  timeout=120)
        self.assertEqual(bytes(client.received), load.GREETING + load.TRANSACTION_REPLIES
                         + load.MESSAGE_REPLY + load.BYE)

    def check_record(self, record, body):
        head = RECORD_HEAD.match(record)
        self.assertIsNotNone(head)
        stored = record[head.end():]
        wanted = self.stored_form(body) + b"\n"
        self.assertEqual(len(stored), len(wanted))
        self.assertEqual(hashlib.sha256(stored).hexdigest(), hashlib.sha256(wanted).hexdigest())

    def test_20MB_into_d(self):
        top = support.temp_dir(self)
        sink = self.start("-d", top + "/big.")
        body = self.body()
        self.send_big(sink, body)
        [path] = files_under(top)
        with open(path, "rb") as f:
            self.check_record(f.read(), body)
        self.assertEqual(sink.stderr(), b"")
        self.healthy("20 MB message into -d", 16)

    def test_20MB_into_D(self):
        top = support.temp_dir(self)
        sink = self.start("-D", top + "/all")
        body = self.body()
        self.send_big(sink, body)
        self.assertEqual(files_under(top), [top + "/all"])      # no spill file left
        with open(top + "/all", "rb") as f:
            self.check_record(f.read(), body)
        self.healthy("20 MB message into -D", 16)


if __name__ == "__main__":
    unittest.main()
