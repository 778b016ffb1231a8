"""smtp_source.py against a misbehaving server: silence, garbage replies,
multi-line replies dribbled a byte at a time, a server that hangs up in
the middle of a reply, and 421 at every stage.

Each case checks the exit status and stderr (a clear "fatal: ..." in
Postfix's words, never a traceback) and that the run ends in bounded time.
Where Postfix's smtp-source is installed, it runs every case too, against
its own fake server with the same script, and must do exactly the same
(commands sent, stderr, exit status).  test_source_errors.py has the plain
rejections and lost connections; this file adds the hostile variants.
"""

import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest
from concurrent import futures

from tests import support
from tests.fake_smtp import (OURS, POSTFIX, SILENCE, Close, FakeServer, conversation,
                             normalise_stderr, run_tool)

M = ["-M", "client.example"]
STAGES = ("greeting", "helo", "mail", "rcpt", "data", "dot")
# What "... while <stage>" says for each stage (Postfix's words).
WHILE = {"greeting": b"reading server greeting", "helo": b"sending HELO",
         "mail": b"sending sender", "rcpt": b"sending recipient",
         "data": b"sending DATA command", "dot": b"sending message"}
REJECTED = {"greeting": b"rejected at server banner", "helo": b"HELO rejected",
            "mail": b"sender rejected", "rcpt": b"recipient rejected",
            "data": b"data rejected", "dot": b"end of data rejected"}
GOOD = {"greeting": b"220", "helo": b"250", "mail": b"250", "rcpt": b"250",
        "data": b"354", "dot": b"250"}
SLACK = 5.0
FATAL = b"smtp-source: fatal: "

# Our tool with its read/write time limit cut from 300 s to 1 s (the module
# constant the tests patch; see TimeoutTests in test_source_main.py).
SHORT_TIMEOUT = ("import struct, sys; sys.path.insert(0, %r); import smtp_source; "
                 "smtp_source.IO_TIMEOUT = struct.pack('ll', 1, 0); "
                 "sys.argv[0] = 'smtp-source'; sys.exit(smtp_source.main(sys.argv[1:]))"
                 % support.ROOT)

_warned = []


def have_postfix():
    if os.access(support.POSTFIX_SOURCE, os.X_OK):
        return True
    if not _warned:
        _warned.append(True)
        sys.stderr.write("\n*** Postfix's smtp-source is not installed: the comparisons "
                         "with it do NOT run here (CI installs it) ***\n")
    return False


class Dribbling:
    """A server-side socket whose sendall() sends one byte at a time, each
    as its own TCP segment, so that every reply (and every line of a
    multi-line reply, and CR apart from LF) arrives split."""

    def __init__(self, sock):
        self._sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def sendall(self, data):
        pause = threading.Event()
        for i in range(len(data)):
            self._sock.sendall(data[i:i + 1])
            pause.wait(0.001)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def dribbled(reply):
    """A stage script: the reply, with the connection switched to
    byte-at-a-time sending (for this and all later replies)."""
    def script(conn, stage):
        if not isinstance(conn.sock, Dribbling):
            conn.sock = Dribbling(conn.sock)
        return reply
    return script


