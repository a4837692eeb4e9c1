"""Real Redis processes started by the tests: plain servers, and a master-replica pair under three
Sentinels. Each gets a free port on 127.0.0.1 and its own temp dir; the shared Redis is never touched.

Load the fixtures with `pytest_plugins = ["tests.support.redis_procs"]`."""

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.live import free_port, stop_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 10.0
# A failed Sentinel election is retried after 2 * failover-timeout (10 s), so allow for one retry.
FAILOVER_TIMEOUT_S = 30.0
SENTINEL_SETTINGS = (
    "down-after-milliseconds {name} 1000",
    "failover-timeout {name} 5000",
    "parallel-syncs {name} 1",
)
POLL_S = 0.02


class RedisProcess:
    """One redis-server (a Sentinel when given its config) on a free port, in its own temp dir."""

    def __init__(self, extra_args: Sequence[str] = (), *, sentinel_config: str = "") -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"redis-{self.port}-"))
        self.log_path = self.dir / "redis.log"
        self._proc: subprocess.Popen | None = None
        self._client: redis.Redis | None = None
        if sentinel_config:
            # Sentinel rewrites its config file (state, ids), so it lives in the writable dir.
            config = self.dir / "sentinel.conf"
            config.write_text(f"port {self.port}\nbind {HOST}\ndir {self.dir}\n{sentinel_config}\n")
            self._command = [REDIS_SERVER, str(config), "--sentinel"]
        else:
            self._command = [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", HOST,
                "--dir", str(self.dir),
                "--save", "",
                "--appendonly", "no",
                # Redis 7 waits 5 s by default before a diskless full sync to a new replica.
                "--repl-diskless-sync-delay", "0",
                *extra_args,
            ]  # fmt: skip

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0"""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "RedisProcess":
        """Launch the server (empty: no RDB, no AOF) and wait until it answers PING."""
        if self.alive:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        # A replica stores the RDB of its full sync; a later start must not load it.
        (self.dir / "dump.rdb").unlink(missing_ok=True)
        # The log (stdout) goes to the dir, so start-up errors of the config land there too.
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until PING answers; raise with the log's tail if it exits or times out."""
        deadline = time.monotonic() + timeout_s
        probe = redis.Redis(
            host=HOST,
            port=self.port,
            socket_connect_timeout=0.5,
            socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            while time.monotonic() < deadline:
                if not self.alive:
                    raise RuntimeError(f"redis-server on port {self.port} exited:\n{self.log_tail()}")
                try:
                    if probe.ping():
                        return
                except redis.ConnectionError:
                    pass
                time.sleep(POLL_S)
        finally:
            probe.close()
        raise TimeoutError(f"redis-server on port {self.port} silent after {timeout_s} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.alive:
            self._proc.kill()
            self._proc.wait()

    def stop(self) -> None:
        """SIGTERM (SIGKILL if it lingers), and wait."""
        if self._proc is not None:
            stop_process(self._proc, timeout_s=5.0)

    def restart(self) -> "RedisProcess":
        """Kill if running, then start again, empty, on the same port."""
        self.kill()
        return self.start()

    def client(self) -> redis.Redis:
        """This process's sync client (decoded replies) for assertions; closed by close()."""
        if self._client is None:
            # One immediate retry reconnects a connection left over from before a restart;
            # against a dead server it fails fast (redis-py's default retries take seconds).
            self._client = redis.Redis(
                host=HOST,
                port=self.port,
                decode_responses=True,
                socket_connect_timeout=1,
                socket_timeout=5,
                retry=Retry(NoBackoff(), 1),
            )
        return self._client

    def close(self) -> None:
        """Kill the process, close its clients and remove its temp dir."""
        self.kill()
        if self._client is not None:
            self._client.close()
            self._client = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class SentinelGroup:
    """A master, one replica and three Sentinels (quorum 2) watching them."""

    def __init__(self, master_name: str = "streams") -> None:
        self.master_name = master_name
        first = RedisProcess()
        self.nodes = (first, RedisProcess(["--replicaof", HOST, str(first.port)]))
        settings = "\n".join(f"sentinel {line.format(name=master_name)}" for line in SENTINEL_SETTINGS)
        config = f"sentinel monitor {master_name} {HOST} {first.port} 2\n{settings}"
        self._sentinels = [RedisProcess(sentinel_config=config) for _ in range(3)]
        self._killed: RedisProcess | None = None

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The Sentinels' (host, port), as redis-py's Sentinel takes them."""
        return [(HOST, s.port) for s in self._sentinels]

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "SentinelGroup":
        """Start all; return once the replica is in sync and each Sentinel sees it and the others."""
        for node in self.nodes:
            node.start()
        # Sentinels learn replicas from the master's INFO, polled every 10 s after the first:
        # started after the sync, they see the replica at once.
        self._wait("the replica's link to the master", timeout_s, self._replica_linked)
        for sentinel in self._sentinels:
            sentinel.start()
        self._wait("the Sentinels to find each other and the replica", timeout_s, self._sentinels_settled)
        return self

    def master(self) -> RedisProcess:
        """The node the Sentinels name as master now."""
        for sentinel in self._sentinels:
            if sentinel.alive:
                _, port = sentinel.client().sentinel_get_master_addr_by_name(self.master_name)
                return self._node(int(port))
        raise RuntimeError("no Sentinel is running")

    def kill_master(self) -> RedisProcess:
        """SIGKILL the current master; return it."""
        self._killed = self.master()
        self._killed.kill()
        return self._killed

    def wait_for_failover(self, timeout_s: float = FAILOVER_TIMEOUT_S) -> RedisProcess:
        """After kill_master(): wait until all Sentinels name the other node, a master now; return it."""
        if self._killed is None:
            raise RuntimeError("wait_for_failover() follows kill_master()")
        (promoted,) = [node for node in self.nodes if node is not self._killed]

        def promoted_everywhere() -> bool:
            for sentinel in self._sentinels:
                _, port = sentinel.client().sentinel_get_master_addr_by_name(self.master_name)
                if int(port) != promoted.port:
                    return False
            return promoted.client().info("replication")["role"] == "master"

        self._wait(f"the failover to port {promoted.port}", timeout_s, promoted_everywhere)
        return promoted

    def stop_all(self) -> None:
        """Kill every process of the group and remove their temp dirs."""
        for process in (*self._sentinels, *self.nodes):
            process.close()

    def _node(self, port: int) -> RedisProcess:
        """The data node listening on `port`."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"port {port} is not a node of this group")

    def _replica_linked(self) -> bool:
        """Whether the replica's link to the master is up."""
        return self.nodes[1].client().info("replication").get("master_link_status") == "up"

    def _sentinels_settled(self) -> bool:
        """Whether every Sentinel sees the master, the replica and both other Sentinels."""
        for sentinel in self._sentinels:
            state = sentinel.client().sentinel_master(self.master_name)
            if state["num-slaves"] != 1 or state["num-other-sentinels"] != 2:
                return False
        return True

    def _wait(self, what: str, timeout_s: float, condition: Callable[[], bool]) -> None:
        """Poll `condition` until true; raise with the logs' tails on timeout."""
        deadline = time.monotonic() + timeout_s
        last_error: redis.RedisError | None = None
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except redis.RedisError as error:  # a node or Sentinel between states; ask again
                last_error = error
            time.sleep(0.05)
        logs = "\n".join(f"--- port {p.port}\n{p.log_tail()}" for p in (*self.nodes, *self._sentinels))
        raise TimeoutError(f"gave up on {what} after {timeout_s} s (last error: {last_error!r})\n{logs}")


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    """A fresh, started Redis of its own; killed and removed at teardown."""
    process = RedisProcess()
    try:
        yield process.start()
    finally:
        process.close()


@pytest.fixture
def redis_pair() -> Iterator[tuple[RedisProcess, RedisProcess]]:
    """Two independent, started Redis servers; killed and removed at teardown."""
    pair = (RedisProcess(), RedisProcess())
    try:
        yield (pair[0].start(), pair[1].start())
    finally:
        for process in pair:
            process.close()


@pytest.fixture
def sentinel_group() -> Iterator[SentinelGroup]:
    """A started SentinelGroup; every process killed and removed at teardown."""
    group = SentinelGroup()
    try:
        yield group.start()
    finally:
        group.stop_all()
