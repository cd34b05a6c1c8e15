"""The demo's super-resolution stages (kineto/demo/run.py) and their figure: SR against bicubic.

  sr_data    the same games' clips at 2x the demo size (128x128), same episodes and held-out
             split (fewer training clips: `DemoPlan.sr_train_clips`)                         sr_data/
  sr_tokens  each clip -> codes at 128x128 and of its 2x-downsampled copy (the demo size),
             by the demo tokenizer (fully convolutional): `tokenize_dataset(..., lowres=2)`   sr_tokens/
  sr         the SR stage (configs/sr_demo.py) on those pairs, masked objective              sr/
  sr_eval    held-out clips: low-res codes -> SR (MaskGIT) -> decoded at 128x128, against
             the decoded low-res video upscaled bicubically, both scored (PSNR, LPIPS) against
             the real 128x128 clips; plus the tokenizer's own 128x128 reconstruction (the
             ceiling any token-space SR has)                                                   sr/eval.json

The SR input is the code grid the base LM generates (the demo size), so the same stage
upscales LM samples (`kineto generate --upscale outputs/demo/sr`).
"""
from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import configs
from lm.sampling import MaskGit
from lm.superres_sampling import upscale
from train.data.demo import build_demo
from train.data.pipeline import open_split
from train.data.shards import open_token_shards, read_manifest
from train.data.tokenize import tokenize_dataset
from train.files import write_json
from train.sr_trainer import load_sr, train_sr
from train.tokenizer_trainer import load_tokenizer
from vidtok import metrics
from vidtok.model import decode_chunks
from vidtok.pixels import to_float, to_uint8

SR_STAGES = ("sr_data", "sr_tokens", "sr", "sr_eval")


def build_data(paths: dict, plan, fps: float) -> None:
  if (paths["sr_data"] / "dataset_info.json").is_file():
    return
  build_demo(paths["sr_data"], size=plan.size * plan.sr_scale, frames=plan.frames, fps=fps, games=plan.games,
             train_episodes=plan.train_episodes, train_clips=plan.sr_train_clips, val_clips=plan.val_clips,
             videos=plan.videos)


def tokenize(paths: dict, plan) -> None:
  tokenize_dataset(paths["vidtok"], paths["sr_data"], paths["sr_tokens"],
                   text_model=paths["text"] / "captions.model", lowres=plan.sr_scale)


def train(paths: dict, plan) -> dict:
  manifest = read_manifest(paths["sr_tokens"])
  (t, h, w), bits = manifest["clip"]["latents"], manifest["tokenizer"]["bits"]
  grid = [f"sr.video_bits={bits}", f"sr.frames={t}", f"sr.height={h}", f"sr.width={w}", f"sr.scale={plan.sr_scale}",
          f"lm.vocab={2 ** bits}", f"lm.max_len={t * h * w}", f"train.seq_len={t * h * w}"]
  cfg = configs.load("sr_demo", [*grid, f"data.tokens_dir={paths['sr_tokens']}", *plan.sr])
  return train_sr(cfg, paths["sr"])


