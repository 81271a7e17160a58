"""Token preparation (offline, checked, atomic) and batch sampling."""

import functools
import gzip
import http.server
import importlib.util
import io
import json
import tarfile
import threading

import numpy as np
import pytest
import tiktoken
import torch

import lib.train.data
from gpt2 import prepare_data
from gpt2.prepare_data import SHAKESPEARE_SHA256, prepare
from lib.train.data import DataError, TokenData

from .conftest import ROOT


def test_shakespeare_tokens_and_meta(data_dir):
    meta = json.loads((data_dir / "shakespeare" / "meta.json").read_text())
    # 338,025 tokens of text (the data README's count) plus one <|endoftext|>.
    assert meta["train_tokens"] + meta["val_tokens"] == 338_026
    assert meta["val_tokens"] == int(338_026 * 0.1)
    assert meta["source_sha256"] == SHAKESPEARE_SHA256
    train = np.fromfile(data_dir / "shakespeare" / "train.bin", dtype=np.uint16)
    enc = tiktoken.get_encoding("gpt2")
    assert enc.decode(train[:8].tolist()).startswith("First Citizen:\nBefore we proceed")
    assert prepare_data.sha256_file(data_dir / "shakespeare" / "train.bin") == meta["train_sha256"]


def test_a_wrong_source_file_is_refused(tmp_path):
    bad = tmp_path / "input.txt"
    bad.write_text("not shakespeare")
    with pytest.raises(SystemExit, match="expected 86c4e6aa"):
        prepare("shakespeare", tmp_path / "data", source=str(bad))
    assert not (tmp_path / "data" / "shakespeare" / "meta.json").exists()


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """A localhost HTTP server holding a small input.txt: the real download path, offline."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "input.txt").write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 20)
    monkeypatch.setattr(prepare_data, "SHAKESPEARE_SHA256", prepare_data.sha256_file(served / "input.txt"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/input.txt"
    server.shutdown()


def test_download_checks_and_keeps_the_file(tmp_path, http_server, monkeypatch):
    monkeypatch.setattr(prepare_data, "SHAKESPEARE_URL", http_server)
    out = prepare("shakespeare", tmp_path / "data")
    assert (out / "input.txt").read_text().startswith("ROMEO:")
    assert json.loads((out / "meta.json").read_text())["source"] == http_server
    # A corrupted cached copy is caught on the next run, not trained on.
    (out / "input.txt").write_text("tampered")
    with pytest.raises(SystemExit, match="Delete it to download again"):
        prepare("shakespeare", tmp_path / "data")


def test_unreachable_download_says_how_to_work_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_data, "SHAKESPEARE_URL", "http://127.0.0.1:9/input.txt")
    with pytest.raises(SystemExit, match="pass a local copy with --source PATH"):
        prepare("shakespeare", tmp_path / "data")


LINUX_DOCS = {
    "Documentation/admin-guide/README.rst": "Linux kernel release notes. Read them before asking.\n",
    "Documentation/process/howto.rst": "HOWTO do Linux kernel development.\n" * 3,
    "Documentation/memory-barriers.txt": "Linux kernel memory barriers.\n" * 5,
    "Documentation/translations/it_IT/process/howto.rst": "Come partecipare allo sviluppo.\n",
    "Documentation/devicetree/bindings/x.yaml": "compatible: x\n",
    "README": "not documentation\n",
}


def _linux_tree(root, gz: bool = False):
    for name, text in LINUX_DOCS.items():
        path = root / (name + (".gz" if gz else ""))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())


def _debian_package(path, tree):
    """A minimal .deb: an ar archive whose data.tar.xz holds the gzipped docs, as Debian ships them."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        tar.add(tree, arcname="./usr/share/doc/linux-doc-6.1")
    members = [(b"debian-binary", b"2.0\n"), (b"control.tar.xz", b""), (b"data.tar.xz", data.getvalue())]
    with open(path, "wb") as f:
        f.write(b"!<arch>\n")
        for name, body in members:
            f.write(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) * 2 + b"100644".ljust(8))
            f.write(str(len(body)).encode().ljust(10) + b"`\n" + body + b"\n" * (len(body) % 2))


