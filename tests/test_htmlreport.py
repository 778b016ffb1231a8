"""smtpcore.htmlreport: the page of a report parses, shows the report's
figures, fetches and links nothing, and stays small for a one-hour run.
Without sockets (a real run's page: tests/test_source_multihost.py)."""

import html.parser
import json
import random
import unittest

from smtpcore import htmlreport, latency
from smtpcore.report import PHASES
from tests.test_reportfile import make_report

ONE_HOUR = 3600


class Page(html.parser.HTMLParser):
    """What a browser would see of a page: its tags, the attributes that
    can name something to fetch or follow, and its text."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.open, self.links, self.texts = [], [], [], []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in ("meta", "line", "rect", "circle", "polyline", "br"):
            self.open.append(tag)
        for name, value in attrs:
            if name in ("href", "src", "xmlns", "action", "srcset", "poster", "data") or (
                    value and ("://" in value or value.startswith("//"))):
                self.links.append((tag, name, value))

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        if tag in ("line", "rect", "circle", "polyline"):
            return
        if not self.open or self.open.pop() != tag:
            raise AssertionError("</%s> does not close what is open: %r" % (tag, self.open))

    def handle_data(self, data):
        self.texts.append(data)

    @property
    def text(self):
        return " ".join(" ".join(self.texts).split())


def checked_page(test, data):
    """The page of data, checked as every page must be: (its text, Page)."""
    return checked_text(test, htmlreport.page(data))


def checked_text(test, text):
    """A page's text, checked as every page must be: (text, Page)."""
    page = Page(text)
    test.assertEqual(page.open, [], "tags left open")
    test.assertEqual(page.links, [])
    test.assertNotIn("script", page.tags)
    for word in ("http:", "https:", "url(", "@import", "<link", "<img", "<iframe"):
        test.assertNotIn(word, text)
    return text, page


def hour_of_records(rng):
    """3600 one-second records of a busy run: every phase of a -d run (the
    latencies of each drawn from a few dozen made once)."""
    made = []
    for _ in range(40):
        latency_ms = {}
        for phase in ("mail", "rcpt", "data", "dot", "message", "response"):
            hist = latency.Histogram()
            for _ in range(200):
                hist.record(int(rng.lognormvariate(12 + (phase == "message"), 0.7)))
            p50, p99 = hist.percentiles((0.5, 0.99))
            latency_ms[phase] = {"count": 2000, "p50": p50 / 1e6, "p99": p99 / 1e6,
                                 "max": hist.max / 1e6, "sketch": hist.sketch()}
        made.append(latency_ms)
    return [{"start": float(second), "seconds": 1.0, "sessions": 0,
             "messages": 2000 + rng.randint(-50, 50), "recipients": 2000, "bytes": 400000,
             "errors": rng.choice([0] * 20 + [3]), "latency_ms": rng.choice(made)}
            for second in range(ONE_HOUR)]


class PageTests(unittest.TestCase):

    def report_data(self, interval=1.0):
        rng = random.Random(2)
        report = make_report({phase: [int(rng.lognormvariate(12, 0.6)) for _ in range(500)]
                              for phase in ("mail", "rcpt", "dot", "message")},
                             interval=interval, codes=[250] * 1400 + [452] * 3,
                             errors={"rejected_rcpt": 3}, counts=(2, 497, 497, 99400))
        if interval:
            report.tick(report.start_ns + 10 ** 9, 1)
            tally = report.tallies[0]
            tally.appenders[PHASES.index("message")](123456)
            report.last_tick(report.start_ns + 15 * 10 ** 8)
        return report.as_dict()

    def test_the_page_holds_the_figures_of_the_report(self):
        data = self.report_data()
        text, page = checked_page(self, data)
        shown = page.text
        self.assertIn("smtp-source report: 497 messages in 10.000 s", shown)
        for phase in ("MAIL", "RCPT", "end of data", "message"):
            row = data["latency_ms"][{"MAIL": "mail", "RCPT": "rcpt",
                                      "end of data": "dot"}.get(phase, phase)]
            self.assertIn("%s %s %s" % (phase, "{:,}".format(row["count"]), " ".join(
                "%.3f" % row[key] for key in ("min", "p50", "p90", "p99", "max"))), shown)
        self.assertIn("reply count 250 1,400 452 3", shown)
        self.assertIn("error count rejected_rcpt 3", shown)
        self.assertIn("messages / s 49.7", shown)
        self.assertIn("protocol SMTP recipients 1 reuse no", shown)   # the settings
        self.assertIn("Messages per second", shown)
        self.assertIn("time since the start (s)", shown)           # axis labels, units
        self.assertIn("ms (log scale)", shown)
        self.assertIn("latency (ms, log scale)", shown)
        # Charts: messages per second; the latency over the run of the
        # phases met in more than one interval; a histogram per phase.
        self.assertEqual(page.tags.count("svg"), 1 + 1 + 4)
        self.assertIn("Met in one interval only (see the table and the histograms): MAIL, "
                      "RCPT, end of data.", shown)

    def test_without_a_timeline(self):
        text, page = checked_page(self, self.report_data(interval=None))
        self.assertIn("This report has no timeline.", page.text)

    def test_an_hour_stays_under_a_megabyte(self):
        data = self.report_data()
        data["timeline"] = {"interval": 1.0, "records": hour_of_records(random.Random(4))}
        data["elapsed"] = float(ONE_HOUR)
        text, page = checked_page(self, data)
        size = len(text.encode())
        self.assertLess(size, 1 << 20, size)
        self.assertIn("Each point is one interval of 12 s", page.text)   # 3600 / 300 points
        self.assertIn("errors / s", page.text)
        json.dumps(data)            # (the same data is a valid JSON report)


if __name__ == "__main__":
    unittest.main()
