"""smtp-source --merge-reports: JSON reports read back, checked, and merged
into the one report of all of them.

Each report is what --report=json wrote (schema 1, with the keys that
merging needs: started, ended, settings, sources, histograms, timeline).
The merged report is what one process would have reported for all the
samples together: histograms added bucket by bucket, counts added, the
elapsed time from the first start to the last end, the timelines put on
one grid (smtpcore/timeline.py).  It is itself a report that merges again.

Reports merge only when they can be one run:

  * the same schema (1) and the same histogram buckets (unit, buckets per
    power of two): otherwise their numbers do not add up;
  * the same "settings", the settings that shape each transaction (see
    report.workload: protocol, recipients, -d, message size, ESMTP
    options, open loop or not): a latency of one is then a latency of the
    other; a p99 of 1 KB and 1 MB messages together would mean nothing;
  * no run twice: the id of each source (with --integrity its run id)
    appears once, so that a report given twice is not counted twice.

What may differ is what only paces or names a run: the endpoint, -s,
-m, --procs, --engine, the value of --rate, the interval of --stats.
Every failure is a BadReport, whose text names the report.
"""

import collections
import json

from smtpcore.latency import BUCKETS, MAX_VALUE, SUB_BUCKETS
from smtpcore.report import ERROR_KINDS, PHASES, Report

SCHEMA = 1
NEEDED = ("started", "ended", "settings", "sources", "histograms", "timeline")


class BadReport(Exception):
    """A report that cannot be read or merged (the message says why)."""


# A report read back: its name (for messages), its JSON, and that as
# Report.merge() takes it (made once, by the checks of load()).
Loaded = collections.namedtuple("Loaded", "name data state")


def load(name, stream):
    """The report in stream (a binary file; name: for messages), parsed
    and checked: a Loaded."""
    try:
        data = json.loads(stream.read().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise BadReport("%s: not a JSON report: %s" % (name, err))
    if not isinstance(data, dict) or "schema" not in data:
        raise BadReport("%s: not a report of smtp-source --report=json" % name)
    if data["schema"] != SCHEMA:
        raise BadReport("%s: report schema %s; this smtp-source reads schema %d"
                        % (name, json.dumps(data["schema"]), SCHEMA))
    missing = [key for key in NEEDED if key not in data]
    if missing:
        raise BadReport("%s: no %s in this report (written by an smtp-source without "
                        "--merge-reports?)" % (name, ", ".join(missing)))
    histograms = data["histograms"]
    if not isinstance(histograms, dict) or (histograms.get("unit"), histograms.get(
            "sub_buckets")) != ("ns", SUB_BUCKETS):
        raise BadReport("%s: histograms with other buckets than ns, %d per power of two"
                        % (name, SUB_BUCKETS))
    try:
        merged = state(data)        # every number where it belongs
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise BadReport("%s: malformed report: %s" % (name, describe(err)))
    return Loaded(name, data, merged)


def describe(err):
    if isinstance(err, KeyError):
        return "no %s" % err
    return str(err) or type(err).__name__


def count(value, what="count"):
    """A non-negative integer from a report (bool is no number here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("bad %s: %s" % (what, json.dumps(value)))
    return value


def number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("bad %s: %s" % (what, json.dumps(value)))
    return value


def state(data):
    """A JSON report as Report.merge() takes it (see Report.state)."""
    histograms = []
    phases = data["histograms"]["phases"]
    for phase in PHASES:
        row = phases.get(phase)
        if row is None or not row["count"]:
            histograms.append(([], MAX_VALUE * 1024, -1))       # empty
            continue
        used = [(count(index, "bucket"), count(amount)) for index, amount in row["buckets"]]
        if any(index >= BUCKETS for index, _ in used):
            raise ValueError("bucket beyond %d in %s" % (BUCKETS - 1, phase))
        if sum(amount for _, amount in used) != count(row["count"]):
            raise ValueError("the buckets of %s do not add up to its count" % phase)
        low, high = count(row["min"], "min"), count(row["max"], "max")
        if low > high:
            raise ValueError("min above max in %s" % phase)
        histograms.append((used, low, high))
    timeline = data["timeline"]
    if timeline is not None:
        interval = number(timeline["interval"], "interval")
        if interval <= 0:
            raise ValueError("bad interval: %s" % interval)
        records = timeline["records"]
        for record in records:
            number(record["start"], "start")
            number(record["seconds"], "seconds")
            for key in ("sessions", "messages", "recipients", "bytes", "errors"):
                count(record[key], key)
            for row in record["latency_ms"].values():
                count(row["count"])
                number(row["max"], "max")
                for item in row["sketch"]:
                    count(item, "sketch")
        timeline = (interval, records)
    for key in ("started", "ended"):
        number(data[key], key)
    if data["ended"] < data["started"]:
        raise ValueError("ended before it started")
    count(data["status"], "status")
    if data["rate"] is not None:
        number(data["rate"], "rate")
    if not isinstance(data["settings"], dict):
        raise ValueError("bad settings")
    for source in data["sources"]:
        if not isinstance(source["id"], str) or not isinstance(source["host"], str):
            raise ValueError("bad source")
    if data["integrity"] is not None:
        if not isinstance(data["integrity"]["run"], str):
            raise ValueError("bad integrity run")
        data["integrity"]["run"].encode("ascii")
        count(data["integrity"]["count"])
    errors = {}
    for kind, amount in data["errors"].items():
        if kind not in ERROR_KINDS:
            raise ValueError("unknown error kind %s" % json.dumps(kind))
        errors[kind] = count(amount)
    return {"histograms": histograms,
            "codes": {int(code): count(amount) for code, amount in data["replies"].items()},
            "errors": errors,
            "totals": [count(data[key], key) for key in ("sessions", "messages",
                                                         "recipients", "bytes")],
            "timeline": timeline}


def merge(reports, opts):
    """The Report of all reports [Loaded] (see load()); opts: Options for
    the Report (its format)."""
    first_name, first, _ = reports[0]
    seen = {}
    for name, data, _ in reports:
        if data["settings"] != first["settings"]:
            raise BadReport("%s: not the same settings as %s: %s" % (
                name, first_name, differences(data["settings"], first["settings"], first_name)))
        for source in data["sources"]:
            if source["id"] in seen:
                raise BadReport("%s: run %s is in %s too (the same report twice?)"
                                % (name, source["id"], seen[source["id"]]))
            seen[source["id"]] = name
    started = min(data["started"] for _, data, _ in reports)
    merged = Report(opts)
    merged.settings = first["settings"]
    merged.started = started
    merged.ended = max(data["ended"] for _, data, _ in reports)
    merged.elapsed = merged.ended - started
    merged.status = max(data["status"] for _, data, _ in reports)
    rates = [data["rate"] for _, data, _ in reports]
    merged.rate = None if None in rates else sum(rates)
    merged.sources = [source for _, data, _ in reports for source in data["sources"]]
    if len(reports) == 1 and first["integrity"] is not None:
        merged.run_id = first["integrity"]["run"].encode()
        merged.integrity_count = first["integrity"]["count"]
    for _, data, data_state in reports:
        merged.merge(data_state, offset=data["started"] - started)
    return merged


def differences(mine, theirs, their_name):
    """What differs between two "settings", in words."""
    keys = list(theirs) + [key for key in mine if key not in theirs]
    return ", ".join("%s %s (%s: %s)" % (key, json.dumps(mine.get(key)), their_name,
                                         json.dumps(theirs.get(key)))
                     for key in keys if mine.get(key) != theirs.get(key))
