#!/usr/bin/env python3
"""smtp_sink.py - a parallel SMTP/LMTP test server that throws mail away.

SYNOPSIS
    smtp_sink.py [options] [inet:][host]:port backlog
    smtp_sink.py [options] unix:pathname backlog

DESCRIPTION
    smtp-sink listens on a TCP endpoint or a UNIX-domain socket, speaks just
    enough SMTP (or LMTP) to take mail from a client, and discards it.  It is
    a tool for measuring how fast a mail client sends, not a mail server: it
    checks only the order of MAIL, RCPT and DATA.  On request it captures
    every transaction to files, rejects or delays chosen commands, or drops
    connections, so that a client's error handling can be exercised.

    All sessions run in one thread, on one event loop, as in Postfix (a
    thread per session is three times slower in Python: see
    smtpcore/loop.py).  By default the program behaves like Postfix 3.7's
    smtp-sink, byte for byte, so that command lines and scripts written for
    that program work unchanged.

    An endpoint is "host:port", "[address]:port" (also "[::1]:port"),
    ":port" or "port" (all IPv4 addresses), optionally with an "inet:"
    prefix, or "unix:pathname".  backlog is the listen(2) queue length.

OPTIONS
    -4, -6      Use IPv4 only / IPv6 only.
    -8          Do not announce 8BITMIME.
    -a          Do not announce AUTH (AUTH commands are still accepted).
    -A delay    After the 354 reply to DATA, wait delay seconds, reply
                "550 This violates SMTP" and hang up without reading more.
                0 aborts at once.
    -b reply    The soft-reject reply for -r (default
                "450 4.3.0 Error: command failed"); must start with 4nn.
    -B reply    The hard-reject reply for -f (default
                "500 5.3.0 Error: command failed"); must start with 5nn.
    -c          Print "sess=N quit=N mesg=N" counters (ending in CR) on
                stdout at each end of data and each end of a session.
    -C          Disable XCLIENT (not announced, and refused).
    -d template Capture each transaction to its own file, named by
                strftime(3) of template at MAIL time plus 8 random hex
                digits ("%Y%m%d%H/%M." gives "2026112203/56.2306507e").
                Missing directories are created.
    -D template Append each transaction to one file named by strftime(3)
                of template; whole transactions only.
    -e          Do not announce ESMTP: plain "220 host" greeting, no EHLO.
    -E          Do not announce ENHANCEDSTATUSCODES (the codes stay).
    -f cmds     Reject the listed commands with the hard-reject reply.
                Implies -p.
    -F          Disable XFORWARD (not announced, and refused).
    -h hostname The name in the greeting, HELO/EHLO replies and Received:
                header (default "smtp-sink").
    -H delay    Do not read input for delay seconds after the 354 reply
                (ignored when DATA itself is delayed with -w).
    -L          Speak LMTP: LHLO instead of HELO/EHLO, and one reply per
                accepted recipient after the end of data.
    -m count    Serve at most count sessions at once (default 256); more
                connections wait in the kernel's listen queue.
    -M count    Exit (status 0) at the end of data of the count-th message,
                before replying to it.
    -n count    Exit (status 0) after count QUIT commands (counted, as by
                Postfix, only together with -c).
    -N          Do not announce DSN.
    -p          Do not announce PIPELINING.
    -P          Greet like a CISCO PIX firewall ("220 ********"); implies -e.
    -q cmds     Hang up, without a reply, on the listed commands.
    -Q cmds     Reply "421 4.0.0 Server closing connection" and hang up on
                the listed commands.
    -r cmds     Reject the listed commands with the soft-reject reply.
                Implies -p.
    -R dir      With -u: chroot(2) to dir after opening the socket.
    -s cmds     Log the listed commands to syslog (facility mail).
    -S string   Write string (with C escapes \\a \\b \\f \\n \\r \\t \\v \\\\ and
                \\ddd) in front of each captured transaction.
    -t timeout  Drop a client that sends nothing for timeout seconds
                (default 100).
    -T size     Set the TCP window (socket buffer sizes) of the listener.
    -u user     Run as user after opening the socket (and after -R).
                Required when started as root.
    -v          Show the conversations on stderr.
    -w delay    Wait delay seconds before replying to DATA (as -W data:delay).
    -W cmd:delay[:odds]
                Wait delay seconds before replying to cmd.  With odds
                (1-99), wait a random multiple of delay: the number of
                throws of a 100-sided die (0..99) before it shows a number
                of at least odds.

    Command lists ("cmds") name commands separated by commas or blanks, in
    any case: CONNECT (the greeting), HELO, EHLO, LHLO, XCLIENT, XFORWARD,
    AUTH, MAIL, RCPT, VRFY, DATA, "." (the end of data), RSET, NOOP, QUIT.
    When a command is in several lists, -q wins over -Q, -Q over -f, and
    -f over -r.  A rejected "." still captures and counts the message.

DIFFERENCES FROM POSTFIX
    Replies always come back in the order of the commands, also when they
    are delayed with -W, and pending replies are sent as soon as a command
    is complete rather than when more input arrives.  A fatal error exits
    at once instead of after a one-second pause.  When a capture file
    cannot be created or written, Postfix exits; this program prints a
    warning, answers the transaction with "451 4.3.0 Error: capture file
    unavailable" (never 250), and keeps serving.  Syslog (-s) is connected
    and the time zone loaded before -R changes the root directory, so both
    keep working inside an empty jail (Postfix then logs nothing and dates
    captures in UTC).

EXIT STATUS
    0 after -M or -n; 1 after a usage or start-up error.
"""

