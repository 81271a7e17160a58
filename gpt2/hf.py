"""GPT-2 weights in and out in the Hugging Face format (config.json + model.safetensors).

Import reads a local folder (or, online, a hub name such as "gpt2-medium") with
safetensors, which holds tensors only: nothing from disk executes. Export writes
the same layout, loadable by transformers.GPT2LMHeadModel.from_pretrained. HF's
GPT-2 stores its four projection matrices as Conv1D weights, (in, out): they are
transposed on the way in and out. A pruned model keeps its exact zeros.
"""

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from gpt2.model import GPT, GPT2_VOCAB_SIZE, SIZES, GPTConfig
from lib.convert.lora import apply_lora, merge_lora_state
from lib.errors import Refusal
from lib.train.checkpoint import BEST_FILE, CHECKPOINT_FILE, CheckpointError, load_checkpoint
from lib.train.settings import Settings

log = logging.getLogger(__name__)

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def _safetensors():
    try:
        from safetensors.torch import load_file, save_file
    except ImportError:
        raise Refusal('GPT-2 weights in the HF format need safetensors: pip install -e ".[hf]"') from None
    return load_file, save_file


def resolve_source(source: str) -> Path:
    """A local folder holding config.json and model.safetensors, or a hub name fetched to the cache."""
    path = Path(source)
    if path.is_dir():
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
        if missing:
            raise Refusal(
                f"{path} lacks {', '.join(missing)}: an HF GPT-2 folder has config.json and model.safetensors"
            )
        return path
    if path.exists() or source.startswith((".", "/")):
        raise Refusal(f"GPT2_INIT_FROM={source!r} is not a folder with config.json and model.safetensors")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise Refusal(
            f"{source!r} is no local folder; fetching it from the hub needs huggingface_hub"
        ) from None
    try:
        return Path(snapshot_download(source, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]))
    except Exception as e:
        raise Refusal(
            f"could not fetch {source!r} from the Hugging Face hub ({type(e).__name__}: {e})"
        ) from None


def hf_config(folder: Path) -> GPTConfig:
    """Our GPTConfig for an HF GPT-2 config.json (the vocabulary unpadded, as HF stores it)."""
    c = json.loads((folder / CONFIG_FILE).read_text())
    if c.get("model_type") != "gpt2":
        raise Refusal(f"{folder / CONFIG_FILE} describes a {c.get('model_type')!r} model, not gpt2")
    shape = (c["n_layer"], c["n_head"], c["n_embd"])
    released = next((n for n, s in SIZES.items() if s == shape), None)  # else the default name stays
    return GPTConfig(
        **({"name": released} if released else {}),
        n_layer=c["n_layer"],
        n_head=c["n_head"],
        n_embd=c["n_embd"],
        block_size=c["n_positions"],
        vocab_size=c["vocab_size"],
        bias=True,
        weight_tying=c.get("tie_word_embeddings", True),
    )


def import_hf(source: str, block_size: int | None = None) -> tuple[GPT, dict]:
    """Our GPT with the weights of an HF GPT-2, and a record (source, shape, sparsity on load)."""
    load_file, _ = _safetensors()
    folder = resolve_source(source)
    config = hf_config(folder)
    if block_size is not None:
        if block_size > config.block_size:
            raise Refusal(
                f"GPT2_BLOCK_SIZE={block_size} exceeds the pretrained model's {config.block_size} positions"
            )
        config = replace(config, block_size=block_size)
    model = GPT(config)
    tensors = load_file(str(folder / WEIGHTS_FILE))
    ours = model.state_dict()
    state = {}
    for name, target in ours.items():
        key = name if name in tensors else name.removeprefix("transformer.")
        if name == "lm_head.weight" and config.weight_tying:
            continue  # the same tensor as transformer.wte.weight
        if key not in tensors:
            raise Refusal(f"{folder / WEIGHTS_FILE} has no tensor {name!r}")
        t = tensors[key]
        if name.endswith(CONV1D):
            t = t.t()
        if name == "transformer.wpe.weight":
            t = t[: config.block_size]
        if t.shape != target.shape:
            raise Refusal(f"{name}: shape {tuple(t.shape)} in the file, {tuple(target.shape)} in the model")
        state[name] = t
    model.load_state_dict(state, strict=False)
    record = {"source": str(source), "folder": str(folder), "sparsity": linear_sparsity(model)}
    log.info(
        "initialised from %s (%d layers, %d wide, %.2fM parameters); zeros in Linear weights: %.2f%%",
        source,
        config.n_layer,
        config.n_embd,
        model.num_params() / 1e6,
        100 * record["sparsity"],
    )
    return model, record


def build_model(s: Settings) -> tuple[GPT, dict | None]:
    """The GPT the settings describe: random, or GPT2_INIT_FROM's pretrained weights (same shape), with
    the import's record for summary.json."""
    if not s.model.init_from:
        return GPT(GPTConfig.from_settings(s.model)), None
    model, record = import_hf(s.model.init_from, s.model.block_size)
    want, got = GPTConfig.from_settings(s.model), model.config
    if (want.n_layer, want.n_head, want.n_embd) != (got.n_layer, got.n_head, got.n_embd):
        raise Refusal(
            f"GPT2_INIT_FROM={s.model.init_from!r} holds a {got.n_layer}-layer, {got.n_embd}-wide model with "
            f"{got.n_head} heads, but GPT2_MODEL_NAME is {s.model.name!r}; choose the matching size"
        )
    return model, record


def linear_sparsity(model: torch.nn.Module) -> float:
    """Fraction of exact zeros among the prunable Linear weights (a pruned export keeps them)."""
    from lib.pruning.pruner import prunable_parameters

    weights = [w for _, w in prunable_parameters(model)]
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def export_hf(model: GPT, folder: Path) -> Path:
    """Write `model` as an HF GPT-2 folder (config.json, model.safetensors); padded vocabulary rows dropped."""
    _, save_file = _safetensors()
    c = model.config
    if c.ra_mla:
        raise Refusal("an RA+MLA model (ENABLE_RA_MLA) has no GPT-2 layout in the HF format")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and c.weight_tying:
            continue
        t = t.detach().float().cpu()
        if name.endswith(CONV1D):
            t = t.t()
        if name in ("transformer.wte.weight", "lm_head.weight"):
            t = t[:GPT2_VOCAB_SIZE]
        tensors[name] = t.contiguous()
    if not c.bias:  # HF's GPT-2 always has biases: zeros are the same function
        for name, t in list(tensors.items()):
            if name.endswith(".weight") and ("ln_" in name or name.endswith(CONV1D)):
                width = t.shape[-1] if name.endswith(CONV1D) else t.shape[0]
                tensors[name.removesuffix(".weight") + ".bias"] = torch.zeros(width)
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_embd": c.n_embd,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,
        "vocab_size": GPT2_VOCAB_SIZE,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "bos_token_id": GPT2_VOCAB_SIZE - 1,
        "eos_token_id": GPT2_VOCAB_SIZE - 1,
        "tie_word_embeddings": c.weight_tying,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    return folder


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
    return model
