"""tinyldm: latent diffusion ("Stable Diffusion" in miniature) on MNIST-sized images.

Stage 1 (``tinyldm.autoencoders``) compresses images to a small latent grid; stage 2
(``tinyldm.unet``, ``tinyldm.conditioners``, ``tinyldm.diffusion``) learns a class-conditional
DDPM on those latents. ``tinyldm.training`` fits the two stages, ``tinyldm.pipeline`` turns a
trained model into images, and ``tinyldm.tasks`` holds the thin Hydra-driven entry points
(docs/design.md: code map).
"""

from importlib.metadata import version

__version__ = version("tinyldm")  # one source: pyproject.toml

from tinyldm.utils.resolvers import register_resolvers

register_resolvers()
