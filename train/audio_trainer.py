"""The audio codec's training loop and its evaluation (`kineto audio train`).

Same conventions as the video tokenizer trainer: mesh -> data -> state (fresh, or resumed
from the latest checkpoint) -> jitted step (train/audio_step.py) -> loop ->
held-out evaluation -> summary. Writes into `workdir`:

  checkpoints/        codec parameters, EMA codebooks, optimizer (+ discriminator) states;
                      async, every `train.checkpoint_every` steps, at the end and on SIGTERM
  tb/                 TensorBoard: losses, SNR, codebook health, learning rate, speed; audio
                      (held-out original and reconstruction) and a spectrogram image
  reconstructions.wav held-out clips, each original, 0.25 s silence, reconstruction
  spectrogram.png     their spectrograms, original above reconstruction (all and 1 level)
  summary.json        held-out multi-scale spectral distance (dB) and SNR (dB), per number
                      of levels, on peak-normalized clips (and `as_stored`: at their own level)

Data (`AudioData`): the `audio` of the `has_audio` clips of the dataset's train split (plus
the bundled sources in `train.extra_audio`) are cut into random crops; each crop is
peak-normalized and attenuated by a random gain so the codec sees the levels real clips
come at. The batch of step s is a pure function of (seed, s): a resumed run sees exactly
the batches an uninterrupted one would. Held out: the validation split's clips with
sound, scored as stored (no gain). A dataset at another audio rate is resampled to the
codec's (polyphase FIR, `vidtok.audio.prepare`); one without sound is an error.

`load_audio_codec(workdir)` gives the trained codec as numpy in, numpy out (`AudioCodecHandle`)
for tokenizing and generation.
"""
from __future__ import annotations

import dataclasses
import io
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import configs
import sharding
from configs.schema import AudioCodecConfig, AudioConfig, ConfigError, TrainConfig
from train.audio_step import init_state, make_train_step, random_crops
from train.checkpoint import Checkpointer
from train.data import audio as audio_files
from train.data.build import DataError
from train.data.shards import fingerprint
from train.files import write_json
from train.loop import global_batch, open_writer, process_rows, run_loop
from train.optimizer import schedule
from vidtok import audio
from vidtok.audio import losses

GAP_SECONDS = 0.25  # silence between original and reconstruction in reconstructions.wav
ESPEAK_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "A rabbit wakes up in the forest and stretches in the morning sun.",
    "Three birds sing on a branch while the river flows below.",
    "Video and audio tokens share one vocabulary in the language model.",
)


# --- data -------------------------------------------------------------------------------------

def dataset_audio(data_dir: str | pathlib.Path, split: str, sample_rate: int,
                  limit: int | None = None) -> list[np.ndarray]:
  """The mono waveforms of a split's clips with sound, at `sample_rate` (resampled if the
  dataset was built at another rate)."""
  from train.data.pipeline import open_split
  data_dir = pathlib.Path(data_dir)
  source = open_split(data_dir, split)
  summary = data_dir / "summary.json"
  spec = json.loads(summary.read_text()).get("spec") if summary.is_file() else None
  if not spec or "audio_rate" not in spec:
    raise DataError(f"{data_dir} has no summary.json with the clip spec's audio_rate; rebuild it "
                    "with `kineto data build` / `kineto data demo`.")
  rate = int(spec["audio_rate"])
  waves = []
  for i in range(len(source)):
    record = source[i]
    if not bool(record["has_audio"]):
      continue
    waves.append(audio.prepare(np.asarray(record["audio"], np.float32), rate, sample_rate,
                               resample=True))
    if limit is not None and len(waves) >= limit:
      break
  return waves


def extra_audio(sources: tuple[str, ...], sample_rate: int, max_seconds: float) -> list[np.ndarray]:
  """The bundled recordings `train.extra_audio` names (peak-normalized), or a clear error."""
  waves = []
  if "sonic_pi" in sources:
    paths = audio_files.sonic_pi_samples()
    if not paths:
      raise DataError("train.extra_audio names sonic_pi but Debian's sonic-pi-samples are not "
                      "installed; `apt-get install -y sonic-pi-samples` or drop it from train.extra_audio.")
    waves += [audio_files.load_audio(p, sample_rate, max_seconds=max_seconds) for p in paths]
  if "espeak" in sources:
    try:
      waves += [audio_files.espeak_speech(t, sample_rate)[:round(max_seconds * sample_rate)]
                for t in ESPEAK_TEXTS]
    except FileNotFoundError as e:
      raise DataError(f"train.extra_audio names espeak: {e}") from e
  return [audio.peak_normalize(w) for w in waves]


