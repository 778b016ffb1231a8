"""smtpcore.reportfile and Report.merge: JSON reports read back and merged
into what one process would have reported for all the samples, and the
reports that must not be merged (other schema, other buckets, other
settings, a run given twice, broken files)."""

import io
import json
import random
import time
import unittest

import smtp_source
from smtpcore import reportfile
from smtpcore.report import PHASES, Report

STARTED = 1800000000.0          # a wall-clock start (Unix time)


def options(**settings):
    opts = smtp_source.Options()
    for name, value in settings.items():
        setattr(opts, name, value)
    return opts


def make_report(samples, started=STARTED, elapsed=10.0, interval=None, codes=(),
                errors=None, opts=None, counts=(1, 0, 0, 0)):
    """A Report fed samples {phase: [ns, ...]} through a session's tally,
    as a run would; counts: (sessions, messages, recipients, bytes)."""
    report = Report(opts or options(), interval)
    report.begin(time.monotonic_ns())
    report.started = started
    tally = report.tally()
    for phase, values in samples.items():
        append = tally.appenders[PHASES.index(phase)]
        for value in values:
            append(value)
    tally.codes.extend(codes)
    tally.sessions, tally.messages, tally.recipients, tally.bytes = counts
    for kind, count in (errors or {}).items():
        report.errors[kind] += count
    report.elapsed = elapsed
    return report


def loaded(report, name):
    return reportfile.load(name, io.BytesIO(report.json().encode()))


def samples(rng, scale, count):
    return {"mail": [int(rng.lognormvariate(12, 0.5) * scale) for _ in range(count)],
            "message": [int(rng.lognormvariate(14, 0.8) * scale) for _ in range(count)],
            "connect": [int(rng.lognormvariate(11, 0.3)) for _ in range(3)]}


class MergeTests(unittest.TestCase):

    def test_merged_reports_are_the_report_of_all_samples(self):
        rng = random.Random(3)
        parts = [samples(rng, 1, 5000), samples(rng, 7, 800), samples(rng, 2, 1)]
        counts = [(3, 5000, 10000, 5 * 10 ** 6), (3, 790, 1580, 790000), (1, 1, 2, 1000)]
        codes = [[250] * 9000 + [354] * 10, [250] * 100 + [452] * 10, [550]]
        errors = [{}, {"rejected_dot": 10}, {"lost": 1}]
        reports = [make_report(part, started=STARTED + offset, elapsed=20.0, codes=code,
                               errors=error, counts=count)
                   for part, offset, code, error, count
                   in zip(parts, (0.0, 0.25, 3.0), codes, errors, counts)]
        whole = make_report({phase: sum((part[phase] for part in parts), [])
                             for phase in parts[0]},
                            codes=sum(codes, []), counts=tuple(map(sum, zip(*counts))),
                            errors={"rejected_dot": 10, "lost": 1})
        merged = reportfile.merge([loaded(report, "r%d" % index)
                                   for index, report in enumerate(reports)], options())
        data, one = merged.as_dict(), whole.as_dict()
        for key in ("sessions", "messages", "messages_sent", "recipients", "bytes",
                    "latency_ms", "replies", "errors", "histograms"):
            self.assertEqual(data[key], one[key], key)
        # The slow report shows in the percentiles of all: not an average.
        self.assertGreater(data["latency_ms"]["message"]["p99"],
                           reports[0].as_dict()["latency_ms"]["message"]["p99"] * 3)
        self.assertEqual((data["started"], data["ended"], data["elapsed"]),
                         (STARTED, STARTED + 23.0, 23.0))
        self.assertEqual(data["messages_per_second"], round(5791 / 23.0, 3))
        self.assertEqual([source["id"] for source in data["sources"]],
                         [report.id for report in reports])
        self.assertIsNone(data["integrity"])
        # The merged report merges again, to the same.
        again = reportfile.merge([loaded(merged, "merged")], options()).as_dict()
        self.assertEqual(again["histograms"], data["histograms"])
        self.assertEqual(again["sources"], data["sources"])

    def test_one_report_re_rendered_keeps_its_integrity_run(self):
        report = make_report({"message": [1000]}, counts=(1, 1, 1, 10))
        report.run_id = b"0123456789abcdef"
        data = reportfile.merge([loaded(report, "a")], options()).as_dict()
        self.assertEqual(data["integrity"], {"run": "0123456789abcdef", "count": 1})
        self.assertEqual(data["sources"][0]["id"], "0123456789abcdef")

    def test_rates_add_up_when_every_run_had_one(self):
        paced = [make_report({}, opts=options(rate=rate)) for rate in (10.0, 15.0)]
        self.assertEqual(reportfile.merge([loaded(r, "r%d" % i) for i, r in enumerate(paced)],
                                          options()).as_dict()["rate"], 25.0)