def test_linuxdoc_reads_a_tarball_a_debian_package_and_a_folder_alike(tmp_path):
    tree = tmp_path / "linux-6.1"
    _linux_tree(tree)
    tarball = tmp_path / "linux-6.1.tar.xz"
    with tarfile.open(tarball, "w:xz") as tar:
        tar.add(tree, arcname="linux-6.1")
    _linux_tree(tmp_path / "deb", gz=True)
    _debian_package(tmp_path / "linux-doc-6.1.deb", tmp_path / "deb")

    docs, meta = prepare_data.linuxdoc_documents(tmp_path, str(tarball))
    # The three English .rst/.txt files, one document each; translations, YAML and README left out.
    assert sorted(docs) == sorted(
        t
        for n, t in LINUX_DOCS.items()
        if n.endswith(("README.rst", "howto.rst", ".txt")) and "it_IT" not in n
    )
    assert meta["documents"] == 3 and meta["source_sha256"] == prepare_data.sha256_file(tarball)
    for other in (tmp_path / "linux-doc-6.1.deb", tree, tree / "Documentation"):
        assert prepare_data.linuxdoc_documents(tmp_path, str(other))[0] == docs  # same fixed order

    out = prepare("linuxdoc", tmp_path / "data", source=str(tarball), val_fraction=0.2)
    enc = tiktoken.get_encoding("gpt2")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train_tokens"] + meta["val_tokens"] == sum(len(enc.encode_ordinary(d)) + 1 for d in docs)


def test_linuxdoc_refuses_what_holds_no_kernel_documentation(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no Documentation/"):
        prepare_data.linuxdoc_documents(tmp_path, str(tmp_path / "empty"))
    (tmp_path / "notes.deb").write_text("plain text")
    with pytest.raises(SystemExit, match="not a Debian package"):
        prepare_data.linuxdoc_documents(tmp_path, str(tmp_path / "notes.deb"))
    (tmp_path / "notes.tar.xz").write_text("plain text")
    with pytest.raises(SystemExit, match="not a readable tar archive"):
        prepare_data.linuxdoc_documents(tmp_path, str(tmp_path / "notes.tar.xz"))
    with pytest.raises(SystemExit, match="no such file or folder"):
        prepare_data.linuxdoc_documents(tmp_path, str(tmp_path / "missing.tar.xz"))


def test_a_crash_mid_preparation_keeps_the_previous_files(
    tmp_path, data_dir, shakespeare_source, monkeypatch
):
    root = tmp_path / "data"
    (root / "shakespeare").mkdir(parents=True)
    for name in ("train.bin", "val.bin", "meta.json"):
        (root / "shakespeare" / name).write_bytes((data_dir / "shakespeare" / name).read_bytes())
    before = {p.name: p.read_bytes() for p in (root / "shakespeare").iterdir()}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_data, "split_and_write", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare("shakespeare", root, source=shakespeare_source)
    assert {p.name: p.read_bytes() for p in (root / "shakespeare").iterdir()} == before


NEEDS_DATASETS = pytest.mark.skipif(
    importlib.util.find_spec("datasets") is None, reason="needs the data extra: pip install -e '.[data]'"
)


@NEEDS_DATASETS
def test_custom_folder_of_txt_jsonl_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Hello world")
    (corpus / "b.jsonl").write_text(
        json.dumps({"text": "one"}) + "\n" + json.dumps({"text": "two two"}) + "\n"
    )
    pq.write_table(pa.table({"text": ["three", "four four four"]}), corpus / "c.parquet")
    out = prepare("custom", tmp_path / "data", path=str(corpus), val_fraction=0.2)
    tokens = np.concatenate([np.fromfile(out / f"{s}.bin", dtype=np.uint16) for s in ("train", "val")])
    enc = tiktoken.get_encoding("gpt2")
    docs = ["Hello world", "one", "two two", "three", "four four four"]
    assert tokens.tolist() == [t for d in docs for t in enc.encode_ordinary(d) + [enc.eot_token]]


def test_token_cap_stops_mid_document(tmp_path):
    n = prepare_data.encode_documents(["word " * 5000, "never reached"], tmp_path / "t.bin", 1234, "cap")
    assert n == 1234 and (tmp_path / "t.bin").stat().st_size == 2 * 1234


@NEEDS_DATASETS
def test_custom_rows_without_text_are_refused(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"body": "hi"}) + "\n")
    with pytest.raises(SystemExit, match="rows need a 'text' field; found \\['body'\\]"):
        prepare("custom", tmp_path / "data", path=str(tmp_path / "x.jsonl"))