import errno
import os
import random
import signal
import socket
import struct
import sys
import syslog
import threading
import time

from smtpcore import dump, endpoints, loop, messages, options, privileges

# ----------------------------------------------------------------- constants

PROGRAM = "smtp-sink"
OPTSTRING = "+468aA:b:B:cCd:D:eEf:Fh:H:Ln:m:M:NpPq:Q:r:R:s:S:t:T:u:vw:W:"
USAGE = ("usage: %s [-468acCeEFLpPv] [-A abort_delay] [-b soft_bounce_reply] "
         "[-B hard_bounce_reply] [-d dump-template] [-D dump-template] "
         "[-f commands] [-h hostname] [-m max_concurrency] "
         "[-M message_quit_count] [-n quit_count] [-q commands] [-r commands] "
         "[-R root-dir] [-s commands] [-S start-string] [-u user_privs] "
         "[-w delay] [host]:port backlog")

DEFAULT_HOSTNAME = "smtp-sink"
DEFAULT_TIMEOUT = 100           # -t, seconds
DEFAULT_MAX_SESSIONS = 256      # -m
MAX_LINE = 2048                 # a command line, CRLF included (Postfix's limit)
RECV_SIZE = 65536
END_OF_DATA = b"\r\n.\r\n"      # RFC 5321 4.1.1.4, seen with the CRLF before it

SOFT_REPLY = "450 4.3.0 Error: command failed"
HARD_REPLY = "500 5.3.0 Error: command failed"
CLOSE_REPLY = b"421 4.0.0 Server closing connection\r\n"
ABORT_REPLY = b"550 This violates SMTP\r\n"
CAPTURE_FAILED = b"451 4.3.0 Error: capture file unavailable\r\n"

UNKNOWN_COMMAND = b"500 5.5.1 Error: unknown command\r\n"
EMPTY_COMMAND = b"500 5.5.2 Error: unknown command\r\n"
OK = b"250 2.0.0 Ok\r\n"
MAIL_OK = b"250 2.1.0 Ok\r\n"
RCPT_OK = b"250 2.1.5 Ok\r\n"
LMTP_OK = b"250 2.2.0 Ok\r\n"
NESTED_MAIL = b"503 5.5.1 Error: nested MAIL command\r\n"
NEED_MAIL = b"503 5.5.1 Error: need MAIL command\r\n"
NEED_RCPT = b"503 5.5.1 Error: need RCPT command\r\n"
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
BYE = b"221 Bye\r\n"


# ------------------------------------------------------------- command table

class Command:
    """One row of the command table: what a verb does, and what the options
    asked to be done to it (checked in this order: syslog, -q, -Q, -f, -r,
    delay, then the verb's own handler)."""

    __slots__ = ("name", "handler", "enabled", "syslog", "disconnect",
                 "close", "hard", "soft", "delay", "odds", "plain")

    def __init__(self, name, handler, enabled=True):
        self.name = name
        self.handler = handler      # Session method (unbound)
        self.enabled = enabled      # False: "500 5.5.1 Error: unknown command"
        self.syslog = False         # -s
        self.disconnect = False     # -q
        self.close = False          # -Q
        self.hard = False           # -f
        self.soft = False           # -r
        self.delay = 0              # -W / -w, seconds
        self.odds = 0               # -W odds, 0: a fixed delay
        self.plain = True           # none of the above: straight to the handler

    def settle(self):
        self.plain = not (self.syslog or self.disconnect or self.close or self.hard
                          or self.soft or self.delay)


