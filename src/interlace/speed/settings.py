"""What `interlace bench` measures: ``BenchSettings``, and the ``--image-size`` it parses.

Apart from ``interlace.speed.bench`` (which runs the measurement, with torch) so that the CLI can
generate bench's flags from these fields (``interlace.cli.flags.settings_flags``) without
importing torch before it has checked ``--threads``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_IMAGE = (448, 448)  # image_size="auto" on a vision-language model
# Upper bounds that no real measurement needs, and beyond which the run would only exhaust memory
# or time: a prompt longer than any supported model's context (Qwen3-VL: 256K tokens), an image
# side far beyond what the processors resize to (Qwen-VL caps at ~16M pixels), runs without end.
LIMITS = {"prompt_tokens": 2**18, "new_tokens": 2**14, "repeats": 1000, "warmup": 100}
MAX_IMAGE_SIDE = 8192


@dataclass(frozen=True)
class BenchSettings:
    """What to measure.

    Attributes:
        prompt_tokens: text tokens in the prompt (image tokens come on top).
        image_size: (height, width) of the one synthetic image, None for a text-only prompt, or
            "auto": 448x448 for a vision-language model, no image for a text-only one.
        new_tokens: tokens generated per run (>= 2: the first comes from prefill).
        repeats: measured runs per model (medians are reported).
        warmup: unmeasured rounds before the first measured one.
        threads: torch CPU threads during the benchmark (0 keeps torch's setting); ignored on GPU.
        seed: seed of the random prompt tokens and pixels.
    """

    prompt_tokens: int = 512
    image_size: tuple[int, int] | None | str = "auto"
    new_tokens: int = 32
    repeats: int = 5
    warmup: int = 1
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        errors = [f"{name} must be >= {low}, got {getattr(self, name)}" for name, low in
                  (("prompt_tokens", 1), ("new_tokens", 2), ("repeats", 1), ("warmup", 0), ("threads", 0))
                  if getattr(self, name) < low]
        errors += [f"{name} must be at most {high} (a longer run measures nothing more), got {getattr(self, name)}"
                   for name, high in LIMITS.items() if getattr(self, name) > high]
        if isinstance(self.image_size, str) and self.image_size != "auto":
            errors.append(f"image_size must be (height, width), None or 'auto', got {self.image_size!r}")
        elif isinstance(self.image_size, tuple) and (len(self.image_size) != 2 or min(self.image_size) < 1):
            errors.append(f"image_size must be positive (height, width), got {self.image_size}")
        elif isinstance(self.image_size, tuple) and max(self.image_size) > MAX_IMAGE_SIDE:
            errors.append(f"image_size must be at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} (processors resize far below), "
                          f"got {self.image_size[0]}x{self.image_size[1]}")
        if errors:
            raise ValueError("; ".join(errors))

    @classmethod
    def fast(cls, **overrides: Any) -> BenchSettings:
        """Few short runs: a rough speedup for ``interlace compare`` in seconds, not a measurement to publish."""
        return cls(**{"prompt_tokens": 128, "new_tokens": 8, "repeats": 2, "warmup": 1, **overrides})


def parse_image_size(text: str | None) -> tuple[int, int] | None | str:
    """``"448x448"`` -> (448, 448); ``"none"`` or None -> None (no image); ``"auto"`` stays ``"auto"``."""
    if text is None or text.lower() == "none":
        return None
    if text.lower() == "auto":
        return "auto"
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--image-size must look like 448x448 (height x width), 'none' or 'auto', got {text!r}")
    return int(parts[0]), int(parts[1])
