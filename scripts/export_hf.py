"""Export a run's model in the Hugging Face GPT-2 format, for transformers.GPT2LMHeadModel.from_pretrained.

    python -m scripts.export_hf runs/gpt2_adamw_magnitude-20261124-101500            # best.pt, else ckpt.pt
    python -m scripts.export_hf RUN_DIR --checkpoint last --out exported/my-model

Reads the run's checkpoint and the settings in it (torch.load with
weights_only=True: tensors and plain data only) and writes config.json and model.safetensors (gpt2/hf.py). A pruned
model keeps its zeros; their share is printed.
"""

import argparse
import sys
from pathlib import Path

from gpt2.hf import export_hf, linear_sparsity, model_from_run
from lib.train.checkpoint import CheckpointError
from lib.train.settings import SettingsError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/hf)")
    args = p.parse_args(argv)
    try:
        model = model_from_run(args.run_dir, args.checkpoint)
        print(f"{args.run_dir}: {model.num_params() / 1e6:.2f}M parameters")
        out = export_hf(model, args.out or args.run_dir / "hf")
    except (CheckpointError, SettingsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} (zeros in the prunable Linear weights: {100 * linear_sparsity(model):.2f}%)")
    print(f"load with: transformers.GPT2LMHeadModel.from_pretrained({str(out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
