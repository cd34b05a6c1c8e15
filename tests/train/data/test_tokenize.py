"""`kineto tokenize`: real (Atari) clips -> token shards and back: codes equal the tokenizer's
own encode, another tokenizer or dataset is refused, a killed run resumes to the same bytes,
and two processes split the work.

The tokenizer checkpoints are written the way the trainer writes them (the Checkpointer
with the whole train state, EMA included) but hold seeded random weights: even one
training step compiles for over a minute on two shared CPU cores (the initializers alone
take ~40 s), and the trainer has its own tests (test_tokenizer_train.py). The clips, the
tokenizers and the reference shards are the session's shared chain (tests/conftest.py).
"""
from __future__ import annotations

import json
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import time

import grain
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs
from configs.schema import VocabConfig
from kineto.cli import main
from lm import tasks
from lm.text import TextTokenizer
from lm.vocab import Vocabulary
from train import tokenizer_step
from train.data import demo
from train.data.pipeline import open_split
from train.data.shards import (
  TokenShardError,
  decode_record,
  encode_record,
  open_token_shards,
  to_example,
  tokenizer_fingerprint,
)
from train.data.tokenize import chunk_indices, num_chunks, process_chunks, tokenize_dataset
from train.tokenizer_trainer import load_tokenizer

SHARD = 2  # small shards (conftest's TOKEN_SHARD), so the 6 + 4 atari32 clips make 3 + 2 of them
SHARDS = ["train-00000-of-00003", "train-00001-of-00003", "train-00002-of-00003",
          "validation-00000-of-00002", "validation-00001-of-00002"]


@pytest.fixture(scope="module")
def assets(atari32, caption_model, random_tokenizer):
  """The shared demo clips (6 train, 4 validation), two tokenizers and a SentencePiece model."""
  return {"clips": atari32, "text_model": caption_model, "tok_a": random_tokenizer(0),
          "tok_b": random_tokenizer(1)}


@pytest.fixture(scope="module")
def reference(atari32_tokens):
  """An uninterrupted run on the 8 fake devices (batch 8) with captions as pieces."""
  return atari32_tokens


def shard_bytes(out: pathlib.Path) -> dict[str, bytes]:
  return {p.name: p.read_bytes() for p in sorted(out.glob("*.arrayrecord"))}


def kineto(args: list[str], devices: int, *extra: str, killable: bool = False) -> subprocess.Popen:
  from conftest import NO_CACHE_WRITES
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             **(NO_CACHE_WRITES if killable else {}))
  return subprocess.Popen([sys.executable, "-m", "kineto", *extra, "tokenize", *args], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def tokenize_args(assets, out) -> list[str]:
  return ["--tokenizer", str(assets["tok_a"]), "--data", str(assets["clips"]), "--out", str(out),
          "--shard_size", str(SHARD), "--batch", "1", "--text_model", str(assets["text_model"])]


# --- the plan and the record format (no tokenizer needed) ---------------------------------------

@pytest.mark.parametrize("examples,shard_size,processes", [(10, 2, 2), (10, 3, 3), (7, 1, 4), (1, 5, 3)])
def test_process_shares_are_disjoint_and_cover_everything(examples, shard_size, processes):
  chunks = num_chunks(examples, shard_size)
  shares = [process_chunks(chunks, p, processes) for p in range(processes)]
  clips = [[i for c in share for i in chunk_indices(c, examples, shard_size)] for share in shares]
  flat = sorted(i for share in clips for i in share)
  assert flat == list(range(examples))  # disjoint (no duplicates) and complete
  assert max(map(len, shares)) - min(map(len, shares)) <= 1
  with pytest.raises(ValueError, match="process_index=2"):
    process_chunks(chunks, 2, 2)


def test_record_round_trips_exactly():
  record = {"index": 3, "video": np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4), "caption": "pong",
            "audio": np.linspace(-1, 1, 5, dtype=np.float32), "has_audio": True, "start": 2.125,
            "source": "atari/Pong/seed0", "text": np.array([1, 8], np.int32)}
  data = encode_record(record)
  assert data == encode_record(dict(record))  # deterministic bytes
  back = decode_record(data)
  assert back.keys() == record.keys()
  for key, value in record.items():
    np.testing.assert_array_equal(back[key], value)
    assert np.asarray(back[key]).dtype == np.asarray(value).dtype
  assert set(to_example(back)) == {"video", "text"}


def test_the_fingerprint_of_an_lfq_tokenizer_did_not_change_with_the_fsq_fields():
  """Shards and LMs made before `vidtok.quantizer` existed record fingerprints of configs
  without it: an LFQ tokenizer must hash as it did then, an FSQ one differently."""
  import dataclasses

  from train.data.shards import fingerprint
  from vidtok.model import VideoTokenizer
  cfg = configs.load("vidtok_tiny").vidtok
  model = VideoTokenizer(cfg, rngs=nnx.Rngs(0))
  new = tokenizer_fingerprint(cfg, model)
  before = {k: v for k, v in configs.to_dict(cfg).items() if k not in ("quantizer", "fsq_levels")}
  assert new["config_sha256"] == fingerprint(before, {})["config_sha256"]
  fsq = dataclasses.replace(cfg, quantizer="fsq", fsq_levels=(4, 4, 4, 4))
  assert tokenizer_fingerprint(fsq, VideoTokenizer(fsq, rngs=nnx.Rngs(0)))["config_sha256"] != new["config_sha256"]


