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

    Each session runs in a thread of its own (socketserver with a pool of
    session threads), or, with --engine=loop, all of them in one thread on
    one event loop, as in Postfix.  By default the program behaves like
    Postfix 3.7's smtp-sink, byte for byte, so that command lines and
    scripts written for that program work unchanged.

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

EXTENSIONS
    Everything beyond Postfix is a long option, so that no Postfix command
    line changes its meaning; without them the program is byte for byte
    Postfix's.  A value follows "=" or comes as the next argument.  Any
    other "--word" is, as for Postfix, an invalid option.

    --help      Print the usage line and these options on stdout; exit 0.
    --chunking  Announce CHUNKING and take BDAT (RFC 3030): "BDAT size
                [LAST]" followed by exactly size octets, taken as they
                are (no dot-stuffing).  Each chunk is answered "250 2.0.0
                Ok: size bytes", the LAST one as the end of data (".")
                is: the message is then captured, counted, verified, ends
                -M, and gets one reply per recipient in LMTP.  BDAT
                without MAIL or RCPT gets "503 5.5.1 Error: need RCPT
                command" and DATA or RCPT after BDAT "503 5.5.1 Error:
                DATA after BDAT" ("RCPT after BDAT"); the chunk's octets
                are read and thrown away all the same, so the stream stays
                in step.  A size that is not a number gets "501 5.5.4
                Syntax: BDAT count [LAST]" and the connection is closed (the
                chunk cannot be skipped).  BDAT is subject to the flags of
                DATA (-f, -r and -W answer after the chunk's octets, -q
                and -Q hang up at once, -s logs), the LAST chunk also to
                those of "."; -A and -H apply to DATA only.
    --keep-pipelining
                Keep announcing PIPELINING when -f or -r are given (-p
                still turns it off).  Replies stay in order.
    --lmtp-replies=SPEC
                With -L: the replies after the end of data, one per
                recipient, taken in turn from SPEC for the recipients of
                each message (the first recipient gets the first item,
                and so on; SPEC starts over when it runs out).  SPEC is a
                comma-separated list of replies, each "ddd" or "ddd text"
                (ddd: 2nn, 4nn or 5nn; text without commas).  A bare code
                gets a text: 250 the usual "250 2.2.0 Ok", others
                "ddd d.0.0 Ok" (2nn) or "ddd d.0.0 Error: delivery failed"
                (4nn, 5nn).  Example: --lmtp-replies=250,452,"550 5.1.1
                User unknown".  -f/-r on "." still answer every recipient
                with their reply.
    --maildir=DIR
                Capture each message (the same record as -d) into the
                Maildir DIR: written to DIR/tmp/NAME, then renamed into
                DIR/new/NAME before the 250 reply (a 451 if that fails),
                NAME being "seconds.MmicrosPpidQn.host".  The tmp, new
                and cur directories are made when missing.  Not with -d
                or -D.
    --engine=threads|loop
                How sessions are run.  threads (the default): a thread per
                session, kept for the next one, waiting on its socket; the
                design to read and to extend.  loop: every session in one
                thread, on one event loop (epoll), as Postfix's own
                program is built; the faster of the two, as a thread
                that waits for its client sleeps and another wakes (a
                context switch) at each command, where the loop wakes
                once for many (see the README's Benchmarks).  Replies,
                captures, counters and timing are the same under both.
    --procs=N   N worker processes (1-256) serve the same endpoint, each
                with its own sessions (under either engine), so that more
                than one core is used; on TCP each has its own listening socket
                (SO_REUSEPORT: the kernel spreads the clients).  -c, -M,
                -n, --stats and --verify count for all of them together:
                -M and -n end the whole group at the total, the -c lines
                and the statistics are the group's.  The first process
                supervises: a worker that dies is reported ("warning:
                worker 1 (pid 123) died with signal 9; starting another")
                and replaced; SIGTERM and SIGINT stop every worker.  -m
                applies to each worker.
    --seed=N    Seed the random numbers with N (an integer) instead of
                the time: the -W odds and the capture file ids (-d, and
                "id" in Received:) repeat from run to run.  Each session
                draws from a stream of its own, Python's
                random.Random("N:k") for the k-th session (0, 1, ..., in
                the order the connections were accepted, in the whole
                --procs group), whichever engine runs it.
    --stats=SECONDS[,FILE]
                Write a statistics line (JSON, one object a line) every
                SECONDS seconds (a decimal number; 0 for none), one when
                SIGUSR1 arrives, and a last one when the program ends (-M,
                -n, SIGTERM).  The lines are appended to FILE (opened
                before privileges are dropped), or written on stdout when
                there is no FILE or it is "-" (where -c also writes).  The
                fields: "event" ("interval", "signal" or "exit"), "time"
                (Unix time), "uptime", "sessions" (begun), "active",
                "messages", "recipients" (accepted), "bytes" (received,
                after TLS decryption), "rates" (sessions, messages,
                recipients and bytes per second since the previous line),
                "replies" (how many replies of each code were sent) and,
                with --verify, "verify".
    --tls-cert=FILE, --tls-key=FILE
                A certificate chain and its private key (PEM), read at
                start-up before privileges are dropped: the EHLO/LHLO reply
                announces STARTTLS (before AUTH) until TLS is on, and
                STARTTLS (RFC 3207) gets "220 2.0.0 Ready to start TLS"
                and a TLS handshake, after which the session starts over
                (no HELO/EHLO, no transaction).  Commands sent after
                STARTTLS in the same packet are thrown away unread (they
                could not have been protected).  STARTTLS in TLS gets
                "554 5.5.1 Error: TLS already active", with arguments
                "501 5.5.4 Syntax: STARTTLS".  A failed handshake is a
                warning, and the end of that session.
    --tls       Implicit TLS (as on port 465): every connection starts with
                the TLS handshake, then the greeting.  Needs --tls-cert and
                --tls-key.
    --verify    Check the end-to-end integrity line that smtp-source
                --integrity puts first in each message ("X-Smtp-Integrity:
                run=..; seq=..; count=..; sha256=..", see
                smtpcore/integrity.py) against the message as the client
                meant it (dot-unstuffed, CRLF line ends), and count per
                run id: ok, corrupt (digest differs), duplicate (a seq seen
                before), missing (count minus the seqs seen).  The counts
                are in the --stats lines; without --stats, a line with them
                is written on stdout at the end and on SIGUSR1.  Every
                message is still accepted.

    With --tls-cert, each capture record gets "X-Client-TLS: protocol
    cipher" (or "X-Client-TLS: none") after X-Client-Proto; with
    --chunking, "X-Data-Command: DATA" or "BDAT" before Received:.  BDAT
    and STARTTLS are not names for the command lists.

DIFFERENCES FROM POSTFIX
    Replies always come back in the order of the commands, also when they
    are delayed with -W, and pending replies are sent as soon as a command
    is complete rather than when more input arrives (also when the input so
    far ends in part of a line).  -W and -w wait exactly as long as asked;
    Postfix's delays fire on whole-second timer ticks (a "1 s" delay was
    measured anywhere from 0.04 s to 1.39 s there).  -A 0 aborts at once,
    also when the client sent more bytes after DATA in the same write;
    Postfix answers those as commands until its abort timer fires (and,
    with a pipelined NOOP and QUIT there, crashes with SIGSEGV).  -M sends
    the replies already due (to pipelined MAIL, RCPT and DATA) before it
    exits; Postfix drops those still in its output buffer.  A fatal error
    exits at once instead of after a one-second pause.  When a capture
    file cannot be created or written, Postfix exits; this program prints
    a warning, answers the transaction with "451 4.3.0 Error: capture file
    unavailable" (never 250), and keeps serving.  Syslog (-s) is connected
    and the time zone loaded before -R changes the root directory, so both
    keep working inside an empty jail (Postfix then logs nothing and dates
    captures in UTC).  When the -c counters (or --stats, --verify lines)
    cannot be written -- the reader of stdout is gone, the disk is full, a
    file-size limit is reached -- the line is dropped with one warning
    ("warning: write stdout: Broken pipe"), a line cut short in a file is
    taken back, and the sink keeps serving and counting; Postfix carries
    on silently after a broken pipe and is killed by SIGXFSZ at a size
    limit, a line cut short.

EXIT STATUS
    0 after -M or -n (and --help); 1 after a usage or start-up error.
"""

import errno
import os
import queue
import random
import re
import selectors
import signal
import socket
import socketserver
import struct
import sys
import syslog
import threading
import time

from smtpcore import (dump, endpoints, engine, integrity, messages, options, privileges,
                      output, procs, stats, threads)

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
BATCH = 256                     # commands answered before their replies are sent
SEND_FIRST = (0, None)          # a "pause" of nothing: send the replies, go on
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

# Our extensions (long options; see EXTENSIONS above), and what --help says.
LONG_OPTIONS = ("help", "chunking", "engine=", "keep-pipelining", "lmtp-replies=", "maildir=",
                "procs=", "seed=", "stats=", "tls-cert=", "tls-key=", "tls", "verify")
LONG_USAGE = (
    "--help                   print this text and exit",
    "--chunking               announce CHUNKING and take BDAT (RFC 3030)",
    "--engine=threads|loop    a thread per session (default), or one event loop",
    "--keep-pipelining        announce PIPELINING also with -f or -r",
    "--lmtp-replies=SPEC      LMTP replies per recipient, in turn (e.g. 250,452,550)",
    "--maildir=DIR            capture each message into the Maildir DIR (tmp/, new/)",
    "--procs=N                N worker processes on the same socket; counters shared",
    "--seed=N                 seed the random generator (-W odds, capture ids)",
    "--stats=SECONDS[,FILE]   JSON statistics every SECONDS, on SIGUSR1 and at exit",
    "--tls                    implicit TLS: a handshake before the greeting",
    "--tls-cert=FILE          certificate chain (PEM): announce STARTTLS (RFC 3207)",
    "--tls-key=FILE           the certificate's private key (PEM)",
    "--verify                 check smtp-source --integrity lines; count per run",
)

# STARTTLS (RFC 3207) and BDAT (RFC 3030), worded as Postfix's smtpd does.
TLS_GO_AHEAD = b"220 2.0.0 Ready to start TLS\r\n"
TLS_ACTIVE = b"554 5.5.1 Error: TLS already active\r\n"
TLS_SYNTAX = b"501 5.5.4 Syntax: STARTTLS\r\n"
CHUNK_OK = b"250 2.0.0 Ok: %d bytes\r\n"
BDAT_SYNTAX = b"501 5.5.4 Syntax: BDAT count [LAST]\r\n"
DATA_AFTER_BDAT = b"503 5.5.1 Error: DATA after BDAT\r\n"
RCPT_AFTER_BDAT = b"503 5.5.1 Error: RCPT after BDAT\r\n"
BDAT_ARGS = re.compile(rb"[ \t]*([0-9]{1,18})(?:[ \t]+(LAST))?[ \t]*\Z", re.IGNORECASE)


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
        # Our extensions (long options); prepare_extensions() opens files.
        self.no_pipelining = False          # -p itself (wins over --keep-pipelining)
        self.chunking = False               # --chunking
        self.keep_pipelining = False        # --keep-pipelining
        self.lmtp_replies = None            # --lmtp-replies: [reply bytes, ...]
        self.seed = None                    # --seed
        self.stats_interval = None          # --stats: seconds (0: no interval lines)
        self.stats_path = None              # --stats: FILE (None: stdout)
        self.stats_fd = -1                  # ... opened
        self.tls_cert = None                # --tls-cert
        self.tls_key = None                 # --tls-key
        self.tls_implicit = False           # --tls
        self.tls_context = None             # ... loaded
        self.verify = False                 # --verify
        self.maildir = None                 # --maildir
        self.procs = 1                      # --procs
        self.engine = engine.DEFAULT_ENGINE # --engine

    @property
    def capturing(self):
        """Transactions are captured (-d, -D or --maildir)."""
        return bool(self.single_template or self.shared_template or self.maildir)

    def new_capture(self, when):
        """The capture of a transaction begun at `when`."""
        if self.maildir is not None:
            return dump.MaildirCapture(self.maildir, when)
        return dump.Capture(self.single_template or self.shared_template,
                            self.shared_template is not None, when)

    @property
    def tls(self):
        """TLS is offered (STARTTLS, or --tls)."""
        return self.tls_cert is not None

    @property
    def reporting(self):
        """Statistics lines are written (--stats, or --verify's counts)."""
        return self.stats_interval is not None or self.verify

    @property
    def extended(self):
        """Sessions need ExtendedSession rather than the lean Session."""
        return bool(self.tls or self.chunking or self.reporting or self.lmtp_replies)

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


class StartTls(Exception):
    """STARTTLS was accepted (--tls-cert): raised out of feed() so that the
    rest of the input at hand, sent before TLS, is never parsed."""


class Transaction:
    """The state of one mail transaction, as aiosmtpd's Envelope: a session
    makes a new one when a transaction ends (RSET, HELO/EHLO/LHLO, the end
    of data, STARTTLS), so that a reset is one assignment.  (The count of
    recipients is the session's: as in Postfix, only MAIL sets it back to
    0, and an LMTP "." -- also one sent as a command -- answers that many.)"""

    __slots__ = ("open", "capture", "failed", "chunks", "check")

    def __init__(self):
        self.open = False           # MAIL was accepted
        self.capture = None         # its dump.Capture (-d, -D, --maildir)
        self.failed = False         # a write to the capture failed: no 250
        self.chunks = 0             # BDAT chunks taken (--chunking)
        self.check = None           # integrity.MessageCheck (--verify)


class Session(engine.Waiter):
    """One client connection: reads commands and message data, writes replies.

    The protocol side is plain method calls: feed() takes the bytes that
    came in, parses command lines or message data, and each command's
    handler appends its reply to self.out.  The replies are sent with one
    write when the input at hand is used up (RFC 2920).  A delay (-W, -w,
    -A, -H) stops the parsing: self.pause says how long and what to do
    then, and the input not yet used waits in self.pending.

    The I/O side is the generator run(), driven by the server's engine.
    """

    number = 0                  # the session's number (see SinkServer)
    end_counted = False         # -c: its end is counted (see quit_done)
    ends_program = False        # -n: its QUIT was the count-th
    _random = None

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
        self.tx = Transaction()
        self.rcpts = 0              # as Postfix: LMTP end of data leaves -1
        self.dot_refused = False    # the message was not stored: 451 to "."
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
        """The session's life, as its engine drives it: the conversation,
        and how it ends.  What -v says of the end is said before the socket
        is closed: once the client sees the end it may connect again, and
        another thread may then say "connect" first."""
        reason = None
        try:
            try:
                reason = yield from self.converse()
            except SessionEnd as end:
                reason = end.args[0] if end.args else None
                yield from self.respond(final=True)
        except WriteTimeout:
            self.msg.warning("write timeout")
            reason = None
        except OSError:
            reason = "disconnect"       # reset by the client: silent, as Postfix
        finally:
            if reason and self.msg.verbose:
                self.msg.info(reason)
            self.close()

    def converse(self):
        """Greeting, then commands and replies until the client leaves;
        returns what -v says then (None: nothing)."""
        sock, timeout, feed = self.sock, self.settings.timeout, self.feed
        recv, send, monotonic, readable = sock.recv, sock.send, time.monotonic, engine.READABLE
        self.execute(self.table[b"connect"], b"connect", b"")
        yield from self.respond()
        while True:
            self.deadline = monotonic() + timeout
            if not (yield readable):
                self.msg.warning("read timeout")
                return None
            try:
                data = recv(RECV_SIZE)
            except BlockingIOError:
                continue
            if not data:
                return "disconnect"
            feed(data)
            out = self.out
            if self.pause:
                yield from self.respond()
            elif out:                   # the usual case, without a generator
                data = out[0] if len(out) == 1 else b"".join(out)
                self.out = []
                try:
                    sent = send(data)
                except BlockingIOError:
                    sent = 0
                if sent < len(data):
                    yield from self.drain(data[sent:])

    def respond(self, final=False):
        """Send the replies; carry out pauses and what comes after them."""
        while True:
            if self.out:
                yield from self.flush()
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

    def send_out(self):
        """Send the replies in self.out as far as the socket takes them now;
        returns the rest."""
        out = self.out
        data = out[0] if len(out) == 1 else b"".join(out)
        self.out = []
        try:
            sent = self.sock.send(data)
        except BlockingIOError:         # also TLS (TLSSocket)
            sent = 0
        return data[sent:]

    def flush(self):
        """Send the replies in self.out, all of them."""
        rest = self.send_out()
        if rest:
            yield from self.drain(rest)

    def drain(self, data):
        """The client is slow to read: wait until it takes all of data (a
        TLS write that could not go on is tried again with the same bytes,
        as OpenSSL wants)."""
        timeout = self.settings.timeout
        data = memoryview(data)
        while data:
            self.deadline = time.monotonic() + timeout
            if not (yield engine.WRITABLE):
                raise WriteTimeout()
            try:
                sent = self.sock.send(data)
            except BlockingIOError:     # also TLS (TLSSocket)
                sent = 0
            data = data[sent:]

    def close(self):
        if self.tx.capture is not None:
            self.tx.capture.abort()
            self.tx = Transaction()
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
            start = commands = 0
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
                commands += 1
                if commands >= BATCH and not self.pause:
                    self.pause = SEND_FIRST         # a client that never reads
                if self.pause:                      # cannot make us hoard replies
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
            self.msg.info(messages.printable(line))
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
                verb.decode("latin-1"), messages.printable(args).decode("latin-1")))
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

    @property
    def random(self):
        """The session's random stream (-W odds, capture ids), made when
        first needed: seeded by --seed (or the time) and the session's
        number, so that with --seed a run repeats whatever the engine."""
        if self._random is None:
            self._random = self.server.session_random(self.number)
        return self._random

    def random_id(self):
        return self.random.getrandbits(31)

    def delay_multiplier(self, odds):
        if not odds:
            return 1
        rolls = 0
        while self.random.randrange(100) < odds:
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
        tx = self.tx
        if tx.capture is not None and not tx.failed:
            self.capture_add(dump.unstuff(body, tail[-2:]))
        if end < 0:
            self.tail = data[-4:] if len(data) >= 4 else (tail + data)[-4:]
            return b""
        self.in_data = False
        return data[end:]

    def capture_add(self, data):
        tx = self.tx
        try:
            tx.capture.add(data)
        except OSError as err:
            capture_warning(self.msg, err, tx.capture.path)
            tx.failed = True

    def end_of_data(self):
        """The message is complete: store it, count it, then answer "."."""
        tx, self.tx = self.tx, Transaction()
        stored = tx.capture is None or self.store(tx)
        if stored and not self.server.message_done():
            raise SessionEnd(None)              # -M: exit before replying
        if self.msg.verbose:
            self.msg.info(".")
        self.dot_refused = not stored           # smtp_DOT: 451, not 250
        try:
            self.execute(self.table[b"."], b".", b"")
        finally:
            if not self.pause:                  # else smtp_DOT comes later
                self.dot_refused = False

    def store(self, tx):
        """Commit the capture of a transaction; False (with a warning) when
        it was not stored."""
        capture = tx.capture
        if tx.failed:
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
        self.helo_args = messages.printable(args).lstrip(b" ")

    def smtp_EHLO(self, args):              # also LHLO
        self.reset_transaction()
        if not self.settings.lmtp:
            self.proto = b"ESMTP"
        self.out.append(self.server.ehlo_reply)
        self.helo_args = messages.printable(args).lstrip(b" ")

    def smtp_OK(self, args):                # NOOP, VRFY, AUTH, XCLIENT, XFORWARD
        self.out.append(OK)

    def smtp_RSET(self, args):
        self.reset_transaction()
        self.out.append(MAIL_OK)

    def smtp_MAIL(self, args):
        if self.tx.open:
            self.out.append(NESTED_MAIL)
        elif self.settings.capturing and not self.open_capture(args):
            self.out.append(CAPTURE_FAILED)
        else:
            self.tx.open = True
            self.rcpts = 0
            self.out.append(MAIL_OK)

    def smtp_RCPT(self, args):
        if not self.tx.open:
            self.out.append(NEED_MAIL)
            return
        self.rcpts += 1
        self.out.append(RCPT_OK)
        if self.tx.capture is not None:
            self.capture_add(b"X-Rcpt-Args: " + address_args(args) + b"\n")

    def smtp_DATA(self, args):
        if not self.tx.open or self.rcpts == 0:
            self.out.append(NEED_RCPT)
            return
        self.out.append(GO_AHEAD)
        settings = self.settings
        if settings.abort_delay is not None:
            self.pause = (settings.abort_delay, self.abort)
            return
        if self.tx.capture is not None:
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
        if self.dot_refused:
            self.dot_reply(CAPTURE_FAILED)
            self.dot_refused = False
        else:
            self.dot_reply(LMTP_OK if self.settings.lmtp else OK)

    def smtp_QUIT(self, args):
        self.out.append(BYE)
        self.server.quit_done(self)
        raise SessionEnd("disconnect")

    # ---- transactions and capture files

    def reset_transaction(self):
        """The transaction ends unfinished: what was captured is thrown away."""
        if self.tx.capture is not None:
            self.tx.capture.abort()
        self.tx = Transaction()

    def open_capture(self, args):
        """Start the capture of a transaction at MAIL time; False (with a
        warning) when the capture file cannot be made."""
        settings = self.settings
        capture = settings.new_capture(time.time())
        header = [settings.start_string or b"",
                  b"X-Client-Addr: ", self.addr_prefix.encode(), self.addr.encode(), b"\n",
                  b"X-Client-Proto: ", self.proto, b"\n"]
        if settings.tls:                    # --tls-cert: ExtendedSession
            header += [b"X-Client-TLS: ", self.tls_state(), b"\n"]
        if self.helo_args is not None:
            header += [b"X-Helo-Args: ", self.helo_args, b"\n"]
        header += [b"X-Mail-Args: ", address_args(args), b"\n"]
        try:
            capture.open(self.random_id)
            capture.add(b"".join(header))
        except OSError as err:
            capture_warning(self.msg, err, capture.path)
            capture.abort()
            return False
        self.tx.capture = capture
        return True

    def received_header(self, command=b"DATA"):
        client = "%s%s" % (self.addr_prefix, self.addr)
        helo = self.helo_args if self.helo_args is not None \
            else ("[%s]" % client).encode()
        # --chunking: whether the message came with DATA or BDAT.
        used = b"X-Data-Command: " + command + b"\n" if self.settings.chunking else b""
        return b"".join([
            used, b"Received: from ", helo, b" ([", client.encode(), b"])\n",
            b"\tby ", self.server.hostname, b" (smtp-sink) with ", self.proto,
            b" id %08x;\n" % self.tx.capture.ident,
            b"\t", dump.mail_date(self.tx.capture.when).encode(), b"\n"])


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
    return messages.printable(args[colon:]).lstrip(b":").lstrip(b" ")


