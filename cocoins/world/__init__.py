"""The embedded mini-world: a small world whose people are known exactly, and the models that live in it.

No SDXL weights can be loaded on a laptop, so the default pipeline checks the method on a miniature of the
paper's experiment in which identity is known exactly. Every file here serves that one world:

- `people.py`: who the people are. A person is a fixed set of drawn traits (sex, skin, hair colour and
  style, eye colour, glasses, beard, smile, age, face shape) drawn from (seed, index); an image of them
  varies only the scene and a small pose jitter. The world is written in CelebA's on-disk format with exact
  attributes, identities, subject masks and face counts. Stage `ingest` writes it (data/world); stage
  `prompts` takes the world's scenes in words from it.
- `captions.py`: how the world is put into words: captions that describe a person's traits or name only
  the class, and one-token names of the corpus's named people, in the slot before the noun where Eq. 4
  puts the pseudo-word.
- `mini_sdxl.py`: the mini SDXL, SDXL's classes and wiring at 32 px (with a zero-terminal-SNR schedule).
- `pretrain.py`: its "pretraining" (stage `base`, `models.sdxl: mini`): a corpus of fresh people (a seed
  of their own, not the ingest world's), rendered and captioned with `captions.py`, trains the VAE, then
  the UNet and text encoders.
- `traits.py`: identity read exactly: a trait classifier trained on fresh renders (stage `identity`); its
  embedding is the world's ArcFace for Sim / Div, which stage `evaluate` reads through
  `cocoins/eval/scoring.py` (`identity.backend: traits`).
- `base_check.py`: does the base model follow trait words, and draw a new person per noise for the class
  alone, as SDXL does? Read by the trait classifier (stage `identity`).
- `oracles.py`: how much of a person one token can carry in the base model: plain prompt, describing
  caption, textual inversion and the named people, scored by the trait classifier (stage `diagnose`).

Import the files themselves; this package imports nothing, so reading it costs no torch or diffusers.
"""
