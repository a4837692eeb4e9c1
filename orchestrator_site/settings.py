"""Django settings, read from the environment with documented defaults."""

import os
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from streams.store.topology import Topology

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean environment variable ("1", "true", "yes", "on" are true)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_float(name: str, default: float) -> float:
    """Read a float environment variable."""
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def env_int(name: str, default: int) -> int:
    """Read an integer environment variable."""
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_list(name: str, default: str = "") -> list[str]:
    """Read a comma-separated list."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)
# The embedded default key is public: the ASGI application refuses to start with it
# (orchestrator_site/security.py) unless DEBUG is on or DJANGO_INSECURE_LOCAL=1 (scripts/run
# sets it when no key is given; the tests' settings set INSECURE_LOCAL).
DEFAULT_SECRET_KEY = "insecure-local-only-key-set-DJANGO_SECRET_KEY"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or DEFAULT_SECRET_KEY
INSECURE_LOCAL = env_bool("DJANGO_INSECURE_LOCAL", False)
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# --- TLS deployments (docs/deployment.md): all off by default, for plain-HTTP local runs ---
# Cookies only over HTTPS.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
# Strict-Transport-Security max-age in seconds (0: no header).
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", False)
# Redirect plain HTTP to HTTPS.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (deploy/nginx.conf does): requests
# with "https" there count as secure, and WebSocket origins as https (streams/access/origins.py).
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False) else None
)
# Error pages and log lines never show a URL's password or an API key (streams/access/redact.py).
DEFAULT_EXCEPTION_REPORTER = "streams.access.reporting.RedactingExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "streams.access.reporting.RedactingReporterFilter"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "streams",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Outside the others, so that every response gets the policy, the 400 of a bad Host too.
    "orchestrator_site.csp.HostSocketCSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Content-Security-Policy on every page (django-csp): the chat page renders untrusted model
# output, so no inline script, no eval, no plugins, no <base>, no framing, no foreign fetches or
# images. Django's admin runs under it too (its scripts are files; tests/test_browser_admin.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],  # plus ws(s)://<host>, added per request (orchestrator_site/csp.py)
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

ROOT_URLCONF = "orchestrator_site.urls"
ASGI_APPLICATION = "orchestrator_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 0),
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# The app serves /static/ itself (so one command runs everything); turn off when nginx
# serves `manage.py collectstatic`'s STATIC_ROOT.
SERVE_STATIC = env_bool("DJANGO_SERVE_STATIC", True)
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

# --- Redis and the channel layer ----------------------------------------------------
# Absent REDIS_URL and REDIS_SENTINELS: the in-memory layer, which serves one process only.
# Present: channels-redis and the Redis run log, quotas and heartbeats, all through
# streams/store/topology.py. REDIS_URL may list several nodes (comma-separated); or
# REDIS_SENTINELS=host:port,... with REDIS_SENTINEL_MASTER=name[,name] names Sentinel-managed
# masters. REDIS_CHANNEL_LAYER picks "pubsub" (default: faster, no capacity bound, see
# docs/architecture.md) or "core" (lists with a capacity bound).
REDIS_URL = os.environ.get("REDIS_URL", "")
REDIS_SENTINELS = os.environ.get("REDIS_SENTINELS", "")
REDIS_SENTINEL_MASTER = os.environ.get("REDIS_SENTINEL_MASTER", "")
# Secrets: Django's error pages hide settings whose names contain PASS.
REDIS_SENTINEL_PASSWORD = os.environ.get("REDIS_SENTINEL_PASSWORD", "")
REDIS_USERNAME = os.environ.get("REDIS_USERNAME", "")
REDIS_PASSWORD = os.environ.get("REDIS_PASSWORD", "")
REDIS_DB = env_int("REDIS_DB", 0)
# Refuses a topology that makes no sense (both REDIS_URL and REDIS_SENTINELS, ...) at start-up.
REDIS_TOPOLOGY = Topology.parse(
    REDIS_URL,
    REDIS_SENTINELS,
    REDIS_SENTINEL_MASTER,
    REDIS_SENTINEL_PASSWORD,
    REDIS_USERNAME,
    REDIS_PASSWORD,
    REDIS_DB,
)
REDIS_CHANNEL_LAYER = os.environ.get("REDIS_CHANNEL_LAYER", "pubsub")
# Seconds to wait for a Redis connection before the layer counts as unavailable.
REDIS_CONNECT_TIMEOUT_S = env_float("REDIS_CONNECT_TIMEOUT_S", 5.0)
# Connections of the run-log client per process and node; more sends wait for a free one.
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 200)


def redis_connection_options() -> dict:
    """Connection options of the channel layer's Redis clients, set on purpose."""
    # redis-py 8 defaults socket_timeout to 5 s, equal to channels-redis' 5 s blocking
    # pop: every idle WebSocket would then die with 1011. No read timeout; a bounded
    # connect timeout so that a dead Redis is noticed.
    return {
        "socket_timeout": None,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "health_check_interval": 30,
        # A pooled connection that died with a Redis restart is replaced on its next use
        # instead of failing that use (a pool built from a URL gets no retries by default).
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
    }


