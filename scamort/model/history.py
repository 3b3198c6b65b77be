"""The training history in scvi-tools' shape: one DataFrame per metric, indexed by epoch."""

from __future__ import annotations

import pandas as pd


class TrainingHistory(dict):
    """``{metric: DataFrame}`` as scvi-tools' ``model.history``: each DataFrame is indexed
    by ``epoch`` and holds one column named after its metric, so code written for scVI or
    MULTIVI (``model.history["elbo_validation"].plot()``) runs as it is.

    Metrics: ``elbo_train`` and ``elbo_validation`` (the mean ELBO per cell of the
    training and of the held-out cells: **higher is better**, where scvi-tools' columns of
    the same names hold the loss, the negative ELBO), ``train_loss`` and
    ``validation_loss`` (what the optimiser minimises: the negative ELBO with the KL
    warm-up's weight and any extra terms), ``kl_weight`` (the warm-up's mean weight of
    the epoch) and ``all_cells`` (True for the epochs of the final encoder pass, which
    trains on every cell and holds none out).

    :attr:`table` holds every metric in one DataFrame, one row per epoch.
    """

    def __init__(self, table: pd.DataFrame | None = None):
        table = pd.DataFrame() if table is None else table.reset_index(drop=True)
        super().__init__()
        self.table = table
        if "epoch" in table:
            for col in table.columns.drop("epoch"):
                self[col] = table[["epoch", col]].set_index("epoch")

    @property
    def n_epochs(self) -> int:
        """The epochs trained, all calls to ``train`` together."""
        return len(self.table)

    def __repr__(self) -> str:
        if not self:
            return "TrainingHistory(no epochs)"
        return f"TrainingHistory({self.n_epochs} epochs; metrics {list(self)})"
