"""Where ``scamort fit`` writes, checked before anything is trained: a wrong path must
not cost a training run, and nothing of the user's is replaced unasked."""

from __future__ import annotations

import os
from pathlib import Path

from ._cli_args import UsageError

# the files of a saved model (SCAMORT.save)
MODEL_FILES = {"model.pt", "config.json", "history.csv"}


def check_outputs(args, inputs: list[Path]) -> None:
    """``--out`` can be written and is not an input (unless ``--overwrite``);
    ``--save-model`` is absent, empty, or a saved model replaced only with
    ``--overwrite``; ``--checkpoint-dir`` can be created. ``inputs``: the input files."""
    if args.out is not None:
        _check_out(Path(args.out), inputs, args.overwrite)
    if args.save_model is not None:
        _check_model_dir(Path(args.save_model), args.overwrite)
    if args.checkpoint_dir is not None:
        _check_folder(Path(args.checkpoint_dir), "--checkpoint-dir")


def _check_out(out: Path, inputs: list[Path], overwrite: bool) -> None:
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; name a file in it, e.g. {out / 'fitted.h5mu'}.")
    if any(out.resolve() == p.resolve() for p in inputs if p.exists()) and not overwrite:
        raise UsageError(
            f"--out {out} is an input: writing it would replace your data. Write to another "
            "file, or pass --overwrite to replace the input with the input plus the embedding."
        )
    _check_folder(out.parent, f"--out's folder {out.parent}")


def _check_folder(folder: Path, what: str) -> None:
    """``folder`` exists (or can be made) as a writable folder."""
    existing = folder if folder != Path("") else Path(".")
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{what}: {existing} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what}: {existing} is not writable; choose a folder you can write to.")


def _check_model_dir(folder: Path, overwrite: bool) -> None:
    _check_folder(folder, f"--save-model {folder}")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UsageError(f"--save-model {folder} is a file; name a folder.")
    held = {p.name for p in folder.iterdir()}
    other = sorted(held - MODEL_FILES)
    if other:
        raise UsageError(
            f"--save-model {folder} holds other files ({other[:3]}); name a new or empty "
            "folder (a saved model is three files: model.pt, config.json, history.csv)."
        )
    if held and not overwrite:
        raise UsageError(
            f"--save-model {folder} holds a saved model; pass --overwrite to replace it, or "
            "name a new folder."
        )
