"""Latency histograms: fixed memory, exact min/max, percentiles within 0.4 %.

A Histogram counts durations in nanoseconds in log-linear buckets, in the
manner of HdrHistogram: every power of two is cut into SUB_BUCKETS equal
buckets, and values below 2 * SUB_BUCKETS ns each have a bucket of their own.
A bucket is then never wider than 1/SUB_BUCKETS of its lower bound, and a
percentile, read as the middle of its bucket, is within half of that:

    relative error of a percentile <= 1 / (2 * SUB_BUCKETS) = 0.39 %

The memory is fixed: BUCKETS 64-bit counters (38 KB), whatever the number
of values.  Values from MAX_VALUE up (4.9 hours) share the last bucket; min
and max are kept exactly, and a percentile is never reported outside them.

    hist = Histogram()
    hist.record(elapsed_ns)
    hist.count, hist.min, hist.max, hist.percentile(0.99)

A hot path can instead collect values in a list and hand them over now
and then, sorted, with add_sorted(): one append per value, and the
counting done in C (sorting, bisection) but for a step per bucket.

A sketch is the same histogram in coarser buckets (SKETCH_BITS: 8 per
power of two, percentiles within 6.25 %), as a short list: the index of
its first bucket, then the counts from there on.  Every bucket of a
Histogram lies in one bucket of the sketch, so sketches of different
histograms add up exactly; the report keeps one per phase and interval of
a run (a few dozen numbers where the full state has hundreds), so that
intervals of several reports can be put together.
"""

import array
import bisect
import collections

SUB_BITS = 7
SUB_BUCKETS = 1 << SUB_BITS             # 128 buckets per power of two
MAX_SHIFT = 36                          # values up to 2**44 ns (~4.9 hours)
BUCKETS = (MAX_SHIFT + 2) << SUB_BITS   # 4864
MAX_VALUE = 1 << (MAX_SHIFT + SUB_BITS + 1)
_LINEAR = 2 * SUB_BUCKETS               # below this every value is a bucket


def bucket_of(value):
    """The bucket index of a non-negative integer value."""
    if value < _LINEAR:
        return value
    if value >= MAX_VALUE:
        return BUCKETS - 1
    shift = value.bit_length() - SUB_BITS - 1
    return (shift << SUB_BITS) + (value >> shift)


def bucket_range(index, bits=SUB_BITS):
    """(lowest, highest) value that falls in bucket index (of a sketch,
    with bits=SKETCH_BITS)."""
    if index < 2 << bits:
        return index, index
    shift = (index >> bits) - 1
    low = (index - (shift << bits)) << shift
    return low, low + (1 << shift) - 1


SKETCH_BITS = 3                         # 8 buckets per power of two


def sketch_bucket(value):
    """The sketch bucket of a non-negative integer value."""
    if value < 2 << SKETCH_BITS:
        return value
    shift = value.bit_length() - SKETCH_BITS - 1
    return (shift << SKETCH_BITS) + (value >> shift)


def add_sketches(sketches):
    """One sketch of the values of all of them."""
    total = {}
    for sketch in sketches:
        if sketch:
            for index, count in enumerate(sketch[1:], sketch[0]):
                if count:
                    total[index] = total.get(index, 0) + count
    return _dense(total)


def sketch_counts(used):
    """{sketch bucket: count} of a histogram's (index, count) pairs."""
    counts = {}
    for index, number in used:
        bucket = sketch_bucket(bucket_range(index)[0])
        counts[bucket] = counts.get(bucket, 0) + number
    return counts


def _dense(counts):
    """A sketch from {bucket: count}."""
    if not counts:
        return []
    first, last = min(counts), max(counts)
    return [first] + [counts.get(index, 0) for index in range(first, last + 1)]


def sketch_percentiles(sketch, fractions, high=None):
    """Percentiles (ascending fractions) of a sketch, as
    Histogram.percentiles() reads them: the middle of the bucket that
    holds the rank, kept at or below high (the exact maximum, if known)."""
    if not sketch:
        return [None] * len(fractions)
    counts = sketch[1:]

    def middle(index):
        low, top = bucket_range(index, SKETCH_BITS)
        return (low + top) // 2 if high is None else min(high, (low + top) // 2)
    return _at_ranks(enumerate(counts, sketch[0]), sum(counts), fractions, middle)


