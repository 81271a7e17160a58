"""LoRA fine-tuning (Hu et al., 2021) through Hugging Face's peft (GPT2_LORA).

peft wraps each targeted nn.Linear in a LoRA layer: the frozen base weight W plus
a trainable low-rank update (alpha / rank) * B @ A, with B starting at zero so
the model starts as exactly the pretrained one. Everything else is frozen. With
magnitude pruning the frozen base weights are pruned; the adapters' update stays
dense, so a merged model (merge_lora_state) is sparse only where B @ A is zero.
Install with `pip install -e ".[lora]"`.
"""

import logging
from dataclasses import dataclass, field

import torch

from lib.errors import Refusal
from lib.validate import check, kc

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class LoraSettings:
    """Low-rank adapters on the chosen Linear layers; the rest of the model frozen."""

    enabled: bool = field(default=False, metadata=kc("GPT2_LORA", "--lora"))
    rank: int = field(default=8, metadata=kc("GPT2_LORA_RANK", "--lora-rank"))
    alpha: int = field(default=16, metadata=kc("GPT2_LORA_ALPHA"))
    dropout: float = field(default=0.05, metadata=kc("GPT2_LORA_DROPOUT"))
    targets: str = field(default="c_attn,c_proj,c_fc", metadata=kc("GPT2_LORA_TARGETS"))
    """Comma-separated Linear names (c_proj matches both attention's and the MLP's)."""

    def __post_init__(self) -> None:
        check(self, "rank", 1 <= self.rank <= 4096, "1..4096")
        check(self, "alpha", 1 <= self.alpha <= 65536, "1..65536")
        check(self, "dropout", 0.0 <= self.dropout < 1.0, "a number in [0, 1)")
        known = {"c_attn", "c_proj", "c_fc"}
        names = self.target_names
        check(
            self,
            "targets",
            bool(names) and set(names) <= known,
            f"a comma-separated subset of {sorted(known)}",
        )

    @property
    def target_names(self) -> list[str]:
        return [t.strip() for t in self.targets.split(",") if t.strip()]


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
