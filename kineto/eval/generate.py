"""`kineto eval generate`: per-task scores of an LM's generations from held-out conditions.

  result = evaluate_generation("runs/lm", tasks=("t2v", "i2v"), samples=38, out="runs/lm/eval")

For each task, one sample per held-out clip of the LM's dataset (the conditions: its
caption for t2v, its first frame for i2v, its first 1 + 4(k - 1) frames for continuation
(k = the clip spec's continuation latents), its masked frames for inpaint/outpaint), sample
i with seed + i at `temperature` (1: the LM's own distribution). Scores: FVD of the generated
clips against the real held-out clips (I3D, kineto/eval/fvd.py) and, when the data is
captioned, recognition rates (kineto/eval/recognition.py: is the clip read as the condition
clip's caption? `rate` by the
colour/layout classifier, `sprite_rate` by the sprite reader, which needs the objects' shapes)
beside each reader's accuracy on real held-out clips. For i2v and continuation, `motion`: PSNR and
LPIPS of the generated frames after the given ones against the real clip's, beside the
trivial baseline of repeating the last given frame, real and as the tokenizer decodes it (the
fair one: a model that learned motion beats it), and the ceiling, the real clip's own codes
decoded (`real_future_decoded`: what an LM that predicts every code makes); and `motion.codes`,
the same question in code space: the share of the future latent frames' codes the LM got
right, beside repeating the last given latent frame's codes.
Writes `out/eval.json` (per-task results, protocol, provenance) and `out/contact_sheet.png`
(condition | generated). Generated clips
are saved per task (`out/generated_TASK.npz`), so a rerun continues after the last finished
task.
"""
from __future__ import annotations

import io
import pathlib
import time

import numpy as np
from tqdm import tqdm

from kineto.eval import features, fvd, provenance
from kineto.eval.tokenizer import EvalError, check_i3d_size
from train.files import write_bytes, write_json

TASKS = ("unconditional", "t2v", "i2v", "continuation", "inpaint", "outpaint")
SHEET_SAMPLES = 3


MOTION_TASKS = ("i2v", "continuation")


def given_frames(task: str, spec) -> int:
  """Frames of the real clip a task shows the LM, from the start (i2v and continuation)."""
  return 1 if task == "i2v" else 1 + spec.compression[0] * (spec.continuation_frames - 1)


def _conditions(task: str, clip, caption: str, size: tuple[int, int], head: int) -> dict:
  h, w = size
  prompt = caption or None
  return {"unconditional": {"task": "unconditional"},
          "t2v": {"prompt": prompt},
          "i2v": {"image": clip[0], "prompt": prompt},
          # the clip's head: what follows it in the clip is the truth the continuation is scored on
          "continuation": {"video": clip[:head], "prompt": prompt},
          "inpaint": {"video": clip, "mask": f"box:{h // 4},{3 * h // 4},{w // 4},{3 * w // 4}"},
          "outpaint": {"video": clip, "mask": f"border:{min(h, w) // 8}"}}[task]


def _lm_dataset(lm) -> tuple[dict, pathlib.Path]:
  import configs
  from configs.schema import Config
  from train.checkpoint import Checkpointer
  from train.data.shards import read_manifest
  ckpt_dir = pathlib.Path(lm) / "checkpoints"
  if not ckpt_dir.is_dir():
    raise EvalError(f"--lm {lm}: no checkpoints/ in it; pass a `kineto lm train` workdir.")
  cfg = configs.from_dict(Config, Checkpointer.read_config(ckpt_dir))
  if cfg.data.source != "tokens":
    raise EvalError(f"--lm {lm}: trained on data.source={cfg.data.source!r}, not token shards; it cannot "
                    "generate video.")
  manifest = read_manifest(cfg.data.tokens_dir)
  return manifest, pathlib.Path(manifest["dataset"]["path"])


def subject(caption: str) -> str:
  """The class a recognizer reads a caption as: its text before the first comma, so captions
  that add what happens in the clip ("pong, the opponent scores") name one class per subject."""
  return caption.split(",")[0].strip()


def _records(data: pathlib.Path, split: str, count: int | None = None) -> tuple[np.ndarray, list[str]]:
  from train.data.pipeline import open_split
  source = open_split(data, split)
  n = len(source) if count is None else min(count, len(source))
  records = [source[i] for i in range(n)]
  return np.stack([r["video"] for r in records]), [r.get("caption", b"").decode() for r in records]


def fit_readers_on(data, frames: int):
  """Both recognition readers (kineto/eval/recognition.py), fit on every captioned training clip
  of `data` (its first `frames` frames), labelled with its caption's subject."""
  from kineto.eval import recognition
  train_clips, train_captions = _records(data, "train")
  keep = [i for i, c in enumerate(train_captions) if c]
  return recognition.fit_readers(train_clips[keep][:, :frames], [subject(train_captions[i]) for i in keep])


