"""The Python API: the README's example equals the CLI's run, outputs from a torch model, the table."""

from __future__ import annotations

import builtins
import csv
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dfb_ood import api_table
from dfb_ood.errors import InputError, UnknownNameError
from dfb_ood.harness.cli import app
from tests.harness.test_pipeline import TINY_BENCHMARK
from tests.harness.test_pipeline import TINY_RECIPE as PIPELINE_RECIPE

ROOT = Path(__file__).resolve().parent.parent
TINY_RECIPE = PIPELINE_RECIPE.replace("steps: 24", "steps: 4")


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- api-example -->\n```python\n(.*?)\n```\n<!-- /api-example -->", text, re.S)
    assert block, "README.md has no <!-- api-example --> python block"
    return block.group(1)


def test_import_dfb_ood_stays_light():
    import subprocess

    code = "import sys, dfb_ood; assert 'torch' not in sys.modules; dfb_ood.create; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_readme_example_equals_the_cli_on_the_same_run(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(TINY_BENCHMARK)
    (tmp_path / "recipe.yaml").write_text(TINY_RECIPE)
    code = readme_example()
    for shown, tiny in (
        ('"fmnist_mini"', repr(str(tmp_path / "tiny.yaml"))),
        ('"frozen"', repr(str(tmp_path / "recipe.yaml"))),
        ('"runs/api-example"', repr(str(tmp_path / "api"))),
    ):
        assert shown in code, shown
        code = code.replace(shown, tiny)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md:api-example", "exec"), namespace)
    table = namespace["table"]
    names = ["msp", "vim", "energy_dfbz", "msp_dfb"]
    cli = CliRunner().invoke(
        app,
        ["bench", "--benchmark", str(tmp_path / "tiny.yaml"), "--recipe", str(tmp_path / "recipe.yaml"),
         "--post", ",".join(names), "--out", str(tmp_path / "cli"), "--no-report", "--quiet"],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    with open(tmp_path / "cli" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = table.to_dict("records")
    assert len(records) == len(rows) and {r["detector"] for r in records} == set(names)
    by_key = {(r["detector"], r["dataset"]): r for r in records}
    for row in rows:
        record = by_key[(row["detector"], row["dataset"])]
        assert record["group"] == row["group"] and record["detector_network"] == row["detector_network"]
        for column, field in api_table.METRIC_COLUMNS.items():
            assert record[column] == 100.0 * float(row[field]), (row["detector"], row["dataset"], column)
    # the API's run folder holds the same results file as the CLI's, byte for byte
    api_csv = (tmp_path / "api" / "results.csv").read_text()
    assert api_csv == (tmp_path / "cli" / "results.csv").read_text()


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.ReLU())
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def loader(n: int, seed: int, shift: float = 0.0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 2, 2, generator=generator) + shift
    labels = torch.randint(0, 3, (n,), generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=7)


def test_collect_outputs_from_a_torch_model_and_scores_by_hand():
    from dfb_ood import collect_outputs, create

    model = TinyNet().train()
    outputs = collect_outputs(model, loader(20, 1), device="cpu")
    assert model.training  # the mode is restored
    images = torch.cat([batch[0] for batch in loader(20, 1)])
    with torch.no_grad():
        features = model.body(images).numpy()
        logits = model(images).numpy()
    np.testing.assert_allclose(outputs.features, features, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outputs.logits, logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(outputs.features @ outputs.weight.T + outputs.bias, logits, atol=1e-5)
    assert outputs.labels.tolist() == torch.cat([b[1] for b in loader(20, 1)]).tolist()
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    msp = create("msp").fit(outputs).score(outputs)
    np.testing.assert_allclose(msp, (exp / exp.sum(axis=1, keepdims=True)).max(axis=1), rtol=1e-6)
    energy = create("energy").fit(outputs).score(outputs)
    by_hand = logits.max(axis=1) + np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1))
    np.testing.assert_allclose(energy, by_hand, rtol=1e-5)
    ood = collect_outputs(model, loader(9, 2, shift=3.0), device="cpu", ood=True)
    assert (ood.labels == -1).all()


def test_collect_outputs_with_a_callable_needs_the_head():
    from dfb_ood import collect_outputs

    model = TinyNet().eval()

    def forward(x):
        features = model.body(x)
        return features, model.fc(features)

    with pytest.raises(InputError, match="head=\\(weight, bias\\)"):
        collect_outputs(forward, loader(5, 1), device="cpu")
    outputs = collect_outputs(forward, loader(5, 1), head=(model.fc.weight, model.fc.bias), device="cpu")
    assert outputs.logits.shape == (5, 3) and outputs.features.shape == (5, 8)


def _table_inputs():
    from dfb_ood import collect_outputs

    model = TinyNet()
    train = collect_outputs(model, loader(30, 1), device="cpu")
    test = collect_outputs(model, loader(21, 2), device="cpu")
    near = collect_outputs(model, loader(14, 3, shift=1.0), device="cpu", ood=True)
    far = collect_outputs(model, loader(14, 4, shift=4.0), device="cpu", ood=True)
    return train, test, {"near": {"a": near}, "far": {"b": far}}


