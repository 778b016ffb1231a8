#!/usr/bin/env python3
"""Side-by-side benchmark of our smtp-sink/smtp-source against Postfix's.

    python3 bench/bench.py [--pairs N] [--scale F] [--only NAME,...] [--json FILE]

Both engines of our tools are measured: "ours" is the default (threads),
"ours-loop" runs with --engine=loop.  Sink rows: Postfix's smtp-source
loads our sink under each engine and Postfix's smtp-sink (and aiosmtpd,
when a Python that has it is found), in turn, A B C A B C.  Source rows:
our smtp-source under each engine and Postfix's all send to Postfix's
smtp-sink, in turn the same way.  Each row reports messages per second
for each (median over the rounds) and the median of the per-round ratios
to Postfix.  Memory rows: peak RSS of the sink holding 1000 idle sessions,
and of the source running -s 1000, under each engine.

Extension rows (--only report,stats,pipelining,procs-sink,procs-source, or a
single row as "procs-sink:conn"), each a set of variants run in turn, the
order turning each round (A B, B A, ...), a fresh sink for each run:
report        our source -s 20 -d plain and with --report=json, to Postfix's
              smtp-sink: what the measurement costs (target: under 10 %)
stats         our source -s 20 -d with --report=json, with --stats=1 (a line
              a second, to /dev/null), and plain: what the live lines add to
              the measurement they share with --report (target: under 5 %)
pipelining    our source -s 20 -d plain, --pipelining and --ehlo alone (which
              --pipelining implies), to our smtp_sink.py
procs-sink    Postfix's smtp-source -s 40 (-d: reuse; without: conn) to our
              sink with --procs=1, 2 and 4, and to Postfix's smtp-sink
procs-source  our source -s 40 -d with --procs=1, 2 and 4, and Postfix's
              smtp-source, to Postfix's smtp-sink
Per variant: the median rate, the median of the per-pair ratios to the
first variant and to "postfix", and the load generator's median CPU time
(user + system, from os.wait4) with its ratio; a failed run counts 0.

Our tools run as Python usually runs: with its bytecode cache, written
once at the start (PYTHONDONTWRITEBYTECODE, where set, is dropped for
them); without it every start compiles smtpcore anew, which the source
rows (a new process per run) would count.

This is a benchmark, not a test: nothing here asserts a speed.  The
figures are printed as a table and written as JSON (bench/results.json).
"""

import argparse
import compileall
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
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.support import listening, wait_until  # noqa: E402

POSTFIX_SINK = "/usr/sbin/smtp-sink"
POSTFIX_SOURCE = "/usr/sbin/smtp-source"
OUR_SINK = [sys.executable, os.path.join(ROOT, "smtp_sink.py")]
OUR_SOURCE = [sys.executable, os.path.join(ROOT, "smtp_source.py")]
LOOP = ["--engine=loop"]
OURS = ("ours", "ours-loop")            # the default engine (threads), and loop
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


