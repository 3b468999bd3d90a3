"""itk_rl: agentic interleaved text-image generation, trained with distributed RL on Ray."""
