"""smtp_source.py's ESMTP extensions over real sockets: --ehlo,
--pipelining, --starttls, --tls (and --tls-verify, --tls-ca), --bdat,
--size, --integrity and --rate.

The script runs as a subprocess against the byte-logging fake server of
tests/fake_smtp.py, which can announce extensions (a scripted EHLO reply),
do STARTTLS or implicit TLS with a throwaway certificate
(support.make_cert), and take BDAT chunks.  Timeouts are tested with
main() in-process and a shorter time limit.
"""

import contextlib
import hashlib
import io
import os
import re
import select
import socket
import ssl
import sys
import time
import unittest
from unittest import mock

import smtp_source
from smtpcore import integrity
from tests import support
from tests.fake_smtp import OURS, SILENCE, Close, FakeServer, run_tool, seq, temp_file
from tests.test_source_session import LA_DE_DA, M, undate

ADDRESS = b"foo@client.example"
MAIL = b"MAIL FROM:<foo@client.example>\r\n"


def ehlo(*keywords, name=b"fake.example"):
    """A multi-line EHLO reply announcing keywords."""
    lines = [name] + [k.encode() if isinstance(k, str) else k for k in keywords]
    return b"".join(b"250%s%s\r\n" % (b" " if i == len(lines) - 1 else b"-", line)
                    for i, line in enumerate(lines))


_certs = {}


def certificate():
    """(cert, key), made when first needed (removed after the test module
    that made it: other modules then make their own)."""
    if not _certs or not os.path.exists(_certs["pair"][0]):
        import shutil
        import tempfile
        directory = tempfile.mkdtemp(prefix="smtpcert-")
        unittest.addModuleCleanup(shutil.rmtree, directory, True)
        _certs["pair"] = support.make_cert(directory)
    return _certs["pair"]


