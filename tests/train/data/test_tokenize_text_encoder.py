"""`kineto tokenize --text_encoder minilm`: caption embeddings in the token shards, the budget rule,
and the LM's refusal of shards from another encoder (train/data/tokenize.py, train/lm_data.py)."""
import numpy as np
import pytest

import configs
from train.data.shards import TokenShardError, open_token_shards, to_example

BUDGET = 3  # [CLS] + one word piece + [SEP]: "Pong" ([CLS] po ##ng [SEP]) is truncated


@pytest.fixture(scope="module")
def minilm_tokens(atari32, random_tokenizer, tmp_path_factory):
  pytest.importorskip("all_minilm_l6_v2")
  from train.data.tokenize import tokenize_dataset
  out = tmp_path_factory.mktemp("minilm_tokens")
  summary = tokenize_dataset(random_tokenizer(0), atari32, out, batch=8, shard_size=8, progress=False,
                             text_encoder="minilm", text_budget=BUDGET)
  return out, summary


def test_shards_hold_truncated_caption_embeddings(minilm_tokens):
  from lm.minilm import MiniLMEncoder
  out, summary = minilm_tokens
  splits = [open_token_shards(out, split=s) for s in ("train", "validation")]
  header = splits[0].manifest["text_encoder"]
  assert header["name"] == "minilm" and header["dim"] == 384 and header["budget"] == BUDGET
  records = [shards[i] for shards in splits for i in range(len(shards))]
  enc = MiniLMEncoder()
  lengths = [len(ids) for ids in enc.token_ids([r["caption"] for r in records])]
  run = summary["this_run"]
  assert run["captions_embedded"] == 10 and run["captions_truncated"] == sum(n > BUDGET for n in lengths) > 0
  for r, n in zip(records, lengths):
    assert r["text_emb"].dtype == np.float16 and r["text_emb"].shape == (min(n, BUDGET), 384)
    assert bool(r["text_truncated"]) == (n > BUDGET)
  emb, mask = enc.encode([records[0]["caption"]], max_len=BUDGET)
  np.testing.assert_allclose(records[0]["text_emb"], emb[0, :mask[0].sum()], atol=2e-3)
  assert to_example(records[0], "embeddings")["text"].dtype == np.float32


def test_lm_data_takes_own_encoder_and_refuses_others(minilm_tokens, atari32_tokens):
  from lm.vocab import Vocabulary
  from train import lm_data
  out, _ = minilm_tokens
  base = ["data.source=tokens", "vocab.video_bits=8", "lm.vocab=704", "lm.max_len=256", "train.batch_size=2",
          f"data.text_budget={BUDGET}"]
  cfg = configs.load("lm_tiny", base + [f"data.tokens_dir={out}", "text.encoder=minilm", "lm.text_dim=384"])
  data = lm_data.make(cfg, Vocabulary(cfg.vocab))
  batch = data.batch(0)
  assert batch["text_emb"].shape == (2, BUDGET, 384) and lm_data.batch_keys(cfg)[-1] == "text_emb"
  t5 = configs.load("lm_tiny", base + [f"data.tokens_dir={out}", "text.encoder=t5", "text.path=/x",
                                        "lm.text_dim=384"])
  with pytest.raises(TokenShardError, match="not 't5'"):
    lm_data.make(t5, Vocabulary(t5.vocab))
  pieces_only = configs.load("lm_tiny", base + [f"data.tokens_dir={atari32_tokens[0]}", "text.encoder=minilm",
                                                "lm.text_dim=384"])
  with pytest.raises(TokenShardError, match="no caption embeddings"):
    lm_data.make(pieces_only, Vocabulary(pieces_only.vocab))