# ---------------------------------------------------------------- extensions

class ExtendedSession(Session):
    """A session with our extensions (the long options): STARTTLS and --tls,
    BDAT (--chunking), --verify, --stats and --lmtp-replies.

    SinkServer uses this class only when one of those options is given, so
    that Session, which is what Postfix's program does, stays as lean as it
    is.  The protocol side adds handlers, which enable_extensions() puts in
    the command table, and a second kind of input besides DATA: a BDAT
    chunk, exactly so many octets.  The I/O side (run) works on plain and
    TLS sockets alike: a TLS socket may hold decrypted input that the
    poller cannot see (pending()), and the socket changes at STARTTLS.
    Every reply goes out through send_out(), where --stats counts them.
    """

    def __init__(self, server, sock, peer):
        self.tls = None             # (protocol, cipher) once TLS is on
        self.stats = server.stats   # Statistics, or None
        self.verifying = server.verifier is not None               # --verify
        self.chunk_left = None      # octets of the BDAT chunk still to come
        self.chunk_size = 0
        self.chunk_last = False     # ... it is the LAST one
        self.chunk_reply = None     # ... it is refused with this reply
        super().__init__(server, sock, peer)

    # ---- the conversation (I/O)

    def converse(self):
        """(Implicit TLS first,) the greeting, then replies and commands
        until the client leaves; returns what -v says then.  STARTTLS: its
        220 goes out, the input not yet parsed is dropped, and the session
        starts over on TLS (RFC 3207 4.2)."""
        if self.settings.tls_implicit and not (yield from self.handshake()):
            return None
        self.execute(self.table[b"connect"], b"connect", b"")
        timeout, monotonic, stats = self.settings.timeout, time.monotonic, self.stats
        while True:
            try:
                yield from self.respond()
                sock, tls = self.sock, self.tls is not None
                while True:
                    # TLS input already decrypted is not seen by the poller.
                    if not (tls and sock.pending()):
                        self.deadline = monotonic() + timeout
                        if not (yield engine.READABLE):
                            self.msg.warning("read timeout")
                            return None
                    try:
                        data = sock.recv(RECV_SIZE)
                    except BlockingIOError:     # also TLS that needs more (TLSSocket)
                        continue
                    if not data:
                        return "disconnect"
                    if tls:
                        while sock.pending():
                            data += sock.recv(RECV_SIZE)
                    if stats is not None:
                        stats.add("bytes", len(data))
                    self.feed(data)
                    if self.pause:
                        yield from self.respond()
                    elif self.out:          # the usual case, without a generator
                        rest = self.send_out()
                        if rest:
                            yield from self.drain(rest)
            except StartTls:
                self.pause, self.pending, self.line = None, b"", b""
                yield from self.respond(final=True)
                if not (yield from self.handshake()):
                    return None
                self.start_over()

    def send_out(self):
        """Session.send_out(); --stats counts the replies here."""
        if self.stats is not None:
            self.stats.count_replies(b"".join(self.out))    # (one: no copy)
        return Session.send_out(self)

    # ---- TLS (--tls-cert, --tls-key, --tls)

    def handshake(self):
        """The server side of a TLS handshake, all within -t seconds; False
        (after a warning) when it fails."""
        import ssl                      # loaded by prepare_extensions()
        try:
            self.sock = self.settings.tls_context.wrap_socket(
                self.sock, server_side=True, do_handshake_on_connect=False)
        except OSError as err:
            self.msg.warning("TLS: %s" % tls_error(err))
            return False
        self.deadline = time.monotonic() + self.settings.timeout
        while True:
            try:
                self.sock.do_handshake()
                break
            except ssl.SSLWantReadError:
                wanted = engine.READABLE
            except ssl.SSLWantWriteError:
                wanted = engine.WRITABLE
            except OSError as err:          # SSLError, a reset, an early EOF
                self.msg.warning("TLS handshake failed: %s" % tls_error(err))
                return False
            if not (yield wanted):
                self.msg.warning("TLS handshake timeout")
                return False
        self.tls = (self.sock.version() or "TLS", (self.sock.cipher() or ("?",))[0])
        if self.verbose:
            self.msg.info("TLS established: %s %s" % self.tls)
        return True

    def tls_state(self):
        """What X-Client-TLS says."""
        return ("%s %s" % self.tls).encode() if self.tls else b"none"

    def start_over(self):
        """After STARTTLS: as a new session, without the greeting."""
        self.reset_transaction()
        self.rcpts = 0              # (which a reset leaves, as in Postfix)
        self.helo_args = None
        self.proto = b"LMTP" if self.settings.lmtp else b"SMTP"

    def smtp_STARTTLS(self, args):
        if self.tls is not None:
            self.out.append(TLS_ACTIVE)
        elif args.strip(b" \t"):
            self.out.append(TLS_SYNTAX)
        else:
            self.out.append(TLS_GO_AHEAD)
            raise StartTls()

    def smtp_EHLO(self, args):          # also LHLO: STARTTLS until TLS is on
        Session.smtp_EHLO(self, args)
        if self.tls is None:
            self.out[-1] = self.server.ehlo_starttls_reply

    # ---- BDAT (--chunking)

    def smtp_BDAT(self, args):
        """BDAT size [LAST]: the reply comes once the size octets are in.
        The flags of DATA apply, in execute()'s order."""
        match = BDAT_ARGS.match(args)
        if match is None:
            self.out.append(BDAT_SYNTAX)
            raise SessionEnd("disconnect")      # nothing tells where the chunk ends
        size, last = int(match.group(1)), match.group(2) is not None
        row = self.table[b"data"]
        if not row.plain:
            if row.syslog:
                syslog.syslog(syslog.LOG_INFO, "BDAT %.100s"
                              % messages.printable(args).decode("latin-1"))
            if row.disconnect:
                raise SessionEnd("disconnect")
            if row.close:
                self.out.append(CLOSE_REPLY)
                raise SessionEnd("disconnect")
            if row.hard or row.soft:
                reply = self.settings.hard_reply if row.hard else self.settings.soft_reply
                self.start_chunk(size, last, reply.encode("utf-8", "surrogateescape") + b"\r\n")
                return
            if row.delay:
                self.pause = (row.delay * self.delay_multiplier(row.odds),
                              lambda: self.start_chunk(size, last, None))
                return
        self.start_chunk(size, last, None)

    def start_chunk(self, size, last, reply):
        """Read the chunk next: taken when reply is None, else thrown away
        and answered with reply."""
        tx = self.tx
        if reply is None and (not tx.open or self.rcpts == 0):     # as DATA
            reply = NEED_RCPT
        if reply is None:
            if tx.chunks == 0:              # the message begins, as at DATA
                if tx.capture is not None:
                    self.capture_add(self.received_header(b"BDAT"))
                if self.verifying:
                    tx.check = integrity.MessageCheck(stuffed=False)
            tx.chunks += 1
        self.chunk_size, self.chunk_last, self.chunk_reply = size, last, reply
        self.chunk_left = size
        if size:
            self.in_data = True
        else:
            self.end_of_data()              # "BDAT 0 LAST": nothing to read

    def data_bytes(self, data):
        """Message bytes: of DATA (Session's way), or of a BDAT chunk."""
        left = self.chunk_left
        if left is None:
            tx = self.tx                    # (the end of data replaces it)
            rest = Session.data_bytes(self, data)
            if self.verifying:
                if tx.check is None:        # the message begins
                    tx.check = integrity.MessageCheck(stuffed=True)
                tx.check.feed(data[:len(data) - len(rest)])
            return rest
        chunk, rest = data[:left], data[left:]
        self.chunk_left = left - len(chunk)
        if not self.chunk_left:
            self.in_data = False
        tx = self.tx
        if self.chunk_reply is None:
            if tx.capture is not None and not tx.failed:
                self.capture_add(chunk.replace(b"\r", b""))    # as dump.unstuff(), no dots
            if tx.check is not None:
                tx.check.feed(chunk)
        return rest

    def end_of_data(self):
        """The end of DATA (after "."), or of a BDAT chunk."""
        if self.chunk_left is None:
            self.verify()
            Session.end_of_data(self)
            return
        last, reply = self.chunk_last, self.chunk_reply
        self.chunk_left = self.chunk_reply = None
        if reply is not None:
            self.out.append(reply)          # its octets are gone, the stream in step
        elif not last:
            self.out.append(CHUNK_OK % self.chunk_size)
        else:
            tx = self.tx
            if tx.capture is not None and not tx.failed:
                self.capture_add(b"\n")     # a record ends in an empty line, as "." makes
            self.verify()
            Session.end_of_data(self)       # as ".": store, count, -M, reply

    def smtp_DATA(self, args):
        if self.tx.chunks:
            self.out.append(DATA_AFTER_BDAT)
        else:
            Session.smtp_DATA(self, args)

    def smtp_RCPT(self, args):          # also counts recipients for --stats
        if self.tx.chunks:
            self.out.append(RCPT_AFTER_BDAT)
            return
        rcpts = self.rcpts
        Session.smtp_RCPT(self, args)
        if self.stats is not None and self.rcpts != rcpts:
            self.stats.add("recipients")

    # ---- --verify, --lmtp-replies

    def verify(self):
        """Count a complete message (--verify) as its MessageCheck found it
        while the octets came in (the DATA stream, or the BDAT chunks)."""
        if not self.verifying:
            return
        found = self.tx.check.result()
        result = self.server.verifier.tally(found)
        if result == "corrupt":
            self.msg.warning("integrity: corrupt message: run=%s seq=%d" % found[:2])
        elif self.verbose and result is not None:
            self.msg.info("integrity: %s" % result)

    def smtp_DOT(self, args):           # --lmtp-replies: a reply per recipient, in turn
        replies = self.settings.lmtp_replies
        if self.dot_refused or not replies:
            Session.smtp_DOT(self, args)
            return
        if self.rcpts > 0:
            self.out.append(b"".join(replies[i % len(replies)] for i in range(self.rcpts)))
        self.rcpts = min(self.rcpts, 0) - 1     # as dot_reply()


