"""Atomic writes and checkpoints that refuse to execute or half-load."""

import pytest
import torch

from lib.io import atomic_write, atomic_write_text
from lib.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_checkpoint_round_trip(tmp_path):
    state = {"iter_num": 3, "model": {"w": torch.ones(2)}, "optimizer": {}, "settings": {"a": {"b": 1}}}
    save_checkpoint(tmp_path / "ckpt.pt", state)
    got = load_checkpoint(tmp_path / "ckpt.pt")
    assert got["iter_num"] == 3 and torch.equal(got["model"]["w"], torch.ones(2))


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    save_checkpoint(
        tmp_path / "ckpt.pt",
        {"iter_num": 1, "model": {"w": torch.ones(1000)}, "optimizer": {}, "settings": {}},
    )
    data = (tmp_path / "ckpt.pt").read_bytes()
    (tmp_path / "ckpt.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "ckpt.pt")


class Evil:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').close()",))


def test_checkpoints_never_execute_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"iter_num": 1, "model": Evil(), "optimizer": {}, "settings": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "ckpt.pt")
    assert not (tmp_path / "PWNED").exists()


def test_foreign_checkpoint_is_named(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="lacks iter_num, model, optimizer, settings"):
        load_checkpoint(tmp_path / "ckpt.pt")


def test_written_files_take_the_umask_not_owner_only(tmp_path):
    import os

    old = os.umask(0o022)
    os.umask(old)
    atomic_write_text(tmp_path / "summary.json", "{}")
    save_checkpoint(tmp_path / "ckpt.pt", {"iter_num": 1})
    for name in ("summary.json", "ckpt.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~old  # 0o644 under umask 022


def test_a_garbage_checkpoint_never_suggests_an_unsafe_load(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"\x80\x02garbage that is no zip")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "ckpt.pt")
    assert "not a readable checkpoint" in str(e.value) and "weights_only" not in str(e.value)


def test_the_torch_build_fits_the_machine_and_torch_is_honoured():
    from scripts.install_torch import REQUIREMENT, plan

    cpu, msg = plan(None, installed=False, gpu=False, cpu_index="https://x/cpu")
    assert cpu[:3] == ["--no-deps", "--index-url", "https://x/cpu"] and "not PyPI's CUDA build" in msg
    cuda, msg = plan(None, installed=False, gpu=True, cpu_index="https://x/cpu")
    assert cuda == [REQUIREMENT] and "CUDA build" in msg
    assert plan(None, installed=True, gpu=False, cpu_index="")[0] is None  # an installed torch is kept
    assert plan("torch==2.13.0", installed=True, gpu=True, cpu_index="")[0] == ["torch==2.13.0"]


def test_a_metrics_line_torn_by_a_kill_neither_breaks_reading_nor_resume(tmp_path):
    from lib.measure.metrics import MetricsWriter, read_metrics

    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    for i in (1, 2, 3):
        writer.write({"kind": "train", "iter": i, "loss": 1.0 / i})
    with open(path, "a") as f:
        f.write('{"kind": "train", "it')  # SIGKILL in the middle of a write
    assert [r["iter"] for r in read_metrics(path)] == [1, 2, 3]
    writer.truncate_after(2)  # what a resume does
    assert [r["iter"] for r in read_metrics(path)] == [1, 2] and path.read_text().endswith("}\n")
