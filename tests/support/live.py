"""Real server processes (daphne, or uvicorn through streams.serve) for tests that need the app
over real sockets (browser, SSE, several instances, shutdown)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(server: str, port: int) -> list[str]:
    """The command line of the app under `server` ("daphne" or "uvicorn") on 127.0.0.1:port."""
    if server == "uvicorn":
        return [sys.executable, "-m", "streams.serve", "--host", "127.0.0.1", "--port", str(port)]
    return [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "orchestrator_site.asgi:application",
    ]


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the process has not exited after `timeout_s`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    """Block until something accepts connections on the port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


def app_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """Environment for a subprocess of the app."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "STREAMS_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="orchestrator_site.settings",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DJANGO_SECRET_KEY="test-secret-key-for-live-servers",
        PYTHONUNBUFFERED="1",
        # Every test client is 127.0.0.1, one owner for the quotas: caps that held across
        # tests (and across the servers sharing Redis) would make them refuse each other.
        # Counting still runs; tests of the caps pass their own.
        STREAMS_MAX_RUNS_PER_OWNER="100000",
        STREAMS_MAX_RUNS_PER_MINUTE="100000",
        STREAMS_MAX_CONNECTIONS_PER_OWNER="100000",
        # A stopping server drains its runs for at most this long (the default is 20 s).
        STREAMS_DRAIN_S="2",
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run a manage.py command in a subprocess; return its stdout (raise on failure)."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def prepare_database(tmp_dir: Path, redis_url: str, pipelines: dict | None = None) -> str:
    """A migrated SQLite database (with the demo pipeline) plus `pipelines` imported; its URL."""
    url = f"sqlite:///{tmp_dir / 'live.sqlite3'}"
    env = app_env(url, redis_url)
    manage(env, "migrate", "--noinput")
    if pipelines:
        manage(env, "import_pipelines", "-", stdin=json.dumps(pipelines))
    return url


class LiveServer:
    """One server process (the production one, "uvicorn": `python -m streams.serve`, or daphne)
    serving the app on 127.0.0.1; a context manager."""

    def __init__(
        self,
        env: dict[str, str],
        port: int | None = None,
        log_path: Path | None = None,
        server: str = "uvicorn",
    ):
        self.env = env
        self.server = server
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """ws://127.0.0.1:PORT/ws/streams/"""
        return f"ws://127.0.0.1:{self.port}/ws/streams/"

    def command(self) -> list[str]:
        """The server's command line."""
        return server_command(self.server, self.port)

    def start(self) -> "LiveServer":
        """Start the server and wait until it accepts connections."""
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def log_text(self) -> str:
        """What the server has logged so far (needs log_path)."""
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is not None:
            stop_process(self.proc)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
