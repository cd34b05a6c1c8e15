"""Generation from a trained LM checkpoint: the notebook API and `kineto generate`.

    gen = Generator.load("runs/lm")                       # everything resolved from the run
    out = gen.generate(prompt="a paddle hits the ball", seconds=4, seed=0)
    out["video"]   # uint8 [B, T, H, W, 3];  out["audio"]: float32 [B, S] or None

`Generator.load` reads the LM's saved config; its `data.tokens_dir` names the token-shard
manifest (`kineto tokenize`), which records the video tokenizer, the SentencePiece model,
the vocabulary, the clip shape and fps, and (when there is one) the audio codec. Every
part is checked against the others at load: the LM's vocab config must equal the
manifest's and the tokenizer's LFQ bits.

`generate` picks the task from the inputs (`choose_task`), encodes them with the
tokenizer / text model / audio codec, and calls `lm.sampling.generate`. Video longer than
one clip (`seconds`) repeats the continuation task clip after clip: the last 1 + 4(k - 1)
frames shown are re-encoded as a fresh clip's head (the condition the LM was trained on),
the LM continues it, and the new clip's frames after that head are appended (each clip is
decoded by the causal tokenizer, `vidtok.model.decode_chunks`). `codes["video"]` holds the
clips' codes one after another. A duration shorter than one clip is an error (the LM makes
whole clips); tasks with one clip of condition (v2a, a2v, av_continuation) make one clip.
Inputs are checked before
anything compiles. Image/video *files* are resized to cover the clip and center-cropped;
*arrays* must already have the clip's size. Continuation conditions on the last
1 + 4(k - 1) frames (k = `spec.continuation_frames` latents) of the array, or of the
file's first clip; the output starts with those frames.

Mask SPEC (CLI `--mask`, or a string for `mask=`), True = to generate:
  box:y0,y1,x0,x1   a pixel box (half-open, all frames) -> tokens via `pixel_mask_to_tokens` (inpaint)
  border:N          an N-pixel border on every side (outpaint)
An array mask is bool [frames, H, W] in pixels or [t, h, w] in latent tokens. A mask whose
kept region is one rectangle (everything around it generated) is outpainting.

Sharded generation: `Generator.load(workdir, mesh=sharding.make_mesh((1, -1, 1)))` (CLI `--mesh
1,-1,1`) reads only the weights it samples with (EMA or params, never the Adam moments) straight
onto their shards of the mesh under the LM's own rules (fsdp splits the embedding dimension,
tensor the heads, MLP and vocab), so a model too big for one chip samples on a slice. Sampling
keeps the rows on the `data` axis only (`sampling_rules`): fsdp splits weights, not prompts, so
any number of prompts and samples runs on any mesh whose data axis divides the rows. The
default is one local device per process (each process its own copy). Several prompts
(`prompt=[...]`, CLI `--prompts FILE`) sample in one batch; rows are prompt-major.

`method="maskgit"` on the LM is refused: the LM is trained with the next-token objective only,
so its logits at masked positions were never trained. MaskGIT runs where a model was trained
for it: the super-resolution stage (`--upscale SR_WORKDIR`, `Upscaler`), which takes the LM's
one-clip video codes (and the caption) to the SR stage's grid and the tokenizer decodes them
at the higher resolution (the tokenizer is fully convolutional).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

import configs
import sharding
from configs.schema import ClipSpec, Config, ConfigError
from kineto import media
from lm import sampling, superres_sampling, tasks
from lm.load_encoder import load_text_encoder
from lm.text import TextTokenizer
from lm.vocab import Vocabulary
from train import lm_data, workdir
from train.audio_trainer import load_audio_codec
from train.checkpoint import Checkpointer
from train.data.shards import read_manifest, tokenizer_fingerprint
from train.files import write_json
from train.lm_trainer import load_lm
from train.sr_trainer import load_sr
from train.tokenizer_trainer import load_tokenizer
from vidtok.model import decode_chunks
from vidtok.pixels import to_float, to_uint8


class GenerateError(ConfigError):
  """Bad generation input or an inconsistent checkpoint; the message names value and fix."""


# Which inputs each task needs (beyond an optional caption).
_NEEDS = {"unconditional": (), "t2v": ("prompt",), "t2i": ("prompt",), "i2v": ("image",),
          "continuation": ("video",), "inpaint": ("video", "mask"), "outpaint": ("video", "mask"),
          "v2a": ("video",), "a2v": ("audio",), "av_continuation": ("video", "audio")}


def choose_task(prompt=None, image=None, video=None, mask=None, audio=None) -> str:
  """The task the given inputs ask for (module docstring); `mask` must be a token mask or spec."""
  if mask is not None and video is None:
    raise GenerateError("a mask was given without a video: inpainting/outpainting needs --video.")
  if image is not None and video is not None:
    raise GenerateError("give an image (image-to-video) or a video, not both.")
  if audio is not None:
    if video is not None:
      return "av_continuation"
    if image is not None or prompt is not None:
      raise GenerateError("audio-to-video takes only audio; drop the prompt/image or pass task=.")
    return "a2v"
  if video is not None:
    if mask is None:
      return "continuation"
    return "outpaint" if _is_border(mask) else "inpaint"
  if image is not None:
    return "i2v"
  return "t2v" if prompt is not None else "unconditional"


def _is_border(mask) -> bool:
  if isinstance(mask, str):
    return mask.strip().startswith("border:")
  m = np.asarray(mask, bool)
  if not m.any() or not (m == m[:1]).all():
    return False
  kept = ~m[0]
  if not kept.any():
    return False
  ys, xs = np.nonzero(kept)
  return bool(kept[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all())


def parse_mask(spec_str: str, spec: ClipSpec) -> np.ndarray:
  """A mask SPEC (module docstring) -> bool pixel mask [frames, H, W], True = generate."""
  kind, _, value = spec_str.strip().partition(":")
  try:
    numbers = [int(v) for v in value.split(",")]
  except ValueError:
    numbers = None
  mask = np.zeros((spec.frames, spec.height, spec.width), bool)
  if kind == "box" and numbers and len(numbers) == 4:
    y0, y1, x0, x1 = numbers
    if not (0 <= y0 < y1 <= spec.height and 0 <= x0 < x1 <= spec.width):
      raise GenerateError(f"mask {spec_str!r}: the box must lie inside the {spec.height}x{spec.width} "
                          "clip with y0 < y1, x0 < x1 (pixels, half-open).")
    mask[:, y0:y1, x0:x1] = True
    return mask
  if kind == "border" and numbers and len(numbers) == 1:
    n = numbers[0]
    if not 1 <= n < min(spec.height, spec.width) / 2:
      most = math.ceil(min(spec.height, spec.width) / 2) - 1
      raise GenerateError(f"mask {spec_str!r}: border N must be in [1, {most}] "
                          f"pixels for a {spec.height}x{spec.width} clip.")
    mask[:] = True
    mask[:, n:spec.height - n, n:spec.width - n] = False
    return mask
  raise GenerateError(f"mask {spec_str!r}: expected 'box:y0,y1,x0,x1' (pixels) or 'border:N'.")


def token_mask(mask, spec: ClipSpec) -> np.ndarray:
  """A mask (SPEC string, pixel [frames, H, W] or token [t, h, w]) -> bool tokens [t, h, w]."""
  if isinstance(mask, str):
    mask = parse_mask(mask, spec)
  m = np.asarray(mask)
  if m.shape == spec.video_shape:
    out = m.astype(bool)
  elif m.shape == (spec.frames, spec.height, spec.width):
    out = sampling.pixel_mask_to_tokens(m.astype(bool), spec)
  else:
    raise GenerateError(f"mask of shape {m.shape}: expected pixels {(spec.frames, spec.height, spec.width)} "
                        f"or latent tokens {spec.video_shape} (True = generate), or a SPEC string.")
  if not out.any():
    raise GenerateError("the mask selects nothing to generate (all False).")
  return out


@dataclasses.dataclass
class Generator:
  """A loaded LM, video tokenizer, text model and (optional) audio codec that agree."""
  cfg: Config
  model: Any
  vocab: Vocabulary
  spec: ClipSpec
  tokenizer: Any
  text: Any
  audio_codec: Any
  manifest: dict
  checkpoints: dict
  text_encoder: Any = None  # the frozen encoder of text.encoder=minilm|t5 (prompts -> embeddings)
  truncate: bool = False  # a prompt over the budget of pieces keeps its first pieces (else an error)
  mesh: Any = None  # the LM's weights are sharded over it; None: one device

  # --- loading ------------------------------------------------------------------------

  @classmethod
  def load(cls, lm_workdir: str | os.PathLike, *, mesh=None, progress: bool = True) -> Generator:
    """Everything from an LM work directory (its latest checkpoint); see module docstring.

    mesh: the LM's weights go onto their shards of it (default: this process's first device)."""
    say = print if progress else (lambda *a, **k: None)
    workdir = pathlib.Path(lm_workdir)
    ckpt_dir = workdir / "checkpoints"
    if not ckpt_dir.is_dir():
      raise GenerateError(f"{workdir} holds no LM checkpoints ({ckpt_dir} missing); pass the "
                          "--workdir of `kineto lm train`.")
    cfg = configs.from_dict(Config, Checkpointer.read_config(ckpt_dir))
    if cfg.data.source != "tokens":
      raise GenerateError(f"the LM in {workdir} was trained on data.source={cfg.data.source!r}, not "
                          "on video token shards (data.source=tokens): it cannot generate video.")
    manifest = read_manifest(cfg.data.tokens_dir)
    lm_vocab = json.loads(json.dumps(dataclasses.asdict(cfg.vocab)))
    if lm_vocab != manifest["vocab"]["config"]:
      raise GenerateError(f"the LM's vocab config {lm_vocab} differs from the token shards' "
                          f"{manifest['vocab']['config']} ({cfg.data.tokens_dir}); the checkpoint "
                          "does not belong to these shards.")
    tok_dir = manifest["tokenizer"]["workdir"]
    say(f"kineto: loading video tokenizer {tok_dir}")
    tok_cfg, tokenizer = load_tokenizer(tok_dir)
    if tok_cfg.vidtok.bits != cfg.vocab.video_bits:
      raise GenerateError(f"the LM's vocab.video_bits={cfg.vocab.video_bits} does not match the video "
                          f"tokenizer's bits={tok_cfg.vidtok.bits} ({tok_dir}); use the tokenizer "
                          "the LM's token shards were made with.")
    # Codes mean what the weights that wrote them say: a tokenizer trained on after the
    # shards were written would decode the LM's codes into other pictures.
    found = tokenizer_fingerprint(tok_cfg.vidtok, tokenizer)["fingerprint"]
    if found != manifest["tokenizer"]["fingerprint"]:
      raise GenerateError(f"the video tokenizer in {tok_dir} (fingerprint {found}) is not the one that "
                          f"wrote the LM's token shards ({manifest['tokenizer']['fingerprint']}); it "
                          "changed since `kineto tokenize` (trained further?): re-tokenize and retrain "
                          "the LM, or restore that tokenizer checkpoint.")
    vocab = Vocabulary(cfg.vocab)
    text = None
    if manifest.get("text_model"):
      text = TextTokenizer(manifest["text_model"]["path"], cfg.vocab)
    codec = None
    if manifest.get("audio_codec"):
      say(f"kineto: loading audio codec {manifest['audio_codec']['workdir']}")
      codec = load_audio_codec(manifest["audio_codec"]["workdir"])
      found = codec.fingerprint()["fingerprint"]
      if found != manifest["audio_codec"]["fingerprint"]:
        raise GenerateError(f"the audio codec in {manifest['audio_codec']['workdir']} (fingerprint "
                            f"{found}) is not the one that wrote the LM's token shards "
                            f"({manifest['audio_codec']['fingerprint']}); re-tokenize, or restore it.")

    text_encoder = None
    if cfg.text.encoder != "pieces":
      header = manifest.get("text_encoder") or {}
      if header.get("name") != cfg.text.encoder:
        raise GenerateError(f"the LM conditions on text.encoder={cfg.text.encoder!r} but its token shards "
                            f"({cfg.data.tokens_dir}) hold {header.get('name') or 'no'} caption embeddings.")
      say(f"kineto: loading text encoder {cfg.text.encoder}")
      text_encoder = load_text_encoder(cfg.text.encoder, header.get("path") or cfg.text.path)
      if text_encoder.fingerprint != header["fingerprint"]:
        raise GenerateError(f"the text encoder {cfg.text.encoder} here (fingerprint {text_encoder.fingerprint}) "
                            f"is not the one that wrote the LM's token shards ({header['fingerprint']}); "
                            "install or point text.path to that encoder.")
    say(f"kineto: loading LM {ckpt_dir}")
    _, model, step, used_ema = load_lm(workdir, mesh)
    checkpoints = {"lm": str(ckpt_dir.absolute()), "lm_step": step, "lm_ema": used_ema,
                   "tokenizer": str(tok_dir), "tokens_dir": str(cfg.data.tokens_dir),
                   "text_model": (manifest.get("text_model") or {}).get("path"),
                   "audio_codec": (manifest.get("audio_codec") or {}).get("workdir")}
    # the layout the LM was trained on
    spec = lm_data.clip_spec(manifest, cfg.data.audio_order, cfg.data.text_budget)
    return cls(cfg, model, vocab, spec, tokenizer, text, codec, manifest, checkpoints, text_encoder, mesh=mesh)

  # --- inputs -------------------------------------------------------------------------

  @property
  def clip_seconds(self) -> float:
    return self.spec.frames / self.spec.fps

  def _pixels(self, value, frames: int, what: str, *, exact: bool = False) -> np.ndarray:
    """A file path or an array -> float32 [T, H, W, 3] in [-1, 1] of the clip's size:
    exactly `frames` frames, or (not `exact`) at least `frames`: all of an array, a file's
    first clip."""
    s = self.spec
    if isinstance(value, (str, os.PathLike)):
      if what == "image":
        return media.read_image(value, s.height, s.width)
      if exact:
        return media.read_video(value, frames, s.height, s.width, fps=s.fps)
      return media.read_video(value, s.frames, s.height, s.width, fps=s.fps, min_frames=frames)
    x = np.asarray(value)
    if what == "image" and x.ndim == 3:
      x = x[None]
    if x.ndim != 4 or x.shape[1:] != (s.height, s.width, 3):
      raise GenerateError(f"{what} array of shape {np.shape(value)}: expected [T, {s.height}, {s.width}, 3] "
                          f"({'[H, W, 3] for an image; ' if what == 'image' else ''}arrays are not resized; "
                          "pass a file path to resize and crop).")
    if len(x) < frames or (exact and len(x) != frames):
      raise GenerateError(f"{what} array has {len(x)} frames; {frames} are needed.")
    if x.dtype == np.uint8:
      return to_float(x)
    if x.size and (x.min() < -1.0 or x.max() > 1.0):
      raise GenerateError(f"{what} array of {x.dtype} values in [{x.min():g}, {x.max():g}]: expected uint8 "
                          "or floats in [-1, 1].")
    return x.astype(np.float32)

  def _encode(self, pixels_thwc: np.ndarray) -> np.ndarray:
    if not hasattr(self, "_encode_fn"):
      self._encode_fn = nnx.jit(lambda m, v: m.encode(v))
    return np.asarray(self._encode_fn(self.tokenizer, jnp.asarray(pixels_thwc[None])))[0]

  def _pieces(self, prompt: str | None) -> list[int] | np.ndarray | None:
    """The prompt as the LM's caption: pieces, or the frozen encoder's embeddings [n, E]."""
    if prompt is None:
      return None
    if self.text_encoder is not None:
      # The caption-budget rule of the token shards: the first budget - 1 tokens and the end token.
      n = len(self.text_encoder.token_ids([prompt])[0])
      if n > self.spec.text_budget:
        print(f"kineto: the prompt is {n} encoder tokens; truncated to the text budget of {self.spec.text_budget}.")
      emb_bse, mask_bs = self.text_encoder.encode([prompt], max_len=self.spec.text_budget)
      return emb_bse[0, :mask_bs[0].sum()]
    if self.text is None:
      raise GenerateError("this LM's token shards have no text model (tokenized without --text_model): "
                          "it was not trained on captions; generate without a prompt.")
    pieces = self.text.encode(prompt)
    if len(pieces) > self.spec.text_budget and self.truncate:
      print(f"kineto: the prompt is {len(pieces)} pieces; truncated to the text budget of {self.spec.text_budget}.")
      return pieces[:self.spec.text_budget]
    if len(pieces) > self.spec.text_budget:
      raise GenerateError(f"the prompt is {len(pieces)} text pieces, over the text budget of "
                          f"{self.spec.text_budget}; shorten it.")
    return pieces

  def _audio_codes(self, audio, start: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(codes [levels, frames] of one clip of sound from `start` seconds on, that waveform [S])."""
    if self.audio_codec is None:
      raise GenerateError("audio input given, but this LM's token shards record no audio codec; "
                          "it was not trained on audio.")
    rate = int(self.audio_codec.sample_rate)
    wave = media.read_audio(audio, rate, start + self.clip_seconds) if isinstance(audio, (str, os.PathLike)) \
        else np.asarray(audio, np.float32).reshape(-1)
    wave = wave[round(start * rate):]
    need = round(self.clip_seconds * rate)
    if len(wave) < need:
      wave = np.pad(wave, (0, need - len(wave)))
    wave = np.asarray(wave[:need], np.float32)
    codes_blf = np.asarray(self.audio_codec.encode(wave[None]))
    if codes_blf.ndim != 3 or codes_blf.shape[2] < self.spec.audio_frames:
      raise GenerateError(f"the audio codec encoded {self.clip_seconds:g} s into codes of shape "
                          f"{codes_blf.shape}; the LM's clips need [1, levels, {self.spec.audio_frames}] "
                          f"(ClipSpec.audio_hz={self.spec.audio_hz:g}).")
    return codes_blf[0, :, :self.spec.audio_frames], wave

  def prepare(self, *, prompt=None, image=None, video=None, mask=None, audio=None,
              task: str | None = None) -> tuple[str, dict, np.ndarray | None, np.ndarray | None]:
    """(task, lm.tasks example, known token mask or None, input waveform or None) from the
    user's inputs; every check happens here, before sampling compiles."""
    given = {"prompt": prompt, "image": image, "video": video, "mask": mask, "audio": audio}
    task = task or choose_task(**given)
    if task not in _NEEDS:
      raise GenerateError(f"task={task!r}: expected one of {sorted(_NEEDS)}.")
    missing = [k for k in _NEEDS[task] if given[k] is None]
    if missing:
      raise GenerateError(f"task {task} needs {' and '.join(missing)} (not given).")
    captioned = any(seg.modality == "text" for seg in tasks.get_task(task).inputs)
    allowed = set(_NEEDS[task]) | ({"prompt"} if captioned else set())
    unused = [k for k, v in given.items() if v is not None and k not in allowed]
    if unused:
      raise GenerateError(f"task {task} does not use {' or '.join(unused)}; leave it out or pick "
                          "another task.")
    s = self.spec
    known = None
    if task in ("inpaint", "outpaint"):
      known = ~token_mask(mask, s)  # checked before any video is decoded or encoded
    example: dict = {}
    pieces = self._pieces(prompt)
    if pieces is not None:
      example["text"] = pieces
    if task == "i2v":
      example["video"] = self._encode(self._pixels(image, 1, "image"))
    elif task in ("continuation", "av_continuation"):
      # The condition is the last 1 + 4(k - 1) frames of the array (of a file's first clip);
      # its sound is what plays from the first of those frames on.
      head = 1 + s.compression[0] * (s.continuation_frames - 1)
      shown = self._pixels(video, head, "video")
      example["video"] = self._encode(shown[-head:])
      audio_start = (len(shown) - head) / s.fps
    elif video is not None:
      example["video"] = self._encode(self._pixels(video, s.frames, "video", exact=True))
    wave = None
    if audio is not None:
      example["audio"], wave = self._audio_codes(audio, audio_start if task == "av_continuation" else 0.0)
    return task, example, known, wave

  # --- generation -----------------------------------------------------------------------

  def generate(self, prompt: str | list[str] | None = None, image=None, video=None, mask=None, audio=None,
               seconds: float | None = None, cfg_scale: float | None = None, seed: int = 0,
               num_samples: int = 1, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               method: str = "autoregressive", task: str | None = None, progress: bool = False) -> dict:
    """Generates `num_samples` videos (and audio) for the inputs; see the module docstring.

    prompt: a caption, or a list of captions sampled in one batch (the other inputs shared);
    rows are prompt-major: row r is prompt r // num_samples.
    cfg_scale: classifier-free guidance on the caption (default 3.0 when a prompt is given
    and 1.0, no guidance, otherwise). Returns {"video": uint8 [B, T, H, W, 3], "audio":
    float32 [B, S] or None, "codes": {"video": [B, t, h, w], "audio": ...}, "task", "fps",
    "sample_rate", "seconds_taken", "tokens_per_second", "segments", "prompts"}.
    """
    say = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    check_maskgit(method, self.cfg, self.checkpoints.get("lm"))
    if num_samples < 1:
      raise GenerateError(f"num_samples={num_samples} must be >= 1.")
    if seconds is not None and not seconds > 0:
      raise GenerateError(f"seconds={seconds} must be > 0.")
    prompts = list(prompt) if isinstance(prompt, (list, tuple)) else [prompt]
    if not prompts:
      raise GenerateError("prompt=[] holds no caption; give at least one, or prompt=None.")
    if len(prompts) > 1 and not all(isinstance(p, str) and p.strip() for p in prompts):
      raise GenerateError(f"prompt={prompts!r}: every caption of a list must be non-empty text.")
    task, example, known, input_wave = self.prepare(prompt=prompts[0], image=image, video=video, mask=mask,
                                                    audio=audio, task=task)
    # Every other prompt shares the encoded image/video/audio; only its caption differs.
    examples = [example] + [{**example, "text": self._pieces(p)} for p in prompts[1:]]
    rows = [ex for ex in examples for _ in range(num_samples)]
    s = self.spec
    if cfg_scale is None:
      cfg_scale = 3.0 if prompts[0] is not None else 1.0
    if cfg_scale != 1.0 and "text" not in example:
      raise GenerateError(f"cfg_scale={cfg_scale} guides the caption, but no prompt was given; "
                          "pass a prompt or cfg_scale=1.")
    try:
      sampling.Sampling(temperature, top_k, top_p)
    except ValueError as e:
      raise GenerateError(str(e)) from None
    ct = s.compression[0]
    if seconds is not None and round(seconds * s.fps) < s.frames:
      raise GenerateError(f"seconds={seconds} is shorter than one clip ({self.clip_seconds:g} s, "
                          f"{s.frames} frames): the LM makes whole clips; leave --seconds out.")
    frames = s.frames if seconds is None else round(seconds * s.fps)
    if frames > s.frames and task in ("v2a", "a2v", "t2i", "av_continuation"):
      raise GenerateError(f"task {task} makes one clip ({self.clip_seconds:g} s) for one clip of "
                          f"condition; seconds={seconds} is longer.")
    if task == "t2i":
      frames = 1
    kw = dict(num_samples=1, temperature=temperature, top_k=top_k, top_p=top_p)
    n = len(rows)
    on_mesh = functools.partial(self._on_mesh, n * (1 + (cfg_scale != 1.0)))

    say(f"kineto: {task}, {len(prompts)} prompt(s) x {num_samples} sample(s), {frames} frames")
    t_sample, tokens = time.perf_counter(), 0
    with on_mesh():
      out = sampling.generate(self.model, self.vocab, task, rows, s,
                              rng=jax.random.fold_in(jax.random.key(seed), 0), cfg_scale=cfg_scale,
                              known=known, method=method, **kw)
    tokens += out["tokens"].size
    video_codes, audio_codes = out.get("video"), out.get("audio")
    if task in ("i2v", "continuation", "av_continuation"):  # the condition frames come first
      head = np.broadcast_to(example["video"], (n,) + example["video"].shape)
      video_codes = np.concatenate([head, video_codes], axis=1)
    elif task == "v2a":
      video_codes = np.broadcast_to(example["video"], (n,) + example["video"].shape)
    k = s.continuation_frames
    t_sample = time.perf_counter() - t_sample

    say(f"kineto: decoding {video_codes.shape[1]} latent frames")
    frames_f = decode_chunks(self.tokenizer, np.ascontiguousarray(video_codes), s.video_shape[0])
    # Longer than a clip: each next clip is a continuation whose head re-encodes the last
    # frames shown as a fresh clip would (as the LM saw heads in training), and it adds the
    # frames after that head.
    head_frames = 1 + ct * (k - 1)
    clips, segments = [video_codes], 1
    with tqdm(total=frames, initial=min(frames_f.shape[1], frames), desc="frames",
              disable=not progress or frames_f.shape[1] >= frames) as bar:
      while frames_f.shape[1] < frames:
        t_next = time.perf_counter()
        shown = to_float(to_uint8(frames_f[:, -head_frames:]))  # as displayed
        heads = np.stack([self._encode(clip) for clip in shown])
        cond = [{**({"text": row["text"]} if "text" in row else {}), "video": h} for row, h in zip(rows, heads)]
        with on_mesh():
          nxt = sampling.generate(self.model, self.vocab, "continuation", cond, s,
                                  rng=jax.random.fold_in(jax.random.key(seed), segments),
                                  cfg_scale=cfg_scale, **kw)
        tokens += nxt["tokens"].size
        t_sample += time.perf_counter() - t_next
        clip_codes = np.concatenate([heads, nxt["video"]], axis=1)
        clip_f = decode_chunks(self.tokenizer, clip_codes, s.video_shape[0])
        frames_f = np.concatenate([frames_f, clip_f[:, head_frames:]], axis=1)
        clips.append(clip_codes)
        segments += 1
        bar.update(min(frames_f.shape[1], frames) - bar.n)
    video_codes = np.concatenate(clips, axis=1)
    video_u8 = to_uint8(frames_f[:, :frames])  # whole latents cover up to ct - 1 frames more
    wave = None
    if task == "av_continuation":  # the condition's audio comes first, as its video does
      split = s.audio_split(k)
      head = np.broadcast_to(example["audio"][:, :split], (n,) + example["audio"][:, :split].shape)
      audio_codes = np.concatenate([head, audio_codes], axis=2)
    if audio_codes is not None:
      wave = np.asarray(self.audio_codec.decode(np.asarray(audio_codes)), np.float32)
    elif task == "a2v":  # the video was made for the given sound: keep it with the frames
      wave = np.tile(input_wave[None], (n, 1))
    codes = {"video": video_codes, **({"audio": audio_codes} if audio_codes is not None else {})}
    return {"video": video_u8, "audio": wave, "codes": codes, "task": task, "fps": s.fps,
            "sample_rate": None if self.audio_codec is None else int(self.audio_codec.sample_rate),
            "segments": segments, "cfg_scale": cfg_scale, "prompts": prompts,
            "seconds_taken": time.perf_counter() - t0, "tokens_per_second": tokens / max(t_sample, 1e-9)}

  @contextlib.contextmanager
  def _on_mesh(self, rows: int):
    """Sampling on the Generator's mesh under `sampling_rules` (nothing to do on one device)."""
    if self.mesh is None:
      yield
      return
    data = self.mesh.shape["data"]
    if rows % data:
      raise GenerateError(f"{rows} sampled rows (prompts x samples, x2 with guidance) do not split over the "
                          f"mesh's data axis of {data}; pick --samples so they do, or a mesh with data=1.")
    with jax.set_mesh(self.mesh), nnx.logical_axis_rules(sampling_rules(self.cfg.mesh.rules)):
      yield


