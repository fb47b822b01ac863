"""Healing data off the training loop: DataLoader workers, length grouping, packing, and
length-grouped calibration."""

import copy

import numpy as np
import pytest
import torch

from interlace.calibration import compute_scores, length_order
from interlace.data import sources, vqa
from interlace.data.chat import IGNORE_INDEX, collate, encode_for_training, tokenizer_of
from interlace.heal.data import (
    StepDataset,
    length_groups,
    pack,
    packing_problem,
    resolve_workers,
    step_batches,
    step_loader,
    step_order,
)
from interlace.heal.loop import HealConfig, heal
from interlace.heal.losses import ce_sum
from interlace.loading import load_model
from interlace.methods import select_layers
from test_text_models import QWEN_TEMPLATE, ROWS, SMOLLM2_TEMPLATE, tiny_checkpoint
from tiny_models import dense_model


@pytest.fixture(scope="module")
def embedded():
    return load_model(None, device="cpu")


def mixed_rows(n_per_task: int = 4) -> list[dict]:
    """Image rows, text-only rows and 3-turn rows: lengths that differ within a step."""
    rows = vqa.load_split("calib", n_per_task)
    out = []
    for i, row in enumerate(rows):
        if i % 3 == 1:
            out.append({**row, "images": []})
        elif i % 3 == 2:
            out.append({**row, "texts": [t for r in rows[i : i + 3] for t in r["texts"]][:3]})
        else:
            out.append(row)
    return out


def test_length_groups_keep_every_item_once_and_sort_within_a_key():
    keys = ["a", "b", "a", "a", "b", "a", "a"]
    lengths = [9, 4, 2, 7, 1, 2, 5]
    groups = length_groups(keys, lengths, 2)
    assert sorted(i for g in groups for i in g) == list(range(7))
    assert groups == [[2, 5], [6, 3], [0], [4, 1]]  # stable: equal lengths 2 keep input order
    assert all(len({keys[i] for i in g}) == 1 for g in groups)


def test_pack_restarts_positions_and_never_targets_the_next_samples_first_token():
    a = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3, dtype=torch.long),
         "labels": torch.tensor([[5, 6, 7]])}
    b = {"input_ids": torch.tensor([[8, 9]]), "attention_mask": torch.ones(1, 2, dtype=torch.long),
         "labels": torch.tensor([[IGNORE_INDEX, 9]])}
    packed = pack([a, b])
    assert "attention_mask" not in packed
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert packed["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]]
    assert a["labels"].tolist() == [[5, 6, 7]]  # the inputs are not modified


def test_worker_default_follows_the_device_and_the_spare_cores():
    assert resolve_workers(3, "cpu", cpus=2) == 3  # an explicit count is used as is
    assert resolve_workers(-1, "cpu", cpus=2, threads=2) == 0  # no spare core: a worker would slow training
    assert resolve_workers(-1, "cpu", cpus=2, threads=1) == 1
    assert resolve_workers(-1, "cuda", cpus=32, processes=8) == 3
    assert resolve_workers(-1, "cuda", cpus=64) == 4
    with pytest.raises(ValueError, match="data_workers must be -1"):
        HealConfig(data_workers=-2)


def _equal(a, b) -> bool:
    return len(a.micro_batches) == len(b.micro_batches) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a.micro_batches, b.micro_batches)
    )


def test_steps_do_not_depend_on_workers_or_on_where_the_run_resumes(embedded):
    _, processor = embedded
    samples = mixed_rows(2)
    config = HealConfig(batch_size=4, micro_batch_size=2, seed=3)
    dataset = StepDataset(processor, samples, step_order(len(samples), config), config)
    direct = [dataset[s] for s in range(len(dataset))]
    with_workers = list(step_loader(dataset, 0, workers=2))
    resumed = list(step_loader(dataset, 2, workers=2))
    assert len(direct) == len(with_workers) == len(resumed) + 2 >= 3
    assert all(_equal(a, b) for a, b in zip(direct, with_workers))
    assert all(_equal(a, b) for a, b in zip(direct[2:], resumed))


