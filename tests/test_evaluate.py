"""The built-in evaluator, driven by scripted answerers standing in for the model under evaluation."""

import torch

from embedded_build import build_processor
from interlace.data import vqa
from interlace.evaluation.generate import evaluate, normalise, score


class ScriptedModel:
    """Answers from a fixed list, in order, through a transformers-style ``generate``."""

    def __init__(self, tokenizer, answers):
        self.tokenizer = tokenizer
        self.answers = list(answers)

    def generate(self, input_ids, attention_mask=None, max_new_tokens=8, **kwargs):
        assert kwargs["do_sample"] is False and input_ids.shape == attention_mask.shape
        rows = []
        for row in input_ids:
            reply = self.tokenizer(self.answers.pop(0), add_special_tokens=False)["input_ids"]
            reply = (reply + [self.tokenizer.eos_token_id])[:max_new_tokens]
            reply += [self.tokenizer.pad_token_id] * (max_new_tokens - len(reply))
            rows.append(torch.cat([row, torch.tensor(reply)]))
        return torch.stack(rows)


def test_correct_answers_score_one_and_wrong_answers_zero():
    processor = build_processor()
    samples = vqa.load_split("test", 7)
    truth = [s["texts"][0]["assistant"] for s in samples]
    right = evaluate(ScriptedModel(processor.tokenizer, truth), processor, samples, batch_size=5, progress=False)
    assert right.overall == 1.0 and set(right.tasks.values()) == {1.0} and right.n == len(samples)
    assert set(right.tasks) == set(vqa.TASKS)
    wrong_answers = ["no" if t == "yes" else "yes" for t in truth]
    wrong = evaluate(ScriptedModel(processor.tokenizer, wrong_answers), processor, samples, batch_size=4, progress=False)
    assert wrong.overall == 0.0 and set(wrong.tasks.values()) == {0.0}


def test_score_averages_samples_and_tasks_separately():
    samples = [
        {"images": [], "texts": [{"user": "q", "assistant": "3"}], "source": "a"},
        {"images": [], "texts": [{"user": "q", "assistant": "red circle"}], "source": "b"},
        {"images": [], "texts": [{"user": "q", "assistant": "4"}], "source": "b"},
    ]
    result = score(samples, ["3", "Red  circle.", "5"])
    assert result.tasks == {"a": 1.0, "b": 0.5}
    assert abs(result.overall - 2 / 3) < 1e-9
    assert result.to_json() == {"overall": result.overall, "tasks": result.tasks, "n": 3, "counts": {"a": 1, "b": 2}}


def test_normalise_only_forgives_case_space_and_a_final_period():
    assert normalise(" Red   Circle. ") == "red circle"
    assert normalise("12") != normalise("1 2")
