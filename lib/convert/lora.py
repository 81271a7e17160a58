"""LoRA fine-tuning (Hu et al., 2021) through Hugging Face's peft (GPT2_LORA).

peft wraps each targeted nn.Linear in a LoRA layer: the frozen base weight W plus
a trainable low-rank update (alpha / rank) * B @ A, with B starting at zero so
the model starts as exactly the pretrained one. Everything else is frozen. With
magnitude pruning the frozen base weights are pruned; the adapters' update stays
dense, so a merged model (merge_lora_state) is sparse only where B @ A is zero.
Install with `pip install -e ".[lora]"`.
"""

import logging

import torch

from lib.convert.settings import LoraSettings
from lib.errors import Refusal

log = logging.getLogger(__name__)


def apply_lora(model: torch.nn.Module, s: LoraSettings) -> dict:
    """Add adapters in place and freeze everything but them; the parameter counts."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise Refusal(
            'GPT2_LORA=y (--lora) needs peft: pip install -e ".[lora]" (or make EXTRAS=dev,lora)'
        ) from None
    config = LoraConfig(
        r=s.rank, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=s.target_names, bias="none"
    )
    inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    record = {"trainable_params": trainable, "total_params": total, "trainable_fraction": trainable / total}
    log.info(
        "LoRA rank %d, alpha %d on %s: %s trainable of %s parameters (%.2f%%)",
        s.rank,
        s.alpha,
        ", ".join(s.target_names),
        f"{trainable:,}",
        f"{total:,}",
        100 * record["trainable_fraction"],
    )
    return record


@torch.no_grad()
def merge_lora_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The plain model's state dict with each adapter's update folded into its base weight.

    Merges in place (peft's LoraLayer.merge), then maps "x.base_layer.weight" to "x.weight"
    and drops the adapters' own tensors, so gpt2.model.GPT loads the result as it is.
    """
    for module in model.modules():
        if (
            hasattr(module, "base_layer")
            and hasattr(module, "merge")
            and not getattr(module, "merged", False)
        ):
            module.merge()
    return {
        name.replace(".base_layer", ""): t for name, t in model.state_dict().items() if "lora_" not in name
    }
