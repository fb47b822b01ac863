"""Healing objectives on hand-made logits, and KD / anchor healing on the embedded model."""

import copy
import math

import pytest
import torch

from interlace.data import vqa
from interlace.heal.loop import HealConfig, heal
from interlace.heal.losses import ce_sum, hidden_mse_sum, kd_sum, objective
from interlace.loading import load_model
from interlace.surgery import remove_layers

IGN = -100


def test_kd_is_zero_for_identical_logits_and_matches_a_hand_computed_kl():
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, IGN, 2], [IGN, IGN, 4]])
    assert kd_sum(logits, logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.tensor([[[0.0, 0.0]]])
    teacher = torch.tensor([[[math.log(3.0), 0.0]]])  # p = (0.75, 0.25), q = (0.5, 0.5)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_sum(student, teacher, torch.tensor([[0]])).item() == pytest.approx(expected, rel=1e-5)
    # temperature 2 halves the logits and multiplies the KL by 4
    t2 = kd_sum(student, teacher, torch.tensor([[0]]), temperature=2.0).item()
    p = torch.softmax(teacher[0, 0] / 2, -1)
    assert t2 == pytest.approx(4 * float((p * (p.log() - math.log(0.5))).sum()), rel=1e-5)


def test_top_k_restricts_the_kl_to_the_teachers_best_tokens():
    teacher = torch.tensor([[[5.0, 4.0, -9.0, -9.0]]])
    student = torch.tensor([[[5.0, 4.0, 9.0, 9.0]]])
    labels = torch.tensor([[0]])
    assert kd_sum(student, teacher, labels, top_k=2).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_sum(student, teacher, labels).item() > 1.0


def test_objective_mixes_and_masks():
    logits, teacher = torch.randn(1, 4, 6), torch.randn(1, 4, 6)
    labels = torch.tensor([[IGN, 3, 1, IGN]])
    ce, kd = ce_sum(logits, labels), kd_sum(logits, teacher, labels)
    assert objective("kd+ce", logits, labels, teacher, 0.25, 1.0, 0).item() == pytest.approx((0.75 * ce + 0.25 * kd).item(), rel=1e-6)
    assert objective("ce", logits, labels, None, 0.5, 1.0, 0).item() == pytest.approx(ce.item())
    with pytest.raises(ValueError, match="teacher"):
        objective("kd", logits, labels, None, 0.5, 1.0, 0)
    h = torch.zeros(1, 4, 2)
    assert hidden_mse_sum(h + 1, h, labels).item() == pytest.approx(2.0)  # two answer positions, mse 1 each


def test_kd_with_anchor_loss_heals_the_embedded_model():
    model, processor = load_model(None)
    teacher = copy.deepcopy(model)
    remove_layers(model, [5])  # survivor 4 finetunes, original layer 6 (now 5) is the anchor
    samples = vqa.load_split("calib", 8)[:32]
    config = HealConfig(lr=1e-3, batch_size=16, micro_batch_size=8, loss="kd+ce", kd_top_k=8, anchor_weight=1.0)
    result = heal(model, processor, samples, [4], config, progress=False, teacher=teacher, anchor_pairs=[(5, 6)])
    assert result.steps == 2 and all(math.isfinite(v) for v in result.losses)
    assert all(not p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="loss must be"):
        HealConfig(loss="mse")


def test_lora_healing_merges_into_a_plain_model():
    model, processor = load_model(None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    samples = vqa.load_split("calib", 8)[:16]
    config = HealConfig(lr=1e-2, batch_size=8, micro_batch_size=8, method="lora", lora_rank=4)
    result = heal(model, processor, samples, [3, 7], config, progress=False)
    after = dict(model.named_parameters())
    assert set(after) == set(before), "adapters must be merged away"
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".layers.3." in n or ".layers.7." in n for n in changed)
    assert all("proj" in n for n in changed)  # only linear weights of the chosen layers moved
    assert result.trainable_parameters < sum(before[n].numel() for n in before if ".layers.3." in n)


def test_lora_healing_keeps_train_lm_head():
    # a regression: LoRA healing froze everything again after set_trainable and dropped the lm_head
    model, processor = load_model(None)
    head = model.get_output_embeddings().weight.detach().clone()
    samples = vqa.load_split("calib", 8)[:16]
    config = HealConfig(lr=1e-2, batch_size=8, micro_batch_size=8, method="lora", lora_rank=4, train_lm_head=True)
    heal(model, processor, samples, [3], config, progress=False)
    assert not torch.equal(head, model.get_output_embeddings().weight)


def test_lora_healing_depends_only_on_the_seed():
    # The adapters were initialised from the caller's RNG state, before heal() seeded it.
    samples = vqa.load_split("calib", 8)[:16]
    config = HealConfig(lr=1e-2, batch_size=8, micro_batch_size=8, method="lora", lora_rank=4, seed=3)
    healed = []
    for caller_seed in (0, 1):
        torch.manual_seed(caller_seed)
        model, processor = load_model(None)
        heal(model, processor, samples, [3], config, progress=False)
        healed.append({n: p.detach().clone() for n, p in model.named_parameters() if ".layers.3." in n})
    assert all(torch.equal(healed[0][n], healed[1][n]) for n in healed[0])
