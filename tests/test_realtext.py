"""Real English text: the pydocs corpus (data/realtext.py), its --data spec, plain-text JSONL rows,
and the held-out text evaluation (evaluate_text.py).

The corpus functions run on a hand-made corpus everywhere; the tests on the installed Python
documentation and on the real SmolLM2 model need both, which `make test` installs: without them
they fail with the install command rather than skip.
"""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from interlace import zoo
from interlace.data import realtext
from interlace.data.sources import DataSpecError, iter_samples, load_samples, parse_data_spec
from interlace.evaluation.text import (
    ClozeItem,
    choice_items,
    choice_logprobs,
    cloze_hits,
    cloze_item,
    cloze_items,
    continuation_split,
    perplexity,
    ppl_retention,
    trim_context,
)

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def _sentence(index: int, words: int = 12) -> str:
    body = " ".join(WORDS[(index * 7 + k) % len(WORDS)] for k in range(words))
    return body[0].upper() + body[1:] + "."


def _document(index: int, paragraphs: int = 6) -> str:
    """A small rST document: a title, a code example and paragraphs of distinct sentences."""
    body = [f"Document {index}\n{'=' * 12}\n", "An example of the usage::\n\n   print('code is dropped')\n"]
    for p in range(paragraphs):
        body.append(" ".join(_sentence(index * 31 + p * 5 + s) for s in range(4)) + "\n")
    return "\n".join(body)


@pytest.fixture()
def corpus(tmp_path, monkeypatch):
    """60 hand-made documents where python3-doc would install its sources."""
    root = tmp_path / "_sources"
    for index in range(60):
        folder = root / ("library" if index % 2 else "howto")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"doc{index}.rst.txt").write_text(_document(index))
    monkeypatch.setattr(realtext, "SEARCH_PATHS", (str(root),))
    return root


def _has_pydocs() -> bool:
    try:
        realtext.find_root()
    except DataSpecError:
        return False
    return True


def _require_pydocs() -> None:
    if not _has_pydocs():
        pytest.fail(f"the Python docs are not installed: {realtext.INSTALL_HINT} (`make test` installs them)")


# ---------------------------------------------------------------------------------------------
# rST -> paragraphs -> passages


RST = """\
.. _tut-intro:

*******************
An Informal Example
*******************

.. module:: spam
   :synopsis: A module that nobody should import in production code.

Python is a programming language that lets you work quickly and integrate
systems more effectively, as the :ref:`tutorial <tut-intro>` shows.

For example::

   >>> print("this is code")
   this is code

.. function:: frobnicate(x, y)

   Return the frobnicated value of *x* and *y*, as :func:`~spam.helpers.frob`
   would; see ``frob()`` for details on the **algorithm** used.

   .. versionchanged:: 3.9
      The function also accepts negative numbers for both of its arguments now.

.. code-block:: python

   def spam():
       return "eggs and more eggs for everyone here"

.. note:: Notes are kept: this one explains something important to the reader.

=====  =====================================
Name   Meaning of the name in the table here
=====  =====================================
a      the first letter of the alphabet here
=====  =====================================

* The first item of a compact list has enough words to be kept.
* The second item of the same list also has enough words to be kept.

.. This comment is dropped, however long and wordy it happens to be here.
"""


def test_rst_paragraphs_keep_the_prose_and_drop_the_markup():
    assert realtext.rst_paragraphs(RST) == [
        "Python is a programming language that lets you work quickly and integrate systems more effectively, "
        "as the tutorial shows.",
        "Return the frobnicated value of x and y, as frob would; see frob() for details on the algorithm used.",
        "The function also accepts negative numbers for both of its arguments now.",
        "Notes are kept: this one explains something important to the reader.",
        "The first item of a compact list has enough words to be kept.",
        "The second item of the same list also has enough words to be kept.",
    ]


def test_strip_inline_shows_literals_verbatim():
    text = r"Matches ``[^ \t\n]`` and \*args, ``*x*``, `Python <https://python.org>`_ [#]_ and :meth:`!str.join`."
    assert realtext.strip_inline(text) == r"Matches [^ \t\n] and *args, *x*, Python and str.join."


def test_chunk_passages_are_paragraph_aligned_and_in_range():
    short = ["a" * 400, "b" * 400, "c" * 400]  # two make a passage; the third alone is too short
    assert realtext.chunk_passages(short) == ["a" * 400 + "\n\n" + "b" * 400]
    sentences = [f"Sentence {k} " + "x" * 88 + "." for k in range(25)]  # one 2,600-character paragraph
    passages = realtext.chunk_passages(["Lead paragraph " + "y" * 300 + ".", " ".join(sentences)])
    assert passages and all(realtext.MIN_CHARS <= len(p) <= realtext.MAX_CHARS for p in passages)
    assert passages[0].startswith("Lead paragraph")  # whole paragraphs first, then sentence runs
    assert all(part in " ".join(sentences) for p in passages[1:] for part in p.split("\n\n"))
    assert realtext.chunk_passages(["z" * 1300]) == []  # an unsplittable paragraph is dropped