def _rows(batches) -> list[list[int]]:
    """Every sample's unpadded token ids, sorted: what a step trains on, whatever the batching."""
    rows = []
    for b in batches:
        mask = b["attention_mask"].bool()
        rows += [ids[m].tolist() for ids, m in zip(b["input_ids"], mask)]
    return sorted(rows)


def test_grouping_keeps_each_steps_samples_and_cuts_padding():
    _, processor = load_model(None, device="cpu")
    samples = mixed_rows(4)
    plain = HealConfig(batch_size=16, micro_batch_size=4, length_grouping=False)
    grouped = HealConfig(batch_size=16, micro_batch_size=4, length_grouping=True)
    indices = list(range(16))
    old, new = step_batches(processor, samples, indices, plain), step_batches(processor, samples, indices, grouped)
    assert _rows(old.micro_batches) == _rows(new.micro_batches)
    assert all(b["input_ids"].shape[0] <= 4 for b in new.micro_batches)
    assert new.tokens - new.padding == old.tokens - old.padding
    assert new.padding <= old.padding / 2


def _heal(model, processor, samples, **fields):
    cut = copy.deepcopy(model)
    config = HealConfig(lr=1e-3, batch_size=16, micro_batch_size=4, seed=0, **fields)
    result = heal(cut, processor, samples, [4, 7], config, progress=False)
    return result, cut.model.language_model.layers[4].mlp.down_proj.weight.detach()


def test_workers_give_exactly_the_loop_path_and_grouping_the_same_update(embedded):
    model, processor = embedded
    samples = mixed_rows(8)[:48]
    before, w_before = _heal(model, processor, samples, data_workers=0, length_grouping=False)
    workers, w_workers = _heal(model, processor, samples, data_workers=2, length_grouping=False)
    grouped, w_grouped = _heal(model, processor, samples, data_workers=2, length_grouping=True)
    assert before.losses == workers.losses and torch.equal(w_before, w_workers)
    assert before.answer_tokens == grouped.answer_tokens and before.tokens - before.padding_tokens == grouped.tokens - grouped.padding_tokens
    assert grouped.losses == pytest.approx(before.losses, rel=1e-5, abs=2e-6)
    moved = (w_before - model.model.language_model.layers[4].mlp.down_proj.weight).norm()
    assert (w_grouped - w_before).norm() <= 1e-4 * moved
    assert grouped.padding_tokens < before.padding_tokens
    assert 0 <= before.data_wait_seconds <= before.step_seconds <= before.wall_seconds


def test_fewer_samples_than_a_batch_heal_in_one_step(embedded):
    model, processor = embedded
    result, _ = _heal(model, processor, mixed_rows(1)[:5], data_workers=1)
    assert result.steps == 1 and len(result.losses) == 1 and result.samples == 5


def test_packed_micro_batch_equals_the_padded_one_on_cpu(embedded):
    """sdpa with transformers' packed-sequence mask (built from restarting position ids) keeps the
    samples apart: the packed loss and gradients equal the padded batch's."""
    model, processor = embedded
    model = copy.deepcopy(model).train()
    samples = [s for s in mixed_rows(2) if s["images"]][:3]
    encoded = [encode_for_training(processor, s) for s in samples]
    assert len({e["input_ids"].shape[1] for e in encoded}) > 1  # the padded batch really pads
    layer = model.model.language_model.layers[4].mlp.down_proj.weight

    def loss_and_grad(batch):
        batch = dict(batch)
        targets = batch.pop("labels")[:, 1:]
        model.zero_grad()
        loss = ce_sum(model(**batch, use_cache=False).logits[:, :-1], targets)
        loss.backward()
        return loss.detach(), layer.grad.clone()

    padded = loss_and_grad(collate(encoded, tokenizer_of(processor).pad_token_id))
    packed = loss_and_grad(pack(encoded))
    assert torch.allclose(packed[0], padded[0], rtol=1e-5)
    assert torch.allclose(packed[1], padded[1], rtol=1e-4, atol=1e-7)
    no_mask = loss_and_grad({**pack(encoded), "position_ids": torch.arange(sum(e["input_ids"].shape[1] for e in encoded))[None]})
    assert not torch.allclose(no_mask[0], padded[0], rtol=1e-3)  # without restarts the samples would mix


