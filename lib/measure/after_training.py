"""What is measured on the final model once training has ended: latency and downstream scores.

Each part runs only when its Kconfig option is on (GPT2_LATENCY, GPT2_LM_EVAL) and
returns a summary.json entry. A failing downstream evaluation is logged and
recorded; the training results stand either way.
"""

import logging

import torch

from lib.measure.downstream import run_lm_eval
from lib.measure.inference import latency_table, measure_latency

log = logging.getLogger("train")


def after_training(model: torch.nn.Module, device: torch.device, amp, s) -> dict:
    """{"inference": latency records or None, "lm_eval": scores, an error, or None}."""
    latency = None
    if s.inference.enabled:
        shapes = s.inference.shapes(s.model.block_size)
        latency = measure_latency(model, device, amp, shapes, s.inference.repeats)
        log.info("inference latency (eager, %s):\n%s", device, latency_table(latency))
    downstream = None
    if s.downstream.enabled:
        try:
            downstream = run_lm_eval(model, device, amp, s.downstream)
            log.info("lm-eval: %s", downstream)
        except Exception as e:  # the training result stands; say why the evaluation did not
            log.error(
                "error: lm-evaluation-harness failed (%s: %s); training results are kept", type(e).__name__, e
            )
            downstream = {"error": f"{type(e).__name__}: {e}"}
    return {"inference": latency, "lm_eval": downstream}
