"""Training: the Lightning plan, the KL warm-up and atomic checkpoints."""

from .plan import AtomicCheckpointIO, EarlyStopping, History, TrainingPlan, kl_weight

__all__ = ["AtomicCheckpointIO", "EarlyStopping", "History", "TrainingPlan", "kl_weight"]
