"""Export a run's model in the Hugging Face GPT-2 format, for transformers.GPT2LMHeadModel.from_pretrained.

    python -m scripts.export_hf runs/gpt2_adamw_magnitude-20261124-101500            # best.pt, else ckpt.pt
    python -m scripts.export_hf RUN_DIR --checkpoint last --out exported/my-model

Reads the run's checkpoint and the settings in it (torch.load with
weights_only=True: tensors and plain data only) and writes config.json and model.safetensors (gpt2/hf.py). A pruned
model keeps its zeros; their share is printed.
"""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from gpt2.hf import export_hf, linear_sparsity
from gpt2.model import GPT, GPTConfig
from lib.config.settings import Settings, SettingsError
from lib.convert.lora import apply_lora, merge_lora_state
from lib.train.checkpoint import BEST_FILE, CHECKPOINT_FILE, CheckpointError, load_checkpoint


def model_from_run(run_dir: Path, which: str) -> GPT:
    """The run's model with the weights of best.pt or ckpt.pt ('best' falls back to the latest)."""
    names = [BEST_FILE, CHECKPOINT_FILE] if which == "best" else [CHECKPOINT_FILE]
    path = next((run_dir / n for n in names if (run_dir / n).is_file()), None)
    if path is None:
        raise CheckpointError(
            f"{run_dir} has no {' or '.join(names)} (a run folder with GPT2_SAVE_CHECKPOINT=y?)"
        )
    checkpoint = load_checkpoint(path, required=("model", "settings"))
    saved = checkpoint["settings"]["model"]
    lora = checkpoint["settings"].get("lora", {})
    s = Settings().replace(
        {**{f"model.{k}": v for k, v in saved.items()}, **{f"lora.{k}": v for k, v in lora.items()}}
    )
    state = checkpoint["model"]
    vocab = state["transformer.wte.weight"].shape[0]  # unpadded when the run started from HF weights
    model = GPT(replace(GPTConfig.from_settings(s.model), vocab_size=vocab))
    if s.lora.enabled:  # fold the adapters into the weights: the export is a plain GPT-2
        adapted = GPT(replace(GPTConfig.from_settings(s.model), vocab_size=vocab))
        apply_lora(adapted, s.lora)
        adapted.load_state_dict(state)
        state = merge_lora_state(adapted)
    model.load_state_dict(state)
    print(f"{path}: {s.model.name}, {model.num_params() / 1e6:.2f}M parameters")
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/hf)")
    args = p.parse_args(argv)
    try:
        model = model_from_run(args.run_dir, args.checkpoint)
        out = export_hf(model, args.out or args.run_dir / "hf")
    except (CheckpointError, SettingsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (zeros in the prunable Linear weights: {100 * linear_sparsity(model):.2f}%)")
    print(f"load with: transformers.GPT2LMHeadModel.from_pretrained({str(out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
