#!/usr/bin/env bash
# Entry point of the moshi-server image: build (once) and run `moshi-server "$@"`,
# e.g. `worker --config /configs/stt.toml`.
set -euo pipefail

# moshi-server embeds Python (pyo3) for its TTS module: build and run it inside the pinned
# environment, and let it find libpython at run time.
cd /app/python-env
uv sync --locked --no-install-project
# shellcheck disable=SC1091
source /app/python-env/.venv/bin/activate
LD_LIBRARY_PATH="$(python -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
export LD_LIBRARY_PATH

if [[ -n "${HUGGING_FACE_HUB_TOKEN:-}" ]]; then
    uvx hf auth login --token "$HUGGING_FACE_HUB_TOKEN"
fi

if [[ ! -x /root/.cargo/bin/moshi-server ]]; then
    CARGO_TARGET_DIR=/app/target cargo install --locked --features cuda moshi-server@0.6.4
fi

# The full path: the Python environment has a `moshi-server` script of its own.
exec /root/.cargo/bin/moshi-server "$@"
