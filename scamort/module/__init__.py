"""The torch module and the math it is built from."""

from .poe import product_of_experts
from .vae import LossOutput, ModuleConfig, MultiVAE

__all__ = ["LossOutput", "ModuleConfig", "MultiVAE", "product_of_experts"]
