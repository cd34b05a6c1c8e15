"""The frozen MiniLM text encoder (lm/minilm.py): real sentence-encoder rankings, 1 vs 8 devices."""
from __future__ import annotations

import numpy as np
import pytest

import configs
import sharding
from lm.text_encoder import masked_mean, truncate

# (anchor, paraphrase, unrelated): the paraphrase must be the closer one.
TRIPLES = [
    ("Pong", "table tennis video game", "underwater submarine shooter"),
    ("Seaquest", "underwater submarine shooter", "table tennis video game"),
    ("a car racing game", "driving a race car on a track", "Pong video game"),
    ("space invaders shooting aliens", "a cannon firing at rows of alien ships", "a man riding a horse"),
    ("A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."),
]


@pytest.fixture(scope="module")
def minilm():
  pytest.importorskip("all_minilm_l6_v2")
  from lm.minilm import MiniLMEncoder
  return MiniLMEncoder()


def sentence_vectors(enc, texts):
  emb_bse, mask_bs = enc.encode(texts)
  v = masked_mean(emb_bse, mask_bs)
  return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_minilm_ranks_paraphrases_above_unrelated(minilm):
  texts = [t for triple in TRIPLES for t in triple]
  v = sentence_vectors(minilm, texts).reshape(len(TRIPLES), 3, -1)
  close, far = np.einsum("te,te->t", v[:, 0], v[:, 1]), np.einsum("te,te->t", v[:, 0], v[:, 2])
  assert (close > far).all(), list(zip(TRIPLES, close, far))
  # sentence-transformers' documented similarity of this pair for all-MiniLM-L6-v2 is 0.7553.
  assert close[-1] == pytest.approx(0.7553, abs=2e-3)


def test_minilm_shapes_mask_and_truncation(minilm):
  emb_bse, mask_bs = minilm.encode(["Pong", "a much longer caption about a game of table tennis"], max_len=6)
  assert emb_bse.shape == (2, 6, 384) and mask_bs.dtype == bool
  ids = minilm.token_ids(["Pong", "a much longer caption about a game of table tennis"])
  assert mask_bs.sum(1).tolist() == [len(ids[0]), 6] and len(ids[1]) > 6
  assert truncate(ids[1], 6) == ids[1][:5] + [ids[1][-1]]  # [CLS] + 4 words + [SEP]
  assert np.isfinite(emb_bse).all()


def test_minilm_same_on_one_and_eight_devices(minilm):
  import jax
  texts = [t for triple in TRIPLES for t in triple][:8]  # one row per device
  one_bse, one_mask = minilm.encode(texts)
  from lm.minilm import MiniLMEncoder
  mesh = sharding.make_mesh((2, 4, 1))
  eight = MiniLMEncoder().place(mesh, configs.load("lm_tiny").mesh.rules)
  word_ve = eight._state["word_ve"][...]
  assert word_ve.sharding.num_devices == len(jax.devices()) == 8 and not word_ve.sharding.is_fully_replicated
  eight_bse, eight_mask = eight.encode(texts)
  np.testing.assert_array_equal(eight_mask, one_mask)
  # Equal up to float32 summation order: the 8-device matmuls add partial sums of the sharded width.
  np.testing.assert_allclose(eight_bse, one_bse, atol=1e-4, rtol=1e-5)
