"""Django settings, read from the environment with documented defaults."""

import os
from pathlib import Path

import dj_database_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

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


DEBUG = env_bool("DJANGO_DEBUG", False)
# The embedded default key is only good for local runs; deployments must set DJANGO_SECRET_KEY.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or "insecure-local-only-key-set-DJANGO_SECRET_KEY"
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

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
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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

# --- Channel layer -------------------------------------------------------------
# Absent REDIS_URL: the in-memory layer, which serves one process only.
# Present: channels-redis. REDIS_CHANNEL_LAYER picks "pubsub" (default: faster, no
# capacity bound, see docs/architecture.md) or "core" (lists with a capacity bound).
REDIS_URL = os.environ.get("REDIS_URL", "")
REDIS_CHANNEL_LAYER = os.environ.get("REDIS_CHANNEL_LAYER", "pubsub")
# Seconds to wait for a Redis connection before the layer counts as unavailable.
REDIS_CONNECT_TIMEOUT_S = env_float("REDIS_CONNECT_TIMEOUT_S", 5.0)
# Connections of the run-log client per process; more sends wait for a free one.
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 200)


def redis_host_config(url: str) -> dict:
    """Host entry for channels-redis with timeouts set on purpose."""
    # redis-py 8 defaults socket_timeout to 5 s, equal to channels-redis' 5 s blocking
    # pop: every idle WebSocket would then die with 1011. No read timeout; a bounded
    # connect timeout so that a dead Redis is noticed.
    return {
        "address": url,
        "socket_timeout": None,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "health_check_interval": 30,
        # A pooled connection that died with a Redis restart is replaced on its next use
        # instead of failing that use (a pool built from a URL gets no retries by default).
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
    }


if REDIS_URL:
    if REDIS_CHANNEL_LAYER == "core":
        CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": [redis_host_config(REDIS_URL)],
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
                "CONFIG": {"hosts": [redis_host_config(REDIS_URL)]},
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
    # Whether visitors without a login may start runs (off: handshake refused).
    "ALLOW_ANONYMOUS": env_bool("STREAMS_ALLOW_ANONYMOUS", True),
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
    # Anthropic SDK (optional dependency) with its own ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL.
    "anthropic": {"kind": "anthropic"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"daphne": {"level": "WARNING"}},
}