class AudioData:
  """Training crops addressed by step, and the held-out clips."""

  def __init__(self, cfg: AudioConfig):
    tc, cc = cfg.train, cfg.codec
    self.samples = int(tc.crop_seconds * cc.sample_rate) // cc.hop * cc.hop
    self.seed, self.batch_size, self.gain_db = tc.seed, tc.batch_size, tc.gain_db
    from_dataset = dataset_audio(tc.data_dir, "train", cc.sample_rate)
    extras = extra_audio(tc.extra_sources, cc.sample_rate, tc.extra_max_seconds)
    waves = from_dataset + extras
    # Silent clips (a muted track) teach nothing and cannot be peak-normalized.
    self.waves = [w for w in waves if len(w) >= self.samples and np.abs(w).max() > 1e-4]
    if not self.waves:
      raise DataError(
          f"no training audio: the train split of {tc.data_dir} has {len(from_dataset)} clips with "
          f"sound and train.extra_audio={tc.extra_audio!r} gave {len(extras)} recordings; none is at "
          f"least {self.samples} samples ({tc.crop_seconds} s) long and non-silent. Build a dataset "
          "from videos with audio tracks, or add train.extra_audio=sonic_pi,espeak.")
    self.held_out = dataset_audio(tc.data_dir, "validation", cc.sample_rate, limit=tc.eval_clips)
    if not self.held_out:
      raise DataError(f"the validation split of {tc.data_dir} has no clip with sound; the codec "
                      "needs held-out audio to be scored on (rebuild with --val_fraction > 0 and "
                      "videos that have audio tracks).")
    self.dataset_clips, self.extra_recordings = len(from_dataset), len(extras)
    self.seconds = sum(len(w) for w in self.waves) / cc.sample_rate
    for w in self.waves + self.held_out:
      audio.check_waveform(w[None], cc)

  def batch(self, step: int, rows: slice = slice(None)) -> np.ndarray:
    """Rows `rows` of the float32 crops [batch, samples] of `step`."""
    rng = np.random.default_rng((self.seed, step))
    crops_bs = random_crops(self.waves, self.batch_size, self.samples, rng)
    peak_b = np.abs(crops_bs).max(axis=1, keepdims=True)
    gain_b = 0.9 / np.maximum(peak_b, 1e-4) * 10 ** (-rng.uniform(0, self.gain_db, (len(crops_bs), 1)) / 20)
    return (crops_bs * gain_b).astype(np.float32)[rows]

  def held_out_batch(self, normalize: bool = True) -> np.ndarray:
    """The held-out clips [N, S] (cut to the shortest), peak-normalized unless `normalize`
    is False: the spectral distance floors magnitudes at -80 dB full scale, so on quiet
    clips (bigbuckbunny's peaks at -26 dBFS) it would mostly compare the floor."""
    n = min(len(w) for w in self.held_out)
    waves = [audio.peak_normalize(w[:n]) if normalize else w[:n] for w in self.held_out]
    return np.stack(waves).astype(np.float32)


# --- the state as checkpointed ------------------------------------------------------------------

_SAVED = ("step", "params", "stats", "opt_state", "disc_params", "disc_opt_state")


def _saved_tree(state) -> dict:
  """The arrays a checkpoint holds (the RNG key is rebuilt from the seed: it never changes)."""
  return {k: getattr(state, k) for k in _SAVED if getattr(state, k) is not None}


def _optimizer_config(tc) -> TrainConfig:
  return TrainConfig(steps=tc.steps, batch_size=tc.batch_size, learning_rate=tc.learning_rate,
                     warmup_steps=tc.warmup_steps, weight_decay=tc.weight_decay, b1=tc.b1, b2=tc.b2,
                     clip_norm=tc.clip_norm, seed=tc.seed)


# --- training ------------------------------------------------------------------------------------

