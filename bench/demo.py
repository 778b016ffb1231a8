#!/usr/bin/env python3
"""make demo: our smtp-source sends mail to our smtp-sink, and says how fast.

    python3 bench/demo.py [smtp-source options]     (default: -s 10 -m 5000)

Starts smtp_sink.py on a free loopback port (with "-u nobody" when run as
root, as the sink requires), runs smtp_source.py against it with a running
message counter (-c) on the terminal, prints the message rate, and stops the
sink by its process id.  The sink's own counters are shown at the end, so
that both sides can be seen to agree.
"""

import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINK = os.path.join(ROOT, "smtp_sink.py")
SOURCE = os.path.join(ROOT, "smtp_source.py")
DEFAULT_LOAD = ["-s", "10", "-m", "5000"]
START_TIMEOUT = 10          # seconds for the sink to start listening


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port):
    """Is something listening on 127.0.0.1:port?  Read from /proc/net/tcp
    where there is one, so that no probe connection shows in the sink's
    counters; elsewhere, connect and see."""
    try:
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table][1:]
    except OSError:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False
    return any(row[1] == "0100007F:%04X" % port and row[3] == "0A" for row in rows)


def wait_for_listener(port, sink):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if sink.poll() is not None:
            raise SystemExit("demo: smtp_sink.py exited with status %d" % sink.returncode)
        if listening(port):
            return
        time.sleep(0.05)
    raise SystemExit("demo: smtp_sink.py did not start listening")


def message_count(args):
    """-m as smtp-source reads it (default 1)."""
    count = 1
    for i, arg in enumerate(args[:-1]):
        if arg == "-m":
            count = int(args[i + 1])
    return count


def main(argv=None):
    load = list(sys.argv[1:] if argv is None else argv) or DEFAULT_LOAD
    port = free_port()
    endpoint = "127.0.0.1:%d" % port
    privileges = ["-u", "nobody"] if os.geteuid() == 0 else []
    with tempfile.TemporaryFile() as sink_output:
        sink = subprocess.Popen([sys.executable, SINK, "-c"] + privileges + [endpoint, "256"],
                                stdout=sink_output, stdin=subprocess.DEVNULL)
        try:
            wait_for_listener(port, sink)
            command = [sys.executable, SOURCE, "-c"] + load + [endpoint]
            print("sink:   %s (pid %d)" % (" ".join(["smtp_sink.py", "-c"] + privileges
                                                    + [endpoint, "256"]), sink.pid))
            print("source: %s" % " ".join(["smtp_source.py"] + command[2:]))
            sys.stdout.flush()
            started = time.monotonic()
            status = subprocess.call(command)       # the counter goes to the terminal
            elapsed = time.monotonic() - started
        finally:
            sink.terminate()
            sink.wait()
        sink_output.seek(0)
        counters = sink_output.read().split(b"\r")
    if status != 0:
        print("demo: smtp_source.py exited with status %d" % status)
        return status
    messages = message_count(load)
    print("%d messages in %.2f s: %.0f messages/s" % (messages, elapsed, messages / elapsed))
    last = [line for line in counters if line.strip()]
    if last:
        print("sink counters: %s" % last[-1].decode("ascii", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
