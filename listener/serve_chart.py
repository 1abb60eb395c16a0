"""The `/-/timeline` page: events and alerts over time as an SVG bar chart.

Drawn on the server (no JavaScript, nothing fetched from elsewhere) with a
Jinja2 template that escapes everything: container names and summaries come
from the trail, and whoever runs a container chooses its name.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment

BUCKETS = 48
WIDTH, HEIGHT = 960, 260
EVENT_COLOUR, ALERT_COLOUR = "#2b6cb0", "#c53030"


@dataclass
class Bucket:
    start_ns: int
    events: int = 0
    alerts: int = 0


@dataclass
class ChartData:
    first_ns: int = 0
    last_ns: int = 0
    width_ns: int = 1
    buckets: list[Bucket] = field(default_factory=list)
    events: int = 0
    alerts: int = 0
    latest_alerts: list[dict[str, Any]] = field(default_factory=list)
    by_rule: list[tuple[str, str, int]] = field(default_factory=list)


def chart_data(
    conn: sqlite3.Connection, since_ns: int | None = None, until_ns: int | None = None
) -> ChartData:
    """Counts per time bucket over since <= time < until (default: everything), latest alerts."""
    low = since_ns if since_ns is not None else -(2**63)
    high = until_ns if until_ns is not None else 2**63 - 1
    first, last = conn.execute(
        "SELECT min(time_ns), max(time_ns) FROM events WHERE time_ns >= ? AND time_ns < ?",
        (low, high),
    ).fetchone()
    if first is None:
        return ChartData()
    width = max(1, (last - first) // BUCKETS + 1)
    data = ChartData(first_ns=first, last_ns=last, width_ns=width)
    data.buckets = [Bucket(first + i * width) for i in range(BUCKETS)]
    for table in ("events", "alerts"):
        rows = conn.execute(
            f"SELECT (time_ns - ?) / ?, count(*) FROM {table} "
            "WHERE time_ns >= ? AND time_ns <= ? GROUP BY 1",
            (first, width, first, last),
        )
        for index, count in rows:
            setattr(data.buckets[index], table, count)
    data.events = sum(b.events for b in data.buckets)
    data.alerts = sum(b.alerts for b in data.buckets)
    data.latest_alerts = [
        {"seq": seq, "time": _time(t), "rule": rule, "severity": sev, "container": name or ""}
        for seq, t, rule, sev, name in conn.execute(
            "SELECT seq, time_ns, rule, severity, container FROM alerts "
            "WHERE time_ns >= ? AND time_ns <= ? ORDER BY seq DESC LIMIT 20",
            (first, last),
        )
    ]
    data.by_rule = list(
        conn.execute(
            "SELECT rule, severity, count(*) FROM alerts WHERE time_ns >= ? AND time_ns <= ? "
            "GROUP BY rule, severity ORDER BY count(*) DESC",
            (first, last),
        )
    )
    return data


def _time(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def bars(data: ChartData) -> list[dict[str, Any]]:
    """One event bar and one alert bar per bucket, in SVG coordinates."""
    if not data.buckets:
        return []
    top = max(max(b.events, b.alerts) for b in data.buckets) or 1
    slot = WIDTH / len(data.buckets)
    drawn = []
    for index, bucket in enumerate(data.buckets):
        for offset, count, colour, what in (
            (0.1, bucket.events, EVENT_COLOUR, "events"),
            (0.5, bucket.alerts, ALERT_COLOUR, "alerts"),
        ):
            height = round(count / top * (HEIGHT - 20), 1)
            drawn.append(
                {
                    "x": round(index * slot + offset * slot, 1),
                    "y": round(HEIGHT - height, 1),
                    "width": round(slot * 0.4, 1),
                    "height": height,
                    "colour": colour,
                    "title": f"{_time(bucket.start_ns)}: {count} {what}",
                }
            )
    return drawn


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>docktrail: events and alerts over time</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #1a202c; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; text-align: left; }
.axis { display: flex; justify-content: space-between; font-size: 0.8em; color: #4a5568; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 16px; }
</style></head>
<body>
<h1>Events and alerts over time</h1>
<p><a href="/">Explorer</a> · <a href="/trail/events">events</a> ·
<a href="/trail/alerts">alerts</a></p>
<form method="get">since <input name="since" value="{{ since }}" placeholder="7d, RFC 3339">
until <input name="until" value="{{ until }}"> <input type="submit" value="show"></form>
{% if error %}<p id="error">{{ error }}</p>{% endif %}
{% if not data.buckets %}
<p id="summary">No events in this period.</p>
{% else %}
<p id="summary">{{ data.events }} events and {{ data.alerts }} alerts from
{{ first }} to {{ last }}.</p>
<p class="legend"><span style="background: {{ event_colour }}"></span>events
<span style="background: {{ alert_colour }}"></span>alerts</p>
<svg id="chart" width="{{ width }}" height="{{ height }}" role="img"
     aria-label="events and alerts over time">
{% for bar in bars %}<rect x="{{ bar.x }}" y="{{ bar.y }}" width="{{ bar.width }}"
 height="{{ bar.height }}" fill="{{ bar.colour }}"><title>{{ bar.title }}</title></rect>
{% endfor %}</svg>
<div class="axis" style="width: {{ width }}px"><span>{{ first }}</span>
<span>{{ middle }}</span><span>{{ last }}</span></div>
<h2>Alerts by rule</h2>
<table id="by-rule"><tr><th>rule</th><th>severity</th><th>alerts</th></tr>
{% for rule, severity, count in data.by_rule %}<tr><td>{{ rule }}</td><td>{{ severity }}</td>
<td>{{ count }}</td></tr>{% endfor %}</table>
<h2>Latest alerts</h2>
<table id="latest"><tr><th>seq</th><th>time</th><th>rule</th><th>severity</th>
<th>container</th></tr>
{% for a in data.latest_alerts %}<tr><td>{{ a.seq }}</td><td>{{ a.time }}</td>
<td>{{ a.rule }}</td><td>{{ a.severity }}</td><td class="container">{{ a.container }}</td>
</tr>{% endfor %}</table>
{% endif %}
</body></html>
"""

_environment = Environment(autoescape=True)


def render_page(data: ChartData, *, since: str = "", until: str = "", error: str = "") -> str:
    template = _environment.from_string(_TEMPLATE)
    return template.render(
        data=data,
        since=since,
        until=until,
        error=error,
        bars=bars(data),
        first=_time(data.first_ns),
        last=_time(data.last_ns),
        middle=_time((data.first_ns + data.last_ns) // 2),
        width=WIDTH,
        height=HEIGHT,
        event_colour=EVENT_COLOUR,
        alert_colour=ALERT_COLOUR,
    )
