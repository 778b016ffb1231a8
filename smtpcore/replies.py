"""SMTP replies: reading one from a server, and showing one in a message.

A reply is one or more lines; every line but the last has a "-" right
after the code (RFC 5321 4.2.1):

    250-smtp.example
    250-PIPELINING
    250 8BITMIME

Postfix's smtp-source reads replies leniently, and scripts see the result in
its diagnostics ("fatal: HELO rejected: 501 first?second"), so we read them
the same way:

  * a line ends at LF; CRs before the LF are dropped (a bare LF is fine);
  * only the first LINE_LIMIT bytes of a line are kept, the rest is skipped;
  * a NUL byte ends the line's text, as in a C string;
  * the code is the line's leading digits if there are exactly three of
    them, else 0 ("hello there" and "2200 x" are code 0);
  * the text is what follows the code, a "-" and any white space; the texts
    of a multi-line reply are joined with LF, up to about TEXT_LIMIT bytes;
  * the reply's code is that of its last line.

In a message, every byte outside printable ASCII shows as "?", so the LFs of
a multi-line reply become "?" (messages.printable()).

A connection that ends before the reply is complete raises Lost.
"""

from smtpcore.messages import printable

LINE_LIMIT = 10240          # bytes of one reply line kept (Postfix's line_length_limit)
TEXT_LIMIT = 10240          # a reply's joined text stops growing at this size
RECV_SIZE = 65536           # bytes asked for in one recv()

_SPACE = b" \t\n\v\f\r"     # C isspace()
_DIGITS = b"0123456789"


class Lost(Exception):
    """The server closed the connection (or it broke) in mid-reply."""


def clean_line(raw):
    """One reply line as Postfix sees it: raw is the bytes before the LF."""
    line = raw[:LINE_LIMIT].rstrip(b"\r")
    nul = line.find(b"\0")
    return line if nul < 0 else line[:nul]


def split_line(line):
    """(code, more, text) of one cleaned reply line."""
    digits = len(line) - len(line.lstrip(_DIGITS))
    code = int(line[:3]) if digits == 3 else 0
    more = line[digits:digits + 1] == b"-"
    text = line[digits + more:].lstrip(_SPACE)
    return code, more, text


class Reply:
    """One server reply: .code (int) and .lines (raw, without the LF)."""

    __slots__ = ("code", "lines")

    def __init__(self, code, lines):
        self.code = code
        self.lines = lines

    def text(self):
        """The joined text (bytes): line texts separated by LF."""
        joined = b""
        for raw in self.lines:
            _, more, text = split_line(clean_line(raw))
            if len(joined) < TEXT_LIMIT:
                joined += text
            if not more:
                break
            if len(joined) < TEXT_LIMIT:
                joined += b"\n"
        return joined

    def __str__(self):
        """'550 5.7.1 first?second', the way diagnostics show a reply."""
        return "%d %s" % (self.code, printable(self.text()).decode("ascii"))


class ReplyReader:
    """Reads replies from a connected socket through a small buffer.

    Replies are read one at a time; bytes that arrive early (the server
    pipelining, or several LMTP replies at once) stay in the buffer.
    """

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def _fill(self):
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise Lost("EOF")
        return data

    def read_line(self):
        """The raw bytes of the next line (without its LF).

        Keeps at most LINE_LIMIT + 1 bytes of an overlong line, so a server
        cannot make us store an endless one.
        """
        buffer = self.buffer
        end = buffer.find(b"\n")
        while end < 0:
            if len(buffer) > LINE_LIMIT:
                buffer = buffer[:LINE_LIMIT + 1]
            buffer += self._fill()
            end = buffer.find(b"\n")
        self.buffer = buffer[end + 1:]
        return buffer[:end]

    def read(self, show=None):
        """The next complete reply (a Reply).  show, if given, is called
        with each line (cleaned, printable) as soon as it is read."""
        buffer = self.buffer
        if not buffer and show is None:
            buffer = self._fill()
            # The usual case: one whole single-line reply such as b"250 Ok\r\n".
            if (buffer[3:4] == b" " and buffer[-1:] == b"\n"
                    and buffer.find(b"\n") == len(buffer) - 1
                    and buffer[:3].isdigit()):
                return Reply(int(buffer[:3]), [buffer[:-1]])
            self.buffer = buffer
        lines = []
        while True:
            raw = self.read_line()
            lines.append(raw)
            line = clean_line(raw)
            if show is not None:
                show(printable(line).decode("ascii"))
            code, more, _ = split_line(line)
            if not more:
                return Reply(code, lines)
