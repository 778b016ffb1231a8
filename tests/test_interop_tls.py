"""smtp_source.py's extensions against real servers: our smtp_sink.py
(STARTTLS, implicit TLS, CHUNKING, --verify) and aiosmtpd (STARTTLS, SIZE,
no CHUNKING: --bdat falls back to DATA), and an end-to-end integrity check
through a relay that corrupts one message on its way.

aiosmtpd is a test peer only: it runs in its own process from
.venv-peers/ (python3 -m venv .venv-peers && .venv-peers/bin/pip install
aiosmtpd), and the tests that need it skip loudly without it.
"""

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import unittest

from tests import support
from tests.fake_smtp import OURS, run_tool
from tests.test_source_modern import certificate

M = ["-M", "client.example"]


def sink_long_options():
    """The long options our smtp_sink.py has (it grows them over time)."""
    import smtp_sink
    return {name.rstrip("=") for name in getattr(smtp_sink, "LONG_OPTIONS", ())}


def need_sink_options(*names):
    missing = [name for name in names if name not in sink_long_options()]
    if missing:
        raise unittest.SkipTest("sink %s not available yet"
                                % " ".join("--" + name for name in missing))


def report(result):
    text = result.stdout.decode()
    return json.loads(text[text.index("{"):])


def verify_counts(sink):
    """The --verify counts from the sink's last statistics line."""
    lines = [json.loads(line) for line in sink.stdout().replace(b"\r", b"\n").split(b"\n")
             if line.startswith(b"{")]
    return lines[-1]["verify"]


class OurSinkTests(support.BothEngines, unittest.TestCase):

    def sink(self, *args):
        cert, key = certificate()
        return support.InProcessSink(self, ["--tls-cert", cert, "--tls-key", key]
                                     + list(args))

    def test_starttls_pipelining_bdat(self):
        need_sink_options("tls-cert", "chunking", "verify")
        sink = self.sink("--chunking", "--verify")
        target = "127.0.0.1:%d" % sink.address[1]
        result = run_tool(OURS, M + ["--starttls", "--pipelining", "--bdat=100", "--size",
                                     "--integrity", "--report=json", "-s", "3", "-m", "30",
                                     "-d", "-r", "2", "-l", "450", target])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        data = report(result)
        self.assertEqual((data["messages"], data["recipients"]), (30, 60))
        self.assertEqual(data["latency_ms"]["tls"]["count"], 3)
        self.assertGreater(data["latency_ms"]["bdat"]["count"], 0)
        self.assertEqual(data["latency_ms"]["data"]["count"], 0)       # BDAT, not DATA
        sink.stop()
        counts = verify_counts(sink)
        self.assertEqual(counts["runs"], {data["integrity"]["run"]: {
            "ok": 30, "corrupt": 0, "duplicate": 0, "missing": 0, "count": 30}})

    def test_lmtp_over_tls_with_chunks(self):
        need_sink_options("tls-cert", "chunking", "verify")
        sink = self.sink("--chunking", "--verify", "-L")
        target = "127.0.0.1:%d" % sink.address[1]
        result = run_tool(OURS, M + ["-L", "--starttls", "--pipelining", "--bdat=64",
                                     "--integrity", "--report=json", "-m", "5", "-d", "-r", "3",
                                     target])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        self.assertEqual(report(result)["recipients"], 15)
        sink.stop()
        [counts] = verify_counts(sink)["runs"].values()
        self.assertEqual((counts["ok"], counts["missing"]), (5, 0))

    def test_implicit_tls(self):
        need_sink_options("tls-cert", "tls")
        sink = self.sink("--tls")
        target = "127.0.0.1:%d" % sink.address[1]
        cert, _ = certificate()
        result = run_tool(OURS, M + ["--tls", "--tls-ca", cert, "--ehlo", "--pipelining",
                                     "-s", "2", "-m", "10", "-d", target])
        self.assertEqual((result.rc, result.stderr), (0, b""))

    def test_without_chunking_bdat_falls_back(self):
        need_sink_options("tls-cert", "verify")
        sink = self.sink("--verify")
        target = "127.0.0.1:%d" % sink.address[1]
        result = run_tool(OURS, M + ["--starttls", "--bdat=100", "--integrity",
                                     "--report=json", "-m", "3", "-d", target])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        data = report(result)
        self.assertEqual((data["latency_ms"]["data"]["count"],
                          data["latency_ms"]["bdat"]["count"]), (3, 0))


