#!/usr/bin/env python3
"""What smtp_source.py's extensions cost or gain, on the "reuse" workload.

    python3 bench/source_extensions.py [--pairs N] [--scale F] [--only report,pipelining]

report      our source with and without --report=json, against Postfix's
            smtp-sink: the overhead of the measurement (target: under 10 %)
pipelining  our source with and without --pipelining (and with --ehlo
            alone, which --pipelining implies), against our smtp_sink.py:
            what sending MAIL, RCPT and DATA in one write gains

Each row runs the variants in turn (A B, B A, A B ...), a fresh sink for each
run, `-s 20 -m 20000 -d` (times --scale), and reports for each variant the
median rate (messages per wall-clock second), the median of the per-pair
ratios to the first variant, and the median CPU time (user + system) the
source used, which other load on the machine disturbs less.  A
benchmark, not a test: nothing is asserted.
"""

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import subprocess  # noqa: E402
import time  # noqa: E402

from bench import OUR_SOURCE, POSTFIX_SINK, Sink  # noqa: E402

FLAGS = ["-s", "20", "-d"]
MESSAGES = 20000
ROWS = {
    "report": ("postfix", [("plain", []), ("--report=json", ["--report=json"])]),
    "pipelining": ("ours", [("plain", []), ("--pipelining", ["--pipelining"]),
                            ("--ehlo", ["--ehlo"])]),
}


def timed(cmd):
    """Run the source; (wall seconds, CPU seconds, exit status)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = status
    return time.monotonic() - start, usage.ru_utime + usage.ru_stime, status


def run_row(sink_kind, variants, pairs, count):
    rates = {name: [] for name, _ in variants}
    cpu = {name: [] for name, _ in variants}
    for round_ in range(pairs):
        # A B, then B A, ...: no variant always goes first.
        shift = round_ % len(variants)
        for name, extra in variants[shift:] + variants[:shift]:
            sink = Sink(sink_kind, [], "")
            try:
                elapsed, used, status = timed(OUR_SOURCE + FLAGS + extra + [
                    "-m", str(count), "127.0.0.1:%d" % sink.port])
            finally:
                sink.stop()
            rates[name].append(count / elapsed if status == 0 else 0.0)
            cpu[name].append(used)
    return rates, cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    if not os.access(POSTFIX_SINK, os.X_OK):
        sys.exit("bench: %s is missing (apt-get install postfix)" % POSTFIX_SINK)
    count = max(1, int(MESSAGES * args.scale))
    for row, (sink_kind, variants) in ROWS.items():
        if only and row not in only:
            continue
        rates, cpu = run_row(sink_kind, variants, args.pairs, count)
        base = variants[0][0]
        print("%s (sink: %s, %d pairs, -s 20 -m %d -d)" % (row, sink_kind, args.pairs, count))
        for name, _ in variants:
            ratios = [v / b for v, b in zip(rates[name], rates[base]) if b]
            cpu_ratios = [v / b for v, b in zip(cpu[name], cpu[base]) if b]
            print("  %-16s median %8.0f msg/s  ratio %.3f   CPU %.3f s  ratio %.3f   runs %s" % (
                name, statistics.median(rates[name]), statistics.median(ratios),
                statistics.median(cpu[name]), statistics.median(cpu_ratios),
                " ".join("%.0f" % v for v in rates[name])))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
