#!/usr/bin/env python3
"""smtp_source.py - send test mail over SMTP or LMTP, as fast as it is taken.

SYNOPSIS
    smtp_source.py [options] [inet:]host[:port]
    smtp_source.py [options] unix:pathname

DESCRIPTION
    smtp-source is a load generator for mail servers.  It connects to the
    given endpoint, by TCP (IPv4 or IPv6; port 25, the "smtp" service, unless
    another port is given) or by a UNIX-domain socket, and delivers made-up
    messages, one after another or over several connections at once.  It
    behaves like Postfix 3.7's smtp-source, byte for byte, so that command
    lines and scripts written for that program work unchanged.

    Each connection goes through the same steps, one command at a time,
    always waiting for the reply before going on (no pipelining, unless
    --pipelining is given; see EXTENSIONS):

        greeting    wait for the server's 2xx greeting
        HELO        "HELO myhostname" (LHLO with -L, nothing with -o)
        MAIL        "MAIL FROM:<sender>"
        RCPT        "RCPT TO:<recipient>", once per recipient (-r)
        DATA        "DATA"; only a 354 reply will do
        message     the message content and the final "." in one write
        QUIT        "QUIT"; the reply is read but not judged

    With -d the next message follows on the same connection (MAIL again)
    instead of QUIT.  A connection is always ended with a TCP reset
    (SO_LINGER with a zero timeout), as Postfix's tool does.

    The generated message has the headers From: <sender>, To: <recipient>,
    Date: (the time of the first message) and Message-Id:
    <pid.fd.count@myhostname> (this process's id, the socket's descriptor
    and the number of messages still to be sent, each in at least four hex
    digits), then an empty line and a short body of four "La de da" lines.
    -S adds a Subject: header, -l replaces the body, -F replaces headers and
    body, and -o leaves the headers out.

    A reply other than the expected one (2xx, or 354 to DATA) ends the
    program with a message such as "fatal: recipient rejected: 550 5.1.1
    unknown user" and exit status 1; with -A it is a warning and the
    program goes on (see -A).  A lost connection is always fatal ("fatal:
    lost connection while sending recipient").  The lines of a multi-line
    reply are shown joined, with a "?" where each line ended; every
    non-printable byte shows as "?"; a line without a three-digit code
    counts as code 0.  As in Postfix, the program waits as long as it takes
    for a reply to begin; after that, each read or write of the connection
    may take at most 300 seconds ("fatal: timeout while ...").

    Each session runs in a thread of its own, waiting for its replies on
    its socket; with --engine=loop all sessions run in one thread, driven
    by one poller, as in Postfix.

OPTIONS
    -4, -6      Connect over IPv4 only / IPv6 only (the last one given wins).
    -A          Do not give up when a reply is not the expected one: warn
                and carry on.  A rejected greeting or HELO is ignored; a
                rejected MAIL, a rejected DATA, or the rejection of all
                recipients is followed by RSET; a rejected end of data
                still counts as sent.  Then the next message, or QUIT.
                A 421 or 521 reply to anything but the greeting ends the
                connection at once, without RSET or QUIT, and the next
                message goes over a new one.
    -c          Show a running count of messages on stdout, each number
                followed by a carriage return, as soon as a message's final
                "." is sent; a newline ends the count at a normal exit.
    -C count    Try to connect up to count times when the attempt fails
                (e.g. the server answers with a reset while its listen
                queue is full).  The tries are counted per session, over
                its whole life.  Default 1.
    -d          Send all of a session's messages over one connection.
    -f from     The envelope sender and From: address (default
                foo@myhostname).  Used as given, between "<" and ">".
    -F file     Send the file instead of the generated headers and body.
                Each line goes out with CRLF (a last line without a newline
                too), a line starting with "." gets another "." in front,
                and one more empty line follows the file.  An empty file
                means the "La de da" body without headers.
    -l length   A body of length bytes instead of "La de da": lines of 80
                bytes counting their CRLF, each a digit (the line number,
                modulo 10) and 77 "X"s, then one last line of the remaining
                "X"s.  Cannot be used with -F.
    -L          Speak LMTP: LHLO instead of HELO, and after the "." one
                reply for each recipient sent.
    -m count    Send count messages in all (default 1).  The sessions share
                this budget.
    -M name     The name used in HELO/LHLO, in the default addresses and in
                the Message-Id (default: this machine's host name).  A host
                name or an address literal such as "[10.1.2.3]" or
                "[IPv6:::1]".
    -N          Put a number in front of every recipient address, taken
                from one counter for the whole run (1, 2, 3, ...), so that
                no address repeats.
    -o          Old mode: no HELO/LHLO and no generated headers.
    -r count    Send count recipients per message (default 1).  Without
                -N the addresses are numbered count, count-1, ... 2, and
                the last one has no number.
    -R interval After each message wait a random 0..interval seconds
                (not with -w).
    -s count    Run count sessions (connections) at once (default 1); there
                are never more sessions than messages.
    -S subject  Add "Subject: subject" to the generated headers.
    -t to       The recipient address and To: address (default
                foo@myhostname).
    -T size     Set the TCP window: the socket send and receive buffer sizes.
    -v          Show the conversation (commands, replies) on stderr.
    -w interval After each message, the last one too, wait interval seconds
                (not with -R).

    Numbers are read the way C's atoi() reads them ("5x" is 5); a count,
    length or interval must be positive.

EXTENSIONS
    Long options add what Postfix's tool does not have.  Without them the
    program sends, prints and returns exactly what Postfix's does, so any
    command line written for that tool means the same here; an unknown
    long option is still getopt(3)'s "invalid option -- '-'" and the usage.
    A long option's value follows "=" or is the next argument.

    --help      Print the usage, with these options, on stdout; exit 0.
    --report=text|json|html[:FILE]
                At the end (also after a fatal error), write a report on
                stdout, or in FILE (emptied before anything is sent):
                elapsed time, sessions, messages, recipients, bytes and
                their rates, the latency of each phase, replies by code
                and errors by kind.  "text" is a table with a histogram of
                the message latency; "json" is one JSON object (see
                REPORT); "html" is one page for a browser, self-contained
                (inline SVG and CSS, no script, nothing fetched): messages
                per second and p50/p99/max of each phase over the run, the
                histogram of each phase, the tables, the settings and the
                command line.
    --stats=SECONDS[,FILE]
                Write a statistics line (one JSON object) every SECONDS
                seconds (a decimal number; 0 for none) and a last one when
                the run ends (also after a fatal error), on stderr, or
                appended to FILE ("-": stderr).  The keys of smtp-sink's
                --stats lines, where they mean the same: "event"
                ("interval", or "exit" for the last line), "time" (Unix
                time), "uptime" (seconds since the start), the run's
                totals so far -- "sessions" (connections established),
                "active" (connections open), "messages", "recipients",
                "bytes" (as in the report) --, "rates" (sessions,
                messages, recipients and bytes per second in the interval)
                and "replies" (read so far, by code); then "errors" (so
                far, every kind, as in the report) and "interval": what
                this interval alone did -- "seconds", "sessions",
                "messages", "recipients", "bytes", "errors" (the kinds
                met) and "latency_ms" ({phase: {"count", "p50", "p99",
                "max"}} of the phases met).  The "messages" of all the
                intervals add up to the last line's.  With --procs the
                first process writes the lines of all processes together.
    --start-at=TIME
                Send nothing until TIME, Unix time in seconds (decimals
                allowed) or HH:MM:SS today in local time; then run as
                usual, --rate's schedule counted from that moment.  A time
                past, or more than 24 hours ahead, is a fatal error.  For
                sources on several hosts (started by ssh or a scheduler)
                to begin together, their clocks in step (NTP); each has a
                run id of its own for --integrity, and --merge-reports
                makes one report of theirs.
    --merge-reports
                Send nothing: read JSON reports of this program (files
                named instead of the endpoint, "-" for stdin) and write
                the one report of them all, as --report says (text by
                default, json or html), the report one process would have
                written for all their samples: counts added, histograms
                added bucket by bucket (so the percentiles are those of
                every reply), the elapsed time from the first start to the
                last end, the timelines put on one grid, each source
                listed.  The reports must have the same schema and the
                same settings (those that shape a transaction: -L, -r,
                -d, -l, the size of -F, -o, --ehlo, --pipelining, --tls or
                --starttls, --bdat, --size, and whether --rate is given:
                else their latencies do not measure the same thing), and
                no run may come twice; otherwise it is a fatal error.  No
                option but --report goes with it.  Exit status 0 when the
                reports merged, whatever the status of their runs.
    --rate=N[/s|/m]
                Open-loop sending: message k of the run (k = 0, 1, ...) is
                due N per second (or, with /m, per minute) after the start,
                at start + k/N, whichever session carries it; a session
                that is ready early waits, one that is late sends at once.
                The report then also measures each message from the time
                it was due ("response"), so that a slow server cannot hide
                its backlog (no coordinated omission).  The sessions (-s)
                bound how many messages are under way at once.
    --integrity Put "X-Smtp-Integrity: run=<id>; seq=<n>; count=<m>;
                sha256=<digest>" first in each message (smtpcore/integrity.py):
                a random id for the run, the message's number 0..m-1
                (m = -m), and the SHA-256 of the rest of the message as
                meant (CRLF line ends, before dot-stuffing).  smtp-sink
                --verify counts what arrives ok, corrupt, twice or never.
    --procs=N   Fork N processes (1-256; at most one per session) and give
                each its share of the sessions (-s), so that more than one
                core sends.  They take their messages from one budget (-m)
                and their -N numbers from one sequence (shared memory), so
                that nothing is sent twice or repeats; -c is one running
                count, --rate one schedule, --integrity one run, and the
                first process writes one --report, merged from theirs
                (histograms added bucket by bucket: the percentiles are
                those of all the replies).  A fatal error in one process
                stops the others (exit status 1; each process that meets
                one says so); SIGTERM or SIGINT to the first stops them all.
                The Message-Id holds the id of the process that sent it.
    --engine=threads|loop
                How sessions are run: a thread per session (threads, the
                default), or all of them in one thread on one event loop,
                as Postfix's program is built (loop: the faster of the two
                in CPython; see the README's Benchmarks).  What is sent
                and printed is the same under both.
    --ehlo      EHLO instead of HELO (with -L, LHLO as always), and note the
                extensions the server announces.  If the server rejects
                EHLO with 5xx, HELO follows (RFC 5321).
    --pipelining
                Where the server announces PIPELINING (RFC 2920), send MAIL,
                every RCPT and DATA in one write, then read the replies in
                order (with --bdat: MAIL and RCPTs, then the BDAT commands
                in one write).  Without the announcement, one at a time.
    --starttls  After EHLO, STARTTLS (RFC 3207), the TLS handshake and EHLO
                again.  Fatal if the server does not announce STARTTLS or
                refuses it (with -A a warning, and the session goes on in
                clear).  Not with -o, nor with --tls.
    --tls       TLS from the start of each connection (implicit TLS, as on
                port 465), before the greeting.  With --tls and --starttls
                the endpoint's host name, unless it is an address, goes in
                the handshake (SNI).
    --tls-verify
                Check the server's certificate and its name (the host of
                the endpoint; over a UNIX socket only the certificate).
                Off by default: this is a test tool, and test servers use
                self-signed certificates.
    --tls-ca=FILE
                Trust the CA certificates in FILE (PEM) instead of the
                system's; implies --tls-verify.
    --bdat=SIZE Where the server announces CHUNKING (RFC 3030), send the
                message with BDAT in chunks of SIZE bytes, the last one as
                "BDAT n LAST", not dot-stuffed; else with DATA.
    --size      Where the server announces SIZE (RFC 1870), add SIZE=<bytes>
                (the message's size before dot-stuffing) to MAIL FROM.

    --pipelining, --starttls, --bdat and --size imply --ehlo.  With -o no
    EHLO is sent, no extension is known, and each of them falls back.  With
    any of --ehlo, --pipelining, --starttls, --tls, --bdat, --size and
    --integrity, a message is made when its transaction starts (so the
    count in its Message-Id is the one at MAIL, not at "."), and a line of
    -S or -F that starts with "." is always dot-stuffed.  A TLS handshake
    may take at most 300 seconds, like any read or write.

REPORT
    The latency of a reply runs from the start of the write that sent its
    command to the moment the reply has been read in full, on the client's
    clock (time.monotonic_ns), so it holds the server's time, the
    network's, and any time the client took to get round to the reply.
    With --pipelining every reply of a group is timed from the write of
    the whole group.  Phases:

        connect     socket() to connected (successful attempts only)
        tls         the TLS handshake (--tls, or after STARTTLS)
        greeting    connected (with --tls: handshake done) to the greeting
        helo        HELO, EHLO or LHLO
        starttls    the STARTTLS command and its 220
        mail, rcpt, data, rset, quit
                    the command and its reply (rcpt: each recipient)
        bdat        a BDAT chunk other than the last
        dot         end of data: the message and "." (or the last BDAT
                    chunk) to its reply (LMTP: each reply)
        message     service time of a message: MAIL to end-of-data reply
        response    with --rate: from the time the message was due to its
                    end-of-data reply (includes any wait for a session,
                    connecting and the greeting)

    Percentiles come from a log-linear histogram of fixed size per phase
    (smtpcore/latency.py): within 0.4 % of the true value; min and max are
    exact.  The JSON object has these keys, always, in this order:

        schema          1 (changes only if a key changes meaning)
        status          the exit status (0, or 1 after a fatal error)
        elapsed         seconds from the first connection attempt to the end
        sessions        connections established
        messages        messages accepted (2xx after "."; LMTP: any 2xx)
        messages_sent   messages whose content was sent in full
        recipients      recipients that got a message (accepted RCPTs of
                        accepted messages; LMTP: 2xx replies after ".")
        bytes           message bytes sent after DATA (as on the wire,
                        dot-stuffing and "." included) or in BDAT chunks
        messages_per_second, recipients_per_second, mb_per_second
                        messages, recipients and bytes/10**6 per elapsed second
        rate            the --rate target in messages per second, or null
        latency_ms      {phase: {"count", "min", "p50", "p90", "p99", "max"}}
                        for every phase above, in milliseconds (floats;
                        null when count is 0)
        replies         {"250": count, ...}: every reply read, by code
                        ("000" for a line without one)
        errors          {kind: count} for every kind: connect (a failed
                        connection attempt), lost, timeout, tls (handshake
                        failed, or STARTTLS not announced), and
                        rejected_greeting, rejected_helo, rejected_starttls,
                        rejected_mail, rejected_rcpt, rejected_data,
                        rejected_bdat, rejected_dot, rejected_rset
        integrity       {"run": id, "count": m} with --integrity, else null
                        (null in a report merged from several runs)

    Keys are added to schema 1 after these, never between them, so that a
    script reads a newer report unchanged: the schema changes only when a
    key changes its meaning or goes away.  These follow, for merging
    (--merge-reports) and for the page (--report=html):

        started, ended  the start and end of the run, Unix time (in a
                        merged report the first start, the last end;
                        elapsed is then their difference)
        settings        what shapes each transaction; reports merge only
                        when these are equal: protocol (SMTP, LMTP),
                        recipients (-r), reuse (-d), length (-l),
                        file_bytes (-F), old (-o), ehlo, pipelining, tls
                        (implicit, starttls or null), bdat, size, open_loop
                        (--rate given)
        sources         [{"id", "host", "command", "started", "ended",
                        "status", "messages"}]: the run (its id the
                        --integrity run id, else a random one, its command
                        line a list); one per run in a merged report
        histograms      {"unit": "ns", "sub_buckets": 128, "phases": {phase:
                        {"count", "min", "max", "buckets"}}}: each phase's
                        histogram, "buckets" the [bucket, count] pairs of
                        the buckets used, min and max exact (nanoseconds)
        timeline        {"interval": seconds, "records": [...]}, a record an
                        interval (the --stats interval, else 1 s; past 1000
                        records, neighbours are put together): "start" and
                        "seconds" (from the start of the run), "sessions",
                        "messages", "recipients", "bytes", "errors" (all
                        kinds) in it, and "latency_ms" {phase: {"count",
                        "p50", "p99", "max", "sketch"}}: the phase's
                        latencies in coarse buckets, 8 per power of two (the
                        index of the first, then the counts), which add up
                        across reports; p50 and p99 of intervals put
                        together are read from them, within 6.25 %

DIFFERENCES FROM POSTFIX
    What the program sends, prints and returns is meant to be what
    Postfix 3.7's smtp-source does for the same command line and server,
    but for two things.  A fatal error exits at once instead of after a
    one-second pause.  When the -c count (or the --report) cannot be
    written -- the reader of stdout is gone, the disk is full, a file-size
    limit is reached -- it is dropped with one warning ("warning: write
    stdout: Broken pipe"), whatever of it was cut short in a file is taken
    back, and the messages still go out; Postfix carries on silently after
    a broken pipe and is killed by SIGXFSZ at a size limit.

EXIT STATUS
    0 when all messages were handled, 1 after a fatal error (bad arguments,
    connection refused or lost, an unexpected reply without -A).

EXAMPLES
    smtp_source.py -s 20 -m 10000 -d 127.0.0.1:2525
    smtp_source.py -c -L -r 3 -M client.example unix:/tmp/lmtp.sock
    smtp_source.py -F message.eml -t postmaster@example.com mx.example.com
    smtp_source.py -s 20 -m 20000 -d --report=json 127.0.0.1:2525
    smtp_source.py -s 50 -m 30000 -d --rate=500/s --report=text 127.0.0.1:2525
    smtp_source.py --starttls --pipelining --bdat=65536 --integrity mx.example.com
    smtp_source.py -s 20 -m 100000 -d --stats=10 --report=html:run.html 127.0.0.1:2525
    smtp_source.py --start-at=12:00:00 -s 20 -m 50000 -d --integrity --report=json \\
        mx.example.com > host1.json
    smtp_source.py --merge-reports --report=html:run.html host1.json host2.json host3.json

SEE ALSO
    smtp_sink.py, the server counterpart; Postfix's smtp-source(1).
"""

