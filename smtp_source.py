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
    always waiting for the reply before going on (there is no pipelining):

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

    All sessions run in one thread, driven by one poller, as in Postfix:
    a session sends a command, and the reply wakes it up.

OPTIONS
    -4, -6      Connect over IPv4 only / IPv6 only (the last one given wins).
    -A          Do not give up when a reply is not the expected one: warn
                and carry on.  A rejected greeting or HELO is ignored; a
                rejected MAIL, a rejected DATA, or the rejection of all
                recipients is followed by RSET; a rejected end of data
                still counts as sent.  Then the next message, or QUIT.
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

EXIT STATUS
    0 when all messages were handled, 1 after a fatal error (bad arguments,
    connection refused or lost, an unexpected reply without -A).

EXAMPLES
    smtp_source.py -s 20 -m 10000 -d 127.0.0.1:2525
    smtp_source.py -c -L -r 3 -M client.example unix:/tmp/lmtp.sock
    smtp_source.py -F message.eml -t postmaster@example.com mx.example.com

SEE ALSO
    smtp_sink.py, the server counterpart; Postfix's smtp-source(1).
"""

import collections
import errno
import os
import random
import socket
import struct
import sys
import time

from smtpcore import dump, endpoints, messages, options, replies
from smtpcore.loop import PARKED, READABLE, WRITABLE, Loop, Waiter
from smtpcore.replies import printable

# ----------------------------------------------------------------- constants

PROGRAM = "smtp-source"
OPTSTRING = "+46AcC:df:F:l:Lm:M:Nor:R:s:S:t:T:vw:"
USAGE = ("usage: %s -cdLNov -s sess -l msglen -m msgs -C count -M myhostname "
         "-f from -t to -r rcptcount -R delay -w delay host[:port]")

DEFAULT_SERVICE = "smtp"        # port 25
TIMEOUT = 300                   # seconds for any one read or write (Postfix's)
RETRY_PAUSE = 0.00001           # between connect tries (-C): Postfix's usleep(10)

LA_DE_DA = (b"La de da de da 1.\r\nLa de da de da 2.\r\n"
            b"La de da de da 3.\r\nLa de da de da 4.\r\n")
LINE_SIZE = 80                  # -l: bytes per body line, CRLF included
END_OF_DATA = b".\r\n"

LINGER_RESET = struct.pack("ii", 1, 0)      # SO_LINGER on, 0 s: close() sends RST
IO_TIMEOUT = struct.pack("ll", TIMEOUT, 0)   # SO_RCVTIMEO/SO_SNDTIMEO (struct timeval)

# For -v only: what Postfix's stream layer reports.
STREAM_BUFSIZE = 4096           # VSTREAM_BUFSIZE
STREAM_SETUP = "smtp_stream_setup: maxtime=%d enable_deadline=0 min_data_rate=0" \
    % TIMEOUT

# What the message says when the connection goes away at each stage.
GREETING_STAGE = "reading server greeting"
SENDER_STAGE = "sending sender"
RECIPIENT_STAGE = "sending recipient"
DATA_STAGE = "sending DATA command"
MESSAGE_STAGE = "sending message"      # also RSET and QUIT


# ------------------------------------------------------------------ messages

class Content:
    """The bytes of each message: made once, with only the Message-Id's
    descriptor and count (and the date, taken at the first message) left to
    fill in."""

    def __init__(self, opts, pid):
        self.opts = opts
        self.pid = pid
        self.body = make_body(opts)
        self.head = None
        if not opts.send_headers:
            self.fixed = self.body + END_OF_DATA
        else:
            self.fixed = None
            self.tail = b"@" + opts.myhostname + b">\r\n"
            if opts.subject is not None:
                self.tail += b"Subject: " + opts.subject + b"\r\n"
            self.tail += b"\r\n" + self.body + END_OF_DATA

    def message(self, fd, remaining):
        """Everything that follows the 354 reply, final "." included."""
        if self.fixed is not None:
            return self.fixed
        if self.head is None:       # Postfix dates all messages alike
            opts = self.opts
            self.head = (b"From: <" + opts.sender + b">\r\nTo: <" + opts.recipient
                         + b">\r\nDate: " + dump.mail_date(time.time()).encode()
                         + b"\r\nMessage-Id: <" + b"%04x." % self.pid)
        return b"".join((self.head, b"%04x.%04x" % (fd, remaining & 0xFFFFFFFF),
                         self.tail))


def make_body(opts):
    """The body and its last CRLF: -F file, -l pattern or La de da."""
    if opts.file_data:
        return opts.file_data + b"\r\n"
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


def file_body(data):
    """-F: lines with CRLF, dot-stuffed (the final CRLF comes later)."""
    if not data:
        return b""
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        del lines[-1]
    return b"\r\n".join(b"." + line if line.startswith(b".") else line
                        for line in lines) + b"\r\n"


def write_stdout(data):
    """-c output; like Postfix, carry on if nobody reads it any more."""
    try:
        stream = getattr(sys.stdout, "buffer", None)
        if stream is None:
            sys.stdout.write(data.decode("ascii"))
            sys.stdout.flush()
        else:
            stream.write(data)
            stream.flush()
    except (OSError, ValueError):
        pass


class Run:
    """What all sessions share: options, the message budget, counters, the
    queue of connection attempts, the commands (made once)."""

    def __init__(self, opts, msg, content):
        self.opts = opts
        self.msg = msg
        self.content = content
        self.loop = Loop(wakeable=False)    # no extra descriptors: see socket numbers
        self.remaining = opts.messages      # may go below zero, as in Postfix
        self.sent = 0                       # -c
        self.next_number = 1                # -N
        self.connecting = collections.deque()
        self.sockets = set()
        self.helo_verb = "LHLO" if opts.lmtp else "HELO"
        self.helo = self.helo_verb.encode() + b" " + opts.myhostname
        self.mail = b"MAIL FROM:<" + opts.sender + b">"
        self.rcpts = [b"RCPT TO:<" + address + b">" for address in
                      recipient_addresses(opts.recipient, opts.recipients)]

    def take_message(self):
        """Claim one message of the budget; False when none is left."""
        left = self.remaining
        self.remaining = left - 1
        return left > 0

    def rcpt_command(self, index):
        """The index-th RCPT command of a message.  -N numbers are taken as
        the commands go out, so parallel sessions interleave them."""
        if self.opts.number_rcpts:
            number = self.next_number
            self.next_number = number + 1
            return b"RCPT TO:<%d" % number + self.opts.recipient + b">"
        return self.rcpts[index]

    def message_sent(self):
        """-c: show the running count."""
        self.sent += 1
        write_stdout(b"%d\r" % self.sent)

    def delay(self):
        """-w / -R: the pause after each message, in seconds."""
        opts = self.opts
        if opts.random_delay > 0:
            return random.randint(0, opts.random_delay)
        return opts.fixed_delay

    def close_all(self):
        """Drop every connection (a reset each, thanks to SO_LINGER)."""
        for sock in list(self.sockets):
            sock.close()
        self.sockets.clear()
        self.loop.close()


def recipient_addresses(recipient, count):
    """-r without -N: count, count-1, ... 2 in front, the last one bare."""
    return [b"%d" % left + recipient for left in range(count, 1, -1)] + [recipient]


# ------------------------------------------------------------------ sessions

class Session(Waiter):
    """One session: a connection at a time, carrying messages from the
    shared budget until none are left.  Each step sends one thing, yields
    to the loop until the reply is there, and checks it."""

    def __init__(self, run):
        self.run = run
        self.opts = run.opts
        self.msg = run.msg
        self.verbose = run.msg.verbose
        self.sock = None
        self.reader = None
        self.fd = -1
        self.buffer_size = STREAM_BUFSIZE
        self.connect_tries = self.opts.connect_count
        self.steps = self.serve()

    def serve(self):
        """The session's life, its first message already claimed.  When
        the budget runs out while the connection is still open (-d, and
        another session took the last message), it is dropped without QUIT,
        as Postfix drops it."""
        run, opts = self.run, self.opts
        try:
            while True:
                if self.sock is None:
                    yield from self.connect()
                    yield from self.greeting()
                    if opts.send_helo:
                        yield from self.helo()
                yield from self.transaction()
                if opts.disconnect or run.remaining < 1:
                    yield from self.quit()
                delay = run.delay()
                if delay > 0:
                    yield delay
                if not run.take_message():
                    return
        finally:
            self.close()

    def transaction(self):
        """MAIL, RCPT..., DATA, message; RSET instead when it went wrong."""
        if not (yield from self.mail()):
            return (yield from self.rset())
        accepted = 0
        for index in range(self.opts.recipients):
            accepted += yield from self.rcpt(self.run.rcpt_command(index))
        if not accepted:
            return (yield from self.rset())
        if not (yield from self.data()):
            return (yield from self.rset())
        yield from self.dot(self.opts.recipients)

    # ---- the steps

    def connect(self):
        """One connection attempt in the whole program at a time (Postfix
        queues them so as not to flood the server with SYNs); -C tries."""
        run = self.run
        run.connecting.append(self)
        if len(run.connecting) > 1:
            yield PARKED
        try:
            while not (yield from self.try_connect()):
                time.sleep(RETRY_PAUSE)
        finally:
            run.connecting.popleft()
            if run.connecting:
                run.loop.wake(run.connecting[0])
        if self.verbose and self.opts.address_family != socket.AF_UNIX:
            self.tweak_tcp()

    def try_connect(self):
        run, opts = self.run, self.opts
        if self.verbose:
            self.msg.info(STREAM_SETUP)
        sock = socket.socket(opts.address_family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        run.loop.make_poller()     # Postfix makes its poller after the first socket
        if opts.window:
            endpoints.set_window(sock, opts.window)
        if opts.address_family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.sock, self.fd = sock, sock.fileno()
        run.sockets.add(sock)
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
        self.check(reply.code // 100 == 2, reply, "rejected at server banner")

    def helo(self):
        verb = self.run.helo_verb
        self.command(self.run.helo, "sending " + verb)
        yield self.reply_wait()
        reply = self.reply("sending " + verb)
        self.check(reply.code // 100 == 2, reply, verb + " rejected")

    def mail(self):
        self.command(self.run.mail, SENDER_STAGE)
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

    def dot(self, recipients):
        """The message and its ".", in one write; then its reply (LMTP: one
        per recipient sent, accepted or not, as Postfix counts them)."""
        run = self.run
        content = run.content.message(self.fd, run.remaining)
        if self.verbose:
            self.msg.info(".")
        self.send(content, MESSAGE_STAGE,
                  "smtp_fputs" if len(content) > self.buffer_size else "smtp_flush")
        if self.opts.count:
            run.message_sent()
        for _ in range(recipients if self.opts.lmtp else 1):
            yield self.reply_wait()
            reply = self.reply(MESSAGE_STAGE)
            self.check(reply.code // 100 == 2, reply, "end of data rejected")

    def rset(self):
        self.command(b"RSET", MESSAGE_STAGE)
        yield self.reply_wait()
        reply = self.reply(MESSAGE_STAGE)
        self.check(reply.code // 100 == 2, reply, "rset rejected")

    def quit(self):
        self.command(b"QUIT", MESSAGE_STAGE)
        yield self.reply_wait()
        self.reply(MESSAGE_STAGE)                   # whatever it says
        self.close()

    # ---- helpers

    def reply_wait(self):
        """What to wait for before reading a reply: nothing when it came
        along with an earlier one (LMTP), else input."""
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

    def check(self, good, reply, complaint):
        """Go on if the reply is good; if not: fatal, or with -A a warning."""
        if good:
            return True
        text = "%s: %s" % (complaint, reply)
        if not self.opts.allow_reject:
            self.msg.fatal(text)
        self.msg.warning(text)
        return False

    def lost(self, stage, where, err):
        # SO_RCVTIMEO/SO_SNDTIMEO expiring shows as EAGAIN.
        timed_out = isinstance(err, OSError) and err.errno in (errno.EAGAIN,
                                                               errno.EWOULDBLOCK)
        if self.verbose:
            self.msg.info("%s: %s" % (where, "timeout" if timed_out else "EOF"))
        self.msg.fatal("%s while %s" % ("timeout" if timed_out else "lost connection",
                                        stage))

    def close(self):
        """Drop the connection; SO_LINGER makes it a reset."""
        sock = self.sock
        if sock is None:
            return
        self.run.loop.forget(self.fd)
        self.run.sockets.discard(sock)
        self.sock = None
        sock.close()


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
        self.file_data = b""        # -F, read and formatted
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
    parser = options.GetOpt(args, OPTSTRING)
    try:
        for letter, value in parser:
            apply_option(opts, letter, value, msg)
    except options.UsageError as err:
        if err.complaint:
            msg.info(err.complaint)
        usage(msg)
    if len(parser.operands) != 1:
        usage(msg)
    opts.endpoint = parser.operands[0]
    return opts


def usage(msg):
    msg.fatal(USAGE % printable(arg_bytes(msg.prog)))


def positive(text, complaint, msg):
    """A count, length or interval: atoi() of it, which must be above 0."""
    value = options.atoi(text)
    if value <= 0:
        msg.fatal("%s: %s" % (complaint, printable(arg_bytes(text))))
    return value


def apply_option(opts, letter, value, msg):
    """One option (value is None for a flag) into opts."""
    if letter in "46":
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


def check_myhostname(value, msg):
    """-M: a valid host name or address literal, else fatal."""
    name = arg_chars(value)
    gripe = lambda text: msg.warning(printable(text.encode("latin-1")))
    if name.startswith("["):
        if not endpoints.valid_mailhost_literal(name, gripe):
            msg.fatal("bad address literal: %s" % printable(arg_bytes(value)))
    elif not endpoints.valid_hostname(name, gripe):
        msg.fatal("bad hostname: %s" % printable(arg_bytes(value)))
    return arg_bytes(value)


def read_file(path, msg):
    """-F: the file's content, formatted for DATA (read once, at start-up)."""
    try:
        fd = os.open(path, os.O_RDONLY)     # a directory opens, and fails to read
    except OSError as err:
        msg.fatal("open %s: %s" % (printable(arg_bytes(path)), endpoints.strerror(err)))
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as err:
        msg.fatal("read %s: %s" % (printable(arg_bytes(path)), endpoints.strerror(err)))
    finally:
        os.close(fd)
    return file_body(b"".join(chunks))


