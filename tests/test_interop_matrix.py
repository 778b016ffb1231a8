"""Both smtp-sources against both smtp-sinks, and a volume run.

The matrix: every pairing of {Postfix's smtp-source, smtp_source.py} x
{Postfix's smtp-sink, smtp_sink.py}, over IPv4, IPv6 ([::1]) and a UNIX
socket, in SMTP and in LMTP: 24 tests, named
test_<source>_source_to_<sink>_sink_<transport>_<protocol>.

Each test starts one sink (-c, -n, a capture file per message) and runs
the four loads of MODES against it at once: plain (a connection per
message), reuse (-d), rcpts (-r 20) and large (-l 100000 -d), each with its
own HELO name (-M) so that its messages can be told apart in the capture
files.  Both sides must agree: each source's -c count and exit status 0;
the sink's final "sess= quit= mesg=" counters and its exit status 0 (with
-n it stops by itself once every session has said QUIT); and the capture
files, one per message, checked field by field (client address form per
transport, protocol, HELO, sender, every recipient, Received:, the
generated headers and the exact body).
"""

import collections
import os
import re
import unittest
from concurrent import futures

from tests import interop, support
from tests.interop import LA_DE_DA, MODES, Peer, helo_name, sink_cmd, source_cmd


class MatrixCase(unittest.TestCase):
    """Test methods are added to the two classes below, one per source,
    sink, transport and protocol."""

    def run_pairing(self, source, sink, transport, protocol):
        interop.need(source)
        interop.need(sink)
        directory = support.temp_dir(self)
        where = interop.endpoint(self, transport, directory)
        lmtp = ["-L"] if protocol == "lmtp" else []
        sessions = sum(mode.sessions for mode in MODES)
        messages = sum(mode.messages for mode in MODES)
        dumps = os.path.join(directory, "dumps")
        peer = Peer(self, sink_cmd(sink) + lmtp + ["-c", "-n", str(sessions),
                                                "-d", dumps + "/f.", where.text, "64"], where)

        # 1. The four loads at once; each source must count all its messages.
        with futures.ThreadPoolExecutor(len(MODES)) as pool:
            jobs = {mode.name: pool.submit(support.run, source_cmd(source) + lmtp + [
                "-c", "-M", helo_name(mode), "-m", str(mode.messages)] + mode.flags
                + [where.text]) for mode in MODES}
            results = {name: job.result() for name, job in jobs.items()}
        for mode in MODES:
            result = results[mode.name]
            self.assertEqual((result.returncode, result.stderr, result.stdout),
                             (0, b"", interop.counter_lines(mode.messages)),
                             "%s source, %s" % (source, mode.name))

        # 2. The sink saw every session QUIT and every message, and stopped.
        rc, out, err = peer.wait_exit()
        self.assertEqual((rc, err), (0, b""))
        counters = interop.sink_counters(out)
        self.assertEqual(counters[-1], b"sess=%d quit=%d mesg=%d" % (sessions, sessions, messages))
        self.assertEqual(len(counters), sessions + messages, out)

        # 3. Every message is in its own capture file, field by field.
        captured = interop.records(dumps)
        by_helo = collections.defaultdict(list)
        for record in captured:
            by_helo[record.helo].append(record)
        self.assertEqual({helo: len(group) for helo, group in by_helo.items()},
                         {helo_name(mode).encode(): mode.messages for mode in MODES})
        for mode in MODES:
            with self.subTest(mode=mode.name):
                for record in by_helo[helo_name(mode).encode()]:
                    self.check_record(record, mode, transport, protocol)

    def check_record(self, record, mode, transport, protocol):
        helo = helo_name(mode).encode()
        proto = b"LMTP" if protocol == "lmtp" else b"SMTP"
        addr = interop.CLIENT_ADDR[transport]
        self.assertEqual(
            (record.addr, record.proto, record.mail, record.rcpts, record.received_from,
             record.received_addr, record.by, record.received_with, record.id, record.body),
            (addr, proto, b"<foo@%s>" % helo, interop.source_recipients(mode.recipients, helo),
             helo, addr, b"smtp-sink", proto, record.path[-8:].encode(), mode.body),
            record.path)
        self.assertRegex(record.received_date, b"^%s$" % interop.DATE)
        self.assertRegex(record.headers, rb"\AFrom: <foo@%s>\nTo: <foo@%s>\nDate: %s\n"
                         rb"Message-Id: <[0-9a-f]{4,}\.[0-9a-f]{4,}\.[0-9a-f]{4,}@%s>\Z"
                         % (re.escape(helo), re.escape(helo), interop.DATE, re.escape(helo)))


def _pairing_test(source, sink, transport, protocol):
    def test(self):
        self.run_pairing(source, sink, transport, protocol)
    test.__doc__ = "%s smtp-source -> %s smtp-sink, %s, %s" % (source, sink, transport,
                                                                protocol.upper())
    return test


class MatrixTest(support.BothEngines, MatrixCase):
    """The pairings with a tool of ours (under each engine)."""


class PostfixMatrixTest(MatrixCase):
    """Postfix's tools with each other: what the checks themselves expect."""


for _source in interop.IMPLEMENTATIONS:
    for _sink in interop.IMPLEMENTATIONS:
        for _transport in interop.TRANSPORTS:
            for _protocol in interop.PROTOCOLS:
                setattr(MatrixTest if "ours" in (_source, _sink) else PostfixMatrixTest,
                        "test_%s_source_to_%s_sink_%s_%s" % (_source, _sink, _transport,
                                                            _protocol),
                        _pairing_test(_source, _sink, _transport, _protocol))


class VolumeTest(support.BothEngines, unittest.TestCase):
    """2000 messages x 3 recipients over 10 sessions, our source to our
    sink: every message accounted for."""

    RECIPIENTS = interop.source_recipients(3, b"volume.example")

    def run_volume(self, source_flags, sink_flags, sessions):
        directory = support.temp_dir(self)
        where = interop.endpoint(self, "ipv4")
        peer = Peer(self, sink_cmd("ours") + ["-c", "-n", str(sessions)] + sink_flags
                    + [where.text, "256"], where)
        result = support.run(source_cmd("ours") + ["-c", "-s", "10", "-m", "2000", "-r", "3",
                                                "-M", "volume.example"] + source_flags
                             + [where.text], timeout=120)
        self.assertEqual((result.returncode, result.stderr, result.stdout),
                         (0, b"", interop.counter_lines(2000)))
        rc, out, err = peer.wait_exit(timeout=60)
        self.assertEqual((rc, err), (0, b""))
        self.assertEqual(interop.sink_counters(out)[-1],
                         b"sess=%d quit=%d mesg=2000" % (sessions, sessions))
        return directory

    def test_reuse_with_capture(self):
        """-d: 10 connections; all 2000 records in one -D file, 6000 recipients."""
        directory = support.temp_dir(self)
        capture = os.path.join(directory, "all.mbox")
        self.run_volume(["-d"], ["-D", capture], 10)
        captured = interop.records(capture)
        self.assertEqual(len(captured), 2000)
        self.assertEqual(sum(len(record.rcpts) for record in captured), 6000)
        for record in captured:
            self.assertEqual((record.rcpts, record.body), (self.RECIPIENTS, LA_DE_DA))

    def test_connection_per_message(self):
        """Without -d: 2000 connections, each counted by the sink."""
        self.run_volume([], [], 2000)


if __name__ == "__main__":
    unittest.main()
