#!/usr/bin/env python3
"""make soak: 200 000 messages through our sink; its memory must not grow.

Starts smtp_sink.py as a subprocess (-c; as root with -u nobody), sends
10 000 messages with smtp-source (Postfix's when installed, else ours;
-d -s 20), reads the sink's resident set size (VmRSS in /proc/PID/status),
sends the remaining 190 000, reads it again, and prints the figures.  Exits
1 if the second reading is more than 10 % above the first (or anything went
wrong), 0 otherwise.

    python3 bench/soak.py [--messages 200000] [--warmup 10000]
                          [--sessions 20] [--source postfix|ours]
                          [--limit 10] [--sink-args="-t 50"]
"""

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINK = os.path.join(ROOT, "smtp_sink.py")
SOURCE = os.path.join(ROOT, "smtp_source.py")
POSTFIX_SOURCE = "/usr/sbin/smtp-source"
WAIT = 30               # seconds to wait for the sink to start or stop


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s for pid %d" % (field, pid))


def wait_listening(port, proc):
    deadline = time.monotonic() + WAIT
    wanted = ":%04X" % port
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the sink exited with status %s" % proc.returncode)
        with open("/proc/net/tcp") as table:
            if any(f[1].endswith(wanted) and f[3] == "0A"
                   for f in (line.split() for line in table) if len(f) > 3):
                return
        time.sleep(0.05)
    raise RuntimeError("the sink did not start listening")


class Counters:
    """Follows the sink's -c output ("sess=N quit=N mesg=N\\r") on a pipe,
    which it also keeps drained."""

    def __init__(self, stream):
        self.stream = stream
        self.last = b""
        self.thread = threading.Thread(target=self.follow, daemon=True)
        self.thread.start()

    def follow(self):
        tail = b""
        while True:
            chunk = self.stream.read1(65536) if hasattr(self.stream, "read1") \
                else os.read(self.stream.fileno(), 65536)
            if not chunk:
                return
            tail = (tail + chunk)[-200:]
            fields = tail.rstrip(b"\r").rsplit(b"\r", 1)[-1]
            self.last = fields

    def messages(self):
        for field in self.last.split():
            if field.startswith(b"mesg="):
                return int(field[5:])
        return 0


def run_source(command, count, port):
    argv = command + ["-m", str(count), "127.0.0.1:%d" % port]
    started = time.monotonic()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (argv[0], result.returncode,
                                                   result.stderr.decode(errors="replace")))
    return time.monotonic() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200000)
    parser.add_argument("--warmup", type=int, default=10000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--source", choices=("postfix", "ours"),
                        default="postfix" if os.access(POSTFIX_SOURCE, os.X_OK) else "ours")
    parser.add_argument("--limit", type=float, default=10.0, help="allowed growth, percent")
    parser.add_argument("--sink-args", default="", help="more sink options")
    args = parser.parse_args(argv)

    port = free_port()
    privs = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink_cmd = ([sys.executable, SINK, "-c"] + privs + shlex.split(args.sink_args)
                + ["127.0.0.1:%d" % port, "1024"])
    if args.source == "postfix":
        source_cmd = [POSTFIX_SOURCE]
    else:
        source_cmd = [sys.executable, SOURCE]
    source_cmd += ["-d", "-s", str(args.sessions), "-M", "soak.example"]
    errors = tempfile.TemporaryFile()
    sink = subprocess.Popen(sink_cmd, stdout=subprocess.PIPE, stderr=errors,
                            stdin=subprocess.DEVNULL)
    status = 1
    try:
        wait_listening(port, sink)
        counters = Counters(sink.stdout)
        rest = status_kb(sink.pid, "VmRSS")
        first = run_source(source_cmd, args.warmup, port)
        time.sleep(0.5)                     # let the sessions end
        after_warmup = status_kb(sink.pid, "VmRSS")
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.wait(1.0):
                try:
                    samples.append(status_kb(sink.pid, "VmRSS"))
                except (OSError, RuntimeError):
                    return
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        second = run_source(source_cmd, args.messages - args.warmup, port)
        time.sleep(0.5)
        stop.set()
        sampler.join(WAIT)
        at_end = status_kb(sink.pid, "VmRSS")
        peak = status_kb(sink.pid, "VmHWM")
        growth = 100.0 * (at_end - after_warmup) / after_warmup
        counted = counters.messages()
        print("soak: %d messages with %s smtp-source (-d -s %d), sink %s"
              % (args.messages, "Postfix's" if args.source == "postfix" else "our",
                 args.sessions, " ".join(sink_cmd[1:])))
        print("  sink RSS at rest:               %7d kB" % rest)
        print("  sink RSS after %6d messages: %7d kB" % (args.warmup, after_warmup))
        print("  sink RSS after %6d messages: %7d kB  (%+.1f %%, limit %.0f %%)"
              % (args.messages, at_end, growth, args.limit))
        print("  sink RSS during the run:        %7d..%d kB (1 s samples), peak %d kB"
              % (min(samples or [at_end]), max(samples or [at_end]), peak))
        print("  time: %.1f s + %.1f s, %.0f messages/s; sink counted mesg=%d"
              % (first, second, args.messages / (first + second), counted))
        errors.seek(0)
        complaints = errors.read()
        if complaints:
            print("  sink stderr: %r" % complaints[:2000])
        ok = growth <= args.limit and counted == args.messages and not complaints
        print("soak: %s" % ("PASS" if ok else "FAIL"))
        status = 0 if ok else 1
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        print("soak: FAIL: %s" % err)
    finally:
        if sink.poll() is None:
            sink.send_signal(signal.SIGTERM)
            try:
                sink.wait(WAIT)
            except subprocess.TimeoutExpired:
                sink.kill()
                sink.wait(WAIT)
        errors.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
