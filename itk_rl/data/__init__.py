"""Training data on disk: Hugging Face `datasets` (parquet with PNG image cells), validated."""