class Settings:
    """Everything the command line asked for."""

    def __init__(self):
        self.family = None                  # -4 / -6
        self.ehlo_8bitmime = True           # -8
        self.ehlo_auth = True               # -a
        self.abort_delay = None             # -A
        self.soft_reply = SOFT_REPLY        # -b
        self.hard_reply = HARD_REPLY        # -B
        self.count = False                  # -c
        self.ehlo_xclient = True            # -C
        self.single_template = None         # -d
        self.shared_template = None         # -D
        self.esmtp = True                   # -e
        self.ehlo_enhanced = True           # -E
        self.ehlo_xforward = True           # -F
        self.hostname = DEFAULT_HOSTNAME    # -h
        self.read_delay = 0                 # -H
        self.lmtp = False                   # -L
        self.max_sessions = DEFAULT_MAX_SESSIONS    # -m
        self.max_messages = 0               # -M
        self.max_quits = 0                  # -n
        self.ehlo_dsn = True                # -N
        self.ehlo_pipelining = True         # -p (and -f, -r)
        self.pix = False                    # -P
        self.root_dir = None                # -R
        self.start_string = None            # -S
        self.timeout = DEFAULT_TIMEOUT      # -t
        self.window = 0                     # -T
        self.user = None                    # -u
        self.verbose = 0                    # -v
        self.commands = {}                  # name -> Command
        self.endpoint = None
        self.backlog = 0
        self.syslog_ident = None

    @property
    def template(self):
        return self.single_template or self.shared_template

    def table(self):
        """The command table keyed by lower-case verb (bytes)."""
        for row in self.commands.values():
            row.settle()
        return {name.encode(): row for name, row in self.commands.items()}


def new_commands():
    rows = [Command("connect", Session.smtp_CONNECT, enabled=False),   # the greeting
            Command("helo", Session.smtp_HELO, enabled=False),
            Command("ehlo", Session.smtp_EHLO, enabled=False),
            Command("lhlo", Session.smtp_EHLO, enabled=False),
            Command("xclient", Session.smtp_OK),
            Command("xforward", Session.smtp_OK),
            Command("auth", Session.smtp_OK),
            Command("mail", Session.smtp_MAIL),
            Command("rcpt", Session.smtp_RCPT),
            Command("data", Session.smtp_DATA),
            Command(".", Session.smtp_DOT),
            Command("rset", Session.smtp_RSET),
            Command("noop", Session.smtp_OK),
            Command("vrfy", Session.smtp_OK),
            Command("quit", Session.smtp_QUIT)]
    return {row.name: row for row in rows}


# ------------------------------------------------------------------ sessions

class SessionEnd(Exception):
    """Raised inside a session to end it (QUIT, -q, -Q, -A, -M, ...);
    what is pending is still sent.  args[0]: what -v says ("disconnect")."""


class WriteTimeout(Exception):
    """The client did not take our replies within -t seconds."""