def tls_error(err):
    """A TLS problem in a few words: OpenSSL's reason, or strerror."""
    reason = getattr(err, "reason", None)
    if reason:
        return reason.lower().replace("_", " ")
    if getattr(err, "errno", None):
        return endpoints.strerror(err)
    return str(err) or type(err).__name__


def tls_context(settings, msg):
    """The server's TLS context, with the certificate and key loaded."""
    try:
        import ssl
    except ImportError:
        msg.fatal("TLS is not available: this Python has no ssl module")

    class TLSSocket(ssl.SSLSocket):
        """A TLS read or write that cannot go on now raises BlockingIOError,
        as on a plain socket (whichever direction TLS is waiting for:
        renegotiation is off, so a write never needs a read)."""

        def recv(self, bufsize, flags=0):
            try:
                return super().recv(bufsize, flags)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise BlockingIOError(errno.EAGAIN, "TLS wants more") from None

        def send(self, data, flags=0):
            try:
                return super().send(data, flags)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise BlockingIOError(errno.EAGAIN, "TLS wants more") from None

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    context.sslsocket_class = TLSSocket
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as err:
        msg.fatal("cannot load TLS certificate %s and key %s: %s"
                  % (settings.tls_cert, settings.tls_key, tls_error(err)))
    return context


