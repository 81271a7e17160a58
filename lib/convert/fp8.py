"""FP8 matrix multiplies for training (GPT2_FP8), through torchao's float8 training.

torchao swaps each nn.Linear for a Float8Linear that casts its input, weight and
output gradient to float8 with dynamic scales before each matrix multiply, in
forward and backward; the parameters, gradients, optimizer states and pruning
see the same fp32 weights as before (a pruned zero casts to an exact zero).
Hopper's FP8 tensor cores run those multiplies at twice the bf16 rate; the casts
are only cheap under torch.compile, which fuses them into neighbouring kernels.
"""

import logging

import torch
import torch.nn as nn

from lib.errors import Refusal
from lib.runtime.options import FP8_LAYERS

log = logging.getLogger(__name__)

# FP8 tensor cores: Ada (8.9) and Hopper (9.0) and newer.
MIN_CAPABILITY = (8, 9)


def fp8_unavailable(device: torch.device) -> str | None:
    """Why FP8 training cannot run on `device`, or None when it can."""
    if device.type != "cuda":
        return f"FP8 matrix multiplies need an NVIDIA GPU; this run is on {device.type}"
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        return f"{name} has compute capability {capability[0]}.{capability[1]}; FP8 needs 8.9 or more"
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return "torchao is not installed (pip install torchao, or make EXTRAS=dev,fp8)"
    return None


def fp8_filter(layers: str):
    """The module filter of GPT2_FP8_LAYERS (a key of FP8_LAYERS): the chosen Linear layers
    whose two dimensions are multiples of 16 (FP8 GEMMs need that)."""
    picks = FP8_LAYERS[layers]

    def wanted(module: nn.Module, name: str) -> bool:
        return (
            isinstance(module, nn.Linear)
            and module.in_features % 16 == 0
            and module.out_features % 16 == 0
            and picks(name)
        )

    return wanted


def convert_to_fp8(model: nn.Module, recipe: str, device: torch.device, layers: str = "all") -> int:
    """Swap the model's Linear layers (those `layers` names) for torchao Float8Linear; returns how many.

    Raises RuntimeError, saying why and what to do, where FP8 cannot run. The tied
    output head stays one Parameter with the token embedding (torchao keeps the
    module's weight object).
    """
    why = fp8_unavailable(device)
    if why is not None:
        raise Refusal(f"GPT2_FP8=y (--fp8): {why}. Say N to GPT2_FP8 (--no-fp8) to train in bf16.")
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    before = sum(isinstance(m, nn.Linear) for m in model.modules())
    convert_to_float8_training(
        model, config=Float8LinearConfig.from_recipe_name(recipe), module_filter_fn=fp8_filter(layers)
    )
    converted = sum(type(m).__name__ == "Float8Linear" for m in model.modules())
    log.info("FP8 (%s scaling, %s): %d of %d Linear layers converted", recipe, layers, converted, before)
    return converted
