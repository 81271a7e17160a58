"""The settings of model conversions, as plain data (no torch)."""

from dataclasses import dataclass, field

from lib.fields import check, kc


@dataclass(frozen=True, kw_only=True, slots=True)
class LoraSettings:
    """Low-rank adapters on the chosen Linear layers; the rest of the model frozen."""

    enabled: bool = field(default=False, metadata=kc("GPT2_LORA", "--lora"))
    """Fine-tune with LoRA adapters (peft): the targeted Linear weights stay frozen."""
    rank: int = field(default=8, metadata=kc("GPT2_LORA_RANK", "--lora-rank"))
    """The inner dimension of each low-rank update."""
    alpha: int = field(default=16, metadata=kc("GPT2_LORA_ALPHA"))
    """The update's scale is alpha / rank."""
    dropout: float = field(default=0.05, metadata=kc("GPT2_LORA_DROPOUT"))
    """Dropout on the adapters' input, in [0, 1)."""
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
