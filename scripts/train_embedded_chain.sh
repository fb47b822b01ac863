#!/usr/bin/env bash
# The staged run that produced the shipped embedded model (docs/embedded.md, "Training").
#
#     bash scripts/train_embedded_chain.sh [WORK_DIR]        # about 5 h on one CPU thread
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

# The suite's tasks and the training-only primers (vqa.TASKS, embedded_tasks.PRIMER_TASKS), all weight 0:
# each stage below names the ones it trains (a type not named would get weight 1).
none=count=0,compare=0,relation=0,line_count=0,digit_sum=0,digit_max=0
none=$none,locate=0,lookup=0,exists=0,neighbour=0,line_at=0,total=0,relation_at=0
none=$none,line_total=0,relation_cot=0,line_cot=0,line_total_cot=0

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

# 8. Four more layers after the late find (identity at first), relation and its halves (42 min).
stage s8-grow s7-mixed --primers --grow-layers 4 --task-weights $none,relation=2,relation_at=2,lookup=1,neighbour=1,locate=0.5 \
    --vlm-steps 1500 --lr 1e-3 --warmup 50 --eval-every 300
# 9-13. relation and line_count with their intermediate step written out, one answer word fewer
# per stage until the answers are the suite's (--cot-drop; about 9 min each).
cot=$none,relation_cot=2,line_cot=2,neighbour=0.5,relation_at=0.5,line_total=0.5,line_at=0.5,locate=0.5,lookup=0.5
cot=$cot,count=0.3,compare=0.3,digit_sum=0.2,digit_max=0.2,total=0.2,exists=0.2
stage s9-cot0 s8-grow --primers --task-weights $cot --cot-drop 0 --vlm-steps 400 --lr 1e-3 --warmup 50
previous=s9-cot0
for k in 1 2 3 4; do
    stage s$((9 + k))-cot$k $previous --primers --task-weights $cot --cot-drop $k --vlm-steps 300 --lr 1e-3 --warmup 50
    previous=s$((9 + k))-cot$k
done
# 14. Everything again (15 min with 2 threads); relation makes its transition here.
mixed=$none,relation=1,relation_cot=1,line_count=1,line_cot=1,count=1.5,compare=1,digit_sum=0.5,digit_max=0.5
mixed=$mixed,locate=0.3,lookup=0.3,neighbour=0.3,relation_at=0.3,line_at=0.3,line_total=0.3,total=0.3,exists=0.3
stage s14-mixed s13-cot4 --primers --task-weights $mixed --cot-drop 4 --vlm-steps 900 --lr 1e-3 --warmup 50 --eval-every 300

# 15. The four grown layers ended near the identity (dropping them keeps 0.987 of held-out
# accuracy and fails the depth check), so they go: the decoder is back to 12 layers.
if [[ ! -f $work/s15-cut/training_info.json ]]; then
    echo "== s15-cut"
    rm -rf "$work/s15-cut.partial"
    "$python" - "$work/s14-mixed" "$work/s15-cut.partial" <<'PY'
import json, sys
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from interlace.arch import KEPT_FIELD
from interlace.surgery import remove_layers

src, out = Path(sys.argv[1]), Path(sys.argv[2])
model = AutoModelForImageTextToText.from_pretrained(src, dtype=torch.float16)
grown = list(range(12, model.config.text_config.num_hidden_layers))
remove_layers(model, grown)
delattr(model.config.text_config, KEPT_FIELD)  # a trained model, not a pruned one
model.save_pretrained(out)
AutoProcessor.from_pretrained(src).save_pretrained(out)
info = json.loads((src / "training_info.json").read_text())
info["layers_removed_after_training"] = {"removed": grown, "why": "grown in s8, near the identity by s14"}
(out / "training_info.json").write_text(json.dumps(info, indent=2))
PY
    mv "$work/s15-cut.partial" "$work/s15-cut"
fi
# 16. A short mixed stage on the 12 layers, at half the lr (6 min): the model shipped until stage 20.
stage s16-mixed s15-cut --primers --task-weights $mixed --cot-drop 4 --vlm-steps 300 --lr 5e-4 --warmup 30 --eval-every 0
# 17-19. line_count's written-out step again, now alone at the top of the mix and 600 steps per
# word: the line's name, then its number, then nothing (7 min each).
line=$none,line_cot=2,line_total=0.5,line_at=0.5,locate=0.5,lookup=0.3,relation=0.5,count=0.5,compare=0.3
line=$line,line_count=0.3,digit_sum=0.2,digit_max=0.2,total=0.2,exists=0.2,neighbour=0.2,relation_at=0.2
previous=s16-mixed
for k in 0 1 2; do
    stage s$((17 + k))-line$k $previous --primers --task-weights $line --cot-drop $k --vlm-steps 600 --lr 1e-3 --warmup 50 --eval-every 300
    previous=s$((17 + k))-line$k
done
# 20. Everything again (7 min): the model that ships.
stage s20-mixed s19-line2 --primers --task-weights $mixed --cot-drop 4 --vlm-steps 600 --lr 1e-3 --warmup 50 --eval-every 300

echo "chain done: $work/s20-mixed"