class MisbehavingCase(support.BothEngines, unittest.TestCase):

    maxDiff = None

    def run_ours(self, args, replies, lmtp=False):
        server = FakeServer(replies, lmtp=lmtp).start(self)
        return run_tool(OURS, list(args) + ["TARGET"], server)

    def run_both(self, args, replies, lmtp=False):
        """(ours, Postfix's or None), at the same time."""
        def one(tool):
            server = FakeServer(replies, lmtp=lmtp).start(self)
            return run_tool(tool, list(args) + ["TARGET"], server)
        with futures.ThreadPoolExecutor(2) as pool:
            ours = pool.submit(one, OURS)
            theirs = pool.submit(one, POSTFIX) if have_postfix() else None
            return ours.result(), theirs.result() if theirs else None

    def run_table(self, table, lmtp=False, same_conversations=True):
        """{name: (args, replies, rc, stderr)}: run every case (in
        parallel), check ours against the expectation (None: not checked
        beyond "no traceback, at most one fatal line, the last"), and
        Postfix against ours."""
        with futures.ThreadPoolExecutor(min(48, len(table))) as pool:      # Postfix sleeps 1 s on fatal
            jobs = {name: pool.submit(self.run_both, args, replies, lmtp)
                    for name, (args, replies, _, _) in table.items()}
            results = {name: job.result() for name, job in jobs.items()}
        for name, (ours, theirs) in sorted(results.items()):
            _, _, rc, stderr = table[name]
            with self.subTest(case=name):
                self.check_clean(ours)
                if rc is not None:
                    self.assertEqual(ours.rc, rc, ours)
                if stderr is not None:
                    self.assertEqual(ours.stderr, stderr)
                if theirs is not None:
                    self.assertEqual((normalise_stderr(ours.stderr), ours.rc),
                                     (normalise_stderr(theirs.stderr), theirs.rc), "vs Postfix")
                    if same_conversations:
                        self.assertEqual([conversation(c)[0] for c in ours.connections],
                                         [conversation(c)[0] for c in theirs.connections],
                                         "what the servers saw, vs Postfix")
        return results

    def check_clean(self, result):
        """No traceback; at most one fatal line, and it is the last."""
        self.assertNotIn(b"Traceback", result.stderr)
        lines = result.stderr.splitlines(True)
        fatal = [line for line in lines if line.startswith(FATAL)]
        self.assertLessEqual(len(fatal), 1, result.stderr)
        if fatal:
            self.assertEqual(lines[-1], fatal[0])
            self.assertEqual(result.rc, 1)
        self.assertLess(result.elapsed, support.TIMEOUT)


class SilenceTest(MisbehavingCase):
    """A server that stops talking."""

    def start_short(self, args, server):
        """Our tool, with 1 s read/write limits, as a subprocess."""
        argv = ([sys.executable, "-c", SHORT_TIMEOUT] + support.engine_args() + list(args)
                + [server.target])
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        self.addCleanup(self.reap, proc)
        return proc

    @staticmethod
    def reap(proc):
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

    def test_reply_begun_then_silence_times_out(self):
        # Once a reply has begun, a read may take at most the time limit:
        # "fatal: timeout while <stage>" (Postfix's words), exit 1.  Timed
        # by the server, from the partial reply to the end of the
        # connection (not from the start of a process, which a busy machine
        # may take seconds over).
        servers, procs = {}, {}
        for stage in STAGES:
            for partial in (b"-partial\r\n", b" no end of line", b""):
                reply = GOOD[stage] + partial if partial else GOOD[stage][:2]
                server = servers[stage, partial] = FakeServer({stage: reply}).start(self)
                procs[stage, partial] = self.start_short(M, server)
        for (stage, partial), proc in sorted(procs.items()):
            with self.subTest(stage=stage, partial=partial):
                out, err = proc.communicate(timeout=support.TIMEOUT)
                self.assertEqual((proc.returncode, err),
                                 (1, FATAL + b"timeout while " + WHILE[stage] + b"\n"))
                [conn] = servers[stage, partial].wait(1)
                partial_sent = [t for (kind, _), t in zip(conn.events, conn.times)
                                if kind == "S"][-1]
                elapsed = conn.ended_at - partial_sent
                self.assertGreaterEqual(elapsed, 0.9)
                self.assertLess(elapsed, 1 + SLACK)

    def test_silence_before_a_reply_is_waited_for_as_postfix_does(self):
        # Postfix's smtp-source waits for a reply to begin without a time
        # limit (an event without a timer); so do we, even with a 1 s read
        # limit.  When the server finally hangs up, the run ends at once.
        servers, procs = {}, {}
        for stage in STAGES:
            for tool in ("ours", "postfix") if have_postfix() else ("ours",):
                server = FakeServer({stage: SILENCE}).start(self)
                if tool == "ours":
                    proc = self.start_short(M, server)
                else:
                    proc = subprocess.Popen(["smtp-source"] + M + [server.target],
                                            executable=support.POSTFIX_SOURCE,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            stdin=subprocess.DEVNULL)
                    self.addCleanup(self.reap, proc)
                servers[stage, tool], procs[stage, tool] = server, proc
        for (stage, _), server in servers.items():      # each is waiting for its reply
            support.wait_until(lambda: any(c.count.get(stage) for c in server.connections),
                               what="a client at %s" % stage)
        threading.Event().wait(2.0)     # twice the read limit: nobody gives up
        for key, proc in procs.items():
            self.assertIsNone(proc.poll(), "%s gave up on a silent server" % (key,))
        for server in servers.values():
            server.stop()
        results = {}
        for key, proc in procs.items():
            out, err = proc.communicate(timeout=support.TIMEOUT)
            results[key] = (proc.returncode, err)
        for stage in STAGES:
            with self.subTest(stage=stage):
                self.assertEqual(results[stage, "ours"],
                                 (1, FATAL + b"lost connection while " + WHILE[stage] + b"\n"))
                if (stage, "postfix") in results:
                    self.assertEqual(results[stage, "postfix"], results[stage, "ours"])


