"""The harness every benchmark shares: a fit's process, results as JSON lines, the
markers of the docs' generated tables, and where results and caches go."""

from __future__ import annotations

import json
import os
import platform
import resource
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DOCS = BENCH.parent / "docs"  # results (JSON lines) and the pages they feed
CACHE = BENCH / ".cache"  # data files and embeddings kept between runs (git-ignored)
MARK = "<!-- {}:{} -->"  # name, start / end of a generated block in a docs page


def peak_rss_gb() -> float:
    """The process's peak resident memory (high-water mark) in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a newly spawned process, so that its time and peak memory are its
    own (a forked child would inherit the parent's high-water mark)."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def read_rows(path: Path) -> list[dict]:
    """The JSON-lines results in ``path`` (none when it does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def append_row(path: Path, row: dict) -> None:
    """Print a result and append it to the JSON-lines file ``path``."""
    print(json.dumps(row), flush=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores"


def bench_process() -> None:
    """A benchmark fit's process set-up: torch on ``SCAMORT_BENCH_THREADS`` threads (all
    cores when unset) and warnings silenced."""
    import torch

    torch.set_num_threads(int(os.environ.get("SCAMORT_BENCH_THREADS", os.cpu_count() or 1)))
    warnings.filterwarnings("ignore")


def replace_block(doc: Path, name: str, body: str) -> None:
    """Replace the block between the ``<!-- name:start/end -->`` markers of ``doc`` with
    ``body`` (appended with its markers when they are missing)."""
    text = doc.read_text() if doc.exists() else ""
    start, end = MARK.format(name, "start"), MARK.format(name, "end")
    block = f"{start}\n\n{body}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def latent_path(folder: Path, dataset: str, method: str, seed: int, epochs: int, tag: str) -> Path:
    """Where a fit's embeddings are saved: one .npz per design, method, tag, epochs, seed."""
    slug = "".join(c if c.isalnum() else "_" for c in tag)
    return folder / f"{dataset}_{method}_{slug}_{epochs}_seed{seed}.npz"
