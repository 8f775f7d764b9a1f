#!/usr/bin/env bash
# GPU smoke check, at most 5 minutes on one H100/H200, no network. Uses the machine's own torch.
# Two processes (the FSDP2 part switches accelerate's process-wide state, see care/smoke.py):
#   1. steps, vllm, advantages: a few CARE steps of a small random Qwen2.5-VL-architecture model
#      in bf16; where vLLM is installed, a rollout of the tiny vision model through the vLLM
#      engine; the CARE advantage kernel timed on the paper-sized batch (512 x 8, 3584-d);
#   2. fsdp2: two CARE steps through accelerate's FSDP2 with one process (whole weights gathered
#      for rollout and scoring, a full-state checkpoint after each step, bf16 mixed precision)
#      and a resume from the step-1 checkpoint, compared with the uninterrupted step 2.
# Every part prints `ran: <part>`, `skipped: <part>: <why>` or `failed: <part>: <error>`, each
# process a `summary:` line; the exit status is 1 when a part failed or a process timed out.
#
# Packages the project needs beyond a stock CUDA image (pydantic, math-verify, ...) can travel as
# wheels in ./.whl (see docs/distributed.md, "GPU smoke check"); they are installed to /tmp/site.
# SMOKE_DEVICE=cpu runs the same on the CPU (the test suite does, with --small); PARTS_LIMIT_S and
# FSDP2_LIMIT_S change the two time limits (200 s and 100 s).
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DEVICE="${SMOKE_DEVICE:-cuda}"
DTYPE="${SMOKE_DTYPE:-bfloat16}"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
else
  echo "note: nvidia-smi not found"
fi

status=0
smoke() {  # smoke SECONDS ARGS...: one care.smoke process under a time limit
  local limit="$1"
  shift
  timeout "$limit" python3 -m care.smoke --device "$DEVICE" --dtype "$DTYPE" "$@"
  local code=$?
  if [ "$code" -ne 0 ]; then
    [ "$code" -eq 124 ] && echo "failed: care.smoke $*: timed out after ${limit} s"
    status=1
  fi
}
smoke "${PARTS_LIMIT_S:-200}" --parts steps,vllm,advantages --steps "${STEPS:-3}" "$@"
smoke "${FSDP2_LIMIT_S:-100}" --parts fsdp2 "$@"
exit "$status"
