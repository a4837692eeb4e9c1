"""What Redis costs the app, how two nodes share it, and this tree against another (issue 19).

Starts its own redis-server processes on free ports (never the shared one) and, in one run:

1. one node: the app (one daphne) at moderate load (20 paced sessions, 4 tasks x 200 tokens
   at 30 tok/s), at capacity-level paced load (`--capacity-sessions`, default 80) and at
   saturation (`bench.run`'s: 20 sessions of back-to-back unpaced runs); for each, Redis
   CPU per 1,000 tokens from `INFO cpu` (used_cpu_sys + used_cpu_user), the app server's,
   and app CPU / Redis CPU: how many app cores one Redis core carries;
2. two nodes: the same app with `REDIS_URL=url1,url2`, moderate and saturation, per node its
   CPU per 1,000 tokens, commands processed (`INFO stats`) and the run keys it holds;
3. the app server's CPU per 1,000 tokens at moderate load, this tree against `--base-root`
   (default /work/main, run with its own .venv), in alternating rounds: medians and ratio.

    .venv/bin/python -m bench.redis_cost                      # ~6 min
    .venv/bin/python -m bench.redis_cost --rounds 2 --saturation-s 4 --capacity-sessions 40

Prints a table; the full results go to bench/results/redis_cost.json (`--out`). Reuses
bench.run's upstream, load generator and measurement (`measure`, `wait_for_quiet`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import namedtuple
from pathlib import Path

import psutil
import redis

from bench.run import (
    ROOT,
    Context,
    Target,
    Upstream,
    Workload,
    app_commit,
    fmt,
    log,
    machine,
    measure,
    pipeline_file,
    wait_for_quiet,
)
from tests.support.live import app_env, manage, wait_for_port
from tests.support.redis_procs import RedisProcess

CpuTimes = namedtuple("CpuTimes", "user system children_user children_system")
RUN_META = "streams:run:*:meta"


class RedisNodes:
    """The redis-server processes under one app, read through INFO; stands in for a psutil.Process.

    `bench.run.measure` reads a process's `cpu_times()` right before and right after the measured
    window; each read here snapshots every node's CPU and command count, so the last two
    snapshots bracket exactly that window (the client's warm-up excluded)."""

    def __init__(self, procs: list[RedisProcess]):
        self.procs = procs
        self.clients = [redis.Redis.from_url(p.url) for p in procs]
        self.pid = self.clients[0].info("server")["process_id"]
        self.snapshots: list[list[dict]] = []

    @property
    def url(self) -> str:
        """REDIS_URL naming every node."""
        return ",".join(p.url for p in self.procs)

    def snapshot(self) -> list[dict]:
        out = []
        for c in self.clients:
            cpu, stats = c.info("cpu"), c.info("stats")
            out.append(
                {
                    "cpu_s": cpu["used_cpu_sys"] + cpu["used_cpu_user"],
                    "commands": stats["total_commands_processed"],
                }
            )
        return out

    def cpu_times(self) -> CpuTimes:
        snap = self.snapshot()
        self.snapshots.append(snap)
        return CpuTimes(sum(n["cpu_s"] for n in snap), 0.0, 0.0, 0.0)

    def children(self, recursive: bool = False) -> list:
        return []

    def window(self) -> list[dict]:
        """Per node: CPU seconds and commands over the last measured window."""
        before, after = self.snapshots[-2], self.snapshots[-1]
        return [{k: a[k] - b[k] for k in a} for b, a in zip(before, after, strict=True)]

    def run_keys(self) -> list[int]:
        """Per node: how many runs' metadata keys it holds."""
        return [sum(1 for _ in c.scan_iter(match=RUN_META, count=1000)) for c in self.clients]

    def flush(self) -> None:
        for c in self.clients:
            c.flushall()

    def close(self) -> None:
        for c in self.clients:
            c.close()
        for p in self.procs:
            p.close()  # stops it and removes its temp dir


class App(Target):
    """The app (one daphne) from a given tree, with that tree's interpreter, on given Redis nodes."""

    def __init__(self, ctx: Context, root: str, python: str, redis_url: str):
        super().__init__("ours", ctx)
        self.root, self.python, self.redis_url = root, python, redis_url

    def start(self) -> App:
        env = app_env(
            self.ctx.database_url,
            self.redis_url,
            OPENAI_BASE_URL=self.ctx.upstream.base_url,
            OPENAI_API_KEY="bench",
            LOG_LEVEL="WARNING",
            STREAMS_RATE_LIMIT_PER_S="10000",  # as bench.run: saturation outruns the abuse limit
        )
        env.pop("PYTHONPATH", None)  # `-m` puts the cwd first: the app comes from `root` alone
        cmd = [self.python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
        with open(self.log, "ab") as log_file:
            self.proc = subprocess.Popen(
                [*cmd, "orchestrator_site.asgi:application"],
                cwd=self.root,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.port, 30)
        except TimeoutError:
            self.stop()
            raise
        self.pid = self.proc.pid
        self.ps = psutil.Process(self.pid)
        return self


def measure_app(ctx: Context, nodes: RedisNodes, w: Workload, label: str, root: str, python: str) -> dict:
    """A fresh app server on `nodes` (emptied first), one measurement, the Redis figures added."""
    nodes.flush()
    ctx.redis = nodes
    app = App(ctx, root, python, nodes.url).start()
    try:
        # One attempt, its noise reported: INFO's snapshots bracket the last measure() only.
        busy_before = wait_for_quiet(ctx)
        r = measure(ctx, app, w, label)
    finally:
        app.stop()
    tokens = r["tokens_delivered"]
    per_node = nodes.window()
    for node, keys in zip(per_node, nodes.run_keys(), strict=True):
        node["run_keys"] = keys
        node["cpu_s_per_1k_tokens"] = node["cpu_s"] / tokens * 1000 if tokens else None
        node["commands_per_1k_tokens"] = node["commands"] / tokens * 1000 if tokens else None
    redis_cpu = sum(n["cpu_s"] for n in per_node)
    out = {
        "label": label,
        "root": root,
        "sessions": w.sessions,
        "runs": r["runs"],
        "tokens": tokens,
        "tokens_lost": r["tokens_lost"],
        "failed_runs": r["failed_runs"],
        "fto_p99_ms": r["first_token_overhead_ms"]["p99"],
        "tokens_per_s": r["tokens_per_s"],
        "app_cpu_s_per_1k": r["cpu_s_per_1k_tokens"],
        "redis_cpu_s_per_1k": redis_cpu / tokens * 1000 if tokens else None,
        "app_cores": r["cpu_util"]["server"],
        "redis_cores": r["cpu_util"]["redis"],
        "other_cores": r["cpu_util"]["other"],
        "busy_before_cores": busy_before,
        "load_avg": os.getloadavg()[0],
        "nodes": per_node,
    }
    out["app_per_redis_core"] = (
        out["app_cpu_s_per_1k"] / out["redis_cpu_s_per_1k"] if out["redis_cpu_s_per_1k"] else None
    )
    log(
        f"[{label}] {tokens} tokens, app {fmt(out['app_cpu_s_per_1k'], 4)} s/1k, "
        f"redis {fmt(out['redis_cpu_s_per_1k'], 4)} s/1k, lost {out['tokens_lost']}, "
        f"failed {out['failed_runs']}, others {fmt(out['other_cores'], 2)} cores"
    )
    return out


def workloads(args) -> dict[str, Workload]:
    paced = {"tokens": args.tokens, "pace": 30.0, "spread": 2.0, "a_ttft": 0.25}
    return {
        "moderate": Workload(sessions=20, **paced),
        "capacity": Workload(sessions=args.capacity_sessions, **paced),
        "saturation": Workload(
            sessions=20,
            tokens=args.tokens,
            pace=0.0,
            spread=0.5,
            duration=args.saturation_s,
            a_ttft=0.0,
            record_live=False,
        ),
    }


def cost_table(rows: list[dict]) -> str:
    head = f"{'measurement':28}{'sessions':>9}{'tokens':>9}{'app s/1k':>10}{'redis s/1k':>11}"
    head += f"{'app/redis':>10}{'redis cores':>12}{'lost':>6}{'others':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['label']:28}{r['sessions']:>9}{r['tokens']:>9}{fmt(r['app_cpu_s_per_1k'], 4):>10}"
            f"{fmt(r['redis_cpu_s_per_1k'], 4):>11}{fmt(r['app_per_redis_core'], 1):>10}"
            f"{fmt(r['redis_cores'], 3):>12}{r['tokens_lost']:>6}{fmt(r['other_cores'], 2):>8}"
        )
    return "\n".join(lines)


def split_table(one: dict, two: dict) -> str:
    head = f"{'node':22}{'cpu s/1k':>10}{'commands':>10}{'cmds/1k':>9}{'run keys':>9}{'cpu share':>10}"
    lines = [f"-- {two['label']} vs {one['label']} (runs measured: {two['runs']}, +2 warm-up)", head]
    for name, r in (("one node", one), ("two nodes", two)):
        total = sum(n["cpu_s"] for n in r["nodes"]) or 1.0
        for i, n in enumerate(r["nodes"]):
            lines.append(
                f"{name + f' #{i + 1}':22}{fmt(n['cpu_s_per_1k_tokens'], 4):>10}{n['commands']:>10}"
                f"{fmt(n['commands_per_1k_tokens'], 0):>9}{n['run_keys']:>9}{n['cpu_s'] / total:>10.2f}"
            )
    ratio = two["redis_cpu_s_per_1k"] / one["redis_cpu_s_per_1k"] if one["redis_cpu_s_per_1k"] else None
    lines.append(f"Redis CPU s/1k, two nodes summed / one node: {fmt(ratio, 2)}x")
    return "\n".join(lines)


def noise_adjusted_ratio(this: list[dict], base: list[dict]) -> tuple[float | None, float | None]:
    """this / base of app CPU per 1k tokens, from y = a + b * (others' cores) + c * (this tree).

    A starved server coalesces more tokens per frame, so its CPU per token falls as other
    processes take more of the machine; the fit compares the trees at the same noise.
    Returns the ratio at the rounds' mean noise and b (s/1k per core taken by others)."""
    rows = [(r["other_cores"], r["app_cpu_s_per_1k"], 1.0) for r in this]
    rows += [(r["other_cores"], r["app_cpu_s_per_1k"], 0.0) for r in base]
    x, y, d = (list(col) for col in zip(*rows, strict=True))

    def residuals(v: list[float]) -> list[float]:
        slope, intercept = statistics.linear_regression(x, v)
        return [vi - (intercept + slope * xi) for vi, xi in zip(v, x, strict=True)]

    if len(this) < 2 or len(base) < 2 or len(set(x)) < 2:
        return None, None  # nothing to fit
    ry, rd = residuals(y), residuals(d)
    spread = sum(b * b for b in rd)
    if spread < 1e-12:
        return None, None  # the noise alone tells the trees apart: no fit
    c = sum(a * b for a, b in zip(ry, rd, strict=True)) / spread
    b, _ = statistics.linear_regression(x, [yi - c * di for yi, di in zip(y, d, strict=True)])
    base_level = statistics.fmean(y) - c * statistics.fmean(d)
    return (base_level + c) / base_level, b


def run(args) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    setup = app_env(database_url, "")
    manage(setup, "migrate", "--noinput")
    manage(setup, "import_pipelines", "-", stdin=json.dumps(pipeline_file()))
    bench_args = argparse.Namespace(
        profile=False,
        bottleneck_util=0.85,
        noise_limit=args.noise_limit,
        quiet_wait=args.quiet_wait,
    )
    upstream = Upstream(workdir)
    ctx = Context(workdir, upstream, database_url, bench_args)
    one = RedisNodes([RedisProcess().start()])
    two = RedisNodes([RedisProcess().start(), RedisProcess().start()])
    here, python = str(ROOT), sys.executable
    base_python = str(Path(args.base_root) / ".venv" / "bin" / "python")
    w = workloads(args)
    out: dict = {"load_avg_start": os.getloadavg()}
    try:
        out["one_node"] = [
            measure_app(ctx, one, w[name], f"one node, {name}", here, python)
            for name in ("moderate", "capacity", "saturation")
        ]
        out["two_nodes"] = [
            measure_app(ctx, two, w[name], f"two nodes, {name}", here, python)
            for name in ("moderate", "saturation")
        ]
        rounds: dict[str, list[dict]] = {"this": [], "base": []}
        for i in range(args.rounds):
            # Alternate which goes first, so a trend in the noise favours neither.
            order = [("this", here, python), ("base", args.base_root, base_python)]
            for side, root, py in order if i % 2 == 0 else order[::-1]:
                rounds[side].append(measure_app(ctx, one, w["moderate"], f"{side} r{i + 1}", root, py))
        out["versus"] = rounds
    finally:
        upstream.stop()
        one.close()
        two.close()
        shutil.rmtree(workdir, ignore_errors=True)
    out["load_avg_end"] = os.getloadavg()
    return out


def report(args, out: dict) -> str:
    one, two = out["one_node"], out["two_nodes"]
    med = {side: statistics.median(r["app_cpu_s_per_1k"] for r in rs) for side, rs in out["versus"].items()}
    out["versus_median_app_cpu_s_per_1k"] = med
    out["versus_ratio"] = med["this"] / med["base"]
    texts = [
        f"== Redis cost (issue 19): app {out['commit']} vs base {out['base_commit']}; "
        f"load average {', '.join(f'{v:.1f}' for v in out['load_avg_start'])} at start, "
        f"{', '.join(f'{v:.1f}' for v in out['load_avg_end'])} at end (2 cores)",
        "-- one node and two nodes (s/1k: CPU seconds per 1,000 delivered tokens; app/redis: app cores "
        "one Redis core carries; others: cores other processes took)",
        cost_table(one + two),
        split_table(one[0], two[0]),
        split_table(one[2], two[1]),
    ]
    base_root = out.get("base_root", args.base_root)
    versus = [f"-- moderate app CPU s/1k, this tree vs {base_root}, alternating rounds"]
    for side in ("this", "base"):
        vals = ", ".join(f"{r['app_cpu_s_per_1k']:.4f} ({r['other_cores']:.2f})" for r in out["versus"][side])
        versus.append(f"{side:5} median {med[side]:.4f}   rounds (others' cores) {vals}")
    # Rounds measured back to back share the machine's mood: their ratios are the fairer pairing.
    paired = [
        t["app_cpu_s_per_1k"] / b["app_cpu_s_per_1k"]
        for t, b in zip(out["versus"]["this"], out["versus"]["base"], strict=True)
    ]
    out["versus_paired_ratios"] = paired
    versus.append(f"this / base, medians: {out['versus_ratio']:.3f}x (target: within 5%)")
    versus.append(
        f"this / base, round by round: median {statistics.median(paired):.3f}x, "
        f"range {min(paired):.3f}x .. {max(paired):.3f}x ({', '.join(f'{v:.3f}' for v in paired)})"
    )
    adjusted, slope = noise_adjusted_ratio(out["versus"]["this"], out["versus"]["base"])
    out["versus_noise_adjusted_ratio"] = adjusted
    if adjusted is not None:
        versus.append(
            f"this / base, at equal noise (fit over all rounds): {adjusted:.3f}x; "
            f"each core others take moves app CPU by {slope:+.4f} s/1k"
        )
    texts.append("\n".join(versus))
    return "\n\n".join(texts)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4, help="moderate rounds per tree (this vs base)")
    p.add_argument("--base-root", default="/work/main", help="the tree to compare with (its .venv)")
    p.add_argument("--tokens", type=int, default=200, help="tokens per task")
    p.add_argument("--capacity-sessions", type=int, default=80, help="paced sessions near capacity")
    p.add_argument("--saturation-s", type=float, default=8.0, help="seconds of back-to-back runs")
    p.add_argument("--noise-limit", type=float, default=0.3, help="cores other processes may take")
    p.add_argument("--quiet-wait", type=float, default=5.0, help="seconds to wait for a quiet machine")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "redis_cost.json"))
    p.add_argument("--from-json", default="", help="report an earlier run's JSON again (and update it)")
    args = p.parse_args(argv)
    if args.from_json:
        out = json.loads(Path(args.from_json).read_text())
        out["table"] = report(args, out)
        Path(args.from_json).write_text(json.dumps(out, indent=1, default=str))
        print(out["table"])
        return out
    started = datetime.datetime.now(datetime.UTC)
    out = run(args)
    out.update(
        date=started.isoformat(timespec="seconds"),
        machine=machine(),
        command=" ".join(["python -m bench.redis_cost", *(argv if argv is not None else sys.argv[1:])]),
        commit=app_commit(str(ROOT)),
        base_root=args.base_root,
        base_commit=app_commit(args.base_root),
    )
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))  # before a report can fail
    out["table"] = report(args, out)
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print(out["table"])
    print(f"\nJSON: {args.out}")
    return out


if __name__ == "__main__":
    main()