class CorruptingRelay:
    """A TCP relay between the source and a server that changes one byte
    in every client write holding `marker` (a message, written whole)."""

    def __init__(self, test, target, marker, old, new):
        self.target, self.marker, self.old, self.new = target, marker, old, new
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.corrupted = 0
        self.threads = []
        self.socks = []
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self.threads.append(thread)
        test.addCleanup(self.stop)

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=support.TIMEOUT)
            client.settimeout(support.TIMEOUT)
            self.socks += [client, server]
            for source, sink, change in ((client, server, True), (server, client, False)):
                thread = threading.Thread(target=self._pump, args=(source, sink, change),
                                          daemon=True)
                thread.start()
                self.threads.append(thread)

    def _pump(self, source, sink, change):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if change and self.marker in data and self.old in data:
                    data = data.replace(self.old, self.new, 1)
                    self.corrupted += 1
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)      # wakes accept() (Linux)
        except OSError:
            pass
        self.listener.close()
        for sock in self.socks:
            try:
                sock.close()
            except OSError:
                pass
        for thread in self.threads:
            thread.join(support.TIMEOUT)


class CorruptionTests(support.BothEngines, unittest.TestCase):

    def test_a_corrupted_body_is_counted_corrupt(self):
        need_sink_options("verify")
        sink = support.InProcessSink(self, ["--verify"])
        relay = CorruptingRelay(self, sink.address, b"; seq=3; ", b"La de da de da 3.",
                                b"La de da de da X.")
        result = run_tool(OURS, M + ["--integrity", "--report=json", "-m", "6", "-d",
                                     "127.0.0.1:%d" % relay.port])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        self.assertEqual(relay.corrupted, 1)
        run = report(result)["integrity"]["run"]
        sink.stop()
        counts = verify_counts(sink)
        self.assertEqual(counts["runs"], {run: {"ok": 5, "corrupt": 1, "duplicate": 0,
                                                "missing": 0, "count": 6}})
        self.assertIn(b"corrupt message: run=%s seq=3" % run.encode(), sink.stderr())

    def test_unmarked_messages(self):
        # Without --integrity nothing is marked, and no run is made up.
        need_sink_options("verify")
        sink = support.InProcessSink(self, ["--verify"])
        target = "127.0.0.1:%d" % sink.address[1]
        self.assertEqual(run_tool(OURS, M + ["-m", "2", target]).rc, 0)
        result = run_tool(OURS, M + ["--integrity", "--report=json", "-m", "3", "-N", "-d",
                                     "-t", "rcpt@example.com", target])
        self.assertEqual(result.rc, 0)
        sink.stop()
        counts = verify_counts(sink)
        self.assertEqual(counts["unmarked"], 2)
        self.assertEqual(list(counts["runs"].values()), [{
            "ok": 3, "corrupt": 0, "duplicate": 0, "missing": 0, "count": 3}])


# ------------------------------------------------------------------ aiosmtpd

AIOSMTPD_SERVER = r'''
import json, ssl, sys
sys.path.insert(0, sys.argv[1])
from aiosmtpd.controller import Controller
from smtpcore import integrity

port, cert, key, pipelining = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"


class Handler:
    def __init__(self):
        self.verifier = integrity.Verifier()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server, session, envelope):
        verdict = self.verifier.check(envelope.original_content)
        print(json.dumps({"verdict": verdict, "tls": session.ssl is not None,
                          "options": envelope.mail_options,
                          "rcpts": len(envelope.rcpt_tos),
                          "size": len(envelope.original_content)}), flush=True)
        return "250 OK"


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context)
controller.start()
print("ready", flush=True)
sys.stdin.read()            # until the test closes our stdin (or kills us)
controller.stop()
'''


