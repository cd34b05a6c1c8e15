"""Audio codec real-time factor on CPU: seconds of audio encoded (decoded) per second of
compute, for the demo codec (configs/audio_demo.py) and configs/audio_soundstream.py
(VideoPoet's scale), plus XLA's FLOP count per second of audio.

  python bench/audio_codec.py [--batch 2] [--seconds 10] [--configs audio_demo,audio_soundstream]

The input is real audio: the bigbuckbunny soundtrack, tiled to `--seconds`, `--batch` rows.
The weights are freshly initialized (the cost does not depend on their values). Encode
and decode are compiled once ahead of time and timed as the median of `--repeats` calls.
The last line is one JSON object; the headline `encode_realtime_factor` /
`decode_realtime_factor` are the demo config's (the codec `kineto audio train` trains).
"""
from __future__ import annotations

import argparse
import sys

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import emit, machine_info, time_fn  # noqa: E402

import configs  # noqa: E402
from train.data import audio as audio_files  # noqa: E402
from vidtok import audio  # noqa: E402


def measure(name: str, wave_bs: np.ndarray, repeats: int) -> dict:
  cfg = configs.load(name).codec  # an audio config's name or path
  codec = audio.AudioCodec(cfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(codec)
  wave_bs = jax.numpy.asarray(wave_bs[:, :wave_bs.shape[1] // cfg.hop * cfg.hop])
  encode = jax.jit(lambda s, w: nnx.merge(graphdef, s).encode(w)).lower(state, wave_bs).compile()
  codes = encode(state, wave_bs)
  decode = jax.jit(lambda s, c: nnx.merge(graphdef, s).decode(c)).lower(state, codes).compile()
  t_enc = time_fn(lambda: encode(state, wave_bs).block_until_ready(), warmup=1, repeats=repeats)
  t_dec = time_fn(lambda: decode(state, codes).block_until_ready(), warmup=1, repeats=repeats)
  seconds = wave_bs.shape[0] * wave_bs.shape[1] / cfg.sample_rate
  flops = {"encode": encode.cost_analysis()["flops"], "decode": decode.cost_analysis()["flops"]}
  return {"encode_realtime_factor": seconds / t_enc, "decode_realtime_factor": seconds / t_dec,
          "encode_gflop_per_audio_second": flops["encode"] / seconds / 1e9,
          "decode_gflop_per_audio_second": flops["decode"] / seconds / 1e9,
          "params": int(sum(x.size for x in jax.tree.leaves(nnx.state(codec, nnx.Param)))),
          "levels": cfg.levels, "codebook_size": cfg.codebook_size, "frame_rate": cfg.frame_rate,
          "audio_seconds_per_call": seconds, "codes_shape": list(codes.shape)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=2, help="recordings per call")
  parser.add_argument("--seconds", type=float, default=10.0, help="length of each recording")
  parser.add_argument("--configs", default="audio_demo,audio_soundstream",
                      help="comma-separated audio config names (configs/audio_*.py) or paths")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  bunny = audio.peak_normalize(audio_files.load_bigbuckbunny())
  samples = int(args.seconds * 16_000)
  wave_bs = np.stack([np.roll(np.tile(bunny, -(-samples // len(bunny))), 4_000 * i)[:samples]
                      for i in range(args.batch)]).astype(np.float32)
  names = [n for n in args.configs.split(",") if n]
  results = {}
  for name in names:
    r = results[name] = measure(name, wave_bs, args.repeats)
    print(f"{name:18s} encode {r['encode_realtime_factor']:8.1f}x real time  decode "
          f"{r['decode_realtime_factor']:8.1f}x real time  ({r['encode_gflop_per_audio_second']:.2f}+"
          f"{r['decode_gflop_per_audio_second']:.2f} GFLOP per audio second, {r['params'] / 1e6:.2f}M params)")
  first = results[names[0]]
  emit({"encode_realtime_factor": first["encode_realtime_factor"],
        "decode_realtime_factor": first["decode_realtime_factor"], "headline": names[0],
        "batch": args.batch, "seconds_per_recording": args.seconds, "configs": results,
        **machine_info()})


if __name__ == "__main__":
  main()
