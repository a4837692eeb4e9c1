"""The streaming benchmark: the app under its production server + Redis against the original design.

    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python -m bench.run --scenario all            # about 10 minutes
    .venv/bin/python -m bench.run --scenario moderate --quick
    .venv/bin/python -m bench.run --scenario tracing --rounds 5   # ours, tracing off/on alternating

Starts on 127.0.0.1: the upstream (bench.upstream: tests.support.openai_server with a
send-time record), then for every scenario and every system under test its server
process (ours: one `python -m streams.serve`, uvicorn, or daphne with --ours-server, with
the Redis channel layer and a migrated SQLite database holding the four-task pipeline
`bench`; ref / ref-parse: bench.reference.app under uvicorn) and a load-generator process
(bench.client). Prints a table and writes JSON (bench/results/latest.json). What each
figure means: bench/README.md.

`--scenario tracing` runs the moderate workload against ours only, with tracing off and on
(OTLP/HTTP to a local sink: tests.support.otlp_receiver in its own process) in alternating
order, `--rounds` times, and compares the medians of the server's CPU per 1,000 tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.live import app_env, free_port, manage, wait_for_port  # noqa: E402

TASKS = ("task_a", "task_b", "task_c", "task_d")
SYSTEMS = ("ours", "ref", "ref-parse")
SYSTEM_LABELS = {
    "ours": "ours: streams.serve + Redis pub/sub layer",
    "ref": "ref: FastAPI+sse-starlette, SDK chunk objects",
    "ref-parse": "ref-parse: same, app's raw-line provider",
}
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PY = sys.executable
ASGI_APP = "orchestrator_site.asgi:application"


def pipeline_file() -> dict:
    """The four-task pipeline: each prompt names its task, the input carries the workload."""
    return {
        "pipelines": [
            {
                "slug": "bench",
                "name": "Benchmark",
                "tasks": [
                    {
                        "key": key,
                        "title": key.upper(),
                        "provider": "openai",
                        "model": "bench",
                        "system": "",
                        "prompt": key + " {{ input }}",
                        "depends_on": [],
                        "timeout_s": 120,
                    }
                    for key in TASKS
                ],
            }
        ]
    }


# --- statistics ----------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default); None for no values."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def dist(values: list[float]) -> dict:
    """p50, p99, max and count."""
    return {
        "p50": quantile(values, 0.5),
        "p99": quantile(values, 0.99),
        "max": max(values) if values else None,
        "n": len(values),
    }


# --- processes -------------------------------------------------------------------------------


def cpu_s(proc: psutil.Process | list | None) -> float:
    """User + system CPU seconds of a process or processes and their children, ended or live
    (a uvicorn supervisor's workers); 0 when gone."""
    if proc is None:
        return 0.0
    if isinstance(proc, list):
        return sum(cpu_s(p) for p in proc)
    try:
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
    except psutil.Error:
        return 0.0
    for child in _children(proc):
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += c.user + c.system
    return total


def _children(proc: psutil.Process) -> list:
    with contextlib.suppress(psutil.Error):
        return proc.children(recursive=True)
    return []


def redis_process() -> psutil.Process | None:
    """The redis-server serving REDIS_URL (its CPU is part of our system's cost)."""
    try:
        import redis

        pid = redis.Redis.from_url(REDIS_URL).info("server")["process_id"]
        return psutil.Process(pid)
    except Exception:
        return None


class RSSSampler:
    """Samples a process's RSS every 50 ms in a thread; the peak and the last value."""

    def __init__(self, procs: list[psutil.Process]):
        self.procs = procs  # summed, with their live children (workers)
        self.peak = 0
        self.last = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.last = self.rss()
            self.peak = max(self.peak, self.last)
            self._stop.wait(0.05)

    def rss(self) -> int:
        total = 0
        for proc in self.procs:
            for p in (proc, *_children(proc)):
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
        return total

    def reset(self) -> None:
        self.peak = self.rss()

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class Upstream:
    """bench.upstream in its own process."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc = subprocess.Popen(
            [PY, "-m", "bench.upstream", "--port", "0"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"upstream did not start: {line!r}")
        self.base_url = line.removeprefix("listening on ")
        self.ps = psutil.Process(self.proc.pid)
        self._n = 0

    def records(self) -> dict:
        """Every request record since the last call."""
        self._n += 1
        path = self.workdir / f"upstream-{self._n}.json"
        self.proc.stdin.write(f"dump {path}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer.startswith("dumped"):
            raise RuntimeError(f"upstream dump failed: {answer!r}")
        data = json.loads(path.read_text())
        path.unlink()
        return data["records"]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Target:
    """One server process of a system under test."""

    def __init__(self, system: str, ctx: Context):
        self.system = system
        self.ctx = ctx
        # --processes N: ours runs N instances (one port each, the client spreads its sessions
        # over them), the reference N uvicorn workers behind one port.
        self.ports = [free_port() for _ in range(ctx.args.processes if system == "ours" else 1)]
        self.port = self.ports[0]
        self.log = ctx.workdir / f"{system}.log"
        self.procs: list[subprocess.Popen] = []

    @property
    def mode(self) -> str:
        return "ws" if self.system == "ours" else "sse"

    @property
    def url(self) -> str:
        if self.system == "ours":
            return ",".join(f"ws://127.0.0.1:{port}/ws/streams/" for port in self.ports)
        return f"http://127.0.0.1:{self.port}/stream"

    def start(self) -> Target:
        ctx = self.ctx
        if self.system == "ours":
            env = app_env(
                ctx.database_url,
                REDIS_URL,
                OPENAI_BASE_URL=ctx.upstream.base_url,
                OPENAI_API_KEY="bench",
                LOG_LEVEL="WARNING",
                # Saturation starts runs back to back on each connection, faster than the
                # per-connection abuse limit (20 frames/s) lets a client: not what is measured.
                STREAMS_RATE_LIMIT_PER_S="10000",
                **ctx.app_env,
            )
            if ctx.args.ours_server == "uvicorn":
                # The production launcher (uvloop, httptools, websockets-sansio; drains on SIGTERM).
                cmd = [PY, "-m", "streams.serve", "--host", "127.0.0.1", "--port", "{port}"]
                cmd += ["--log-level", "warning", *ctx.args.ours_serve_args.split()]
            else:
                module = "bench.daphne_uvloop" if ctx.args.ours_loop == "uvloop" else "daphne"
                cmd = [PY, "-m", module, "-b", "127.0.0.1", "-p", "{port}", ASGI_APP]
        else:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "STREAMS_"))}
            env.update(
                BENCH_VARIANT="parse" if self.system == "ref-parse" else "sdk",
                OPENAI_BASE_URL=ctx.upstream.base_url,
                OPENAI_API_KEY="bench",
                PYTHONUNBUFFERED="1",
            )
            cmd = [PY, "-m", "uvicorn", "bench.reference.app:app", "--host", "127.0.0.1"]
            cmd += ["--port", "{port}", "--log-level", "warning", "--no-access-log"]
            if ctx.args.processes > 1:
                cmd += ["--workers", str(ctx.args.processes)]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(self.log, "ab") as log:
            for port in self.ports:
                # cwd: the app tree under test (ref-parse imports the app's provider from there).
                self.procs.append(
                    subprocess.Popen(
                        [arg.format(port=port) for arg in cmd],
                        cwd=ctx.args.app_root,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        try:
            for port in self.ports:
                wait_for_port(port, 30)
        except TimeoutError:
            self.stop()
            raise
        self.pid = self.procs[0].pid  # the one profiled
        self.ps = [psutil.Process(p.pid) for p in self.procs]
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Context:
    """Things shared by every measurement of one benchmark run."""

    workdir: Path
    upstream: Upstream
    database_url: str
    args: argparse.Namespace
    app_env: dict = field(default_factory=dict)
    redis: psutil.Process | None = None
    results_dir: Path = ROOT / "bench" / "results"


# --- one measurement -------------------------------------------------------------------------


@dataclass
class Workload:
    sessions: int
    tokens: int
    pace: float
    spread: float
    runs: int = 1
    duration: float = 0.0
    a_ttft: float = 0.25
    record_live: bool = True
    idle: bool = False
    idle_hold_s: float = 0.0


def measure(ctx: Context, target: Target, w: Workload, label: str) -> dict:
    """Run the load generator against a started target; join its view with the upstream's."""
    out = ctx.workdir / f"client-{label}-{target.system}.json"
    cmd = [
        PY,
        "-m",
        "bench.client",
        "--mode",
        target.mode,
        "--url",
        target.url,
        "--system",
        target.system,
        "--sessions",
        str(w.sessions),
        "--spread",
        str(w.spread),
        "--runs",
        str(w.runs),
        "--duration",
        str(w.duration),
        "--tokens",
        str(w.tokens),
        "--pace",
        str(w.pace),
        "--a-ttft",
        str(w.a_ttft),
        "--out",
        str(out),
    ]
    if w.record_live:
        cmd.append("--record-live")
    if w.idle:
        cmd.append("--idle")
    if ctx.args.client_deflate and target.mode == "ws":
        cmd.append("--deflate")
    ctx.upstream.records()  # forget the warm-up of an earlier measurement
    client = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    client_ps = psutil.Process(client.pid)
    procs = {"server": target.ps, "upstream": ctx.upstream.ps, "client": client_ps}
    if target.system == "ours" and ctx.redis is not None:
        procs["redis"] = ctx.redis
    profiler = None
    result: dict = {"system": target.system, "workload": w.__dict__.copy()}
    with RSSSampler(target.ps) as rss:
        line = client.stdout.readline().strip()
        if line != "READY":
            client.kill()
            raise RuntimeError(f"client of {target.system} did not get ready: {line!r}")
        rss_before = rss.rss()
        rss.reset()
        cpu0 = {name: cpu_s(p) for name, p in procs.items()}
        everyone0 = all_cpu()
        machine0 = psutil.cpu_times()
        wall0 = time.monotonic()
        if ctx.args.profile and not w.idle:
            profiler = start_profiler(ctx, target, label)
        if w.idle:
            line = client.stdout.readline().strip()
            opened = int(line.split()[1]) if line.startswith("OPEN") else 0
            time.sleep(w.idle_hold_s)
            rss_open = rss.rss()
            client.stdin.write("close\n")
            client.stdin.flush()
            result["idle"] = {
                "opened": opened,
                "rss_before": rss_before,
                "rss_open": rss_open,
                "rss_per_conn": (rss_open - rss_before) / opened if opened else None,
            }
        line = client.stdout.readline().strip()
        wall1 = time.monotonic()
        cpu1 = {name: cpu_s(p) for name, p in procs.items()}
        machine1 = psutil.cpu_times()
        everyone1 = all_cpu()
        if line != "DONE":
            client.kill()
            raise RuntimeError(f"client of {target.system} failed: {line!r}")
        peak = rss.peak
    if profiler is not None:
        result["profile"] = stop_profiler(profiler)
    client.wait(60)
    data = json.loads(out.read_text())
    out.unlink()
    wall = wall1 - wall0
    busy0 = machine0.user + machine0.system + machine0.nice + machine0.irq + machine0.softirq
    busy1 = machine1.user + machine1.system + machine1.nice + machine1.irq + machine1.softirq
    result["cpu"] = {name: cpu1[name] - cpu0[name] for name in procs}
    result["cpu_util"] = {name: (cpu1[name] - cpu0[name]) / wall for name in procs}
    result["cpu_util"]["machine"] = (busy1 - busy0) / wall
    # Whatever else ran meanwhile (other people's tests on a shared machine): the noise.
    result["cpu_util"]["other"] = max(0.0, result["cpu_util"]["machine"] - sum(result["cpu"].values()) / wall)
    mine = [p for v in procs.values() for p in (v if isinstance(v, list) else [v])]
    ours = {p.pid for p in mine} | {os.getpid()}
    ours |= {c.pid for c in _children(psutil.Process())}  # py-spy too
    ours |= {c.pid for p in mine for c in _children(p)}
    result["noise_top"] = top_others(everyone0, everyone1, ours, wall)
    result["wall_s"] = wall
    result["rss"] = {"before": rss_before, "peak": peak}
    if w.idle:
        result["idle"].update(data["idle"])
        return result
    result["rss"]["per_conn"] = (peak - rss_before) / w.sessions
    result.update(analyse(data, ctx.upstream.records(), target.system, w))
    result["cpu_s_per_1k_tokens"] = (
        result["cpu"]["server"] / result["tokens_delivered"] * 1000 if result["tokens_delivered"] else None
    )
    bottleneck = [
        name for name in ("client", "upstream") if result["cpu_util"][name] >= ctx.args.bottleneck_util
    ]
    result["load_generator_bottleneck"] = bottleneck
    return result


def all_cpu() -> dict:
    """CPU seconds of every process on the machine, by pid (with its name)."""
    out = {}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        t = proc.info["cpu_times"]
        if t is not None:
            out[proc.pid] = (proc.info["name"], t.user + t.system)
    return out


def top_others(before: dict, after: dict, ours: set, wall: float, top: int = 4) -> list:
    """The processes not under test that used the most CPU meanwhile (cores)."""
    deltas = Counter()
    for pid, (name, cpu) in after.items():
        if pid in ours or pid not in before:
            continue
        deltas[f"{name}[{pid}]"] += cpu - before[pid][1]
    return [(name, round(d / wall, 2)) for name, d in deltas.most_common(top) if d / wall >= 0.01]


def machine_busy(interval: float) -> float:
    """Cores busy on the whole machine over the next `interval` seconds."""
    t0 = psutil.cpu_times()
    time.sleep(interval)
    t1 = psutil.cpu_times()
    busy = sum(getattr(t1, f) - getattr(t0, f) for f in ("user", "system", "nice", "irq", "softirq"))
    return busy / interval


def wait_for_quiet(ctx: Context) -> float:
    """Wait (at most --quiet-wait s) until the machine is nearly idle; return the last reading."""
    deadline = time.monotonic() + ctx.args.quiet_wait
    while True:
        busy = machine_busy(0.5)
        if busy <= ctx.args.noise_limit or time.monotonic() >= deadline:
            return busy


def measure_quietly(ctx: Context, target: Target, w: Workload, label: str) -> dict:
    """measure(), repeated while something else took more than --noise-limit cores; the quietest."""
    attempts = []
    best = None
    for _ in range(1 + ctx.args.retries):
        busy_before = wait_for_quiet(ctx)
        result = measure(ctx, target, w, label)
        noise = result["cpu_util"]["other"]
        attempts.append({"busy_before": busy_before, "other_cpu": noise})
        if noise <= ctx.args.noise_limit:
            break
        top = ", ".join(f"{n} {c}" for n, c in result["noise_top"])
        log(f"[{label}] {target.system}: {noise:.2f} cores taken by others ({top}); measuring again")
        if best is None or noise < best["cpu_util"]["other"]:
            best = result
    else:
        result = best
    result["attempts"] = attempts
    return result


def analyse(data: dict, records: dict, system: str, w: Workload) -> dict:
    """The figures of one measurement, from the client's runs and the upstream's send times."""
    fto, gaps, latency, ratio, flush = [], [], [], [], []
    fto_when = []
    lost = corrupt = seq_errors = failed_runs = tokens = 0
    errors: Counter = Counter()
    flush_skipped = 0
    gap_s = 1.0 / w.pace if w.pace else 0.0
    for run in data["runs"]:
        rec = {k: records.get(f"{system}:{run['session']}:{run['run']}:{k}") for k in TASKS}
        tasks = run["tasks"]
        for t in tasks.values():
            tokens += t["tokens"]
            lost += t["lost"]
            corrupt += bool(t["corrupt"])
        seq_errors += run["seq_errors"]
        if run["error"] or run["end"] != "run.completed":
            failed_runs += 1
            errors[(run["error"] or run["end"] or "?")[:80]] += 1
            continue
        a, ra = tasks["task_a"], rec["task_a"]
        if ra and ra["first_token_at"] and a["first"]:
            fto.append((a["first"] - ra["first_token_at"]) * 1000)
            fto_when.append((run["t_send"], fto[-1]))
        if all(r and r["finished_at"] for r in rec.values()):
            slowest = max(r["finished_at"] - r["received_at"] for r in rec.values())
            ratio.append((run["t_end"] - run["t_send"]) / slowest)
        if gap_s and ra and ra["first_token_at"]:
            live = run["live"]
            for (t0, _), (t1, _) in itertools.pairwise(live):
                gaps.append((t1 - t0 - gap_s) * 1000)
            for t, chars in live:
                k = chars // 5 - 1
                latency.append((t - (ra["first_token_at"] + k * gap_s)) * 1000)
            a_last_sent = ra["first_token_at"] + (w.tokens - 1) * gap_s
            if all(rec[k] and rec[k]["finished_at"] <= a_last_sent for k in TASKS[1:]):
                flush.append((tasks["task_d"]["last"] - a["last"]) * 1000)
            else:
                flush_skipped += 1
    elapsed = data["t_done"] - data["t_start"]
    return {
        "runs": len(data["runs"]),
        "failed_runs": failed_runs,
        "errors": dict(errors),
        "first_token_overhead_ms": dist(fto),
        # Each run's overhead in the order the runs started (ramp effects show here).
        "first_token_overhead_by_start_ms": [round(v, 1) for _, v in sorted(fto_when)][:2000],
        "live_gap_excess_ms": dist(gaps),
        "live_token_latency_ms": dist(latency),
        "completion_ratio": dist(ratio),
        "flush_ms": {**dist(flush), "skipped": flush_skipped},
        "tokens_delivered": tokens,
        "tokens_lost": lost,
        "corrupt_tasks": corrupt,
        "seq_errors": seq_errors,
        "elapsed_s": elapsed,
        "tokens_per_s": tokens / elapsed if elapsed > 0 else None,
    }


# --- profiling -------------------------------------------------------------------------------


def start_profiler(ctx: Context, target: Target, label: str):
    """py-spy on the server process while the load runs (raw collapsed stacks)."""
    exe = shutil.which("py-spy") or str(Path(PY).with_name("py-spy"))
    path = ctx.results_dir / f"profile-{label}-{target.system}.txt"
    proc = subprocess.Popen(
        [exe, "record", "-p", str(target.pid), "-f", "raw", "-o", str(path), "-r", "200", "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return proc, path


def stop_profiler(profiler) -> dict:
    """Stop py-spy and summarise its stacks: where the server's samples were (self and total)."""
    proc, path = profiler
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not path.exists():
        return {"error": "py-spy wrote nothing"}
    return summarise_profile(path)


# Where a sample's own time goes: the innermost frame from a known package decides.
SUBSYSTEMS = (
    ("channels_redis/", "channels_redis"),
    ("redis/", "redis-py"),
    ("autobahn/", "autobahn (WebSocket framing)"),
    ("twisted/", "twisted (daphne's I/O)"),
    ("daphne/", "daphne"),
    ("channels/", "channels"),
    ("django/", "django (ORM, sessions)"),
    ("aiohttp/", "aiohttp (upstream HTTP)"),
    ("httpx2/", "httpx2 (SDK transport layer)"),
    ("httpx/", "httpx (SDK transport)"),
    ("openai/", "openai SDK"),
    ("pydantic/", "pydantic (SDK objects)"),
    ("pydantic_core/", "pydantic (SDK objects)"),
    ("anyio/", "anyio"),
    ("sse_starlette/", "sse-starlette"),
    ("starlette/", "starlette/fastapi"),
    ("fastapi/", "starlette/fastapi"),
    ("uvicorn/", "uvicorn"),
    ("websockets/", "websockets (WebSocket framing)"),
    ("streams/", "app (streams/)"),
    ("bench/", "reference app (bench/)"),
    ("json/", "json"),
    ("concurrent/", "thread pool"),
    ("asgiref/", "asgiref"),
    # Last, so that redis/asyncio/ stays redis-py. Without it the loop's own work (transports,
    # callbacks, timers) went to the nearest caller: under daphne, Twisted's reactor.
    ("asyncio/", "asyncio (loop, transports, timers)"),
)


def subsystem(frames: list[str]) -> str:
    """The package that owns a sample's innermost known frame."""
    leaf = frames[-1]
    if "select (selectors.py" in leaf or leaf.startswith(("poll ", "select ")):
        return "idle (waiting in epoll)"
    if leaf.startswith(("Runner.run ", "BaseEventLoop.run_forever ", "BaseEventLoop.run_until_complete ")):
        return "event loop in native code (uvloop) or idle"
    # Run records (the recorder on the hot path, the writer's thread and its database calls)
    # count as one, inclusive: issue 14's budget is for all of it.
    if any("/streams/records/" in "/" + frame.partition(" (")[2] for frame in frames):
        return "records (streams/records/, inclusive)"
    for frame in reversed(frames):
        where = "/" + frame.partition(" (")[2]
        for pattern, name in SUBSYSTEMS:
            if "/" + pattern in where:
                return name
    return "other stdlib"


def summarise_profile(path: Path, top: int = 15) -> dict:
    """Samples by subsystem, and the top functions by self and inclusive samples.

    py-spy --nonblocking sometimes reads a partial stack; such samples still count for
    their innermost frames, which is what the subsystem split uses.
    """
    self_c: Counter = Counter()
    total_c: Counter = Counter()
    parts: Counter = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        samples += n
        parts[subsystem(frames)] += n
        self_c[_short(frames[-1])] += n
        for f in set(map(_short, frames)):
            total_c[f] += n
    share = (lambda n: round(n / samples, 3)) if samples else (lambda n: None)
    return {
        "file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "samples": samples,
        "by_subsystem": [(name, share(n)) for name, n in parts.most_common()],
        "top_self": [(f, share(n)) for f, n in self_c.most_common(top)],
        "top_total": [(f, share(n)) for f, n in total_c.most_common(top)],
    }


def _short(frame: str) -> str:
    """`func (path/to/module.py:LINE)` -> `func (module.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    tail = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{name} ({tail})"


# --- scenarios -------------------------------------------------------------------------------


def scenario_workloads(args) -> dict:
    """Each scenario's workload (the quick ones are for the smoke test)."""
    q = args.quick
    pace = args.pace
    return {
        "moderate": Workload(
            sessions=args.sessions or (3 if q else 20),
            tokens=args.tokens or (20 if q else 200),
            pace=pace,
            spread=0.5 if q else 2.0,
            a_ttft=0.1 if q else 0.25,
        ),
        "saturation": Workload(
            sessions=args.sessions or (3 if q else 20),
            tokens=args.tokens or (20 if q else 200),
            pace=0.0,
            spread=0.2 if q else 0.5,
            duration=1.0 if q else args.saturation_s,
            a_ttft=0.0,
            record_live=False,
        ),
        "idle": Workload(
            sessions=args.idle_connections or (20 if q else 1000),
            tokens=0,
            pace=0,
            spread=0,
            idle=True,
            idle_hold_s=0.5 if q else 6.0,
            record_live=False,
        ),
    }


def with_target(ctx: Context, system: str, fn):
    """Start the system's server, call fn(target), stop it whatever happens."""
    target = Target(system, ctx).start()
    try:
        return fn(target)
    finally:
        target.stop()


def run_scenario(ctx: Context, name: str, w: Workload) -> dict:
    """The same workload against every system, one after the other."""
    out = {"workload": w.__dict__.copy(), "systems": {}}
    for system in ctx.args.systems:
        log(f"[{name}] {system}: {w.sessions} sessions ...")
        try:
            result = with_target(ctx, system, lambda t, w=w, name=name: measure_quietly(ctx, t, w, name))
        except Exception as exc:
            log(f"[{name}] {system} failed: {exc}")
            result = {"system": system, "error": repr(exc)}
        out["systems"][system] = result
        log(f"[{name}] {system}: {one_line(result)}")
    return out


class TraceSink:
    """tests.support.otlp_receiver in its own process: the OTLP/HTTP endpoint of the traced rounds."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.log = workdir / "otlp-sink.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [PY, "-m", "tests.support.otlp_receiver", "--port", str(self.port)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, 30)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self) -> int | None:
        """Stop it; the number of spans it received."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        found = re.findall(r"(\d+) spans in", self.log.read_text())
        return int(found[-1]) if found else None


def run_tracing(ctx: Context, w: Workload) -> dict:
    """Ours with tracing off and on (OTLP to a local sink), alternating, --rounds times."""
    sink = TraceSink(ctx.workdir)
    rounds = []
    saved = ctx.app_env
    try:
        for r in range(ctx.args.rounds):
            pair = {}
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                # Off: no endpoint, whatever the environment of the benchmark says.
                endpoint = sink.endpoint if mode == "on" else ""
                ctx.app_env = {**saved, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
                log(f"[tracing] round {r + 1}, tracing {mode}: {w.sessions} sessions ...")
                try:
                    result = with_target(ctx, "ours", lambda t, mode=mode: measure_quietly(ctx, t, w, mode))
                finally:
                    ctx.app_env = saved
                log(f"[tracing] round {r + 1}, tracing {mode}: {one_line(result)}")
                pair[mode] = result
            rounds.append(pair)
    finally:
        spans = sink.stop()
    out: dict = {"workload": w.__dict__.copy(), "rounds": rounds, "spans_received": spans}
    for mode in ("off", "on"):
        out[mode] = {
            label: median([get(getter, p[mode]) for p in rounds])
            for label, getter, _, _ in FIGURES
            if label in TRACING_FIGURES
        }
    cpu = fig(TRACING_FIGURES[0])
    out["ratio"] = ratio(out["on"][TRACING_FIGURES[0]], out["off"][TRACING_FIGURES[0]])
    # The machine's speed drifts between rounds: the ratio within each round compares better.
    out["paired_ratio"] = median([ratio(get(cpu, p["on"]), get(cpu, p["off"])) for p in rounds])
    return out


TRACING_FIGURES = (
    "server CPU s / 1k tokens",
    "server CPU (cores)",
    "first-token overhead p99 (ms)",
    "completion ratio p99",
    "tokens lost",
    "other processes' CPU (noise)",
)


def median(values: list) -> float | None:
    """The median of the values that were measured."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def tracing_text(scn: dict) -> str:
    lines = [f"== tracing: ours, off vs on (OTLP/HTTP to a local sink), {describe(scn['workload'])}"]
    per_round = [
        f"{get(fig(TRACING_FIGURES[0]), p['off']) or 0:.4f}/{get(fig(TRACING_FIGURES[0]), p['on']) or 0:.4f}"
        for p in scn["rounds"]
    ]
    lines.append("server CPU s / 1k tokens per round (off/on): " + ", ".join(per_round))
    lines.append(f"{'median':32} {'off':>10} {'on':>10}")
    for label in TRACING_FIGURES:
        lines.append(f"{label:32} {fmt(scn['off'][label], 4):>10} {fmt(scn['on'][label], 4):>10}")
    lines.append(
        f"on/off server CPU per 1k tokens: medians {fmt(scn['ratio'], 3)}, median of the rounds' "
        f"ratios {fmt(scn.get('paired_ratio'), 3)}; spans received {scn['spans_received']}"
    )
    return "\n".join(lines)


def capacity_trial(ctx: Context, system: str, base: Workload, n: int) -> dict:
    """One short trial of `system` at `n` sessions: its p99 first-token overhead and losses."""
    w = Workload(**{**base.__dict__, "sessions": n})
    log(f"[capacity] {system}: {n} sessions ...")
    try:
        r = with_target(ctx, system, lambda t: measure_quietly(ctx, t, w, f"capacity{n}"))
    except Exception as exc:
        r = {"error": repr(exc)}
    p99 = (r.get("first_token_overhead_ms") or {}).get("p99")
    trial = {
        "sessions": n,
        "fto_p99_ms": p99,
        "lost": "error" in r or r["tokens_lost"] != 0 or r["failed_runs"] != 0,
        "tokens_lost": r.get("tokens_lost"),
        "failed_runs": r.get("failed_runs"),
        "cpu_util": r.get("cpu_util"),
        "attempts": r.get("attempts"),
        "load_generator_bottleneck": r.get("load_generator_bottleneck"),
        "rss_per_conn": (r.get("rss") or {}).get("per_conn"),
        "error": r.get("error"),
    }
    log(f"[capacity] {system}: {n} sessions -> p99 {fmt(p99)} ms, lost {r.get('tokens_lost')}")
    return trial


def run_capacity(ctx: Context, base: Workload) -> dict:
    """Largest session count whose median p99 first-token overhead over repeated trials is <= the
    limit with nothing lost in any trial, per system; the systems' trials alternate, so every
    ratio comes from the same stretch of machine noise."""
    limit = ctx.args.capacity_limit_ms
    k = ctx.args.capacity_trials
    out = {"limit_ms": limit, "trials_per_count": k, "workload": base.__dict__.copy(), "systems": {}}
    state = {s: {"capacity": 0, "first_failure": None, "counts": [], "trials": []} for s in ctx.args.systems}

    def judge(ns: dict[str, int]) -> None:
        """K trials of each system at its count, alternating (ABAB, then BABA: no system always first)."""
        runs: dict[str, list[dict]] = {s: [] for s in ns}
        for i in range(k):
            for system in ns if i % 2 == 0 else reversed(ns):
                runs[system].append(capacity_trial(ctx, system, base, ns[system]))
        for system, trials in runs.items():
            p99s = sorted(t["fto_p99_ms"] if t["fto_p99_ms"] is not None else math.inf for t in trials)
            med = statistics.median(p99s)
            good = med <= limit and not any(t["lost"] for t in trials)
            st, n = state[system], ns[system]
            finite = [v for v in p99s if v != math.inf]
            st["counts"].append(
                {
                    "sessions": n,
                    "ok": good,
                    "p99_median_ms": med if med != math.inf else None,
                    "p99_min_ms": finite[0] if finite else None,
                    "p99_max_ms": finite[-1] if finite else None,
                }
            )
            st["trials"] += trials
            if good:
                st["capacity"] = max(st["capacity"], n)
            else:
                st["first_failure"] = n if st["first_failure"] is None else min(st["first_failure"], n)
            log(f"[capacity] {system}: {n} sessions -> median p99 {fmt(med)} ms over {k}: {good}")

    # Grow every system in step until it fails, then bisect each, round by round.
    n = ctx.args.capacity_start
    growing = list(ctx.args.systems)
    while growing and n <= ctx.args.capacity_max:
        judge({s: n for s in growing})
        growing = [s for s in growing if state[s]["first_failure"] is None]
        n = max(n + 1, int(n * ctx.args.capacity_growth))

    def mid(system: str) -> int | None:
        st = state[system]
        good, bad = st["capacity"], st["first_failure"]
        resolution = max(1, int(good * ctx.args.capacity_resolution)) if good else 1
        return (good + bad) // 2 if bad is not None and bad - good > resolution else None

    while todo := {s: m for s in ctx.args.systems if (m := mid(s)) is not None}:
        judge(todo)
    for system, st in state.items():
        out["systems"][system] = st
    return out


# --- report ----------------------------------------------------------------------------------


def fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return str(v)


def one_line(r: dict) -> str:
    if "error" in r:
        return "ERROR " + r["error"]
    if "idle" in r:
        return f"rss/idle conn {fmt(r['idle']['rss_per_conn'] / 1024)} KiB"
    return (
        f"fto p99 {fmt(r['first_token_overhead_ms']['p99'])} ms, ratio p99 "
        f"{fmt(r['completion_ratio']['p99'], 3)}, flush p99 {fmt(r['flush_ms']['p99'])} ms, "
        f"{fmt(r['tokens_per_s'])} tok/s, lost {r['tokens_lost']}, cpu {fmt(r['cpu_util']['server'], 2)}"
    )


# (figure, getter, lower is better, digits)
FIGURES = [
    ("first-token overhead p50 (ms)", lambda r: r["first_token_overhead_ms"]["p50"], True, 1),
    ("first-token overhead p99 (ms)", lambda r: r["first_token_overhead_ms"]["p99"], True, 1),
    ("live gap minus pace p99 (ms)", lambda r: r["live_gap_excess_ms"]["p99"], True, 1),
    ("live token latency p99 (ms)", lambda r: r["live_token_latency_ms"]["p99"], True, 1),
    ("completion ratio p50", lambda r: r["completion_ratio"]["p50"], True, 3),
    ("completion ratio p99", lambda r: r["completion_ratio"]["p99"], True, 3),
    ("flush p50 (ms)", lambda r: r["flush_ms"]["p50"], True, 1),
    ("flush p99 (ms)", lambda r: r["flush_ms"]["p99"], True, 1),
    ("delivered tokens/s", lambda r: r["tokens_per_s"], False, 0),
    ("server CPU s / 1k tokens", lambda r: r["cpu_s_per_1k_tokens"], True, 4),
    ("server CPU (cores)", lambda r: r["cpu_util"]["server"], True, 2),
    ("redis CPU (cores)", lambda r: r["cpu_util"].get("redis"), True, 2),
    ("upstream CPU (cores)", lambda r: r["cpu_util"]["upstream"], True, 2),
    ("client CPU (cores)", lambda r: r["cpu_util"]["client"], True, 2),
    ("machine CPU (cores of 2)", lambda r: r["cpu_util"]["machine"], True, 2),
    ("other processes' CPU (noise)", lambda r: r["cpu_util"]["other"], True, 2),
    ("peak RSS (MiB)", lambda r: r["rss"]["peak"] / 2**20, True, 1),
    ("RSS per open connection (KiB)", lambda r: r["rss"]["per_conn"] / 1024, True, 1),
    ("tokens lost", lambda r: r["tokens_lost"], True, 0),
    ("failed runs", lambda r: r["failed_runs"], True, 0),
]
IDLE_FIGURES = [
    ("idle connections open", lambda r: r["idle"]["opened"], False, 0),
    ("still open after hold", lambda r: r["idle"].get("alive_at_end"), False, 0),
    ("RSS per idle connection (KiB)", lambda r: r["idle"]["rss_per_conn"] / 1024, True, 1),
    ("RSS before (MiB)", lambda r: r["idle"]["rss_before"] / 2**20, True, 1),
]


def fig(label: str):
    """The getter of a figure by its label."""
    return next(g for name, g, _, _ in FIGURES + IDLE_FIGURES if name == label)


def get(getter, r):
    if r is None or "error" in r:
        return None
    try:
        return getter(r)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(name: str, scenario: dict, systems: list[str]) -> tuple[str, dict]:
    """A text table of one scenario plus the ratios ours/ref and ours/ref-parse."""
    figures = IDLE_FIGURES if name == "idle" else FIGURES
    rs = scenario["systems"]
    cols = [*systems] + [f"ours/{s}" for s in systems if s != "ours" and "ours" in systems]
    lines = [f"== {name}: {describe(scenario['workload'])}"]
    header = f"{'figure':34}" + "".join(f"{c:>16}" for c in cols)
    lines += [header, "-" * len(header)]
    ratios: dict = {}
    for label, getter, _, digits in figures:
        values = {s: get(getter, rs.get(s)) for s in systems}
        if all(v is None for v in values.values()):
            continue
        row = f"{label:34}" + "".join(f"{fmt(values[s], digits):>16}" for s in systems)
        for s in systems:
            if s != "ours" and "ours" in systems:
                q = ratio(values["ours"], values[s])
                ratios.setdefault(f"ours/{s}", {})[label] = q
                row += f"{fmt(q, 2) + 'x':>16}" if q is not None else f"{'-':>16}"
        lines.append(row)
    for s in systems:
        r = rs.get(s) or {}
        if r.get("load_generator_bottleneck"):
            lines.append(
                f"! {s}: load generator near saturation: {', '.join(r['load_generator_bottleneck'])}"
            )
        if r.get("errors"):
            lines.append(f"! {s}: run errors {r['errors']}")
        if "error" in r:
            lines.append(f"! {s}: {r['error']}")
    return "\n".join(lines), ratios


def describe(w: dict) -> str:
    if w.get("idle"):
        return f"{w['sessions']} idle connections held {w['idle_hold_s']:g} s"
    pace = f"{w['pace']:g} tok/s" if w["pace"] else "no delay"
    how = f"for {w['duration']:g} s back to back" if w["duration"] else f"{w['runs']} run each"
    return (
        f"{w['sessions']} sessions, 4 tasks x {w['tokens']} tokens at {pace}, "
        f"started over {w['spread']:g} s, {how}"
    )


def targets(results: dict) -> list[dict]:
    """The issue's targets, met or missed, with the measured value."""
    out = []

    def add(name, value, ok_fn, want):
        out.append(
            {"target": name, "want": want, "value": value, "met": None if value is None else ok_fn(value)}
        )

    def ours(scn, getter):
        return get(getter, ((results.get(scn) or {}).get("systems") or {}).get("ours"))

    def sys_(scn, system, getter):
        return get(getter, ((results.get(scn) or {}).get("systems") or {}).get(system))

    if "moderate" in results:
        add(
            "moderate: first-token overhead p99",
            ours("moderate", fig("first-token overhead p99 (ms)")),
            lambda v: v <= 20,
            "<= 20 ms",
        )
        add(
            "moderate: completion ratio p99",
            ours("moderate", fig("completion ratio p99")),
            lambda v: v <= 1.05,
            "<= 1.05",
        )
        add("moderate: flush p99", ours("moderate", fig("flush p99 (ms)")), lambda v: v <= 20, "<= 20 ms")
        add("moderate: tokens lost", ours("moderate", fig("tokens lost")), lambda v: v == 0, "0")
    if "tracing" in results:
        add(
            "tracing: server CPU/1k tokens on/off",
            results["tracing"]["ratio"],
            lambda v: v <= 1.05,
            "<= 1.05 (medians)",
        )
    if "capacity" in results:
        caps = results["capacity"]["systems"]
        c_ours = (caps.get("ours") or {}).get("capacity")
        c_ref = (caps.get("ref") or {}).get("capacity")
        add(
            "capacity: sessions held vs ref",
            ratio(c_ours, c_ref) if c_ref else None,
            lambda v: v >= 2,
            f">= 2x (ours {c_ours}, ref {c_ref})",
        )
    if "saturation" in results:
        tps = fig("delivered tokens/s")
        o, r, p = (sys_("saturation", s, tps) for s in SYSTEMS)
        add("saturation: tokens/s vs ref", ratio(o, r), lambda v: v >= 3, ">= 3x")
        add("saturation: tokens/s vs ref-parse", ratio(o, p), lambda v: v >= 1.5, ">= 1.5x")
        add("saturation: tokens lost", ours("saturation", fig("tokens lost")), lambda v: v == 0, "0")
    if "idle" in results:
        add(
            "idle: RSS per open connection",
            ours("idle", fig("RSS per idle connection (KiB)")),
            lambda v: v <= 100,
            "<= 100 KiB",
        )
    return out


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


# --- main ------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Streaming benchmark: ours vs the original design.")
    p.add_argument(
        "--scenario", default="all", choices=("moderate", "capacity", "saturation", "idle", "tracing", "all")
    )
    p.add_argument("--rounds", type=int, default=3, help="tracing: off/on pairs, alternating order")
    p.add_argument("--quick", action="store_true", help="tiny numbers: a smoke run in well under a minute")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated: ours,ref,ref-parse")
    p.add_argument("--sessions", type=int, default=0, help="sessions for moderate/saturation")
    p.add_argument("--tokens", type=int, default=0, help="tokens per task (default 200; quick 20)")
    p.add_argument("--pace", type=float, default=30.0, help="tokens/s of the paced scenarios")
    p.add_argument("--saturation-s", type=float, default=10.0, help="seconds of back-to-back runs")
    p.add_argument("--idle-connections", type=int, default=0)
    p.add_argument("--capacity-limit-ms", type=float, default=100.0)
    p.add_argument("--capacity-start", type=int, default=0)
    p.add_argument("--capacity-max", type=int, default=0)
    p.add_argument("--capacity-growth", type=float, default=1.5)
    p.add_argument("--capacity-resolution", type=float, default=0.1, help="bisect until within this share")
    p.add_argument("--capacity-trials", type=int, default=0, help="trials per session count (median; 3)")
    p.add_argument("--bottleneck-util", type=float, default=0.85, help="cores at which a helper is flagged")
    p.add_argument("--noise-limit", type=float, default=0.3, help="cores other processes may take")
    p.add_argument("--quiet-wait", type=float, default=30.0, help="seconds to wait for a quiet machine")
    p.add_argument("--retries", type=int, default=2, help="re-measure this often when it was noisy")
    p.add_argument("--profile", action="store_true", help="py-spy the server process of each measurement")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="ours: this many instances (sessions spread over them); ref: uvicorn --workers",
    )
    p.add_argument("--app-env", action="append", default=[], help="KEY=VALUE for the app (experiments)")
    p.add_argument("--app-root", default=str(ROOT), help="run the app from this tree (experiments)")
    p.add_argument("--ours-loop", choices=("asyncio", "uvloop"), default="asyncio", help="daphne's loop")
    p.add_argument(
        "--ours-server",
        choices=("daphne", "uvicorn"),
        default="uvicorn",
        help="the app's server: uvicorn through `python -m streams.serve` (production), or daphne",
    )
    p.add_argument(
        "--ours-serve-args",
        default="",
        help="more arguments for streams.serve, e.g. '--ws wsproto' or '--ws-deflate'",
    )
    p.add_argument(
        "--client-deflate", action="store_true", help="WebSocket clients offer per-message deflate"
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("--merge", action="store_true", help="replace only the scenarios run now in --out")
    args = p.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}")
    if not args.capacity_start:
        args.capacity_start = 2 if args.quick else 20
    if not args.capacity_trials:
        args.capacity_trials = 1 if args.quick else 3
    if not args.capacity_max:
        args.capacity_max = 3 if args.quick else 400
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    results_dir = Path(args.out).resolve().parent
    results_dir.mkdir(parents=True, exist_ok=True)
    env = dict(kv.split("=", 1) for kv in args.app_env)
    log(f"workdir {workdir}")
    database_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    setup_env = app_env(database_url, REDIS_URL)
    manage(setup_env, "migrate", "--noinput")
    manage(setup_env, "import_pipelines", "-", stdin=json.dumps(pipeline_file()))
    upstream = Upstream(workdir)
    ctx = Context(workdir, upstream, database_url, args, env, redis_process(), results_dir)
    started = datetime.datetime.now(datetime.UTC)
    results: dict = {}
    try:
        loads = scenario_workloads(args)
        names = ["moderate", "capacity", "saturation", "idle"] if args.scenario == "all" else [args.scenario]
        for name in names:
            if name == "tracing":
                results[name] = run_tracing(ctx, loads["moderate"])
            elif name == "capacity":
                base = loads["moderate"]
                base = Workload(**{**base.__dict__, "sessions": args.capacity_start})
                results[name] = run_capacity(ctx, base)
            else:
                results[name] = run_scenario(ctx, name, loads[name])
    finally:
        upstream.stop()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    report: dict = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "app_env": env,
        "app_root": args.app_root,
        "app_commit": app_commit(args.app_root),
        "ours_loop": args.ours_loop,
        "ours_server": args.ours_server,
        "ours_serve_args": args.ours_serve_args,
        "processes": args.processes,
        "systems": {s: SYSTEM_LABELS[s] for s in args.systems},
        "scenarios": results,
    }
    if args.merge:
        # Re-measured scenarios replace theirs in an earlier report (after a noisy one).
        earlier = json.loads(Path(args.out).read_text())
        if earlier.get("app_commit") != report["app_commit"]:
            raise SystemExit(f"--merge: {args.out} measured {earlier.get('app_commit')}, not this app")
        merged = {**earlier["scenarios"], **results}
        results = {
            name: merged[name]
            for name in ("moderate", "capacity", "saturation", "idle", "tracing")
            if name in merged
        }
        report["scenarios"] = results
        report["remeasured"] = {**earlier.get("remeasured", {}), **{n: report["date"] for n in names}}
        report["date"] = earlier["date"]
        report["command"] = earlier["command"] + " ; " + report["command"]
    texts = []
    for name, scenario in results.items():
        if name == "capacity":
            texts.append(capacity_text(scenario))
            continue
        if name == "tracing":
            texts.append(tracing_text(scenario))
            continue
        text, ratios = table(name, scenario, args.systems)
        scenario["ratios"] = ratios
        texts.append(text)
    report["targets"] = targets(results)
    texts.append(targets_text(report["targets"]))
    report["table"] = "\n\n".join(texts)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(report["table"])
    print(f"\nJSON: {args.out}")
    return report


def capacity_text(scn: dict) -> str:
    w = scn["workload"]
    lines = [
        f"== capacity: sessions held with p99 first-token overhead <= {scn['limit_ms']:g} ms and 0 lost "
        f"(4 tasks x {w['tokens']} tokens at {w['pace']:g} tok/s, started over {w['spread']:g} s), "
        f"median of {scn['trials_per_count']} alternating trials per count"
    ]
    caps = {s: r["capacity"] for s, r in scn["systems"].items()}
    for s, r in scn["systems"].items():
        counts = ", ".join(
            f"{c['sessions']}:{fmt(c['p99_median_ms'])}ms[{fmt(c['p99_min_ms'])}-{fmt(c['p99_max_ms'])}]"
            f"{'' if c['ok'] else '(x)'}"
            for c in r["counts"]
        )
        lines.append(f"{s:10} {r['capacity']:>5} sessions   median p99 [min-max] per count: {counts}")
    if caps.get("ours") is not None:
        for s in caps:
            if s != "ours" and caps[s]:
                lines.append(f"ours/{s}: {caps['ours'] / caps[s]:.2f}x")
    return "\n".join(lines)


def targets_text(items: list[dict]) -> str:
    lines = ["== targets"]
    for t in items:
        mark = {True: "MET   ", False: "MISSED", None: "n/a   "}[t["met"]]
        lines.append(f"{mark} {t['target']:40} {fmt(t['value'], 3):>10}  (want {t['want']})")
    return "\n".join(lines)


def app_commit(root: str) -> str:
    """The commit the app under test came from (a snapshot names it in BENCH_APP_COMMIT)."""
    if os.environ.get("BENCH_APP_COMMIT"):
        return os.environ["BENCH_APP_COMMIT"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "streams", "orchestrator_site"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return sha + (" (app files modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    return {
        "cpus": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_end": os.getloadavg(),
    }


if __name__ == "__main__":
    main()