class Session(loop.Waiter):
    """One client connection: reads commands and message data, writes replies.

    The protocol side is plain method calls: feed() takes the bytes that
    came in, parses command lines or message data, and each command's
    handler appends its reply to self.out.  The replies are sent with one
    write when the input at hand is used up (RFC 2920).  A delay (-W, -w,
    -A, -H) stops the parsing: self.pause says how long and what to do
    then, and the input not yet used waits in self.pending.

    The I/O side is the generator run(), driven by the server's event loop.
    """

    def __init__(self, server, sock, peer):
        self.server = server
        self.settings = settings = server.settings
        self.table = server.table
        self.msg = server.msg
        self.verbose = server.msg.verbose
        self.sock = sock
        self.fd = sock.fileno()
        self.out = []
        self.line = b""             # an incomplete command line
        self.pending = b""          # input waiting for the end of a pause
        self.pause = None           # (seconds, what to do after) or None
        self.in_data = False
        self.tail = b""             # the last bytes of the DATA stream so far
        self.in_mail = False
        self.rcpts = 0              # as Postfix: LMTP end of data leaves -1
        self.capture = None         # dump.Capture of the open transaction
        self.capture_failed = False # a write to it failed: do not say 250
        self.helo_args = None
        self.proto = b"LMTP" if settings.lmtp else b"SMTP"
        family = sock.family
        self.addr, self.addr_prefix = endpoints.client_address(family, peer)
        if family != socket.AF_UNIX:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass                    # already reset by the client
        if self.msg.verbose:
            self.verbose_connect(sock, family)
        self.steps = self.run()

    def verbose_connect(self, sock, family):
        name = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6"}.get(family, "AF_LOCAL")
        self.msg.info("connect (%s %s)" % (name, self.addr))
        if family != socket.AF_UNIX:
            try:
                mss = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
            except OSError:
                mss = 0
            self.msg.info("vstream_tweak_tcp: TCP_MAXSEG %d" % mss)
            if mss * 4 > 4096:
                self.msg.info("fd=%d: stream buffer size old=0 new=%d"
                              % (sock.fileno(), mss * 4))
        self.msg.info("smtp_stream_setup: maxtime=%d enable_deadline=0 "
                      "min_data_rate=0" % self.settings.timeout)

    # ---- the conversation (I/O)

    def run(self):
        """The session's life, as the event loop drives it."""
        sock, timeout, feed = self.sock, self.settings.timeout, self.feed
        recv, send, monotonic, readable = sock.recv, sock.send, time.monotonic, loop.READABLE
        reason = "disconnect"
        try:
            try:
                self.execute(self.table[b"connect"], b"connect", b"")
                yield from self.respond()
                while True:
                    self.deadline = monotonic() + timeout
                    if not (yield readable):
                        self.msg.warning("read timeout")
                        reason = None
                        break
                    try:
                        data = recv(RECV_SIZE)
                    except BlockingIOError:
                        continue
                    if not data:
                        break
                    feed(data)
                    out = self.out
                    if self.pause:
                        yield from self.respond()
                    elif out:           # the usual case, without a generator
                        data = out[0] if len(out) == 1 else b"".join(out)
                        self.out = []
                        try:
                            sent = send(data)
                        except BlockingIOError:
                            sent = 0
                        if sent < len(data):
                            yield from self.drain(data[sent:])
            except SessionEnd as end:
                reason = end.args[0] if end.args else None
                yield from self.respond(final=True)
        except WriteTimeout:
            self.msg.warning("write timeout")
            reason = None
        except OSError:
            reason = "disconnect"       # reset by the client: silent, as Postfix
        finally:
            self.close()
        if reason and self.msg.verbose:
            self.msg.info(reason)

    def respond(self, final=False):
        """Send the replies; carry out pauses and what comes after them."""
        while True:
            if self.out:
                data = b"".join(self.out)
                self.out = []
                try:
                    sent = self.sock.send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    yield from self.drain(data[sent:])
            if final or self.pause is None:
                return
            seconds, then = self.pause
            self.pause = None
            if seconds > 0:
                yield seconds
            if then is not None:
                then()
            if self.pause is None and self.pending:
                data, self.pending = self.pending, b""
                self.feed(data)

    def drain(self, data):
        """The client is slow to read: wait until it takes all of data."""
        timeout = self.settings.timeout
        while data:
            self.deadline = time.monotonic() + timeout
            if not (yield loop.WRITABLE):
                raise WriteTimeout()
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            data = data[sent:]

    def close(self):
        if self.capture is not None:
            self.capture.abort()
            self.capture = None
        self.server.session_ended(self)

    # ---- the conversation (protocol)

    def feed(self, data):
        """Use up received bytes, up to the end or up to a pause."""
        while data:
            if self.in_data:
                data = self.data_bytes(data)
                if self.in_data:
                    return
                self.end_of_data()
                if self.pause:
                    self.pending = data
                    return
                continue
            if self.line:
                data = self.line + data
                self.line = b""
            start = 0
            while True:
                end = data.find(b"\r\n", start)
                if end < 0:
                    rest = data[start:]
                    if len(rest) > MAX_LINE:
                        self.too_long()
                    self.line = rest
                    return
                if end + 2 - start > MAX_LINE:
                    self.too_long()
                self.command(data[start:end])
                start = end + 2
                if self.pause:
                    self.pending = data[start:]
                    return
                if self.in_data:
                    data = data[start:]
                    break

    def too_long(self):
        self.msg.warning("command line too long")
        raise SessionEnd("disconnect")

    def command(self, line):
        """Parse and carry out one command line (without its CRLF).  The
        arguments go to the handler as received; what is kept of them (in
        a capture or the log) is made printable there."""
        if b"\0" in line:                   # C strings end at NUL
            line = line[:line.find(b"\0")]
        if self.verbose:
            self.msg.info(dump.printable(line))
        if line.startswith((b" ", b"\t")):
            line = line.lstrip(b" \t")
        verb, blank, args = line.partition(b" ")
        if b"\t" in verb:                  # the verb ended at a tab
            verb, _, head = verb.partition(b"\t")
            args = head + blank + args
        row = self.table.get(verb.lower())
        if row is None or not row.enabled:
            self.out.append(UNKNOWN_COMMAND if verb else EMPTY_COMMAND)
        elif row.plain:
            row.handler(self, args)
        else:
            self.execute(row, verb, args)

    def execute(self, row, verb, args):
        """Apply the options' flags of a command, then its handler."""
        settings = self.settings
        if row.syslog:
            syslog.syslog(syslog.LOG_INFO, "%s %.100s" % (
                verb.decode("latin-1"), dump.printable(args).decode("latin-1")))
        if row.disconnect:
            raise SessionEnd("disconnect")
        if row.close:
            self.out.append(CLOSE_REPLY)
            raise SessionEnd("disconnect")
        if row.hard or row.soft:
            reply = settings.hard_reply if row.hard else settings.soft_reply
            self.reject(row, reply)
        elif row.delay:
            self.pause = (row.delay * self.delay_multiplier(row.odds),
                          lambda: row.handler(self, args))
        else:
            row.handler(self, args)

    def reject(self, row, reply):
        line = reply.encode("utf-8", "surrogateescape") + b"\r\n"
        if row.name == ".":
            self.dot_reply(line)
        else:
            self.out.append(line)

    def dot_reply(self, line):
        """The reply to "." -- in LMTP once per recipient.  As in Postfix the
        recipient count then drops below zero (so that a later DATA without
        a new MAIL is accepted, and a later "." gets no reply)."""
        if self.settings.lmtp:
            if self.rcpts > 0:
                self.out.append(line * self.rcpts)
            self.rcpts = min(self.rcpts, 0) - 1
        else:
            self.out.append(line)

    def delay_multiplier(self, odds):
        if not odds:
            return 1
        rolls = 0
        while self.server.random.randrange(100) < odds:
            rolls += 1
        return rolls

    # ---- message data

    def data_bytes(self, data):
        """Take message bytes; returns what follows the end of data (and
        leaves DATA mode) or b"" while the message goes on."""
        tail = self.tail
        edge = (tail + data[:4]).find(END_OF_DATA)
        if edge >= 0:
            end = edge + 5 - len(tail)
        else:
            end = data.find(END_OF_DATA)
            if end >= 0:
                end += 5
        body = data if end < 0 else data[:end]
        if self.capture is not None and not self.capture_failed:
            self.capture_add(dump.unstuff(body, tail[-2:]))
        if end < 0:
            self.tail = data[-4:] if len(data) >= 4 else (tail + data)[-4:]
            return b""
        self.in_data = False
        return data[end:]

    def capture_add(self, data):
        try:
            self.capture.add(data)
        except OSError as err:
            capture_warning(self.msg, err, self.capture.path)
            self.capture_failed = True

    def end_of_data(self):
        """The message is complete: store it, count it, then answer "."."""
        capture, self.capture = self.capture, None
        stored = capture is None or self.store(capture)
        self.in_mail = False
        if stored and not self.server.message_done():
            raise SessionEnd(None)              # -M: exit before replying
        if self.msg.verbose:
            self.msg.info(".")
        self.capture_failed = not stored        # smtp_DOT: 451, not 250
        try:
            self.execute(self.table[b"."], b".", b"")
        finally:
            if not self.pause:                  # else smtp_DOT comes later
                self.capture_failed = False

    def store(self, capture):
        """Commit a capture; False (with a warning) when it was not stored."""
        if self.capture_failed:
            capture.abort()
            return False
        path = capture.path
        try:
            capture.commit()
        except OSError as err:
            capture_warning(self.msg, err, path)
            return False
        return True

    # ---- command handlers: each appends its reply

    def smtp_CONNECT(self, args):
        settings = self.settings
        if settings.pix:
            self.out.append(b"220 ********\r\n")
        elif not settings.esmtp:
            self.out.append(b"220 " + self.server.hostname + b"\r\n")
        else:
            self.out.append(b"220 " + self.server.hostname + b" ESMTP\r\n")

    def smtp_HELO(self, args):
        self.reset_transaction()
        self.proto = b"SMTP"
        self.out.append(self.server.helo_reply)
        self.helo_args = dump.printable(args).lstrip(b" ")

    def smtp_EHLO(self, args):              # also LHLO
        self.reset_transaction()
        if not self.settings.lmtp:
            self.proto = b"ESMTP"
        self.out.append(self.server.ehlo_reply)
        self.helo_args = dump.printable(args).lstrip(b" ")

    def smtp_OK(self, args):                # NOOP, VRFY, AUTH, XCLIENT, XFORWARD
        self.out.append(OK)

    def smtp_RSET(self, args):
        self.reset_transaction()
        self.out.append(MAIL_OK)

    def smtp_MAIL(self, args):
        if self.in_mail:
            self.out.append(NESTED_MAIL)
        elif self.settings.template and not self.open_capture(args):
            self.out.append(CAPTURE_FAILED)
        else:
            self.in_mail = True
            self.rcpts = 0
            self.out.append(MAIL_OK)

    def smtp_RCPT(self, args):
        if not self.in_mail:
            self.out.append(NEED_MAIL)
            return
        self.rcpts += 1
        self.out.append(RCPT_OK)
        if self.capture is not None:
            self.capture_add(b"X-Rcpt-Args: " + address_args(args) + b"\n")

    def smtp_DATA(self, args):
        if not self.in_mail or self.rcpts == 0:
            self.out.append(NEED_RCPT)
            return
        self.out.append(GO_AHEAD)
        settings = self.settings
        if settings.abort_delay is not None:
            self.pause = (settings.abort_delay, self.abort)
            return
        if self.capture is not None:
            self.capture_add(self.received_header())
        self.in_data = True
        self.tail = b"\r\n"             # the CRLF that ended "DATA"
        if settings.read_delay and not self.table[b"data"].delay:
            self.pause = (settings.read_delay, None)

    def abort(self):
        """-A: "550 This violates SMTP" after the 354, and hang up."""
        self.out.append(ABORT_REPLY)
        raise SessionEnd(None)

    def smtp_DOT(self, args):
        if self.capture_failed:
            self.dot_reply(CAPTURE_FAILED)
            self.capture_failed = False
        else:
            self.dot_reply(LMTP_OK if self.settings.lmtp else OK)

    def smtp_QUIT(self, args):
        self.out.append(BYE)
        self.server.quit_done()
        raise SessionEnd("disconnect")

    # ---- transactions and capture files

    def reset_transaction(self):
        self.in_mail = False
        if self.capture is not None:
            self.capture.abort()
            self.capture = None
        self.capture_failed = False

    def open_capture(self, args):
        """Start the capture of a transaction at MAIL time; False (with a
        warning) when the capture file cannot be made."""
        settings = self.settings
        capture = dump.Capture(settings.template, settings.shared_template is not None,
                               time.time())
        header = [settings.start_string or b"",
                  b"X-Client-Addr: ", self.addr_prefix.encode(), self.addr.encode(), b"\n",
                  b"X-Client-Proto: ", self.proto, b"\n"]
        if self.helo_args is not None:
            header += [b"X-Helo-Args: ", self.helo_args, b"\n"]
        header += [b"X-Mail-Args: ", address_args(args), b"\n"]
        try:
            capture.open(self.server.random_id)
            capture.add(b"".join(header))
        except OSError as err:
            capture_warning(self.msg, err, capture.path)
            capture.abort()
            return False
        self.capture = capture
        self.capture_failed = False
        return True

    def received_header(self):
        client = "%s%s" % (self.addr_prefix, self.addr)
        helo = self.helo_args if self.helo_args is not None \
            else ("[%s]" % client).encode()
        return b"".join([
            b"Received: from ", helo, b" ([", client.encode(), b"])\n",
            b"\tby ", self.server.hostname, b" (smtp-sink) with ", self.proto,
            b" id %08x;\n" % self.capture.ident,
            b"\t", dump.mail_date(self.capture.when).encode(), b"\n"])


