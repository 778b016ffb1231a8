"""smtp-sink --tls-cert/--tls-key (STARTTLS, RFC 3207) and --tls (implicit
TLS) over real sockets, with Python's smtplib and ssl, and swaks (--tls,
--tlsc, --pipeline) as clients.  The certificate is a throwaway one made
with the openssl command (support.make_cert); without openssl or swaks the
tests that need them skip, loudly."""

import os
import shutil
import smtplib
import socket
import ssl
import tempfile
import unittest

from smtpcore import integrity
from tests import support
from tests.support import InProcessSink

GREETING = b"220 smtp-sink ESMTP\r\n"
EHLO_TLS = (b"250-smtp-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-STARTTLS\r\n"
            b"250-AUTH PLAIN LOGIN\r\n250-XCLIENT NAME HELO\r\n"
            b"250-XFORWARD NAME ADDR PROTO HELO\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 \r\n")
EHLO = EHLO_TLS.replace(b"250-STARTTLS\r\n", b"")
READY = b"220 2.0.0 Ready to start TLS\r\n"
MESSAGE = b"Subject: over TLS\r\n\r\n.dotted\r\nbody\r\n"


class TLSBase(support.BothEngines, unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        directory = tempfile.mkdtemp(prefix="smtptest-tls-")
        cls.addClassCleanup(shutil.rmtree, directory, True)
        cls.cert, cls.key = support.make_cert(directory)

    def tls_args(self, *more):
        return ["--tls-cert", self.cert, "--tls-key=" + self.key] + list(more)

    def client_context(self):
        """A client that checks the sink's certificate (for 127.0.0.1)."""
        return ssl.create_default_context(cafile=self.cert)

    def smtp(self, sink, implicit=False):
        host, port = sink.address
        if implicit:
            client = smtplib.SMTP_SSL(host, port, timeout=support.TIMEOUT,
                                      context=self.client_context())
        else:
            client = smtplib.SMTP(host, port, timeout=support.TIMEOUT)
        self.addCleanup(client.close)
        return client

    def raw(self, sink):
        sock = support.connect(sink.address, sink.family)
        self.addCleanup(sock.close)
        return sock

    def upgrade(self, sock):
        """The client side of the handshake, after the 220."""
        tls = self.client_context().wrap_socket(sock, server_hostname="127.0.0.1")
        self.addCleanup(tls.close)
        return tls


class StartTlsTest(TLSBase):

    def test_smtplib_starttls(self):
        top = support.temp_dir(self)
        sink = InProcessSink(self, self.tls_args("-d", top + "/m."))
        client = self.smtp(sink)
        code, text = client.ehlo("client.example")
        self.assertIn(b"\nSTARTTLS\n", text + b"\n")
        self.assertEqual(client.starttls(context=self.client_context())[0], 220)
        code, text = client.ehlo("client.example")          # over TLS: no STARTTLS
        self.assertNotIn(b"STARTTLS", text)
        self.assertEqual(client.sendmail("a@example.com", ["b@example.com"], MESSAGE), {})
        client.quit()
        [name] = os.listdir(top)
        with open(os.path.join(top, name), "rb") as f:
            record = f.read()
        self.assertRegex(record, rb"^X-Client-Addr: 127.0.0.1\nX-Client-Proto: ESMTP\n"
                                 rb"X-Client-TLS: TLSv1\.[23] [A-Z0-9_-]+\nX-Helo-Args: "
                                 rb"client.example\n")
        self.assertTrue(record.endswith(b"\n.dotted\nbody\n\n"))

    def test_ehlo_lines(self):
        sink = InProcessSink(self, self.tls_args())
        data, _ = sink.converse([b"EHLO x\r\n", b"QUIT\r\n"])
        self.assertEqual(data, GREETING + EHLO_TLS + b"221 Bye\r\n")
        sink = InProcessSink(self, self.tls_args("-L"))
        data, _ = sink.converse([b"LHLO x\r\n"])
        self.assertIn(b"250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n", data)

    def test_plaintext_after_starttls_is_dropped(self):
        # RFC 3207 4.2 (the "STARTTLS command injection" bugs): what came in
        # the same packet as STARTTLS is never acted on, nor answered.
        sink = InProcessSink(self, self.tls_args("-v"))
        sock = self.raw(sink)
        self.assertEqual(support.recv_until(sock, b"\r\n"), GREETING)
        sock.sendall(b"EHLO x\r\n")
        self.assertEqual(support.recv_until(sock, b"250 \r\n"), EHLO_TLS)
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
        self.assertEqual(support.recv_until(sock, b"\r\n"), READY)
        tls = self.upgrade(sock)
        tls.sendall(b"RCPT TO:<b@example.com>\r\n")
        self.assertEqual(support.recv_until(tls, b"\r\n"),
                         b"503 5.5.1 Error: need MAIL command\r\n")
        self.assertNotIn(b"injected", sink.stderr())        # -v: never parsed

    def test_plaintext_after_starttls_is_dropped_after_a_pause(self):
        # The same when STARTTLS waited behind a delayed reply (-W): it is
        # parsed from what was held back, and the rest is still dropped.
        sink = InProcessSink(self, self.tls_args("-W", "ehlo:1", "-v"))
        sock = self.raw(sink)
        self.assertEqual(support.recv_until(sock, b"\r\n"), GREETING)
        sock.sendall(b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
        self.assertEqual(support.recv_until(sock, READY), EHLO_TLS + READY)
        tls = self.upgrade(sock)
        tls.sendall(b"RCPT TO:<b@example.com>\r\nQUIT\r\n")
        self.assertEqual(support.recv_all(tls), b"503 5.5.1 Error: need MAIL command\r\n"
                                                b"221 Bye\r\n")
        self.assertNotIn(b"injected", sink.stderr())

    def test_session_starts_over(self):
        # After STARTTLS: no HELO name, no transaction (RFC 3207 4.2).
        top = support.temp_dir(self)
        sink = InProcessSink(self, self.tls_args("-d", top + "/m."))
        sock = self.raw(sink)
        support.recv_until(sock, b"\r\n")
        sock.sendall(b"EHLO before.example\r\nMAIL FROM:<a@example.com>\r\n")
        support.recv_until(sock, b"250 2.1.0 Ok\r\n")
        sock.sendall(b"STARTTLS\r\n")
        self.assertEqual(support.recv_until(sock, b"\r\n"), READY)
        tls = self.upgrade(sock)
        tls.sendall(b"RCPT TO:<b@example.com>\r\nMAIL FROM:<a@example.com>\r\n"
                    b"RCPT TO:<b@example.com>\r\nDATA\r\n")
        self.assertEqual(support.recv_until(tls, b"354 End data with <CR><LF>.<CR><LF>\r\n"),
                         b"503 5.5.1 Error: need MAIL command\r\n250 2.1.0 Ok\r\n"
                         b"250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
        tls.sendall(b"x\r\n.\r\nSTARTTLS\r\nSTARTTLS now\r\nQUIT\r\n")
        self.assertEqual(support.recv_all(tls), b"250 2.0.0 Ok\r\n"
                         b"554 5.5.1 Error: TLS already active\r\n"
                         b"554 5.5.1 Error: TLS already active\r\n221 Bye\r\n")
        [name] = os.listdir(top)
        with open(os.path.join(top, name), "rb") as f:
            record = f.read()
        self.assertNotIn(b"X-Helo-Args", record)
        self.assertIn(b"X-Client-Proto: SMTP\nX-Client-TLS: TLSv1", record)

    def test_syntax_and_plain_sessions(self):
        top = support.temp_dir(self)
        sink = InProcessSink(self, self.tls_args("-d", top + "/m."))
        data, _ = sink.converse([b"STARTTLS please\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\n"
                                 b"DATA\r\nx\r\n.\r\nQUIT\r\n"])
        self.assertTrue(data.startswith(GREETING + b"501 5.5.4 Syntax: STARTTLS\r\n"))
        [name] = os.listdir(top)
        with open(os.path.join(top, name), "rb") as f:
            self.assertIn(b"\nX-Client-TLS: none\n", f.read())

    def test_large_pipelined_input_over_tls(self):
        # Many TLS records in one go: decrypted input that the poller cannot
        # see must still be read (ssl's pending()).  --verify checks every byte.
        sink = InProcessSink(self, self.tls_args("--verify", "-c"))
        client = self.smtp(sink)
        client.starttls(context=self.client_context())
        body = b"".join(b".%06d %s\r\n" % (i, b"y" * 70) for i in range(30000))
        run = b"00112233aabbccdd"
        self.assertEqual(client.sendmail("a@example.com", ["b@example.com"],
                                         integrity.header(run, 0, 41, body) + body), {})
        small = [integrity.header(run, seq, 41, MESSAGE) + MESSAGE for seq in range(1, 41)]
        wire = b"".join(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n"
                        + (b"\r\n" + m).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"
                        for m in small)
        client.sock.sendall(wire + b"QUIT\r\n")
        replies = support.recv_all(client.sock)
        self.assertEqual(replies.count(b"250 2.0.0 Ok\r\n"), 40)
        self.assertTrue(replies.endswith(b"221 Bye\r\n"))
        sink.stop()
        self.assertIn(b'"00112233aabbccdd": {"ok": 41, "corrupt": 0, "duplicate": 0, '
                      b'"missing": 0, "count": 41}', sink.stdout())


class ImplicitTlsTest(TLSBase):

    def test_smtplib_smtp_ssl(self):
        sink = InProcessSink(self, self.tls_args("--tls", "-c"))
        client = self.smtp(sink, implicit=True)
        code, text = client.ehlo("client.example")
        self.assertNotIn(b"STARTTLS", text)
        self.assertEqual(client.sendmail("a@example.com", ["b@example.com"], MESSAGE), {})
        self.assertEqual(client.docmd("STARTTLS"), (554, b"5.5.1 Error: TLS already active"))
        client.quit()
        support.wait_until(lambda: sink.stdout().endswith(b"sess=1 quit=1 mesg=1\r"),
                           what="the session's end")

    def test_failed_handshake_is_one_session(self):
        sink = InProcessSink(self, self.tls_args("--tls"))
        data, _ = sink.converse([b"EHLO plaintext.example\r\n"])
        self.assertEqual(data, b"")                         # no greeting in clear
        self.assertIn(b"smtp-sink: warning: TLS handshake failed: ", sink.stderr())
        client = self.smtp(sink, implicit=True)             # the next one is served
        self.assertEqual(client.noop()[0], 250)

    def test_handshake_timeout(self):
        sink = InProcessSink(self, self.tls_args("--tls", "-t", "1"))
        sock = self.raw(sink)
        self.assertEqual(support.recv_all(sock), b"")       # closed, not left waiting
        self.assertIn(b"smtp-sink: warning: TLS handshake timeout\n", sink.stderr())


class TlsOptionTest(TLSBase):

    def test_bad_combinations(self):
        missing = os.path.join(support.temp_dir(self), "missing.pem")
        for args, complaint in (
                (["--tls-cert", self.cert], b"--tls-cert and --tls-key go together"),
                (["--tls-key", self.key], b"--tls-cert and --tls-key go together"),
                (["--tls"], b"--tls needs --tls-cert and --tls-key"),
                (["--tls-cert", missing, "--tls-key", self.key],
                 b"cannot load TLS certificate " + missing.encode()),
                (["--tls-cert", self.key, "--tls-key", self.cert],
                 b"cannot load TLS certificate ")):
            with self.subTest(args=args):
                result = support.run(support.python_cmd(
                    support.SINK, *(support.PRIVS + args + ["127.0.0.1:0", "5"])))
                self.assertEqual((result.returncode, result.stdout), (1, b""))
                self.assertIn(b"smtp-sink: fatal: " + complaint, result.stderr)

    def test_key_read_before_privileges_are_dropped(self):
        if not support.IS_ROOT:
            support.loud_skip("root (to drop privileges)")
        self.assertEqual(os.stat(self.key).st_mode & 0o077, 0)     # root's only
        port = support.free_port()
        server = support.Server(support.python_cmd(support.SINK, *(
            support.PRIVS + self.tls_args("--tls") + ["127.0.0.1:%d" % port, "5"])),
            ("127.0.0.1", port), socket.AF_INET).start(self)
        with smtplib.SMTP_SSL("127.0.0.1", port, timeout=support.TIMEOUT,
                              context=self.client_context()) as client:
            self.assertEqual(client.noop()[0], 250)
        rc, out, err = server.stop()
        self.assertEqual(err, b"")

    def test_everything_works_in_a_chroot_jail(self):
        # Whatever TLS, --verify and --stats need after -R is loaded before.
        if not support.IS_ROOT:
            support.loud_skip("root (for -R)")
        jail = support.temp_dir(self)
        port = support.free_port()
        server = support.Server(support.python_cmd(support.SINK, *(
            ["-u", "nobody", "-R", jail, "-d", "/m."] + self.tls_args(
                "--tls", "--chunking", "--verify", "--stats=0") +
            ["127.0.0.1:%d" % port, "5"])), ("127.0.0.1", port), socket.AF_INET).start(self)
        run = b"0011223344556677"
        with smtplib.SMTP_SSL("127.0.0.1", port, timeout=support.TIMEOUT,
                              context=self.client_context()) as client:
            self.assertEqual(client.sendmail("a@example.com", ["b@example.com"],
                                             integrity.header(run, 0, 1, MESSAGE) + MESSAGE), {})
        rc, out, err = server.stop()
        self.assertEqual((rc, err), (-15, b""))
        self.assertIn(b'"0011223344556677": {"ok": 1, "corrupt": 0', out)
        [name] = os.listdir(jail)
        with open(os.path.join(jail, name), "rb") as f:
            self.assertIn(b"\nX-Client-TLS: TLSv1.", f.read())


class SwaksTest(TLSBase):
    """swaks against our sink: STARTTLS, implicit TLS, pipelining."""

    def swaks(self, sink, *args):
        swaks = support.need_program("swaks")
        host, port = sink.address
        return support.run([swaks, "--server", host, "--port", str(port), "--from",
                            "a@example.com", "--to", "b@example.com", "--helo",
                            "swaks.example"] + list(args))

    def test_starttls_pipelined(self):
        sink = InProcessSink(self, self.tls_args("-c"))
        result = self.swaks(sink, "--tls", "--pipeline")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(b"<-  220 2.0.0 Ready to start TLS", result.stdout)
        self.assertIn(b"=== TLS started with cipher TLSv1.", result.stdout)
        self.assertIn(b"<~  250 2.0.0 Ok", result.stdout)
        support.wait_until(lambda: sink.stdout().endswith(b"sess=1 quit=1 mesg=1\r"),
                           what="the session's end")

    def test_tls_on_connect(self):
        sink = InProcessSink(self, self.tls_args("--tls"))
        result = self.swaks(sink, "--tlsc")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(b"<~  220 smtp-sink ESMTP", result.stdout)
        self.assertIn(b"<~  250 2.0.0 Ok", result.stdout)

    def test_pipeline_with_rejects_in_order(self):
        # --keep-pipelining with -f rcpt: swaks pipelines, replies come in order.
        sink = InProcessSink(self, self.tls_args("--keep-pipelining", "-f", "rcpt"))
        result = self.swaks(sink, "--tls", "--pipeline")
        self.assertEqual(result.returncode, 24, result.stdout + result.stderr)   # RCPT failed
        self.assertRegex(result.stdout, rb"<~  250 2.1.0 Ok\r?\n<~\*+ 500 5.3.0 Error: "
                                        rb"command failed\r?\n<~\*+ 503 5.5.1 Error: need RCPT")


if __name__ == "__main__":
    unittest.main()