def prepare_extensions(settings, msg):
    """Open what the extensions need while we still may (before -R, -u):
    the TLS certificate and key, the --stats file.  Idempotent."""
    if settings.tls and settings.tls_context is None:
        settings.tls_context = tls_context(settings, msg)
    if settings.stats_path is not None and settings.stats_fd < 0:
        try:
            settings.stats_fd = os.open(settings.stats_path,
                                        os.O_WRONLY | os.O_CREAT | os.O_APPEND
                                        | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            msg.fatal("open %s: %s" % (settings.stats_path, endpoints.strerror(err)))


# -------------------------------------------------------------------- server

ACCEPT_BATCH = 64           # connections taken per wake-up of the listener
ACCEPT_PAUSE = 0.1          # seconds without accepting when descriptors ran out
OUT_OF_DESCRIPTORS = "out of descriptors"
COUNTER_NAMES = ("sessions", "quits", "messages", "total", "active",   # -c -M -n
                 "begun", "recipients", "bytes")                       # --stats


class SinkServer:
    """What the sessions of one sink process share, and its listener.

    Shared, behind counts.lock (with --procs the lock and the counters of
    the whole group, in shared memory): the counters of -c, -M and -n, the
    number of sessions begun (which numbers each session's random stream:
    the -W odds and capture ids repeat with --seed), and the --stats and
    --verify collectors.  Behind self.lock, of this process only: the open
    sessions, which -m limits.

    Two subclasses run the sessions, one per engine (--engine):
    ThreadingSinkServer (socketserver, a thread per session: the default)
    and LoopSinkServer (one event loop).  new_server() picks one.
    """

    def __init__(self, settings, listener, msg, group=None, stdout=None, worker=None):
        """stdout: where -c and --stats write (a binary stream; default
        this process's standard output); group, worker: the --procs group,
        and the number of this worker in it."""
        self.socket = listener
        self.settings = settings
        self.msg = msg
        self.table = settings.table()
        self.hostname = settings.hostname.encode("utf-8", "surrogateescape")
        self.ehlo_reply = ehlo_reply(settings, self.hostname)
        self.helo_reply = b"250 " + self.hostname + b"\r\n"
        # As Postfix: random numbers seeded by the time (or --seed).
        self.seed = settings.seed if settings.seed is not None else int(time.time())
        self.exit_status = None
        self.stopping = False
        # -c, -M, -n (and --stats) counters: of this process, or, with
        # --procs, of the whole group (group.counts, in shared memory).
        self.group = group
        self.counts = group.counts if group is not None else procs.LocalCounts(COUNTER_NAMES)
        self.lock = threading.Lock()
        self.driver = engine.new_driver(settings.engine, worker=worker)
        self.stdout = stdout or output.stdout(msg)     # -c (and --stats without FILE)
        # Our extensions: decided here once, so that without them nothing
        # else is looked at (Session rather than ExtendedSession).
        self.session_class = Session
        self.verifier = self.stats = None
        if settings.extended:
            prepare_extensions(settings, msg)
            self.session_class = ExtendedSession
            self.ehlo_starttls_reply = ehlo_reply(settings, self.hostname, starttls=True)
            if settings.verify:
                self.verifier = group.verifier if group is not None \
                    else integrity.Verifier(self.counts.lock)
            if settings.reporting:
                self.stats = stats.Statistics(
                    self.counts, self.verifier, settings.stats_interval, settings.stats_fd,
                    settings.stats_path, self.stdout, msg, shared=group is not None)

    def session_random(self, number):
        """The random stream of the number-th session (0, 1, ... in the order
        they began, in the whole --procs group)."""
        return random.Random("%d:%d" % (self.seed, number))

    def request_report(self):
        """--stats/--verify: a statistics line soon (SIGUSR1); safe from a
        signal handler and from another thread."""
        if self.stats is not None:
            self.stats.request()

    def serve_sessions(self):
        """Serve until stop(), with the statistics of one process (with
        --procs the first process writes them); returns the exit status."""
        writes_stats = self.stats is not None and self.group is None
        if writes_stats:
            self.stats.start(self.driver)
        self.serve()
        if writes_stats:
            self.stats.write("exit")
        if self.driver.failure is not None:
            raise self.driver.failure
        return self.exit_status

    # ---- sessions begin and end

    def accept(self):
        """A connection waiting on the listener, made non-blocking:
        (socket, peer); None when there is none now; OUT_OF_DESCRIPTORS,
        with a warning, when no descriptor is left (the caller then waits
        ACCEPT_PAUSE for sessions to end and free some)."""
        while True:
            try:
                sock, peer = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return None
            except ConnectionAbortedError:
                continue                    # gone before it was taken
            except OSError as err:
                if err.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                self.msg.warning("accept: %s" % endpoints.strerror(err))
                return OUT_OF_DESCRIPTORS
            sock.setblocking(False)
            return sock, peer

    def session_begun(self):
        """A connection was accepted: count it; returns its number."""
        counts = self.counts
        with counts.lock:
            number = counts.begun
            counts.begun = number + 1
            counts.active += 1
        return number

    def session_ended(self, session):
        """A session is over: counted (first, as Postfix does, so that the
        client sees the end after the -c line; unless quit_done() did),
        its socket closed, its slot freed."""
        self.driver.forget(session.fd)
        settings, counts = self.settings, self.counts
        with counts.lock:
            counts.active -= 1
            if settings.count and not self.stopping and not session.end_counted:
                self.count_end(session)
        session.sock.close()
        self.release(session)
        # -n: the session whose QUIT was the count-th ends the program, at
        # its end (as in Postfix, right after its 221 was sent).
        if session.ends_program:
            self.stop(0)

    def count_end(self, session):
        """-c: count the end of session (with counts.lock held)."""
        self.counts.sessions += 1
        session.end_counted = True
        self.show_counters()

    # ---- counters (-c, -M, -n)

    def show_counters(self):
        """-c: the line (with counts.lock held: lines of all sessions and
        processes in order)."""
        counts = self.counts
        self.stdout.write(b"sess=%d quit=%d mesg=%d\r"
                          % (counts.sessions, counts.quits, counts.messages))

    def quit_done(self, session):
        """session carries out a QUIT: with -c (which -n needs), count it,
        and the end of the session with it.  In Postfix's one thread
        nothing comes between a QUIT, its 221 and the end of its session;
        here nothing comes between them in the counts either (another
        session's message, or the -n-th QUIT of another before this one's
        end), as both are counted under one hold of the lock, before the
        221 goes out.  With the -n-th QUIT nothing more is counted, and the
        program ends with the session (session_ended())."""
        if not self.settings.count:
            return
        counts = self.counts
        with counts.lock:
            counts.quits += 1
            if self.stopping:
                return
            self.count_end(session)
            if 0 < self.settings.max_quits <= counts.quits:
                session.ends_program = True
                self.stopping = True

    def message_done(self):
        """A message is complete; False when -M says to stop right now."""
        settings, counts = self.settings, self.counts
        if self.stopping:
            return False
        limit = settings.max_messages
        with counts.lock:
            if limit and counts.total >= limit:     # another session's (or
                total = None                        # process's) was the last one
            else:
                if settings.count:
                    counts.messages += 1
                    self.show_counters()
                counts.total += 1
                total = counts.total
        if limit and (total is None or total >= limit):
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
        self.driver.stop()

    def cut_off(self, sock):
        """Make the end of a session cut off by server_close() a reset."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


class SessionHandler(socketserver.BaseRequestHandler):
    """socketserver's handler: runs one session, in the thread it is given."""

    def handle(self):
        server = self.server
        peer, number = self.client_address
        session = server.session_class(server, self.request, peer)
        session.number = number
        server.driver.drive(session)


class PooledThreadingMixIn(socketserver.ThreadingMixIn):
    """ThreadingMixIn whose threads are kept for the next connection:
    starting a thread costs more than a short session.  There are never
    more threads than the most sessions open at once (-m caps them)."""

    daemon_threads = True

    def init_pool(self):
        self.pool_lock = threading.Lock()
        self.jobs = queue.SimpleQueue()     # (request, client_address), or None: end
        self.idle = 0
        self.workers = []

    def process_request(self, request, client_address):
        """Hand the connection to an idle session thread, or start one."""
        with self.pool_lock:
            if self.idle:
                self.idle -= 1
                self.jobs.put((request, client_address))
                return
            worker = threading.Thread(target=self.pool_worker, args=(request, client_address),
                                      name="session", daemon=self.daemon_threads)
            self.workers.append(worker)
        threads.start_thread(worker)

    def pool_worker(self, request, client_address):
        while request is not None:
            self.process_request_thread(request, client_address)
            with self.pool_lock:
                self.idle += 1
            request, client_address = self.jobs.get()

    def server_close(self):
        """End the idle threads, and wait for every thread to end."""
        with self.pool_lock:
            workers, self.workers = self.workers, []
        for _ in workers:
            self.jobs.put((None, None))
        for worker in workers:
            worker.join()


class ThreadingSinkServer(PooledThreadingMixIn, socketserver.BaseServer, SinkServer):
    """The threads engine: socketserver, a thread per session (kept in a
    pool).  This thread accepts connections while fewer than -m sessions
    are open, and otherwise leaves them in the kernel's listen queue; each
    session thread waits on its own socket (smtpcore/threads.py)."""

    def __init__(self, settings, listener, msg, group=None, stdout=None, worker=None):
        # BaseServer gets the project's own listening socket: its backlog
        # operand, -T window, IPv6-only and unix: handling are endpoints'.
        socketserver.BaseServer.__init__(self, listener.getsockname(), SessionHandler)
        SinkServer.__init__(self, settings, listener, msg, group, stdout, worker)
        self.init_pool()
        self.connections = set()        # the sockets of the open sessions
        self.parked = False             # -m sessions are open: not accepting
        self.room_r, self.room_w = os.pipe()    # ... until a session ends
        os.set_blocking(self.room_r, False)
        os.set_blocking(self.room_w, False)

    def fileno(self):
        return self.socket.fileno()

    def serve(self):
        """Accept connections until stop(), on the CPU of the session
        threads (see smtpcore/threads.py)."""
        threads.keep_to(self.driver.cpu)
        listener, max_sessions = self.socket, self.settings.max_sessions
        listener.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(self.room_r, selectors.EVENT_READ)
            selector.register(self.driver.wake_r, selectors.EVENT_READ)
            watching = False
            while not self.driver.stopped:
                with self.lock:
                    self.parked = len(self.connections) >= max_sessions
                if watching == self.parked:     # -m: stop or start watching
                    if watching:
                        selector.unregister(listener)
                    else:
                        selector.register(listener, selectors.EVENT_READ)
                    watching = not watching
                for key, _ in selector.select():
                    if key.fileobj is listener:
                        self.accept_connections()
                    elif key.fileobj == self.room_r:
                        drain(self.room_r)

    def wakeup_fd(self):
        """Where a signal writes a byte to wake the accepting thread (see
        watch_signals()): the room pipe, which it drains."""
        return self.room_w

    def accept_connections(self):
        """Take the connections waiting, while there is room."""
        for _ in range(ACCEPT_BATCH):
            with self.lock:
                if len(self.connections) >= self.settings.max_sessions:
                    return
            accepted = self.accept()
            if accepted is None:
                return
            if accepted is OUT_OF_DESCRIPTORS:
                time.sleep(ACCEPT_PAUSE)
                return
            sock, peer = accepted
            with self.lock:
                self.connections.add(sock)
            self.process_request(sock, (peer, self.session_begun()))

    def release(self, session):
        with self.lock:
            self.connections.discard(session.sock)
            room = self.parked
            self.parked = False
        if room:
            try:
                os.write(self.room_w, b"x")
            except OSError:
                pass

    def shutdown_request(self, request):
        """The session closed its socket itself (see session_ended)."""

    def handle_error(self, request, client_address):
        """What a session raised (a fatal error, or a bug) ends the server,
        as under the loop: serve_sessions() raises it."""
        self.driver.fail(sys.exc_info()[1])

    def server_close(self):
        """Close the listener and cut off open sessions (a reset each);
        wait for every thread to end (a -D record being written is
        finished first: a session stops only at its next wait)."""
        self.stopping = True
        with self.lock:
            for sock in self.connections:
                self.cut_off(sock)
        self.driver.stop()
        self.socket.close()
        PooledThreadingMixIn.server_close(self)
        self.driver.close()
        if self.stats is not None:
            self.stats.close()
        for fd in (self.room_r, self.room_w):
            os.close(fd)


class LoopSinkServer(SinkServer, engine.Waiter):
    """The loop engine (--engine=loop): all sessions in one thread, on one
    event loop (smtpcore/loop.py).  The listener is a session of its own
    that accepts connections while fewer than -m sessions are open, and
    otherwise waits (PARKED) in the kernel's listen queue's stead."""

    def __init__(self, settings, listener, msg, group=None, stdout=None, worker=None):
        SinkServer.__init__(self, settings, listener, msg, group, stdout, worker)
        self.active = {}                    # fd -> Session
        self.parked = False
        self.fd = listener.fileno()
        self.steps = self.accept_connections()

    def serve(self):
        self.socket.setblocking(False)
        self.driver.start(self)
        self.driver.run()

    def wakeup_fd(self):
        """Where a signal writes a byte to wake the loop (see
        watch_signals()): the loop's own wake-up pipe."""
        return self.driver.wakeup_fd()

    def accept_connections(self):
        """The listener's session: take connections while there is room."""
        max_sessions, session_class = self.settings.max_sessions, self.session_class
        while True:
            if len(self.active) >= max_sessions:
                self.parked = True
                yield engine.PARKED         # release() wakes us
                continue
            yield engine.READABLE
            for _ in range(ACCEPT_BATCH):
                if len(self.active) >= max_sessions:
                    break
                accepted = self.accept()
                if accepted is None:
                    break
                if accepted is OUT_OF_DESCRIPTORS:
                    yield ACCEPT_PAUSE
                    break
                sock, peer = accepted
                number = self.session_begun()
                session = session_class(self, sock, peer)
                session.number = number
                self.active[session.fd] = session
                self.driver.start(session)

    def release(self, session):
        self.active.pop(session.fd, None)
        if self.parked and not self.stopping:
            self.parked = False
            self.driver.wake(self)

    def server_close(self):
        """Close the listener and cut off open sessions (a reset each)."""
        self.stopping = True
        for session in list(self.active.values()):
            self.cut_off(session.sock)
            session.steps.close()           # runs its clean-up
        self.socket.close()
        self.driver.close()
        if self.stats is not None:
            self.stats.close()


def watch_signals(server):
    """Have a signal wake the thread that runs server.serve() (the main
    one).  Python runs a handler between two steps of that thread; a
    signal that comes just before the thread goes to wait in its poller
    would otherwise wait with it for the next event (a sink once slept on
    after SIGTERM).  The signal's byte wakes the poller."""
    signal.set_wakeup_fd(server.wakeup_fd(), warn_on_full_buffer=False)


def new_server(settings, listener, msg, group=None, stdout=None, worker=None):
    """The sink's server for the engine settings.engine asks for."""
    server_class = LoopSinkServer if settings.engine == "loop" else ThreadingSinkServer
    return server_class(settings, listener, msg, group, stdout, worker)


def drain(fd):
    """Read a wake-up pipe empty."""
    try:
        while os.read(fd, 512):
            pass
    except OSError:
        pass


# ---------------------------------------------------------- --procs=N

class Group:
    """What the worker processes of --procs share: the counters (shared
    memory, made before the fork), and for --verify a pipe on which each
    worker reports what it checked, so that the parent can count per run
    -- a duplicate may well arrive at another worker than the original."""

    def __init__(self, settings):
        names = COUNTER_NAMES + (stats.REPLY_NAMES if settings.reporting else ())
        self.counts = procs.SharedCounts(names)
        self.verifier = None            # in a worker: an integrity.PipeVerifier
        self.aggregate = None           # in the parent: the integrity.Verifier
        self.verify_r = self.verify_w = -1
        if settings.verify:
            self.verify_r, self.verify_w = os.pipe()
            self.verifier = integrity.PipeVerifier(self.verify_w)
            self.aggregate = integrity.Verifier(self.counts.lock)


def serve_group(settings, listeners, msg, group):
    """--procs=N: N workers, each a sink server on its listener (or all on
    one), supervised by this process: a worker that dies is replaced;
    -M/-n end the group at the total; SIGTERM/SIGINT stop every worker.
    Returns (exit status, signal that stopped the group or None)."""
    output.stdout(msg)                 # before the fork: one -c warning for all
    statistics = None
    if settings.reporting:
        statistics = stats.Statistics(group.counts, group.aggregate, settings.stats_interval,
                                      settings.stats_fd, settings.stats_path,
                                      output.stdout(msg), msg, shared=True)

    def worker(index):
        if group.verify_r >= 0:
            os.close(group.verify_r)
        server = new_server(settings, listeners[index % len(listeners)], msg, group,
                            worker=index)
        signal.signal(signal.SIGTERM, lambda signum, frame: server.stop(None))
        signal.signal(signal.SIGINT, lambda signum, frame: server.stop(None))
        watch_signals(server)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)    # the parent's signal
        try:
            status = server.serve_sessions()
        finally:
            signal.set_wakeup_fd(-1)        # before its pipe is closed
            server.server_close()
        if status == 0:                 # -M or -n: the group's total is reached
            supervisor.request_finish()
        return 0

    on_signal, tick = {}, 0
    if statistics is not None:
        on_signal[signal.SIGUSR1] = lambda: statistics.write("signal")
        tick = statistics.interval
    supervisor = procs.Supervisor(settings.procs, worker, msg, tick=tick,
                                  on_tick=lambda: statistics.write("interval"),
                                  on_signal=on_signal)
    collector = threading.Thread(target=integrity.collect,
                                 args=(group.verify_r, group.aggregate), name="verify",
                                 daemon=True)

    def started():
        if group.verify_w >= 0:
            collector.start()
    status, stopped_by = supervisor.run(started)
    if group.verify_w >= 0:
        os.close(group.verify_w)        # the workers are gone: the collector ends
        collector.join(5)
    if statistics is not None:
        statistics.write("exit")
        statistics.close()
    return status, stopped_by