def test_split_of_is_stable_and_about_10_80_10():
    names = [f"library/module{k}" for k in range(3000)]
    splits = [realtext.split_of(name) for name in names]
    assert splits == [realtext.split_of(name) for name in names]
    for split, share in (("calib", 0.1), ("train", 0.8), ("test", 0.1)):
        assert abs(splits.count(split) / len(names) - share) < 0.03


# ---------------------------------------------------------------------------------------------
# Splits and samples


def _check_splits(root=None):
    documents = {split: realtext.passages_by_document(split, root) for split in realtext.SPLITS}
    names = [set(by_document) for by_document in documents.values()]
    assert all(names) and not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    for split in realtext.SPLITS:
        samples = realtext.load_passages(split, root=root)
        assert {sample["source"] for sample in samples} <= {f"pydocs/{name}" for name in documents[split]}
        assert all(realtext.MIN_CHARS <= len(sample["text"]) <= realtext.MAX_CHARS for sample in samples)
        assert all(sample["images"] == [] and sample["texts"] == [] and sample["text"].strip() for sample in samples)
    return documents


def test_splits_share_no_document_and_passages_are_in_range(corpus):
    _check_splits(corpus)


def test_load_passages_is_deterministic_for_a_seed(corpus):
    first = realtext.load_passages("train", None, seed=3)
    assert first == realtext.load_passages("train", None, seed=3)
    assert realtext.load_passages("train", 7, seed=3) == first[:7]
    other = realtext.load_passages("train", None, seed=4)
    assert other != first and sorted(map(str, other)) == sorted(map(str, first))


def test_a_missing_corpus_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(realtext, "SEARCH_PATHS", (str(tmp_path / "nothing"),))
    with pytest.raises(DataSpecError, match="apt-get install -y python3-doc"):
        parse_data_spec("pydocs")


def test_the_spec_loads_plain_text_samples_and_a_test_split(corpus):
    assert parse_data_spec("pydocs").kind == "text"
    samples = load_samples("pydocs", "calib", 5)
    assert len(samples) == 5 and all(s["source"].startswith("pydocs/") and s["images"] == [] for s in samples)
    stream = iter_samples("pydocs", "test", 3)
    assert len(list(stream)) == 3 and stream.stats.kept == 3
    with pytest.raises(DataSpecError, match="no held-out 'test' split"):
        iter_samples("embedded", "test", 3)