def test_batches_are_shifted_windows(data_dir):
    data = TokenData(data_dir / "shakespeare", "shakespeare", str(data_dir), seed=0)
    x, y = data.batch("train", 4, 32, torch.device("cpu"))
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_generator_state_replays_the_same_batches(data_dir):
    data = TokenData(data_dir / "shakespeare", "shakespeare", str(data_dir), seed=0)
    state = data.state_dict()
    first = data.batch("train", 2, 8, torch.device("cpu"))
    data.load_state_dict(state)
    assert torch.equal(first[0], data.batch("train", 2, 8, torch.device("cpu"))[0])


def test_missing_data_names_the_command(tmp_path):
    with pytest.raises(DataError, match="python -m gpt2.prepare_data --dataset finewebedu"):
        TokenData(tmp_path / "finewebedu", "finewebedu", str(tmp_path), seed=0)


def test_truncated_token_file_is_detected(tmp_path, data_dir):
    d = _copy_tokens(data_dir, tmp_path)
    (d / "val.bin").write_bytes((d / "val.bin").read_bytes()[:100])
    with pytest.raises(DataError, match="does not hold the 33802 tokens"):
        TokenData(d, "shakespeare", str(tmp_path), seed=0)


def _copy_tokens(data_dir, tmp_path):
    d = tmp_path / "shakespeare"
    d.mkdir()
    for name in ("train.bin", "val.bin", "meta.json"):
        (d / name).write_bytes((data_dir / "shakespeare" / name).read_bytes())
    return d