def ehlo_reply(settings, hostname, starttls=False):
    """The EHLO/LHLO reply.  STARTTLS and CHUNKING (ours) stand where
    Postfix's smtpd puts them: STARTTLS before AUTH, CHUNKING last."""
    lines = [b"250-" + hostname]
    for wanted, keyword in ((settings.ehlo_pipelining, b"PIPELINING"),
                            (settings.ehlo_8bitmime, b"8BITMIME"),
                            (starttls, b"STARTTLS"),
                            (settings.ehlo_auth, b"AUTH PLAIN LOGIN"),
                            (settings.ehlo_xclient, b"XCLIENT NAME HELO"),
                            (settings.ehlo_xforward, b"XFORWARD NAME ADDR PROTO HELO"),
                            (settings.ehlo_enhanced, b"ENHANCEDSTATUSCODES"),
                            (settings.ehlo_dsn, b"DSN"),
                            (settings.chunking, b"CHUNKING")):
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
            settings.no_pipelining = True
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
        elif letter.startswith("--"):
            apply_long_option(settings, letter[2:], value, msg)

    parser = options.GetOpt(args, OPTSTRING, LONG_OPTIONS)
    try:
        for letter, value in parser:
            apply_option(letter, value)
    except options.UsageError as err:
        if err.complaint:
            msg.libc(err.complaint)
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
    if settings.maildir is not None and (settings.single_template is not None
                                         or settings.shared_template is not None):
        msg.fatal("use only one of -d, -D and --maildir")
    # Which greeting verbs exist: LHLO for LMTP, HELO only without ESMTP.
    if settings.lmtp:
        commands["lhlo"].enabled = True
    else:
        commands["helo"].enabled = True
        commands["ehlo"].enabled = settings.esmtp
    enable_extensions(settings, msg)
    return settings


