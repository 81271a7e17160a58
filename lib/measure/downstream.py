"""Downstream evaluation through EleutherAI's lm-evaluation-harness (GPT2_LM_EVAL).

`GPTHarnessModel` is the small adapter the harness needs: it scores
(context, continuation) pairs with this project's GPT-2 and the GPT-2 BPE
(tiktoken), and generates greedily for generation tasks. Tasks are the
harness's own (hellaswag, lambada_openai, ... which download their data through
`datasets`) or YAML files in GPT2_LM_EVAL_INCLUDE_PATH (local data, offline).
Install with `pip install -e ".[eval]"` (or make EXTRAS=dev,eval).
"""

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from lib.errors import Refusal
from lib.measure.settings import DownstreamSettings
from lib.runtime.device import autocast

log = logging.getLogger(__name__)


def _harness_lm():
    try:
        from lm_eval.api.model import LM
    except ImportError:
        raise Refusal(
            'GPT2_LM_EVAL=y (--lm-eval) needs lm-evaluation-harness: pip install -e ".[eval]" '
            "(or make EXTRAS=dev,eval), or say N to GPT2_LM_EVAL"
        ) from None
    return LM


def make_adapter(model: torch.nn.Module, device: torch.device, amp, batch_size: int):
    """An lm_eval LM scoring with `model` (eval mode, the run's autocast) and tiktoken's GPT-2 BPE."""
    import tiktoken

    LM = _harness_lm()
    enc = tiktoken.get_encoding("gpt2")
    eot = enc.eot_token
    block = model.config.block_size

    class GPTHarnessModel(LM):
        def __init__(self):
            super().__init__()
            self.model = model

        @torch.no_grad()
        def _logprobs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
            """Sum of log p(continuation | context) and whether it is the greedy continuation."""
            out = []
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                # The last block_size + 1 tokens of context + continuation (left-truncated).
                seqs = [(ctx + cont)[-(block + 1) :] for ctx, cont in chunk]
                width = max(len(s) - 1 for s in seqs)
                x = torch.full((len(seqs), width), eot, dtype=torch.long)
                for i, s in enumerate(seqs):
                    x[i, : len(s) - 1] = torch.tensor(s[:-1])
                with autocast(device, amp):
                    logits, _ = self.model(x.to(device), all_positions=True)
                logp = F.log_softmax(logits.float(), dim=-1).cpu()
                for i, ((_, cont), s) in enumerate(zip(chunk, seqs, strict=True)):
                    n = len(cont)
                    rows = logp[i, len(s) - 1 - n : len(s) - 1]
                    target = torch.tensor(cont)
                    total = rows.gather(1, target[:, None]).sum().item()
                    greedy = bool((rows.argmax(-1) == target).all())
                    out.append((total, greedy))
            return out

        def loglikelihood(self, requests):
            pairs = []
            for req in requests:
                context, continuation = req.args
                ctx = enc.encode(context, allowed_special="all") or [eot]
                pairs.append((ctx, enc.encode(continuation, allowed_special="all")))
            return self._logprobs(pairs)

        def loglikelihood_rolling(self, requests):
            scores = []
            for req in requests:
                tokens = enc.encode(req.args[0], allowed_special="all")
                total = 0.0
                # Windows of block_size predicted tokens, each with the tokens before it as context.
                for start in range(0, len(tokens), block):
                    ctx = tokens[max(0, start - block) : start] or [eot]
                    total += self._logprobs([(ctx, tokens[start : start + block])])[0][0]
                scores.append(total)
            return scores

        @torch.no_grad()
        def generate_until(self, requests):
            outputs = []
            for req in requests:
                context, kwargs = req.args
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else until
                idx = torch.tensor(
                    [enc.encode(context, allowed_special="all")[-block:] or [eot]], device=device
                )
                new: list[int] = []
                for _ in range(int(kwargs.get("max_gen_toks", 64))):
                    with autocast(device, amp):
                        logits, _ = self.model(idx[:, -block:])
                    token = int(logits[0, -1, : enc.n_vocab].argmax())
                    if token == eot:
                        break
                    new.append(token)
                    idx = torch.cat([idx, torch.tensor([[token]], device=device)], dim=1)
                    text = enc.decode(new)
                    if any(u in text for u in until):
                        break
                text = enc.decode(new)
                for u in until:
                    text = text.split(u)[0]
                outputs.append(text)
            return outputs

    return GPTHarnessModel()


def run_lm_eval(model: torch.nn.Module, device: torch.device, amp, s: DownstreamSettings) -> dict:
    """{task: {metric: value}} of the harness's tasks on `model` (restored to its mode afterwards)."""
    adapter = make_adapter(model, device, amp, s.batch_size)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    include = None
    if s.include_path:
        include = Path(s.include_path)
        if not include.is_dir():
            raise Refusal(f"GPT2_LM_EVAL_INCLUDE_PATH={s.include_path!r} is not a folder of task YAML files")
    was_training = model.training
    model.eval()
    try:
        results = simple_evaluate(
            model=adapter,
            tasks=s.task_names,
            limit=s.limit or None,
            task_manager=TaskManager(include_path=str(include) if include else None),
            log_samples=False,
            bootstrap_iters=0,
        )
    finally:
        model.train(was_training)
    out = {}
    for task, metrics in (results or {}).get("results", {}).items():
        out[task] = {
            k.split(",")[0]: v
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not k.startswith(("alias", "sample")) and "stderr" not in k
        }
    return out
