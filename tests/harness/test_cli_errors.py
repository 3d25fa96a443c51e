"""Every mistake is caught before any work starts, as one line on stderr with its exit code.

None of these tests trains anything: each bad input must be refused before stage 1, and the run
folder must not be created.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dfb_ood.harness.cli import app
from dfb_ood.harness.errors import EXIT_BAD_INPUT, EXIT_MISSING_INPUT, EXIT_SYSTEM, exit_code_for

from .test_pipeline import TINY_RECIPE

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]

IMGLIST_BENCHMARK = """
name: listed
num_classes: 6
image_size: 16
normalization: {mean: [0.5], std: [0.5]}
transforms:
  test: {resize: 16, crop: 16}
id:
  train: {type: shapes, set: train, count: 64, size: 16}
  val: {type: shapes, set: val, count: 24, size: 16}
  test: {type: shapes, set: test, count: 24, size: 16}
ood:
  far:
    mine: {type: imglist, images: ., list: far.txt}
"""


def bench(tiny: dict[str, Path], *extra: str) -> list[str]:
    return [
        "bench",
        "--benchmark",
        str(tiny["benchmark"]),
        "--recipe",
        str(tiny["recipe"]),
        "--out",
        str(tiny["root"] / "run"),
        "--post",
        "msp,bg",
        "--device",
        "cpu",
        "--no-report",
        *extra,
    ]


def refused(result, code: int, *words: str) -> str:
    """The result is one error on stderr (nothing on stdout), with ``code`` and the given words."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stdout == "" and "Traceback" not in result.output
    message = " ".join(result.stderr.split())
    assert message.startswith("error:"), message
    for word in words:
        assert word in message, (word, message)
    return message


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (("--network", "resnet9000"), EXIT_BAD_INPUT, ("unknown network 'resnet9000'", "mean 'resnet50'")),
        (("--steps", "0"), EXIT_BAD_INPUT, ("--steps must be a whole number >= 1, got 0",)),
        (("--steps", "-5"), EXIT_BAD_INPUT, ("--steps", "-5")),
        (("--batch-size", "0"), EXIT_BAD_INPUT, ("--batch-size must be a whole number >= 1",)),
        (("--seeds", "-1"), EXIT_BAD_INPUT, ("--seeds takes non-negative integers",)),
        (("--seeds", "a,b"), EXIT_BAD_INPUT, ("--seeds takes comma-separated integers",)),
        (("--post", "nope"), EXIT_BAD_INPUT, ("nope",)),
        (("--device", "toaster"), EXIT_BAD_INPUT, ("--device 'toaster' is not a device name",)),
        (("--checkpoint", "missing.safetensors"), EXIT_MISSING_INPUT, ("missing.safetensors",)),
    ],
)
def test_bad_options_are_refused_before_any_work(tiny, extra, code, words):
    refused(runner.invoke(app, bench(tiny, *extra)), code, *words)
    assert not (tiny["root"] / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_refused_before_any_work(tiny):
    args = bench(tiny)
    args[args.index("--device") + 1] = "cuda"
    refused(runner.invoke(app, args), EXIT_SYSTEM, "--device cuda", "no CUDA device")
    assert not (tiny["root"] / "run").exists()


def test_a_recipe_with_a_wrong_type_is_one_line(tiny):
    tiny["recipe"].write_text(TINY_RECIPE.replace("lr: 0.05", "lr: fast"))
    refused(runner.invoke(app, bench(tiny)), EXIT_BAD_INPUT, "`optimizer.lr` must be a number, got 'fast'")
    assert not (tiny["root"] / "run").exists()


def test_a_missing_data_set_is_found_before_training(tiny, tmp_path):
    args = [*bench(tiny), "--data-root", str(tmp_path / "empty")]
    args[args.index("--benchmark") + 1] = "cifar10"
    refused(runner.invoke(app, args), EXIT_MISSING_INPUT, str(tmp_path / "empty"))
    assert not (tiny["root"] / "run").exists()


def write_listed(tmp_path: Path, lines: list[str]) -> Path:
    from PIL import Image

    for index in range(3):
        Image.new("RGB", (16, 16), (40 * index, 90, 200)).save(tmp_path / f"far{index}.png")
    (tmp_path / "far.txt").write_text("".join(line + "\n" for line in lines))
    (tmp_path / "listed.yaml").write_text(IMGLIST_BENCHMARK)
    return tmp_path / "listed.yaml"


def test_an_empty_ood_list_is_found_before_training(tiny, tmp_path):
    args = bench(tiny)
    args[args.index("--benchmark") + 1] = str(write_listed(tmp_path, []))
    refused(runner.invoke(app, args), EXIT_BAD_INPUT, "far.txt")
    assert not (tiny["root"] / "run").exists()


def test_a_missing_image_is_found_before_training_and_skip_bad_goes_on(tiny, tmp_path):
    args = bench(tiny, "--quiet", "--steps", "2")
    args[args.index("--benchmark") + 1] = str(
        write_listed(tmp_path, ["far0.png 0", "gone.png 0", "far2.png 0"])
    )
    message = refused(runner.invoke(app, args), EXIT_MISSING_INPUT, "gone.png", "--skip-bad")
    assert "far.txt" in message
    assert not (tiny["root"] / "run").exists()
    result = runner.invoke(app, [*[a for a in args if a != "--quiet"], "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "gone.png" in result.stderr  # the skipped entry is named


def test_reference_is_checked_before_anything_is_printed(tmp_path):
    refused(
        runner.invoke(app, ["leaderboard", str(tmp_path), "--reference", "foo"]),
        2,
        "no reference named 'foo'",
    )


def test_debug_is_accepted_after_the_subcommand(tiny):
    result = runner.invoke(app, bench(tiny, "--network", "resnet9000", "--debug"))
    assert isinstance(result.exception, ValueError) and "resnet9000" in str(result.exception)
    before = runner.invoke(app, ["--debug", *bench(tiny, "--network", "resnet9000")])
    assert isinstance(before.exception, ValueError)
    for command, kind in (
        (["report", str(tiny["root"] / "nowhere"), "--debug"], FileNotFoundError),
        (["data", "check", "nope", "--debug"], ValueError),
        (["data", "--debug", "check", "nope"], ValueError),  # a group's own --debug
    ):
        assert isinstance(runner.invoke(app, command).exception, kind), command
    assert runner.invoke(app, ["data", "check", "nope"]).exit_code == EXIT_BAD_INPUT


def test_brackets_in_messages_survive(tiny):
    missing = tiny["root"] / "my[best]benchmark.yaml"
    message = refused(runner.invoke(app, ["bench", "--benchmark", str(missing)]), EXIT_MISSING_INPUT)
    assert "my[best]benchmark.yaml" in message


def test_exit_codes_by_kind():
    from dfb_ood.harness.errors import RunLockedError, SystemResourceError

    assert exit_code_for(ValueError("x")) == 2 and exit_code_for(KeyError("x")) == 2
    assert exit_code_for(FileNotFoundError("x")) == 3
    assert exit_code_for(RunLockedError("x")) == 4
    assert (
        exit_code_for(SystemResourceError(28, "full")) == 5 and exit_code_for(PermissionError(13, "no")) == 5
    )
    assert exit_code_for(RuntimeError("x")) == 1


# ------------------------------------------------------------------------------ packaging
def third_party_imports() -> set[str]:
    names = set()
    for folder in ("harness", "networks", "postprocessors"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"dfb_ood"}


def test_every_imported_package_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    declared += [dep for group in project["optional-dependencies"].values() for dep in group]
    declared_names = {dep.split(">")[0].split("=")[0].split("[")[0].strip().lower() for dep in declared}
    import_to_package = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn"}
    # Imported only when asked for and not on PyPI, so not declarable: OpenOOD's source goes on
    # PYTHONPATH (postprocessors.openood_adapter.openood_postprocessor says so when it is missing).
    not_on_pypi = {"openood"}
    missing = {
        name
        for name in third_party_imports() - not_on_pypi
        if import_to_package.get(name, name).lower() not in declared_names
    }
    assert missing == set()


def test_the_package_imports_without_posix_only_modules():
    """fcntl does not exist on Windows: nothing may import it at module level."""
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "import dfb_ood.harness.io, dfb_ood.harness.run, dfb_ood.harness.cli, dfb_ood.harness.report\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_an_empty_recipe_is_refused(tiny):
    tiny["recipe"].write_text("")
    refused(runner.invoke(app, bench(tiny)), EXIT_BAD_INPUT, "recipe is empty")
    assert not (tiny["root"] / "run").exists()


def test_a_csv_target_that_is_a_folder_is_refused_first(tiny):
    folder = tiny["root"] / "tables"
    folder.mkdir()
    refused(runner.invoke(app, bench(tiny, "--csv", str(folder))), EXIT_BAD_INPUT, "--csv", "is a folder")
    assert not (tiny["root"] / "run").exists()


def test_an_unreadable_checkpoint_is_refused_first(tiny):
    garbage = tiny["root"] / "notes.safetensors"
    garbage.write_text("not weights at all")
    refused(
        runner.invoke(app, bench(tiny, "--checkpoint", str(garbage))), EXIT_BAD_INPUT, "notes.safetensors"
    )
    assert not (tiny["root"] / "run").exists()


def test_an_image_that_is_not_one_is_found_before_training(tiny, tmp_path):
    args = bench(tiny, "--quiet")
    args[args.index("--benchmark") + 1] = str(write_listed(tmp_path, ["far0.png 0", "far1.png 0"]))
    (tmp_path / "far1.png").write_text("a text file with a .png name")
    refused(runner.invoke(app, args), 2, "far1.png")
    assert not (tiny["root"] / "run").exists()


def test_missing_shipped_data_says_how_to_get_it(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    args = [*bench(tiny), "--data-root", str(tmp_path / "empty")]
    args[args.index("--benchmark") + 1] = "cifar10"
    refused(runner.invoke(app, args), EXIT_MISSING_INPUT, "harness data download cifar10")


def test_pretrained_weights_are_checked_per_network():
    from dfb_ood.harness.preflight import check_network
    from dfb_ood.harness.recipes import load_recipe

    paper_like = load_recipe("cpu-quick").with_overrides(pretrained=True)
    check_network("effnet_lite0", paper_like)  # ImageNet weights ship in a PyPI wheel
    with pytest.raises(ValueError, match="no published pretrained weights"):
        check_network("rv2_tiny", paper_like)


def test_network_options_are_checked_before_any_work(tiny):
    tiny["recipe"].write_text(TINY_RECIPE + "network_options: {output_stride: 16}\n")
    refused(runner.invoke(app, bench(tiny)), EXIT_BAD_INPUT, "network_options", "rv2_tiny")
    tiny["recipe"].write_text(TINY_RECIPE + "network_options: 16\n")
    refused(runner.invoke(app, bench(tiny)), EXIT_BAD_INPUT, "`network_options` must be a mapping")
    assert not (tiny["root"] / "run").exists()


def test_network_options_reach_the_networks_and_their_checkpoints(tiny):
    import json

    tiny["recipe"].write_text(
        TINY_RECIPE.replace("steps: 24", "steps: 4") + "network_options: {stem_width: 12}\n"
    )
    result = runner.invoke(app, bench(tiny, "--quiet"))
    assert result.exit_code == 0, result.output
    for net in ("classifier", "dfb"):
        meta = json.loads((tiny["root"] / "run" / f"{net}.json").read_text())
        assert meta["build_options"] == {"stem_width": 12}, net
    again = runner.invoke(app, bench(tiny, "--quiet", "--post", "bg"))  # reloads both from checkpoints
    assert again.exit_code == 0, again.output
