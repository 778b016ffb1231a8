"""An aiosmtpd server that records what it is given, for the
interoperability tests (run by the Python of .venv-peers/, which .ci/run
makes; aiosmtpd is a test peer, never a run-time dependency).

    python aiosmtpd_peer.py smtp|lmtp HOST PORT
    python aiosmtpd_peer.py smtp|lmtp unix PATH

aiosmtpd's own command line ("python -m aiosmtpd") speaks only SMTP over
TCP, hence this script: it serves aiosmtpd.smtp.SMTP or aiosmtpd.lmtp.LMTP
on TCP or a UNIX socket.  For each message it prints one JSON line to
stdout, before the end-of-data reply goes out (so a client that has its
reply has been recorded):

    {"helo": ..., "mail": ..., "rcpts": [...], "content": ...}

content is the message as received (dot-unstuffed, CRLF line ends),
decoded as Latin-1.  In LMTP the end of data gets one reply per recipient,
as RFC 2033 asks (aiosmtpd leaves that to the handler).  SIGTERM stops the
server with exit status 0.
"""

import asyncio
import json
import signal
import sys

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP


class Recorder:
    """The aiosmtpd handler: print the message, accept it."""

    def __init__(self, lmtp):
        self.lmtp = lmtp

    async def handle_DATA(self, server, session, envelope):
        record = {"helo": session.host_name, "mail": envelope.mail_from,
                  "rcpts": envelope.rcpt_tos,
                  "content": envelope.original_content.decode("latin-1")}
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
        if self.lmtp:
            return "\r\n".join("250 2.0.0 <%s> delivered" % rcpt for rcpt in envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued"


def main(argv):
    protocol, host, port = argv
    lmtp = protocol == "lmtp"
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler = Recorder(lmtp)

    def factory():
        # An explicit hostname: aiosmtpd would otherwise ask getfqdn().
        return (LMTP if lmtp else SMTP)(handler, hostname="aiosmtpd.test", loop=loop)

    if host == "unix":
        server = loop.run_until_complete(loop.create_unix_server(factory, port))
    else:
        server = loop.run_until_complete(loop.create_server(factory, host, int(port)))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