def sampling_rules(rules):
  """The LM's rules with the rows on `data` only: `fsdp` then splits the weights (each layer's
  gathered where it is used, as in training) and never the prompts."""
  return tuple((name, "data" if name == "act_batch" else axes) for name, axes in rules)


def check_maskgit(method: str, cfg, where) -> None:
  """Refuses MaskGIT on a model not trained with the masked objective (every LM: see the module
  docstring)."""
  masked = ("sr" in cfg) if isinstance(cfg, dict) else hasattr(cfg, "sr")  # a saved config dict, or a config
  if method == "maskgit" and not masked:
    raise GenerateError(f"--method maskgit: the LM in {where} was trained with the next-token objective only, "
                        "so its logits at masked positions mean nothing; use --method autoregressive, and "
                        "for MaskGIT a model trained with the masked objective: --upscale SR_WORKDIR "
                        "(`kineto sr train`).")


@dataclasses.dataclass
class Upscaler:
  """A loaded SR stage (`kineto sr train`) that fits a Generator's LM and tokenizer."""
  cfg: Any
  model: Any
  workdir: str

  @classmethod
  def load(cls, sr_workdir: str | os.PathLike, gen: Generator) -> Upscaler:
    cfg, model = load_sr(sr_workdir)
    s, bits = gen.spec, gen.manifest["tokenizer"]["bits"]
    low = (s.video_shape[0], s.height // s.compression[1], s.width // s.compression[2])
    if tuple(cfg.sr.low_thw) != low or cfg.sr.video_bits != bits:
      raise GenerateError(f"--upscale {sr_workdir}: the SR stage reads {cfg.sr.video_bits}-bit "
                          f"{'x'.join(map(str, cfg.sr.low_thw))} codes, the LM makes {bits}-bit "
                          f"{'x'.join(map(str, low))} ones; train the SR stage on pairs of this LM's tokenizer.")
    pairs = pathlib.Path(cfg.data.tokens_dir) / "manifest.json"
    if pairs.is_file():  # codes mean what the tokenizer that wrote them says
      found = json.loads(pairs.read_text())["tokenizer"]["fingerprint"]
      if found != gen.manifest["tokenizer"]["fingerprint"]:
        raise GenerateError(f"--upscale {sr_workdir}: its pairs were written by tokenizer {found}, the LM's "
                            f"codes by {gen.manifest['tokenizer']['fingerprint']}; train the SR stage on "
                            "pairs of the LM's tokenizer.")
    return cls(cfg, model, str(sr_workdir))

  def __call__(self, gen: Generator, codes_bthw: np.ndarray, prompts: str | list | None, *, seed: int,
               guidance: float, steps: int = 12) -> np.ndarray:
    """High-res codes [B, T, H, W] of the LM's low-res codes (one clip each); `prompts`: one
    caption for every row, or one per row (None: uncaptioned)."""
    sr = self.cfg.sr
    if tuple(codes_bthw.shape[1:]) != tuple(sr.low_thw):
      raise GenerateError(f"--upscale takes one clip of {'x'.join(map(str, sr.low_thw))} codes; the LM made "
                          f"{'x'.join(map(str, codes_bthw.shape[1:]))} (leave out --seconds and t2i).")
    b = codes_bthw.shape[0]
    prompts = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts] * b
    # The SR stage reads SentencePiece pieces (its pairs' captions), whatever the LM's text encoder.
    pieces = [list(gen.text.encode(p))[:sr.text_budget] if p is not None and gen.text is not None else []
              for p in prompts]
    text = np.zeros((b, max(1, *map(len, pieces))), np.int32)
    valid = np.zeros(text.shape, bool)
    for r, row in enumerate(pieces):
      text[r, :len(row)] = row
      valid[r, :len(row)] = True
    high, _ = superres_sampling.upscale(self.model, codes_bthw.reshape(b, -1), text, valid, rng=seed,
                      config=sampling.MaskGit(steps=steps), guidance=guidance)
    return high.reshape(b, *sr.high_thw)


