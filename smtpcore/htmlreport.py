"""smtp-source --report=html: the report as one page that a browser shows as
it is -- inline SVG charts and CSS, no script, nothing fetched, no link.

page(data) takes a JSON report (Report.as_dict(), also of merged reports)
and shows, top to bottom:

    the totals and rates
    messages (and errors) per second over the run
    p50, p99 and max latency of each phase over the run
    the final latency histogram of each phase, with its p50 and p99
    the latency table, replies by code, errors by kind
    the settings, and the command line of each source

The charts over the run are drawn from the report's timeline, put on a
coarser grid (timeline.rebin) when it has more than MAX_POINTS records,
so the page stays small whatever the length of the run (an hour at one
record a second: about 85 KB).  Histograms are drawn at the resolution
of a sketch (8 bars per power of two).
"""

import html
import math
import time

from smtpcore import latency, timeline
from smtpcore.report import PHASE_NAMES, PHASES

MAX_POINTS = 300                # per line of a chart over the run
WIDE, NARROW = (1100, 260), (540, 230)      # chart sizes (SVG units, about pixels)
MARGIN = (62, 18, 30, 44)       # left, right, top, bottom: room for axes and legend
COLOURS = {"p50": "#1f77b4", "p99": "#e6550d", "max": "#7f7f7f",
           "messages": "#1f77b4", "errors": "#d62728", "bars": "#6baed6"}

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1d2330;background:#f5f6f8;margin:0}
main{max-width:1160px;margin:0 auto;padding:18px 24px 40px}
h1{font-size:22px;margin:0 0 2px}
h2{font-size:17px;margin:26px 0 10px;padding-bottom:4px;border-bottom:1px solid #d5d9e0}
p.sub{margin:0;color:#5a6270}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(165px,1fr));gap:10px;
 margin-top:14px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:7px 12px}
.card span{color:#5a6270;font-size:12.5px}
.card b{display:block;font-size:19px;font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(470px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px 8px 4px}
figcaption{font-weight:600;margin:0 0 2px 6px}
svg{display:block;width:100%;height:auto}
svg text{font-size:11.5px;fill:#3c4350}
svg .title{font-size:12.5px;font-weight:600}
svg .grid line{stroke:#e6e9ee}
svg .frame{fill:none;stroke:#b9bfc9}
table{border-collapse:collapse;background:#fff;border:1px solid #dde1e7;margin:0 0 12px}
th,td{padding:3px 12px;border-bottom:1px solid #eceef2;text-align:right;
 font-variant-numeric:tabular-nums}
th{background:#f0f2f5;font-weight:600}
th:first-child,td:first-child{text-align:left}
.tables{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;
 white-space:pre-wrap;word-break:break-all}
.note{color:#5a6270;font-size:12.5px}
table.wide{width:100%}
table.wide td,table.wide th{text-align:left}
.nowrap{white-space:nowrap}
"""


def esc(value):
    return html.escape(str(value), quote=True)


def page(data):
    """The HTML page (str) of a report's data."""
    merged = len(data["sources"]) > 1
    title = "smtp-source report: %d messages in %.3f s" % (data["messages"], data["elapsed"])
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width,initial-scale=1">',
             "<title>%s</title>" % esc(title), "<style>%s</style></head><body><main>" % STYLE,
             "<h1>%s</h1>" % esc(title), '<p class="sub">%s</p>' % esc(subtitle(data, merged))]
    parts.append(cards(data))
    records, interval = points_of(data["timeline"])
    parts.append("<h2>Over the run</h2>")
    if records:
        parts.append('<figure><figcaption>Messages per second</figcaption>%s</figure>'
                     % throughput_chart(records, data["rate"]))
        parts.append("<h2>Latency of each phase over the run</h2>")
        parts.append('<p class="note">Each point is one interval of %s; p50 and p99 within '
                     '%s of the true value.</p>' % (
                         seconds_text(interval),
                         "0.4 %" if interval == data["timeline"]["interval"] and not merged
                         else "6.25 %"))
        # A phase met in one interval only (with -d: connect, greeting,
        # HELO, QUIT) makes no line: the table and histograms show it.
        seen = {phase: sum(phase in record["latency_ms"] for record in records)
                for phase in chart_phases(data)}
        parts.append('<div class="grid">')
        for phase in chart_phases(data):
            if seen[phase] > 1:
                parts.append("<figure><figcaption>%s</figcaption>%s</figure>" % (
                    esc(phase_title(phase)), latency_chart(records, phase)))
        parts.append("</div>")
        rare = [PHASE_NAMES.get(phase, phase) for phase in seen if seen[phase] <= 1]
        if rare:
            parts.append('<p class="note">Met in one interval only (see the table and the '
                         'histograms): %s.</p>' % esc(", ".join(rare)))
    else:
        parts.append('<p class="note">This report has no timeline.</p>')
    parts.append("<h2>Latency histograms (the whole run)</h2>")
    parts.append('<div class="grid">')
    for phase in chart_phases(data):
        parts.append("<figure><figcaption>%s</figcaption>%s</figure>" % (
            esc(phase_title(phase)), histogram_chart(data, phase)))
    parts.append("</div>")
    parts.append("<h2>Latency, replies and errors</h2>")
    parts.append('<div class="tables">%s%s%s</div>' % (
        latency_table(data), replies_table(data), errors_table(data)))
    parts.append("<h2>Settings</h2>")
    parts.append('<div class="tables">%s</div>' % settings_table(data))
    parts.append("<h2>%s</h2>" % ("Runs merged" if merged else "Run"))
    parts.append(sources_table(data))
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


# ------------------------------------------------------------------- text

def subtitle(data, merged):
    words = ["started %s" % clock(data["started"]), "ended %s" % clock(data["ended"])]
    if merged:
        words.append("merged from %d reports" % len(data["sources"]))
    if data["status"]:
        words.append("ended by a fatal error (status %d)" % data["status"])
    return ", ".join(words)


def clock(when):
    if when is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) + ".%03d %s" % (
        int(when % 1 * 1000), time.strftime("%z", time.localtime(when)))


def seconds_text(seconds):
    return "%g s" % round(seconds, 3)


def phase_title(phase):
    name = PHASE_NAMES.get(phase, phase)
    if phase == "message":
        return "message (MAIL to end-of-data reply)"
    if phase == "response":
        return "response (from when each message was due)"
    return name


def number(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, int):
        return "{:,}".format(value)
    return "{:,.{}f}".format(value, digits)


def cards(data):
    items = [("messages", number(data["messages"])),
             ("messages / s", number(data["messages_per_second"])),
             ("sent in full", number(data["messages_sent"])),
             ("recipients", number(data["recipients"])),
             ("sessions", number(data["sessions"])),
             ("MB / s", number(data["mb_per_second"], 3)),
             ("elapsed", "%.3f s" % data["elapsed"]),
             ("errors", number(sum(data["errors"].values())))]
    if data["rate"] is not None:
        items.append(("target rate", "%s / s" % number(data["rate"])))
    message = data["latency_ms"]["message"]
    if message["count"]:
        items.append(("message p50", "%s ms" % number(message["p50"], 3)))
        items.append(("message p99", "%s ms" % number(message["p99"], 3)))
    return '<div class="cards">%s</div>' % "".join(
        '<div class="card"><span>%s</span><b>%s</b></div>' % (esc(name), esc(value))
        for name, value in items)


def table(head, rows, wide=False):
    out = ['<table class="wide">' if wide else "<table>"]
    out.append("<tr>%s</tr>" % "".join("<th>%s</th>" % esc(cell) for cell in head))
    for row in rows:
        out.append("<tr>%s</tr>" % "".join("<td>%s</td>" % cell for cell in row))
    out.append("</table>")
    return "".join(out)


def latency_table(data):
    rows = []
    for phase in PHASES:
        row = data["latency_ms"][phase]
        if row["count"]:
            rows.append([esc(PHASE_NAMES.get(phase, phase)), number(row["count"])] + [
                "%.3f" % row[key] for key in ("min", "p50", "p90", "p99", "max")])
    return table(["latency (ms)", "count", "min", "p50", "p90", "p99", "max"], rows)


def replies_table(data):
    rows = [[esc(code), number(count)] for code, count in data["replies"].items()]
    return table(["reply", "count"], rows or [["none", ""]])


def errors_table(data):
    rows = [[esc(kind), number(count)] for kind, count in data["errors"].items() if count]
    return table(["error", "count"], rows or [["none", ""]])


def settings_table(data):
    shown = {None: "-", True: "yes", False: "no"}
    rows = [[esc(key), esc(shown.get(value, value) if isinstance(value, (bool, type(None)))
                            else value)]
            for key, value in data["settings"].items()]
    rows.append(["target rate", esc("-" if data["rate"] is None else "%g / s" % data["rate"])])
    if data["integrity"] is not None:
        rows.append(["integrity run", esc(data["integrity"]["run"])])
    return table(["setting", "value"], rows)


def sources_table(data):
    rows = []
    for source in data["sources"]:
        command = " ".join(source.get("command") or []) or "-"
        rows.append([esc(source["host"]), '<code class="nowrap">%s</code>' % esc(source["id"]),
                     '<span class="nowrap">%s</span>' % esc(clock(source.get("started"))),
                     esc(number(source.get("messages"))), esc(source.get("status")),
                     "<code>%s</code>" % esc(command)])
    return table(["host", "run id", "started", "messages", "status", "command line"], rows,
                 wide=True)


# ------------------------------------------------------------ the charts

def chart_phases(data):
    """The phases with samples, the message's own first."""
    used = [phase for phase in PHASES if data["latency_ms"][phase]["count"]]
    first = [phase for phase in ("message", "response") if phase in used]
    return first + [phase for phase in used if phase not in first]


def points_of(timeline_data):
    """The timeline's records, on a grid coarse enough for MAX_POINTS."""
    if not timeline_data or not timeline_data["records"]:
        return [], None
    records, interval = timeline_data["records"], timeline_data["interval"]
    span = records[-1]["start"] + records[-1]["seconds"]
    if span / interval > MAX_POINTS:
        interval *= math.ceil(span / interval / MAX_POINTS)
        records = timeline.rebin([(0.0, records)], interval)
    return records, interval


class Frame:
    """The plotting area of a chart and its scales."""

    def __init__(self, size, x_range, y_range, log_y=False):
        self.width, self.height = size
        left, right, top, bottom = MARGIN
        self.x0, self.x1 = left, self.width - right
        self.y0, self.y1 = self.height - bottom, top
        self.x_low, self.x_high = x_range
        self.log_y = log_y
        low, high = y_range
        self.y_low, self.y_high = (math.log10(low), math.log10(high)) if log_y else (low, high)

    def x(self, value):
        span = (self.x_high - self.x_low) or 1
        return self.x0 + (value - self.x_low) / span * (self.x1 - self.x0)

    def y(self, value):
        if self.log_y:
            value = math.log10(max(value, 10 ** self.y_low))
        span = (self.y_high - self.y_low) or 1
        return self.y0 - (value - self.y_low) / span * (self.y0 - self.y1)


def svg(frame, body, x_ticks, y_ticks, x_label, y_label, legend=()):
    """An SVG chart: grid, ticks, axis labels, legend, then body."""
    out = ['<svg viewBox="0 0 %d %d" role="img">' % (frame.width, frame.height),
           '<g class="grid">']
    for value, _ in y_ticks:
        out.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>'
                   % (frame.x0, frame.x1, frame.y(value), frame.y(value)))
    out.append("</g>")
    out.append('<rect class="frame" x="%d" y="%d" width="%d" height="%d"/>'
               % (frame.x0, frame.y1, frame.x1 - frame.x0, frame.y0 - frame.y1))
    for value, text in y_ticks:
        out.append('<text x="%.1f" y="%.1f" text-anchor="end">%s</text>'
                   % (frame.x0 - 5, frame.y(value) + 4, esc(text)))
    for value, text in x_ticks:
        x = frame.x(value)
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#b9bfc9"/>'
                   % (x, x, frame.y0, frame.y0 + 4))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                   % (x, frame.y0 + 16, esc(text)))
    out.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
               % ((frame.x0 + frame.x1) / 2, frame.height - 6, esc(x_label)))
    out.append('<text transform="translate(14 %.1f) rotate(-90)" text-anchor="middle">%s</text>'
               % ((frame.y0 + frame.y1) / 2, esc(y_label)))
    x = frame.x1
    for name, colour in reversed(legend):       # right-aligned, above the frame
        width = 24 + 7 * len(name)
        x -= width
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-width="3"/>'
                   % (x, x + 16, frame.y1 - 11, frame.y1 - 11, colour))
        out.append('<text x="%.1f" y="%d">%s</text>' % (x + 20, frame.y1 - 7, esc(name)))
    out.extend(body)
    out.append("</svg>")
    return "".join(out)


def nice_ticks(low, high, count=6):
    """Round values from low to high, about count of them."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= step * factor:
            step *= factor
            break
    first = math.ceil(low / step - 1e-9) * step
    ticks, value = [], first
    while not ticks or ticks[-1] < high - step * 1e-9:     # the last one at or above high
        ticks.append(round(value, 10))
        value += step
    return ticks


def log_ticks(low, high):
    """Tick values for a log scale from low to high (ms)."""
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for factor in ((1, 2, 5) if math.log10(high / low) < 2.5 else (1,)):
            value = factor * 10.0 ** exponent
            if low <= value <= high:
                ticks.append(value)
    return ticks


def ms_text(value):
    return "%g" % float("%.3g" % value)


def time_axis(records):
    """(x range in seconds, ticks [(seconds, label)], axis label)."""
    end = records[-1]["start"] + records[-1]["seconds"]
    end = max(end, 1e-3)
    for unit, size in (("s", 1), ("min", 60), ("h", 3600)):
        if end / size <= 180 or unit == "h":
            break
    ticks = [(value * size, "%g" % value) for value in nice_ticks(0, end / size)]
    return (0, end), [tick for tick in ticks if tick[0] <= end], "time since the start (%s)" % unit


def polyline(frame, points, colour, width=1.8, dash=None):
    """Lines through points [(x, y) or None for a gap]; a lone point is a dot."""
    out, run = [], []
    for point in points + [None]:
        if point is not None:
            run.append(point)
            continue
        if len(run) == 1:
            out.append('<circle cx="%.1f" cy="%.1f" r="2.6" fill="%s"/>'
                       % (frame.x(run[0][0]), frame.y(run[0][1]), colour))
        elif run:
            out.append('<polyline fill="none" stroke="%s" stroke-width="%s"%s points="%s"/>' % (
                colour, width, ' stroke-dasharray="%s"' % dash if dash else "",
                " ".join("%.1f,%.1f" % (frame.x(x), frame.y(y)) for x, y in run)))
        run = []
    return out


def throughput_chart(records, target):
    """Messages (and errors, if any) per second; target: --rate, or None."""
    x_range, x_ticks, x_label = time_axis(records)
    rate = [(r["start"] + r["seconds"] / 2, r["messages"] / r["seconds"] if r["seconds"] else 0)
            for r in records]
    errors = [(x, r["errors"] / r["seconds"] if r["seconds"] else 0)
              for (x, _), r in zip(rate, records)]
    any_errors = any(value for _, value in errors)
    high = max([value for _, value in rate] + [value for _, value in errors]
               + [target or 0, 1])
    y_ticks = nice_ticks(0, high * 1.05)
    frame = Frame(WIDE, x_range, (0, y_ticks[-1]))
    body, legend = [], []
    if target:
        body += polyline(frame, [(x_range[0], target), (x_range[1], target)],
                         COLOURS["max"], 1.2, dash="6 4")
        legend.append(("target (--rate)", COLOURS["max"]))
    body += polyline(frame, rate, COLOURS["messages"], 2)
    legend.append(("messages / s", COLOURS["messages"]))
    if any_errors:
        body += polyline(frame, errors, COLOURS["errors"], 1.6)
        legend.append(("errors / s", COLOURS["errors"]))
    return svg(frame, body, x_ticks, [(v, number(v) if v >= 10 else "%g" % v) for v in y_ticks],
               x_label, "per second", legend)


def latency_chart(records, phase):
    x_range, x_ticks, x_label = time_axis(records)
    lines = {key: [] for key in ("p50", "p99", "max")}
    values = []
    for record in records:
        row = record["latency_ms"].get(phase)
        x = record["start"] + record["seconds"] / 2
        for key, points in lines.items():
            if row is None or row[key] is None:
                points.append(None)
            else:
                value = max(row[key], 0.001)
                points.append((x, value))
                values.append(value)
    if not values:
        return '<p class="note">No samples in the timeline.</p>'
    low, high = min(values), max(values)
    low = 10 ** math.floor(math.log10(low))
    high = 10 ** math.ceil(math.log10(high * 1.0001))
    frame = Frame(NARROW, x_range, (low, high), log_y=True)
    body = []
    for key in ("max", "p99", "p50"):
        body += polyline(frame, lines[key], COLOURS[key], 1.2 if key == "max" else 1.8)
    return svg(frame, body, x_ticks, [(v, ms_text(v)) for v in log_ticks(low, high)], x_label,
               "ms (log scale)", [(key, COLOURS[key]) for key in ("p50", "p99", "max")])


def histogram_chart(data, phase):
    """The phase's final histogram in sketch bars over a log axis of ms."""
    state = data["histograms"]["phases"][phase]
    spans = []
    for bucket, count in sorted(latency.sketch_counts(state["buckets"]).items()):
        low, high = latency.bucket_range(bucket, latency.SKETCH_BITS)
        spans.append((max(low, 1) / 1e6, (high + 1) / 1e6, count))
    low = 10 ** math.floor(math.log10(spans[0][0]))
    high = 10 ** math.ceil(math.log10(spans[-1][1]))
    top = max(count for _, _, count in spans)
    y_ticks = nice_ticks(0, top * 1.05, 4)
    frame = Frame(NARROW, (math.log10(low), math.log10(high)), (0, y_ticks[-1]))
    body = []
    for left, right, count in spans:
        x0, x1 = frame.x(math.log10(left)), frame.x(math.log10(right))
        body.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>' % (
            x0, frame.y(count), max(x1 - x0 - 0.6, 0.8), frame.y0 - frame.y(count),
            COLOURS["bars"]))
    row = data["latency_ms"][phase]
    for key in ("p50", "p99"):
        x = frame.x(math.log10(max(row[key], low)))
        body.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="%s" stroke-width="2" '
                    'stroke-dasharray="5 3"/>' % (x, x, frame.y1, frame.y0, COLOURS[key]))
    x_ticks = [(math.log10(value), ms_text(value)) for value in log_ticks(low, high)]
    legend = [("%s %s ms" % (key, ms_text(row[key])), COLOURS[key]) for key in ("p50", "p99")]
    return svg(frame, body, x_ticks, [(v, number(int(v)) if v == int(v) else "%g" % v)
                                      for v in y_ticks],
               "latency (ms, log scale)", "count", legend)