def capture_warning(msg, err, path):
    """A capture file problem, in Postfix's words: "mkdir D: ...",
    "open F: ..." or, for a failed write, "append file F: ..."."""
    if isinstance(err, dump.MkdirError):
        action, path = "mkdir", err.filename
    elif err.filename is not None:      # os.open() names its file
        action, path = "open", err.filename
    else:
        action = "append file"
    msg.warning("%s %s: %s" % (action, os.fsdecode(path or b""), endpoints.strerror(err)))


def address_args(args):
    """X-Mail-Args / X-Rcpt-Args: the text after the first run of colons,
    made printable."""
    colon = args.find(b":")
    if colon < 0:
        return b""
    return dump.printable(args[colon:]).lstrip(b":").lstrip(b" ")


# -------------------------------------------------------------------- server

ACCEPT_BATCH = 64           # connections taken per wake-up of the listener


class SinkServer(loop.Waiter):
    """The listening socket, the session limit (-m), and what sessions
    share: counters (-c, -M, -n), the random generator, the way to stop.

    All sessions run in one thread, on one event loop (smtpcore.loop):
    the listener is a session of its own that accepts connections while
    fewer than -m sessions are open, and otherwise waits (PARKED) in the
    kernel's listen queue's stead.
    """

    def __init__(self, settings, listener, msg):
        self.socket = listener
        self.settings = settings
        self.msg = msg
        self.table = settings.table()
        self.hostname = settings.hostname.encode("utf-8", "surrogateescape")
        self.ehlo_reply = ehlo_reply(settings, self.hostname)
        self.helo_reply = b"250 " + self.hostname + b"\r\n"
        self.random = random.Random(int(time.time()))   # as Postfix: seeded by time
        self.exit_status = None
        self.stopping = False
        self.sessions = self.quits = self.messages = 0
        self.message_total = 0
        self.active = {}                    # fd -> Session
        self.parked = False
        self.loop = loop.Loop()
        self.fd = listener.fileno()
        self.steps = self.accept_connections()
        self.stdout = getattr(sys.stdout, "buffer", sys.stdout)

    def random_id(self):
        return self.random.getrandbits(31)

    # ---- accepting

    def serve(self):
        """Accept and serve until stop(); returns the exit status."""
        self.socket.setblocking(False)
        self.loop.start(self)
        self.loop.run()
        return self.exit_status

    def accept_connections(self):
        """The listener's session: take connections while there is room."""
        max_sessions = self.settings.max_sessions
        while True:
            if len(self.active) >= max_sessions:
                self.parked = True
                yield loop.PARKED           # session_ended() wakes us
                continue
            yield loop.READABLE
            for _ in range(ACCEPT_BATCH):
                if len(self.active) >= max_sessions:
                    break
                try:
                    sock, peer = self.socket.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionAbortedError:
                    continue
                except OSError as err:
                    if err.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS,
                                         errno.ENOMEM):
                        raise
                    self.msg.warning("accept: %s" % endpoints.strerror(err))
                    yield 0.1               # let sessions end and free descriptors
                    break
                sock.setblocking(False)
                session = Session(self, sock, peer)
                self.active[session.fd] = session
                self.loop.start(session)

    def session_ended(self, session):
        """A session is over: its socket is closed here, its slot freed."""
        self.loop.forget(session.fd)
        self.active.pop(session.fd, None)
        session.sock.close()
        if self.stopping:
            return
        settings = self.settings
        if settings.count:
            self.sessions += 1
            self.show_counters()
        if settings.max_quits and self.quits >= settings.max_quits:
            self.stop(0)
        elif self.parked:
            self.parked = False
            self.loop.wake(self)

    # ---- counters (-c, -M, -n)

    def show_counters(self):
        self.stdout.write(b"sess=%d quit=%d mesg=%d\r"
                          % (self.sessions, self.quits, self.messages))
        self.stdout.flush()

    def quit_done(self):
        if self.settings.count:         # as Postfix: -n counts only with -c
            self.quits += 1

    def message_done(self):
        """A message is complete; False when -M says to stop right now."""
        settings = self.settings
        if self.stopping:
            return False
        if settings.count:
            self.messages += 1
            self.show_counters()
        self.message_total += 1
        if settings.max_messages and self.message_total >= settings.max_messages:
            self.stop(0)
            return False
        return True

    # ---- stopping

    def stop(self, status):
        """Make serve() return status; open sessions are cut off.  Safe from
        another thread and from a signal handler."""
        if self.exit_status is None:
            self.exit_status = status
        self.stopping = True
        self.loop.stop()

    def server_close(self):
        """Close the listener and cut off open sessions (a reset each)."""
        self.stopping = True
        for session in list(self.active.values()):
            try:
                session.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
            except OSError:
                pass
            session.steps.close()           # runs its clean-up
        self.socket.close()
        self.loop.close()


