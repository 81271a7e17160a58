"""Install the PyTorch build this machine wants, before the rest of the environment (the Makefile calls it).

    python scripts/install_torch.py                   # torch missing: CPU build, or PyPI's CUDA build on GPUs
    python scripts/install_torch.py --spec torch==2.13.0   # TORCH=...: exactly this, whatever is installed

Without --spec an installed torch is kept. A machine without an NVIDIA GPU gets PyTorch's CPU
build (a few hundred MB) from its CPU index, or a CPU wheel that pip's own configuration offers,
instead of PyPI's default CUDA build (several GB); a machine with one gets PyPI's default. What
will be installed is printed first, with how to choose otherwise. Standard library only: it runs
in the new virtual environment before anything is installed.
"""

import argparse
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

REQUIREMENT = "torch>=2.4,<3"  # as pyproject.toml
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def nvidia_gpu() -> bool:
    """An NVIDIA GPU with a working driver is visible."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
            return out.returncode == 0 and "GPU" in out.stdout
        except (OSError, subprocess.SubprocessError):
            return False
    return os.path.exists("/dev/nvidia0")


def local_cpu_wheels() -> list[Path]:
    """torch CPU wheels (a '+cpu' version) for this Python in the folders pip's find-links names."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    folders = [
        Path(entry)
        for line in out.stdout.splitlines()
        if ".find-links=" in line
        for entry in line.split("=", 1)[1].strip("'\"").split()
        if Path(entry).is_dir()
    ]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = []
    for folder in folders:
        for wheel in folder.glob("torch-2.*+cpu-*.whl"):
            parts = wheel.name.split("-")  # torch, version, python tag, abi tag, platform
            if parts[2] == tag and platform.machine() in parts[-1]:
                wheels.append(wheel)
    return sorted(
        wheels, key=lambda w: [int(x) for x in re.findall(r"\d+", w.name.split("-")[1].split("+")[0])]
    )


def plan(spec: str | None, installed: bool, gpu: bool, cpu_index: str) -> tuple[list[str] | None, str]:
    """(pip install arguments, or None for nothing to do; what to tell the user)."""
    if spec:
        return [spec], f"torch: installing {spec!r} as TORCH= asks (pip keeps it if it is already met)"
    if installed:
        return None, "torch: already installed; kept (pass TORCH=<requirement> to change it)"
    if gpu:
        return [REQUIREMENT], (
            f"torch: an NVIDIA GPU is present: installing PyPI's {REQUIREMENT} (a CUDA build, several GB). "
            "Pass TORCH=<requirement> to choose another build."
        )
    # --no-deps: torch's own dependencies come from the normal index with the rest of the project.
    return ["--no-deps", "--index-url", cpu_index, "--retries", "0", "--timeout", "15", REQUIREMENT], (
        f"torch: no NVIDIA GPU: installing the CPU build of {REQUIREMENT} from {cpu_index} (or a CPU wheel "
        "your pip configuration offers), not PyPI's CUDA build. Pass TORCH=<requirement> to choose."
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", help="a torch requirement to install exactly (the Makefile's TORCH=)")
    p.add_argument("--cpu-index", default=CPU_INDEX, help=f"PyTorch's CPU wheel index (default {CPU_INDEX})")
    args = p.parse_args(argv)
    installed = importlib.util.find_spec("torch") is not None
    gpu = nvidia_gpu() if not args.spec and not installed else False
    pip_args, message = plan(args.spec, installed, gpu, args.cpu_index)
    print(message, flush=True)
    if pip_args is None:
        return 0
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    if "--index-url" in pip_args:
        # Only the CPU index (and find-links): pip's configured mirrors may offer a newer CUDA build.
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
        if subprocess.run([*pip, *pip_args], env=env, stderr=subprocess.DEVNULL).returncode == 0:
            return 0
        if wheels := local_cpu_wheels():
            print(
                f"torch: {args.cpu_index} is out of reach; installing {wheels[-1].name} from pip's find-links"
            )
            pip_args = ["--no-deps", str(wheels[-1])]
        else:
            print(
                f"torch: no CPU build is within reach ({args.cpu_index} is out of reach, no '+cpu' wheel in "
                f"pip's find-links): installing {REQUIREMENT} as pip resolves it, which on PyPI is a CUDA "
                "build of several GB. Ctrl-C and pass TORCH=<requirement> to choose another.",
                flush=True,
            )
            pip_args = [REQUIREMENT]
    if subprocess.run([*pip, *pip_args]).returncode == 0:
        return 0
    print(
        f"error: pip could not install {pip_args[-1]!r}. Offline, name a build your pip can reach: "
        "make TORCH=torch==<version> (a local wheel or mirror), or TORCH=torch for PyPI's default build.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
