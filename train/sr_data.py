"""The SR stage's training pairs: token shards written by `kineto tokenize --lowres S`.

Every record of a split is read once into memory (the codes are small: a 3x16x16 grid is
768 ints), then batch `s` is drawn from (seed, s) alone - the rows, the cosine-scheduled
masks of lm/masked.py and which rows lose their conditions - so a resumed run sees the same
batches. The held-out batches (validation split) use fixed masks and keep the conditions.
"""
from __future__ import annotations

import numpy as np

from configs.schema import ConfigError, SrConfig
from lm.masked import cosine_mask
from train.data.shards import TokenShardError, open_token_shards, read_manifest


def check_pairs(cfg: SrConfig, tokens_dir) -> dict:
  """The manifest of `tokens_dir`, after checking it holds pairs of the config's grids."""
  manifest = read_manifest(tokens_dir)
  low = manifest.get("lowres")
  if not low:
    raise TokenShardError(f"{tokens_dir} holds no low-res codes; tokenize with `kineto tokenize ... --lowres "
                          f"{cfg.sr.scale}` into a new --out.")
  hi_thw, lo_thw = tuple(manifest["clip"]["latents"]), tuple(low["latents"])
  bits = manifest["tokenizer"]["bits"]
  want = {"sr.video_bits": bits, "sr.frames": hi_thw[0], "sr.height": hi_thw[1], "sr.width": hi_thw[2],
          "sr.scale": hi_thw[1] // max(lo_thw[1], 1)}
  have = {"sr.video_bits": cfg.sr.video_bits, "sr.frames": cfg.sr.frames, "sr.height": cfg.sr.height,
          "sr.width": cfg.sr.width, "sr.scale": cfg.sr.scale}
  if want != have or tuple(cfg.sr.low_thw) != lo_thw:
    fix = " ".join(f"--set {k}={v}" for k, v in want.items() if have[k] != v)
    raise ConfigError(f"{tokens_dir} holds {bits}-bit codes of {'x'.join(map(str, lo_thw))} -> "
                      f"{'x'.join(map(str, hi_thw))} grids but the config's are {cfg.sr.video_bits}-bit "
                      f"{'x'.join(map(str, cfg.sr.low_thw))} -> {'x'.join(map(str, cfg.sr.high_thw))}; "
                      f"set {fix or 'the grid to match'}.")
  return manifest


class SrPairs:
  """All pairs of one split: high [C, N], low [C, M], text [C, P], text_valid [C, P]."""

  def __init__(self, cfg: SrConfig, tokens_dir, split: str):
    shards = open_token_shards(tokens_dir, split=split)
    records = [shards[i] for i in range(len(shards))]
    if not records:
      raise TokenShardError(f"the {split} split of {tokens_dir} holds no clips.")
    p = cfg.sr.text_budget
    self.high = np.stack([np.asarray(r["video"], np.int32).reshape(-1) for r in records])
    self.low = np.stack([np.asarray(r["video_lowres"], np.int32).reshape(-1) for r in records])
    self.text = np.zeros((len(records), p), np.int32)
    self.text_valid = np.zeros((len(records), p), bool)
    for i, r in enumerate(records):
      pieces = np.asarray(r.get("text", ()), np.int32)[:p]
      self.text[i, :len(pieces)], self.text_valid[i, :len(pieces)] = pieces, True
    self.captions = [r["caption"] for r in records]
    if cfg.sr.text_vocab and self.text.max(initial=0) >= cfg.sr.text_vocab:
      raise ConfigError(f"caption piece ids reach {self.text.max()} but sr.text_vocab={cfg.sr.text_vocab}; "
                        f"set --set sr.text_vocab={self.text.max() + 1} or more.")

  def __len__(self) -> int:
    return len(self.high)

  def rows(self, index, masked_bn: np.ndarray, cond_b: np.ndarray) -> dict:
    return {"high": self.high[index], "masked": masked_bn, "low": self.low[index], "text": self.text[index],
            "text_valid": self.text_valid[index], "cond": cond_b}


class SrData:
  """Training batches (by step) and fixed held-out batches of the paired shards."""

  def __init__(self, cfg: SrConfig):
    if not cfg.data.tokens_dir:
      raise ConfigError("data.tokens_dir is empty: set --set data.tokens_dir=DIR (written by "
                        "`kineto tokenize --lowres S`).")
    self.cfg = cfg
    self.manifest = check_pairs(cfg, cfg.data.tokens_dir)
    self.train = SrPairs(cfg, cfg.data.tokens_dir, "train")
    self.held_out = (SrPairs(cfg, cfg.data.tokens_dir, "validation")
                     if "validation" in self.manifest["splits"] else None)
    self.describe = (f"{len(self.train)} training and {len(self.held_out) if self.held_out else 0} held-out "
                     f"pairs {'x'.join(map(str, cfg.sr.low_thw))} -> {'x'.join(map(str, cfg.sr.high_thw))} "
                     f"from {cfg.data.tokens_dir}")

  def batch(self, step: int) -> dict:
    tc, n = self.cfg.train, self.train.high.shape[1]
    rng = np.random.default_rng([tc.seed, step])
    index = rng.integers(0, len(self.train), tc.batch_size)
    masked = cosine_mask(rng, tc.batch_size, n)
    cond = rng.uniform(size=tc.batch_size) >= self.cfg.data.cond_dropout
    return self.train.rows(index, masked, cond)

  def eval_batches(self, count: int = 4) -> list[dict]:
    """`count` held-out batches of the global batch size (rows wrap around), fixed masks."""
    if self.held_out is None:
      return []
    tc, n = self.cfg.train, self.held_out.high.shape[1]
    rng = np.random.default_rng([tc.seed, 10**9])
    out = []
    for b in range(count):
      index = (np.arange(tc.batch_size) + b * tc.batch_size) % len(self.held_out)
      out.append(self.held_out.rows(index, cosine_mask(rng, tc.batch_size, n), np.ones(tc.batch_size, bool)))
    return out
