#!/usr/bin/env python3
"""The independent oracle for schedules' cron plans (`make test-cron-oracle`).

Writes random valid cron expressions x IANA zones x start instants, each with its next
runs as Python's croniter (cron matching) and zoneinfo (the zone rules) compute them, to a
JSON file that the Rust test `croniter_oracle_agrees` compares with the product's plans.

Both sides apply the same DST rule (the product's, after EventBridge Scheduler): the
expression is matched against local wall-clock times, a local time that does not exist is
skipped, and a repeated one runs once, at its first instance. croniter on an aware datetime
does something else at DST changes (it steps in absolute time and shifts a run in a gap to
the next hour), so it is run on naive wall-clock times and zoneinfo resolves each one; what
is compared is croniter's field matching and zoneinfo's rules against croner's and
chrono-tz's.

Deterministic: the same seed writes the same cases.
"""

import argparse
import json
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from croniter import croniter

ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Europe/London",
    "Asia/Kolkata",  # +05:30, no DST
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/St_Johns",  # -03:30 / -02:30
    "Australia/Adelaide",  # +09:30 / +10:30, southern hemisphere
    "America/Santiago",  # DST changes at 24:00 local
    "Asia/Tokyo",
    "America/Los_Angeles",
]

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
END = datetime(2028, 1, 1, tzinfo=timezone.utc)
RUNS = 20


def transitions(tz):
    """The instants in [START, END) where the zone's offset changes (to the minute)."""
    out, t = [], START
    prev = t.astimezone(tz).utcoffset()
    step = timedelta(minutes=15)
    while t < END:
        t2 = t + step
        off = t2.astimezone(tz).utcoffset()
        if off != prev:
            lo, hi = t, t2
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(tz).utcoffset() == prev:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
        prev, t = off, t2
    return out


def field(rng, lo, hi, *, star=0.4):
    """One numeric field in the syntax croner and croniter share."""
    r = rng.random()
    if r < star:
        return "*"
    if r < star + 0.2:
        return str(rng.randint(lo, hi))
    if r < star + 0.35:
        return f"*/{rng.randint(2, max(2, (hi - lo + 1) // 2))}"
    if r < star + 0.45:
        a = rng.randint(lo, hi - 1)
        return f"{a}-{rng.randint(a + 1, hi)}"
    if r < star + 0.5:
        a = rng.randint(lo, hi - 1)
        b = rng.randint(a + 1, hi)
        return f"{a}-{b}/{rng.randint(1, max(1, b - a))}"
    values = sorted(rng.sample(range(lo, hi + 1), rng.randint(2, min(4, hi - lo + 1))))
    return ",".join(map(str, values))


def expression(rng):
    seconds = rng.random() < 0.25
    minute = field(rng, 0, 59, star=0.15)
    hour = field(rng, 0, 23, star=0.4)
    r = rng.random()
    if r < 0.6:
        dom = "*"
    elif r < 0.67:
        dom = "L"
    elif r < 0.72:
        dom = f"{rng.randint(1, 28)}W"
    else:
        dom = field(rng, 1, 28, star=0)
    month = "*" if rng.random() < 0.7 else field(rng, 1, 12, star=0)
    r = rng.random()
    if r < 0.6:
        dow = "*"
    elif r < 0.7:
        dow = f"{rng.randint(0, 6)}#{rng.randint(1, 4)}"
    elif r < 0.75:
        dow = str(rng.randint(0, 7))
    else:
        dow = field(rng, 0, 6, star=0)
    parts = [minute, hour, dom, month, dow]
    if seconds:
        parts.insert(0, field(rng, 0, 59, star=0.2))
    return " ".join(parts)


def resolve(naive, tz):
    """The instant of a local wall-clock time: None in a gap, the first of two in an overlap."""
    candidates = []
    for fold in (0, 1):
        aware = naive.replace(tzinfo=tz, fold=fold)
        utc = aware.astimezone(timezone.utc)
        if utc.astimezone(tz).replace(tzinfo=None) == naive:
            candidates.append(utc)
    return min(candidates) if candidates else None


def split_days(expr):
    """Vixie cron runs on a day matching either day field when both are restricted; croniter
    does too, except when one of them uses `#`, `W` or `L`, where it lets that one decide
    alone. For those, the expression is split into its day-of-month half and its
    day-of-week half, and the runs of both are merged: the same rule, from croniter."""
    fields = expr.split()
    dom, dow = fields[-3], fields[-1]
    if dom == "*" or dow == "*" or not ("#" in dow or "W" in dom or "L" in dom):
        return [expr]
    by_dom, by_dow = list(fields), list(fields)
    by_dom[-1] = "*"
    by_dow[-3] = "*"
    return [" ".join(by_dom), " ".join(by_dow)]


def wall_clock(expr, local):
    """The expression's wall-clock matches after `local`, in order, without repeats."""
    its = [croniter(e, local, second_at_beginning=True, max_years_between_matches=4) for e in split_days(expr)]
    heads = [it.get_next(datetime) for it in its]
    last = None
    while True:
        i = min(range(len(heads)), key=heads.__getitem__)
        value = heads[i]
        heads[i] = its[i].get_next(datetime)
        if value != last:
            last = value
            yield value


def next_runs(expr, tz, start, n):
    out, t = [], start
    local = t.astimezone(tz).replace(tzinfo=None)
    matches = wall_clock(expr, local)
    skips = 0
    while len(out) < n:
        naive = next(matches)
        instant = resolve(naive, tz)
        if instant is None or instant <= t:
            skips += 1
            if skips > 10_000:
                raise RuntimeError("too many skips")
            continue
        out.append(instant)
        t = instant
    return out


def fmt(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    zones = {z: (ZoneInfo(z), transitions(ZoneInfo(z))) for z in ZONES}
    span = int((END - START).total_seconds())
    cases, dropped = [], 0
    while len(cases) < args.cases:
        expr = expression(rng)
        name = rng.choice(ZONES)
        tz, changes = zones[name]
        if changes and rng.random() < 0.5:
            # Near a DST change, where the zone rules matter.
            start = rng.choice(changes) + timedelta(seconds=rng.randint(-4 * 3600, 4 * 3600))
        else:
            start = START + timedelta(seconds=rng.randrange(span))
        try:
            runs = next_runs(expr, tz, start, RUNS)
        except Exception:  # noqa: BLE001 - croniter found no run within its bound: not a case
            dropped += 1
            continue
        cases.append({"cron": expr, "timezone": name, "from": fmt(start), "next": [fmt(t) for t in runs]})
    with open(args.out, "w") as f:
        json.dump(cases, f)
    print(
        f"cron oracle: {len(cases)} cases ({dropped} expressions without {RUNS} runs skipped), "
        f"{len(cases) * RUNS} runs, seed {args.seed}, {time.monotonic() - started:.1f} s -> {args.out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