def server_context():
    cert, key = certificate()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def unstuff(wire):
    """The message meant by what followed 354 (".\\r\\n" at the end)."""
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n", wire[-20:]
    lines = wire[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


class Seen:
    """A reply script for one stage that notes what the client had sent by
    the time the server answers.  With wait_for, it first waits (bounded)
    until those bytes have come after the stage's own command: they are
    there at once from a client that pipelines, never from one that waits
    for each reply."""

    def __init__(self, reply, wait_for=None, timeout=5):
        self.reply, self.wait_for, self.timeout = reply, wait_for, timeout
        self.after = []             # bytes after the latest command, per reply

    def __call__(self, conn, stage):
        command = conn.commands()[-1]

        def since_command():
            raw = bytes(conn.raw)
            tail = raw[raw.rfind(command) + len(command):]
            if not isinstance(conn.sock, ssl.SSLSocket):
                ready, _, _ = select.select([conn.sock], [], [], 0)
                if ready:
                    tail += conn.sock.recv(65536, socket.MSG_PEEK)
            return tail

        if self.wait_for is not None:
            try:
                support.wait_until(lambda: self.wait_for in since_command(), self.timeout,
                                   what=repr(self.wait_for))
            except AssertionError:
                pass
        self.after.append(since_command())
        return self.reply


class ModernCase(support.BothEngines, unittest.TestCase):

    def source(self, args, replies=None, lmtp=False, tls=False, implicit_tls=False,
               timeout=support.TIMEOUT):
        context = server_context() if tls or implicit_tls else None
        self.server = FakeServer(replies, lmtp=lmtp, tls_context=context,
                                 implicit_tls=implicit_tls).start(self)
        return run_tool(OURS, M + list(args) + ["TARGET"], self.server, timeout=timeout)

    def assertOk(self, result, connections=1, stdout=b""):
        self.assertEqual((result.rc, result.stderr, result.stdout), (0, b"", stdout))
        self.assertEqual(len(result.connections), connections)

    def assertFatal(self, result, text):
        self.assertEqual((result.rc, result.stdout, result.stderr),
                         (1, b"", b"smtp-source: fatal: " + text + b"\n"))

    def commands(self, result, index=0):
        return result.connections[index].commands()


class EhloTests(ModernCase):

    def test_ehlo_instead_of_helo(self):
        result = self.source(["--ehlo", "-d", "-m", "2"], {"helo": ehlo("PIPELINING", "SIZE")})
        self.assertOk(result)
        self.assertEqual(self.commands(result), [
            b"EHLO client.example\r\n", MAIL, b"RCPT TO:<foo@client.example>\r\n",
            b"DATA\r\n", MAIL, b"RCPT TO:<foo@client.example>\r\n", b"DATA\r\n", b"QUIT\r\n"])
        # The message is the one Postfix's tool sends.
        message = result.connections[0].messages()[0]
        self.assertTrue(undate(message).startswith(
            b"From: <foo@client.example>\r\nTo: <foo@client.example>\r\nDate: <date>\r\n"))
        self.assertTrue(message.endswith(b"\r\n\r\n" + LA_DE_DA + b".\r\n"))

    def test_helo_after_a_refused_ehlo(self):
        # RFC 5321 3.2: a server that does not know EHLO says 5xx; HELO then.
        result = self.source(["--ehlo", "--pipelining"],
                             {"helo": seq(b"502 5.5.1 EHLO not here\r\n", b"250 old.example\r\n")})
        self.assertOk(result)
        self.assertEqual(self.commands(result)[:3], [b"EHLO client.example\r\n",
                                                     b"HELO client.example\r\n", MAIL])

    def test_ehlo_4xx_is_a_rejection(self):
        result = self.source(["--ehlo"], {"helo": b"421 4.3.2 busy\r\n"})
        self.assertFatal(result, b"EHLO rejected: 421 4.3.2 busy")
        result = self.source(["--ehlo", "-A"], {"helo": b"451 4.3.2 later\r\n"})
        self.assertEqual((result.rc, result.stderr),
                         (0, b"smtp-source: warning: EHLO rejected: 451 4.3.2 later\n"))
        self.assertEqual(self.commands(result)[1], MAIL)      # no HELO after it

    def test_lmtp_says_lhlo(self):
        result = self.source(["-L", "--ehlo", "-r", "2"], {"helo": ehlo("PIPELINING")},
                             lmtp=True)
        self.assertOk(result)
        self.assertEqual(self.commands(result)[0], b"LHLO client.example\r\n")
        result = self.source(["-L", "--ehlo"], {"helo": b"500 5.5.1 what\r\n"}, lmtp=True)
        self.assertFatal(result, b"LHLO rejected: 500 5.5.1 what")   # no HELO in LMTP

    def test_o_sends_no_ehlo_and_extensions_fall_back(self):
        mail = Seen(b"250 ok\r\n")
        result = self.source(["-o", "--pipelining", "--size", "--bdat=10"],
                             {"helo": ehlo("PIPELINING", "SIZE", "CHUNKING"), "mail": mail})
        self.assertOk(result)
        self.assertEqual(self.commands(result), [MAIL, b"RCPT TO:<foo@client.example>\r\n",
                                                 b"DATA\r\n", b"QUIT\r\n"])
        self.assertEqual(mail.after, [b""])
        self.assertEqual(result.connections[0].messages(), [LA_DE_DA + b".\r\n"])

    def test_extensions_of(self):
        reply = smtp_source.replies.Reply(250, [b"250-x.example greets you", b"250-pipelining",
                                               b"250-SIZE 1000", b"250-AUTH PLAIN LOGIN",
                                               b"250 CHUNKING"])
        self.assertEqual(smtp_source.extensions_of(reply),
                         {"PIPELINING": b"", "SIZE": b"1000", "AUTH": b"PLAIN LOGIN",
                          "CHUNKING": b""})


class PipeliningTests(ModernCase):

    def test_envelope_in_one_write(self):
        mail = Seen(b"250 2.1.0 Ok\r\n", wait_for=b"DATA\r\n")
        result = self.source(["--pipelining", "-r", "3", "-d", "-m", "3"],
                             {"helo": ehlo("PIPELINING"), "mail": mail})
        self.assertOk(result)
        rcpts = b"".join(b"RCPT TO:<%s>\r\n" % a for a in (b"3" + ADDRESS, b"2" + ADDRESS,
                                                          ADDRESS))
        # When each MAIL is answered, its RCPTs and DATA are already there.
        self.assertEqual(mail.after, [rcpts + b"DATA\r\n"] * 3)
        conn = result.connections[0]
        self.assertEqual(len(conn.messages()), 3)
        self.assertEqual(conn.commands()[-1], b"QUIT\r\n")

    def test_one_at_a_time_without_the_announcement(self):
        mail = Seen(b"250 2.1.0 Ok\r\n")
        result = self.source(["--pipelining", "-r", "2", "-d", "-m", "2"],
                             {"helo": ehlo("SIZE"), "mail": mail})
        self.assertOk(result)
        self.assertEqual(mail.after, [b"", b""])
        conn = result.connections[0]
        self.assertEqual(bytes(conn.raw), b"".join(conn.client_events()))

    def test_a_rejected_recipient(self):
        replies = {"helo": ehlo("PIPELINING"),
                   "rcpt": seq(b"250 ok\r\n", b"550 5.1.1 no such user\r\n", b"250 ok\r\n")}
        result = self.source(["--pipelining", "-r", "3"], replies)
        self.assertFatal(result, b"recipient rejected: 550 5.1.1 no such user")
        result = self.source(["--pipelining", "-r", "3", "-A"], replies)
        self.assertEqual((result.rc, result.stderr), (0, b"smtp-source: warning: recipient "
                                                         b"rejected: 550 5.1.1 no such user\n"))
        self.assertEqual(len(result.connections[0].messages()), 1)   # two still get it

    def test_all_recipients_rejected(self):
        # The server refuses DATA (no valid recipients): RSET, next message.
        replies = {"helo": ehlo("PIPELINING"), "rcpt": b"550 5.1.1 no\r\n",
                   "data": b"554 5.5.1 no valid recipients\r\n"}
        result = self.source(["--pipelining", "-A", "-d", "-m", "2"], replies)
        self.assertEqual(result.rc, 0)
        self.assertEqual(result.stderr, 2 * (
            b"smtp-source: warning: recipient rejected: 550 5.1.1 no\n"
            b"smtp-source: warning: data rejected: 554 5.5.1 no valid recipients\n"))
        verbs = [c.split()[0] for c in self.commands(result)]
        self.assertEqual(verbs, [b"EHLO"] + [b"MAIL", b"RCPT", b"DATA", b"RSET"] * 2 + [b"QUIT"])

    def test_354_without_recipients_gets_an_empty_message(self):
        # RFC 2920 3.1: DATA was accepted although no recipient was: the
        # client ends the (empty) message with "." and does not send it.
        replies = {"helo": ehlo("PIPELINING"), "rcpt": b"550 5.1.1 no\r\n",
                   "dot": b"554 5.5.1 no recipients\r\n"}
        result = self.source(["--pipelining", "-A"], replies)
        self.assertEqual(result.rc, 0)
        conn = result.connections[0]
        self.assertEqual(conn.messages(), [b".\r\n"])
        self.assertEqual([c.split()[0] for c in conn.commands()],
                         [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"QUIT"])

    def test_rejected_sender(self):
        replies = {"helo": ehlo("PIPELINING"), "mail": b"451 4.3.0 later\r\n",
                   "rcpt": b"503 5.5.1 need MAIL\r\n", "data": b"503 5.5.1 need RCPT\r\n"}
        result = self.source(["--pipelining"], replies)
        self.assertFatal(result, b"sender rejected: 451 4.3.0 later")
        result = self.source(["--pipelining", "-A"], replies)
        self.assertEqual(result.stderr, b"smtp-source: warning: sender rejected: 451 4.3.0 later\n"
                         b"smtp-source: warning: recipient rejected: 503 5.5.1 need MAIL\n"
                         b"smtp-source: warning: data rejected: 503 5.5.1 need RCPT\n")
        self.assertEqual([c.split()[0] for c in self.commands(result)],
                         [b"EHLO", b"MAIL", b"RCPT", b"DATA", b"RSET", b"QUIT"])

    def test_421_with_A_ends_the_connection(self):
        # As without pipelining (test_source_misbehaving): a warning, the
        # connection dropped at once, the next message on a new one.
        replies = {"helo": ehlo("PIPELINING"), "rcpt": b"421 4.3.2 going away\r\n"}
        result = self.source(["--pipelining", "-A", "-m", "2", "-d", "-r", "2"], replies)
        self.assertEqual((result.rc, result.stderr), (0, 2 * b"smtp-source: warning: recipient "
                                                             b"rejected: 421 4.3.2 going away\n"))
        self.assertEqual(len(result.connections), 2)
        for conn in result.connections:
            self.assertEqual([c.split()[0] for c in conn.commands()],
                             [b"EHLO", b"MAIL", b"RCPT", b"RCPT", b"DATA"])
            self.assertEqual(conn.end, "reset")

    def test_521_to_ehlo_is_not_a_reason_for_helo(self):
        result = self.source(["--ehlo", "-A"], {"helo": b"521 5.3.2 no mail here\r\n"})
        self.assertEqual((result.rc, result.stderr),
                         (0, b"smtp-source: warning: EHLO rejected: 521 5.3.2 no mail here\n"))
        self.assertEqual(self.commands(result), [b"EHLO client.example\r\n"])

    def test_lost_in_the_middle(self):
        result = self.source(["--pipelining", "-r", "2"],
                             {"helo": ehlo("PIPELINING"), "rcpt": seq(b"250 ok\r\n", None)})
        self.assertFatal(result, b"lost connection while sending recipient")

    def test_lmtp(self):
        result = self.source(["-L", "--pipelining", "-r", "3", "-d", "-m", "2"],
                             {"helo": ehlo("PIPELINING")}, lmtp=True)
        self.assertOk(result)
        self.assertEqual(len(result.connections[0].messages()), 2)

    def test_many_recipients_in_windows(self):
        # More commands than fit one pipelined write (PIPELINE_WINDOW).
        result = self.source(["--pipelining", "-r", "250", "-N"], {"helo": ehlo("PIPELINING")})
        self.assertOk(result)
        rcpts = [c for c in self.commands(result) if c.startswith(b"RCPT")]
        self.assertEqual(rcpts, [b"RCPT TO:<%d%s>\r\n" % (n, ADDRESS) for n in range(1, 251)])

    def test_verbose_shows_each_command(self):
        result = self.source(["--pipelining", "-v"], {"helo": ehlo("PIPELINING")})
        self.assertEqual(result.rc, 0)
        lines = result.stderr.decode().splitlines()
        start = lines.index("smtp-source: MAIL FROM:<foo@client.example>")
        self.assertEqual(lines[start:start + 5], [
            "smtp-source: MAIL FROM:<foo@client.example>",
            "smtp-source: RCPT TO:<foo@client.example>", "smtp-source: DATA",
            "smtp-source: <<< 250 2.1.0 Ok", "smtp-source: <<< 250 2.1.5 Ok"])


class StartTlsTests(ModernCase):

    def replies(self, **more):
        def hello(conn, stage):
            return ehlo("PIPELINING", "CHUNKING") if conn.tls else ehlo("STARTTLS", "PIPELINING")
        replies = {"helo": hello}
        replies.update(more)
        return replies

    def test_starttls_then_ehlo_again(self):
        result = self.source(["--starttls", "-s", "2", "-m", "4", "-d"], self.replies(), tls=True)
        self.assertOk(result, connections=2)
        for conn in result.connections:
            self.assertTrue(conn.tls.startswith("TLS"), conn.tls)
            self.assertEqual(conn.commands()[:3], [b"EHLO client.example\r\n", b"STARTTLS\r\n",
                                                   b"EHLO client.example\r\n"])
            self.assertEqual([kind for kind, _ in conn.events][:6],
                             ["S", "C", "S", "C", "S", "T"])
        self.assertEqual(sum(len(conn.messages()) for conn in result.connections), 4)

    def test_starttls_on_every_new_connection(self):
        # Without -d each message has a connection of its own: each starts
        # in clear text again (regression: the second one crashed, still
        # looking for data inside the first connection's TLS object).
        result = self.source(["--starttls", "-s", "1", "-m", "3"], self.replies(), tls=True)
        self.assertOk(result, connections=3)
        for conn in result.connections:
            self.assertTrue(conn.tls.startswith("TLS"), conn.tls)
            self.assertEqual(conn.commands()[:3], [b"EHLO client.example\r\n", b"STARTTLS\r\n",
                                                   b"EHLO client.example\r\n"])
            self.assertEqual(len(conn.messages()), 1)

    def test_with_everything(self):
        # STARTTLS, pipelining, chunking, SIZE and the integrity line, over
        # LMTP with replies in several TLS records at once.
        result = self.source(["-L", "-r", "3", "--starttls", "--pipelining", "--bdat=100",
                              "--integrity", "-l", "1000", "-m", "2", "-d"],
                             self.replies(), lmtp=True, tls=True)
        self.assertOk(result)
        conn = result.connections[0]
        messages = conn.chunked_messages()
        self.assertEqual(len(messages), 2)
        verifier = integrity.Verifier()
        self.assertEqual([verifier.check(m) for m in messages], ["ok", "ok"])

    def test_big_messages_over_tls(self):
        result = self.source(["--starttls", "-l", "300000", "-m", "2", "-d"], self.replies(),
                             tls=True)
        self.assertOk(result)
        self.assertEqual([len(m) for m in result.connections[0].messages()],
                         [len(result.connections[0].messages()[0])] * 2)
        self.assertGreater(len(result.connections[0].messages()[0]), 300000)

    def test_not_announced(self):
        result = self.source(["--starttls"], {"helo": ehlo("PIPELINING")}, tls=True)
        self.assertFatal(result, b"server does not announce STARTTLS")
        result = self.source(["--starttls", "-A"], {"helo": ehlo("PIPELINING")}, tls=True)
        self.assertEqual((result.rc, result.stderr),
                         (0, b"smtp-source: warning: server does not announce STARTTLS\n"))
        self.assertIsNone(result.connections[0].tls)
        self.assertEqual(len(result.connections[0].messages()), 1)     # in clear

    def test_refused(self):
        replies = self.replies(starttls=b"454 4.7.0 TLS not available\r\n")
        result = self.source(["--starttls"], replies, tls=True)
        self.assertFatal(result, b"STARTTLS rejected: 454 4.7.0 TLS not available")
        result = self.source(["--starttls", "-A"], replies, tls=True)
        self.assertEqual(result.stderr, b"smtp-source: warning: STARTTLS rejected: "
                         b"454 4.7.0 TLS not available\n")
        self.assertEqual([c.split()[0] for c in self.commands(result)],
                         [b"EHLO", b"STARTTLS", b"MAIL", b"RCPT", b"DATA", b"QUIT"])

    def test_no_handshake(self):
        # 220, then the server hangs up instead of doing TLS.
        replies = self.replies(starttls=Close(b"220 2.0.0 go ahead\r\n"))
        result = self.source(["--starttls"], replies)
        self.assertFatal(result, b"lost connection while performing the TLS handshake")

    def test_not_tls_at_all(self):
        # 220, then the server answers the ClientHello in plain text.
        replies = self.replies(starttls=b"220 2.0.0 go ahead\r\n")
        replies["other"] = b"500 5.5.1 what is this\r\n"
        result = self.source(["--starttls"], replies)          # no TLS in this server
        self.assertEqual(result.rc, 1)
        self.assertRegex(result.stderr, rb"^smtp-source: fatal: TLS handshake failed: \S+")

    def test_data_after_the_220_is_refused(self):
        replies = self.replies(starttls=b"220 2.0.0 go ahead\r\n250 injected\r\n")
        result = self.source(["--starttls"], replies, tls=True)
        self.assertFatal(result, b"unexpected data after the STARTTLS reply")

    def test_verify(self):
        cert, _ = certificate()
        result = self.source(["--starttls", "--tls-ca", cert], self.replies(), tls=True)
        self.assertOk(result)
        # The system's CAs do not know our throwaway certificate.
        result = self.source(["--starttls", "--tls-verify"], self.replies(), tls=True)
        self.assertEqual(result.rc, 1)
        self.assertIn(b"smtp-source: fatal: TLS handshake failed: CERTIFICATE_VERIFY_FAILED",
                      result.stderr)

    def test_verify_checks_the_name(self):
        # A certificate for other.example, trusted as its own CA, does not
        # do for 127.0.0.1.
        openssl = support.need_program("openssl")
        directory = support.temp_dir(self)
        cert, key = os.path.join(directory, "other.pem"), os.path.join(directory, "key.pem")
        made = support.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                            "/CN=other.example", "-addext", "subjectAltName=DNS:other.example",
                            "-keyout", key, "-out", cert])
        self.assertEqual(made.returncode, 0, made.stderr)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = FakeServer(self.replies(), tls_context=context).start(self)
        result = run_tool(OURS, M + ["--starttls", "--tls-ca", cert, "TARGET"], server)
        self.assertEqual(result.rc, 1)
        self.assertIn(b"TLS handshake failed: CERTIFICATE_VERIFY_FAILED", result.stderr)
        # Without --tls-verify nothing is checked.
        result = run_tool(OURS, M + ["--starttls", "TARGET"], server)
        self.assertEqual((result.rc, result.stderr), (0, b""))

    def test_unix_socket_checks_the_chain_only(self):
        cert, _ = certificate()
        server = FakeServer(self.replies(), family="unix",
                            tls_context=server_context()).start(self)
        result = run_tool(OURS, M + ["--starttls", "--tls-ca", cert, "TARGET"], server)
        self.assertEqual((result.rc, result.stderr), (0, b""))
        self.assertTrue(result.connections[0].tls)

    def test_server_name_indication(self):
        names = []
        context = server_context()
        context.sni_callback = lambda sock, name, ctx: names.append(name)
        server = FakeServer(self.replies(), tls_context=context).start(self)
        for target in ("localhost:%d" % server.port, "127.0.0.1:%d" % server.port):
            result = run_tool(OURS, M + ["-4", "--starttls", target], server)
            self.assertEqual((result.rc, result.stderr), (0, b""))
        self.assertEqual(names, ["localhost", None])      # no SNI for an address

    def test_verbose(self):
        result = self.source(["--starttls", "-v"], self.replies(), tls=True)
        self.assertEqual(result.rc, 0)
        self.assertRegex(result.stderr, rb"\nsmtp-source: TLS connection established: "
                                        rb"TLSv1\.[23] \S+\n")


