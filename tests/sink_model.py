"""An independent reference model of smtp-sink's conversation, for the
seeded random tests (tests/test_fuzz.py).

It is written from Postfix 3.7's observed behaviour (the reference notes,
A3-A7 and A9), not from smtp_sink.py, and is deliberately naive: it walks
the client's bytes one at a time.  Given everything a client sends, it says
what the sink must answer (byte for byte, in order), where the sink hangs
up (the client sends nothing after that point), and which capture records
(-D) the session must leave behind.

Covered: default options, SMTP or LMTP (-L), optionally with -D and -S.
"""

HOSTNAME = b"smtp-sink"
GREETING = b"220 smtp-sink ESMTP\r\n"
EHLO_REPLY = (b"250-smtp-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n"
              b"250-XCLIENT NAME HELO\r\n250-XFORWARD NAME ADDR PROTO HELO\r\n"
              b"250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 \r\n")
LINE_LIMIT = 2048       # bytes of a command line, CRLF included

OK = b"250 2.0.0 Ok\r\n"
REPLIES = {
    "helo": b"250 smtp-sink\r\n",
    "ok": OK,
    "rset": b"250 2.1.0 Ok\r\n",
    "mail": b"250 2.1.0 Ok\r\n",
    "nested": b"503 5.5.1 Error: nested MAIL command\r\n",
    "rcpt": b"250 2.1.5 Ok\r\n",
    "need mail": b"503 5.5.1 Error: need MAIL command\r\n",
    "need rcpt": b"503 5.5.1 Error: need RCPT command\r\n",
    "go ahead": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "unknown": b"500 5.5.1 Error: unknown command\r\n",
    "empty": b"500 5.5.2 Error: unknown command\r\n",
    "bye": b"221 Bye\r\n",
    "lmtp ok": b"250 2.2.0 Ok\r\n",
}


def printable(data):
    return bytes(c if 32 <= c <= 126 else 63 for c in data)


def after_colons(args):
    """X-Mail-Args / X-Rcpt-Args: what follows the first run of colons."""
    if b":" not in args:
        return b""
    rest = args[args.index(b":"):]
    while rest[:1] == b":":
        rest = rest[1:]
    while rest[:1] == b" ":
        rest = rest[1:]
    return rest


class Outcome:
    """What the model predicts for one connection."""

    def __init__(self):
        self.replies = bytearray(GREETING)
        self.consumed = None        # bytes the client may send (None: all of it)
        self.closed_by_server = False
        self.records = []           # -D records, in order; None for the id/date
        self.messages = 0           # complete messages (-c mesg=)


