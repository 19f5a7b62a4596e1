"""Distillation of verified trajectories into LoRA adapters, the gate and the registry."""