def evaluate_generation(lm, *, tasks=("t2v", "i2v"), samples: int | None = None, out=None, seed: int = 0,
                        split: str = "validation", min_clips: int = fvd.MIN_CLIPS, fvd_size: int = fvd.SIZE,
                        cfg_scale: float | None = None, temperature: float = 1.0, features_dir=None,
                        readers=None) -> dict:
  """Generates and scores every task (module docstring); returns eval.json's contents.
  `features_dir` (default out/features) caches I3D features; evaluations of one split can share it.
  `readers`: the recognition readers of `fit_readers_on(data, frames)`, when the caller has them."""
  from kineto.eval.recognition import RecognitionEvaluator
  from kineto.generate import Generator
  from train.data.pipeline import open_split
  started = time.perf_counter()
  unknown = [t for t in tasks if t not in TASKS]
  if unknown or not tasks:
    raise EvalError(f"--tasks {','.join(tasks)}: choose from {','.join(TASKS)}.")
  if samples is not None and samples < 1:
    raise EvalError(f"--samples {samples}: must be >= 1.")
  if not temperature >= 0:
    raise EvalError(f"--temperature {temperature}: must be >= 0 (0: the most likely code).")
  check_i3d_size(fvd_size)
  manifest, data = _lm_dataset(lm)
  split_examples = len(open_split(data, split))
  n = split_examples if samples is None else min(samples, split_examples)
  try:
    fvd.check_clip_count(n, f"{data} {split} ({split_examples} held-out clips, --samples {samples})", min_clips)
  except fvd.FVDError as e:
    raise EvalError(str(e)) from e
  real, captions = _records(data, split, n)
  if "t2v" in tasks and sum(map(bool, captions)) < min_clips:
    raise EvalError(f"--tasks t2v: only {sum(map(bool, captions))} of {n} held-out clips have captions, "
                    f"fewer than {min_clips}; drop t2v or evaluate a captioned dataset.")
  out = pathlib.Path(out or pathlib.Path(lm) / "eval")
  out.mkdir(parents=True, exist_ok=True)

  gen = Generator.load(lm, progress=False)
  # A held-out caption longer than the LM's text budget keeps its first pieces (an LM on
  # encoder embeddings truncates them the way its token shards did); said in the protocol.
  gen.truncate = True
  s = gen.spec
  real = real[:, :s.frames]
  if real.shape[1:4] != (s.frames, s.height, s.width):
    raise EvalError(f"{data} {split} clips are {real.shape[1:4]}; the LM makes {s.frames}x{s.height}x{s.width}.")

  # --- generation, one task at a time (saved: a rerun continues) -------------------------------
  generated, codes, speeds = {}, {}, {}
  head = given_frames("continuation", s)
  for task in tasks:
    path = out / f"generated_{task}.npz"
    conds = [i for i in range(n) if task != "t2v" or captions[i]]
    if path.is_file():
      with np.load(path) as saved:
        if (int(saved["seed"]) == seed and list(saved["conditions"]) == conds and int(saved.get("head", -1)) == head
            and float(saved.get("temperature", 1.0)) == temperature and "codes" in saved):
          generated[task], codes[task], speeds[task] = saved["video"], saved["codes"], float(saved["tokens_per_second"])
          continue
    clips, clip_codes, rates = [], [], []
    for i in tqdm(conds, desc=f"generating {task}", unit="clip"):
      result = gen.generate(**_conditions(task, real[i], captions[i], (s.height, s.width), head), seed=seed + i,
                            cfg_scale=cfg_scale, temperature=temperature)
      clips.append(result["video"][0])
      clip_codes.append(result["codes"]["video"][0])
      rates.append(result["tokens_per_second"])
    generated[task], codes[task], speeds[task] = np.stack(clips), np.stack(clip_codes), float(np.median(rates))
    buf = io.BytesIO()
    np.savez(buf, video=generated[task], codes=codes[task], seed=seed, conditions=np.asarray(conds), head=head,
             temperature=temperature, tokens_per_second=speeds[task])
    write_bytes(path, buf.getvalue())

  # --- scores -------------------------------------------------------------------------------
  cache = pathlib.Path(features_dir or out / "features")
  real_feats = features.cached_features(real, cache, f"real_{split}", size=fvd_size)
  evaluator = None
  classes = [subject(c) for c in captions]
  if len({c for c in classes if c}) >= 2:
    captioned = [i for i, c in enumerate(captions) if c]
    evaluator = RecognitionEvaluator.of(readers or fit_readers_on(data, s.frames), real[captioned],
                                        [classes[i] for i in captioned])
  per_task, real_decoded, real_codes = {}, None, None
  for task, clips in generated.items():
    conds = [i for i in range(n) if task != "t2v" or captions[i]]
    feats = features.cached_features(clips, cache, f"generated_{task}", size=fvd_size)
    row = {"samples": len(clips), "fvd": fvd.frechet_distance(real_feats, feats, min_clips=min_clips),
           "tokens_per_second": speeds[task]}
    if evaluator is not None:
      row["recognition"] = evaluator.rate(clips, [classes[i] for i in conds])
    if task in MOTION_TASKS:
      if real_decoded is None:
        real_decoded, real_codes = _through_tokenizer(gen, real)
      row["motion"] = motion_scores(clips, real[conds], given_frames(task, s), real_decoded[conds])
      row["motion"]["codes"] = code_scores(codes[task], real_codes[conds], given_latents(task, s))
    per_task[task] = row

  result = {
      "kind": "generate", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "tasks": per_task,
      "recognition": evaluator.summary() if evaluator else None,
      "protocol": {
          "conditions": f"the first {n} clips of the {split} split, one sample each (t2v: the captioned ones)",
          "task_inputs": {t: {k: (v if isinstance(v, str) or v is None else f"<array {np.shape(v)}>")
                              for k, v in _conditions(t, real[0], "CAPTION", (s.height, s.width), head).items()}
                          for t in tasks},
          "seeds": f"sample i: seed {seed} + i", "cfg_scale": cfg_scale,
          "cfg_scale_default": "3.0 with a prompt, else 1.0 (kineto/generate.py)",
          "sampling": f"autoregressive, temperature {temperature:g}, no top-k/top-p",
          "recognition_classes": "a caption's subject: its text before the first comma ('pong, the "
                                 "opponent scores' is read as 'pong')",
          "recognition_readers": "rate: the colour/layout classifier (kineto/demo/recognize.py); sprite_rate: "
                                 "the sprite reader (kineto/eval/sprites.py, seed 0), both fit on the "
                                 "captioned training clips",
          "captions": f"held-out captions over the text budget ({s.text_budget}) keep their first pieces",
          "motion": "i2v and continuation: PSNR (uint8) and LPIPS (AlexNet, per frame) of the frames after "
                    "the given ones vs the real clip's, and of repeating the last given frame (real, and the generated "
                    "clip's own decoded copy of it), and of the real clip's own codes decoded (real_future_decoded: "
                    "what an LM that predicts every code makes, the ceiling); moving_psnr: PSNR over the "
                    f"pixels where the real future differs from the real last given frame by > {MOVING_LEVELS} "
                    "of 255, pooled over clips; codes: the share of the future latent frames' codes equal to "
                    "the real clip's own (accuracy), beside repeating the real last given latent frame's codes",
          "fvd": fvd.protocol(fvd_size, min_clips=min_clips), "fvd_reference": f"the {n} real {split} clips",
      },
      "provenance": {"lm": {"workdir": str(pathlib.Path(lm).absolute()), "step": gen.checkpoints["lm_step"],
                            "ema": gen.checkpoints["lm_ema"], **provenance.model_fingerprint(gen.cfg.lm, gen.model)},
                     "tokenizer": {k: manifest["tokenizer"][k] for k in ("workdir", "fingerprint")},
                     "audio_codec": (manifest.get("audio_codec") or {}).get("fingerprint"),
                     "tokens_dir": str(gen.checkpoints["tokens_dir"]),
                     "dataset": provenance.dataset_identity(data, split, split_examples),
                     "code": provenance.code_version()},
  }
  result["seconds"] = round(time.perf_counter() - started, 1)
  result["files"] = {"json": str(out / "eval.json"),
                     "contact_sheet": str(_sheet(real, captions, generated, out / "contact_sheet.png"))}
  write_json(out / "eval.json", result)
  return result


