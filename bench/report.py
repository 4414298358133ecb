#!/usr/bin/env python3
"""Assembles the benchmark results: bench/results/raw/*.json (written by the bench binaries)
into bench/results/results.json, bench/results/README.md (a Markdown table) and PNG plots.

Usage: python bench/report.py [RESULTS_DIR] [--duration SECONDS]
"""

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORDER = [
    "loadgen",
    "burst",
    "schedules",
    "precision",
    "scale",
    "aws_coldstart",
    "aws_rss",
    "aws_handler",
    "aws_calls",
    "aws_precision",
]

# Figures with a bar in the README that no benchmark here produced (yet): shown as TODO rows.
AWS_TODO = [
    ("aws_rss", "Lambda RSS after one API request and one wake-up (needs moto with the table and queues)", "≤ 25 MB"),
    ("aws_handler", "handler CPU per create / per fire, AWS calls answered by an instant stub", "create < 1 ms"),
    ("aws_calls", "AWS calls per task (due ≤ 15 min, due in hours, one retry)", "≤ 4, ≤ 5"),
    ("aws_precision", "AWS precision from the rehearsal (Scheduler's minute simulated)", "p99 ≤ 1 s"),
]


def sh(*args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine():
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    nproc = sh("nproc") or str(os.cpu_count())
    mem_gib = mem_kb / 1048576
    return {
        "cpu": model,
        "nproc": int(nproc),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "description": f"{model}, {nproc} CPUs (nproc), {mem_gib:.1f} GiB RAM, Linux {platform.release()}",
    }


def commits(raws):
    """The commit each benchmark measured, as its raw file records it (bench/src/lib.rs,
    `measured_commit`): {(commit, dirty): [names]}."""
    groups = {}
    for name, r in raws.items():
        key = (r.get("commit") or "unknown", bool(r.get("dirty")))
        groups.setdefault(key, []).append(name)
    return groups


def commit_line(groups):
    def one(key):
        sha, dirty = key
        return f"`{sha[:12]}`" + (" (with uncommitted changes)" if dirty else "")

    if len(groups) == 1:
        return f"- commit: {one(next(iter(groups)))}"
    parts = [f"{one(k)} ({', '.join(names)})" for k, names in groups.items()]
    return "- commits: " + "; ".join(parts)


def fmt(value, unit):
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if unit == "bool":
        return "yes" if value >= 1 else "no"
    if unit == "tasks/s":
        return f"{value:,.0f} tasks/s"
    if unit in ("MiB", "MB"):
        return f"{value:,.1f} {unit}"
    if unit in ("ms", "µs"):
        return f"{value:,.1f} {unit}" if abs(value) >= 10 else f"{value:.2f} {unit}"
    return f"{value:,.3g} {unit}"


def verdict(p):
    return {True: "✅ pass", False: "❌ FAIL", None: ""}[p]


def plot_burst(raw, out, title=None, xlabel="lateness (ms): receiver arrival − run_at"):
    lat = raw["series"]["lateness_ms"]
    if not lat:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.hist(lat, bins=60, color="#4477aa")
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel("deliveries")
    ax1.set_title(title or f"burst: {len(lat):,} tasks due at one instant")
    n = len(lat)
    ax2.plot(lat, [(i + 1) / n for i in range(n)], color="#4477aa")
    ax2.set_xlabel("lateness (ms)")
    ax2.set_ylabel("fraction delivered")
    ax2.set_title("CDF")
    ax2.axvline(1000, color="#cc3311", linestyle="--", label="bar: p99 ≤ 1 s")
    ax2.set_xlim(left=0, right=max(max(lat) * 1.05, 50))
    ax2.grid(alpha=0.3)
    ax2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out.name


def plot_precision(raw, out):
    lat = raw["series"]["lateness_ms"]
    if not lat:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    n = len(lat)
    ax.plot(lat, [(i + 1) / n for i in range(n)], marker=".", color="#228833")
    ax.set_xlabel("lateness (ms)")
    ax.set_ylabel("fraction delivered")
    ax.set_title(f"precision at rest: {n} tasks over 10 s")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out.name


def plot_throughput(runs, out):
    runs = [(label, r) for label, r in runs if r and r["series"].get("throughput")]
    if not runs:
        return None
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, r in runs:
        pts = r["series"]["throughput"]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
    ax.axhline(7500, color="#cc3311", linestyle="--", label="bar: 7,500/s")
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("creates per second (250 ms windows)")
    ax.set_title("local create throughput, 64 in flight, durable (synchronous=FULL)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out.name


def main():
    args = sys.argv[1:]
    duration = None
    if "--duration" in args:
        i = args.index("--duration")
        duration = float(args[i + 1])
        del args[i : i + 2]
    results = Path(args[0]) if args else Path(__file__).parent / "results"
    raw_dir = results / "raw"
    if duration is None and (results / "results.json").exists():
        # A rebuilt report (make bench-aws, make bench-report) keeps make bench's duration.
        duration = json.loads((results / "results.json").read_text()).get("duration_s")
    raws = {}
    for p in sorted(raw_dir.glob("*.json")):
        raws[p.stem] = json.loads(p.read_text())
    names = [n for n in ORDER if n in raws] + sorted(n for n in raws if n not in ORDER)

    groups = commits(raws)
    m = machine()
    quick = any(r.get("quick") for r in raws.values())
    lean = any(r.get("profile") == "bench-quick" for r in raws.values())
    rows = []
    for name in names:
        r = raws[name]
        for f in r["figures"]:
            rows.append({**f, "benchmark": name, "command": r["command"]})
    todo = [
        {"benchmark": b, "figure": f, "bar": bar, "status": "TODO"}
        for b, f, bar in AWS_TODO
        if b not in raws
    ]

    plots = {}
    if "burst" in raws:
        plots["burst"] = plot_burst(raws["burst"], results / "burst_lateness.png")
    if "schedules" in raws:
        plots["schedules"] = plot_burst(
            raws["schedules"],
            results / "schedules_lateness.png",
            title=f"schedules: {len(raws['schedules']['series']['lateness_ms']):,} due on one minute boundary",
            xlabel="lateness (ms): receiver arrival − the minute boundary",
        )
    if "precision" in raws:
        plots["precision"] = plot_precision(raws["precision"], results / "precision_lateness.png")
    label = lambda n: f"{n}: {raws[n]['params'].get('tasks', 0):,} tasks"  # noqa: E731
    plots["throughput"] = plot_throughput(
        [(label(n), raws.get(n)) for n in ("loadgen", "scale") if n in raws],
        results / "create_throughput.png",
    )

    failed = [r for r in rows if r["pass"] is False]
    doc = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commits": [{"commit": k[0], "dirty": k[1], "benchmarks": v} for k, v in groups.items()],
        "quick": quick,
        "machine": m,
        "duration_s": duration,
        "figures": rows,
        "todo": todo,
        "plots": {k: v for k, v in plots.items() if v},
        "failed": [r["id"] for r in failed],
        "benchmarks": raws,
    }
    (results / "results.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")

    lines = [
        "# Benchmark results",
        "",
        f"Produced by `{'BENCH_QUICK=1 ' if quick else ''}make bench` on {doc['generated_at']}"
        + (f" in {duration:.0f} s" if duration else "")
        + ".",
        "",
        commit_line(groups),
        f"- machine: {m['description']}",
        (
            "- server: the release build (`cargo build --release -p task-scheduler`), started by each"
            if not lean
            else "- server: the `bench-quick` build (`cargo build --profile bench-quick"
            " --no-default-features -p task-scheduler`: no LTO, no AWS host), started by each"
        )
        + " benchmark on 127.0.0.1 port 0 with a fresh data directory on the local ext4 disk,"
        " `SCHEDULER_RATE_LIMIT=0`, `RUST_LOG=warn`, everything else default"
        " (SQLite `synchronous=FULL`: a 201 survives `kill -9`); load generator, receiver and"
        " server share the same cores.",
        "- lateness = the receiver's arrival wall time − the task's `run_at`.",
        "- AWS figures (`make bench-aws`, rows `aws_*`): the release x86_64 bootstrap. Cold start:"
        " on cargo lambda's Runtime API emulator, the first poll timestamped by a loopback proxy."
        " The others: on a Runtime API on loopback (bench/src/bin/aws/), over moto server"
        " (scripts/with-moto.sh); handler CPU with every AWS call answered by an instant stub"
        " replaying moto's answers (bench/src/aws_stub.rs). AWS precision plays EventBridge"
        " Scheduler at a uniform random moment of each schedule's at() minute and SQS at firing +"
        " DelaySeconds (rounded down; the function waits out the fraction), with fresh function"
        " processes whose wall clock libfaketime moves forward; its lateness is"
        " the arrival in that clock − `run_at`.",
        ""
        if not quick
        else "- **quick mode** (`BENCH_QUICK=1`): reduced sizes and a lighter build, not the published figures.",
        "",
        "| figure | value | bar | pass/fail | command |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['figure']} | {fmt(r['value'], r['unit'])} | {r['bar']} | {verdict(r['pass'])} | `{r['command']}` |"
        )
    for t in todo:
        lines.append(f"| {t['figure']} | TODO | {t['bar']} | TODO: not measured yet (AWS path) | |")
    lines += ["", "## Plots", ""]
    captions = {
        "throughput": "Create throughput over time",
        "burst": "Burst: lateness distribution (histogram and CDF)",
        "schedules": "Schedules: 10,000 `* * * * *` schedules due on one minute boundary (histogram and CDF)",
        "precision": "Precision at rest: lateness CDF",
    }
    for k in ("throughput", "burst", "schedules", "precision"):
        if plots.get(k):
            lines += [f"**{captions[k]}**", "", f"![{captions[k]}]({plots[k]})", ""]
    lines += [
        "## Reproduce",
        "",
        "```sh",
        "make bench              # full run: writes bench/results/",
        "BENCH_QUICK=1 make bench  # reduced sizes, under two minutes",
        "make bench-aws          # the Lambda figures (builds both bootstraps, starts moto)",
        "```",
        "",
        "Raw measurements (every lateness, the throughput series) are in `raw/*.json`;"
        " `results.json` holds all of it with the commit and machine.",
        "",
    ]
    (results / "README.md").write_text("\n".join(lines))
    print(f"report: {len(rows)} figures, {len(failed)} failed, {len(todo)} TODO -> {results}")
    for r in failed:
        print(f"  FAIL {r['id']}: {r['value']} {r['unit']} (bar {r['bar']})")


if __name__ == "__main__":
    main()