def _at_ranks(used, total, fractions, middle):
    """middle(index) of the bucket that holds each (ascending) fraction's
    rank among total values, used being the (index, count) of the buckets
    in order; shorter than fractions if used runs out first."""
    ranks = [max(1, -(-int(fraction * total * 1000000) // 1000000)) for fraction in fractions]
    found, seen = [], 0
    for index, count in used:
        seen += count
        while len(found) < len(ranks) and seen >= ranks[len(found)]:
            found.append(middle(index))
        if len(found) == len(ranks):
            break
    return found


class Histogram:
    """Durations (integer nanoseconds) of one kind, e.g. one SMTP phase.
    min and max are None while it is empty."""

    __slots__ = ("counts", "_min", "_max")

    def __init__(self):
        # An array, not a list: a count is then 8 bytes in one block, not an
        # int object of its own to chase (measured: a third of the cost).
        self.counts = array.array("q", bytes(8 * BUCKETS))
        self._min = MAX_VALUE * 1024     # above any value (and cheaper than None)
        self._max = -1

    def record(self, value):
        """Count one value (kept short: it runs once per reply)."""
        if value >= _LINEAR:
            shift = value.bit_length() - SUB_BITS - 1
            self.counts[(shift << SUB_BITS) + (value >> shift) if shift <= MAX_SHIFT
                        else BUCKETS - 1] += 1
        elif value >= 0:
            self.counts[value] += 1
        else:                           # a clock cannot go back, but be safe
            value = 0
            self.counts[0] += 1
        if value > self._max:
            self._max = value
        if value < self._min:
            self._min = value

    def add_sorted(self, values, lo=0, hi=None, offset=0):
        """Count values[lo:hi] minus offset, which are in ascending order:
        a batch costs a step per bucket it touches, not per value (the
        buckets' ends are found by bisection, in C)."""
        if hi is None:
            hi = len(values)
        if lo >= hi:
            return
        counts = self.counts
        first, last = values[lo] - offset, values[hi - 1] - offset
        if max(last, 0) > self._max:
            self._max = max(last, 0)
        if max(first, 0) < self._min:
            self._min = max(first, 0)
        k = lo
        while k < hi:
            value = values[k] - offset
            if value < 0:                   # a clock cannot go back, but be safe
                end = bisect.bisect_left(values, offset, k, hi)
                counts[0] += end - k
                k = end
                continue
            index = bucket_of(value)
            if index == BUCKETS - 1:
                counts[index] += hi - k
                break
            end = bisect.bisect_right(values, offset + bucket_range(index)[1], k, hi)
            counts[index] += end - k
            k = end

    def used(self):
        """[(bucket, count)] of the buckets used, in order."""
        return [(index, number) for index, number in enumerate(self.counts) if number]

    def state(self):
        """([(bucket, count)] of the buckets used, min, max): all there is
        to it, small, for merge()."""
        return self.used(), self._min, self._max

    @classmethod
    def from_state(cls, state):
        histogram = cls()
        histogram.merge(state)
        return histogram

    def sketch(self):
        """This histogram in the coarse buckets of a sketch (see above)."""
        return _dense(sketch_counts(self.used()))

    def merge(self, state):
        """Count the values of another histogram (its state()) too."""
        used, low, high = state
        mine = self.counts
        for index, number in used:
            mine[index] += number
        if high > self._max:
            self._max = high
        if low < self._min:
            self._min = low

    @property
    def count(self):
        return sum(self.counts)

    @property
    def min(self):
        return None if self._max < 0 else self._min

    @property
    def max(self):
        return None if self._max < 0 else self._max

    def percentile(self, fraction):
        """The value below or at which `fraction` (0..1) of the values lie
        (None when empty): the middle of the bucket that holds that rank,
        kept within min..max."""
        return self.percentiles((fraction,))[0]

    def percentiles(self, fractions):
        """percentile() of each of the (ascending) fractions, in one pass."""
        if self._max < 0:
            return [None] * len(fractions)
        lowest, highest = self._min, self._max

        def middle(index):
            if index == BUCKETS - 1:        # the overflow bucket: no middle
                return highest
            low, high = bucket_range(index)
            return min(highest, max(lowest, (low + high) // 2))
        found = _at_ranks(self.used(), self.count, fractions, middle)
        return found + [highest] * (len(fractions) - len(found))

    def octaves(self):
        """[(low, high, count)] per power of two from min to max: the rows
        of a coarse histogram that a person can read."""
        if self._max < 0:
            return []
        rows = {}
        for index, count in self.used():
            low, _ = bucket_range(index)
            rows[low.bit_length()] = rows.get(low.bit_length(), 0) + count
        first, last = min(rows), max(rows)
        return [((1 << (bits - 1)) if bits else 0, (1 << bits) - 1 if bits else 0,
                 rows.get(bits, 0)) for bits in range(first, last + 1)]


class SparseHistogram(Histogram):
    """A Histogram that keeps only the buckets it uses (a Counter): for
    the few thousand values of one phase in one interval of a run, where
    a full array would be mostly zeros to walk through."""

    __slots__ = ()

    def __init__(self):     # (not Histogram's: no array)
        self.counts = collections.Counter()
        self._min = MAX_VALUE * 1024
        self._max = -1

    def used(self):
        return sorted(item for item in self.counts.items() if item[1])

    @property
    def count(self):
        return sum(self.counts.values())


def bar_chart(rows, width=40, unit=1e6, label="ms"):
    """Text lines for octaves(): range, a bar of "#" and the count.
    Values are divided by unit (ns to ms by default)."""
    if not rows:
        return []
    # At most 12 lines: merge neighbouring octaves.
    while len(rows) > 12:
        merged = []
        for i in range(0, len(rows), 2):
            pair = rows[i:i + 2]
            merged.append((pair[0][0], pair[-1][1], sum(row[2] for row in pair)))
        rows = merged
    top = max(row[2] for row in rows) or 1
    lines = []
    for low, high, count in rows:
        bar = "#" * (count * width // top) if count else ""
        if count and not bar:
            bar = "."
        lines.append("%10.3f - %10.3f %s  %-*s %d"
                     % (low / unit, (high + 1) / unit, label, width, bar, count))
    return lines
