"""Pixels and waveforms <-> discrete tokens.

  model.py, layers.py          the causal video tokenizer (MAGVIT-v2 style), chunked
                                encode/decode of long videos
  lfq.py, fsq.py                its quantizers: lookup-free (one sign bit per channel) or
                                finite scalar (a few levels per channel)
  discriminator.py, losses.py   its GAN training pieces; metrics.py: PSNR / SSIM / LPIPS
  audio/                        the causal SoundStream-style audio codec (RVQ)

Nothing here may import `lm` or `train`; the trainers live in `train/`.
"""
