"""Training: the Lightning plan and the KL warm-up."""

from .plan import History, TrainingPlan, kl_weight

__all__ = ["History", "TrainingPlan", "kl_weight"]