def test_packed_heal_matches_the_padded_heal(embedded):
    model, processor = embedded
    samples = mixed_rows(8)[:32]
    padded, _ = _heal(model, processor, samples, data_workers=0)
    packed, _ = _heal(model, processor, samples, data_workers=0, packing=True)
    assert packed.padding_tokens == 0 and packed.tokens == padded.tokens - padded.padding_tokens
    assert packed.losses == pytest.approx(padded.losses, rel=1e-5, abs=2e-6)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_packing_is_refused_for_multimodal_rotary_positions(embedded, family):
    _, processor = embedded
    model = dense_model(family)
    assert "multimodal (3-D) rotary positions" in packing_problem(model)
    with pytest.raises(ValueError, match=r"--packing\) cannot heal this model: .*use --no-packing"):
        heal(model, processor, mixed_rows(1)[:4], [1], HealConfig(batch_size=4, micro_batch_size=4, packing=True), progress=False)
    assert packing_problem(embedded[0]) is None and packing_problem(dense_model("llama")) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device with flash-attention 2")
def test_packed_heal_on_flash_attention_matches_the_padded_heal():
    pytest.importorskip("flash_attn")
    model, processor = load_model(None, device="cuda")
    model.set_attn_implementation("flash_attention_2")
    samples = mixed_rows(8)[:32]
    padded, _ = _heal(model, processor, samples, mixed_precision="bf16")
    packed, _ = _heal(model, processor, samples, mixed_precision="bf16", packing=True)
    assert packed.padding_tokens == 0
    assert packed.losses == pytest.approx(padded.losses, rel=2e-2)


# ------------------------------------------------------------------------------------ calibration


def _plans(model, processor, samples, batch_size):
    a = compute_scores(model, processor, samples, batch_size=batch_size, progress=False, length_grouping=False)
    b = compute_scores(model, processor, samples, batch_size=batch_size, progress=False, length_grouping=True)
    for k in a.similarity:
        np.testing.assert_allclose(a.s(k), b.s(k), rtol=1e-5, atol=1e-6)
    return [select_layers(m, s, 0.25).dropped for s in (a, b) for m in ("interlace", "shortgpt")]


def test_length_grouped_calibration_keeps_the_plan_on_the_embedded_model(embedded):
    model, processor = embedded
    samples = sources.load_samples("embedded", "calib", 48) + mixed_rows(2)
    interlace_a, shortgpt_a, interlace_b, shortgpt_b = _plans(model, processor, samples, 8)
    assert (interlace_a, shortgpt_a) == (interlace_b, shortgpt_b)
    order = length_order(processor, samples)
    assert sorted(order) == list(range(len(samples))) and order != list(range(len(samples)))


@pytest.mark.parametrize("family,template", [("llama", SMOLLM2_TEMPLATE), ("qwen3", QWEN_TEMPLATE)])
def test_length_grouped_calibration_keeps_the_plan_on_tiny_text_models(tmp_path, family, template):
    model, tokenizer = load_model(str(tiny_checkpoint(tmp_path / family, family, template)), device="cpu")
    plain = [{"images": [], "texts": [], "text": "the quick brown fox " * n, "source": "t"} for n in (1, 7, 3, 12, 2)]
    samples = (ROWS + plain) * 2
    interlace_a, shortgpt_a, interlace_b, shortgpt_b = _plans(model, tokenizer, samples, 4)
    assert (interlace_a, shortgpt_a) == (interlace_b, shortgpt_b)


@pytest.mark.slow
def test_length_grouped_calibration_keeps_the_plan_on_smollm2():
    model, tokenizer = load_model("smollm2", device="cpu")
    samples = sources.load_samples("pydocs", "calib", 64)
    interlace_a, shortgpt_a, interlace_b, shortgpt_b = _plans(model, tokenizer, samples, 32)
    assert (interlace_a, shortgpt_a) == (interlace_b, shortgpt_b)
