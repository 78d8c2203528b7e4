"""tinyldm: latent diffusion ("Stable Diffusion" in miniature) on MNIST-sized images.

Stage 1 (``tinyldm.autoencoders``) compresses images to a small latent grid; stage 2
(``tinyldm.unet``, ``tinyldm.conditioners``, ``tinyldm.diffusion``) learns a class-conditional
DDPM on those latents. ``tinyldm.tasks`` holds the Hydra-driven entry points.
"""

__version__ = "0.1.0"

from tinyldm.utils.resolvers import register_resolvers

register_resolvers()
