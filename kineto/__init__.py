"""What a user runs: the `kineto` command line (cli.py), generation from a trained LM
(generate.py), the media file edge (media.py: MP4/GIF/WAV out, image/video/audio prompts in)
and the end-to-end demo (demo/). Imports everything below it; nothing imports it."""
