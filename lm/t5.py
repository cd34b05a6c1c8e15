"""A T5 v1.1 / Flan-T5 encoder in JAX/NNX, loaded from a Hugging Face checkpoint in a local directory.

VideoPoet's text path: frozen T5-XL embeddings. The directory is what `huggingface-cli download
google/flan-t5-xl` leaves: `config.json`, `tokenizer.json` and `model.safetensors` (or the sharded
`model.safetensors.index.json` + `model-0000N-of-0000M.safetensors`). Only `encoder.*` and `shared.*`
weights are read (the decoder's are ignored); a missing or mis-shaped one is an error naming the key.

Layout (v1.1): pre-norm RMSNorm without bias, self-attention with relative position buckets (one
bias table, in block 0, shared by all blocks; no 1/sqrt(K) scaling, T5 folds it into the weights),
gated-GELU MLP (tanh GELU of wi_0 times wi_1), no absolute positions. Weights carry logical axis
names (`embed`, `heads`, `head_dim`, `mlp`, `vocab`), so inside a mesh a T5-XL shards like the LM.

Shape letters: B batch, S tokens, D width, N heads, K head dim, F MLP width, V vocab.
"""
from __future__ import annotations

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lm.text_encoder import EncoderError, TextEncoder, fingerprint_of, load_safetensors, take
from sharding import param, shard

_NEG = -1e9  # masked attention scores: finite, so a fully masked row is never NaN


class T5Norm(nnx.Module):
  """T5's LayerNorm: scale only, no mean subtraction (RMSNorm), in float32."""

  def __init__(self, w: np.ndarray, eps: float):
    self.eps = eps
    self.scale = param(jnp.asarray(w), ("norm",))

  def __call__(self, x):
    return x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + self.eps) * self.scale[...]


