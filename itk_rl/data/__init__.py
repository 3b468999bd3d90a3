"""Training data: the data build and the dataset files the trainers read.

Datasets are Hugging Face `datasets` parquet files with PNG image cells, validated on load
(`critic_records`, `planner_records`). The build (`python -m itk_rl.build_data`) runs in phases,
one module each: `prompts` (banks → requests), `teacher` (trajectories in Ray actors, judged,
resumable), `filters` (the paper's rules on judge scores), `splits` (records, balance, ratio,
truncation pairs), `report`.
"""