class ShowHelp(Exception):
    """--help: main() prints help_text() and exits 0."""


def help_text(prog):
    """Postfix's usage line, then our long options, one a line."""
    return "\n".join((USAGE % prog,) + LONG_USAGE) + "\n"


def apply_long_option(settings, name, value, msg):
    """One of our long options (LONG_OPTIONS); checked as it comes, like
    Postfix's letters."""
    if name == "help":
        raise ShowHelp()
    elif name == "chunking":
        settings.chunking = True
    elif name == "engine":
        if value not in engine.ENGINES:
            msg.fatal("bad --engine value: %s" % value)
        settings.engine = value
    elif name == "keep-pipelining":
        settings.keep_pipelining = True
    elif name == "lmtp-replies":
        settings.lmtp_replies = lmtp_replies(value, msg)
    elif name == "maildir":
        if not value:
            msg.fatal("bad --maildir directory: %s" % value)
        settings.maildir = value
    elif name == "procs":
        if not re.match(r"[0-9]+\Z", value) or not 1 <= int(value) <= procs.MAX_PROCS:
            msg.fatal("bad --procs value: %s" % value)
        settings.procs = int(value)
    elif name == "seed":
        if not re.match(r"[+-]?[0-9]+\Z", value):
            msg.fatal("bad --seed value: %s" % value)
        settings.seed = int(value)
    elif name == "stats":
        parsed = stats.parse_value(value)
        if parsed is None:
            msg.fatal("bad --stats interval: %s" % value.partition(",")[0])
        settings.stats_interval, settings.stats_path = parsed
    elif name == "tls-cert":
        settings.tls_cert = value
    elif name == "tls-key":
        settings.tls_key = value
    elif name == "tls":
        settings.tls_implicit = True
    elif name == "verify":
        settings.verify = True


