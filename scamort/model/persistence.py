"""Saving and loading a model (weights, configuration, history).

Models saved by scamort 0.1.0 (likelihoods and the kinds' options at the top of the
configuration, no modality declarations) load: their configuration and weights are read
into today's form (``ModuleConfig.from_dict``, ``DataSpec.from_dict``,
:func:`_upgrade_state`)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from .. import __version__
from .._io import atomic_write
from ..data import (
    DataError,
    DataSpec,
    to_cell_data,
)
from ..data.setup import Data
from ..module import ModuleConfig
from ..readers import ReadError
from .history import TrainingHistory
from .novelty import novelty_calibration

if TYPE_CHECKING:
    from ._model import SCAMORT


def save(self, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``model.pt`` (weights only), ``config.json`` and ``history.csv`` to ``path``.

    Each file is written to a temporary name and renamed, so a crash never leaves
    a half-written model.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} is not empty; pass overwrite=True to replace it.")
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "scamort_version": __version__,
        "module": self.config.to_dict(),
        "spec": self.spec.to_dict(),
        "is_trained": self.is_trained,
        # a query model's calibration needs its reference's cells, which are not saved
        "novelty_calibration": (
            novelty_calibration(self) if self._calibration_cells is not None else self._calibration
        ),
    }
    state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
    atomic_write(path / "model.pt", lambda f: torch.save(state, f))
    atomic_write(path / "config.json", lambda f: f.write(json.dumps(config, indent=1).encode()))
    history = self.history.table.to_csv(index=False).encode()
    atomic_write(path / "history.csv", lambda f: f.write(history))


def load(cls, path: str | os.PathLike, data: Data | None = None, chunk_size: int = 4096) -> SCAMORT:
    """Load a saved model for ``data``, whose features must match the model's exactly.

    ``data`` is checked against the model's registration (modalities, layers, batch and
    covariate keys); any ``setup_*`` registration of ``data`` is left as it is. Backed
    data are read in chunks of ``chunk_size`` cells. A saved model holds no counts, so
    ``data`` is needed: without it the error says what the model was set up on.
    """
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} holds no saved scamort model (no config.json).")
    config, module_config, spec = _read_config(path / "config.json")
    if data is None:
        kind = "MuData" if spec.is_mudata else "AnnData"
        mods = ", ".join(
            f"{m!r} ({len(f)} features)" for m, f in zip(spec.modalities, spec.features)
        )
        raise DataError(
            f"{path} holds the weights, not the counts: pass the {kind} it is loaded onto, "
            f"SCAMORT.load({str(path)!r}, data), with modalities {mods}"
            + (f" and obs[{spec.batch_key!r}]" if spec.batch_key else "")
            + " (the data it was trained on, or new data with the same features)."
        )
    cells = to_cell_data(data, spec, chunk_size)
    model = cls._build(data, spec, cells, module_config, seed=0)
    _load_weights(model.module, path / "model.pt")
    model.is_trained = config["is_trained"]
    model._calibration = config.get("novelty_calibration")
    hist = path / "history.csv"
    model.history = TrainingHistory(pd.read_csv(hist) if hist.stat().st_size > 1 else None)
    return model


def _read_config(file: Path) -> tuple[dict, ModuleConfig, DataSpec]:
    """The saved configuration; a ReadError naming the file and the field for one that is
    damaged, edited by hand, or written by a newer scamort."""
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise ReadError(file, f"it is not the JSON a saved model holds ({err}).") from err
    if not isinstance(config, dict):
        raise ReadError(file, "it is not the JSON a saved model holds (not an object).")
    saved = str(config.get("scamort_version", "0.1.0"))
    if _version(saved) > _version(__version__):
        raise ReadError(
            file, f"the model was saved by scamort {saved}, newer than this {__version__}; "
            "upgrade scamort to load it.",
        )  # fmt: skip
    for field in ("module", "spec", "is_trained"):
        if field not in config:
            raise ReadError(file, f"field {field!r} is missing; save the model again.")
    with _field(file, "module"):
        module_config = ModuleConfig.from_dict(config["module"])
    with _field(file, "spec"):
        spec = DataSpec.from_dict(config["spec"], module_config.modalities)
    return config, module_config, spec


@contextlib.contextmanager
def _field(file: Path, field: str):
    """Reading ``field`` of ``file``: what its content raises becomes a ReadError naming
    both."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        message = f"field {field!r} is not valid ({type(err).__name__}: {err})."
        raise ReadError(file, message) from err


def _version(text: str) -> tuple[int, ...]:
    """A release number as a tuple (0.2.0 -> (0, 2, 0)); unreadable parts count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("+")[0].split("."))


def _load_weights(module, file: Path) -> None:
    """The saved weights into ``module``; a ReadError naming the file where they cannot be
    read or do not fit the configuration."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        raise ReadError(file, f"the weights cannot be read ({type(err).__name__}).") from err
    try:
        module.load_state_dict(_upgrade_state(state, module))
    except (RuntimeError, AttributeError, TypeError) as err:
        first = str(err).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else "")
        raise ReadError(
            file, f"the weights do not fit config.json ({detail[:200]}); save the model again."
        ) from err


def _upgrade_state(state: dict, module) -> dict:
    """Weights saved by scamort 0.1.0 under today's names: the TF-IDF statistics were a
    buffer ``idf_<modality>`` of the module, now ``inputs.<modality>.idf``."""
    out = {}
    for key, value in state.items():
        m = key[len("idf_") :] if key.startswith("idf_") else None
        out[f"inputs.{m}.idf" if m in module.inputs else key] = value
    return out