class GarbageTest(MisbehavingCase):
    """Replies that are not SMTP."""

    def test_garbage_at_every_stage(self):
        garbage = {
            "nul": b"\x00\xff\xfe\r\n",
            "empty line": b"\r\n",
            "bare lf": b"\n",
            # A "-" after the digits means "more lines follow" (also to
            # Postfix): without the hang-up both would wait 300 s.
            "dash only": Close(b"-\r\n"),
            "letter in code": b"25O ok\r\n",
            "four digits": b"2500 ok\r\n",
            "two digits": b"25 ok\r\n",
            "code only": GOOD["mail"] + b"\r\n",
            "cr inside": b"250 a\rb\r\n",
            "dash then garbage": b"250-first\r\n\x01\x02\r\n",
            "crlf after code": b"550\r\n",
        }
        # Each kind at every stage would be 66 runs of each tool: the
        # first two kinds go everywhere, the others to two stages each.
        table = {}
        for number, (name, reply) in enumerate(sorted(garbage.items())):
            stages = STAGES if name in ("nul", "letter in code") else \
                [STAGES[number % 6], STAGES[(number + 3) % 6]]
            for stage in stages:
                if name == "code only":
                    reply = GOOD[stage] + b"\r\n"
                good = name == "code only" or (name == "cr inside" and stage != "data")
                table["%s: %s" % (stage, name)] = (M, {stage: reply}, 0 if good else 1, None)
        results = self.run_table(table)
        # The ones whose wording is certain:
        for stage in STAGES:
            ours, _ = results["%s: nul" % stage]
            self.assertEqual(ours.stderr, FATAL + REJECTED[stage] + b": 0 \n")
            ours, _ = results["%s: letter in code" % stage]
            self.assertEqual(ours.stderr, FATAL + REJECTED[stage] + b": 0 O ok\n")

    def test_seeded_random_replies(self):
        # Random bytes, then the server hangs up (a reply that ends in a
        # continuation line would otherwise be waited for): exit 1, one
        # fatal line, the same as Postfix's.
        rng = random.Random(1234)
        alphabet = b"\r\n\0 -0123456789Aa\t\xff"
        table = {}
        for index in range(24):
            size = rng.randint(1, 60)
            reply = bytes(rng.choice(alphabet) if rng.random() < 0.7 else rng.getrandbits(8)
                          for _ in range(size))
            stage = STAGES[index % len(STAGES)]
            table["%02d %s %r" % (index, stage, reply)] = (M, {stage: Close(reply)}, 1, None)
        for name, (ours, _) in self.run_table(table).items():
            self.assertTrue(ours.stderr.startswith(FATAL), (name, ours.stderr))

    def test_huge_replies(self):
        mb = 1 << 20
        table = {
            "1 MB line": (M, {"mail": b"550 " + b"x" * mb + b"\r\n"}, 1, None),
            "1 MB line then close": (M, {"mail": Close(b"250 " + b"x" * mb)}, 1,
                                     FATAL + b"lost connection while sending sender\n"),
            "100000 lines": (M, {"mail": b"250-x\r\n" * 100000 + b"250 ok\r\n"}, 0, b""),
            "100000 long lines": (M, {"helo": (b"250-" + b"y" * 500 + b"\r\n") * 20000
                                      + b"250 ok\r\n"}, 0, b""),
        }
        results = self.run_table(table)
        ours, _ = results["1 MB line"]
        # The text is cut, not kept whole.
        self.assertTrue(ours.stderr.startswith(FATAL + b"sender rejected: 550 xxxx"))
        self.assertLess(len(ours.stderr), 20000)