def test_a_token_file_changed_in_place_is_found_by_its_sha256_once_per_version(
    tmp_path, data_dir, monkeypatch
):
    d = _copy_tokens(data_dir, tmp_path)
    hashed = []
    real = lib.train.data.sha256_file
    monkeypatch.setattr(lib.train.data, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    TokenData(d, "shakespeare", str(tmp_path), seed=0)
    TokenData(d, "shakespeare", str(tmp_path), seed=0)
    assert hashed == ["train.bin", "val.bin"]  # the second time, .verified.json vouches for both
    with open(d / "train.bin", "r+b") as f:  # the same size, one token different
        f.seek(1000)
        f.write(b"\x01\x02")
    with pytest.raises(DataError, match="train.bin is not the file that was prepared: its sha256 differs"):
        TokenData(d, "shakespeare", str(tmp_path), seed=0)


def test_token_ids_outside_the_vocabulary_and_a_file_cut_short_are_errors(tmp_path, data_dir):
    d = _copy_tokens(data_dir, tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    tokens = np.fromfile(d / "train.bin", dtype=np.uint16)
    tokens[5000:5100] = 60000  # made by something else than GPT-2 BPE; meta.json agrees with it
    tokens.tofile(d / "train.bin")
    meta["train_sha256"] = prepare_data.sha256_file(d / "train.bin")
    (d / "meta.json").write_text(json.dumps(meta))
    data = TokenData(d, "shakespeare", str(tmp_path), seed=0)
    with pytest.raises(
        DataError, match="holds token id 60000 \\(at token 5,000\\), outside GPT-2's vocabulary"
    ):
        data.windows("train", torch.tensor([4990]), 32, torch.device("cpu"))
    data.windows("train", torch.tensor([0, 6000]), 32, torch.device("cpu"))  # elsewhere it reads
    # Cut short while open (a memory map would take SIGBUS here).
    with open(d / "train.bin", "r+b") as f:
        f.truncate(2 * 10_000)
    with pytest.raises(
        DataError, match="holds 10,000 tokens, not the 304,224 it held when the run opened it"
    ):
        data.windows("train", torch.tensor([20_000]), 32, torch.device("cpu"))


def test_sigterm_stops_a_preparation_at_once_and_leaves_no_temporary_files(tmp_path, data_dir):
    """SIGTERM (Slurm's, a closed session's) used to end preparation with no word and its temporary
    token stream left behind; now it stops at once, removes it and says so."""
    import os
    import signal
    import subprocess
    import sys
    import time

    text = tiktoken.get_encoding("gpt2").decode(
        np.fromfile(data_dir / "shakespeare" / "train.bin", dtype=np.uint16).tolist()
    )
    corpus = tmp_path / "big.txt"
    corpus.write_text(text * 60)  # ~60 MB: minutes of tokenizing on 2 cores
    out = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt2.prepare_data", "--config", str(tmp_path / "none.py")]
        + ["--dataset", "custom", "--path", str(corpus), "--data-dir", str(out)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not any(p.stat().st_size for p in out.glob("custom/.prepare-*/all.bin")):
        assert proc.poll() is None and time.time() < deadline, "the preparation did not start tokenizing"
        time.sleep(0.05)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.time() - sent < 15, err[-2000:]
    assert "SIGTERM received: stopped; its temporary files are removed and nothing usable was written" in err
    assert "Traceback" not in err
    assert os.listdir(out / "custom") == []


def test_prepare_cli_reads_the_config_and_skips_done_work(tmp_path, data_dir, shakespeare_source, capsys):
    args = ["--config", str(tmp_path / "none.py"), "--data-dir", str(data_dir)]
    assert prepare_data.main(args) == 0
    assert "already prepared" in capsys.readouterr().out


@NEEDS_DATASETS
def test_streamed_corpus_passes_repo_config_and_cap(tmp_path, monkeypatch):
    """The hub path (finewebedu and friends) without the network: a stub stands in for the hub."""
    import datasets

    calls = []

    def fake_load_dataset(repo, name=None, split=None, streaming=False):
        calls.append((repo, name, split, streaming))
        return ({"text": "lorem ipsum dolor sit amet " * 100, "id": i} for i in range(10**9))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(prepare_data, "_ENCODE_BATCH", 4)
    out = prepare("finewebedu", tmp_path / "data", max_tokens_millions=1)
    meta = json.loads((out / "meta.json").read_text())
    assert calls == [("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", True)]
    assert meta["train_tokens"] + meta["val_tokens"] == 1_000_000
    assert meta["source"] == "hf://HuggingFaceFW/fineweb-edu" and meta["hf_config"] == "sample-10BT"


def _prepare_cli(tmp_path, *flags) -> int:
    return prepare_data.main(
        ["--config", str(tmp_path / "none.py"), "--data-dir", str(tmp_path / "data"), *flags]
    )


def test_a_custom_corpus_is_prepared_again_when_its_path_or_files_change(tmp_path, capsys):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("First corpus. " * 50)
    b.write_text("Second corpus, other words. " * 50)
    assert _prepare_cli(tmp_path, "--dataset", "custom", "--path", str(a)) == 0
    assert _prepare_cli(tmp_path, "--dataset", "custom", "--path", str(a)) == 0
    assert "already prepared" in capsys.readouterr().out
    assert _prepare_cli(tmp_path, "--dataset", "custom", "--path", str(b)) == 0
    assert f"preparing again: they were made from '{a.resolve()}'" in capsys.readouterr().out
    meta = json.loads((tmp_path / "data" / "custom" / "meta.json").read_text())
    assert meta["source"] == str(b.resolve())
    b.write_text("Second corpus, edited. " * 60)
    assert _prepare_cli(tmp_path, "--dataset", "custom", "--path", str(b)) == 0
    assert "changed since they were prepared" in capsys.readouterr().out
    check = {"custom_path": str(a), "val_fraction": 0.1, "cap": 1000 * 1_000_000}
    with pytest.raises(DataError, match="not the ones these settings ask for: they were made from"):
        TokenData(tmp_path / "data" / "custom", "custom", str(tmp_path / "data"), 0, check=check)
    # Without a path, training takes the prepared tokens as they are.
    TokenData(
        tmp_path / "data" / "custom", "custom", str(tmp_path / "data"), 0, check={**check, "custom_path": ""}
    )


def test_make_data_prepares_damaged_token_files_again(tmp_path, shakespeare_source, capsys):
    flags = ("--dataset", "shakespeare", "--source", shakespeare_source or "")
    assert _prepare_cli(tmp_path, *flags) == 0
    train = tmp_path / "data" / "shakespeare" / "train.bin"
    whole = train.read_bytes()
    train.write_bytes(whole[:-2] + b"\x00\x00")  # the same size: only its sha256 tells
    assert _prepare_cli(tmp_path, *flags) == 0
    assert "preparing again" in capsys.readouterr().out and train.read_bytes() == whole
    val = tmp_path / "data" / "shakespeare" / "val.bin"
    val.write_bytes(val.read_bytes()[:100])
    with pytest.raises(DataError, match="Prepare it again: make data") as e:
        TokenData(val.parent, "shakespeare", str(tmp_path / "data"), seed=0)
    assert "--force" not in str(e.value)
    assert _prepare_cli(tmp_path, *flags) == 0
    assert "preparing again" in capsys.readouterr().out
    TokenData(val.parent, "shakespeare", str(tmp_path / "data"), seed=0)


def test_changed_split_settings_prepare_again(tmp_path, shakespeare_source, capsys):
    flags = ("--dataset", "shakespeare", "--source", shakespeare_source or "")
    assert _prepare_cli(tmp_path, *flags) == 0
    assert _prepare_cli(tmp_path, *flags, "--val-fraction", "0.2") == 0
    assert "split with GPT2_VAL_FRACTION=0.1, not 0.2" in capsys.readouterr().out


def test_a_custom_file_that_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / "corpus" / "latin1.txt"
    bad.parent.mkdir()
    (bad.parent / "fine.txt").write_text("plain text")
    bad.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(SystemExit, match=r"latin1.txt: not UTF-8 text \(byte 3 is b'\\xe9'\).*iconv"):
        prepare("custom", tmp_path / "data", path=str(bad.parent))


def test_an_empty_custom_file_is_refused_and_its_bar_promises_no_eta(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(SystemExit, match="produced 0 tokens of text; nothing to train on"):
        prepare("custom", tmp_path / "data", path=str(tmp_path / "empty.txt"))
    (tmp_path / "small.txt").write_text("a small corpus " * 20)
    capsys.readouterr()
    prepare("custom", tmp_path / "data", path=str(tmp_path / "small.txt"))
    bar = capsys.readouterr().err
    assert "tokenizing custom" in bar and "%|" not in bar  # no percentage of the 1B-token cap


def test_jsonl_without_the_data_extra_says_how_to_install_it(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    (tmp_path / "x.jsonl").write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(
        SystemExit, match=r"x.jsonl \(a .jsonl file\) needs the `datasets` package.*\.\[data\]"
    ):
        prepare("custom", tmp_path / "data", path=str(tmp_path / "x.jsonl"))


def test_offline_without_the_tokenizer_files_names_tiktoken_cache_dir(tmp_path, monkeypatch):
    import requests

    def offline(name):
        raise requests.exceptions.ConnectionError("openaipublic.blob.core.windows.net: no route")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(SystemExit, match="could not load the GPT-2 tokenizer's files.*TIKTOKEN_CACHE_DIR"):
        prepare("custom", tmp_path / "data", path=__file__)


def test_a_bad_run_name_is_not_blamed_on_prepare_datas_flags(tmp_path, kconf, capsys):
    from .conftest import make_config

    config = make_config(tmp_path, 'CONFIG_GPT2_RUN_NAME="a/b"\n', kconf)
    assert prepare_data.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "runtime.run_name = 'a/b' is not allowed" in err and "prepare_data.py: --path" not in err
