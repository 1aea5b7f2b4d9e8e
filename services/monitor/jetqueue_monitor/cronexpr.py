"""When a broker cron schedule fires next: 6-field expressions (seconds first), macros and ``@every`` intervals.

The broker is the scheduler; this only reads its expressions to show the next
run. Fields are the usual ones (``*``, ``?``, lists, ranges, steps, month and
weekday names); as in classic cron, when both the day of the month and the
day of the week are restricted, a day matching either fires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
# (low, high) of second, minute, hour, day of month, month, day of week
BOUNDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
NAMES = [
    {},
    {},
    {},
    {},
    {
        m: i + 1
        for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
    },
    {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])},
]
UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
HORIZON_DAYS = 366 * 5  # a day that never comes (Feb 30) ends the search


@dataclass(frozen=True, slots=True)
class Cron:
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # the day of the month is '*'
    any_weekday: bool

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        dom, dow = d.day in self.days, (d.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow


def _value(token: str, field: int) -> int:
    token = token.upper()
    return NAMES[field][token] if token in NAMES[field] else int(token)


def _field(text: str, field: int) -> set[int]:
    lo, hi = BOUNDS[field]
    out: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base in ("*", "?"):
            a, b = lo, hi
        elif "-" in base:
            first, last = base.split("-", 1)
            a, b = _value(first, field), _value(last, field)
        else:
            a = _value(base, field)
            b = hi if step_text else a
        if step < 1 or a > b:
            raise ValueError(f"bad cron field {text!r}")
        out.update(range(a, b + 1, step))
    if field == 5 and 7 in out:  # Sunday as 7
        out = (out - {7}) | {0}
    if not out or min(out) < lo or max(out) > hi:
        raise ValueError(f"cron field {text!r} is out of range {lo}-{hi}")
    return out


def parse(expr: str) -> Cron:
    """A 6-field expression or a macro (5-field ones get a leading seconds field first: ``to_broker_cron``).

    Raises:
        ValueError: not an expression this can read.
    """
    text = MACROS.get(expr.strip().lower(), expr.strip())
    parts = text.split()
    if len(parts) != 6:
        raise ValueError(f"cron expression needs 6 fields: {expr!r}")
    sets = [_field(p, i) for i, p in enumerate(parts)]
    return Cron(
        seconds=tuple(sorted(sets[0])),
        minutes=tuple(sorted(sets[1])),
        hours=tuple(sorted(sets[2])),
        days=frozenset(sets[3]),
        months=frozenset(sets[4]),
        weekdays=frozenset(sets[5]),
        any_day=parts[3] in ("*", "?"),
        any_weekday=parts[5] in ("*", "?"),
    )


def every(expr: str) -> timedelta | None:
    """The interval of ``@every 1h30m`` (Go duration syntax), else None."""
    if not expr.startswith("@every"):
        return None
    text = expr[len("@every") :].strip()
    if not text or DURATION.sub("", text):
        raise ValueError(f"bad interval {text!r}")
    return timedelta(seconds=sum(float(n) * UNITS[u] for n, u in DURATION.findall(text)))


def next_run(expr: str, time_zone: str, after: datetime, *, since: datetime | None = None) -> datetime | None:
    """The first time after ``after`` that ``expr`` fires, in UTC (None if it never does, or cannot be read).

    Args:
        expr: the broker's expression (6 fields, a macro, or ``@every <duration>``).
        time_zone: the IANA zone the fields are read in.
        since: when an ``@every`` schedule was written: its intervals count from there.
    """
    try:
        interval = every(expr)
        if interval is not None:
            start = since or after
            if interval.total_seconds() <= 0:
                return None
            n = max(0, int((after - start) / interval)) + 1
            return (start + n * interval).astimezone(UTC)
        cron, zone = parse(expr), ZoneInfo(time_zone)
    except (ValueError, KeyError, ZoneInfoNotFoundError):
        return None
    local = (after.astimezone(zone) + timedelta(seconds=1)).replace(microsecond=0, tzinfo=None)
    day = local.date()
    for _ in range(HORIZON_DAYS):
        if cron.day_matches(day):
            at = _first_time(cron, local if day == local.date() else None)
            if at is not None:
                return datetime.combine(day, at).replace(tzinfo=zone).astimezone(UTC)
        day += timedelta(days=1)
    return None


def _first_time(cron: Cron, not_before: datetime | None) -> dtime | None:
    """The first (hour, minute, second) of a matching day at or after ``not_before``'s time (None: any)."""
    floor = (not_before.hour, not_before.minute, not_before.second) if not_before else (0, 0, 0)
    for h in cron.hours:
        if h < floor[0]:
            continue
        for m in cron.minutes:
            if (h, m) < floor[:2]:
                continue
            for s in cron.seconds:
                if (h, m, s) >= floor:
                    return dtime(h, m, s)
    return None