def _through_tokenizer(gen, real_nthwc: np.ndarray, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """(the real clips encoded and decoded by the LM's tokenizer, the way generation decodes codes,
  uint8 [N, T, H, W, 3]; their codes [N, t, h, w])."""
  from vidtok.model import decode_chunks
  from vidtok.pixels import to_float, to_uint8
  out, all_codes = [], []
  for i in range(0, len(real_nthwc), batch):
    codes = np.stack([gen._encode(to_float(clip)) for clip in real_nthwc[i:i + batch]])
    out.append(to_uint8(decode_chunks(gen.tokenizer, codes, gen.spec.video_shape[0])))
    all_codes.append(codes)
  return np.concatenate(out)[:, :real_nthwc.shape[1]], np.concatenate(all_codes)


def given_latents(task: str, spec) -> int:
  """Latent frames of the real clip's codes a task is given: those its `given_frames` encode to."""
  return 1 + (given_frames(task, spec) - 1) // spec.compression[0]


def code_scores(generated_nthw: np.ndarray, real_nthw: np.ndarray, given: int) -> dict:
  """Motion in code space: the share of the future latent frames' codes (after the `given` ones)
  that equal the real clip's own, beside repeating the real last given latent frame's codes.

  Pixels cannot show what an LM learned where the tokenizer's error is larger than the motion:
  on the demo's clips a perfect LM's codes, decoded, beat a repeated decoded frame by 0.06 dB
  (`motion_scores`). Codes can. Repeating the last given latent frame is the static guess in the
  LM's own terms: where nothing changes, a code that stays the same is right."""
  future = real_nthw[:, given:]
  made = generated_nthw[:, given:future.shape[1] + given]
  accuracy, repeat = float(np.mean(made == future)), float(np.mean(real_nthw[:, given - 1:given] == future))
  return {"given_latents": given, "accuracy": accuracy, "repeat_last_accuracy": repeat,
          "beats_repeat_last": accuracy > repeat}


MOVING_LEVELS = 32  # a pixel moves where the real future differs from the real last given frame by more


def motion_scores(generated_nthwc: np.ndarray, real_nthwc: np.ndarray, given: int,
                  real_decoded_nthwc: np.ndarray | None = None) -> dict:
  """The generated frames after the `given` ones against the real clips' (uint8 [N, T, H, W, 3]),
  beside two static baselines: mean PSNR (dB) and LPIPS over clips.

  `repeat_last` repeats the real last given frame. `repeat_last_decoded` repeats the generated
  clip's own last given frame: the given frames come back through the tokenizer (their codes
  are copied into the output, and the causal decoder makes them from those codes alone), so
  this is the same static guess after the same codec. Against it, the tokenizer's loss cancels
  and what is left is motion: a tokenizer at 19 dB cannot reach the 30 dB that repeating a real
  Atari frame scores, but an LM that learned motion beats repeating its own decoded frame.

  `real_future_decoded` (with `real_decoded_nthwc`, the real clips encoded and decoded by the
  tokenizer) is the ceiling: what an LM that predicts every future code right makes. Where the
  real future barely moves, it too can fall short of `repeat_last_decoded`; then no LM can beat
  that baseline with this tokenizer (bench/NOTES.md, "Issue 17, night").

  `moving_psnr` scores only where the real clip moves: the pixels of the real future that differ
  from the real last given frame by more than MOVING_LEVELS (of 255, in any channel), pooled over
  all clips (None if none moves). Whole-frame PSNR on Atari clips is the still background's: a
  ball moving is a few dozen pixels of 4,096. There a static guess is wrong by construction, and
  motion that was learned shows.
  """
  from kineto.eval.codecs import psnr_u8
  from kineto.eval.tokenizer import _lpips_u8
  future = real_nthwc[:, given:]
  made = generated_nthwc[:, given:future.shape[1] + given]
  moving = np.abs(future.astype(np.int16) - real_nthwc[:, given - 1:given]).max(-1) > MOVING_LEVELS  # [N, F, H, W]

  def moving_psnr(clips):
    if not moving.any():
      return None
    mse = (((clips.astype(np.float64) - future) / 255.0) ** 2).mean(-1)[moving].mean()
    return float(10 * np.log10(1.0 / max(mse, 1e-10)))
  baselines = {"repeat_last": real_nthwc[:, given - 1:given],
               "repeat_last_decoded": generated_nthwc[:, given - 1:given]}
  row = {"given_frames": given, "scored_frames": int(future.shape[1])}
  clips_by_name = {"generated": made, **{k: np.repeat(v, future.shape[1], axis=1) for k, v in baselines.items()}}
  if real_decoded_nthwc is not None:
    clips_by_name["real_future_decoded"] = real_decoded_nthwc[:, given:future.shape[1] + given]
  for name, clips in clips_by_name.items():
    row[name] = {"psnr": float(np.mean([psnr_u8(a, b) for a, b in zip(clips, future)])),
                 "lpips": float(_lpips_u8(clips, future).mean()), "moving_psnr": moving_psnr(clips)}
  row["moving_pixels"] = float(moving.mean())
  for name in baselines:
    mine, theirs = row["generated"]["moving_psnr"], row[name]["moving_psnr"]
    row[f"beats_{name}"] = {"psnr": row["generated"]["psnr"] > row[name]["psnr"],
                            "lpips": row["generated"]["lpips"] < row[name]["lpips"],
                            "moving_psnr": None if mine is None else mine > theirs}
  return row


def _sheet(real, captions, generated: dict, path: pathlib.Path) -> pathlib.Path:
  from kineto.demo.report import contact_sheet
  rows = []
  for task, clips in generated.items():
    conds = [i for i in range(len(real)) if task != "t2v" or captions[i]][:SHEET_SAMPLES]
    rows.append((f"{task}\n(held-out | generated)", [v for k, i in enumerate(conds) for v in (real[i], clips[k])]))
  return contact_sheet(rows, path, frames=3)
