#!/usr/bin/env bash
# GPU smoke check, at most 5 minutes on one H100/H200, no network: a few CARE steps of a small
# random Qwen2.5-VL-architecture model in bf16 on CUDA, and the CARE advantage kernel timed on the
# paper-sized batch (512 prompts x 8 rollouts, 3584-d embeddings). Uses the machine's own torch.
#
# Packages the project needs beyond a stock CUDA image (pydantic, math-verify, ...) can travel as
# wheels in ./.whl (see docs/distributed.md, "GPU smoke check"); they are installed to /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 300 python3 -m care.smoke --device cuda --dtype bfloat16 --steps "${STEPS:-3}" "$@"