# --- a real run ------------------------------------------------------------------------------

def test_shards_hold_the_tokenizers_codes(assets, reference):
  out, summary = reference
  cfg, model = load_tokenizer(assets["tok_a"])
  fingerprint = tokenizer_fingerprint(cfg.vidtok, model)["fingerprint"]
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["complete"]
  assert manifest["tokenizer"]["fingerprint"] == fingerprint == summary["fingerprint"]
  ranges = Vocabulary(VocabConfig(video_bits=8)).ranges()
  assert manifest["vocab"]["ranges"] == {k: list(v) for k, v in ranges.items()}
  assert sorted(manifest["shards"]) == [f"{s}.arrayrecord" for s in SHARDS]
  assert summary["splits"]["train"] == {"examples": 6, "skipped": 0, "shards": 3, "video_tokens": 6 * 80}
  assert summary["video_tokens"] == 10 * 5 * 4 * 4 and summary["this_run"]["encoded"] == 10
  assert json.loads((out / "summary.json").read_text())["splits"] == summary["splits"]

  encode = nnx.jit(lambda m, v: m.encode(tokenizer_step.to_float(v)))
  text = TextTokenizer(assets["text_model"])
  vocab = Vocabulary(VocabConfig(video_bits=8))
  for split, count in (("train", 6), ("validation", 4)):
    shards = open_token_shards(out, fingerprint, split=split)
    clips = open_split(assets["clips"], split)
    assert len(shards) == len(clips) == count
    videos = np.stack([clips[i]["video"] for i in range(count)])
    want = np.asarray(encode(model, jnp.asarray(videos)))
    assert len(np.unique(want)) > 8  # real, varied codes, not a constant
    for i in range(count):
      record, clip = shards[i], clips[i]
      assert record["index"] == i and record["video"].dtype == np.int32
      np.testing.assert_array_equal(record["video"], want[i])
      assert record["caption"] == clip["caption"].decode() and record["source"] == clip["source"].decode()
      assert record["start"] == pytest.approx(clip["start"]) and record["has_audio"] == clip["has_audio"]
      np.testing.assert_array_equal(record["text"], text.encode(record["caption"]))
    # grain reads it (also from worker processes: it pickles), and a record feeds the task layouts.
    examples = grain.MapDataset.source(pickle.loads(pickle.dumps(shards))).map(to_example)
    np.testing.assert_array_equal(examples[count - 1]["video"], want[count - 1])
    seq = tasks.build("t2v", to_example(shards[0]), vocab, spec=tasks.ClipSpec(height=32, width=32))
    np.testing.assert_array_equal(seq["tokens"][seq["loss_mask"]][:-2], vocab.video_ids(shards[0]["video"]))


def test_other_tokenizer_or_dataset_is_refused(assets, reference, tmp_path):
  out, summary = reference
  before = shard_bytes(out)
  cfg_b, model_b = load_tokenizer(assets["tok_b"])
  other = tokenizer_fingerprint(cfg_b.vidtok, model_b)["fingerprint"]
  assert other != summary["fingerprint"]
  # Reading with the wrong tokenizer.
  with pytest.raises(TokenShardError, match=f"tokenizer {summary['fingerprint']}.*expected {other}"):
    open_token_shards(out, other, split="train")
  # Resuming with another tokenizer: refused before any work, naming both and the fix.
  with pytest.raises(TokenShardError, match=f"'{summary['fingerprint']}' there, '{other}' now.*new --out"):
    tokenize_dataset(assets["tok_b"], assets["clips"], out, shard_size=SHARD,
                     text_model=assets["text_model"], progress=False)
  # ... or another dataset, or shard size, through the CLI (exit code 2, no traceback).
  other_clips = tmp_path / "pong"
  demo.build_demo(other_clips, size=32, games=("Pong",), train_episodes=1, train_clips=1, val_clips=1,
                  videos=False, progress=False)
  args = ["tokenize", "--tokenizer", str(assets["tok_a"]), "--out", str(out),
          "--text_model", str(assets["text_model"])]
  assert main(args + ["--data", str(other_clips), "--shard_size", str(SHARD)]) == 2
  assert main(args + ["--data", str(assets["clips"]), "--shard_size", "3"]) == 2
  assert shard_bytes(out) == before
  with pytest.raises(TokenShardError, match="no token shards of split 'test'"):
    open_token_shards(out, split="test")
  # The same command again finds everything done: nothing encoded, nothing changed.
  again = tokenize_dataset(assets["tok_a"], assets["clips"], out, shard_size=SHARD,
                           text_model=assets["text_model"], progress=False)
  assert again["this_run"]["encoded"] == 0 and again["this_run"]["shards_resumed"] == len(SHARDS)
  assert shard_bytes(out) == before