LMTP_REPLY = re.compile(r"([245])[0-9][0-9]( [^,\r\n]*)?\Z")


def lmtp_replies(spec, msg):
    """--lmtp-replies=SPEC: "250,452,550 5.1.1 User unknown" -> reply lines."""
    replies = []
    for item in spec.split(","):
        item = item.strip(" ")
        match = LMTP_REPLY.match(item)
        if match is None:
            msg.fatal("bad --lmtp-replies reply: %s" % item)
        if match.group(2) is None:
            digit = match.group(1)
            if item == "250":
                text = "250 2.2.0 Ok"                       # the usual LMTP_OK
            elif digit == "2":
                text = "%s %s.0.0 Ok" % (item, digit)
            else:
                text = "%s %s.0.0 Error: delivery failed" % (item, digit)
            item = text
        replies.append(item.encode("utf-8", "surrogateescape") + b"\r\n")
    return replies


def enable_extensions(settings, msg):
    """Check how the long options go together, and put their handlers in
    the command table.  BDAT and STARTTLS come in only now, so that -f,
    -r, -W ... never know them (as in Postfix)."""
    commands = settings.commands
    if (settings.tls_cert is None) != (settings.tls_key is None):
        msg.fatal("--tls-cert and --tls-key go together")
    if settings.tls_implicit and not settings.tls:
        msg.fatal("--tls needs --tls-cert and --tls-key")
    if settings.lmtp_replies and not settings.lmtp:
        msg.fatal("--lmtp-replies needs -L")
    if settings.keep_pipelining and not settings.no_pipelining:
        settings.ehlo_pipelining = True
    if settings.tls:
        commands["starttls"] = Command("starttls", ExtendedSession.smtp_STARTTLS)
        for verb in ("ehlo", "lhlo"):
            commands[verb].handler = ExtendedSession.smtp_EHLO
    if settings.chunking:
        commands["bdat"] = Command("bdat", ExtendedSession.smtp_BDAT)
        commands["data"].handler = ExtendedSession.smtp_DATA
    if settings.chunking or settings.reporting:
        commands["rcpt"].handler = ExtendedSession.smtp_RCPT
    if settings.lmtp_replies:
        commands["."].handler = ExtendedSession.smtp_DOT


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
    msg = messages.Messages(prog or messages.program_name(sys.argv[0], PROGRAM),
                            printable=True)
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

        # 2. Open the listening socket (as root, if we are root); --procs:
        #    one per worker on a TCP port (SO_REUSEPORT spreads the clients).
        listener, kind = endpoints.listen(settings.endpoint, settings.backlog, msg,
                                          settings.family, settings.window)
        listeners = [listener]
        if settings.procs > 1 and kind == "inet":
            listeners += endpoints.listen_again(listener, settings.procs - 1,
                                                settings.backlog, msg, settings.window)

        # 3. Give up privileges for good: chroot, groups, gid, uid (after
        #    reading what our extensions need: TLS key, --stats file).
        try:
            prepare_extensions(settings, msg)
            prepare_for_chroot()
            group = Group(settings) if settings.procs > 1 else None     # shared memory
            privileges.drop(settings.user, settings.root_dir, msg)
        except BaseException:
            for sock in listeners:
                sock.close()
            raise
        if settings.procs > 1:
            status, stopped_by = serve_group(settings, listeners, msg, group)
            if stopped_by is not None:
                terminated.append(stopped_by)
            return status

        # 4. Serve until -M or -n says stop.  SIGTERM stops it too, but only
        #    between whole capture records; the process then ends as killed.
        #    With --stats or --verify, SIGUSR1 asks for a statistics line
        #    (the handlers only ask: see SinkServer.stop, Statistics).
        server = new_server(settings, listener, msg)
        if threading.current_thread() is threading.main_thread():
            def on_term(signum, frame):
                terminated.append(signum)
                server.stop(None)
            signal.signal(signal.SIGTERM, on_term)
            if server.stats is not None:
                signal.signal(signal.SIGUSR1, lambda signum, frame: server.request_report())
            watch_signals(server)
        return server.serve_sessions()
    except ShowHelp:
        output.stdout(msg).write(help_text(msg.prog).encode("utf-8", "surrogateescape"))
        return 0
    except messages.Fatal:
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if server is not None:
            if threading.current_thread() is threading.main_thread():
                signal.set_wakeup_fd(-1)    # before its pipe is closed
            server.server_close()
        if terminated:
            signal.signal(terminated[0], signal.SIG_DFL)
            os.kill(os.getpid(), terminated[0])


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)    # as Postfix: ^C just ends it
    sys.exit(main())