def train_audio(cfg: AudioConfig, workdir: str | pathlib.Path, *, progress: bool = True,
                stop_after: int | None = None) -> dict:
  """Trains the codec of `cfg` on its data; returns the summary (also workdir/summary.json)."""
  workdir = pathlib.Path(workdir)
  tc, cc = cfg.train, cfg.codec
  if stop_after is not None and stop_after < 1:
    raise ConfigError(f"--stop_after {stop_after} must be >= 1.")
  data = AudioData(cfg)  # data errors surface before anything compiles
  workdir.mkdir(parents=True, exist_ok=True)
  is_chief = jax.process_index() == 0

  mesh = sharding.make_mesh(cfg.mesh.shape)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  wave_sharding = sharding.batch_sharding(mesh, 2, cfg.mesh.rules)
  data_ways = int(np.prod([mesh.shape[a] for a in ("data", "fsdp")]))
  if tc.batch_size % data_ways:
    raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by the {data_ways} "
                      f"data-parallel devices of mesh {dict(mesh.shape)}; change one of them.")
  optim = _optimizer_config(tc)
  state = jax.device_put(init_state(cc, optim, tc.seed), replicated)
  ckpt = Checkpointer(workdir / "checkpoints", cfg)
  start_step = ckpt.latest_step() or 0
  if start_step:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                            _saved_tree(state))
    start_step, restored, _ = ckpt.restore(abstract, start_step)  # or an earlier good one
    state = state.replace(**restored)
  compiled = make_train_step(cc, optim)
  lr = schedule(optim)
  rows = process_rows(wave_sharding, (tc.batch_size, data.samples))
  n_params = int(sum(x.size for x in jax.tree.leaves(state.params)))
  if is_chief:
    print(f"kineto: {cfg.name}: {n_params / 1e6:.3f}M codec params on mesh {dict(mesh.shape)}; "
          f"{cc.sample_rate} Hz -> {cc.frame_rate:g} Hz x {cc.levels} levels x {cc.codebook_size} codes; "
          f"{data.seconds:.1f} s of training audio ({data.dataset_clips} clips of {tc.data_dir}, "
          f"{data.extra_recordings} extra recordings), {len(data.held_out)} held-out clips; "
          f"starting at step {start_step}.")
  writer = open_writer(workdir, cfg, start_step)
  held_bs = data.held_out_batch()
  audio_seconds = tc.batch_size * data.samples / cc.sample_rate  # per step

  def step_fn(state, step):
    wave = global_batch({"audio": data.batch(step, rows)}, {"audio": wave_sharding},
                        tc.batch_size)["audio"]
    state, out = compiled(state, wave)
    return state, out, {"audio_seconds": audio_seconds}

  def postfix(metrics, timing):
    return {"loss": f"{float(metrics['loss']):.3f}", "snr": f"{float(metrics['snr_db']):.1f}"}

  def log(metrics, step, timing):
    if step % tc.log_every == 0 or step == tc.steps - 1:
      for key, value in metrics.items():
        if value.ndim == 0:
          writer.add_scalar(f"{'codebook' if key.startswith('codebook') else 'train'}/{key}",
                            float(value), step)
        else:  # per-level codebook health
          for level, v in enumerate(value.reshape(-1)):
            writer.add_scalar(f"codebook/{key}/level{level}", float(v), step)
      writer.add_scalar("train/learning_rate", float(lr(step)), step)
      if timing.steps:
        writer.add_scalar("speed/audio_seconds_per_second", timing.rate("audio_seconds"), step)

  def listen(state, step):  # every process computes; the chief writes
    if tc.audio_every and step % tc.audio_every == 0:
      _log_audio(writer, state.codec(), held_bs[:1], cc, step)

  # The codec's step updates its codebooks outside the gradient, so it cannot leave the
  # state untouched when a loss is not finite: the first such step stops the run.
  result = run_loop(
      state, step_fn, name=cfg.name, ckpt=ckpt, start_step=start_step, steps=tc.steps,
      max_skipped=0, log=log, postfix=postfix, saved=_saved_tree, every_step=listen,
      progress=progress, stop_after=stop_after,
      nonfinite_hint=f"Lower train.learning_rate (now {tc.learning_rate}).")
  state, metrics, timing = result.state, result.metrics, result.timing
  if result.step < tc.steps:
    if writer:
      writer.close()
    return {"config": cfg.name, "step": result.step, "stopped_early": True}

  # --- held-out evaluation ----------------------------------------------------------------------
  codec = state.codec()
  report = evaluate_codec(codec, held_bs)
  report["as_stored"] = {k: v for k, v in audio.evaluate(codec, data.held_out_batch(False)).items()
                         if k != "levels"}
  step_seconds = timing.step_seconds
  summary = {
      "config": cfg.name, "step": tc.steps, "resumed_from": start_step, "params": n_params,
      "mesh": dict(mesh.shape), "sample_rate": cc.sample_rate, "frame_rate": cc.frame_rate,
      "levels": cc.levels, "codebook_size": cc.codebook_size,
      "bitrate_bps": cc.levels * float(np.log2(cc.codebook_size)) * cc.frame_rate,
      "train_audio_seconds": data.seconds, "train_dataset_clips": data.dataset_clips,
      "train_extra_recordings": data.extra_recordings,
      "train_loss": float(metrics["loss"]) if metrics else None,
      "train_snr_db": float(metrics["snr_db"]) if metrics else None,
      "step_seconds": step_seconds,
      "audio_seconds_per_second": step_seconds and tc.batch_size * data.samples / cc.sample_rate / step_seconds,
      "held_out": report,
  }
  recon_1_bs = np.asarray(audio.reconstruct(codec, held_bs[:2], levels=1))
  recon_bs = np.asarray(audio.reconstruct(codec, held_bs[:2]))
  _log_audio(writer, codec, held_bs[:1], cc, tc.steps, recon_bs=recon_bs[:1])
  if is_chief:
    n = recon_bs.shape[1]
    gap = np.zeros(round(GAP_SECONDS * cc.sample_rate), np.float32)
    audio_files.write_wav(workdir / "reconstructions.wav",
                    np.concatenate([x for i in range(len(recon_bs))
                                    for x in (held_bs[i, :n], gap, recon_bs[i], gap, gap)]),
                    cc.sample_rate)
    save_spectrograms(workdir / "spectrogram.png", cc.sample_rate, {
        "held-out original": held_bs[0, :n],
        f"reconstruction, {cc.levels} levels": recon_bs[0],
        "reconstruction, 1 level": recon_1_bs[0]})
    for key in ("spectral_distance_db", "snr_db"):
      writer.add_scalar(f"eval/{key}", report[key], tc.steps)
    writer.close()
    summary["outputs"] = {"wav": str(workdir / "reconstructions.wav"),
                          "spectrogram": str(workdir / "spectrogram.png")}
    write_json(workdir / "summary.json", summary)
  return summary