def extension_rows():
    """The rows for the extensions, "what:workload": (messages, variants),
    a variant (name, sink kind, sink flags, source command).  Ratios are to
    the first variant and to "postfix", where there is one."""
    reuse, s40 = ["-s", "20", "-d"], ["-s", "40", "-d"]
    ours, postfix = OUR_SOURCE + reuse, [POSTFIX_SOURCE]
    procs = ("procs=1", "procs=2", "procs=4")

    def sink_procs(flags):
        return ([(p, "ours", ["--" + p], postfix + flags) for p in procs]
                + [("postfix", "postfix", [], postfix + flags)])
    return {
        # what the measurement costs (target: under 10 %)
        "report:reuse": (20000, [("plain", "postfix", [], ours),
                                 ("--report=json", "postfix", [], ours + ["--report=json"])]),
        # live interval lines: what they add to the report's measurement
        # (target: under 5 %), and what both cost against a plain run
        "stats:reuse": (20000, [("--report=json", "postfix", [], ours + ["--report=json"]),
                                ("--stats=1", "postfix", [], ours + ["--stats=1,/dev/null"]),
                                ("plain", "postfix", [], ours)]),
        # MAIL, RCPT and DATA in one write (--ehlo alone: --pipelining implies it)
        "pipelining:reuse": (20000, [("plain", "ours", [], ours)] + [
            (flag, "ours", [], ours + [flag]) for flag in ("--pipelining", "--ehlo")]),
        # our sink's worker processes, loaded by Postfix's smtp-source
        "procs-sink:reuse": (20000, sink_procs(s40)),
        "procs-sink:conn": (6000, sink_procs(["-s", "40"])),
        # our source's worker processes, sending to Postfix's smtp-sink
        "procs-source:reuse": (20000, [(p, "postfix", [], OUR_SOURCE + s40 + ["--" + p])
                                       for p in procs]
                               + [("postfix", "postfix", [], postfix + s40)]),
    }


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
        elif kind in OURS:
            engine = LOOP if kind == "ours-loop" else []
            cmd = OUR_SINK + PRIVS + engine + ["-m", "1000"] + extra + [endpoint, "1024"]
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
    """Run a load generator; returns (wall seconds, CPU seconds, exit
    status).  The CPU time (user + system, from os.wait4; with its worker
    processes, when it waits for them) is what other load on the machine
    disturbs less."""
    with tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        killer = threading.Timer(600, proc.kill)
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.monotonic() - start
        killer.cancel()
        proc.returncode = status = (os.WEXITSTATUS(status) if os.WIFEXITED(status)
                                    else -os.WTERMSIG(status))
        if status != 0:
            err.seek(0)
            sys.stderr.write("  %s: exit %s: %s\n" % (" ".join(cmd[-6:]), status,
                                                      err.read().decode(errors="replace")[-300:]))
    return elapsed, usage.ru_utime + usage.ru_stime, status


def run_variants(variants, count, pairs, dumps="", rotate=True):
    """Run each variant (name, sink kind, sink flags, source command) once
    a round, `-m count`, a fresh sink for each run; with rotate the order
    turns each round (A B, B A, ...) so that no variant always goes first.
    Returns ({name: [msg/s]}, {name: [CPU s]}); a failed run counts 0."""
    rates = {variant[0]: [] for variant in variants}
    cpu = {variant[0]: [] for variant in variants}
    for round_ in range(pairs):
        shift = round_ % len(variants) if rotate else 0
        for name, sink_kind, sink_extra, source in variants[shift:] + variants[:shift]:
            sink = Sink(sink_kind, sink_extra, dumps)
            try:
                elapsed, used, status = timed(source + ["-m", str(count),
                                                        "127.0.0.1:%d" % sink.port])
            finally:
                sink.stop()
                clear(dumps)
            rates[name].append(count / elapsed if status == 0 else 0.0)
            cpu[name].append(used if status == 0 else 0.0)
    return rates, cpu


def run_sink_row(name, kinds, pairs, scale, dumps):
    flags, count, sink_extra = WORKLOADS[name]
    variants = [(kind, kind, sink_extra, [POSTFIX_SOURCE] + flags) for kind in kinds]
    return run_variants(variants, max(1, int(count * scale)), pairs, dumps, rotate=False)[0]


def run_source_row(name, pairs, scale):
    flags, count, _ = WORKLOADS[name]
    variants = [(kind, "postfix", [], cmd + flags)
                for kind, cmd in (("ours", OUR_SOURCE), ("ours-loop", OUR_SOURCE + LOOP),
                                  ("postfix", [POSTFIX_SOURCE]))]
    return run_variants(variants, max(1, int(count * scale)), pairs, rotate=False)[0]


def clear(directory):
    if directory and os.path.isdir(directory):
        for entry in os.listdir(directory):
            shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)


def median_ratio(values, bases, digits=3):
    """The median of the per-pair ratios value/base (a failed base left out)."""
    ratios = [v / b for v, b in zip(values, bases) if b]
    return round(statistics.median(ratios), digits) if ratios else None


def summarise(rates, base="postfix"):
    row = {kind: round(statistics.median(values), 1) for kind, values in rates.items()}
    row["rates"] = {kind: [round(v, 1) for v in values] for kind, values in rates.items()}
    row["ratio"] = median_ratio(rates["ours"], rates[base])
    row["ratio_loop"] = median_ratio(rates["ours-loop"], rates[base])
    if "aiosmtpd" in rates:
        row["vs_aiosmtpd"] = median_ratio(rates["ours"], rates["aiosmtpd"], 2)
    return row


