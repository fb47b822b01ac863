#!/usr/bin/env bash
# The staged run that produced the shipped embedded model (docs/embedded.md, "Fourth round").
#
#     bash scripts/train_embedded_chain.sh [WORK_DIR]        # about 2 h 30 min on one CPU thread
#
# Stage 0 trains from scratch (the model shipped before 2026-12-02); every later stage continues
# the previous one (--init-from) with its own question mix (--task-weights; 0 leaves a type out)
# and, for finding objects, sparse scenes first (--curriculum). A stage whose output exists is
# skipped, so an interrupted chain resumes at the stage it was in. Copy the last stage's files
# (not its step* snapshots) into src/interlace/embedded/model to ship it.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/embedded-chain}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$work"

# The suite's tasks and the training-only primers (vqa.TASKS, vqa.PRIMER_TASKS), all weight 0:
# each stage below names the ones it trains (a type not named would get weight 1).
none=count=0,compare=0,relation=0,line_count=0,digit_sum=0,digit_max=0
none=$none,locate=0,lookup=0,exists=0,neighbour=0,line_at=0,total=0,relation_at=0
none=$none,line_total=0,relation_cot=0,line_cot=0

stage() {  # stage NAME FROM [trainer options]: train WORK/NAME from WORK/FROM (or from scratch)
    local name=$1 from=$2
    shift 2
    if [[ -f $work/$name/training_info.json ]]; then
        echo "== $name: done, skipped"
        return
    fi
    echo "== $name"
    local init=()
    [[ $from == - ]] || init=(--init-from "$work/$from")
    rm -rf "$work/$name.partial"
    "$python" scripts/train_embedded.py --out "$work/$name.partial" "${init[@]}" --threads 1 "$@"
    mv "$work/$name.partial" "$work/$name"  # only a finished stage gets its name
}

# 0. From scratch: vision tower on per-cell labels, then the decoder on the six tasks (56 min).
stage s0-scratch - --samples 200000 --vlm-steps 4000 --lr 1e-3
# 1. All question types, scenes thinned to 15% then 30% of the suite's density (18 min).
suite=count=1,compare=1,relation=1,line_count=1,digit_sum=1,digit_max=1
stage s1-sparse s0-scratch --primers --task-weights $none,$suite,locate=1,lookup=1,exists=1 \
    --curriculum 0.15:1000,0.3:600 --vlm-steps 1600 --lr 2e-3 --warmup 100
# 2. Finding the object a question names, alone, from 1-2 objects up to full scenes (18 min).
stage s2-locate s1-sparse --primers --task-weights $none,locate=1 \
    --curriculum 0.1:600,0.3:600,0.6:600 --vlm-steps 2100 --lr 1e-3 --warmup 50 --eval-every 300
# 3-4. Reading a cell named by position (8 + 7 min).
stage s3-lookup s2-locate --primers --task-weights $none,locate=1,lookup=3,neighbour=1,total=1 \
    --vlm-steps 900 --lr 1e-3 --warmup 50 --eval-every 300
stage s4-lookup s3-lookup --primers --task-weights $none,locate=1,lookup=3 \
    --vlm-steps 900 --lr 1e-3 --warmup 50 --eval-every 300
# 5-7. Everything again, the composed tasks weighted up (14 + 15 + 14 min).
mixed=$none,relation=2,line_count=2,count=2,compare=1,digit_sum=0.5,digit_max=0.5
mixed=$mixed,neighbour=1,line_at=1,total=1,locate=1,lookup=1,exists=1,relation_at=0
stage s5-mixed s4-lookup --primers --task-weights $mixed --vlm-steps 1500 --lr 1e-3 --warmup 50 --eval-every 300
mixed=$none,relation=1,line_count=2,count=2,compare=1,digit_sum=1,digit_max=1
mixed=$mixed,neighbour=0.5,line_at=1,total=0.5,locate=0.5,lookup=0.5,exists=0.5,relation_at=0
stage s6-mixed s5-mixed --primers --task-weights $mixed --vlm-steps 1500 --lr 1e-3 --warmup 50 --eval-every 300
stage s7-mixed s6-mixed --primers --task-weights $mixed --vlm-steps 1500 --lr 1e-3 --warmup 50 --eval-every 300

echo "chain done: $work/s7-mixed"
