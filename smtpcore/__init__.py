"""smtpcore: the small library shared by smtp_sink.py and smtp_source.py.

One module per concern, each short enough to read in one sitting:

    engine      the boundary between a session and what drives it: what a
                session may wait for, and the choice of driver (--engine)
    threads     the default driver: a thread per session, waiting through
                a selectors selector of its own
    loop        the other driver (--engine=loop): every session in one
                thread, on one event loop
    messages    diagnostics in Postfix's format ("prog: fatal: text") on
                stderr; printable()
    options     getopt.getopt with glibc's complaints, one option at a time;
                C-style number parsing
    endpoints   "[inet:]host:port" / "unix:path" parsing, listening and
                connecting
    privileges  chroot, then supplementary groups, gid and uid, for good
    dump        the -d/-D/--maildir capture files of smtp-sink
    replies     reading and formatting SMTP replies
    output      report lines (-c, --stats, --report) written whole, and
                never the end of the program
    procs       --procs: counters in shared memory, a supervisor of workers
    stats       smtp-sink's --stats lines
    report      smtp-source's --report (latency per phase)
    timeline    smtp-source's --stats lines, and the report's intervals
    reportfile  --report=json files read back, checked and merged
    htmlreport  the report as one self-contained page (--report=html)
    latency     fixed-size histograms of durations
    integrity   smtp-source --integrity and smtp-sink --verify

Only the Python standard library is used, so that the two scripts can be
copied onto a host that has nothing but python3.
"""

__version__ = "0.1.0"