import collections
import errno
import math
import os
import random
import re
import signal
import socket
import struct
import sys
import threading
import time

from smtpcore import (dump, endpoints, engine, integrity, messages, options, output, procs,
                      replies, stats, timeline)
from smtpcore.engine import PARKED, READABLE, WRITABLE, Waiter
from smtpcore.messages import printable
from smtpcore.report import PHASES, Report

monotonic_ns = time.monotonic_ns        # (a global name: the --report hot path)

# ----------------------------------------------------------------- constants

PROGRAM = "smtp-source"
OPTSTRING = "+46AcC:df:F:l:Lm:M:Nor:R:s:S:t:T:vw:"
USAGE = ("usage: %s -cdLNov -s sess -l msglen -m msgs -C count -M myhostname "
         "-f from -t to -r rcptcount -R delay -w delay host[:port]")

# Our extensions: long options only (see EXTENSIONS), with their --help lines.
LONG_OPTIONS = ("help", "report=", "rate=", "integrity", "procs=", "engine=", "ehlo",
                "pipelining", "starttls", "tls", "tls-verify", "tls-ca=", "bdat=", "size",
                "stats=", "start-at=", "merge-reports")
LONG_HELP = (
    ("--help", "show this help on stdout and exit"),
    ("--report=text|json|html[:FILE]", "at the end, a report on stdout or in FILE (rates, "
                                       "latency per phase, replies, errors; html: a page "
                                       "with charts)"),
    ("--stats=SECONDS[,FILE]", "a JSON line every SECONDS and at the end (rates, errors, "
                               "p50/p99/max per phase) on stderr or FILE"),
    ("--start-at=TIME", "send nothing until TIME (epoch seconds, or HH:MM:SS today)"),
    ("--merge-reports", "read JSON reports (files, - for stdin) instead of sending; "
                        "write the one report of all of them (--report)"),
    ("--rate=N[/s|/m]", "open loop: message k is due at start + k/N (per second or "
                        "minute)"),
    ("--integrity", "X-Smtp-Integrity: line (run id, seq, count, sha256) first in "
                    "each message"),
    ("--procs=N", "split the sessions and the messages over N processes"),
    ("--engine=threads|loop", "a thread per session (default), or one event loop"),
    ("--ehlo", "EHLO instead of HELO; note the server's extensions"),
    ("--pipelining", "MAIL, RCPTs and DATA in one write if PIPELINING is announced"),
    ("--starttls", "STARTTLS after EHLO, then EHLO again"),
    ("--tls", "TLS from the start of the connection (implicit TLS)"),
    ("--tls-verify", "check the server's certificate and name (default: no checks)"),
    ("--tls-ca=FILE", "trust the CA certificates in FILE (implies --tls-verify)"),
    ("--bdat=SIZE", "BDAT in chunks of SIZE bytes if CHUNKING is announced"),
    ("--size", "SIZE=<bytes> in MAIL FROM if SIZE is announced"),
)
RATE_VALUE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:/([sm]))?\Z")
REPORT_FORMATS = ("text", "json", "html")
EPOCH_TIME = re.compile(r"[0-9]+(\.[0-9]*)?\Z")
CLOCK_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])\Z")
MAX_START_WAIT = 24 * 3600      # --start-at: further ahead is taken for a mistake
                                # (such as milliseconds given for seconds)
