"""What the LM trains on, behind one small interface the training loop reads.

  data.lengths                  the sequence lengths batches come in (one compile each)
  data.batch(step, rows)        this process's rows of step's global batch: tokens,
                                input_mask, loss_mask [b, L]; a pure function of (seed, step)
  data.eval_sets(rows)          named held-out batch lists (one per task for the mixture)
  data.describe                 one line for the log
  data.stats                    counts for the run's summary (e.g. captions skipped)

Two sources (`data.source` in the config):
- `bytes`: the bundled text corpus (train/corpus.py), bytes in the vocabulary's text range.
- `tokens`: token shards written by `kineto tokenize` (video codes, caption pieces, audio
  RVQ codes with --audio_codec), arranged by VideoPoet's task layouts into length buckets
  (lm/tasks.py, lm/mixture.py); audio codes are flattened per `data.audio_order`.
"""
from __future__ import annotations

import numpy as np

from configs.schema import ClipSpec, Config, ConfigError
from lm import mixture, tasks
from lm.vocab import Vocabulary
from train import corpus

EVAL_BATCHES = 4
BATCH_KEYS = ("tokens", "input_mask", "loss_mask")  # what every batch holds (train/state.py shards them)


def batch_keys(cfg: Config) -> tuple[str, ...]:
  """BATCH_KEYS, plus `text_emb` [b, text_budget, E] when captions are encoder embeddings."""
  return BATCH_KEYS + (("text_emb",) if cfg.lm.text_dim else ())


class ByteData:
  """The byte corpus: sequences of seq_len + 1 bytes, the first eighth bidirectional."""

  def __init__(self, cfg: Config, vocab: Vocabulary):
    tc = cfg.train
    if cfg.vocab.text < corpus.BYTE_VOCAB:
      raise ConfigError(f"vocab.text={cfg.vocab.text} cannot hold the byte corpus' "
                        f"{corpus.BYTE_VOCAB} pieces; use vocab.text >= {corpus.BYTE_VOCAB}.")
    self.vocab, self.batch_size, self.seq_len, self.seed = vocab, tc.batch_size, tc.seq_len, tc.seed
    self.prefix = tc.seq_len // 8
    # Bytes are the text pieces of this corpus: they live in the vocabulary's text range.
    self.train, self.held_out = (vocab.text_ids(part).astype(np.int32)
                                 for part in corpus.split(corpus.corpus_bytes()))
    self.lengths = (tc.seq_len + 1,)
    self.describe = f"byte corpus: {len(self.train):,} training bytes, prefix {self.prefix}"
    self.stats = {}

  def batch(self, step: int, rows: slice = slice(None)) -> dict:
    return next(corpus.batches(self.train, self.batch_size, self.seq_len, self.prefix, self.seed,
                               start_step=step, rows=rows))

  def eval_sets(self, rows: slice = slice(None)) -> dict[str, list[dict]]:
    it = corpus.batches(self.held_out, self.batch_size, self.seq_len, self.prefix, seed=12345, rows=rows)
    return {"text": [next(it) for _ in range(EVAL_BATCHES)]}


class MixtureData:
  """Token-shard examples under the task mixture, in length buckets."""

  def __init__(self, cfg: Config, vocab: Vocabulary, train_examples, held_out_examples,
               spec: ClipSpec, schedule: mixture.Schedule | None = None):
    """`spec.text_budget` and the schedule (default: `data.schedule`) come from the config;
    a caption over the budget is skipped (its clip still trains caption-free tasks) and counted
    in `describe` and `stats`."""
    tc = cfg.train
    schedule = schedule or mixture.parse_schedule(cfg.data.schedule)
    train_examples, skipped = skip_long_captions(train_examples, spec.text_budget)
    held_out_examples, held_out_skipped = skip_long_captions(held_out_examples, spec.text_budget)
    schedule, dropped = feasible(schedule, train_examples)
    self.mix = mixture.Mixture(train_examples, vocab, schedule, total_steps=tc.steps,
                               batch_size=tc.batch_size, spec=spec, seed=tc.seed,
                               cond_dropout=cfg.data.caption_dropout, text_dim=cfg.lm.text_dim)
    self.lengths = self.mix.buckets
    if self.lengths[-1] > cfg.lm.max_len:
      raise ConfigError(f"the task mixture needs sequences of up to {self.lengths[-1]} tokens "
                        f"(buckets {self.lengths}) but lm.max_len={cfg.lm.max_len}; raise lm.max_len.")
    held_out_tasks = feasible(schedule, held_out_examples)[0].tasks()
    self.held_out = {
        name: mixture.Mixture(held_out_examples, vocab, mixture.Schedule.constant({name: 1.0}),
                              total_steps=EVAL_BATCHES, batch_size=tc.batch_size, spec=spec,
                              buckets=self.lengths, seed=12345, cond_dropout=0.0, text_dim=cfg.lm.text_dim)
        for name in held_out_tasks}
    self.stats = {"captions_over_budget": skipped, "held_out_captions_over_budget": held_out_skipped,
                  "text_budget": spec.text_budget}
    self.describe = (f"task mixture: {len(train_examples)} training examples, tasks "
                     f"{list(schedule.tasks())}, buckets {self.lengths}, caption dropout "
                     f"{cfg.data.caption_dropout:g}"
                     + (f"; left out for lack of their modalities: {dropped}" if dropped else "")
                     + (f"; skipped {skipped} training and {held_out_skipped} held-out captions over "
                        f"the text budget of {spec.text_budget} pieces (data.text_budget)"
                        if skipped or held_out_skipped else ""))

  def batch(self, step: int, rows: slice = slice(None)) -> dict:
    return self.mix.batch(step, rows)

  def eval_sets(self, rows: slice = slice(None)) -> dict[str, list[dict]]:
    return {name: [m.batch(i, rows) for i in range(EVAL_BATCHES)] for name, m in self.held_out.items()}


