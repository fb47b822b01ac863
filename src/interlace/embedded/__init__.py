"""The embedded default: a tiny LLaVA (CLIP + Qwen3) trained by this project on its visual-QA suite."""

from pathlib import Path

EMBEDDED_NAME = "embedded"
MODEL_DIR = Path(__file__).parent / "model"