class SplitReplyTest(MisbehavingCase):
    """Every reply multi-line, and sent a byte at a time."""

    MULTI = {
        "greeting": b"220-first\r\n220-second line\r\n220 last\r\n",
        "helo": b"250-smtp.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 DSN\r\n",
        "mail": b"250-2.1.0 sender\r\n250 2.1.0 ok\r\n",
        "rcpt": b"250-2.1.5 rcpt\r\n250 2.1.5 ok\r\n",
        "data": b"354-go\r\n354 ahead\r\n",
        "dot": b"250-2.0.0 queued\r\n250 2.0.0 as X\r\n",
        "quit": b"221-bye\r\n221 bye\r\n",
    }

    def replies(self, **override):
        script = dict(self.MULTI, **override)
        script["greeting"] = dribbled(script["greeting"])
        return script

    def test_accepted(self):
        table = {
            "one message": (M, self.replies(), 0, b""),
            "-d -m 3 -r 2": (M + ["-d", "-m", "3", "-r", "2"], self.replies(), 0, b""),
            "-c -m 2": (M + ["-c", "-m", "2"], self.replies(), 0, b""),
            "bare LF ends": (M, self.replies(mail=b"250-a\n250-b\n250 c\n"), 0, b""),
        }
        results = self.run_table(table)
        for name, (ours, _) in results.items():
            self.assertEqual(ours.connections[0].commands()[-1], b"QUIT\r\n", name)

    def test_lmtp(self):
        table = {"-L -r 3": (M + ["-L", "-r", "3"],
                             self.replies(helo=b"250-lmtp.example\r\n250 PIPELINING\r\n"), 0, b"")}
        self.run_table(table, lmtp=True)

    def test_rejected(self):
        reject = b"550-5.1.1 first line\r\n550-5.1.1 second\r\n550 5.1.1 last\r\n"
        table = {}
        for stage in STAGES:
            table[stage] = (M, self.replies(**{stage: reject}), 1,
                            FATAL + REJECTED[stage] + b": 550 5.1.1 first line?5.1.1 second"
                            b"?5.1.1 last\n")
        self.run_table(table)


class HangUpTest(MisbehavingCase):
    """The server closes the connection in the middle of a reply."""

    def test_mid_reply_at_every_stage(self):
        table = {}
        for stage in STAGES + ("quit",):
            text = WHILE.get(stage, b"sending message")
            code = GOOD.get(stage, b"221")
            for name, partial in (("after a line", code + b"-first\r\n"),
                                  ("mid line", code[:2]),
                                  ("at CR", code + b"-a\r\n" + code + b"-b\r"),
                                  ("mid multi-line, dribbled", code + b"-a\r\n" + code + b"-b")):
                if name.endswith("dribbled"):
                    replies = {stage: dribbled(Close(partial))}
                else:
                    replies = {stage: Close(partial)}
                table["%s %s" % (stage, name)] = (
                    M, replies, 1, FATAL + b"lost connection while " + text + b"\n")
        self.run_table(table)