def redis_host_config(url: str) -> dict:
    """Host entry for channels-redis of one plain node (tests build layers with it)."""
    return {"address": url, **redis_connection_options()}


if REDIS_TOPOLOGY.configured:
    _layer_hosts = REDIS_TOPOLOGY.layer_hosts(**redis_connection_options())
    if REDIS_CHANNEL_LAYER == "core":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": _layer_hosts,
                    # Frames are coalesced per run, so a channel sees few messages; a
                    # large capacity turns a slow reader into memory, never into loss.
                    "capacity": env_int("REDIS_CHANNEL_CAPACITY", 10_000),
                    "expiry": env_int("REDIS_CHANNEL_EXPIRY_S", 60),
                    "group_expiry": env_int("REDIS_GROUP_EXPIRY_S", 86_400),
                },
            }
        }
    else:
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": _layer_hosts},
            }
        }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": env_int("REDIS_CHANNEL_CAPACITY", 10_000), "expiry": 60},
        }
    }

# --- Streams: every knob of the streaming app, in one place -------------------------
STREAMS = {
    # Whether visitors without a login or an API key may start runs (off: handshake refused,
    # SSE 401). Deployments on the internet turn it off (docs/deployment.md).
    "ALLOW_ANONYMOUS": env_bool("STREAMS_ALLOW_ANONYMOUS", True),
    # Origins (scheme://host[:port], compared whole) allowed besides the app's own (the
    # request's scheme and Host, the host in ALLOWED_HOSTS), e.g. a front end elsewhere.
    "ALLOWED_ORIGINS": env_list("STREAMS_ALLOWED_ORIGINS"),
    # Peers whose X-Forwarded-For is believed (addresses or networks): the proxy in front.
    "TRUSTED_PROXIES": env_list("STREAMS_TRUSTED_PROXIES", "127.0.0.0/8,::1"),
    # Seconds a verified (or refused) API key is remembered; a revoked key works this long.
    "API_KEY_CACHE_S": env_float("STREAMS_API_KEY_CACHE_S", 10.0),
    # Per owner (user, API key, session, else client address), across connections and
    # instances (0: no cap). Runs in flight, those waiting out a resume grace included:
    "MAX_RUNS_PER_OWNER": env_int("STREAMS_MAX_RUNS_PER_OWNER", 16),
    # Runs started in any 60 s:
    "MAX_RUNS_PER_MINUTE": env_int("STREAMS_MAX_RUNS_PER_MINUTE", 60),
    # Open WebSocket connections and SSE responses:
    "MAX_CONNECTIONS_PER_OWNER": env_int("STREAMS_MAX_CONNECTIONS_PER_OWNER", 32),
    # Resumes of one run on one connection (each replays the run's log; 0: no cap).
    "MAX_RESUMES_PER_RUN": env_int("STREAMS_MAX_RESUMES_PER_RUN", 10),
    # Largest ping frame (UTF-8 bytes) that is echoed; a larger one gets error too_large.
    "MAX_PING_BYTES": env_int("STREAMS_MAX_PING_BYTES", 1024),
    # Largest client WebSocket frame / SSE body in bytes (daphne drops > 1 MiB).
    "MAX_FRAME_BYTES": env_int("STREAMS_MAX_FRAME_BYTES", 64 * 1024),
    # Largest user input in characters.
    "MAX_INPUT_CHARS": env_int("STREAMS_MAX_INPUT_CHARS", 32_000),
    # Runs one connection may have in flight at once.
    "MAX_RUNS_PER_CONNECTION": env_int("STREAMS_MAX_RUNS_PER_CONNECTION", 4),
    # Client frames per second allowed per connection (token bucket, burst = 2x).
    "RATE_LIMIT_PER_S": env_float("STREAMS_RATE_LIMIT_PER_S", 20.0),
    # Default per-task timeout in seconds when the task sets none.
    "TASK_TIMEOUT_S": env_float("STREAMS_TASK_TIMEOUT_S", 120.0),
    # Seconds a run outlives its closed socket, waiting to be resumed (0: cancel at once).
    "RESUME_GRACE_S": env_float("STREAMS_RESUME_GRACE_S", 0.0),
    # Seconds a run's event log is kept in Redis after its last frame.
    "LOG_TTL_S": env_int("STREAMS_LOG_TTL_S", 3600),
    # Most frames kept in one run's log (older ones are trimmed).
    "LOG_MAX_FRAMES": env_int("STREAMS_LOG_MAX_FRAMES", 100_000),
    # Seconds between a host's "alive" beats in Redis; a host silent for 3 beats is gone and
    # its runs are ended (run.failed, host_lost) by whoever watches them.
    "HOST_HEARTBEAT_S": env_float("STREAMS_HOST_HEARTBEAT_S", 5.0),
    # Seconds a run in flight outlives an unreachable Redis (a restart, a Sentinel failover):
    # its host holds the frames it could not publish (within the run's log bound) and retries
    # with backoff; when Redis answers again it re-appends what the log lacks, then publishes.
    # Past this, the run ends run.failed (layer_unavailable).
    "LAYER_OUTAGE_S": env_float("STREAMS_LAYER_OUTAGE_S", 15.0),
    # Seconds between run.progress frames for held-back tasks.
    "PROGRESS_INTERVAL_S": env_float("STREAMS_PROGRESS_INTERVAL_S", 0.5),
    # Extra seconds to batch deltas before a send (0: send whenever the last send is done).
    "COALESCE_WINDOW_S": env_float("STREAMS_COALESCE_WINDOW_S", 0.0),
    # Most characters of text in one task.delta frame; longer deltas are cut into several.
    # 16384 keeps every frame under 100 KiB (JSON escapes take at most 6 bytes a character).
    "MAX_DELTA_CHARS": env_int("STREAMS_MAX_DELTA_CHARS", 16_384),
    # Most UTF-8 bytes of output one task may produce (past it: task.failed too_large, its
    # upstream stream closed, the other tasks go on). 0: no limit.
    "MAX_TASK_BYTES": env_int("STREAMS_MAX_TASK_BYTES", 1024 * 1024),
    # Most bytes of one run's log (its frames' JSON); past it the run fails with too_large.
    "MAX_RUN_LOG_BYTES": env_int("STREAMS_MAX_RUN_LOG_BYTES", 16 * 1024 * 1024),
    # Most bytes a connection may have waiting to be sent to its client; past it the
    # connection is closed (WebSocket 4408; SSE: the response ends) and its runs detached.
    "MAX_UNSENT_BYTES": env_int("STREAMS_MAX_UNSENT_BYTES", 4 * 1024 * 1024),
    # Seconds runs in flight may take to finish after SIGTERM before they end with
    # run.failed (shutdown).
    "DRAIN_S": env_float("STREAMS_DRAIN_S", 20.0),
    # Seconds between SSE ": ping" comments while nothing else is sent.
    "SSE_HEARTBEAT_S": env_float("STREAMS_SSE_HEARTBEAT_S", 15.0),
    # Default provider name for tasks that name none.
    "DEFAULT_PROVIDER": os.environ.get("STREAMS_DEFAULT_PROVIDER", "simulated"),
    # --- Conversations and run records (streams/records/) ---
    # Earlier turns given to a prompt's {{ history }} (or as chat messages): at most this
    # many, the newest, and together at most this many characters (inputs plus answers).
    "HISTORY_MAX_TURNS": env_int("STREAMS_HISTORY_MAX_TURNS", 20),
    "HISTORY_MAX_CHARS": env_int("STREAMS_HISTORY_MAX_CHARS", 24_000),
    # Days `manage.py prune_runs` keeps runs and traces when no --older-than is given.
    "RECORDS_RETENTION_DAYS": env_float("STREAMS_RECORDS_RETENTION_DAYS", 30.0),
    # Database alias the records writer writes to.
    "RECORDS_DATABASE": os.environ.get("STREAMS_RECORDS_DATABASE", "default"),
    # Seconds between the writer's periodic flushes (ends of tasks and runs flush sooner).
    "RECORDS_FLUSH_S": env_float("STREAMS_RECORDS_FLUSH_S", 1.0),
    # Failed writes of a run's records retried this many times before it is marked incomplete.
    "RECORDS_RETRIES": env_int("STREAMS_RECORDS_RETRIES", 3),
    # Bounds of a run's records in memory: trace entries per task (more pieces are merged)
    # and frames per run (more task.delta frames are counted, not traced).
    "RECORDS_MAX_PIECES": env_int("STREAMS_RECORDS_MAX_PIECES", 4096),
    "RECORDS_MAX_FRAMES": env_int("STREAMS_RECORDS_MAX_FRAMES", 10_000),
    # Ended runs waiting in memory for a slow or down database before the oldest are given up.
    "RECORDS_MAX_PENDING_RUNS": env_int("STREAMS_RECORDS_MAX_PENDING_RUNS", 1000),
    # GET /metrics (Prometheus) on when 1; readable from loopback without a proxy in between,
    # or from anywhere with "Authorization: Bearer $STREAMS_METRICS_TOKEN".
    "METRICS": env_bool("STREAMS_METRICS", False),
    "METRICS_TOKEN": os.environ.get("STREAMS_METRICS_TOKEN", ""),
}