def summarise_variants(rates, cpu):
    """An extension row: per variant the median rate and CPU time, and the
    median ratios to the first variant (and to "postfix")."""
    first = next(iter(rates))
    row = {}
    for name, values in rates.items():
        row[name] = {"rate": round(statistics.median(values), 1),
                     "rates": [round(v, 1) for v in values],
                     "cpu_s": round(statistics.median(cpu[name]), 3),
                     "ratio": median_ratio(values, rates[first]),
                     "cpu_ratio": median_ratio(cpu[name], cpu[first]),
                     "vs_postfix": median_ratio(values, rates["postfix"])
                     if "postfix" in rates else None}
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


def fmt(ratio):
    return "-" if ratio is None else "%.3f" % ratio


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
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)     # see the docstring
    compileall.compile_dir(os.path.join(ROOT, "smtpcore"), quiet=1)
    dumps = tempfile.mkdtemp(prefix="bench-dumps-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(dumps, 0o777)
    results = {"machine": machine(), "pairs": args.pairs, "scale": args.scale,
               "sink": {}, "source": {}, "extensions": {}, "memory": {}}
    try:
        print("%-8s %-6s %9s %9s %9s %9s %8s %8s %10s" % (
            "row", "tool", "threads", "loop", "postfix", "aiosmtpd", "threads", "loop",
            "vs aiosmtpd"))
        for name in WORKLOADS:
            if only and "sink:" + name not in only and name not in only:
                continue
            kinds = list(OURS) + ["postfix"] + ([aiosmtpd] if aiosmtpd and name != "dump" else [])
            rates = run_sink_row(name, kinds, args.pairs, args.scale, dumps)
            if aiosmtpd in rates:
                rates["aiosmtpd"] = rates.pop(aiosmtpd)
            row = summarise(rates)
            results["sink"][name] = row
            print("%-8s %-6s %9.0f %9.0f %9.0f %9s %7.2fx %7.2fx %10s" % (
                name, "sink", row["ours"], row["ours-loop"], row["postfix"],
                "%.0f" % row["aiosmtpd"] if "aiosmtpd" in row else "-", row["ratio"] or 0,
                row["ratio_loop"] or 0,
                "%.1fx" % row["vs_aiosmtpd"] if row.get("vs_aiosmtpd") else "-"))
            sys.stdout.flush()
        for name in SOURCE_WORKLOADS:
            if only and "source:" + name not in only and name not in only:
                continue
            row = summarise(run_source_row(name, args.pairs, args.scale))
            results["source"][name] = row
            print("%-8s %-6s %9.0f %9.0f %9.0f %9s %7.2fx %7.2fx" % (
                name, "source", row["ours"], row["ours-loop"], row["postfix"], "-",
                row["ratio"] or 0, row["ratio_loop"] or 0))
            sys.stdout.flush()
        rows = {name: spec for name, spec in extension_rows().items()
                if not only or name in only or name.split(":")[0] in only}
        if rows:
            print("\n%-19s %-14s %9s %7s %10s %7s %9s" % (
                "extension", "variant", "msg/s", "ratio", "vs postfix", "CPU s", "CPU ratio"))
        for name, (count, variants) in rows.items():
            row = summarise_variants(*run_variants(variants, max(1, int(count * args.scale)),
                                                   args.pairs))
            results["extensions"][name] = row
            for variant, v in row.items():
                print("%-19s %-14s %9s %7s %10s %7.2f %9s" % (
                    name, variant, "%.0f" % v["rate"] if v["rate"] else "failed",
                    fmt(v["ratio"]), fmt(v["vs_postfix"]), v["cpu_s"], fmt(v["cpu_ratio"])))
            sys.stdout.flush()
        if not args.no_memory and (not only or "memory" in only):
            mem = results["memory"]
            mem["sink_1000_idle_kib"] = {kind: sink_idle_rss(kind)
                                         for kind in OURS + ("postfix",)}
            mem["source_s1000_kib"] = {"ours": source_rss(OUR_SOURCE),
                                       "ours-loop": source_rss(OUR_SOURCE + LOOP),
                                       "postfix": source_rss([POSTFIX_SOURCE])}
            for key, row in mem.items():
                print("%-26s threads %7.1f MiB   loop %7.1f MiB   postfix %7.1f MiB" % (
                    key, row["ours"] / 1024, row["ours-loop"] / 1024, row["postfix"] / 1024))
    finally:
        shutil.rmtree(dumps, ignore_errors=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
        f.write("\n")
    print("written to %s" % os.path.relpath(args.json))


if __name__ == "__main__":
    main()
