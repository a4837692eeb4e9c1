"""The benchmark runs end to end in --quick mode and reports every figure, with nothing lost.

The figures themselves are not checked against the targets: this machine is noisy and the
quick workload is tiny. `python -m bench.run` measures them (bench/README.md).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.redis, pytest.mark.timeout(260)]

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("ours", "ref", "ref-parse")
BENCH_QUICK = (
    sys.executable,
    "-m",
    "bench.run",
    "--scenario",
    "all",
    "--quick",
    "--retries",
    "0",
    "--quiet-wait",
    "0",
)
# Figures every paced measurement reports (dotted paths into a system's result).
PACED = (
    "first_token_overhead_ms.p50",
    "first_token_overhead_ms.p99",
    "live_gap_excess_ms.p99",
    "live_token_latency_ms.p99",
    "completion_ratio.p50",
    "completion_ratio.p99",
    "flush_ms.p50",
    "flush_ms.p99",
    "tokens_per_s",
    "cpu_s_per_1k_tokens",
    "cpu_util.server",
    "cpu_util.upstream",
    "cpu_util.client",
    "rss.peak",
    "rss.per_conn",
    "tokens_lost",
)
SATURATED = ("tokens_per_s", "cpu_s_per_1k_tokens", "cpu_util.server", "cpu_util.client", "rss.peak")


def dig(data: dict, path: str):
    """data["a"]["b"] for "a.b"."""
    for part in path.split("."):
        data = data[part]
    return data


def assert_clean(result: dict) -> None:
    """A measurement that ran, lost nothing and kept the protocol's order."""
    assert "error" not in result, result.get("error")
    assert result["failed_runs"] == 0, result["errors"]
    assert result["tokens_lost"] == 0
    assert result["corrupt_tasks"] == 0
    assert result["seq_errors"] == 0
    assert result["tokens_delivered"] > 0


def test_when_the_quick_bench_runs_then_every_figure_is_reported_and_nothing_is_lost(redis_url, tmp_path):
    out = tmp_path / "latest.json"
    env = {**os.environ, "BENCH_REDIS_URL": redis_url}
    done = subprocess.run(
        # No waiting for a quiet machine and no re-measuring: figures are not judged here,
        # and under a busy CI those waits alone would take minutes.
        [*BENCH_QUICK, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    scenarios = report["scenarios"]

    for system in SYSTEMS:
        moderate = scenarios["moderate"]["systems"][system]
        assert_clean(moderate)
        for figure in PACED:
            assert dig(moderate, figure) is not None, (system, figure)
        saturation = scenarios["saturation"]["systems"][system]
        assert_clean(saturation)
        for figure in SATURATED:
            assert dig(saturation, figure) is not None, (system, figure)
        idle = scenarios["idle"]["systems"][system]["idle"]
        assert idle["opened"] == scenarios["idle"]["workload"]["sessions"]
        assert idle["rss_per_conn"] is not None
        assert scenarios["capacity"]["systems"][system]["capacity"] >= 0
    assert scenarios["moderate"]["systems"]["ours"]["cpu_util"]["redis"] is not None

    for name in ("moderate", "saturation", "idle"):
        assert set(scenarios[name]["ratios"]) == {"ours/ref", "ours/ref-parse"}
    assert all(t["value"] is not None for t in report["targets"]), report["targets"]
    assert "first-token overhead p99" in report["table"]
