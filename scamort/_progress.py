"""Progress bars of the long steps, in the style of training's (Lightning's tqdm bar)."""

from __future__ import annotations

import importlib.util


def bar(**kwargs):
    """A tqdm bar: the notebook widget where ipywidgets is installed (as Lightning's
    training bar), the text bar otherwise (no widget warning in a notebook)."""
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(**kwargs)
