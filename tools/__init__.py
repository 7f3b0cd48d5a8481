"""Maintainer scripts: training the demo world, its timings and the README's grid. Run from the repository root
(`python -m tools.train_world ...`); not shipped in the wheel (setup.py packages lora_studio only)."""