def skip_long_captions(examples, budget: int) -> tuple[list, int]:
  """(examples with every caption over `budget` pieces removed, how many were removed)."""
  out, skipped = [], 0
  for ex in examples:
    if mixture.over_budget(ex, budget):
      ex, skipped = {k: v for k, v in ex.items() if k != "text"}, skipped + 1
    out.append(ex)
  return out, skipped


def feasible(schedule: mixture.Schedule, examples) -> tuple[mixture.Schedule, list[str]]:
  """The schedule without tasks no example can feed (e.g. v2a before audio codes exist),
  and the names of those tasks."""
  def fed(name):
    need = tasks.get_task(name).requires()
    return any(all(tasks.has_modality(ex, m) for m in need) for ex in examples)
  dropped = [name for name in schedule.tasks() if not fed(name)]
  stages = [(start, {n: w for n, w in weights if n not in dropped}) for start, weights in schedule.stages]
  return mixture.Schedule.of(stages), dropped


def clip_spec(manifest: dict, audio_order: str = "level",
              text_budget: int = ClipSpec.text_budget) -> ClipSpec:
  """The task layouts' clip shapes of a token-shard manifest (training and sampling agree).

  The clip's duration and the codec's frame rate fix the audio frames per clip; both come
  from the shards (the dataset's fps, the codec that wrote the audio codes)."""
  clip = manifest["clip"]
  t, h, w = clip["latents"]
  compression = ((clip["frames"] - 1) // (t - 1) if t > 1 else 4, clip["height"] // h, clip["width"] // w)
  fps = ((manifest.get("dataset") or {}).get("spec") or {}).get("fps") or ClipSpec.fps
  codec = manifest.get("audio_codec") or {}
  return ClipSpec(frames=clip["frames"], height=clip["height"], width=clip["width"],
                        compression=compression, fps=float(fps),
                        audio_hz=float(codec.get("frame_rate", ClipSpec.audio_hz)),
                        audio_order=audio_order, text_budget=text_budget)


def make(cfg: Config, vocab: Vocabulary):
  """The data source the config names."""
  if cfg.data.source == "bytes":
    data = ByteData(cfg, vocab)
    data.fingerprint = {}  # the corpus ships with the code
    return data
  from train.data.shards import open_token_shards, to_example  # loads TFDS: only for token data
  shards = {split: open_token_shards(cfg.data.tokens_dir, split=split)
            for split in ("train", "validation")}
  for s in shards.values():
    s.check_vocab(cfg.vocab)
    s.check_text_encoder(cfg.text.encoder, cfg.lm.text_dim)
  text = "pieces" if cfg.text.encoder == "pieces" else "embeddings"
  examples = {split: [to_example(s[i], text) for i in range(len(s))] for split, s in shards.items()}
  try:
    spec = clip_spec(shards["train"].manifest, cfg.data.audio_order, cfg.data.text_budget)
    data = MixtureData(cfg, vocab, examples["train"], examples["validation"], spec)
  except ConfigError as e:
    if "continuation_frames" not in str(e):
      raise
    clip = shards["train"].manifest["clip"]
    raise ConfigError(f"the token shards in {cfg.data.tokens_dir} hold clips of {clip['frames']} frames "
                      f"({clip['latents'][0]} latent frames), too short for the continuation tasks of "
                      f"data.schedule ({e}) Build and tokenize clips of at least 9 frames (kineto data build "
                      "--frames 9), or leave those tasks out of data.schedule.") from None
  except ValueError as e:  # e.g. clips too short for the tasks' layouts: the shards are at fault
    raise ConfigError(f"the token shards in {cfg.data.tokens_dir} cannot feed the task mixture: {e} "
                      "Tokenize a dataset of longer clips (kineto data build --frames 17).") from None
  data.fingerprint = data_fingerprint(shards["train"].manifest)
  return data


def data_fingerprint(manifest: dict) -> dict:
  """What fixes the meaning of a token-shard set's codes: the video tokenizer, the text model,
  the frozen text encoder and the audio codec that wrote them (a resumed LM must see the same)."""
  return {"tokenizer": manifest["tokenizer"]["fingerprint"],
          "text_model": (manifest.get("text_model") or {}).get("sha256"),
          "text_encoder": (manifest.get("text_encoder") or {}).get("fingerprint"),
          "audio_codec": (manifest.get("audio_codec") or {}).get("fingerprint")}