def relative_buckets(q_len: int, k_len: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """T5's bidirectional relative-position bucket of each (query, key) pair, [Q, K].

  Half the buckets for keys after the query; in each half, exact buckets for distances below
  num_buckets/4 and logarithmically wider ones up to max_distance (then clipped).
  """
  rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
  half = num_buckets // 2
  out = (rel > 0).astype(np.int64) * half
  dist = np.abs(rel)
  exact = half // 2
  with np.errstate(divide="ignore"):
    large = exact + (np.log(np.maximum(dist, 1) / exact) / math.log(max_distance / exact)
                     * (half - exact)).astype(np.int64)
  return out + np.where(dist < exact, dist, np.minimum(large, half - 1))


class T5Block(nnx.Module):
  def __init__(self, w: dict, i: int, cfg: dict, source: str):
    d, n, k, f = cfg["d_model"], cfg["num_heads"], cfg["d_kv"], cfg["d_ff"]
    p = f"encoder.block.{i}.layer"
    eps = cfg.get("layer_norm_epsilon", 1e-6)
    self.norm_attn = T5Norm(take(w, f"{p}.0.layer_norm.weight", (d,), source), eps)
    for name in ("q", "k", "v"):
      wt = take(w, f"{p}.0.SelfAttention.{name}.weight", (n * k, d), source).T.reshape(d, n, k)
      setattr(self, f"w{name}_dnk", param(jnp.asarray(wt), ("embed", "heads", "head_dim")))
    wo = take(w, f"{p}.0.SelfAttention.o.weight", (d, n * k), source).T.reshape(n, k, d)
    self.wo_nkd = param(jnp.asarray(wo), ("heads", "head_dim", "embed"))
    self.norm_mlp = T5Norm(take(w, f"{p}.1.layer_norm.weight", (d,), source), eps)
    self.wi0_df = param(jnp.asarray(take(w, f"{p}.1.DenseReluDense.wi_0.weight", (f, d), source).T), ("embed", "mlp"))
    self.wi1_df = param(jnp.asarray(take(w, f"{p}.1.DenseReluDense.wi_1.weight", (f, d), source).T), ("embed", "mlp"))
    self.wo_fd = param(jnp.asarray(take(w, f"{p}.1.DenseReluDense.wo.weight", (d, f), source).T), ("mlp", "embed"))

  def __call__(self, x_bsd, bias_bnqs):
    h = self.norm_attn(x_bsd)
    q = jnp.einsum("bsd,dnk->bsnk", h, self.wq_dnk[...])
    k = jnp.einsum("bsd,dnk->bsnk", h, self.wk_dnk[...])
    v = jnp.einsum("bsd,dnk->bsnk", h, self.wv_dnk[...])
    scores = jnp.einsum("bqnk,bsnk->bnqs", q, k) + bias_bnqs
    o = jnp.einsum("bnqs,bsnk->bqnk", jax.nn.softmax(scores, axis=-1), v)
    x_bsd = x_bsd + jnp.einsum("bqnk,nkd->bqd", o, self.wo_nkd[...])
    h = self.norm_mlp(x_bsd)
    g = shard(jax.nn.gelu(h @ self.wi0_df[...], approximate=True) * (h @ self.wi1_df[...]),
              "act_batch", "act_length", "act_mlp")
    return shard(x_bsd + g @ self.wo_fd[...], "act_batch", "act_length", "act_embed")


class T5Stack(nnx.Module):
  """The encoder of a Hugging Face T5 state dict: embeddings, blocks, final norm."""

  def __init__(self, w: dict, cfg: dict, source: str):
    d, n, v = cfg["d_model"], cfg["num_heads"], cfg["vocab_size"]
    self.dim = d
    self.num_buckets = cfg.get("relative_attention_num_buckets", 32)
    self.max_distance = cfg.get("relative_attention_max_distance", 128)
    emb_key = "shared.weight" if "shared.weight" in w else "encoder.embed_tokens.weight"
    self.embed_vd = param(jnp.asarray(take(w, emb_key, (v, d), source)), ("vocab", "embed"))
    self.rel_bias_rn = param(jnp.asarray(take(
        w, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", (self.num_buckets, n), source)),
        (None, "heads"))
    self.blocks = nnx.List([T5Block(w, i, cfg, source) for i in range(cfg["num_layers"])])
    self.final_norm = T5Norm(take(w, "encoder.final_layer_norm.weight", (d,), source),
                             cfg.get("layer_norm_epsilon", 1e-6))

  def __call__(self, ids_bs, mask_bs):
    s = ids_bs.shape[1]
    buckets_qs = relative_buckets(s, s, self.num_buckets, self.max_distance)
    bias_nqs = jnp.transpose(self.rel_bias_rn[...][buckets_qs], (2, 0, 1))
    bias_bnqs = bias_nqs[None] + jnp.where(mask_bs[:, None, None, :], 0.0, _NEG)
    x = self.embed_vd[...][ids_bs]
    for block in self.blocks:
      x = block(x, bias_bnqs)
    return self.final_norm(x)


_EXPECTED = ("encoder.", "shared.", "decoder.", "lm_head.")


def read_checkpoint(directory: pathlib.Path) -> tuple[dict, list[pathlib.Path]]:
  """config.json and the safetensors files of a local HF T5 directory; errors name what is missing."""
  if not directory.is_dir():
    raise EncoderError(f"T5 directory {directory} does not exist; download one, e.g. "
                       "`huggingface-cli download google/flan-t5-xl --local-dir DIR`, and pass DIR.")
  for name in ("config.json", "tokenizer.json"):
    if not (directory / name).is_file():
      raise EncoderError(f"T5 directory {directory} has no {name}; it needs config.json, tokenizer.json and "
                         "model.safetensors (or model.safetensors.index.json with its shards).")
  cfg = json.loads((directory / "config.json").read_text())
  proj = cfg.get("feed_forward_proj", "gated-gelu")
  if proj != "gated-gelu":
    raise EncoderError(f"{directory}/config.json: feed_forward_proj={proj!r}; only T5 v1.1 / Flan-T5's "
                       "'gated-gelu' layout is supported (the original T5's ReLU MLP is not).")
  index = directory / "model.safetensors.index.json"
  if index.is_file():
    files = sorted({directory / f for f in json.loads(index.read_text())["weight_map"].values()})
  elif (directory / "model.safetensors").is_file():
    files = [directory / "model.safetensors"]
  else:
    raise EncoderError(f"T5 directory {directory} has no model.safetensors (nor model.safetensors.index.json); "
                       "convert a pytorch_model.bin to safetensors first.")
  return cfg, files


class T5Encoder(TextEncoder):
  """T5 v1.1 / Flan-T5 encoder from a local Hugging Face directory (any size; T5-XL as VideoPoet)."""
  name = "t5"

  def __init__(self, directory: str | pathlib.Path):
    from tokenizers import Tokenizer
    directory = pathlib.Path(directory)
    cfg, files = read_checkpoint(directory)
    weights = load_safetensors(files)
    unknown = sorted(k for k in weights if not k.startswith(_EXPECTED))
    if unknown:
      raise EncoderError(f"{directory}: unexpected weight {unknown[0]!r} ({len(unknown)} unknown keys); "
                         "is this a T5 checkpoint?")
    module = T5Stack(weights, cfg, str(directory))
    used = {k for k in weights if k.startswith(("encoder.", "shared."))}
    expected = {"encoder.final_layer_norm.weight", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias"
                ".weight"} | {f"encoder.block.{i}.layer.{j}.{n}" for i in range(cfg["num_layers"]) for j, names in
                              ((0, _ATTN), (1, _MLP)) for n in names}
    extra = sorted(used - expected - {"shared.weight", "encoder.embed_tokens.weight"})
    if extra:
      raise EncoderError(f"{directory}: encoder weight {extra[0]!r} has no place in a {cfg['num_layers']}-block "
                         "T5 v1.1 encoder; config.json's num_layers does not match the checkpoint.")
    tok_path = directory / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tok_path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    stamp = json.dumps(cfg, sort_keys=True).encode() + b"".join(_file_stamp(f) for f in files)
    super().__init__(module, tokenizer, pad_id=cfg.get("pad_token_id", 0), max_positions=cfg.get("n_positions", 512),
                     fingerprint=fingerprint_of(self.name, stamp, tok_path.read_bytes()))


_ATTN = ("layer_norm.weight",) + tuple(f"SelfAttention.{n}.weight" for n in "qkvo")
_MLP = ("layer_norm.weight", "DenseReluDense.wi_0.weight", "DenseReluDense.wi_1.weight", "DenseReluDense.wo.weight")


def _file_stamp(path: pathlib.Path, edge: int = 4 << 20) -> bytes:
  """Name, size and the first and last 4 MiB of a weights file: tells checkpoints apart without hashing
  a T5-XL's 11 GB (safetensors' header, at the start, lists every tensor's name, dtype and offsets)."""
  size = path.stat().st_size
  with path.open("rb") as f:
    head = f.read(edge)
    f.seek(max(size - edge, 0))
    return path.name.encode() + str(size).encode() + head + f.read(edge)
