"""The runtime's choices, as plain data (no torch), so the settings can check them."""

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune")
# GPT2_ATTENTION_BACKEND -> the scaled_dot_product_attention kernels left enabled (None: PyTorch's choice).
ATTENTION_BACKENDS = {
    "auto": None,
    "flash": "flash",
    "cudnn": "cudnn",
    "efficient": "mem_efficient",
    "math": "math",
}
SDPA_KERNELS = ("flash", "cudnn", "mem_efficient", "math")
FP8_RECIPES = ("tensorwise", "rowwise", "rowwise_with_gw_hp")
# GPT2_FP8_LAYERS -> which Linear layers, by their name in the model, run in FP8 (lib/convert/fp8.py).
FP8_LAYERS = {
    "all": lambda name: True,
    "blocks": lambda name: name != "lm_head",  # its output gradient, tokens x vocab, is the largest cast
    "mlp": lambda name: ".mlp." in f".{name}",  # the feed-forward layers, the widest of the blocks
    "head": lambda name: name == "lm_head",  # the largest matmul of all: width x vocabulary
}
