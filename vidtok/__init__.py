"""Pixels and waveforms <-> discrete tokens.

  model.py, layers.py, lfq.py   the causal video tokenizer (MAGVIT-v2 style, lookup-free
                                quantization), chunked encode/decode of long videos
  discriminator.py, losses.py   its GAN training pieces; metrics.py: PSNR / SSIM / LPIPS
  audio/                        the causal SoundStream-style audio codec (RVQ)

Nothing here may import `lm` or `train`; the trainers live in `train/`.
"""
