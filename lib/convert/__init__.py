"""Model conversions: FP8 layers, LoRA adapters, the fused loss."""
