"""The project's refusal: input or circumstances a run (or a command) cannot go on with.

Every boundary that refuses something (settings, defconfigs, token files, checkpoints, the
device, the pruning set-up, an out-of-memory) raises a Refusal, or a subclass naming where it
comes from, whose message says what was wrong and what to change. Entry points turn it into
`error: <message>` and exit code 2, without a traceback. Any other exception is a bug and keeps
its traceback. Standard library only: the settings import it without torch.
"""


class Refusal(Exception):
    """Something the run cannot go on with; the message says what was wrong and what to do."""


class OutOfMemory(Refusal, MemoryError):
    """The run does not fit in the device's memory; the message says what would."""


MEMORY_ADVICE = (
    "Lower BATCH_SIZE (--batch-size) and raise GPT2_GRADIENT_ACCUMULATION to keep the tokens per step, "
    "turn on GPT2_ACTIVATION_CHECKPOINTING (--activation-checkpointing), or let GPT2_BATCH_MODE=auto "
    "(--batch-mode auto) find the largest micro-batch that fits; `python -m scripts.bench_memory` "
    "estimates the peak of a configuration"
)


def out_of_memory(where: str, error: BaseException) -> OutOfMemory:
    """The Refusal for torch's out-of-memory error raised `where` (first line of torch's message kept)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return OutOfMemory(f"out of memory {where} ({first[:200]}). {MEMORY_ADVICE}")
