"""Puts ``benchmarks/`` on the module path, so that a study imports the shared harness
(``harness``, ``scores``, ``fits``, ``designs``) as the suites do: ``import _path`` first."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