def ehlo_reply(settings, hostname):
    lines = [b"250-" + hostname]
    for wanted, keyword in ((settings.ehlo_pipelining, b"PIPELINING"),
                            (settings.ehlo_8bitmime, b"8BITMIME"),
                            (settings.ehlo_auth, b"AUTH PLAIN LOGIN"),
                            (settings.ehlo_xclient, b"XCLIENT NAME HELO"),
                            (settings.ehlo_xforward, b"XFORWARD NAME ADDR PROTO HELO"),
                            (settings.ehlo_enhanced, b"ENHANCEDSTATUSCODES"),
                            (settings.ehlo_dsn, b"DSN")):
        if wanted:
            lines.append(b"250-" + keyword)
    lines.append(b"250 ")
    return b"\r\n".join(lines) + b"\r\n"


# ----------------------------------------------------------- option parsing

def parse_options(args, msg):
    """Turn the command line into Settings; fatal errors as Postfix words them."""
    settings = Settings()
    commands = settings.commands = new_commands()

    def usage():
        msg.fatal(USAGE % msg.prog)

    def lookup(name):
        row = commands.get(name.lower())
        if row is None:
            msg.fatal("unknown command: %s" % name)
        return row

    def mark(text, flag):
        for name in options.split_list(text):
            setattr(lookup(name), flag, True)

    def positive(text, complaint):
        value = options.atoi(text)
        if value <= 0:
            msg.fatal("%s: %s" % (complaint, text))
        return value

    def bounce_reply(text, first, kind):
        digits = len(text) - len(text.lstrip("0123456789"))
        if not text.startswith(first) or digits != 3:
            msg.error("bad %s error reply: %s" % (kind, text))
            usage()
        return text

    def command_delay(text):
        fields = [field for field in text.split(":") if field]
        if len(fields) < 2:
            msg.fatal("invalid command delay argument: %s" % text)
        row = lookup(fields[0])
        delay = options.atoi(fields[1])
        if delay <= 0:
            msg.fatal("non-positive '%s' delay" % fields[0])
        odds = options.atoi(fields[2]) if len(fields) > 2 else 0
        if odds < 0 or odds > 99:
            msg.fatal("delay odds for '%s' out of range" % fields[0])
        row.delay, row.odds = delay, odds

    def apply_option(letter, value):
        if letter in "46":
            settings.family = letter
        elif letter == "8":
            settings.ehlo_8bitmime = False
        elif letter == "a":
            settings.ehlo_auth = False
        elif letter == "A":
            if not options.alldig(value):
                usage()
            settings.abort_delay = options.atoi(value)
            if settings.abort_delay < 0:
                usage()
        elif letter == "b":
            settings.soft_reply = bounce_reply(value, "4", "soft")
        elif letter == "B":
            settings.hard_reply = bounce_reply(value, "5", "hard")
        elif letter == "c":
            settings.count = True
        elif letter == "C":
            settings.ehlo_xclient = False
            commands["xclient"].enabled = False
        elif letter == "d":
            settings.single_template = value
        elif letter == "D":
            settings.shared_template = value
        elif letter == "e":
            settings.esmtp = False
        elif letter == "E":
            settings.ehlo_enhanced = False
        elif letter == "f":
            mark(value, "hard")
            settings.ehlo_pipelining = False
        elif letter == "F":
            settings.ehlo_xforward = False
            commands["xforward"].enabled = False
        elif letter == "h":
            settings.hostname = value
        elif letter == "H":
            settings.read_delay = positive(value, "bad data read delay")
        elif letter == "L":
            settings.lmtp = True
        elif letter == "m":
            settings.max_sessions = positive(value, "bad concurrency limit")
        elif letter == "M":
            settings.max_messages = positive(value, "bad message quit count")
        elif letter == "n":
            settings.max_quits = positive(value, "bad quit count")
        elif letter == "N":
            settings.ehlo_dsn = False
        elif letter == "p":
            settings.ehlo_pipelining = False
        elif letter == "P":
            settings.pix = True
            settings.esmtp = False
        elif letter == "q":
            mark(value, "disconnect")
        elif letter == "Q":
            mark(value, "close")
        elif letter == "r":
            mark(value, "soft")
            settings.ehlo_pipelining = False
        elif letter == "R":
            settings.root_dir = value
        elif letter == "s":
            settings.syslog_ident = os.path.basename(msg.prog)
            mark(value, "syslog")
        elif letter == "S":
            settings.start_string = dump.unescape(value)
        elif letter == "t":
            settings.timeout = positive(value, "bad timeout")
        elif letter == "T":
            settings.window = positive(value, "bad TCP window size")
        elif letter == "u":
            settings.user = value
        elif letter == "v":
            settings.verbose += 1
        elif letter == "w":
            delay = options.atoi(value)
            if delay <= 0:
                usage()
            commands["data"].delay, commands["data"].odds = delay, 0
        elif letter == "W":
            command_delay(value)

    parser = options.GetOpt(args, OPTSTRING)
    try:
        for letter, value in parser:
            apply_option(letter, value)
    except options.UsageError as err:
        if err.complaint:
            msg.info(err.complaint)
        usage()
    operands = parser.operands
    if len(operands) != 2:
        usage()
    settings.endpoint = operands[0]
    settings.backlog = options.atoi(operands[1])
    if settings.backlog <= 0:
        usage()
    if settings.single_template is not None and settings.shared_template is not None:
        msg.fatal("use only one of -d or -D, but not both")
    # Which greeting verbs exist: LHLO for LMTP, HELO only without ESMTP.
    if settings.lmtp:
        commands["lhlo"].enabled = True
    else:
        commands["helo"].enabled = True
        commands["ehlo"].enabled = settings.esmtp
    return settings


