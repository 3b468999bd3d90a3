"""Evaluation: held-out testbed tasks through several systems, their metrics, and the report.

testbed.py    the same held-out tasks through the generator alone and the pipeline with
              each critic; run folders per system
metrics.py    per-attempt / step / task outcomes, metric ratios, bootstrap intervals
report.py     the main job's HTML report with its plots
lockstep.py   one engine shared by a fixed group of threads, answered in rounds (batched
              critic calls, the same batches on every run)
benchmarks/   WISE, RISEBench, UEval, CoMM: loaders, answer parsers, official aggregation
harness/      `itk eval`: the benchmarks run on a system, judged, scored, reported
command.py    the `itk eval` driver
"""
