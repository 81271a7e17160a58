"""GPU utilisation, memory, power and temperature sampled beside the training loop.

A daemon thread reads the run's GPU every GPT2_GPU_MONITOR_INTERVAL seconds
through NVML (the nvidia-ml-py package) and appends one JSON line per sample to
gpu.jsonl; the training loop never waits for it. Where NVML is missing (AMD,
Apple, no driver library) it falls back to torch's own counters, which know
the memory this process allocated and reserved but no utilisation, power or
temperature. On a CPU run nothing is sampled.
"""

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lib.measure.settings import MonitorSettings

log = logging.getLogger(__name__)
GPU_FILE = "gpu.jsonl"


def _nvml_index(device: torch.device) -> int:
    """NVML numbers GPUs as the driver does; CUDA_VISIBLE_DEVICES renumbers them for torch."""
    index = device.index or 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index < len(visible) and visible[index].isdigit():
        return int(visible[index])
    return index


def nvml_sampler(device: torch.device) -> Callable[[], dict] | None:
    """A function returning one NVML sample of `device`, or None where NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(_nvml_index(device))
    except Exception:  # no package, no driver library, not an NVIDIA GPU
        return None

    def sample() -> dict:
        util = pynvml.nvmlDeviceGetUtilizationRates(handle)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return {
            "gpu_util_percent": float(util.gpu),
            "memory_used_bytes": int(mem.used),
            "memory_total_bytes": int(mem.total),
            "power_watts": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "temperature_c": float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
            # Under its power cap a GPU lowers this clock: the same work then takes longer.
            "sm_clock_mhz": float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        }

    return sample


def torch_sampler(device: torch.device) -> Callable[[], dict]:
    """Memory only, from torch's allocator (other vendors, or no NVML)."""

    def sample() -> dict:
        return {
            "memory_used_bytes": int(torch.cuda.memory_reserved(device)),
            "memory_allocated_bytes": int(torch.cuda.memory_allocated(device)),
        }

    return sample


class GPUMonitor:
    """Samples in a daemon thread into `path` until stop(); a no-op without a sampler."""

    def __init__(self, path: Path, sampler: Callable[[], dict] | None, interval: float, source: str = ""):
        self.path, self.sampler, self.interval, self.source = path, sampler, interval, source
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples: list[dict] = []

    @classmethod
    def for_device(cls, path: Path, device: torch.device, s: MonitorSettings) -> "GPUMonitor":
        if not s.enabled or device.type != "cuda":
            return cls(path, None, s.interval_seconds)
        sampler = nvml_sampler(device)
        if sampler is not None:
            return cls(path, sampler, s.interval_seconds, "nvml")
        log.info("GPU monitor: NVML unavailable (pip install nvidia-ml-py); sampling torch's memory only")
        return cls(path, torch_sampler(device), s.interval_seconds, "torch")

    def _run(self) -> None:
        start = time.time()
        with open(self.path, "a") as f:
            while True:
                try:
                    record = {"seconds": round(time.time() - start, 3), **self.sampler()}
                except Exception as e:  # a driver hiccup must not stop training
                    log.warning("GPU monitor: sampling failed (%s); stopping it", e)
                    return
                self.samples.append(record)
                f.write(json.dumps(record) + "\n")
                f.flush()
                if self._stop.wait(self.interval):
                    return

    def start(self) -> "GPUMonitor":
        if self.sampler is not None:
            self._thread = threading.Thread(target=self._run, name="gpu-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> dict | None:
        """Stop sampling; a summary of the samples (None when nothing was sampled)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
        return summarize(self.samples, self.source) if self.samples else None


def summarize(samples: list[dict], source: str = "") -> dict:
    """Means and maxima over the samples, and the energy (trapezoid over the power samples)."""
    out: dict = {"source": source, "samples": len(samples)}
    for key in ("gpu_util_percent", "power_watts", "temperature_c", "sm_clock_mhz", "memory_used_bytes"):
        values = [s[key] for s in samples if key in s]
        if values:
            out[f"mean_{key}"] = sum(values) / len(values)
            out[f"max_{key}"] = max(values)
    power = [(s["seconds"], s["power_watts"]) for s in samples if "power_watts" in s]
    if len(power) > 1:
        joules = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(power, power[1:], strict=False))
        out["energy_wh"] = joules / 3600
    return out


def plot_gpu(path: Path, out: Path, title: str) -> bool:
    """gpu.png: utilisation, memory, power and temperature over time; False if nothing to plot."""
    if not path.is_file():
        return False
    samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not samples:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("gpu_util_percent", "utilisation (%)", 1),
        ("memory_used_bytes", "memory used (GiB)", 2**30),
        ("power_watts", "power (W)", 1),
        ("temperature_c", "temperature (C)", 1),
    ]
    panels = [p for p in panels if any(p[0] in s for s in samples)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), sharex=True, squeeze=False)
    for ax, (key, label, scale) in zip(axes[:, 0], panels, strict=True):
        pts = [(s["seconds"], s[key] / scale) for s in samples if key in s]
        ax.plot([t for t, _ in pts], [v for _, v in pts])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the start of training")
    axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True
