"""The benchmark harness behind `itk eval`: a system under test run on a benchmark, its outputs
written in the benchmark's official layout, judged through our VLM engines and scored with the
official rules of `itk_rl.eval.benchmarks`.

core.py        samples, outputs, judge calls and answers, scores; the adapter protocol
wise.py, rise.py, ueval.py, comm.py
               one adapter per benchmark: data, official layout, judge calls, scoring
generation.py  the system on every sample without an output (resumable)
judging.py     judge calls, concurrent and cached per sample
paid.py        the call count and cost said before any paid call
report.py      results.json / results.md per run, and the comparison of runs
gallery.py     gallery.html: prompt, output, score and judge answers per sample
"""