class ImplicitTlsTests(ModernCase):

    def test_tls_before_the_greeting(self):
        result = self.source(["--tls", "-m", "3", "-s", "3"], implicit_tls=True)
        self.assertOk(result, connections=3)
        for conn in result.connections:
            self.assertEqual(conn.events[0][0], "T")
            self.assertEqual(conn.commands(), [b"HELO client.example\r\n", MAIL,
                                               b"RCPT TO:<foo@client.example>\r\n",
                                               b"DATA\r\n", b"QUIT\r\n"])

    def test_with_ehlo_and_verify(self):
        cert, _ = certificate()
        result = self.source(["--tls", "--tls-ca=" + cert, "--ehlo", "-L"], implicit_tls=True,
                             lmtp=True)
        self.assertOk(result)
        self.assertEqual(self.commands(result)[0], b"LHLO client.example\r\n")

    def test_server_without_tls(self):
        result = self.source(["--tls"])
        self.assertEqual(result.rc, 1)
        self.assertRegex(result.stderr, rb"^smtp-source: fatal: TLS handshake failed: \S+")


class HandshakeTimeoutTests(support.BothEngines, unittest.TestCase):

    def test_silent_server(self):
        # The server says 220 to STARTTLS and then nothing.  The handshake
        # waits for its time limit, without holding up other sessions.
        replies = {"helo": ehlo("STARTTLS"), "starttls": b"220 go ahead\r\n",
                   "other": SILENCE}
        server = FakeServer(replies).start(self)
        err = io.TextIOWrapper(io.BytesIO(), write_through=True)
        started = time.monotonic()
        with mock.patch.object(smtp_source, "TIMEOUT", 1), \
                mock.patch.object(sys, "argv", ["smtp_source.py"]), \
                contextlib.redirect_stderr(err):
            status = smtp_source.main(support.engine_args() + M + ["--starttls", server.target])
        self.assertEqual((status, err.buffer.getvalue()),
                         (1, b"smtp-source: fatal: timeout while performing the TLS handshake\n"))
        self.assertLess(time.monotonic() - started, support.TIMEOUT)


