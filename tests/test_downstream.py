"""lm-evaluation-harness through the adapter, offline, on tiny local task files."""

import json
import sys

import pytest
import torch
import torch.nn.functional as F

from gpt2.model import GPT, GPTConfig
from lib.measure.downstream import make_adapter, run_lm_eval
from lib.measure.settings import DownstreamSettings
from lib.train.settings import SettingsError

ROWS = [
    {"context": "To be, or not to", "choices": [" be", " cheese"], "label": 0},
    {"context": "O Romeo, Romeo, wherefore art thou", "choices": [" Romeo", " table"], "label": 0},
    {"context": "Now is the winter of our", "choices": [" spoon", " discontent"], "label": 1},
]


def write_tasks(folder) -> None:
    """A multiple-choice task (HellaSwag's shape) and a loglikelihood one (LAMBADA's) on local JSON."""
    data = folder / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in ROWS))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (folder / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n" + common + "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    (folder / "tiny_ll.yaml").write_text(
        "task: tiny_ll\n" + common + "output_type: loglikelihood\n"
        'doc_to_text: "{{context}}"\ndoc_to_target: "{{choices[label]}}"\n'
        "metric_list:\n  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )


class Request:
    def __init__(self, *args):
        self.args = args


def test_the_adapter_scores_a_continuation_as_the_model_does():
    pytest.importorskip("lm_eval")
    import tiktoken

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny", block_size=32)).eval()
    adapter = make_adapter(model, torch.device("cpu"), None, batch_size=2)
    (total, greedy), (total2, _) = adapter.loglikelihood(
        [Request("To be, or not to", " be"), Request("Now is the winter of our", " discontent")]
    )
    enc = tiktoken.get_encoding("gpt2")
    ctx, cont = enc.encode("To be, or not to"), enc.encode(" be")
    with torch.no_grad():
        logits, _ = model(torch.tensor([ctx + cont[:-1]]), all_positions=True)
    logp = F.log_softmax(logits[0], dim=-1)[len(ctx) - 1 :]
    expected = sum(logp[i, t].item() for i, t in enumerate(cont))
    assert total == pytest.approx(expected, rel=1e-5) and isinstance(greedy, bool)
    assert total2 < 0
    (rolling,) = adapter.loglikelihood_rolling([Request("To be, or not to be, that is the question")])
    assert rolling < 0


def test_local_tasks_run_offline_and_report_their_metrics(tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    write_tasks(tmp_path)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("gpt2-tiny", block_size=32))
    s = DownstreamSettings(enabled=True, tasks="tiny_mc,tiny_ll", include_path=str(tmp_path))
    results = run_lm_eval(model, torch.device("cpu"), None, s)
    assert set(results) == {"tiny_mc", "tiny_ll"}
    assert 0.0 <= results["tiny_mc"]["acc"] <= 1.0 and results["tiny_ll"]["perplexity"] > 1.0
    assert model.training  # put back


def test_a_run_with_lm_eval_records_it_and_a_missing_harness_is_explained(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    from gpt2 import train
    from lib.study.report import downstream_text

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    write_tasks(tmp_path)
    out = tmp_path / "run"
    argv = ["--config", str(tiny_config), "--out-dir", str(out), "--max-iters", "2", "--eval-interval", "2"]
    argv += ["--lm-eval", "--lm-eval-tasks", "tiny_mc", "--set", f"GPT2_LM_EVAL_INCLUDE_PATH={tmp_path}"]
    assert train.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["lm_eval"]) == {"tiny_mc"} and downstream_text(summary["lm_eval"]).startswith(
        "tiny_mc acc="
    )
    monkeypatch.setitem(sys.modules, "lm_eval.api.model", None)  # as if not installed
    out2 = tmp_path / "run2"
    assert train.main([*argv[:3], str(out2), *argv[4:]]) == 0  # training results are kept
    summary = json.loads((out2 / "summary.json").read_text())
    assert "pip install" in summary["lm_eval"]["error"]
    assert "lm-evaluation-harness failed" in (out2 / "output.log").read_text()


def test_task_lists_are_validated():
    with pytest.raises(SettingsError, match="CONFIG_GPT2_LM_EVAL_TASKS"):
        DownstreamSettings(tasks=" , ")
    assert DownstreamSettings(tasks="hellaswag, lambada_openai").task_names == ["hellaswag", "lambada_openai"]