def prepare_for_chroot():
    """Load now what sessions use later: after chroot(2) the library files,
    codecs and time zone data may be out of reach."""
    time.strftime("%a, %e %b %Y %H:%M:%S %z (%Z)", time.localtime())
    "x".encode("latin-1").decode("latin-1")
    "x".encode("utf-8", "surrogateescape").decode("ascii", "replace")
    os.fsencode("x")
    random.Random(0).getrandbits(31)


# ---------------------------------------------------------------------- main

def main(argv=None, prog=None):
    """Run the sink; returns the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    msg = messages.Messages(prog or messages.program_name(sys.argv[0], PROGRAM))
    server = None
    terminated = []
    try:
        # 1. Parse the command line.
        settings = parse_options(argv, msg)
        msg.verbose = settings.verbose
        if os.geteuid() == 0 and settings.user is None:
            msg.fatal("-u option is required if running as root")
        if settings.syslog_ident is not None:
            syslog.openlog(settings.syslog_ident, syslog.LOG_PID | syslog.LOG_NDELAY,
                           syslog.LOG_MAIL)
        if msg.verbose:
            msg.info("name_mask: all")

        # 2. Open the listening socket (as root, if we are root).
        listener, _ = endpoints.listen(settings.endpoint, settings.backlog, msg,
                                       settings.family, settings.window)

        # 3. Give up privileges for good: chroot, groups, gid, uid.
        try:
            prepare_for_chroot()
            privileges.drop(settings.user, settings.root_dir, msg)
        except BaseException:
            listener.close()
            raise

        # 4. Serve until -M or -n says stop.  SIGTERM stops it too, but only
        #    between whole capture records; the process then ends as killed.
        server = SinkServer(settings, listener, msg)
        if threading.current_thread() is threading.main_thread():
            def on_term(signum, frame):
                terminated.append(signum)
                server.stop(None)
            signal.signal(signal.SIGTERM, on_term)
        return server.serve()
    except messages.Fatal:
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            server.server_close()
        if terminated:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)    # as Postfix: ^C just ends it
    sys.exit(main())
