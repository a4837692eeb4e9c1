"""llama.cpp's own llama-server with SmolLM2-135M-Instruct and 4 slots, started on a free port."""

import json
import logging
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.live import ROOT, free_port, stop_process

logger = logging.getLogger(__name__)

MODEL_ALIAS = "smollm2-135m-instruct"
# As scripts/run --local-model, and the `local` provider's max_concurrency.
SLOTS = 4
# The context is shared out among the slots: 2048 tokens each holds any test or demo prompt.
CTX_SIZE = 2048 * SLOTS
# Loading 135M parameters takes about a second; a cold page cache or a busy machine, more.
READY_TIMEOUT_S = 120.0


def server_command(binary: str, gguf: str, port: int) -> list[str]:
    """The server command line; scripts/run --local-model passes the same options."""
    return [
        binary,
        "--model",
        gguf,
        "--alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--parallel",
        str(SLOTS),
        "--ctx-size",
        str(CTX_SIZE),
        # One thread: the tests share 2 cores, where a second thread spins in OpenMP barriers.
        "--threads",
        "1",
        "--no-webui",
    ]


def server_env() -> dict[str, str]:
    """The environment minus llama.cpp's own variables (LLAMA_ARG_*, LLAMA_API_KEY), which set options."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_")}


@dataclass
class LlamaServer:
    """A running server: where it listens and where it logs."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def root_url(self) -> str:
        """Where /health, /props and /slots are."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root."""
        return f"{self.root_url}/v1"

    def get(self, path: str) -> dict | list:
        """GET one of the server's own JSON endpoints (/props, /slots)."""
        with urllib.request.urlopen(f"{self.root_url}{path}", timeout=5) as response:
            return json.load(response)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _healthy(root_url: str) -> bool:
    """Whether GET /health answers 200 (it answers 503 while the model loads)."""
    try:
        with urllib.request.urlopen(f"{root_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_llama_server(log_dir: Path) -> LlamaServer:
    """Start the server on a free port and wait until it is healthy; fail the test if it cannot."""
    binary, gguf = os.environ.get("LOCAL_LLAMA_SERVER"), os.environ.get("LOCAL_MODEL_GGUF")
    if not (binary and gguf and Path(binary).is_file() and Path(gguf).is_file()):
        pytest.fail("the local model is not installed: `. scripts/local_model.sh` first (scripts/test does)")
    port = free_port()
    log_path = log_dir / f"llama-server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(binary, gguf, port),
            cwd=ROOT,
            env=server_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LlamaServer(process, port, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _healthy(server.root_url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            pytest.fail(
                f"llama-server did not become ready (exit {process.returncode}):\n{server.log_tail()}"
            )
        time.sleep(0.1)
    logger.info("llama-server ready on port %d", port)
    return server


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """The server as scripts/run --local-model runs it."""
    server = start_llama_server(tmp_path_factory.mktemp("llama"))
    yield server
    stop_process(server.process)
