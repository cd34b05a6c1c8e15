"""The audio codec (docs/design.md, Tokens): SoundStream-style causal 1-D convolutions with
residual vector quantization. Mono waveforms [B, S] at 16 kHz <-> int32 codes
[B, levels, frames] (50 frames per second with strides 2, 4, 5, 8).

    codec = AudioCodec(configs.load("audio_demo").codec, rngs=nnx.Rngs(0))
    codes = codec.encode(prepare(wave, 48_000, 16_000, resample=True)[None])
    wave = codec.decode(codes[:, :2])          # fewer levels: coarser audio

Models, quantizer, losses and metrics only; training is `train/audio_step.py` and
`train/audio_trainer.py`, audio files are `train/data/audio.py`.
"""
from vidtok.audio.codec import AudioCodec, check_waveform
from vidtok.audio.losses import snr_db, spectral_distance_db
from vidtok.audio.metrics import evaluate, reconstruct
from vidtok.audio.rvq import ResidualVQ
from vidtok.audio.signal import peak_normalize, prepare, resample_poly

__all__ = ["AudioCodec", "ResidualVQ", "check_waveform", "evaluate", "peak_normalize", "prepare",
           "reconstruct", "resample_poly", "snr_db", "spectral_distance_db"]