class BdatTests(ModernCase):

    def test_chunks(self):
        path = temp_file(self, b"Subject: dots\n\n.one\n..two\n.\nend\n")
        result = self.source(["--bdat=16", "-F", path], {"helo": ehlo("CHUNKING")})
        self.assertOk(result)
        conn = result.connections[0]
        message = b"Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\nend\r\n\r\n"   # not stuffed
        sizes = [len(message[i:i + 16]) for i in range(0, len(message), 16)]
        bdats = [c for c in conn.commands() if c.startswith(b"BDAT")]
        self.assertEqual(bdats, [b"BDAT %d\r\n" % n for n in sizes[:-1]]
                         + [b"BDAT %d LAST\r\n" % sizes[-1]])
        self.assertEqual(conn.chunked_messages(), [message])
        self.assertEqual(conn.messages(), [])
        self.assertNotIn(b"DATA\r\n", conn.commands())

    def test_one_chunk_and_headers(self):
        result = self.source(["--bdat=100000", "-d", "-m", "2"], {"helo": ehlo("CHUNKING")})
        self.assertOk(result)
        conn = result.connections[0]
        messages = conn.chunked_messages()
        self.assertEqual(len(messages), 2)
        self.assertTrue(undate(messages[0]).startswith(b"From: <foo@client.example>\r\n"))
        self.assertTrue(messages[0].endswith(b"\r\n\r\n" + LA_DE_DA))
        self.assertEqual([c for c in conn.commands() if c.startswith(b"BDAT")],
                         [b"BDAT %d LAST\r\n" % len(m) for m in messages])

    def test_data_without_chunking(self):
        result = self.source(["--bdat=10"], {"helo": ehlo("PIPELINING")})
        self.assertOk(result)
        self.assertEqual(len(result.connections[0].messages()), 1)
        self.assertEqual(result.connections[0].chunked_messages(), [])

    def test_pipelined_chunks(self):
        # With PIPELINING, the BDAT commands go out together: when the
        # first chunk is answered, the last is already there.
        bdat = Seen(b"250 2.0.0 chunk\r\n", wait_for=b"LAST\r\n")
        result = self.source(["--bdat=50", "--pipelining", "-l", "200"],
                             {"helo": ehlo("CHUNKING", "PIPELINING"), "bdat": bdat})
        self.assertOk(result)
        self.assertIn(b"LAST\r\n", bdat.after[0])
        self.assertEqual(len(result.connections[0].chunked_messages()), 1)

    def test_without_pipelining_each_chunk_waits(self):
        bdat = Seen(b"250 2.0.0 chunk\r\n")
        result = self.source(["--bdat=50", "-l", "200"],
                             {"helo": ehlo("CHUNKING"), "bdat": bdat})
        self.assertOk(result)
        # When a chunk is answered, the server has that chunk and no more.
        self.assertEqual([len(after) for after in bdat.after], [50] * (len(bdat.after)))

    def test_refused_chunk(self):
        replies = {"helo": ehlo("CHUNKING"), "bdat": b"554 5.3.4 too much\r\n"}
        result = self.source(["--bdat=50", "-l", "200"], replies)
        self.assertFatal(result, b"BDAT rejected: 554 5.3.4 too much")
        result = self.source(["--bdat=50", "-l", "200", "-A"], replies)
        self.assertEqual((result.rc, result.stderr),
                         (0, b"smtp-source: warning: BDAT rejected: 554 5.3.4 too much\n"))
        verbs = [c.split()[0] for c in self.commands(result)]
        self.assertEqual(verbs, [b"EHLO", b"MAIL", b"RCPT", b"BDAT", b"RSET", b"QUIT"])

    def test_refused_last_chunk(self):
        result = self.source(["--bdat=500", "-A", "-d", "-m", "2"],
                             {"helo": ehlo("CHUNKING"), "dot": b"552 5.3.4 no\r\n"})
        self.assertEqual(result.stderr, 2 * b"smtp-source: warning: end of data rejected: "
                         b"552 5.3.4 no\n")
        self.assertNotIn(b"RSET\r\n", self.commands(result))

    def test_lmtp_last_chunk_gets_a_reply_per_recipient(self):
        result = self.source(["-L", "-r", "3", "--bdat=20", "-c"], {"helo": ehlo("CHUNKING")},
                             lmtp=True)
        self.assertOk(result, stdout=b"1\r\n")
        events = result.connections[0].events
        last = max(i for i, (kind, data) in enumerate(events) if data.endswith(b"LAST\r\n"))
        self.assertEqual(events[last + 2:], [("S", b"250 2.0.0 Ok\r\n")] * 3
                         + [("C", b"QUIT\r\n"), ("S", b"221 Bye\r\n")])