# --- Providers: name -> kind and options; keys come from the environment only -------
LLM_CONNECT_TIMEOUT_S = env_float("LLM_CONNECT_TIMEOUT_S", 10.0)
LLM_READ_TIMEOUT_S = env_float("LLM_READ_TIMEOUT_S", 60.0)
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 2)

STREAMS_PROVIDERS = {
    # Deterministic text from the prompt, no network. Pace from the environment.
    "simulated": {
        "kind": "simulated",
        "tokens_per_s": env_float("SIMULATED_TOKENS_PER_S", 30.0),
        "ttft_s": env_float("SIMULATED_TTFT_S", 0.2),
        "tokens": env_int("SIMULATED_TOKENS", 60),
    },
    # OpenAI SDK with its own OPENAI_API_KEY / OPENAI_BASE_URL.
    "openai": {"kind": "openai"},
    "qwen": {
        "kind": "openai",
        "base_url": "https://dashscope.aliyuncs.com/compatible-mode/v1",
        "api_key_env": "DASHSCOPE_API_KEY",
    },
    "deepseek": {
        "kind": "openai",
        "base_url": "https://api.deepseek.com/v1",
        "api_key_env": "DEEPSEEK_API_KEY",
    },
    "vllm": {
        "kind": "openai",
        "base_url": os.environ.get("VLLM_BASE_URL", "http://127.0.0.1:8001/v1"),
        "api_key_env": "VLLM_API_KEY",
        "api_key_optional": True,  # local servers usually need no key
    },
    "ollama": {
        "kind": "openai",
        "base_url": os.environ.get("OLLAMA_BASE_URL", "http://127.0.0.1:11434/v1"),
        "api_key_env": "OLLAMA_API_KEY",
        "api_key_optional": True,
    },
    # llama.cpp's llama-server with SmolLM2-135M (scripts/run --local-model starts it with 4 slots):
    # as many requests in flight as it has slots, so none waits in its queue behind another run.
    "local": {
        "kind": "openai",
        "base_url": os.environ.get("LOCAL_LLM_BASE_URL", "http://127.0.0.1:8081/v1"),
        "api_key_env": "LOCAL_LLM_API_KEY",
        "api_key_optional": True,
        "max_concurrency": 4,
    },
    # Anthropic SDK (optional dependency) with its own ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL.
    "anthropic": {"kind": "anthropic"},
}

# Every line about a run carries its run id and task key (streams/logs.py); LOG_FORMAT=json
# writes one JSON object per line instead, for a log collector.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"run_context": {"()": "streams.logs.RunContextFilter"}},
    "formatters": {
        "plain": {
            "()": "streams.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        },
        "json": {"()": "streams.logs.JSONFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if os.environ.get("LOG_FORMAT") == "json" else "plain",
            "filters": ["run_context"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}},
}
