"""Deliver a fixed set of messages with smtplib, for the interoperability
tests (tests/test_interop_clients.py): they call deliver() in-process, and
run this file as a script under every Python 3.8+ they can find, so it
uses nothing newer than 3.8 and nothing outside the standard library.

    python smtplib_client.py smtp HOST PORT   smtplib.SMTP: EHLO, 3 messages, QUIT
    python smtplib_client.py lmtp PATH        smtplib.LMTP on a UNIX socket: LHLO,
                                              2 messages, QUIT

As a script it prints what deliver() returns, as JSON: the value of each
sendmail()/send_message() (the refused recipients), in LMTP the extra
per-recipient replies, and the reply to QUIT.
"""

import email.message
import json
import smtplib
import sys

HELO = "client.example"
SENDER = "sender@client.example"
TIMEOUT = 20

# A str message: smtplib turns every bare LF and bare CR into CRLF, adds a
# CRLF at the end, and doubles each leading dot.
TEXT = ("Subject: text\nFrom: Sender <sender@client.example>\n\n"
        ".leading dot\n..two dots\n.\nbare LF\rbare CR\r\nCRLF\n\n"
        "last line without a newline")
# ... and what a capture record shows: LF line ends, dots undoubled.
TEXT_CAPTURED = (b"Subject: text\nFrom: Sender <sender@client.example>\n\n"
                 b".leading dot\n..two dots\n.\nbare LF\nbare CR\nCRLF\n\n"
                 b"last line without a newline\n")

# A bytes message goes out as it is (8-bit, with BODY=8BITMIME), except
# that smtplib doubles a dot after any LF, a bare one too.  The sink (as
# Postfix's) treats only CRLF as a line end when undoubling, so the dot
# after the bare LF stays doubled in the capture.
BYTES = (b"Subject: bytes\r\n\r\n.dot\r\n8-bit caf\xc3\xa9 \xff\r\n"
         b"bare\n.dot after bare LF\r\n")
BYTES_CAPTURED = (b"Subject: bytes\n\n.dot\n8-bit caf\xc3\xa9 \xff\n"
                  b"bare\n..dot after bare LF\n")

# send_message(): the envelope comes from the headers; Bcc is not sent.
MESSAGE_HEADERS = {"Subject": "send_message", "From": "Sender <sender@client.example>",
                   "To": "one@sink.example", "Cc": "two@sink.example",
                   "Bcc": "hidden@sink.example"}
MESSAGE_BODY = ".dot\nplain\n"


def email_message():
    message = email.message.EmailMessage()
    for name, value in MESSAGE_HEADERS.items():
        message[name] = value
    message.set_content(MESSAGE_BODY)
    return message


def deliver(protocol, *where):
    """Run one session; returns a JSON-ready dict of what smtplib said."""
    result = {"sent": [], "more": []}
    if protocol == "smtp":
        host, port = where
        client = smtplib.SMTP(host, int(port), local_hostname=HELO, timeout=TIMEOUT)
        result["sent"].append(client.sendmail(
            SENDER, ["one@sink.example", "two@sink.example"], TEXT,
            rcpt_options=["NOTIFY=SUCCESS,FAILURE"]))
        result["sent"].append(client.sendmail(SENDER, ["three@sink.example"], BYTES,
                                              mail_options=["BODY=8BITMIME"]))
        result["sent"].append(client.send_message(email_message()))
    else:
        (path,) = where
        # LMTP(timeout=) is 3.9+; on 3.8 the UNIX socket has no timeout.
        options = {"timeout": TIMEOUT} if sys.version_info >= (3, 9) else {}
        client = smtplib.LMTP(local_hostname=HELO, **options)
        client.connect(path)
        result["sent"].append(client.sendmail(SENDER, ["one@sink.example"], TEXT))
        result["sent"].append(client.sendmail(
            SENDER, ["one@sink.example", "two@sink.example", "three@sink.example"], BYTES))
        # smtplib reads one reply after the "."; LMTP sends one per
        # recipient, so the other two are read here.
        result["more"] = [list(client.getreply()) for _ in range(2)]
    result["quit"] = list(client.quit())
    return json.loads(json.dumps(result, default=lambda b: b.decode("ascii")))


if __name__ == "__main__":
    sys.stdout.write(json.dumps(deliver(*sys.argv[1:])) + "\n")
