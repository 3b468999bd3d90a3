"""The paper's benchmarks scored as their authors score them: WISE (legacy and verified),
RISEBench, UEval and CoMM tasks 3–4.

Each module holds one benchmark's records and their loader, the official output layout, the
judge-answer parser with the official reading rules, and the official aggregation; facts and
formulas follow the official scripts (docs/benchmarks.md, "Scoring"). Nothing of the
benchmarks' data, prompts or code is in this package: the data are files the user downloads,
the judge prompts are our own templates (`templates/`, loaded by `templates.py`).

common.py     errors naming the file to download, the row and the field; JSON readers
templates.py  the judge prompt templates, replaceable by a path
wise.py       WISE, both protocols (`Protocol.LEGACY`, `Protocol.VERIFIED`)
rise.py       RISEBench
ueval.py      UEval
comm.py       CoMM tasks 3 (continuation) and 4 (from a title)
"""

from itk_rl.eval.benchmarks.common import BenchmarkDataMissing, BenchmarkFormatError

__all__ = ["BenchmarkDataMissing", "BenchmarkFormatError"]