class ServiceClosingTest(MisbehavingCase):
    """421 (RFC 5321 3.8: the server is going away) at every stage, with
    and without the server then hanging up, with and without -A."""

    REPLY = b"421 4.3.2 Service shutting down"

    def test_421_at_every_stage(self):
        table = {}
        for stage in STAGES:
            complaint = FATAL + REJECTED[stage] + b": " + self.REPLY + b"\n"
            table[stage + " then close"] = (M, {stage: Close(self.REPLY + b"\r\n")}, 1, complaint)
            table[stage + " and stay"] = (M, {stage: self.REPLY + b"\r\n"}, 1, complaint)
            table[stage + " multi-line"] = (
                M, {stage: Close(b"421-4.3.2 going\r\n" + self.REPLY + b"\r\n")}, 1,
                FATAL + REJECTED[stage] + b": 421 4.3.2 going?4.3.2 Service shutting down\n")
        table["quit then close"] = (M, {"quit": Close(self.REPLY + b"\r\n")}, 0, b"")
        results = self.run_table(table)
        for name, (ours, _) in results.items():
            if name != "quit then close":       # dropped at once, no QUIT
                self.assertNotIn(b"QUIT\r\n", ours.connections[0].commands(), name)

    def test_421_and_521_with_A_hang_up(self):
        # Postfix 3.7: with -A, a 421 or 521 reply to HELO, MAIL, RCPT,
        # DATA, "." or RSET gets a warning, and the session is closed at
        # once (no RSET, no QUIT); the run goes on with the next message on
        # a new connection, and ends with status 0.  (The greeting has no
        # such rule: a warning, and HELO follows.)
        table = {}
        for code in (b"421", b"521"):
            reply = code + self.REPLY[3:]
            for stage in STAGES[1:]:
                warning = b"smtp-source: warning: " + REJECTED[stage] + b": " + reply + b"\n"
                table["%s %s stay" % (code.decode(), stage)] = (
                    M + ["-A"], {stage: reply + b"\r\n"}, 0, warning)
                if code == b"521":
                    continue                    # the rest: 421 only
                table["421 %s close" % stage] = (
                    M + ["-A"], {stage: Close(reply + b"\r\n")}, 0, warning)
                table["421 %s -m 2" % stage] = (
                    M + ["-A", "-m", "2", "-d"], {stage: reply + b"\r\n"}, 0, warning * 2)
            table["%s rset" % code.decode()] = (
                M + ["-A"], {"mail": b"550 no\r\n", "rset": reply + b"\r\n"}, 0,
                b"smtp-source: warning: sender rejected: 550 no\n"
                b"smtp-source: warning: rset rejected: " + reply + b"\n")
        results = self.run_table(table)
        for name, (ours, _) in sorted(results.items()):
            with self.subTest(case=name):
                messages = 2 if name.endswith("-m 2") else 1
                self.assertEqual(len(ours.connections), messages)
                for conn in ours.connections:
                    verbs = [c.split(b" ")[0].strip() for c in conn.commands()]
                    self.assertNotIn(b"QUIT", verbs)
                    self.assertEqual(verbs.count(b"RSET"), 1 if "rset" in name else 0)

    def test_421_greeting_with_A(self):
        table = {
            "stay": (M + ["-A"], {"greeting": self.REPLY + b"\r\n"}, 0,
                     b"smtp-source: warning: rejected at server banner: " + self.REPLY + b"\n"),
            "close": (M + ["-A"], {"greeting": Close(self.REPLY + b"\r\n")}, 1,
                      b"smtp-source: warning: rejected at server banner: " + self.REPLY + b"\n"
                      + FATAL + b"lost connection while sending HELO\n"),
        }
        self.run_table(table)

    def test_parallel_sessions_421(self):
        # Several sessions, one server going away: one fatal line, exit 1,
        # no hang.  (How far the other sessions got is a race.)
        table = {"-s 5 -m 50": (M + ["-s", "5", "-m", "50", "-d"],
                                {"rcpt": Close(self.REPLY + b"\r\n")}, 1,
                                FATAL + b"recipient rejected: " + self.REPLY + b"\n")}
        self.run_table(table, same_conversations=False)


if __name__ == "__main__":
    unittest.main()