class SizeTests(ModernCase):

    def test_size_when_announced(self):
        result = self.source(["--size", "-l", "500"], {"helo": ehlo("SIZE 1000000")})
        self.assertOk(result)
        conn = result.connections[0]
        mail = conn.commands()[1]
        size = int(re.match(rb"MAIL FROM:<foo@client.example> SIZE=(\d+)\r\n$", mail).group(1))
        self.assertEqual(size, len(unstuff(conn.messages()[0])))

    def test_size_is_before_stuffing(self):
        path = temp_file(self, b".a\n.b\n")
        result = self.source(["--size", "-F", path], {"helo": ehlo("SIZE")})
        conn = result.connections[0]
        self.assertEqual(conn.commands()[1],
                         b"MAIL FROM:<foo@client.example> SIZE=%d\r\n" % len(b".a\r\n.b\r\n\r\n"))
        self.assertEqual(conn.messages(), [b"..a\r\n..b\r\n\r\n.\r\n"])

    def test_no_size_without_the_announcement(self):
        result = self.source(["--size"], {"helo": ehlo("PIPELINING")})
        self.assertOk(result)
        self.assertEqual(self.commands(result)[1], MAIL)

    def test_with_pipelining_and_bdat(self):
        result = self.source(["--size", "--pipelining", "--bdat=64", "--integrity"],
                             {"helo": ehlo("SIZE", "PIPELINING", "CHUNKING")})
        self.assertOk(result)
        conn = result.connections[0]
        [message] = conn.chunked_messages()
        self.assertEqual(conn.commands()[1],
                         b"MAIL FROM:<foo@client.example> SIZE=%d\r\n" % len(message))


