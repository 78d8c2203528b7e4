"""Stage-1 autoencoders: one interface (:class:`Autoencoder`), several latent regularisers."""

from tinyldm.autoencoders.ae import ConvAutoencoder
from tinyldm.autoencoders.base import Autoencoder, AutoencoderOutput
from tinyldm.autoencoders.identity import IdentityAutoencoder
from tinyldm.autoencoders.quantizer import VectorQuantizer
from tinyldm.autoencoders.vae import VariationalAutoencoder, gaussian_kl
from tinyldm.autoencoders.vqvae import VQVAE

__all__ = [
    "Autoencoder",
    "AutoencoderOutput",
    "ConvAutoencoder",
    "IdentityAutoencoder",
    "VQVAE",
    "VariationalAutoencoder",
    "VectorQuantizer",
    "gaussian_kl",
]
