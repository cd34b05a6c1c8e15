"""The typed, frozen config dataclasses every kineto command reads, one module per family.

A config file in `configs/` builds one `Config` (LM), `TokenizerConfig` or `AudioConfig`
in `get_config()`. Validation lives in `__post_init__`, so a bad value fails when the
config is built (by the file or by a `--set` override), before any device is touched or
anything compiles.

  checks.py     ConfigError and the validation helpers
  mesh.py       MeshConfig, MESH_AXES, DEFAULT_RULES (logical axis -> mesh axes)
  train.py      TrainConfig: the LM's optimization loop (also the audio library step's)
  lm.py         LmConfig, VocabConfig, LmDataConfig, TextConfig and Config, one LM run
  tokenizer.py  VidtokConfig, VidtokTrainConfig and TokenizerConfig, one tokenizer run
  audio.py      AudioCodecConfig, AudioTrainConfig and AudioConfig, one audio codec run
  superres.py   SrModelConfig, SrDataConfig and SrConfig, one super-resolution run
  clip.py       ClipSpec: the clip shape the dataset builder and the LM's task layouts share
"""
from configs.schema.audio import (
                                  ACTIVATIONS,
                                  ADVERSARIAL_LOSSES,
                                  CODEBOOK_MODES,
                                  EXTRA_AUDIO,
                                  AudioCodecConfig,
                                  AudioConfig,
                                  AudioTrainConfig,
)
from configs.schema.checks import ConfigError
from configs.schema.clip import ClipSpec
from configs.schema.lm import (
                                  ATTENTION_IMPLS,
                                  AUDIO_ORDERS,
                                  DATA_SOURCES,
                                  DTYPES,
                                  REMAT_POLICIES,
                                  SCHEDULES,
                                  TEXT_ENCODER_DIMS,
                                  TEXT_ENCODERS,
                                  Config,
                                  LmConfig,
                                  LmDataConfig,
                                  TextConfig,
                                  VocabConfig,
)
from configs.schema.mesh import DEFAULT_RULES, MESH_AXES, MeshConfig
from configs.schema.superres import SrConfig, SrDataConfig, SrModelConfig
from configs.schema.tokenizer import RECON_LOSSES, TokenizerConfig, VidtokConfig, VidtokTrainConfig
from configs.schema.train import TrainConfig

__all__ = [
    "ACTIVATIONS", "ADVERSARIAL_LOSSES", "ATTENTION_IMPLS", "MATMUL_IMPLS", "AUDIO_ORDERS", "CODEBOOK_MODES",
    "DATA_SOURCES", "DEFAULT_RULES", "DTYPES", "EXTRA_AUDIO", "MESH_AXES", "RECON_LOSSES",
    "REMAT_POLICIES", "SCHEDULES", "TEXT_ENCODER_DIMS", "TEXT_ENCODERS",
    "TextConfig", "AudioCodecConfig", "AudioConfig", "AudioTrainConfig", "ClipSpec", "Config",
    "ConfigError",
    "LmConfig", "LmDataConfig", "MeshConfig", "SrConfig", "SrDataConfig", "SrModelConfig", "TokenizerConfig",
    "TrainConfig", "VidtokConfig",
    "VidtokTrainConfig", "VocabConfig",
]