class RefusalTests(unittest.TestCase):
    """Reports that are not one run: a clear reason, never a silent mix."""

    def refused(self, reports, text, whole=True):
        with self.assertRaises(reportfile.BadReport) as caught:
            reportfile.merge([reportfile.load(name, io.BytesIO(data))
                              for name, data in reports], options())
        if whole:
            self.assertEqual(str(caught.exception), text)
        else:                           # (json's own words differ between versions)
            self.assertTrue(str(caught.exception).startswith(text), caught.exception)

    def report_bytes(self, change=None, **settings):
        data = json.loads(make_report({"mail": [5000, 7000]}, opts=options(**settings)).json())
        if change:
            change(data)
        return json.dumps(data).encode()

    def test_other_schema(self):
        def schema_2(data):
            data["schema"] = 2
        self.refused([("a.json", self.report_bytes(schema_2))],
                     "a.json: report schema 2; this smtp-source reads schema 1")

    def test_report_without_what_merging_needs(self):
        def old(data):
            for key in reportfile.NEEDED:
                del data[key]
        self.refused([("old.json", self.report_bytes(old))],
                     "old.json: no started, ended, settings, sources, histograms, timeline in "
                     "this report (written by an smtp-source without --merge-reports?)")

    def test_other_buckets(self):
        def finer(data):
            data["histograms"]["sub_buckets"] = 256
        self.refused([("a.json", self.report_bytes(finer))],
                     "a.json: histograms with other buckets than ns, 128 per power of two")

    def test_other_settings(self):
        self.refused([("a.json", self.report_bytes()),
                      ("b.json", self.report_bytes(recipients=2, lmtp=True))],
                     'b.json: not the same settings as a.json: protocol "LMTP" (a.json: '
                     '"SMTP"), recipients 2 (a.json: 1)')

    def test_a_run_given_twice(self):
        data = self.report_bytes()
        run = json.loads(data)["sources"][0]["id"]
        self.refused([("a.json", data), ("copy.json", data)],
                     "copy.json: run %s is in a.json too (the same report twice?)" % run)

    def test_broken_reports(self):
        def bucket(data):
            data["histograms"]["phases"]["mail"]["buckets"][0][0] = 99999
        def counts(data):
            data["histograms"]["phases"]["mail"]["count"] = 3
        def text(data):
            data["messages"] = "many"
        def key(data):
            del data["errors"]
        for change, reason in ((bucket, "bucket beyond 4863 in mail"),
                               (counts, "the buckets of mail do not add up to its count"),
                               (text, 'bad messages: "many"'), (key, "no 'errors'")):
            with self.subTest(reason=reason):
                self.refused([("a.json", self.report_bytes(change))],
                             "a.json: malformed report: " + reason)
        self.refused([("a.json", b"{\"schema\": 1, ")], "a.json: not a JSON report: Expecting ",
                     whole=False)
        self.refused([("a.json", b"[1, 2]")], "a.json: not a report of smtp-source --report=json")


if __name__ == "__main__":
    unittest.main()
