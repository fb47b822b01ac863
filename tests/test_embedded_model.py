"""The shipped embedded model loads with plain transformers Auto classes and answers the suite."""

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from interlace.data import vqa
from interlace.data.chat import prompt_text
from interlace.embedded import MODEL_DIR


def test_plain_auto_classes_load_and_generate():
    model = AutoModelForImageTextToText.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(MODEL_DIR)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert model.config.text_config.num_hidden_layers == 12
    sample = vqa.load_split("test", 1, tasks=("digit_sum",))[0]
    inputs = processor(text=[prompt_text(processor, sample)], images=[sample["images"]], return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    answer = processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert answer.isdigit() and 0 <= int(answer) <= 18


def test_weights_are_small_half_precision_safetensors():
    files = list(MODEL_DIR.glob("*.safetensors"))
    assert files and sum(f.stat().st_size for f in files) <= 20 * 2**20
    from safetensors import safe_open

    with safe_open(files[0], "pt") as handle:
        assert {handle.get_tensor(k).dtype for k in handle.keys()} == {torch.float16}



def test_shipped_processor_matches_the_one_the_trainer_builds():
    # The shipped weights were trained with this template and these token ids: a drift in build.py
    # without retraining would silently change every prompt the model sees.
    from embedded_build import CHAT_TEMPLATE, build_tokenizer

    processor = AutoProcessor.from_pretrained(MODEL_DIR)
    assert processor.chat_template == CHAT_TEMPLATE
    built = build_tokenizer().get_vocab()
    assert all(built[token] == index for token, index in processor.tokenizer.get_vocab().items())
