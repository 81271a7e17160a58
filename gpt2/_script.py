"""Run a gpt2/ entry point started as a file as the module it is.

The seed project's notes run `python3 gpt2/prepare_data.py ...` from the repository and
`cd gpt2 && python3 train.py ...` from inside it. Started that way, Python puts gpt2/ itself on
the import path, so `gpt2` and `lib` cannot be found. This re-executes the same command as
`python -m gpt2.<name>` from the repository root (where config.py, data/ and runs/ live), with
the repository on PYTHONPATH: nothing is installed and no import path is edited in process.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rerun_as_module(module: str) -> None:
    """Replace this process by `python -m <module>` with the same arguments, run from the root."""
    here = Path.cwd().resolve()
    where = "" if here == ROOT else f" in {ROOT} (relative paths are taken from there)"
    print(f"{sys.argv[0]} was started as a file: running `python -m {module}`{where}", file=sys.stderr)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    os.chdir(ROOT)
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)
