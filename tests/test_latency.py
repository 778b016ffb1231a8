"""smtpcore.latency: the fixed-size histogram behind smtp-source --report."""

import math
import random
import unittest

from smtpcore import latency
from smtpcore.latency import Histogram


def histogram_of(values):
    hist = Histogram()
    for value in values:
        hist.record(value)
    return hist


def exact(values, fraction):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


class BucketTests(unittest.TestCase):

    def test_every_bucket_holds_its_own_range(self):
        for index in range(latency.BUCKETS):
            low, high = latency.bucket_range(index)
            self.assertEqual((latency.bucket_of(low), latency.bucket_of(high)), (index, index))
            if index:
                self.assertEqual(latency.bucket_range(index - 1)[1] + 1, low)

    def test_width_is_within_the_stated_error(self):
        for index in range(256, latency.BUCKETS):
            low, high = latency.bucket_range(index)
            self.assertLessEqual((high + 1 - low) / low, 1 / latency.SUB_BUCKETS)

    def test_small_values_are_exact(self):
        for value in range(256):
            self.assertEqual(latency.bucket_range(latency.bucket_of(value)), (value, value))


class HistogramTests(unittest.TestCase):

    def test_empty(self):
        hist = Histogram()
        self.assertEqual((hist.count, hist.min, hist.max), (0, None, None))
        self.assertIsNone(hist.percentile(0.5))
        self.assertEqual(hist.percentiles((0.5, 0.99)), [None, None])
        self.assertEqual(hist.octaves(), [])
        self.assertEqual(latency.bar_chart([]), [])

    def test_percentiles_within_the_bound(self):
        rng = random.Random(7)
        for spread in ((0, 300), (10 ** 4, 10 ** 6), (10 ** 5, 10 ** 10)):
            values = [rng.randint(*spread) for _ in range(20001)]
            values += [int(rng.lognormvariate(13, 1.5)) for _ in range(5000)]
            hist = Histogram()
            for value in values:
                hist.record(value)
            self.assertEqual((hist.count, hist.min, hist.max),
                             (len(values), min(values), max(values)))
            for fraction in (0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0):
                with self.subTest(spread=spread, fraction=fraction):
                    true = exact(values, fraction)
                    got = hist.percentile(fraction)
                    self.assertLessEqual(abs(got - true), true / 256 + 1)
            self.assertEqual(hist.percentiles((0.5, 0.9, 0.99)),
                             [hist.percentile(f) for f in (0.5, 0.9, 0.99)])

    def test_merged_histograms_are_the_histogram_of_all_values(self):
        # --procs: each worker's histogram, merged, must give the
        # percentiles of all the values together (not an average of them).
        rng = random.Random(11)
        parts = [[rng.randint(10 ** 4, 10 ** 5) for _ in range(3000)],
                 [rng.randint(10 ** 6, 10 ** 7) for _ in range(1000)],
                 []]
        merged = Histogram()
        for part in parts:
            merged.merge(histogram_of(part).state())
        values = parts[0] + parts[1]
        whole = histogram_of(values)
        self.assertEqual(list(merged.counts), list(whole.counts))
        self.assertEqual((merged.count, merged.min, merged.max),
                         (len(values), min(values), max(values)))
        for fraction in (0.5, 0.75, 0.9, 0.99):
            true = exact(values, fraction)
            self.assertLessEqual(abs(merged.percentile(fraction) - true), true / 256 + 1)
        self.assertGreater(merged.percentile(0.9), 10 ** 6)     # the slow worker shows

    def test_one_value(self):
        hist = Histogram()
        hist.record(123456789)
        self.assertEqual([hist.percentile(f) for f in (0, 0.5, 1)], [123456789] * 3)

    def test_out_of_range(self):
        hist = Histogram()
        hist.record(-5)                     # a clock that went back counts as 0
        hist.record(latency.MAX_VALUE * 10)
        self.assertEqual((hist.count, hist.min, hist.max), (2, 0, latency.MAX_VALUE * 10))
        self.assertEqual(hist.percentile(1.0), latency.MAX_VALUE * 10)
        self.assertEqual(hist.counts[-1], 1)

    def test_memory_is_fixed(self):
        hist = Histogram()
        for value in range(0, 10 ** 9, 997):
            hist.record(value)
        self.assertEqual(len(hist.counts), latency.BUCKETS)

    def test_octaves_and_chart(self):
        hist = Histogram()
        for value in [1500] * 100 + [3000] * 50 + [100000]:
            hist.record(value)
        rows = hist.octaves()
        self.assertEqual(rows[0], (1024, 2047, 100))
        self.assertEqual(rows[1], (2048, 4095, 50))
        self.assertEqual(rows[-1], (65536, 131071, 1))
        self.assertEqual(sum(row[2] for row in rows), 151)
        chart = latency.bar_chart(rows, width=10, unit=1000, label="us")
        self.assertEqual(len(chart), len(rows))
        self.assertTrue(chart[0].endswith("us  ########## 100"), chart[0])
        self.assertTrue(chart[1].endswith("#####      50"), chart[1])
        self.assertIn("  .", chart[-1])       # a count too small for a "#"

    def test_chart_merges_rows(self):
        hist = Histogram()
        for bits in range(1, 40):
            hist.record(1 << bits)
        chart = latency.bar_chart(hist.octaves())
        self.assertLessEqual(len(chart), 12)
        self.assertEqual(sum(int(line.split()[-1]) for line in chart), 39)


class SketchTests(unittest.TestCase):
    """Sketches: the coarse histograms that the report's timeline keeps per
    interval, so that intervals of several reports can be added up."""

    def test_every_bucket_lies_in_one_sketch_bucket(self):
        for index in range(latency.BUCKETS - 1):
            low, high = latency.bucket_range(index)
            self.assertEqual(latency.sketch_bucket(low), latency.sketch_bucket(high), index)

    def test_sketches_add_up_to_the_sketch_of_all_values(self):
        rng = random.Random(5)
        parts = [[rng.randint(10 ** 4, 10 ** 6) for _ in range(2000)],
                 [int(rng.lognormvariate(14, 1)) for _ in range(500)], [7, 7, 300]]
        whole = histogram_of(sum(parts, []))
        self.assertEqual(latency.add_sketches(histogram_of(part).sketch() for part in parts),
                         whole.sketch())
        self.assertEqual(sum(whole.sketch()[1:]), 2503)
        self.assertEqual(latency.add_sketches([[], []]), [])

    def test_percentiles_within_the_sketch_bound(self):
        rng = random.Random(9)
        values = [int(rng.lognormvariate(13, 1.2)) for _ in range(20000)]
        sketch = histogram_of(values).sketch()
        got = latency.sketch_percentiles(sketch, (0.5, 0.9, 0.99), max(values))
        for fraction, value in zip((0.5, 0.9, 0.99), got):
            true = exact(values, fraction)
            self.assertLessEqual(abs(value - true), true / 16 + 1, fraction)   # 6.25 %
        self.assertEqual(latency.sketch_percentiles([], (0.5,)), [None])
        self.assertEqual(latency.sketch_percentiles(sketch, (1.0,), 5), [5])   # kept <= max


if __name__ == "__main__":
    unittest.main()