def evaluate(paths: dict, plan, clips: int = 16, batch: int = 8) -> dict:
  """SR vs bicubic on held-out clips (module docstring) -> sr/eval.json and sr/eval.npz."""
  cfg, model = load_sr(paths["sr"])
  _, tokenizer = load_tokenizer(paths["vidtok"])
  shards = open_token_shards(paths["sr_tokens"], split="validation")
  source = open_split(paths["sr_data"], "validation")
  pairs = [shards[i] for i in range(min(clips, len(shards)))]
  real_u8 = np.stack([source[p["index"]]["video"] for p in pairs])
  lpips_params = metrics.lpips_params()
  t = cfg.sr.frames

  @jax.jit
  def scores(video, real, params):
    return {"psnr": metrics.psnr(video, real).mean(axis=1), "lpips": metrics.lpips(video, real, params).mean(axis=1)}

  decode = lambda codes: jnp.clip(decode_chunks(tokenizer, np.asarray(codes), t), -1, 1)
  out = {k: [] for k in ("sr", "bicubic", "ceiling")}
  shown = {}
  for i in range(0, len(pairs), batch):
    part = pairs[i:i + batch]
    low = np.stack([p["video_lowres"] for p in part])
    text = np.zeros((len(part), cfg.sr.text_budget), np.int32)
    valid = np.zeros(text.shape, bool)
    for j, p in enumerate(part):
      pieces = np.asarray(p.get("text", ()), np.int32)[:cfg.sr.text_budget]
      text[j, :len(pieces)], valid[j, :len(pieces)] = pieces, True
    high, _ = upscale(model, low.reshape(len(part), -1), text, valid, rng=plan.seed + i,
                      config=MaskGit(steps=plan.sr_steps, temperature=plan.sr_temperature),
                      guidance=plan.sr_guidance)
    real = to_float(jnp.asarray(real_u8[i:i + len(part)]))
    low_video = decode(low)
    videos = {"sr": decode(high.reshape(len(part), *cfg.sr.high_thw)),
              "bicubic": jnp.clip(jax.image.resize(low_video, real.shape, "bicubic"), -1, 1),
              "ceiling": decode(np.stack([p["video"] for p in part]))}
    for name, video in videos.items():
      video = video[:, :real.shape[1]]
      out[name].append(jax.device_get(scores(video, real, lpips_params)))
      if i == 0:
        shown[name] = to_uint8(video[:2])
    if i == 0:
      shown["real"], shown["low"] = real_u8[:2], to_uint8(low_video[:2, :real.shape[1]])
  result = {name: {k: float(np.mean(np.concatenate([s[k] for s in parts]))) for k in ("psnr", "lpips")}
            for name, parts in out.items()}
  result["clips"] = len(pairs)
  result["size"] = [int(real_u8.shape[2]), int(real_u8.shape[3])]
  result["sr_beats_bicubic"] = {"psnr": result["sr"]["psnr"] > result["bicubic"]["psnr"],
                                "lpips": result["sr"]["lpips"] < result["bicubic"]["lpips"]}
  result["sampling"] = {"steps": plan.sr_steps, "temperature": plan.sr_temperature, "guidance": plan.sr_guidance}
  result["train"] = json.loads((paths["sr"] / "summary.json").read_text())
  np.savez_compressed(paths["sr"] / "eval.npz", **shown)
  write_json(paths["sr"] / "eval.json", result)
  return result


def report_rows(paths: dict) -> list[tuple[str, list[np.ndarray]]]:
  """Contact-sheet rows: held-out low-res (decoded) | bicubic | SR | real, two clips."""
  path = paths["sr"] / "eval.npz"
  if not path.is_file():
    return []
  shown = np.load(path)
  size = shown["real"].shape[2:4]
  nearest = lambda v: np.repeat(np.repeat(v, size[0] // v.shape[1], axis=1), size[1] // v.shape[2], axis=2)
  return [(f"SR, held-out clip {i + 1}\nlow-res (decoded) | bicubic\n| SR | real",
           [nearest(shown["low"][i]), shown["bicubic"][i], shown["sr"][i], shown["real"][i]]) for i in range(2)]


def markdown(sr_eval: dict | None) -> list[str]:
  if not sr_eval:
    return []
  s, b, c = sr_eval["sr"], sr_eval["bicubic"], sr_eval["ceiling"]
  beats = sr_eval["sr_beats_bicubic"]
  h, w = sr_eval["size"]
  verdict = ("SR beats bicubic in " + " and ".join(k.upper() for k, v in beats.items() if v)
             if any(beats.values()) else "SR does not beat bicubic at this scale")
  tr = sr_eval["train"]
  return ["## Super-resolution (token space, MaskGIT) against bicubic", "",
          f"{sr_eval['clips']} held-out clips at {h}x{w}: the low-res codes (of the clip downsampled "
          f"2x, the grid the LM generates) go through the SR stage (step {tr['step']}, held-out masked "
          f"loss {_f(tr['eval_loss'])}, {sr_eval['sampling']['steps']} MaskGIT steps) and the tokenizer "
          f"decodes them at {h}x{w}; the baseline decodes the low-res codes and upscales bicubically. "
          f"**{verdict}.**", "",
          "| | PSNR (dB, higher is better) | LPIPS (lower is better) |", "|---|---|---|",
          f"| SR | {_f(s['psnr'])} | {_f(s['lpips'])} |",
          f"| bicubic of the decoded low-res video | {_f(b['psnr'])} | {_f(b['lpips'])} |",
          f"| tokenizer's own {h}x{w} reconstruction (SR's ceiling) | {_f(c['psnr'])} | {_f(c['lpips'])} |", ""]


def _f(x) -> str:
  return "-" if x is None else f"{x:.3g}"


def load_eval(paths: dict) -> dict | None:
  path = pathlib.Path(paths["sr"]) / "eval.json"
  return json.loads(path.read_text()) if path.is_file() else None
