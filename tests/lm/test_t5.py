"""The T5 v1.1 encoder (lm/t5.py) loads a small random checkpoint written in Hugging Face's key layout.

A numpy forward pass written the way HF's modeling_t5 computes (Linear = x @ W.T, heads from a view
of the projection) must equal the JAX encoder: so every weight landed where it should.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

CFG = dict(d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2, vocab_size=40, relative_attention_num_buckets=8,
           relative_attention_max_distance=16, layer_norm_epsilon=1e-6, feed_forward_proj="gated-gelu",
           pad_token_id=0, eos_token_id=1, model_type="t5")
WORDS = ["pong", "table", "tennis", "video", "game", "underwater", "submarine", "shooter", "a", "the"]


def hf_weights(rng) -> dict[str, np.ndarray]:
  d, n, k, f, v = CFG["d_model"], CFG["num_heads"], CFG["d_kv"], CFG["d_ff"], CFG["vocab_size"]
  r = lambda *s: rng.normal(0, 0.3, s).astype(np.float32)
  w = {"shared.weight": r(v, d), "encoder.final_layer_norm.weight": 1 + r(d),
       "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": r(CFG["relative_attention_num_buckets"],
                                                                                 n),
       "decoder.final_layer_norm.weight": r(d), "lm_head.weight": r(v, d)}  # ignored by the encoder
  for i in range(CFG["num_layers"]):
    p = f"encoder.block.{i}.layer"
    w |= {f"{p}.0.layer_norm.weight": 1 + r(d), f"{p}.1.layer_norm.weight": 1 + r(d),
          f"{p}.1.DenseReluDense.wi_0.weight": r(f, d), f"{p}.1.DenseReluDense.wi_1.weight": r(f, d),
          f"{p}.1.DenseReluDense.wo.weight": r(d, f)}
    w |= {f"{p}.0.SelfAttention.{x}.weight": r(n * k, d) for x in "qkv"}
    w[f"{p}.0.SelfAttention.o.weight"] = r(d, n * k)
  return w


def write_checkpoint(directory, weights):
  from safetensors.numpy import save_file
  from tokenizers import Tokenizer, models, pre_tokenizers, processors
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(CFG))
  save_file(weights, str(directory / "model.safetensors"))
  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {t: 3 + i for i, t in enumerate(WORDS)}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  tok.save(str(directory / "tokenizer.json"))


def hf_bucket(rel, num_buckets, max_distance):  # transformers' T5Attention._relative_position_bucket, bidirectional
  num_buckets //= 2
  out = (rel > 0).astype(np.int64) * num_buckets
  rel = np.abs(rel)
  max_exact = num_buckets // 2
  large = max_exact + (np.log(rel.astype(np.float64) / max_exact + 1e-30) / math.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(np.int64)
  return out + np.where(rel < max_exact, rel, np.minimum(large, num_buckets - 1))


def hf_forward(w, ids_bs, mask_bs):
  n, k = CFG["num_heads"], CFG["d_kv"]
  norm = lambda x, s: x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * s
  gelu = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
  b, s = ids_bs.shape
  rel = np.arange(s)[None, :] - np.arange(s)[:, None]
  bias = w["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"][
      hf_bucket(rel, CFG["relative_attention_num_buckets"], CFG["relative_attention_max_distance"])]
  bias = bias.transpose(2, 0, 1)[None] + np.where(mask_bs[:, None, None, :], 0, -1e9)
  x = w["shared.weight"][ids_bs]
  for i in range(CFG["num_layers"]):
    p = f"encoder.block.{i}.layer"
    h = norm(x, w[f"{p}.0.layer_norm.weight"])
    q, kk, v = [(h @ w[f"{p}.0.SelfAttention.{t}.weight"].T).reshape(b, s, n, k).transpose(0, 2, 1, 3) for t in "qkv"]
    sc = q @ kk.transpose(0, 1, 3, 2) + bias
    a = np.exp(sc - sc.max(-1, keepdims=True))
    o = (a / a.sum(-1, keepdims=True)) @ v
    x = x + o.transpose(0, 2, 1, 3).reshape(b, s, n * k) @ w[f"{p}.0.SelfAttention.o.weight"].T
    h = norm(x, w[f"{p}.1.layer_norm.weight"])
    g = gelu(h @ w[f"{p}.1.DenseReluDense.wi_0.weight"].T) * (h @ w[f"{p}.1.DenseReluDense.wi_1.weight"].T)
    x = x + g @ w[f"{p}.1.DenseReluDense.wo.weight"].T
  return norm(x, w["encoder.final_layer_norm.weight"])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  weights = hf_weights(np.random.default_rng(0))
  directory = tmp_path_factory.mktemp("t5")
  write_checkpoint(directory, weights)
  return directory, weights


def test_t5_loads_hf_layout_and_matches_reference_forward(checkpoint):
  from lm.t5 import T5Encoder
  directory, weights = checkpoint
  enc = T5Encoder(directory)
  texts = ["pong table tennis video game", "underwater submarine shooter", "a game"]
  emb_bse, mask_bs = enc.encode(texts)
  ids = enc.token_ids(texts)
  assert ids[0] == [3, 4, 5, 6, 7, 1] and mask_bs.sum(1).tolist() == [6, 4, 3]
  ids_bs = np.zeros(mask_bs.shape, np.int64)
  for i, r in enumerate(ids):
    ids_bs[i, :len(r)] = r
  want = hf_forward(weights, ids_bs, mask_bs)
  np.testing.assert_allclose(emb_bse[mask_bs], want[mask_bs], atol=2e-4, rtol=2e-4)
  assert enc.dim == CFG["d_model"] and enc.fingerprint.startswith("t5:")


def test_t5_relative_buckets_equal_hf():
  from lm.t5 import relative_buckets
  rel = np.arange(40)[None, :] - np.arange(40)[:, None]
  np.testing.assert_array_equal(relative_buckets(40, 40, 32, 128), hf_bucket(rel, 32, 128))


@pytest.mark.parametrize("key, change", [
    ("encoder.block.1.layer.1.DenseReluDense.wi_1.weight", "drop"),
    ("encoder.block.0.layer.0.SelfAttention.k.weight", "reshape"),
])
def test_t5_missing_or_misshaped_key_is_named(tmp_path, checkpoint, key, change):
  from lm.t5 import T5Encoder
  from lm.text_encoder import EncoderError
  weights = dict(checkpoint[1])
  if change == "drop":
    del weights[key]
  else:
    weights[key] = weights[key][:, :-1].copy()
  write_checkpoint(tmp_path / "bad", weights)
  with pytest.raises(EncoderError, match=key.replace(".", r"\.")):
    T5Encoder(tmp_path / "bad")


def test_t5_shards_over_a_mesh(checkpoint):
  import configs
  import sharding
  from lm.t5 import T5Encoder
  texts = ["pong table tennis video game", "the submarine"]
  one = T5Encoder(checkpoint[0]).encode(texts)[0]
  enc = T5Encoder(checkpoint[0]).place(sharding.make_mesh((2, 2, 2)), configs.load("lm_tiny").mesh.rules)
  wq = enc.module.blocks[0].wq_dnk
  assert not enc._state["blocks"][0]["wq_dnk"][...].sharding.is_fully_replicated
  assert wq.get_metadata()["out_sharding"] == ("embed", "heads", "head_dim")
  np.testing.assert_allclose(enc.encode(texts)[0], one, atol=1e-4, rtol=1e-5)
