"""Start gpt2/train.py the way config.py asks: one process, or torchrun over GPT2_NPROC_PER_NODE.

    python -m scripts.launch [train.py flags]      # what `make` runs
    python -m scripts.launch --print [flags]       # show the command only

torchrun (torch.distributed.run) is PyTorch's own launcher: it starts one
process per GPU, gives each RANK/LOCAL_RANK/WORLD_SIZE, and stops them all if
one fails.
"""

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from lib.config.cli import cli_flag
from lib.config.load import load_settings
from lib.train.settings import SettingsError

ROOT = Path(__file__).resolve().parent.parent
TRAIN = "gpt2.train"  # run in place, as a module of the repository (the working directory)


def in_place_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with this repository first on PYTHONPATH, so `-m gpt2.train`
    finds the code in place from any working directory (the results folder's, a test's)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def train_command(nproc: int, args: list[str], python: str = sys.executable) -> list[str]:
    """The command line of one run over `nproc` processes."""
    if nproc > 1:
        torchrun = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        return [*torchrun, "-m", TRAIN, *args]
    return [python, "-m", TRAIN, *args]


def own_nproc(resume: str | None) -> int | None:
    """A run folder being resumed keeps its own process count (its settings.json), or None."""
    if resume in (None, "auto"):
        return None
    try:
        return int(json.loads((Path(resume) / "settings.json").read_text())["runtime"]["nproc_per_node"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # gpt2.train says what is wrong with the folder


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter, add_help=False
    )
    p.add_argument("--print", action="store_true", help="print the command and exit")
    p.add_argument("--config", default="config.py")
    p.add_argument(cli_flag("runtime.nproc_per_node"), dest="nproc", type=int)
    p.add_argument("--resume", nargs="?", const="auto")
    known, _ = p.parse_known_args(argv)
    passed = [a for a in argv if a != "--print"]
    if known.nproc is None:
        try:
            known.nproc = own_nproc(known.resume) or load_settings(known.config).runtime.nproc_per_node
        except SettingsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    cmd = train_command(known.nproc, passed)
    print(shlex.join(cmd), flush=True)
    if known.print:
        return 0
    os.execve(cmd[0], cmd, in_place_env())


if __name__ == "__main__":
    sys.exit(main())
