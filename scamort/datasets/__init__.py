"""Simulated and bundled real data sets."""

from ._real import snareseq_mouse_cortex
from ._simulate import simulate_multiome, write_simulated_multiome
from ._split import unpair

__all__ = ["simulate_multiome", "snareseq_mouse_cortex", "unpair", "write_simulated_multiome"]