class IntegrityTests(ModernCase):

    def check(self, messages, count):
        verifier = integrity.Verifier()
        self.assertEqual([verifier.check(m) for m in messages], ["ok"] * len(messages))
        [(run, counts)] = verifier.totals().items()
        self.assertRegex(run, "^[0-9a-f]{16}$")
        self.assertEqual(counts, {"ok": count, "corrupt": 0, "duplicate": 0, "missing": 0,
                                  "count": count})
        return run

    def test_every_sequence_number_once(self):
        result = self.source(["--integrity", "-s", "3", "-m", "10", "-d", "-r", "2"])
        self.assertOk(result, connections=3)
        messages = [unstuff(m) for conn in result.connections for m in conn.messages()]
        self.assertEqual(len(messages), 10)
        self.check(messages, 10)
        seqs = sorted(integrity.parse(m)[1] for m in messages)
        self.assertEqual(seqs, list(range(10)))
        for message in messages:
            self.assertTrue(message.startswith(b"X-Smtp-Integrity: run="))
            # The rest is the message smtp-source always sends.
            rest = integrity.parse(message)[4]
            self.assertTrue(rest.startswith(b"From: <foo@client.example>\r\nTo: "))
            self.assertTrue(rest.endswith(b"\r\n\r\n" + LA_DE_DA))

    def test_digest_is_of_the_unstuffed_message(self):
        path = temp_file(self, b"Subject: x\n\n.\n..\n.end\n")
        result = self.source(["--integrity", "-F", path, "-m", "2", "-d"])
        self.assertOk(result)
        wire = result.connections[0].messages()[0]
        self.assertIn(b"\r\n..\r\n...\r\n..end\r\n", wire)     # stuffed on the wire
        message = unstuff(wire)
        run, seq, count, digest, rest = integrity.parse(message)
        self.assertEqual((seq, count, rest), (0, 2, b"Subject: x\r\n\r\n.\r\n..\r\n.end\r\n\r\n"))
        self.assertEqual(digest, hashlib.sha256(rest).hexdigest())
        self.check([unstuff(m) for m in result.connections[0].messages()], 2)

    def test_without_headers_and_in_chunks(self):
        result = self.source(["--integrity", "-o", "-l", "300", "-m", "3"])
        self.check([unstuff(c.messages()[0]) for c in result.connections], 3)
        result = self.source(["--integrity", "--bdat=77", "-m", "3", "-d", "-S", "a\r\n.b"],
                             {"helo": ehlo("CHUNKING")})
        self.check(result.connections[0].chunked_messages(), 3)

    def test_subject_with_a_dot_line_is_stuffed(self):
        # Postfix's tool sends -S as it is; with an extension the message
        # is stuffed properly, so that the sink sees what was meant.
        result = self.source(["--integrity", "-S", "a\r\n.b"])
        wire = result.connections[0].messages()[0]
        self.assertIn(b"Subject: a\r\n..b\r\n", wire)
        self.check([unstuff(wire)], 1)

    def test_each_run_has_its_own_id(self):
        runs = set()
        for _ in range(2):
            result = self.source(["--integrity"])
            runs.add(integrity.parse(unstuff(result.connections[0].messages()[0]))[0])
        self.assertEqual(len(runs), 2)


