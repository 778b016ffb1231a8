"""smtpcore: the small library shared by smtp_sink.py and smtp_source.py.

One module per concern, each short enough to read in one sitting:

    messages    diagnostics in Postfix's format ("prog: fatal: text") on stderr
    options     getopt with glibc's error texts, C-style number parsing, usage
    endpoints   "[inet:]host:port" / "unix:path" parsing, listening and connecting
    privileges  chroot, then supplementary groups, gid and uid, for good
    dump        the -d/-D capture files of smtp-sink (templates, records, escapes)
    replies     reading and formatting SMTP replies
    loop        many sessions in one thread: an event loop over epoll

Only the Python standard library is used, so that the two scripts can be
copied onto a host that has nothing but python3.
"""

__version__ = "0.1.0"