def test_unreadable_clip_is_skipped_and_counted(assets, tmp_path, monkeypatch):
  import train.data.pipeline

  class Corrupt:  # clip 3 of the train split fails to read, as a corrupt record would
    def __init__(self, source, split):
      self.source, self.split = source, split

    def __len__(self):
      return len(self.source)

    def __getitem__(self, i):
      if self.split == "train" and i == 3:
        raise ValueError("corrupt record")
      return self.source[i]

  real = train.data.pipeline.open_split
  monkeypatch.setattr(train.data.pipeline, "open_split", lambda d, s="train": Corrupt(real(d, s), s))
  out = tmp_path / "tokens"
  summary = tokenize_dataset(assets["tok_a"], assets["clips"], out, splits=["train"], batch=8,
                             shard_size=SHARD, progress=False)
  assert summary["splits"] == {"train": {"examples": 5, "skipped": 1, "shards": 3, "video_tokens": 5 * 80}}
  shards = open_token_shards(out, split="train")
  assert [shards[i]["index"] for i in range(len(shards))] == [0, 1, 2, 4, 5]
  assert "text" not in shards[0]  # no --text_model


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_bytes(assets, reference, tmp_path):
  out = tmp_path / "killed"
  run = kineto(tokenize_args(assets, out), 1, killable=True)
  deadline = time.monotonic() + 300
  while not list(out.glob("*.arrayrecord")):  # wait for the first complete shard, then kill
    assert run.poll() is None, run.communicate()[0][-3000:]
    assert time.monotonic() < deadline, "no shard after 300 s"
    time.sleep(0.002)
  run.send_signal(signal.SIGKILL)
  run.communicate()
  assert run.returncode == -signal.SIGKILL
  done = shard_bytes(out)
  assert 1 <= len(done) < len(SHARDS), f"the kill came after {len(done)} shards"
  with pytest.raises(TokenShardError, match="unfinished.*run the same `kineto tokenize`"):
    open_token_shards(out, split="train" if len(done) < 3 else "validation")
  # A kill in the middle of writing leaves a partial shard under its temporary name.
  next_shard = next(s for s in SHARDS if f"{s}.arrayrecord" not in done)
  (out / f".{next_shard}.arrayrecord.tmp-12345").write_bytes(b"half a shard")

  rerun = kineto(tokenize_args(assets, out), 1)
  log = rerun.communicate(timeout=300)[0]
  assert rerun.returncode == 0, log[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["this_run"]["shards_resumed"] == len(done)
  assert summary["this_run"]["encoded"] == 10 - 2 * len(done)  # nothing encoded twice
  assert not list(out.glob(".*tmp*"))
  ref_out, _ = reference
  # Byte for byte what the uninterrupted run (8 devices, batch 8) wrote.
  assert shard_bytes(out) == shard_bytes(ref_out)
  assert (out / "manifest.json").read_text() == (ref_out / "manifest.json").read_text()


@pytest.mark.slow
def test_two_processes_split_the_work(assets, reference, tmp_path):
  from conftest import free_port, run_together
  port = free_port()
  out = tmp_path / "two"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  done = run_together([[sys.executable, "-m", "kineto", "--coordinator_address", f"127.0.0.1:{port}",
                        "--num_processes", "2", "--process_id", str(i), "tokenize", *tokenize_args(assets, out)]
                       for i in range(2)], tmp_path / "logs", env=env, timeout=300)
  for code, log in done:
    assert code == 0, log[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["processes"] == 2 and summary["complete"]
  # Round-robin chunks: process 0 gets train 0, 2 and validation 0; process 1 the rest.
  assert summary["this_run"]["encoded_per_process"] == [6, 4]
  assert summary["this_run"]["shards_written"] == len(SHARDS)
  ref_out, _ = reference
  assert shard_bytes(out) == shard_bytes(ref_out)
  shards = open_token_shards(out, summary["fingerprint"], split="train")
  assert [shards[i]["index"] for i in range(len(shards))] == list(range(6))


def test_lm_trains_on_the_task_mixture_of_token_shards(reference, tmp_path):
  """The LM trainer reads the shards through the task layouts: buckets, per-task held-out loss."""
  from train.lm_trainer import train_lm
  out, _ = reference
  cfg = configs.load("lm_tiny", ["data.source=tokens", f"data.tokens_dir={out}", "vocab.video_bits=8",
                                 "lm.vocab=704", "lm.max_len=256", "train.steps=3", "lm.attention_block=64"])
  summary = train_lm(cfg, tmp_path, progress=False)
  per_task = summary["eval_loss_per_set"]
  # Tokenized without --audio_codec: the audio tasks are left out; every video task is scored.
  assert {"t2i", "t2v", "i2v", "continuation", "inpaint", "outpaint"} <= set(per_task) and "v2a" not in per_task
  assert all(np.isfinite(v) for v in per_task.values())
  assert summary["eval_loss"] == pytest.approx(np.mean(list(per_task.values())))  # the mean over tasks
  assert summary["step"] == 3 and np.isfinite(summary["loss"])