MERGE_OPTIONS = ("--merge-reports", "--report")     # all that --merge-reports takes

DEFAULT_SERVICE = "smtp"        # port 25
TIMEOUT = 300                   # seconds for any one read or write (Postfix's)
RETRY_PAUSE = 0.00001           # between connect tries (-C): Postfix's usleep(10)
PIPELINE_WINDOW = 100           # commands per pipelined write (RFC 2920 5: the
                                # client must not block while the server does)

LA_DE_DA = (b"La de da de da 1.\r\nLa de da de da 2.\r\n"
            b"La de da de da 3.\r\nLa de da de da 4.\r\n")
LINE_SIZE = 80                  # -l: bytes per body line, CRLF included
FINAL_DOT = b".\r\n"          # the line that ends the message data (after its CRLF)

LINGER_RESET = struct.pack("ii", 1, 0)      # SO_LINGER on, 0 s: close() sends RST
IO_TIMEOUT = struct.pack("ll", TIMEOUT, 0)   # SO_RCVTIMEO/SO_SNDTIMEO (struct timeval)

# For -v only: what Postfix's stream layer reports.
STREAM_BUFSIZE = 4096           # VSTREAM_BUFSIZE
STREAM_SETUP = "smtp_stream_setup: maxtime=%d enable_deadline=0 min_data_rate=0" \
    % TIMEOUT


class Stage(str):
    """What a message says when the connection goes away at a stage
    ("lost connection while sending recipient"), and the phase of the
    --report that a reply read at that stage belongs to."""

    def __new__(cls, text, phase):
        stage = super().__new__(cls, text)
        stage.phase = phase
        stage.index = PHASES.index(phase)       # see Report
        return stage


CONNECT, TLS = PHASES.index("connect"), PHASES.index("tls")
GREETING_STAGE = Stage("reading server greeting", "greeting")
SENDER_STAGE = Stage("sending sender", "mail")
RECIPIENT_STAGE = Stage("sending recipient", "rcpt")
DATA_STAGE = Stage("sending DATA command", "data")
MESSAGE_STAGE = Stage("sending message", "dot")
RSET_STAGE = Stage("sending message", "rset")       # Postfix says the same
QUIT_STAGE = Stage("sending message", "quit")
STARTTLS_STAGE = Stage("sending STARTTLS", "starttls")
HANDSHAKE_STAGE = Stage("performing the TLS handshake", "tls")
BDAT_STAGE = Stage("sending BDAT", "bdat")


# ------------------------------------------------------------------ messages

class Content:
    """The bytes of each message: made once, with only the Message-Id's
    descriptor and count (and the date, taken at the first message) left to
    fill in.  message() is what follows the 354 reply, as Postfix sends it;
    raw() is the message as meant (extensions: for --integrity, BDAT, SIZE),
    not dot-stuffed and without the final "."."""

    def __init__(self, opts, pid):
        self.opts = opts
        self.pid = pid
        self.body = make_body(opts)
        raw_body = make_body(opts, stuffed=False)
        self.head = None
        if not opts.send_headers:
            self.fixed = self.body + FINAL_DOT
            self.raw_fixed = raw_body
        else:
            self.fixed = None
            tail = b"@" + opts.myhostname + b">\r\n"
            if opts.subject is not None:
                tail += b"Subject: " + opts.subject + b"\r\n"
            self.tail = tail + b"\r\n" + self.body + FINAL_DOT
            self.raw_tail = tail + b"\r\n" + raw_body

    def message(self, fd, remaining):
        """Everything that follows the 354 reply, final "." included."""
        if self.fixed is not None:
            return self.fixed
        return self._with_headers(fd, remaining, self.tail)

    def raw(self, fd, remaining):
        """The message with CRLF line ends, before dot-stuffing, no "."."""
        if self.fixed is not None:
            return self.raw_fixed
        return self._with_headers(fd, remaining, self.raw_tail)

    def _with_headers(self, fd, remaining, tail):
        if self.head is None:       # Postfix dates all messages alike
            opts = self.opts
            self.head = (b"From: <" + opts.sender + b">\r\nTo: <" + opts.recipient
                         + b">\r\nDate: " + dump.mail_date(time.time()).encode()
                         + b"\r\nMessage-Id: <" + b"%04x." % self.pid)
        return b"".join((self.head, b"%04x.%04x" % (fd, remaining & 0xFFFFFFFF), tail))


def make_body(opts, stuffed=True):
    """The body and its last CRLF: -F file, -l pattern or La de da."""
    if opts.file_data:
        return (opts.file_data if stuffed else opts.file_text) + b"\r\n"
    if opts.length > 0:
        return length_body(opts.length) + b"\r\n"
    return LA_DE_DA


def length_body(length):
    """-l: full lines of a digit, 77 X and CRLF; the rest is X only."""
    full, rest = divmod(length, LINE_SIZE)
    if rest == 0 and full > 0:          # the last line has no digit
        full, rest = full - 1, LINE_SIZE
    filler = b"X" * (LINE_SIZE - 3)
    lines = [b"%d" % (n % 10) + filler + b"\r\n" for n in range(1, full + 1)]
    return b"".join(lines) + b"X" * rest


def file_body(data, stuff=True):
    """-F: lines with CRLF, dot-stuffed unless told not to (the final CRLF
    comes later)."""
    if not data:
        return b""
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        del lines[-1]
    if not stuff:
        return b"\r\n".join(lines) + b"\r\n"
    return b"\r\n".join(b"." + line if line.startswith(b".") else line
                        for line in lines) + b"\r\n"


def dot_stuff(data):
    """A "." more in front of every line that starts with "." (RFC 5321
    4.5.2)."""
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\n.", b"\n..") if b"\n." in data else data


class Run:
    """What all sessions share: options, the message budget, counters, the
    queue of connection attempts, the commands (made once), and what the
    extensions need (report, schedule, TLS context, integrity run id)."""

    def __init__(self, opts, msg, content, counts=None, worker=None):
        """counts, worker: with --procs, the group's counters and the
        number of this worker (see run_group)."""
        self.opts = opts
        self.msg = msg
        self.content = content
        # No extra descriptors (wakeable=False): those of the sockets are
        # numbered as Postfix's, and show in the Message-Ids.
        self.driver = engine.new_driver(opts.engine, wakeable=False, worker=worker)
        self.lock = threading.Lock()        # the connect queue, the sockets
        if counts is None:
            counts = procs.LocalCounts(COUNT_NAMES)
            counts.remaining = opts.messages
            counts.next_number = 1
        self.counts = counts                # remaining: the budget (may go below
                                            # zero, as in Postfix); sent: -c;
                                            # next_number: -N
        self.connecting = collections.deque()   # sessions, in turn to connect
        self.sockets = set()
        self.sockets_made = 0               # ... ever (see connect_done)
        self.made = threading.Condition(self.lock)
        self.helo_verb = "LHLO" if opts.lmtp else "HELO"
        self.helo = self.helo_verb.encode() + b" " + opts.myhostname
        self.helo_stage = Stage("sending " + self.helo_verb, "helo")
        self.ehlo_verb = "LHLO" if opts.lmtp else "EHLO"
        self.ehlo = self.ehlo_verb.encode() + b" " + opts.myhostname
        self.ehlo_stage = Stage("sending " + self.ehlo_verb, "helo")
        self.mail = b"MAIL FROM:<" + opts.sender + b">"
        self.rcpts = [b"RCPT TO:<" + address + b">" for address in
                      recipient_addresses(opts.recipient, opts.recipients)]
        self.report = None                  # --report, --stats: the figures
        if opts.report or opts.stats_interval is not None:
            self.report = Report(opts, interval=opts.stats_interval
                                 or timeline.TIMELINE_INTERVAL)
            self.report.command = opts.command
        self.ticker = None                  # ... closes the report's intervals
        self.live = 0                       # sessions not ended yet
        self.run_id = None                  # main() makes these: --integrity,
        self.tls_context = None             # --tls/--starttls
        self.tls_hostname = None
        self.start_ns = 0                   # set just before the first session
        self.interval_ns = int(1e9 / opts.rate) if opts.rate else 0

    def claim(self):
        """Claim one message of the budget (see claim())."""
        return claim(self.counts, self.opts.messages)

    def claim_if_left(self):
        """Claim one message if one is left (else take nothing: None)."""
        counts = self.counts
        with counts.lock:
            left = counts.remaining
            if left < 1:
                return None
            counts.remaining = left - 1
        return self.opts.messages - left

    def rcpt_command(self, index):
        """The index-th RCPT command of a message.  -N numbers are taken as
        the commands go out, so parallel sessions interleave them."""
        if self.opts.number_rcpts:
            counts = self.counts
            with counts.lock:
                number = counts.next_number
                counts.next_number = number + 1
            return b"RCPT TO:<%d" % number + self.opts.recipient + b">"
        return self.rcpts[index]

    def outgoing(self, session):
        """Extensions: the session's next message as meant -- CRLF line
        ends, not dot-stuffed, no final "." -- after the --integrity line."""
        raw = self.content.raw(session.fd, self.counts.remaining)
        if self.run_id is not None:
            raw = integrity.header(self.run_id, session.seq, self.opts.messages, raw) + raw
        return raw

    def message_sent(self):
        """-c: show the running count."""
        counts = self.counts
        with counts.lock:               # --procs: the counts appear in order
            counts.sent = sent = counts.sent + 1
            output.stdout(self.msg).write(b"%d\r" % sent)

    def delay(self):
        """-w / -R: the pause after each message, in seconds."""
        opts = self.opts
        if opts.random_delay > 0:
            return random.randint(0, opts.random_delay)
        return opts.fixed_delay

    def queue_to_connect(self, sessions):
        """Put sessions in the queue of connection attempts (one in the
        whole program at a time, in the order of the queue), before they
        start (connect_turn() queues a session that was not)."""
        with self.lock:
            for session in sessions:
                session.queued = True
                self.connecting.append(session)

    def connect_turn(self, session):
        """True when session may try to connect now; else it is to wait
        (PARKED) until connect_done() wakes it."""
        with self.lock:
            if not session.queued:
                session.queued = True
                self.connecting.append(session)
            session.parked = self.connecting[0] is not session
            return not session.parked

    def connect_done(self):
        """The attempt at the head of the queue is over: the next one's
        turn (woken if it is waiting for it; one queued before it came to
        connect finds its turn there)."""
        with self.lock:
            self.connecting.popleft().queued = False
            following = self.connecting[0] if self.connecting else None
            parked = following is not None and following.parked
            if parked:
                following.parked = False
            made = self.sockets_made
        if parked:
            self.driver.wake(following)
        if following is not None and self.driver.engine == "threads":
            # In Postfix's one thread the next socket is made before this
            # session goes on, and its number shows in the Message-Ids
            # (-s 5 -m 2: descriptors 3 and 5).  A thread that ran on
            # through its whole conversation first would free descriptor 3
            # for the next one.  (The loop does as Postfix.)
            with self.lock:
                self.made.wait_for(lambda: self.sockets_made > made or self.driver.stopped,
                                   timeout=1.0)

    def session_over(self):
        """A session ended; after the last, the ticker (if any) ends too."""
        with self.lock:
            self.live -= 1
            last = self.live == 0
        if last and self.ticker is not None:
            self.driver.stop()

    def active(self):
        """Connections open now (--stats)."""
        with self.lock:
            return len(self.sockets)

    def opened(self, sock):
        with self.lock:
            self.sockets.add(sock)
            self.sockets_made += 1
            self.made.notify_all()

    def closed(self, sock):
        with self.lock:
            self.sockets.discard(sock)

    def close_all(self):
        """Stop the sessions and drop every connection (a reset each,
        thanks to SO_LINGER).  Nothing more is said: a session stopped in
        mid-step is not an error.  A session thread blocked on its socket
        is woken by shutting the socket's reading side (which sends
        nothing)."""
        with self.msg.hushed():
            self.driver.stop()
            with self.lock:
                sockets = list(self.sockets)
            for sock in sockets:
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RD)    # (not SSLSocket's)
                except OSError:
                    pass
            self.driver.close()
        for sock in sockets:
            sock.close()
        self.sockets.clear()