class RateTests(ModernCase):

    def test_messages_follow_the_schedule(self):
        # 21 messages at 20/s over 3 sessions: message k is due k/20 s after
        # the start, so by then at most k + 1 have gone: the k-th MAIL to
        # arrive comes no earlier (the run starts after the process does; a
        # busy machine only makes messages later, and a late one goes at
        # once, see below).
        # (A second for all: far more than a start-up takes, so that
        # messages sent all at once could not pass.)
        result = self.source(["--rate=20/s", "-s", "3", "-m", "21", "-d"])
        self.assertOk(result, connections=3)
        times = sorted(t for conn in result.connections
                       for (kind, data), t in zip(conn.events, conn.times)
                       if kind == "C" and data.startswith(b"MAIL"))
        self.assertEqual(len(times), 21)
        for k, arrived in enumerate(times):
            self.assertGreaterEqual(arrived - result.started, k / 20, (k, times))
        self.assertLess(times[-1] - times[0], 5)

    def test_per_minute(self):
        result = self.source(["--rate=1200/m", "-m", "13", "-d"])
        self.assertOk(result)
        times = [t for (kind, data), t in zip(result.connections[0].events,
                                              result.connections[0].times)
                 if kind == "C" and data.startswith(b"MAIL")]
        self.assertEqual(len(times), 13)
        for k, arrived in enumerate(times):                 # 1200/m: 20/s, 0.6 s
            self.assertGreaterEqual(arrived - result.started, k / 20, (k, times))

    def test_late_messages_go_at_once(self):
        # At 1000/s a session that is behind does not wait at all.
        started = time.monotonic()
        result = self.source(["--rate=1000", "-m", "200", "-s", "2", "-d"])
        self.assertOk(result, connections=2)
        self.assertLess(time.monotonic() - started, support.TIMEOUT)


if __name__ == "__main__":
    unittest.main()