# --- the CLI's logic ------------------------------------------------------------------------

def read_prompts(path: str | os.PathLike) -> list[str]:
  """`--prompts FILE`: one caption per line; blank lines are skipped."""
  path = pathlib.Path(path)
  try:
    lines = path.read_text(encoding="utf-8").splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise GenerateError(f"--prompts {path}: cannot read it ({e.__class__.__name__}: {e}); give a UTF-8 text "
                        "file with one caption per line.") from None
  prompts = [line.strip() for line in lines if line.strip()]
  if not prompts:
    raise GenerateError(f"--prompts {path} holds no caption; write one caption per line.")
  return prompts


def run(lm: str, out: str, *, gif: bool = False, progress: bool = True, upscale: str | None = None,
        upscale_guidance: float = 1.0, mesh: tuple[int, int, int] | None = None,
        prompts_file: str | None = None, **kwargs) -> dict:
  """`kineto generate`: loads, generates, writes OUT.mp4 (+ .gif) and OUT.json; returns the JSON.

  upscale: an SR work directory: the LM's codes go through its MaskGIT sampler and the
  tokenizer decodes the high-res codes (OUT.mp4; the base video is OUT-base.mp4).
  mesh: (data, fsdp, tensor) sizes over every device of every process (-1: the rest); the
  LM's weights are sharded over it. None: each process samples on its own first device.
  prompts_file: one caption per line, sampled in one batch: OUT-R.mp4 per row R (prompt-major)."""
  out = pathlib.Path(out)
  if out.suffix.lower() != ".mp4":
    raise GenerateError(f"--out {out}: expected a .mp4 path (the .gif and .json go next to it).")
  if upscale is not None and kwargs.get("seconds") is not None:
    raise GenerateError("--upscale works on one clip; leave out --seconds.")
  if kwargs.get("prompt") is not None and not kwargs["prompt"].strip():
    raise GenerateError("--prompt is empty; give a caption, or leave --prompt out for an unconditional "
                        "sample.")
  if prompts_file is not None:
    if kwargs.get("prompt") is not None:
      raise GenerateError("--prompt and --prompts both given; pass one caption or a file of them.")
    kwargs["prompt"] = read_prompts(prompts_file)
  device_mesh = None if mesh is None else sharding.make_mesh(mesh)  # a mesh the devices refuse fails here
  if jax.process_index() == 0:  # a read-only or full --out folder fails now, not after sampling
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir.probe(out.parent)
  # Before anything loads: the saved configs say whether the models fit these flags.
  check_maskgit(kwargs.get("method", "autoregressive"), Checkpointer.read_config(pathlib.Path(lm) / "checkpoints"), lm)
  if upscale is not None and "sr" not in Checkpointer.read_config(pathlib.Path(upscale) / "checkpoints"):
    load_sr(upscale)  # raises its error naming what the directory holds
  gen = Generator.load(lm, mesh=device_mesh, progress=progress)
  upscaler = Upscaler.load(upscale, gen) if upscale is not None else None
  result = gen.generate(progress=progress, **kwargs)
  videos = result["video"]
  samples = kwargs.get("num_samples", 1)
  row_prompts = [p for p in result["prompts"] for _ in range(samples)]
  if upscaler is not None:
    high = upscaler(gen, np.asarray(result["codes"]["video"]), row_prompts, seed=kwargs.get("seed", 0),
                    guidance=upscale_guidance)
    for b, frames in enumerate(videos if jax.process_index() == 0 else ()):
      stem = out.with_name(f"{out.stem}-base" + (f"-{b}" if len(videos) > 1 else "") + out.suffix)
      media.write_video(stem, frames, result["fps"])
    videos = to_uint8(decode_chunks(gen.tokenizer, high, gen.spec.video_shape[0]))[:, :videos.shape[1]]
    result["audio"] = None
  paths, rows = {}, []
  # Every process samples the same seed (on its own device, or its shards of one mesh); one writes.
  chief = jax.process_index() == 0
  for b, frames in enumerate(videos if chief else ()):
    stem = out if len(videos) == 1 else out.with_name(f"{out.stem}-{b}{out.suffix}")
    audio = None if result["audio"] is None else result["audio"][b]
    paths.setdefault("mp4", []).append(str(media.write_video(stem, frames, result["fps"], audio,
                                                             result["sample_rate"])))
    if gif:
      paths.setdefault("gif", []).append(str(media.write_gif(stem.with_suffix(".gif"), frames, result["fps"])))
    rows.append({"prompt": row_prompts[b], "sample": b % samples, "mp4": paths["mp4"][-1]})
  settings = {k: (str(v) if isinstance(v, (str, os.PathLike)) else None if v is None else f"<array {np.shape(v)}>")
              if k in ("image", "video", "mask", "audio") else v for k, v in kwargs.items()}
  if prompts_file is not None:
    settings["prompt"], settings["prompts"] = None, str(prompts_file)
  summary = {"task": result["task"], "settings": settings, "cfg_scale": result["cfg_scale"],
             "outputs": paths, "rows": rows, "checkpoints": gen.checkpoints, "video_shape": list(videos.shape),
             "audio_samples": None if result["audio"] is None else int(result["audio"].shape[-1]),
             "fps": result["fps"], "segments": result["segments"],
             "mesh": None if device_mesh is None else dict(device_mesh.shape),
             "seconds_taken": round(result["seconds_taken"], 3),
             "tokens_per_second": round(result["tokens_per_second"], 2),
             **({"upscaled": {"sr": upscaler.workdir, "from": list(result["video"].shape[2:4]),
                              "guidance": upscale_guidance}} if upscaler is not None else {})}
  json_path = out.with_suffix(".json")
  if not chief:
    return summary
  write_json(json_path, summary)
  if progress:
    print(f"kineto: wrote {', '.join(sum(paths.values(), []))} and {json_path}")
  return summary
