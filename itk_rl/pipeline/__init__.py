"""Interleaved generation: the inference loop, the run folder it writes, and `itk generate`.

    loop.py         plan, then per step render → critic → re-render (`InterleavePipeline`)
    run_folder.py   a run written as it goes: page, trajectory, status, images
    page.py         the interleaved result as one static HTML page
    generate.py     `itk generate`: recipe → pipeline → run folders, batch mode

Recipes name the loop's parts by their short paths (`itk_rl.pipeline.Agent`,
`itk_rl.pipeline.InterleavePipeline`).
"""

from itk_rl.pipeline.loop import Agent, InterleavePipeline

__all__ = ["Agent", "InterleavePipeline"]