def aiosmtpd_python():
    for python in (os.environ.get("AIOSMTPD_PYTHON"),
                   os.path.join(support.ROOT, ".venv-peers", "bin", "python"), sys.executable):
        if python and os.path.exists(python) and subprocess.run(
                [python, "-c", "import aiosmtpd"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL).returncode == 0:
            return python
    support.loud_skip("aiosmtpd (in .venv-peers/)")


class Aiosmtpd:
    """aiosmtpd with STARTTLS in a process of its own; .lines() are the
    messages it took (as JSON)."""

    def __init__(self, test, pipelining=False):
        python = aiosmtpd_python()
        cert, key = certificate()
        directory = support.temp_dir(test)
        script = os.path.join(directory, "server.py")
        with open(script, "w") as handle:
            handle.write(AIOSMTPD_SERVER)
        self.port = support.free_port()
        self.proc = subprocess.Popen([python, script, support.ROOT, str(self.port), cert, key,
                                      "1" if pipelining else "0"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        test.addCleanup(self.stop)
        self.buffer = b""
        self.read_until(lambda lines: b"ready" in lines, "aiosmtpd to start")

    def read_until(self, done, what):
        deadline = time.monotonic() + support.TIMEOUT
        while not done(self.buffer.split(b"\n")[:-1]):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0, left))
            if not ready:
                raise AssertionError("timed out waiting for %s: %r" % (what, self.buffer))
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError("aiosmtpd ended: %r" % self.proc.stderr.read())
            self.buffer += chunk

    def messages(self, count):
        def enough(lines):
            return sum(line.startswith(b"{") for line in lines) >= count
        self.read_until(enough, "%d messages" % count)
        return [json.loads(line) for line in self.buffer.split(b"\n") if line.startswith(b"{")]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(support.TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


class AiosmtpdTests(support.BothEngines, unittest.TestCase):

    def test_starttls_without_chunking(self):
        server = Aiosmtpd(self)
        result = run_tool(OURS, M + ["--starttls", "--pipelining", "--bdat=1000", "--size",
                                     "--integrity", "--report=json", "-s", "2", "-m", "6",
                                     "-d", "-r", "2", "-l", "2500",
                                     "127.0.0.1:%d" % server.port])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        data = report(result)
        # No CHUNKING (so DATA after all), no PIPELINING announced.
        self.assertEqual((data["latency_ms"]["data"]["count"],
                          data["latency_ms"]["bdat"]["count"]), (6, 0))
        self.assertEqual(data["latency_ms"]["tls"]["count"], 2)
        messages = server.messages(6)
        self.assertEqual([m["verdict"] for m in messages], ["ok"] * 6)
        for message in messages:
            self.assertTrue(message["tls"])
            self.assertEqual(message["options"], ["SIZE=%d" % message["size"]])
            self.assertEqual(message["rcpts"], 2)

    def test_pipelining_when_announced(self):
        server = Aiosmtpd(self, pipelining=True)
        result = run_tool(OURS, M + ["--starttls", "--pipelining", "--integrity", "-m", "4",
                                     "-d", "-r", "3", "127.0.0.1:%d" % server.port])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        self.assertEqual([m["verdict"] for m in server.messages(4)], ["ok"] * 4)

    def test_verified_name(self):
        server = Aiosmtpd(self)
        cert, _ = certificate()
        result = run_tool(OURS, M + ["-4", "--starttls", "--tls-ca", cert,
                                     "localhost:%d" % server.port])
        self.assertEqual((result.rc, result.stderr), (0, b""))
        self.assertTrue(server.messages(1)[0]["tls"])


if __name__ == "__main__":
    unittest.main()
