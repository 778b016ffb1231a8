#!/usr/bin/env python3
"""Side-by-side benchmark of our smtp-sink/smtp-source against Postfix's.

    python3 bench/bench.py [--pairs N] [--scale F] [--only NAME,...] [--json FILE]

Sink rows: Postfix's smtp-source loads our sink and Postfix's smtp-sink
(and aiosmtpd, when a Python that has it is found), alternating A B A B.
Source rows: our smtp-source and Postfix's both send to Postfix's
smtp-sink, alternating the same way.  Each row reports messages per second
for each side (median over the pairs) and the median of the per-pair
ratios ours/Postfix.  Memory rows: peak RSS of the sink holding 1000 idle
sessions, and of the source running -s 1000.

This is a benchmark, not a test: nothing here asserts a speed.  The
figures are printed as a table and written as JSON (bench/results.json).
"""

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.support import listening, wait_until  # noqa: E402

POSTFIX_SINK = "/usr/sbin/smtp-sink"
POSTFIX_SOURCE = "/usr/sbin/smtp-source"
OUR_SINK = [sys.executable, os.path.join(ROOT, "smtp_sink.py")]
OUR_SOURCE = [sys.executable, os.path.join(ROOT, "smtp_source.py")]
PRIVS = ["-u", "nobody"] if os.geteuid() == 0 else []

# name: (smtp-source flags, messages, sink flags)
WORKLOADS = {
    "conn": (["-s", "20"], 6000, []),
    "reuse": (["-s", "20", "-d"], 20000, []),
    "large": (["-s", "10", "-d", "-l", "100000"], 2000, []),
    "rcpts": (["-s", "20", "-d", "-r", "20"], 4000, []),
    "wide": (["-s", "200", "-d"], 20000, []),
    "dump": (["-s", "20", "-d"], 5000, ["-d", "{dumps}/%H/m."]),
}
SOURCE_WORKLOADS = ("conn", "reuse", "large")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_aiosmtpd():
    """A Python that can import aiosmtpd (a test/bench peer, never a
    run-time dependency): $AIOSMTPD_PYTHON, .venv-peers/, or this one."""
    for python in (os.environ.get("AIOSMTPD_PYTHON"),
                   os.path.join(ROOT, ".venv-peers", "bin", "python"), sys.executable):
        if python and os.path.exists(python):
            ok = subprocess.run([python, "-c", "import aiosmtpd"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).returncode == 0
            if ok:
                return python
    return None


class Sink:
    """A sink process on a fresh port, stopped by PID."""

    def __init__(self, kind, extra, dumps):
        self.port = free_port()
        endpoint = "127.0.0.1:%d" % self.port
        extra = [a.replace("{dumps}", dumps) for a in extra]
        if kind == "postfix":
            cmd = [POSTFIX_SINK] + PRIVS + ["-m", "1000"] + extra + [endpoint, "1024"]
        elif kind == "ours":
            cmd = OUR_SINK + PRIVS + ["-m", "1000"] + extra + [endpoint, "1024"]
        else:
            cmd = [kind, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
                   "-l", endpoint]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: self.proc.poll() is not None
                   or listening(("127.0.0.1", self.port), socket.AF_INET),
                   timeout=30, what="sink %s" % kind)
        if self.proc.poll() is not None:
            raise RuntimeError("sink failed: %r" % self.proc.stderr.read())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()


def timed(cmd):
    """Run a load generator; returns (seconds, exit status)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=600)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        sys.stderr.write("  %s: exit %s: %s\n" % (" ".join(cmd[-6:]), proc.returncode,
                                                  err.decode(errors="replace")[-300:]))
    return elapsed, proc.returncode


def run_sink_row(name, kinds, pairs, scale, dumps):
    flags, count, sink_extra = WORKLOADS[name]
    count = max(1, int(count * scale))
    rates = {kind: [] for kind in kinds}
    for _ in range(pairs):
        for kind in kinds:
            sink = Sink(kind, sink_extra, dumps)
            try:
                elapsed, status = timed([POSTFIX_SOURCE] + flags
                                        + ["-m", str(count), "127.0.0.1:%d" % sink.port])
            finally:
                sink.stop()
                clear(dumps)
            rates[kind].append(count / elapsed if status == 0 else 0.0)
    return rates


def run_source_row(name, pairs, scale):
    flags, count, _ = WORKLOADS[name]
    count = max(1, int(count * scale))
    rates = {"ours": [], "postfix": []}
    for _ in range(pairs):
        for kind, cmd in (("ours", OUR_SOURCE), ("postfix", [POSTFIX_SOURCE])):
            sink = Sink("postfix", [], "")
            try:
                elapsed, status = timed(cmd + flags + ["-m", str(count),
                                                       "127.0.0.1:%d" % sink.port])
            finally:
                sink.stop()
            rates[kind].append(count / elapsed if status == 0 else 0.0)
    return rates


def clear(directory):
    if directory and os.path.isdir(directory):
        for entry in os.listdir(directory):
            shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)


def summarise(rates, base="postfix"):
    row = {kind: round(statistics.median(values), 1) for kind, values in rates.items()}
    row["rates"] = {kind: [round(v, 1) for v in values] for kind, values in rates.items()}
    ratios = [o / b for o, b in zip(rates["ours"], rates[base]) if b]
    row["ratio"] = round(statistics.median(ratios), 3) if ratios else None
    if "aiosmtpd" in rates:
        vs = [o / a for o, a in zip(rates["ours"], rates["aiosmtpd"]) if a]
        row["vs_aiosmtpd"] = round(statistics.median(vs), 2) if vs else None
    return row


def rss_kib(pid, field="VmHWM"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def sink_idle_rss(kind, sessions=1000):
    """Peak RSS of a sink holding `sessions` idle sessions (greeted)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    sink = Sink(kind, [], "")
    socks = []
    try:
        for _ in range(sessions):
            s = socket.create_connection(("127.0.0.1", sink.port), timeout=30)
            socks.append(s)
        for s in socks:
            s.recv(100)         # the greeting: the session is being served
        return rss_kib(sink.proc.pid)
    finally:
        for s in socks:
            s.close()
        sink.stop()