def my_hostname(msg):
    """The machine's host name, checked as Postfix checks it."""
    name = socket.gethostname()
    if not endpoints.valid_hostname(arg_chars(name),
                                    lambda text: msg.warning(printable(
                                        text.encode("latin-1")))):
        msg.fatal("unable to use my own hostname")
    return arg_bytes(name)


# ---------------------------------------------------------------------- main

def main(argv=None):
    """Run smtp-source with argv (the arguments, without the program name);
    returns the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    msg = messages.Messages(messages.program_name(sys.argv[0], PROGRAM))
    run = None
    try:
        # 1. Parse the command line; read the -F file.
        opts = parse_options(argv, msg)
        msg.verbose = opts.verbose
        if opts.file is not None:
            opts.file_data = read_file(opts.file, msg)
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

        # 4. Run the sessions until the messages are sent.  As in Postfix,
        #    every session claims its first message before any starts; one
        #    that finds none left never connects (and the count of messages
        #    still to send goes below zero: it shows in the Message-Id).
        run = Run(opts, msg, Content(opts, os.getpid()))
        starting = [run.take_message() for _ in range(opts.sessions)]
        for _ in range(starting.count(True)):
            run.loop.start(Session(run))
        run.loop.run()

        # 5. End the -c count.
        if opts.count:
            write_stdout(b"\n")
        return 0
    except messages.Fatal:
        return 1
    finally:
        if run is not None:
            run.close_all()


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)    # as Postfix: ^C just ends it
    sys.exit(main())