class SinkModel:
    """Feed the bytes of one connection; read .outcome."""

    def __init__(self, lmtp=False, start_string=b"", address=b"127.0.0.1"):
        self.lmtp = lmtp
        self.start = start_string
        self.address = address
        self.out = Outcome()
        self.line = bytearray()
        self.in_data = False
        self.window = b""
        self.body = bytearray()
        self.in_mail = False
        self.rcpts = 0
        self.helo = None
        self.proto = b"LMTP" if lmtp else b"SMTP"
        self.record_head = None
        self.rcpt_args = []

    def run(self, stream):
        for index, byte in enumerate(stream):
            if not self.byte(byte):
                self.out.consumed = index + 1
                self.out.closed_by_server = True
                break
        return self.out

    # ---- one byte at a time; False when the server hangs up

    def byte(self, byte):
        if self.in_data:
            return self.data_byte(byte)
        self.line.append(byte)
        if len(self.line) > LINE_LIMIT:
            return False                        # too long: no reply, hang up
        if self.line.endswith(b"\r\n"):
            line = bytes(self.line[:-2])
            self.line = bytearray()
            return self.command(line)
        return True

    def data_byte(self, byte):
        # Dot-unstuffing and CR removal, as a record stores it: a "." right
        # after CRLF goes, every CR goes, everything else stays.
        if not ((byte == 0x2e and self.window[-2:] == b"\r\n") or byte == 0x0d):
            self.body.append(byte)
        self.window = (self.window + bytes([byte]))[-5:]
        if self.window == b"\r\n.\r\n":
            self.in_data = False
            self.end_of_data()
        return True

    # ---- commands

    def command(self, line):
        say = self.out.replies.extend
        if b"\0" in line:
            line = line[:line.index(b"\0")]
        while line[:1] in (b" ", b"\t"):
            line = line[1:]
        verb_end = 0
        while verb_end < len(line) and line[verb_end:verb_end + 1] not in (b" ", b"\t"):
            verb_end += 1
        verb = line[:verb_end].lower()
        args = printable(line[verb_end + 1:])
        if not verb:
            say(REPLIES["empty"])
        elif verb == b"helo" and not self.lmtp:
            self.reset()
            self.proto = b"SMTP"
            self.helo = args.lstrip(b" ")
            say(REPLIES["helo"])
        elif verb == (b"lhlo" if self.lmtp else b"ehlo"):
            self.reset()
            if not self.lmtp:
                self.proto = b"ESMTP"
            self.helo = args.lstrip(b" ")
            say(EHLO_REPLY)
        elif verb in (b"xclient", b"xforward", b"auth", b"noop", b"vrfy"):
            say(OK)
        elif verb == b"rset":
            self.reset()
            say(REPLIES["rset"])
        elif verb == b"mail":
            if self.in_mail:
                say(REPLIES["nested"])
            else:
                self.in_mail = True
                self.rcpts = 0
                self.rcpt_args = []
                self.record_head = (self.proto, self.helo, after_colons(args))
                say(REPLIES["mail"])
        elif verb == b"rcpt":
            if not self.in_mail:
                say(REPLIES["need mail"])
            else:
                self.rcpts += 1
                self.rcpt_args.append(after_colons(args))
                say(REPLIES["rcpt"])
        elif verb == b"data":
            if not self.in_mail or self.rcpts == 0:
                say(REPLIES["need rcpt"])
            else:
                say(REPLIES["go ahead"])
                self.in_data = True
                self.window = b"\r\n"           # the CRLF that ended DATA
                self.body = bytearray()
        elif verb == b".":
            self.dot_reply()
        elif verb == b"quit":
            say(REPLIES["bye"])
            return False
        else:
            say(REPLIES["unknown"])
        return True

    def dot_reply(self):
        """The reply to "."; in LMTP one per recipient, and the recipient
        count then goes below zero, as Postfix keeps it."""
        if not self.lmtp:
            self.out.replies.extend(OK)
            return
        if self.rcpts > 0:
            self.out.replies.extend(REPLIES["lmtp ok"] * self.rcpts)
        self.rcpts = min(self.rcpts, 0) - 1

    def reset(self):
        self.in_mail = False

    def end_of_data(self):
        proto, helo, mail_args = self.record_head
        record = [self.start, b"X-Client-Addr: ", self.address, b"\n",
                  b"X-Client-Proto: ", proto, b"\n"]
        if helo is not None:
            record += [b"X-Helo-Args: ", helo, b"\n"]
        record += [b"X-Mail-Args: ", mail_args, b"\n"]
        for rcpt in self.rcpt_args:
            record += [b"X-Rcpt-Args: ", rcpt, b"\n"]
        received_from = self.helo if self.helo is not None else b"[" + self.address + b"]"
        record += [b"Received: from ", received_from, b" ([", self.address, b"])\n",
                   b"\tby ", HOSTNAME, b" (smtp-sink) with ", self.proto, b" id <ID>;\n",
                   b"\t<DATE>\n", bytes(self.body)]
        self.out.records.append(b"".join(record))
        self.out.messages += 1
        self.in_mail = False
        self.dot_reply()


def predict(stream, lmtp=False, start_string=b""):
    """The Outcome of one connection that sends `stream` (then half-closes)."""
    return SinkModel(lmtp, start_string).run(stream)