def test_jsonl_rows_of_plain_text_load_as_plain_text_samples(tmp_path):
    path = tmp_path / "notes.jsonl"
    rows = [{"text": "The first passage."}, {"text": "The second one.", "source": "mine"}, {"text": "  "}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert parse_data_spec(str(path)).kind == "json"
    stream = iter_samples(str(path), "train", max_bad_fraction=0.5)
    assert list(stream) == [
        {"images": [], "texts": [], "text": "The first passage.", "source": "notes"},
        {"images": [], "texts": [], "text": "The second one.", "source": "mine"},
    ]
    assert stream.stats.skipped == {"empty_texts": 1}
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": ""}) + "\n")
    with pytest.raises(DataSpecError, match="plain-text rows has a non-empty 'text'"):
        parse_data_spec(str(empty))


def test_the_installed_python_docs_are_a_large_split_corpus():
    _require_pydocs()
    documents = _check_splits()
    words = sum(len(p.split()) for by_document in documents.values() for ps in by_document.values() for p in ps)
    assert sum(map(len, documents.values())) >= 300 and words >= 300_000


# ---------------------------------------------------------------------------------------------
# Items built from passages


CLOZE = (
    "The loader reads every file in the folder before it starts. Each file is parsed once and kept in memory. "
    "When the parse fails, the loader reports the line that broke it and stops at the first broken carpet. "
    "Nothing else depends on them."  # "them" is a function word: the sentence before gives the item
)


def test_cloze_item_takes_the_last_qualifying_sentence():
    item = cloze_item(CLOZE, "pydocs/x")
    assert item == ClozeItem(CLOZE[: CLOZE.index(" carpet.")], " carpet", "pydocs/x")
    assert cloze_item("Short text that ends in Python.") is None
    assert trim_context("One two. Three four five. Six seven.", 20) == "Six seven."


def _passage(index: int) -> str:
    return " ".join(_sentence(index * 5 + k) for k in range(8))


def test_continuation_split_cuts_at_a_sentence_near_the_middle():
    text = _passage(0)
    context, continuation = continuation_split(text, context_chars=10_000)
    assert text.startswith(context + continuation) and continuation.startswith(" ") and context.endswith(".")
    assert abs(len(context) - len(text) / 2) < len(continuation) + 2


def test_choice_items_are_deterministic_and_hold_the_true_continuation():
    samples = [{"text": _passage(k), "source": f"pydocs/doc{k % 5}"} for k in range(12)]
    items = choice_items(samples, 6, seed=1)
    assert items == choice_items(samples, 6, seed=1) and len(items) == 6
    truths = {continuation_split(s["text"])[1]: s["source"] for s in samples}
    for item in items:
        assert len(set(item.choices)) == 4 and truths[item.choices[item.answer]] == item.source
        assert all(truths[choice] != item.source for k, choice in enumerate(item.choices) if k != item.answer)
    assert choice_items(samples, 6, seed=2) != items  # another seed, other draws


def test_ppl_retention():
    assert ppl_retention(20.0, 25.0) == pytest.approx(0.8)
    assert ppl_retention(0.0, 1.0) is None  # undefined, reported as n/a (interlace.evaluation.suites.retention)
    assert ppl_retention(20.0, float("inf")) is None


# ---------------------------------------------------------------------------------------------
# Scoring on a tiny random Llama


@pytest.fixture(scope="module")
def tiny():
    vocab = {"[UNK]": 0, "[PAD]": 1, ".": 2, **{word: 3 + k for k, word in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval(), tokenizer


def test_perplexity_matches_a_hand_computation(tiny):
    model, tokenizer = tiny
    samples = [{"text": " ".join(WORDS[k : k + length])} for k, length in ((0, 9), (3, 4), (5, 12))]
    total, count = 0.0, 0
    for sample in samples:
        ids = torch.tensor([tokenizer(sample["text"])["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss  # the mean over the sequence's len - 1 targets
        total, count = total + loss.item() * (ids.shape[1] - 1), count + ids.shape[1] - 1
    ppl, tokens = perplexity(model, tokenizer, samples, batch_size=2)  # padded batches
    assert tokens == count == 21 and ppl == pytest.approx(math.exp(total / count), rel=1e-5)
    assert perplexity(model, tokenizer, samples, max_length=4)[1] == 9


def test_choice_logprobs_match_full_sequences(tiny):
    model, tokenizer = tiny
    context, choices = "alpha bravo charlie delta", [" echo foxtrot", " golf", " hotel india juliet kilo"]
    context_ids = tokenizer(context)["input_ids"]
    expected = []
    for choice in choices:
        ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([context_ids + ids])).logits[0], -1)
        expected.append(sum(logprobs[len(context_ids) - 1 + j, token].item() for j, token in enumerate(ids)))
    assert choice_logprobs(model, tokenizer, context, choices) == pytest.approx(expected, abs=1e-4)


def test_cloze_hits_is_greedy_exact_match(tiny):
    model, tokenizer = tiny
    context = "alpha bravo charlie delta echo"
    ids = torch.tensor([tokenizer(context)["input_ids"]])
    with torch.no_grad():
        greedy = model.generate(ids, max_new_tokens=1, do_sample=False, pad_token_id=1)[0, -1].item()
    word = tokenizer.convert_ids_to_tokens(greedy)
    other = next(w for w in WORDS if w != word)
    items = [ClozeItem(context, " " + word, "x"), ClozeItem(context, " " + other, "x")]
    assert cloze_hits(model, tokenizer, items) == [True, False]
    assert cloze_items([{"text": CLOZE, "source": "a"}, {"text": "No item here.", "source": "b"}], 5)[0].target == " carpet"


# ---------------------------------------------------------------------------------------------
# The real model on the real corpus


def _smollm2():
    try:
        zoo.gguf_path(zoo.SMOLLM2)
    except zoo.RealModelUnavailable as error:
        pytest.fail(f"the real model is not installed: {error} (`make test` installs it)")
    if not _has_pydocs():
        pytest.fail(f"the Python docs are not installed: {realtext.INSTALL_HINT} (`make test` installs them)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = zoo.materialize("smollm2")
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.mark.slow
def test_dense_smollm2_reads_held_out_english():
    from interlace.evaluation.text import evaluate_text

    model, tokenizer = _smollm2()
    start = time.monotonic()
    result = evaluate_text(model, tokenizer, n=12, items=25, progress=False)
    # Dense SmolLM2-135M on the full default evaluation: ppl 26.1, continuation 0.59, cloze 0.33.
    assert 5 < result.perplexity < 60 and result.tokens > 1000
    assert result.tasks["continuation"] > 0.35  # chance is 0.25
    assert set(result.tasks) == {"continuation", "cloze"} and result.n == 50
    assert time.monotonic() - start < 120  # about 40 s on one CPU thread
