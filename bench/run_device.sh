#!/bin/bash
# Everything the performance issue measures, in one GPU call (see bench/README.md).
# Results go to $RES (default: $OUT/results on the device tool, else outside the repository, see
# bench/record.py); with $OUT set they are also packed into $OUT/results.tar.gz next to $OUT/log.txt.
# Stages and their time limits (seconds) can be chosen: STAGES="headline train preview faithful oom tests"
# (headline = python -m bench headline, the README's figures, with $HEADLINE_ARGS; profile = bench.profile_step
# with $PROFILE_ARGS; any other bench module by name). Run from the repository root.
RES=${RES:-${OUT:+$OUT/results}}
RES=${RES:-$(python3 -c "from bench.record import default_out; print(default_out())")}
mkdir -p "$RES"
LOG=${OUT:+$OUT/log.txt}
LOG=${LOG:-$RES/log.txt}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
STAGES=${STAGES:-"train preview faithful oom tests"}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,power.limit --format=csv
  python3 -c "import torch, diffusers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__)"
  for stage in $STAGES; do
    echo "=== $stage $(date -u +%T)"
    case $stage in
      headline) timeout ${T_HEADLINE:-480} python3 -m bench headline --out "$RES" $HEADLINE_ARGS ;;
      train)    timeout ${T_TRAIN:-300} python3 -m bench.train_step --out "$RES" $TRAIN_ARGS ;;
      preview)  timeout ${T_PREVIEW:-110} python3 -m bench.preview_engine --out "$RES" $PREVIEW_ARGS ;;
      faithful) timeout ${T_FAITHFUL:-100} python3 -m bench.faithful --out "$RES" $FAITHFUL_ARGS ;;
      oom)      timeout ${T_OOM:-50} python3 -m bench.oom --out "$RES" ;;
      profile)  timeout ${T_PROFILE:-300} python3 -m bench.profile_step --out "$RES" $PROFILE_ARGS ;;
      tests)    timeout ${T_TESTS:-60} python3 -m pytest -q -p no:cacheprovider -m gpu tests/core/test_fast_step.py ;;
      *)        timeout ${T_EXTRA:-120} python3 -m bench.$stage --out "$RES" $EXTRA_ARGS ;;
    esac
    echo "=== $stage exit $? $(date -u +%T)"
  done
} 2>&1 | tee "$LOG"
if [ -n "$OUT" ]; then tar czf "$OUT/results.tar.gz" -C "$RES" .; fi
