"""itk_rl: agentic interleaved text-image generation, trained with distributed RL on Ray."""

from itk_rl.compat import torchvision_cpu

# First thing on every import of itk_rl (Ray actors that unpickle our classes included): on a
# CPU-only host with the CUDA torchvision wheel, transformers and diffusers imports need this.
# It waits for torchvision's first lookup, so a light import (itk_rl.formats) stays light.
torchvision_cpu.apply_before_torchvision()