def test_evaluate_outputs_dataframe_matches_the_metrics():
    from dfb_ood import create, evaluate_ood, evaluate_outputs

    train, test, ood = _table_inputs()
    table = evaluate_outputs(["msp", "vim"], train, test, ood)
    assert list(table.columns[:4]) == ["detector", "detector_network", "dataset", "group"]
    assert set(table["dataset"]) == {"a", "b", "near_mean", "far_mean", "all_mean"}
    vim = create("vim").fit(train)
    metrics = evaluate_ood(vim.score(test), vim.score(ood["far"]["b"]))
    row = table[(table["detector"] == "vim") & (table["dataset"] == "b")].iloc[0]
    assert row["AUROC"] == pytest.approx(100 * metrics.auroc, abs=1e-9)
    assert row["FPR@95"] == pytest.approx(100 * metrics.fpr95, abs=1e-9)
    accuracy = 100 * np.mean(test.logits.argmax(axis=1) == test.labels)
    assert row["ACC"] == pytest.approx(accuracy, abs=1e-9)


def test_evaluate_outputs_gives_records_without_pandas(monkeypatch):
    from dfb_ood import evaluate_outputs

    train, test, ood = _table_inputs()
    with_pandas = evaluate_outputs("msp", train, test, ood).to_dict("records")
    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    records = evaluate_outputs("msp", train, test, ood)
    assert isinstance(records, list) and records == with_pandas


def test_a_bad_detector_name_is_an_unknown_name_with_a_suggestion():
    from dfb_ood import Evaluator, evaluate_outputs

    train, test, ood = _table_inputs()
    with pytest.raises(UnknownNameError, match="did you mean vim"):
        evaluate_outputs("vimm", train, test, ood)
    with pytest.raises(UnknownNameError, match="'nosuch'"):
        Evaluator(postprocessor_name="msp,nosuch")
    with pytest.raises(InputError, match="not both"):
        Evaluator(TinyNet(), network="rv2_tiny", checkpoint="weights.safetensors")


def test_run_dfb_on_a_users_classifier_is_the_cli_with_checkpoint(tmp_path):
    from dfb_ood import run_dfb
    from dfb_ood.networks import create_network

    (tmp_path / "tiny.yaml").write_text(TINY_BENCHMARK)
    (tmp_path / "recipe.yaml").write_text(TINY_RECIPE)
    torch.manual_seed(3)
    model = create_network("rv2_tiny", 6)  # stands for a classifier the user trained
    paths = {"benchmark": str(tmp_path / "tiny.yaml"), "recipe": str(tmp_path / "recipe.yaml")}
    table, run_dir = run_dfb(model, network="rv2_tiny", detectors="msp,msp_dfb", out=tmp_path / "api",
                             device="cpu", **paths)  # fmt: skip
    weights = tmp_path / "api.classifier.safetensors"
    assert run_dir == tmp_path / "api" and weights.is_file() and (run_dir / "dfb.safetensors").is_file()
    cli = CliRunner().invoke(
        app,
        ["bench", "--benchmark", paths["benchmark"], "--recipe", paths["recipe"], "--network", "rv2_tiny",
         "--checkpoint", str(weights), "--post", "msp,msp_dfb", "--out", str(tmp_path / "cli"),
         "--device", "cpu", "--no-report", "--quiet"],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert (run_dir / "results.csv").read_text() == (tmp_path / "cli" / "results.csv").read_text()
    stages = (run_dir / "stages.json").read_bytes()
    again, _ = run_dfb(model, network="rv2_tiny", detectors="msp,msp_dfb", out=tmp_path / "api",
                       device="cpu", **paths)  # fmt: skip
    assert again.equals(table) and (run_dir / "stages.json").read_bytes() == stages  # resumed: nothing redone


class TinyConv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.classifier = torch.nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(torch.relu(self.conv(x))).flatten(1))


def test_evaluator_on_any_torch_model_runs_the_benchmarks_sets(tmp_path):
    from dfb_ood import Evaluator, benchmark_outputs, create, evaluate_ood

    (tmp_path / "tiny.yaml").write_text(TINY_BENCHMARK)
    model = TinyConv()
    sets, groups = benchmark_outputs(model, tmp_path / "tiny.yaml", device="cpu")
    assert groups == {"unseen": "near", "textures": "far", "noise": "far"}
    assert {name: len(o) for name, o in sets.items()} == {
        "train": 192, "val": 48, "test": 60, "ood_val": 30, "unseen": 40, "textures": 40, "noise": 40,
    }  # fmt: skip
    assert (sets["noise"].labels == -1).all() and set(sets["test"].labels.tolist()) <= set(range(6))
    evaluator = Evaluator(model, id_name=str(tmp_path / "tiny.yaml"), postprocessor_name="msp", device="cpu")
    table = evaluator.eval_ood()
    assert evaluator.run_dir is None
    msp = create("msp").fit(sets["train"])
    expected = evaluate_ood(msp.score(sets["test"]), msp.score(sets["noise"]))
    row = table[table["dataset"] == "noise"].iloc[0]
    assert row["AUROC"] == pytest.approx(100 * expected.auroc, abs=1e-9)
    assert set(table["dataset"]) == {"unseen", "textures", "noise", "near_mean", "far_mean", "all_mean"}
