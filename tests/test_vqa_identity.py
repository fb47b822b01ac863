"""The embedded suite byte for byte: sha256 over the items (texts, image pixels) of every split the
library serves and of the trainer's training streams, pinned on the code before the training-only
questions moved out of vqa.py (into scripts/embedded_tasks.py), so the move changed no item.

The shipped model's scores and its training pools rest on these items. A change to generation
fails here on purpose: if it is meant, bump vqa.SUITE_VERSION, print the new hashes with
``python tests/test_vqa_identity.py`` and say in the commit why the suite changed.
"""

import hashlib
import itertools
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from interlace.data import vqa

SCRIPTS = Path(__file__).parents[1] / "scripts"

# The sizes the library uses: 500 per task is the suite's default evaluation (suites.VQA), 1000 and
# 500 the test and calibration reserves (every smaller size is a per-task prefix of them), 64 per
# task the calibration behind the default --calib-samples 384, 2048 the embedded healing stream.
LIBRARY = {
    "load_split/test/1000": "fea3cc6db6fea6bf5b9d1cd0a95e55008e9eab2779b01c8e270770703e5b37f5",
    "load_split/test/500": "281ef96c8a203f3571e76f8629578f4da189a3b0639e3ebf1ecf6f2e7a7827e3",
    "load_split/calib/500": "3337260926942b2291ce80e01d8ef62e5d45474014908d936944c6408eed7cdd",
    "load_split/calib/64": "9b050ec21560b57c2ba2e0815e4c141f7e341997278ed2c557f5b24afd790004",
    "load_split/test/50/seed1": "f38bdc88d278af49ab536606a6d952d75fb39fe221c1f263077947ddaa15fea4",
    "train_stream/0/2048": "eae4dd0677fd3970125c2826352b1df341ba6a5ed7f781d478dd68153bc45b40",
}
# What scripts/train_embedded.py draws: the pool with --primers (suite tasks and primers in turn),
# a curriculum stage's thinned pool, and the primers' probe (seed + 1) that every evaluation scores.
TRAINING = {
    "train_items/0/all/3400": "68292eb2bd090a63d3e4d2ae9169ca12b4abbf49e72e6aa116f9371c1dc15e58",
    "train_items/0/all/thin0.15/1700": "eefa5687ac71f19011356695ddf19ccc69c13c487e71738b1e4fece15afab41f",
    "train_items/1/primers/1100": "aace1e260322357c00e9b86fb59deb0b55460f3f895abbc4a3e0efe4510d2f21",
}
# build.vocabulary() (the shipped tokenizer's words, primer words included) and the trainer's
# --question-first template.
VOCABULARY = "84af253f62ba0c176a088d4f230f877c8e02842c53be9c2fd1f089f7bb92d4e8"
QUESTION_FIRST_TEMPLATE = "f04dc25efd69a8c04a0a85fe7d3b1ee6634a7a4e1e48b8731c153ecef9e95817"


def sample_digest(samples: Iterable[dict]) -> str:
    """sha256 over each sample's source and texts (JSON) and its images' mode, size and pixels."""
    h = hashlib.sha256()
    for sample in samples:
        h.update(json.dumps([sample["source"], sample["texts"]]).encode())
        for image in sample["images"]:
            h.update(f"{image.mode}{image.size}".encode())
            h.update(np.asarray(image).tobytes())
    return h.hexdigest()


def item_digest(items: Iterable[vqa.Item]) -> str:
    """sample_digest of the rendered items, with the scene itself (objects and digit indices) in the texts."""
    return sample_digest(
        vqa.to_sample(item) | {"texts": [json.dumps([item.task, item.scene, item.question, item.answer])]} for item in items
    )


def library_digest(key: str) -> str:
    kind, *args = key.split("/")
    if kind == "train_stream":
        seed, n = map(int, args)
        return sample_digest(itertools.islice(vqa.train_stream(seed, vqa.TASKS), n))
    split, n, *seed = args
    return sample_digest(vqa.load_split(split, int(n), seed=int(seed[0].removeprefix("seed")) if seed else 0))


def embedded_tasks():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import embedded_tasks
    finally:
        sys.path.remove(str(SCRIPTS))
    return embedded_tasks


def training_digest(key: str) -> str:
    tasks_module = embedded_tasks()
    _, seed, which, *rest = key.split("/")
    tasks = {"all": vqa.TASKS + tasks_module.PRIMER_TASKS, "primers": tasks_module.PRIMER_TASKS}[which]
    thin = float(rest[0].removeprefix("thin")) if len(rest) == 2 else 1.0
    stream = vqa.train_items(int(seed), tasks, tasks_module.thinned(thin))
    return item_digest(itertools.islice(stream, int(rest[-1])))


@pytest.mark.parametrize("key", LIBRARY)
def test_the_library_splits_are_byte_identical(key):
    assert library_digest(key) == LIBRARY[key]


@pytest.mark.parametrize("key", TRAINING)
def test_the_trainers_streams_are_byte_identical(key):
    assert training_digest(key) == TRAINING[key]


def test_the_vocabulary_and_the_question_first_template_are_unchanged():
    from embedded_build import vocabulary

    sys.path.insert(0, str(SCRIPTS))
    try:
        import train_embedded
    finally:
        sys.path.remove(str(SCRIPTS))
    assert hashlib.sha256(json.dumps(vocabulary()).encode()).hexdigest() == VOCABULARY
    assert hashlib.sha256(train_embedded.QUESTION_FIRST_TEMPLATE.encode()).hexdigest() == QUESTION_FIRST_TEMPLATE


if __name__ == "__main__":  # print today's hashes, to re-pin after a deliberate change
    print(json.dumps({**{k: library_digest(k) for k in LIBRARY}, **{k: training_digest(k) for k in TRAINING}}, indent=1))
