"""The audio codec (DESIGN.md 4.2): SoundStream-style causal 1-D convolutions with residual
vector quantization. Mono waveforms [B, S] at 16 kHz <-> int32 codes [B, levels, frames]
(50 frames per second with strides 2, 4, 5, 8).

    cfg = presets.demo()
    codec = AudioCodec(cfg, rngs=nnx.Rngs(0))
    codes = codec.encode(prepare(wave, 48_000, cfg.sample_rate, resample=True)[None])
    wave = codec.decode(codes[:, :2])          # fewer levels: coarser audio

Training: `fit(cfg, waves, steps)` or `init_state` + `make_train_step` (functional).
"""
from vidtok.audio import presets
from vidtok.audio.codec import AudioCodec, check_waveform
from vidtok.audio.data import (espeak_speech, load_audio, load_bigbuckbunny, peak_normalize, prepare,
                               resample_poly, sonic_pi_samples, write_wav)
from vidtok.audio.losses import snr_db, spectral_distance_db
from vidtok.audio.rvq import ResidualVQ
from vidtok.audio.train_step import (AudioTrainState, FitResult, default_train_config, evaluate, fit,
                                     init_state, make_train_step, reconstruct)

__all__ = ["AudioCodec", "AudioTrainState", "FitResult", "ResidualVQ", "check_waveform",
           "default_train_config", "espeak_speech", "evaluate", "fit", "init_state", "load_audio",
           "load_bigbuckbunny", "make_train_step", "peak_normalize", "prepare", "presets",
           "reconstruct", "resample_poly", "snr_db", "sonic_pi_samples", "spectral_distance_db",
           "write_wav"]