def evaluate_codec(codec: audio.AudioCodec, held_bs: np.ndarray) -> dict:
  """Held-out spectral distance and SNR with all levels, per number of levels, and the
  distance of silence (a floor any codec must beat)."""
  report = audio.evaluate(codec, held_bs)
  report["per_levels"] = {str(n): {k: v for k, v in audio.evaluate(codec, held_bs, levels=n).items()
                                   if k != "levels"}
                          for n in range(1, codec.cfg.levels + 1)}
  report["silence_spectral_distance_db"] = float(jnp.mean(losses.spectral_distance_db(
      jnp.asarray(held_bs), jnp.zeros_like(held_bs))))
  report["clips"] = int(len(held_bs))
  report["seconds_per_clip"] = held_bs.shape[1] / codec.cfg.sample_rate
  return report


def _spectrogram_db(wave_s: np.ndarray, window: int = 512) -> np.ndarray:
  mag = np.asarray(losses.stft_magnitude(jnp.asarray(wave_s)[None], window)[0])
  return 20 * np.log10(np.maximum(mag, 1e-4)).T  # [freq, time]


def save_spectrograms(path: pathlib.Path | io.BytesIO, rate: int, panels: dict[str, np.ndarray]) -> None:
  """One spectrogram per panel, stacked vertically, as a PNG (time in s, frequency in kHz)."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.3 * len(panels)), squeeze=False)
  for ax, (title, wave) in zip(axes[:, 0], panels.items()):
    ax.imshow(_spectrogram_db(wave), origin="lower", aspect="auto", cmap="magma", vmin=-90, vmax=-10,
              extent=(0, len(wave) / rate, 0, rate / 2000))
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("kHz")
  axes[-1, 0].set_xlabel("seconds")
  fig.tight_layout()
  fig.savefig(path, dpi=100, format="png")
  plt.close(fig)


def _log_audio(writer, codec, wave_bs: np.ndarray, cc: AudioCodecConfig, step: int,
               recon_bs: np.ndarray | None = None) -> None:
  """TensorBoard audio (original, reconstruction) and their spectrogram image."""
  if recon_bs is None:
    recon_bs = np.asarray(audio.reconstruct(codec, wave_bs))
  if writer is None:
    return
  n = recon_bs.shape[1]
  writer.add_audio("heldout/original", np.clip(wave_bs[0, :n], -1, 1), step, sample_rate=cc.sample_rate)
  writer.add_audio("heldout/reconstruction", np.clip(recon_bs[0], -1, 1), step, sample_rate=cc.sample_rate)
  from PIL import Image
  buffer = io.BytesIO()
  save_spectrograms(buffer, cc.sample_rate, {"original": wave_bs[0, :n], "reconstruction": recon_bs[0]})
  image = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
  writer.add_image("heldout/spectrogram", image, step, dataformats="HWC")


# --- loading a trained codec ------------------------------------------------------------------------

@dataclasses.dataclass
class AudioCodecHandle:
  """A trained codec on this host, numpy in and out.

  encode(wave_bs float32 [B, S] at `sample_rate`) -> int32 codes [B, levels, S // hop];
  decode(codes_blf int [B, l <= levels, F]) -> float32 [B, F * hop].
  """
  codec: audio.AudioCodec
  cfg: AudioCodecConfig
  config: AudioConfig
  workdir: pathlib.Path
  step: int

  @property
  def sample_rate(self) -> int:
    return self.cfg.sample_rate

  @property
  def levels(self) -> int:
    return self.cfg.levels

  @property
  def codebook_size(self) -> int:
    return self.cfg.codebook_size

  @property
  def frame_rate(self) -> float:
    return self.cfg.frame_rate

  def encode(self, wave_bs) -> np.ndarray:
    return np.asarray(self.codec.encode(np.asarray(wave_bs, np.float32)), np.int32)

  def decode(self, codes_blf) -> np.ndarray:
    return np.asarray(self.codec.decode(np.asarray(codes_blf)), np.float32)

  def fingerprint(self) -> dict:
    """{"fingerprint", "config_sha256", "weights_sha256"}: the codec config and every array
    that gives codes their meaning (parameters and codebooks), by name in sorted order."""
    from flax import nnx
    state = nnx.to_pure_dict(nnx.state(self.codec))
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_leaves_with_path(state)}
    return fingerprint(configs.to_dict(self.cfg), arrays)


def load_audio_codec(workdir: str | pathlib.Path) -> AudioCodecHandle:
  """The codec of an audio training work directory's latest checkpoint, on one device."""
  workdir = pathlib.Path(workdir)
  ckpt_dir = workdir / "checkpoints"
  if not ckpt_dir.is_dir():
    raise ConfigError(f"{workdir} is not an audio codec work directory (no checkpoints/); train one "
                      f"with `kineto audio train --config configs/audio_demo.py --workdir {workdir}`.")
  saved = Checkpointer.read_config(ckpt_dir)
  if "codec" not in saved:
    raise ConfigError(f"{workdir} holds a checkpoint of another kind of model (sections "
                      f"{sorted(saved)}), not an audio codec (`kineto audio train`).")
  cfg = configs.from_dict(AudioConfig, saved)
  device = jax.local_devices()[0]
  state = jax.device_put(init_state(cfg.codec, _optimizer_config(cfg.train), cfg.train.seed), device)
  ckpt = Checkpointer(ckpt_dir, cfg)
  single = jax.sharding.SingleDeviceSharding(device)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=single),
                          _saved_tree(state))
  step, restored, _ = ckpt.restore(abstract)
  ckpt.close()
  state = state.replace(**restored)
  return AudioCodecHandle(codec=state.codec(), cfg=cfg.codec, config=cfg, workdir=workdir.absolute(),
                          step=int(step))
