"""The torch module and the math it is built from."""

from .config import LossOutput, ModuleConfig
from .poe import product_of_experts
from .refine import Refined, elbo, iwae, kl_to_prior, refine
from .vae import MultiVAE

__all__ = [
    "LossOutput",
    "ModuleConfig",
    "MultiVAE",
    "Refined",
    "elbo",
    "iwae",
    "kl_to_prior",
    "product_of_experts",
    "refine",
]