def source_rss(cmd, sessions=1000):
    """Peak RSS of a source running -s sessions against Postfix's sink."""
    sink = Sink("postfix", [], "")
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        proc = subprocess.Popen(cmd + ["-s", str(sessions), "-m", str(sessions * 2), "-d",
                                       "127.0.0.1:%d" % sink.port],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = status
        return usage.ru_maxrss if usage.ru_maxrss else before
    finally:
        sink.stop()


def machine():
    cpus = os.cpu_count()
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"date": time.strftime("%Y-%m-%d"), "cpus": cpus, "cpu": model,
            "python": platform.python_version(), "kernel": platform.release()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every message count (e.g. 0.2 for a quick look)")
    parser.add_argument("--only", default="", help="comma-separated row names")
    parser.add_argument("--json", default=os.path.join(HERE, "results.json"))
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    for path in (POSTFIX_SINK, POSTFIX_SOURCE):
        if not os.access(path, os.X_OK):
            sys.exit("bench: %s is missing (apt-get install postfix)" % path)
    aiosmtpd = find_aiosmtpd()
    dumps = tempfile.mkdtemp(prefix="bench-dumps-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(dumps, 0o777)
    results = {"machine": machine(), "pairs": args.pairs, "scale": args.scale,
               "sink": {}, "source": {}, "memory": {}}
    try:
        print("%-8s %-6s %12s %12s %12s %8s %10s" % ("row", "tool", "ours msg/s", "postfix",
                                                    "aiosmtpd", "ratio", "vs aiosmtpd"))
        for name in WORKLOADS:
            if only and "sink:" + name not in only and name not in only:
                continue
            kinds = ["ours", "postfix"] + ([aiosmtpd] if aiosmtpd and name != "dump" else [])
            rates = run_sink_row(name, kinds, args.pairs, args.scale, dumps)
            if aiosmtpd in rates:
                rates["aiosmtpd"] = rates.pop(aiosmtpd)
            row = summarise(rates)
            results["sink"][name] = row
            print("%-8s %-6s %12.0f %12.0f %12s %7.2fx %10s" % (
                name, "sink", row["ours"], row["postfix"],
                "%.0f" % row["aiosmtpd"] if "aiosmtpd" in row else "-", row["ratio"] or 0,
                "%.1fx" % row["vs_aiosmtpd"] if row.get("vs_aiosmtpd") else "-"))
            sys.stdout.flush()
        for name in SOURCE_WORKLOADS:
            if only and "source:" + name not in only and name not in only:
                continue
            row = summarise(run_source_row(name, args.pairs, args.scale))
            results["source"][name] = row
            print("%-8s %-6s %12.0f %12.0f %12s %7.2fx" % (name, "source", row["ours"],
                                                          row["postfix"], "-", row["ratio"] or 0))
            sys.stdout.flush()
        if not args.no_memory and (not only or "memory" in only):
            mem = results["memory"]
            mem["sink_1000_idle_kib"] = {"ours": sink_idle_rss("ours"),
                                         "postfix": sink_idle_rss("postfix")}
            mem["source_s1000_kib"] = {"ours": source_rss(OUR_SOURCE),
                                       "postfix": source_rss([POSTFIX_SOURCE])}
            for key, row in mem.items():
                print("%-26s ours %7.1f MiB   postfix %7.1f MiB" % (
                    key, row["ours"] / 1024, row["postfix"] / 1024))
    finally:
        shutil.rmtree(dumps, ignore_errors=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    print("written to %s" % os.path.relpath(args.json))


if __name__ == "__main__":
    main()