def claim(counts, total):
    """Claim one message of the budget of total messages: its number in
    the run (0, 1, ...), or None when none is left (the count goes on down,
    as in Postfix: it shows in the Message-Id)."""
    with counts.lock:
        left = counts.remaining
        counts.remaining = left - 1
    return total - left if left > 0 else None


def recipient_addresses(recipient, count):
    """-r without -N: count, count-1, ... 2 in front, the last one bare."""
    return [b"%d" % left + recipient for left in range(count, 1, -1)] + [recipient]


def extensions_of(reply):
    """{KEYWORD: parameters} from an EHLO/LHLO reply (its first line is the
    server's name)."""
    found = {}
    for raw in reply.lines[1:]:
        _, _, text = replies.split_line(replies.clean_line(raw))
        keyword, _, params = text.partition(b" ")
        if keyword:
            found[keyword.decode("ascii", "replace").upper()] = params.strip()
    return found


# ------------------------------------------------------------------ sessions

class Session(Waiter):
    """One session: a connection at a time, carrying messages from the
    shared budget until none are left.  Each step sends one thing, yields
    to its engine until the reply is there, and checks it.

    A transaction returns the number of recipients that got the message.
    With --report, the session wraps its send() and reply() once, at its
    start (see instrument): the time from a write to each
    reply is the latency of the reply's stage's phase.  Without --report
    nothing is timed or counted."""

    def __init__(self, run, seq=0):
        self.run = run
        self.opts = run.opts
        self.msg = run.msg
        self.verbose = run.msg.verbose
        self.sock = None
        self.reader = None
        self.fd = -1
        self.buffer_size = STREAM_BUFSIZE
        self.connect_tries = self.opts.connect_count
        self.seq = seq                  # the number of the message claimed
        self.due = None                 # --rate: when it is due (monotonic ns)
        self.sent_size = 0              # --report: bytes of the last message sent
        self.sent_ns = 0                # --report: when the last write began
        self.queued = False             # in the queue of connection attempts,
        self.parked = False             # ... waiting there for its turn
        self.report = run.report
        self.tally = None               # --report: this session's figures,
        self.samples = None             # where latencies go (a list per phase),
        self.code_log = None            # and reply codes
        if run.report is not None:
            self.instrument(run.report.tally())
        self.steps = self.serve()

    def serve(self):
        """The session's life, its first message already claimed.  With -d
        and no pause, the next message is claimed as soon as one ends (in
        Postfix's one thread nothing can come between seeing that messages
        are left and taking one), else QUIT.  When the budget runs out
        during a pause (-w, -R) while the connection is still open, it is
        dropped without QUIT, as Postfix drops it."""
        run, opts = self.run, self.opts
        pace = self.pace if run.interval_ns else None
        report = run.report
        try:
            while True:
                if pace is not None:
                    yield from pace()
                started = seq = None
                delay = run.delay()
                try:
                    if self.sock is None:
                        yield from self.open()
                    if report is None:
                        yield from self.transaction()
                    else:
                        started = time.monotonic_ns()
                        delivered = yield from self.transaction()
                        self.transaction_done(started, delivered)
                except ServerClosing:
                    self.close()
                    if started is not None:
                        self.transaction_done(started, 0)
                else:
                    if not opts.disconnect and not delay:
                        seq = run.claim_if_left()
                    if seq is None and (opts.disconnect or run.counts.remaining < 1):
                        yield from self.quit()
                if delay > 0:
                    yield delay
                if seq is None:
                    seq = run.claim()
                if seq is None:
                    return
                self.seq = seq
        finally:
            self.close()
            run.session_over()

    def open(self):
        """A new connection: connect, greeting, HELO."""
        yield from self.connect()
        yield from self.greeting()
        if self.opts.send_helo:
            yield from self.helo()

    def transaction(self):
        """MAIL, RCPT..., DATA, message; RSET instead when it went wrong."""
        if not (yield from self.mail()):
            yield from self.rset()
            return 0
        accepted = 0
        for index in range(self.opts.recipients):
            accepted += yield from self.rcpt(self.run.rcpt_command(index))
        if not accepted:
            yield from self.rset()
            return 0
        if not (yield from self.data()):
            yield from self.rset()
            return 0
        run = self.run
        good = yield from self.end_of_data(run.content.message(self.fd, run.counts.remaining),
                                           self.opts.recipients)
        return good if self.opts.lmtp else accepted * good

    def pace(self):
        """--rate: wait until this message is due (start + seq/rate)."""
        run = self.run
        self.due = due = run.start_ns + self.seq * run.interval_ns
        wait = due - time.monotonic_ns()
        if wait > 0:
            yield wait / 1e9

    # ---- the steps

    def connect(self):
        """One connection attempt in the whole program at a time (Postfix
        queues them so as not to flood the server with SYNs); -C tries."""
        run = self.run
        if not run.connect_turn(self):
            yield PARKED
        try:
            while not (yield from self.try_connect()):
                time.sleep(RETRY_PAUSE)
        finally:
            run.connect_done()
        if self.verbose and self.opts.address_family != socket.AF_UNIX:
            self.tweak_tcp()

    def try_connect(self):
        run, opts = self.run, self.opts
        if self.verbose:
            self.msg.info(STREAM_SETUP)
        sock = socket.socket(opts.address_family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        run.driver.make_poller()   # Postfix makes its poller after the first socket
        if opts.window:
            endpoints.set_window(sock, opts.window)
        if opts.address_family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.sock, self.fd = sock, sock.fileno()
        run.opened(sock)
        sock.setblocking(False)
        try:
            error = sock.connect_ex(opts.address)
        except OSError as err:
            error = err.errno
        if error in (errno.EINPROGRESS, errno.EAGAIN):
            yield WRITABLE
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self.close()
            self.connect_tries -= 1
            text = "connect: %s" % os.strerror(error)
            if run.report is not None:
                run.report.error("connect")
            if self.connect_tries <= 0:
                self.msg.fatal(text)
            self.msg.warning(text)
            return False
        # From here on the socket blocks, with Postfix's time limit on each
        # read and write (kernel timeouts: one system call per read).
        sock.setblocking(True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, IO_TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, IO_TIMEOUT)
        self.reader = replies.ReplyReader(sock)
        return True

    def tweak_tcp(self):
        """-v: Postfix sizes its stream buffer by the TCP segment size, and
        says so."""
        try:
            mss = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        except OSError:
            return
        self.msg.info("vstream_tweak_tcp: TCP_MAXSEG %d" % mss)
        if mss > STREAM_BUFSIZE // 4:
            self.buffer_size = mss * 4
            self.msg.info("fd=%d: stream buffer size old=0 new=%d"
                          % (self.fd, self.buffer_size))

    def greeting(self):
        yield self.reply_wait()
        reply = self.reply(GREETING_STAGE)
        return self.check(reply.code // 100 == 2, reply, GREETING_COMPLAINT)

    def helo(self):
        run = self.run
        self.command(run.helo, run.helo_stage)
        yield self.reply_wait()
        reply = self.reply(run.helo_stage)
        return self.check(reply.code // 100 == 2, reply, run.helo_verb + " rejected")

    def mail(self, command=None):
        """MAIL FROM (command: with parameters such as SIZE=)."""
        self.command(command or self.run.mail, SENDER_STAGE)
        yield self.reply_wait()
        reply = self.reply(SENDER_STAGE)
        return self.check(reply.code // 100 == 2, reply, "sender rejected")

    def rcpt(self, command):
        self.command(command, RECIPIENT_STAGE)
        yield self.reply_wait()
        reply = self.reply(RECIPIENT_STAGE)
        return self.check(reply.code // 100 == 2, reply, "recipient rejected")

    def data(self):
        self.command(b"DATA", DATA_STAGE)
        yield self.reply_wait()
        reply = self.reply(DATA_STAGE)
        return self.check(reply.code == 354, reply, "data rejected")   # no other 3xx

    def end_of_data(self, content, recipients):
        """The message and its ".", in one write; then its reply (LMTP: one
        per recipient sent, accepted or not, as Postfix counts them).
        Returns how many of those replies were good."""
        run = self.run
        if self.verbose:
            self.msg.info(".")
        self.send(content, MESSAGE_STAGE,
                  "smtp_fputs" if len(content) > self.buffer_size else "smtp_flush")
        self.sent_size = len(content)
        if self.opts.count:
            run.message_sent()
        good = 0
        for _ in range(recipients if self.opts.lmtp else 1):
            yield self.reply_wait()
            reply = self.reply(MESSAGE_STAGE)
            good += self.check(reply.code // 100 == 2, reply, "end of data rejected")
        return good

    def rset(self):
        self.command(b"RSET", RSET_STAGE)
        yield self.reply_wait()
        reply = self.reply(RSET_STAGE)
        return self.check(reply.code // 100 == 2, reply, "rset rejected")

    def quit(self):
        self.command(b"QUIT", QUIT_STAGE)
        yield self.reply_wait()
        self.reply(QUIT_STAGE)                      # whatever it says
        self.close()

    # ---- helpers

    def reply_wait(self):
        """What to wait for before reading a reply: nothing when it came
        along with an earlier one (LMTP, pipelining), else input."""
        return None if self.reader.buffer else READABLE

    def command(self, line, stage):
        if self.verbose:
            self.msg.info(printable(line))
        self.send(line + b"\r\n", stage, "smtp_flush")

    def send(self, data, stage, where):
        try:
            self.sock.sendall(data)
        except OSError as err:
            self.lost(stage, where, err)

    def reply(self, stage):
        """Read the reply that has begun to arrive (-v: show each line as
        it comes)."""
        try:
            return self.reader.read(self.show_line if self.verbose else None)
        except (OSError, replies.Lost) as err:
            self.lost(stage, "smtp_get", err)

    def show_line(self, line):
        self.msg.info("<<< " + line)

    # ---- --report

    def instrument(self, tally):
        """Time this session's writes, replies and connections into its own
        tally: send() and reply() are swapped for timed ones, once, so that
        a run without --report pays nothing.  The latency of a reply is the
        time since the session's last write began, filed under the phase
        of the stage it was read at."""
        self.tally = tally
        self.samples, self.code_log = tally.appenders, tally.codes.append
        self.send, self.reply = self.timed_send, self.timed_reply
        connect, connected = self.try_connect, tally.appenders[CONNECT]

        def try_connect():
            started = monotonic_ns()
            success = yield from connect()
            if success:
                self.sent_ns = ended = monotonic_ns()   # the greeting's clock
                connected(ended - started)
                tally.sessions += 1
            return success
        self.try_connect = try_connect

    def transaction_done(self, started, delivered):
        """After each transaction: count it and time the message."""
        size, self.sent_size = self.sent_size, 0
        self.tally.transaction_done(started, delivered, size, self.due)

    def timed_send(self, data, stage, where):
        """send(), noting when the write began."""
        self.sent_ns = monotonic_ns()
        try:
            self.sock.sendall(data)
        except OSError as err:
            self.lost(stage, where, err)

    def timed_reply(self, stage):
        """reply(), filing the time since the last write began under the
        stage's phase, and counting the reply's code."""
        try:
            answer = self.reader.read(self.show_line if self.verbose else None)
        except (OSError, replies.Lost) as err:
            self.lost(stage, "smtp_get", err)
        self.samples[stage.index](monotonic_ns() - self.sent_ns)
        self.code_log(answer.code)
        return answer

    def check(self, good, reply, complaint):
        """Go on if the reply is good; if not: fatal, or with -A a warning
        (and after 421 or 521, except in the greeting, the end of the
        connection, as in Postfix: see ServerClosing)."""
        if good:
            return True
        self.complain("%s: %s" % (complaint, reply), REJECTIONS.get(complaint))
        if reply.code in CLOSING_CODES and complaint != GREETING_COMPLAINT:
            raise ServerClosing()
        return False

    def complain(self, text, kind):
        """Something went wrong: fatal, or with -A a warning (and counted
        as kind in the --report)."""
        if self.run.report is not None and kind is not None:
            self.run.report.error(kind)
        if not self.opts.allow_reject:
            self.msg.fatal(text)
        self.msg.warning(text)

    def lost(self, stage, where, err):
        # SO_RCVTIMEO/SO_SNDTIMEO expiring shows as EAGAIN (with TLS, as
        # "want read/write" from a blocking socket).
        timed_out = isinstance(err, OSError) and (
            err.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or is_tls_want(err))
        if self.run.report is not None:
            self.run.report.error("timeout" if timed_out else "lost")
        if self.verbose:
            self.msg.info("%s: %s" % (where, "timeout" if timed_out else "EOF"))
        self.msg.fatal("%s while %s" % ("timeout" if timed_out else "lost connection",
                                        stage))

    def close(self):
        """Drop the connection; SO_LINGER makes it a reset."""
        sock = self.sock
        if sock is None:
            return
        self.run.driver.forget(self.fd)
        self.run.closed(sock)
        self.sock = None
        sock.close()


class ServerClosing(Exception):
    """With -A, a 421 or 521 reply (RFC 5321 3.8, RFC 7504: the server is
    going away or takes no mail): the session drops the connection at once,
    without RSET or QUIT, and goes on with its next message on a new one."""


CLOSING_CODES = (421, 521)
GREETING_COMPLAINT = "rejected at server banner"     # no such rule for the greeting

# What check() counts a rejection as, in the --report, by its complaint.
REJECTIONS = {
    "rejected at server banner": "rejected_greeting",
    "HELO rejected": "rejected_helo", "EHLO rejected": "rejected_helo",
    "LHLO rejected": "rejected_helo", "STARTTLS rejected": "rejected_starttls",
    "sender rejected": "rejected_mail", "recipient rejected": "rejected_rcpt",
    "data rejected": "rejected_data", "BDAT rejected": "rejected_bdat",
    "end of data rejected": "rejected_dot", "rset rejected": "rejected_rset",
}


def is_tls_want(err):
    """A blocking TLS socket whose SO_RCVTIMEO/SO_SNDTIMEO expired."""
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(err, (ssl.SSLWantReadError,
                                                ssl.SSLWantWriteError))


class ExtendedSession(Session):
    """A session with our extensions: TLS (implicit or STARTTLS), EHLO and
    the server's extensions, pipelining, BDAT, SIZE, the --integrity line.
    The same chain of steps, with more of them; which ones a connection
    uses is decided once, from the options and what the server announced."""

    def __init__(self, run, seq=0):
        self.extensions = {}
        self.pipelining = self.chunking = self.size_param = False
        self.tls_up = False             # this connection speaks TLS
        super().__init__(run, seq)

    def open(self):
        """connect, [TLS], greeting, EHLO, [STARTTLS, TLS, EHLO]."""
        opts = self.opts
        self.tls_up = False
        yield from self.connect()
        if opts.tls:
            yield from self.implicit_tls()
        yield from self.greeting()
        self.extensions = {}
        if not opts.send_helo:
            pass
        elif not opts.ehlo:
            yield from self.helo()
        else:
            yield from self.hello()
            if opts.starttls and (yield from self.starttls()):
                yield from self.hello()
        ext = self.extensions
        self.pipelining = opts.pipelining and "PIPELINING" in ext
        self.chunking = opts.bdat > 0 and "CHUNKING" in ext
        self.size_param = opts.size and "SIZE" in ext

    def hello(self):
        """EHLO (LHLO), or HELO after all when EHLO is refused with 5xx."""
        if (yield from self.ehlo()):
            yield from self.helo()

    def ehlo(self):
        """EHLO or LHLO; note the extensions.  True: fall back to HELO."""
        run = self.run
        verb = run.ehlo_verb
        self.command(run.ehlo, run.ehlo_stage)
        yield self.reply_wait()
        reply = self.reply(run.ehlo_stage)
        if reply.code // 100 == 2:
            self.extensions = extensions_of(reply)
            return False
        if reply.code // 100 == 5 and reply.code != 521 and not self.opts.lmtp:
            return True                             # RFC 5321 3.2
        self.check(False, reply, verb + " rejected")
        return False

    def starttls(self):
        """STARTTLS and the handshake (RFC 3207); True when TLS is up."""
        if "STARTTLS" not in self.extensions:
            self.complain("server does not announce STARTTLS", "tls")
            return False
        self.command(b"STARTTLS", STARTTLS_STAGE)
        yield self.reply_wait()
        reply = self.reply(STARTTLS_STAGE)
        if not self.check(reply.code == 220, reply, "STARTTLS rejected"):
            return False
        if self.reader.buffer:
            # Bytes after the 220 came in clear: they must not be taken
            # for replies on the protected channel (CVE-2011-0411 style).
            self.msg.fatal("unexpected data after the STARTTLS reply")
        yield from self.tls_handshake()
        self.extensions = {}
        return True

    def implicit_tls(self):
        """--tls: the handshake before the greeting."""
        yield from self.tls_handshake()

    def tls_handshake(self):
        """Wrap the socket in TLS and drive the handshake without blocking
        the other sessions; afterwards the socket blocks again, with the
        same time limits (a blocking read may then need more than one TLS
        record, which is fine once the socket is readable)."""
        import ssl
        run = self.run
        raw = self.sock
        raw.setblocking(False)
        run.closed(raw)
        try:
            sock = run.tls_context.wrap_socket(raw, server_hostname=run.tls_hostname,
                                               do_handshake_on_connect=False)
        except (ssl.SSLError, ValueError, OSError) as err:
            run.opened(raw)
            self.tls_failed(err)
        self.sock = sock
        run.opened(sock)
        started = time.monotonic_ns()
        self.deadline = time.monotonic() + TIMEOUT
        try:
            while True:
                try:
                    sock.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    ready = yield READABLE
                except ssl.SSLWantWriteError:
                    ready = yield WRITABLE
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as err:
                    self.lost(HANDSHAKE_STAGE, "tls_handshake", err)
                except ssl.SSLError as err:
                    self.tls_failed(err)
                except OSError as err:
                    self.lost(HANDSHAKE_STAGE, "tls_handshake", err)
                if not ready:
                    self.lost(HANDSHAKE_STAGE, "tls_handshake",
                              OSError(errno.EAGAIN, "timeout"))
        finally:
            self.deadline = None
        sock.setblocking(True)
        self.sent_ns = time.monotonic_ns()      # the greeting's clock (--tls)
        if self.tally is not None:
            self.samples[TLS](self.sent_ns - started)
        if self.verbose:
            self.msg.info("TLS connection established: %s %s"
                          % (sock.version(), sock.cipher()[0]))
        self.reader = replies.ReplyReader(sock)
        self.tls_up = True

    def tls_failed(self, err):
        if self.run.report is not None:
            self.run.report.error("tls")
        text = getattr(err, "reason", None) or str(err)
        detail = getattr(err, "verify_message", None)
        self.msg.fatal("TLS handshake failed: %s" % (text + ": " + detail if detail else text))

    def reply_wait(self):
        """With TLS, decrypted bytes may wait inside the SSL object, where
        no selector can see them."""
        if self.reader.buffer or (self.tls_up and self.sock.pending()):
            return None
        return READABLE

    # ---- the transaction

    def transaction(self):
        """MAIL [SIZE=], RCPT..., then DATA and the message, or BDAT; with
        pipelining, the envelope (and DATA) in one write.  RSET when it
        went wrong."""
        raw = self.run.outgoing(self)
        mail = self.run.mail
        if self.size_param:
            mail += b" SIZE=%d" % len(raw)
        send_data = not self.chunking
        if self.pipelining:
            accepted = yield from self.pipelined_envelope(mail, send_data)
        else:
            accepted = yield from self.envelope(mail, send_data)
        if not accepted:
            yield from self.rset()
            return 0
        recipients = self.opts.recipients
        if self.chunking:
            good = yield from self.bdat(raw, recipients)
            if good is None:
                yield from self.rset()
                return 0
        else:
            good = yield from self.end_of_data(dot_stuff(raw) + FINAL_DOT, recipients)
        return good if self.opts.lmtp else accepted * good

    def envelope(self, mail, send_data):
        """MAIL, RCPT..., [DATA], each waiting for its reply; the number of
        recipients accepted, 0 when the transaction cannot go on."""
        if not (yield from self.mail(mail)):
            return 0
        accepted = 0
        for index in range(self.opts.recipients):
            accepted += yield from self.rcpt(self.run.rcpt_command(index))
        if not accepted:
            return 0
        if send_data and not (yield from self.data()):
            return 0
        return accepted

    def pipelined_envelope(self, mail, send_data):
        """RFC 2920: MAIL, RCPT..., [DATA] in one write, then the replies in
        order, each judged as above."""
        run = self.run
        group = [(mail, SENDER_STAGE, 2, "sender rejected")]
        for index in range(self.opts.recipients):
            group.append((run.rcpt_command(index), RECIPIENT_STAGE, 2,
                          "recipient rejected"))
        if send_data:
            group.append((b"DATA", DATA_STAGE, 354, "data rejected"))
        verdicts = yield from self.pipeline(group)
        mail_ok = verdicts[0]
        accepted = sum(verdicts[1:1 + self.opts.recipients]) if mail_ok else 0
        if send_data and verdicts[-1] and not accepted:
            # 354 although nothing can be delivered: end the empty message.
            self.command(b".", MESSAGE_STAGE)
            yield self.reply_wait()
            self.reply(MESSAGE_STAGE)
            return 0
        if send_data and not verdicts[-1]:
            return 0
        return accepted

    def pipeline(self, group):
        """Send commands (line, stage, good code or class, complaint) in
        writes of up to PIPELINE_WINDOW; read and judge their replies in
        order.  Returns the verdicts."""
        verdicts = []
        for start in range(0, len(group), PIPELINE_WINDOW):
            window = group[start:start + PIPELINE_WINDOW]
            if self.verbose:
                for line, _, _, _ in window:
                    self.msg.info(printable(line))
            self.send(b"".join(line + b"\r\n" for line, _, _, _ in window),
                      window[0][1], "smtp_flush")
            for _, stage, good, complaint in window:
                yield self.reply_wait()
                reply = self.reply(stage)
                ok = reply.code == good if good > 9 else reply.code // 100 == good
                verdicts.append(self.check(ok, reply, complaint))
        return verdicts

    def bdat(self, payload, recipients):
        """RFC 3030: the message in BDAT chunks of --bdat bytes, the last
        one "BDAT n LAST" (LMTP: a reply per recipient for it).  Pipelined
        when the server allows it.  Returns how many end-of-data replies
        were good, or None when a chunk was refused (then RSET)."""
        run, opts = self.run, self.opts
        size = opts.bdat
        chunks = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
        last = len(chunks) - 1
        window = PIPELINE_WINDOW if self.pipelining else 1
        refused = False
        good = 0
        for start in range(0, len(chunks), window):
            batch = []
            for index in range(start, min(start + window, len(chunks))):
                chunk = chunks[index]
                line = b"BDAT %d LAST" % len(chunk) if index == last else \
                    b"BDAT %d" % len(chunk)
                if self.verbose:
                    self.msg.info(printable(line))
                batch.append(line + b"\r\n")
                batch.append(chunk)
            self.send(b"".join(batch), BDAT_STAGE, "smtp_fputs")
            for index in range(start, min(start + window, len(chunks))):
                if index < last:
                    yield self.reply_wait()
                    reply = self.reply(BDAT_STAGE)
                    if not self.check(reply.code // 100 == 2, reply, "BDAT rejected"):
                        refused = True
                    continue
                self.sent_size = len(payload)
                if opts.count:
                    run.message_sent()
                for _ in range(recipients if opts.lmtp else 1):
                    yield self.reply_wait()
                    reply = self.reply(MESSAGE_STAGE)
                    good += self.check(reply.code // 100 == 2, reply,
                                       "end of data rejected")
            if refused:
                return None
        return good


# -------------------------------------------------------------------- report

# ----------------------------------------------------------- option parsing

class Options:
    """The command line, after parsing (bytes where they go on the wire)."""

    def __init__(self):
        self.family = None          # -4/-6: "4", "6" or None (both)
        self.allow_reject = False   # -A
        self.count = False          # -c
        self.connect_count = 1      # -C
        self.disconnect = True      # -d clears it
        self.sender = None          # -f
        self.file = None            # -F
        self.file_data = b""        # -F, read and formatted (dot-stuffed)
        self.file_text = b""        # -F, formatted but not dot-stuffed
        self.length = 0             # -l
        self.lmtp = False           # -L
        self.messages = 1           # -m
        self.myhostname = None      # -M
        self.number_rcpts = False   # -N
        self.send_helo = True       # -o clears both
        self.send_headers = True
        self.recipients = 1         # -r
        self.random_delay = 0       # -R
        self.sessions = 1           # -s
        self.subject = None         # -S
        self.recipient = None       # -t
        self.window = 0             # -T
        self.verbose = 0            # -v
        self.fixed_delay = 0        # -w
        self.endpoint = None        # as given
        self.address_family = None  # ... and where that is:
        self.address = None
        # Extensions (long options).
        self.report = None          # --report: "text", "json" or "html"
        self.report_path = None     # ... FILE (None: stdout)
        self.report_fd = -1         # ... opened
        self.stats_interval = None  # --stats: seconds (0: only the last line)
        self.stats_path = None      # ... FILE (None: stderr)
        self.stats_fd = -1          # ... opened
        self.start_at = None        # --start-at: epoch seconds
        self.start_text = None      # ... as given
        self.merge_reports = False  # --merge-reports
        self.report_files = []      # ... the reports to read (the operands)
        self.given = []             # the options given, in order ("-s", "--rate")
        self.command = None         # the command line, for the report
        self.rate = None            # --rate: messages per second
        self.integrity = False      # --integrity
        self.procs = 1              # --procs
        self.engine = engine.DEFAULT_ENGINE     # --engine
        self.ehlo = False           # --ehlo (and implied by the next four)
        self.pipelining = False     # --pipelining
        self.starttls = False       # --starttls
        self.bdat = 0               # --bdat: chunk size (0: no BDAT)
        self.size = False           # --size
        self.tls = False            # --tls
        self.tls_verify = False     # --tls-verify (and --tls-ca)
        self.tls_ca = None          # --tls-ca

    def extended(self):
        """Whether sessions need the steps of ExtendedSession."""
        return bool(self.ehlo or self.tls or self.integrity)


class HelpShown(Exception):
    """--help was given and answered."""


def arg_bytes(text):
    """A command-line argument's original bytes."""
    return os.fsencode(text)


def arg_chars(text):
    """The argument with one character per byte, as C code sees it."""
    return os.fsencode(text).decode("latin-1")


def parse_options(args, msg):
    """Turn the command line into Options; fatal errors as Postfix words them.

    As with getopt(3), each option takes effect as it is met: a bad value is
    fatal before a later unknown option is noticed.
    """
    opts = Options()
    parser = options.GetOpt(args, OPTSTRING, LONG_OPTIONS)
    try:
        for letter, value in parser:
            apply_option(opts, letter, value, msg)
    except options.UsageError as err:
        if err.complaint:
            msg.info(err.complaint)
        usage(msg)
    if opts.merge_reports:
        if not parser.operands:
            usage(msg)
        opts.report_files = parser.operands
    elif len(parser.operands) != 1:
        usage(msg)
    else:
        opts.endpoint = parser.operands[0]
    check_extensions(opts, msg)
    return opts


def usage(msg):
    msg.fatal(USAGE % printable(arg_bytes(msg.prog)).decode())


def help_text(prog):
    """--help: Postfix's usage line, then our long options."""
    lines = [USAGE % printable(arg_bytes(prog)).decode(),
             "Extensions (long options; without them the program behaves as "
             "Postfix's smtp-source):"]
    lines += ["  %-20s %s" % row for row in LONG_HELP]
    return "\n".join(lines) + "\n"


def positive(text, complaint, msg):
    """A count, length or interval: atoi() of it, which must be above 0."""
    value = options.atoi(text)
    if value <= 0:
        msg.fatal("%s: %s" % (complaint, printable(arg_bytes(text)).decode()))
    return value


def apply_option(opts, letter, value, msg):
    """One option (value is None for a flag) into opts."""
    opts.given.append(letter.partition("=")[0] if letter.startswith("--") else "-" + letter)
    if letter.startswith("--"):
        apply_long_option(opts, letter[2:], value, msg)
    elif letter in "46":
        opts.family = letter
    elif letter == "A":
        opts.allow_reject = True
    elif letter == "c":
        opts.count = True
    elif letter == "C":
        opts.connect_count = positive(value, "bad connection count", msg)
    elif letter == "d":
        opts.disconnect = False
    elif letter == "f":
        opts.sender = arg_bytes(value)
    elif letter == "F":
        if opts.length > 0:
            msg.fatal("-l option cannot be used with -F")
        opts.file = value
        opts.send_headers = False
    elif letter == "l":
        if opts.file is not None:
            msg.fatal("-l option cannot be used with -F")
        opts.length = positive(value, "bad message length", msg)
    elif letter == "L":
        opts.lmtp = True
    elif letter == "m":
        opts.messages = positive(value, "bad message count", msg)
    elif letter == "M":
        opts.myhostname = check_myhostname(value, msg)
    elif letter == "N":
        opts.number_rcpts = True
    elif letter == "o":
        opts.send_helo = opts.send_headers = False
    elif letter == "r":
        opts.recipients = positive(value, "bad recipient count", msg)
    elif letter == "R":
        if opts.fixed_delay > 0:
            msg.fatal("do not use -w and -R options at the same time")
        opts.random_delay = positive(value, "bad random delay", msg)
    elif letter == "s":
        opts.sessions = positive(value, "bad session count", msg)
    elif letter == "S":
        opts.subject = arg_bytes(value)
    elif letter == "t":
        opts.recipient = arg_bytes(value)
    elif letter == "T":
        opts.window = positive(value, "bad TCP window size", msg)
    elif letter == "v":
        opts.verbose += 1
    elif letter == "w":
        if opts.random_delay > 0:
            msg.fatal("do not use -w and -R options at the same time")
        opts.fixed_delay = positive(value, "bad fixed delay", msg)


def apply_long_option(opts, name, value, msg):
    """One of our long options (name without "--") into opts."""
    def bad():
        msg.fatal("bad --%s value: %s" % (name, printable(arg_bytes(value)).decode()))

    if name == "help":
        output.stdout(msg).write(help_text(msg.prog).encode("utf-8", "surrogateescape"))
        raise HelpShown()
    elif name == "report":
        kind, colon, path = value.partition(":")
        if kind not in REPORT_FORMATS or (colon and not path):
            bad()
        opts.report, opts.report_path = kind, path or None
    elif name == "stats":
        parsed = stats.parse_value(value)
        if parsed is None:
            bad()
        opts.stats_interval, opts.stats_path = parsed
    elif name == "start-at":
        opts.start_at, opts.start_text = start_time(value), value
        if opts.start_at is None:
            bad()
    elif name == "merge-reports":
        opts.merge_reports = True
    elif name == "rate":
        match = RATE_VALUE.match(value)
        number = float(match.group(1)) if match else 0.0
        if number <= 0 or number > 1e9:
            bad()
        opts.rate = number / 60 if match.group(2) == "m" else number
    elif name == "integrity":
        opts.integrity = True
    elif name == "procs":
        if not options.alldig(value) or not 1 <= int(value) <= procs.MAX_PROCS:
            bad()
        opts.procs = int(value)
    elif name == "engine":
        if value not in engine.ENGINES:
            bad()
        opts.engine = value
    elif name == "ehlo":
        opts.ehlo = True
    elif name == "pipelining":
        opts.ehlo = opts.pipelining = True
    elif name == "starttls":
        opts.ehlo = opts.starttls = True
    elif name == "tls":
        opts.tls = True
    elif name == "tls-verify":
        opts.tls_verify = True
    elif name == "tls-ca":
        if not value:
            bad()
        opts.tls_verify, opts.tls_ca = True, value
    elif name == "bdat":
        if not options.alldig(value) or int(value) <= 0 or int(value) > 2 ** 31 - 1:
            bad()
        opts.ehlo, opts.bdat = True, int(value)
    elif name == "size":
        opts.ehlo = opts.size = True


def check_extensions(opts, msg):
    """Combinations of long options that cannot work."""
    if opts.merge_reports:
        others = [name for name in opts.given if name not in MERGE_OPTIONS]
        if others:
            msg.fatal("--merge-reports sends nothing: %s does not go with it" % others[0])
    if opts.tls and opts.starttls:
        msg.fatal("use --tls or --starttls, not both")
    if opts.starttls and not opts.send_helo:
        msg.fatal("--starttls needs EHLO: do not use it with -o")
    if opts.tls_verify and not (opts.tls or opts.starttls):
        msg.fatal("--tls-verify and --tls-ca need --tls or --starttls")


def start_time(value):
    """--start-at: epoch seconds, or HH:MM:SS today (local time); None
    when it is neither.  Whether it is still ahead is checked when the
    run starts (start_moment)."""
    if EPOCH_TIME.match(value):
        return float(value)
    match = CLOCK_TIME.match(value)
    if match is None:
        return None
    today = time.localtime()
    hour, minute, second = map(int, match.groups())
    return time.mktime((today.tm_year, today.tm_mon, today.tm_mday, hour, minute, second,
                        0, 0, -1))


def start_moment(opts, msg):
    """When the run starts (time.monotonic_ns): now, or --start-at, which
    must lie ahead (and not more than MAX_START_WAIT).  The wall clock is
    read first: a start computed so is never early."""
    now = time.time()
    start_ns = time.monotonic_ns()
    if opts.start_at is None:
        return start_ns
    ahead = opts.start_at - now
    shown = printable(arg_bytes(opts.start_text)).decode()
    if ahead <= 0:
        msg.fatal("--start-at time is in the past: %s" % shown)
    if ahead > MAX_START_WAIT:
        msg.fatal("--start-at time is more than %d hours ahead: %s"
                  % (MAX_START_WAIT // 3600, shown))
    return start_ns + math.ceil(ahead * 1e9)


def wait_for_start(start_ns):
    """Sleep until start_ns (time.monotonic_ns), without a busy wait."""
    while True:
        left = start_ns - time.monotonic_ns()
        if left <= 0:
            return
        time.sleep(left / 1e9)


def check_myhostname(value, msg):
    """-M: a valid host name or address literal, else fatal."""
    name = arg_chars(value)
    gripe = lambda text: msg.warning(printable(text.encode("latin-1")))
    if name.startswith("["):
        if not endpoints.valid_mailhost_literal(name, gripe):
            msg.fatal("bad address literal: %s" % printable(arg_bytes(value)).decode())
    elif not endpoints.valid_hostname(name, gripe):
        msg.fatal("bad hostname: %s" % printable(arg_bytes(value)).decode())
    return arg_bytes(value)


def read_file(path, msg):
    """-F: the file's content (read once, at start-up)."""
    try:
        fd = os.open(path, os.O_RDONLY)     # a directory opens, and fails to read
    except OSError as err:
        msg.fatal("open %s: %s" % (printable(arg_bytes(path)).decode(), endpoints.strerror(err)))
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as err:
        msg.fatal("read %s: %s" % (printable(arg_bytes(path)).decode(), endpoints.strerror(err)))
    finally:
        os.close(fd)
    return b"".join(chunks)


def my_hostname(msg):
    """The machine's host name, checked as Postfix checks it."""
    name = socket.gethostname()
    if not endpoints.valid_hostname(arg_chars(name),
                                    lambda text: msg.warning(printable(
                                        text.encode("latin-1")))):
        msg.fatal("unable to use my own hostname")
    return arg_bytes(name)


def tls_setup(opts, msg):
    """--tls/--starttls: (SSL context, the server's name).  The name goes in
    the handshake (SNI) and, with --tls-verify, must match the certificate;
    over a UNIX-domain socket there is none (only the chain is checked)."""
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    hostname = None
    if opts.address_family != socket.AF_UNIX:
        endpoint = opts.endpoint[5:] if opts.endpoint.startswith("inet:") else opts.endpoint
        hostname = endpoints.host_port(endpoint, None, DEFAULT_SERVICE)[0]
    if not opts.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context, hostname
    try:
        if opts.tls_ca is not None:
            context.load_verify_locations(cafile=opts.tls_ca)
        else:
            context.load_default_certs()
    except (OSError, ssl.SSLError) as err:
        msg.fatal("cannot load --tls-ca %s: %s" % (printable(arg_bytes(opts.tls_ca or "")).decode(),
                                                   getattr(err, "strerror", None)
                                                   or getattr(err, "reason", None) or err))
    if hostname is None:
        context.check_hostname = False
    return context, hostname


# ---------------------------------------------------------------------- main

def main(argv=None):
    """Run smtp-source with argv (the arguments, without the program name);
    returns the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    msg = messages.Messages(messages.program_name(sys.argv[0], PROGRAM))
    opts = run = lines = None
    status = 1
    try:
        # 1. Parse the command line; read the -F file.  (--merge-reports
        #    reads reports instead, and sends nothing.)
        opts = parse_options(argv, msg)
        opts.command = [PROGRAM] + [os.fsencode(arg).decode("utf-8", "replace") for arg in argv]
        if opts.merge_reports:
            return merge_reports(opts, msg)
        msg.verbose = opts.verbose
        if opts.file is not None:
            data = read_file(opts.file, msg)
            opts.file_data, opts.file_text = file_body(data), file_body(data, stuff=False)
        if msg.verbose:
            msg.info("name_mask: %s" % {None: "all", "4": "ipv4", "6": "ipv6"}[opts.family])

        # 2. Find the server.
        try:
            opts.address_family, opts.address = endpoints.client_endpoint(
                opts.endpoint, opts.family, DEFAULT_SERVICE)
        except endpoints.EndpointError as err:
            msg.fatal(printable(arg_bytes(str(err))))

        # 3. Fill in the defaults that depend on the host name.
        if opts.myhostname is None:
            opts.myhostname = my_hostname(msg)
        default_address = b"foo@" + opts.myhostname
        if opts.sender is None:
            opts.sender = default_address
        if opts.recipient is None:
            opts.recipient = default_address

        # 4. Extensions: the TLS context and the run id, made once; the
        #    --report and --stats files; when the run starts (--start-at).
        tls = tls_setup(opts, msg) if opts.tls or opts.starttls else (None, None)
        run_id = integrity.new_run_id() if opts.integrity else None
        open_outputs(opts, msg)
        start_ns = start_moment(opts, msg)
        if opts.procs > 1:
            return run_group(opts, msg, tls, run_id, start_ns)
        run = Run(opts, msg, Content(opts, os.getpid()))
        run.tls_context, run.tls_hostname = tls
        run.run_id = run_id
        emit = ignore
        if opts.stats_interval is not None:
            lines = timeline.LineWriter(opts.stats_fd, opts.stats_path, msg, start_ns)
            if opts.stats_interval > 0:
                emit = lines.write
        run_sessions(run, [run.claim() for _ in range(opts.sessions)], start_ns, emit)

        # 6. End the -c count.
        if opts.count:
            output.stdout(msg).write(b"\n")
        status = 0
    except HelpShown:
        return 0
    except messages.Fatal:
        pass
    finally:
        if run is not None:
            run.close_all()
    # 7. The last --stats line and the --report, also after a fatal error.
    if run is not None and run.report is not None and run.report.started is not None:
        end_report(run.report, status, ignore if lines is None else lines.write_last)
        status = write_report(run.report, opts, msg, status)
    if opts is not None:
        close_outputs(opts)
    return status


def ignore(*args):
    """Where --stats lines go without --stats (or with --stats=0)."""


def run_sessions(run, claims, start_ns, emit):
    """5. Run the sessions until the messages are sent, from start_ns
    (monotonic; --start-at: nothing is sent before).  As in Postfix,
    every session has claimed its first message before any starts (claims:
    a number each, or None); one that found none left never connects (and
    the count of messages still to send went below zero: it shows in the
    Message-Id).  With a report, a ticker closes its intervals (emit:
    where they go, as --stats lines) until the last session ends."""
    wait_for_start(start_ns)
    report = run.report
    if report is not None:
        report.run_id = run.run_id
        report.begin(start_ns)
    session_class = ExtendedSession if run.opts.extended() else Session
    run.start_ns = start_ns
    started = [session_class(run, seq) for seq in claims if seq is not None]
    run.live = len(started)
    if not started:                     # (a --procs worker may have none)
        return
    if report is not None:
        run.ticker = timeline.Ticker(report, emit, run.active)
        run.driver.start(run.ticker)
    run.queue_to_connect(started)       # they connect in this order
    for session in started:
        run.driver.start(session)
    run.driver.run()


def end_report(report, status, last_line):
    """The run is over: its last interval (last_line(interval): the last
    --stats line), its elapsed time and exit status."""
    last_line(report.last_tick(time.monotonic_ns()))
    report.elapsed = (time.monotonic_ns() - report.start_ns) / 1e9
    report.status = status


def write_report(report, opts, msg, status):
    """--report, on stdout or in its FILE; returns the exit status (1 when
    the FILE could not be written)."""
    if opts.report is None:
        return status
    if status and opts.count:
        output.stdout(msg).write(b"\n")    # the -c count did not end its line
    if opts.report == "json":
        text = report.json()
    elif opts.report == "html":
        from smtpcore import htmlreport     # (only here: it takes a while to import)
        text = htmlreport.page(report.as_dict())
    else:
        text = report.text()
    data = text.encode("utf-8", "replace")
    if opts.report_fd < 0:
        output.stdout(msg).write(data)
        return status
    name = printable(arg_bytes(opts.report_path)).decode()
    if not output.LineWriter(opts.report_fd, name, msg).write(data):
        return 1                            # (it said why)
    return status


def open_outputs(opts, msg):
    """The --report FILE (emptied) and the --stats FILE (appended to; by
    default stderr), opened before anything is sent, so that a bad path is
    a fatal error now and not at the end."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    for path, mode, name in ((opts.report_path, os.O_TRUNC, "report_fd"),
                             (opts.stats_path, os.O_APPEND, "stats_fd")):
        if path is not None:
            try:
                setattr(opts, name, os.open(path, flags | mode, 0o644))
            except OSError as err:
                msg.fatal("open %s: %s" % (printable(arg_bytes(path)).decode(),
                                           endpoints.strerror(err)))
    if opts.stats_interval is not None and opts.stats_path is None:
        opts.stats_fd = sys.stderr.fileno()


def close_outputs(opts):
    for name, path in (("report_fd", opts.report_path), ("stats_fd", opts.stats_path)):
        fd = getattr(opts, name)
        if fd >= 0 and path is not None:
            os.close(fd)
        setattr(opts, name, -1)


def merge_reports(opts, msg):
    """--merge-reports: read the JSON reports named ("-": stdin), check
    that they can be one run (smtpcore/reportfile.py), and write the one
    report of them all (text unless --report says otherwise).  Exit
    status 0 when they merged, whatever their runs' status."""
    from smtpcore import reportfile         # (only here: as htmlreport)
    loaded = []
    for name in opts.report_files:
        shown = "stdin" if name == "-" else printable(arg_bytes(name)).decode()
        try:
            if name == "-":
                loaded.append(reportfile.load(shown, sys.stdin.buffer))
            else:
                with open(name, "rb") as stream:
                    loaded.append(reportfile.load(shown, stream))
        except OSError as err:
            msg.fatal("open %s: %s" % (shown, endpoints.strerror(err)))
        except reportfile.BadReport as err:
            msg.fatal(str(err))
    try:
        merged = reportfile.merge(loaded, opts)
    except reportfile.BadReport as err:
        msg.fatal(str(err))
    opts.report = opts.report or "text"
    open_outputs(opts, msg)         # (only now: FILE may be one of the reports read)
    status = write_report(merged, opts, msg, 0)
    close_outputs(opts)
    return status


# ---------------------------------------------------------------- --procs=N

COUNT_NAMES = ("remaining", "sent", "next_number")


class Stopped(Exception):
    """A worker of --procs got SIGTERM: the group is being stopped."""


def run_group(opts, msg, tls, run_id, start_ns):
    """--procs=N: the sessions (-s) split over N forked workers, which
    take their messages from one budget and their -N numbers from one
    sequence (shared memory: smtpcore/procs.py), so that nothing is sent
    twice or repeats.  The first process waits for them, writes the
    --stats lines of all of them (each worker sends its intervals on a
    pipe: timeline.Collector), ends the -c line, and writes one report
    merged from theirs (each worker leaves its figures in a file of its
    own).  A worker's fatal error stops the others: exit status 1."""
    workers = min(opts.procs, opts.sessions)
    try:
        counts = procs.SharedCounts(COUNT_NAMES)
        results = procs.WorkerResults(workers) if opts.report else None
        collector = None
        if opts.stats_interval is not None:
            writer = timeline.LineWriter(opts.stats_fd, opts.stats_path, msg, start_ns)
            collector = timeline.Collector(workers, writer, intervals=opts.stats_interval > 0)
    except (OSError, ImportError) as err:   # no /dev/shm, no writable TMPDIR
        msg.fatal("--procs: %s" % err)
    counts.remaining, counts.next_number = opts.messages, 1
    # Every session of every worker claims its first message before any
    # starts, as the sessions of one process do.
    claims = [claim(counts, opts.messages) for _ in range(opts.sessions)]

    def stop(signo, frame):
        raise Stopped()

    def worker(index):
        try:
            return work(index)
        except Stopped:     # a SIGTERM before the run began, or as it ended
            return 1

    def work(index):
        signal.signal(signal.SIGTERM, stop)
        channel = collector.channel(index) if collector is not None else None
        run = Run(opts, msg, Content(opts, os.getpid()), counts, worker=index)
        run.tls_context, run.tls_hostname = tls
        run.run_id = run_id
        if run.report is not None:
            run.report.held_signals = {signal.SIGTERM}      # flush() is not cut short
        status = 1
        try:
            run_sessions(run, claims[index::workers], start_ns,
                         channel.send if channel is not None and opts.stats_interval else ignore)
            status = 0
        except (messages.Fatal, Stopped):
            pass
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)   # the report is written whole
            run.close_all()
            if run.report is not None and run.report.started is not None:
                end_report(run.report, status, ignore if channel is None else
                           lambda interval: channel.send(interval, final=True))
                if results is not None:
                    results.put(index, run.report.state())
        return status

    output.stdout(msg)                     # before the fork: one -c warning for all
    status, signo = procs.Supervisor(workers, worker, msg, replace=False).run(
        None if collector is None else collector.start)
    if collector is not None:
        collector.close_writers()           # the workers are gone: the lines end
        collector.join(10)                  # (seconds; it has only the last lines to write)
    if signo is not None:                   # SIGTERM or SIGINT: die of it, as Postfix
        signal.signal(signo, signal.SIG_DFL)
        os.kill(os.getpid(), signo)
    if opts.count and not status:
        output.stdout(msg).write(b"\n")
    if results is not None:
        report = Report(opts)
        report.command = opts.command
        report.run_id = run_id
        report.begin(start_ns)
        for index, state in results.collect():
            if state is None:
                msg.warning("worker %d left no figures for the report" % index)
            else:
                report.merge(state)
        report.elapsed = (time.monotonic_ns() - start_ns) / 1e9
        report.status = status
        status = write_report(report, opts, msg, status)
    close_outputs(opts)
    return status


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)    # as Postfix: ^C just ends it
    sys.exit(main())
