"""Names that become paths, and links planted in a run folder (benchmarks/hostile_paths.py's cases).

A name read from a benchmark YAML becomes one file or folder name of the run: anything but one
plain name is refused where the YAML is read, naming the file, the line and the fix. Inside a run
folder a symbolic link is never followed: a linked folder is refused, a linked record is never
read, a linked figure is never copied into the leaderboard page.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dfb_ood.harness.cli import app
from dfb_ood.harness.data.benchmark import available_benchmarks, load_benchmark
from dfb_ood.harness.errors import EXIT_BAD_INPUT, EXIT_RUN_FOLDER, RunFolderError
from dfb_ood.harness.html_page import write_leaderboard_page
from dfb_ood.harness.io import own_folder, read_json, read_regular_text
from dfb_ood.harness.leaderboard import load_run_rows
from dfb_ood.harness.names import MAX_NAME, check_file_name, join_inside, name_problem, safe_file_name
from dfb_ood.harness.run import BenchSettings, Pipeline
from dfb_ood.harness.runfolder import check_run_links

from .test_html_page import make_run
from .test_pipeline import TINY_BENCHMARK, TINY_RECIPE

runner = CliRunner()
FAR = "    textures: {type: shapes, set: textures, count: 40, size: 16}\n"
NEAR = "    unseen: {type: shapes, set: near_unseen_shapes, count: 40, size: 16}\n"


def _key(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\0", "\\0")
    return f'"{escaped}"'


def _write(tmp_path: Path, text: str, file: str = "bench.yaml") -> Path:
    path = tmp_path / file
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------- names
GOOD = ["cifar10", "tin", "ssb_hard", "fmnist_mini", "imagenet-o", "inaturalist", "near-1.a", "far_2+b.v3"]
BAD = {
    "../../x/far": "separator",
    "/abs/victim": "separator",
    "a\\b": "separator",
    "near/unseen": "separator",
    "..": "dot",
    ".hidden": "dot",
    "a..b": "'..'",
    "far.": "ends with a dot",
    "tiny\nshapes": "control character",
    "far\0x": "control character",
    "tab\there": "control character",
    "f" * 300: "300 characters",
    "": "empty",
    "with space": "' '",
    "café": "'é'",
    "timm:resnet": "':'",
    "NUL": "device name",
}


@pytest.mark.parametrize("name", GOOD)
def test_plain_names_pass(name: str):
    assert check_file_name(name, "OOD set name", "x.yaml:3") == name


@pytest.mark.parametrize("name", list(BAD))
def test_names_that_would_be_paths_are_refused_with_where_why_and_a_fix(name: str):
    with pytest.raises(ValueError) as caught:
        check_file_name(name, "OOD set name", "x.yaml:3")
    message = str(caught.value)
    assert message.startswith("x.yaml:3: OOD set name ") and BAD[name] in message
    assert "\n" not in message and "\0" not in message and len(message) < 600
    suggestion = message.rsplit("e.g. ", 1)[1].strip("'")
    assert name_problem(suggestion) is None


@pytest.mark.parametrize("text", [*BAD, *GOOD, "timm:resnet50.a1_in1k", "-" * 5, "." * 7])
def test_a_mapped_name_is_always_a_plain_name(text: str):
    name = safe_file_name(text)
    assert name_problem(name) is None and len(name) <= MAX_NAME
    assert safe_file_name("a" * 300) != safe_file_name("a" * 299 + "b")  # cut names keep a hash


def test_join_inside_never_leaves_its_folder(tmp_path: Path):
    assert join_inside(tmp_path, "a", "b.npz") == tmp_path / "a" / "b.npz"
    for names in (("..",), ("a", "../../b"), ("/etc/passwd",), ("a/b",)):
        with pytest.raises(ValueError):
            join_inside(tmp_path, *names)


# --------------------------------------------------------------------------------- benchmark YAML
def test_every_shipped_benchmark_and_its_sets_keep_their_names():
    for shipped in available_benchmarks():
        benchmark = load_benchmark(shipped)
        assert name_problem(benchmark.name) is None
        for set_name in benchmark.ood_sets():
            assert name_problem(set_name) is None
    assert "ssb_hard" in load_benchmark("imagenet").near and "tin" in load_benchmark("cifar10").near


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda t: t.replace(FAR, FAR.replace("textures:", _key("../../../x/far") + ":")), "../../../x/far"),
        (lambda t: t.replace(FAR, FAR.replace("textures:", _key("/abs/victim") + ":")), "/abs/victim"),
        (lambda t: t.replace(NEAR, NEAR.replace("unseen:", _key("extra/unseen") + ":")), "extra/unseen"),
        (lambda t: t.replace(FAR, FAR.replace("textures:", _key("far\0x") + ":")), "far\\x00x"),
        (lambda t: t.replace(FAR, FAR.replace("textures:", _key("f" * 300) + ":")), "300 characters"),
        (lambda t: t.replace("name: tiny_shapes", "name: ../../escaped"), "../../escaped"),
        (lambda t: t.replace("name: tiny_shapes", "name: /abs/path"), "/abs/path"),
        (lambda t: t.replace("name: tiny_shapes", 'name: "tiny\\nshapes"'), "tiny\\nshapes"),
    ],
)
def test_a_bad_name_in_a_benchmark_is_refused_with_its_file_and_line(tmp_path: Path, edit, needle: str):
    text = edit(TINY_BENCHMARK)
    assert text != TINY_BENCHMARK
    path = _write(tmp_path, text)
    with pytest.raises(ValueError) as caught:
        load_benchmark(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:") and needle in message, message
    line = int(message[len(str(path)) + 1 :].split(":", 1)[0])
    edited = next(i for i, (a, b) in enumerate(zip(text.splitlines(), TINY_BENCHMARK.splitlines())) if a != b)
    assert line == edited + 1, (line, message)  # the line that holds the bad name


def test_set_names_that_differ_only_in_case_are_refused(tmp_path: Path):
    text = TINY_BENCHMARK.replace(FAR, FAR + FAR.replace("textures:", "Textures:"))
    with pytest.raises(ValueError, match="differ only in case"):
        load_benchmark(_write(tmp_path, text))
    text = TINY_BENCHMARK.replace(FAR, FAR.replace("textures:", "Test:"))
    with pytest.raises(ValueError, match="differ only in case"):
        load_benchmark(_write(tmp_path, text))


def test_a_benchmark_without_a_name_takes_its_file_name_mapped(tmp_path: Path):
    text = TINY_BENCHMARK.replace("name: tiny_shapes\n", "")
    assert load_benchmark(_write(tmp_path, text, "my bench (v2).yaml")).name == "my-bench-v2"
    assert load_benchmark(_write(tmp_path, text, "plain_v1.yaml")).name == "plain_v1"


def test_a_class_subset_name_stays_a_plain_name(tmp_path: Path):
    lists = tmp_path / "lists"
    lists.mkdir()
    for split in ("train", "val", "test", "far"):
        (lists / f"{split}.txt").write_text("a.png 0\n")
    text = (
        "name: {name}\nnum_classes: 6\nimage_size: 16\nnormalization: {{mean: [0.5], std: [0.5]}}\n"
        "id_classes: {{count: 3, seed: 7}}\n"
        "id: {{train: lists/train.txt, val: lists/val.txt, test: lists/test.txt}}\n"
        "ood: {{far: {{far1: lists/far.txt}}}}\n"
    )
    assert load_benchmark(_write(tmp_path, text.format(name="subset"))).name == "subset_c3_s7"
    with pytest.raises(ValueError, match="more than 100"):
        load_benchmark(_write(tmp_path, text.format(name="s" * 95)))


def test_the_default_run_folder_is_inside_runs(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = TINY_BENCHMARK.replace("name: tiny_shapes", "name: tiny-v1.2+b")
    settings = BenchSettings(
        benchmark=str(_write(tmp_path, text)),
        recipe=str(_write(tmp_path, TINY_RECIPE, "recipe.yaml")),
        device="cpu",
        detectors=["msp"],
    )
    pipeline = Pipeline(settings)
    assert pipeline.run_dir == Path("runs") / "tiny-v1.2+b" / "rv2_tiny" / "seed0"
    assert not (tmp_path / "runs").exists()  # nothing is made before the run starts


def test_a_bad_name_through_the_cli_creates_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = TINY_BENCHMARK.replace("name: tiny_shapes", "name: ../../escaped")
    recipe = _write(tmp_path, TINY_RECIPE, "recipe.yaml")
    args = ["bench", "--benchmark", str(_write(tmp_path, text)), "--recipe", str(recipe),
            "--device", "cpu", "--post", "msp", "--quiet"]  # fmt: skip
    before = sorted(os.listdir(tmp_path))
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "../../escaped" in result.output and "bench.yaml:2" in " ".join(result.output.split())
    assert sorted(os.listdir(tmp_path)) == before and not (tmp_path.parent / "escaped").exists()


# -------------------------------------------------------------------------------------- no-follow
def test_own_folder_makes_plain_folders_and_refuses_links_and_files(tmp_path: Path):
    run = tmp_path / "run"
    assert own_folder(run, "outputs/classifier") == run / "outputs" / "classifier"
    assert (run / "outputs" / "classifier").is_dir()
    assert own_folder(run, "report", create=False) is None and not (run / "report").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "report").symlink_to(elsewhere, target_is_directory=True)
    for create in (True, False):
        with pytest.raises(RunFolderError, match="symbolic link.*remove it"):
            own_folder(run, "report/figures", create=create)
    assert not list(elsewhere.iterdir())
    (run / "outputs" / "dfb").write_text("a file")
    with pytest.raises(RunFolderError, match="not a folder"):
        own_folder(run, "outputs/dfb")
    with pytest.raises(ValueError):
        own_folder(run, "../escape")
    linked_root = tmp_path / "linked_run"
    linked_root.symlink_to(run, target_is_directory=True)  # the user's --out may be a link
    assert own_folder(linked_root, "outputs") == linked_root / "outputs"


def test_reading_a_run_file_refuses_a_link_and_a_fifo(tmp_path: Path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"secret": 1}')
    (tmp_path / "stages.json").symlink_to(secret)
    with pytest.raises(RunFolderError, match="symbolic link"):
        read_json(tmp_path / "stages.json", follow_symlinks=False)
    assert read_json(tmp_path / "stages.json") == {"secret": 1}  # a user's own file may be a link
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(RunFolderError, match="not a regular file"):
        read_regular_text(tmp_path / "fifo")  # refused at once, never blocks
    with pytest.raises(FileNotFoundError):
        read_regular_text(tmp_path / "absent")


def test_links_in_a_run_folder_are_named(tmp_path: Path):
    run = tmp_path / "run"
    (run / "outputs" / "classifier" / "perturbed-abc").mkdir(parents=True)
    (run / "outputs" / "classifier" / "test").mkdir()
    (run / "outputs" / "classifier" / "test" / "logits.npy").write_bytes(b"x")
    (run / "outputs" / "classifier" / "test.npz").write_bytes(b"x")  # an older version's: never read
    check_run_links(run)
    target = tmp_path / "elsewhere"
    target.mkdir()
    places = (
        "outputs/classifier/perturbed-abc",
        "outputs/classifier",
        "outputs",
        "report",
        "run.json",
        "outputs/classifier/test",  # a set's folder: numpy would map its arrays through the link
        "outputs/classifier/test/logits.npy",  # one array of a set
        "outputs/classifier/far",
    )
    for place in places:
        path = run / place
        saved = tmp_path / "saved"
        if path.is_dir() or path.is_file():
            path.rename(saved)
        path.symlink_to(target, target_is_directory=True)
        with pytest.raises(RunFolderError, match="symbolic link") as caught:
            check_run_links(run)
        assert place.rsplit("/", 1)[-1] in str(caught.value)
        path.unlink()
        if saved.exists():
            saved.rename(path)


# ------------------------------------------------------------------------------------- the page
def test_the_page_copies_no_linked_figure_and_reads_no_linked_results(tmp_path: Path):
    run = make_run(tmp_path / "runs", 0)
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"TOP-SECRET-bytes")
    (run / "report" / "roc_msp.png").unlink()
    (run / "report" / "roc_msp.png").symlink_to(secret)
    page = write_leaderboard_page([run], tmp_path / "page")
    files = [p for p in page.parent.rglob("*") if p.is_file()]
    assert not any(b"TOP-SECRET" in p.read_bytes() for p in files)
    assert any(p.name == "auroc_bars.png" for p in files) and not any(p.name == "roc_msp.png" for p in files)

    linked = make_run(tmp_path / "runs", 1, report=False)
    theirs = tmp_path / "their_results.csv"
    shutil.copyfile(linked / "results.csv", theirs)
    (linked / "results.csv").unlink()
    (linked / "results.csv").symlink_to(theirs)
    with pytest.raises(RunFolderError, match="symbolic link"):
        load_run_rows(linked)

    (run / "report").rename(tmp_path / "report_elsewhere")
    (run / "report").symlink_to(tmp_path / "report_elsewhere", target_is_directory=True)
    shutil.rmtree(tmp_path / "page")
    page = write_leaderboard_page([run], tmp_path / "page")
    assert "symbolic link: not followed" in page.read_text()
    assert not (page.parent / "figures").exists()


# ------------------------------------------------------------------------------- a finished run
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paths")
    (root / "tiny.yaml").write_text(TINY_BENCHMARK)
    (root / "recipe.yaml").write_text(TINY_RECIPE)
    result = runner.invoke(app, _bench(root, root / "run"))
    assert result.exit_code == 0, result.output
    return root


def _bench(root: Path, out: Path) -> list[str]:
    return ["bench", "--benchmark", str(root / "tiny.yaml"), "--recipe", str(root / "recipe.yaml"),
            "--out", str(out), "--post", "msp,odin", "--device", "cpu", "--no-report", "--quiet"]  # fmt: skip


@pytest.fixture
def copy(finished: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(finished, root, symlinks=True)
    return root


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("place", ["outputs", "outputs/classifier", "perturbed"])
def test_a_rerun_never_writes_through_a_linked_folder(copy: Path, tmp_path: Path, place: str):
    run = copy / "run"
    folder = next((run / "outputs").glob("classifier/perturbed-*")) if place == "perturbed" else run / place
    target = tmp_path / "elsewhere"
    target.mkdir()
    shutil.rmtree(folder)
    folder.symlink_to(target, target_is_directory=True)
    before = _files(run)
    result = runner.invoke(app, _bench(copy, run))
    assert result.exit_code == EXIT_RUN_FOLDER, result.output
    message = " ".join(result.output.split())
    assert "symbolic link" in message and folder.name in message and "remove it" in message
    assert not list(target.iterdir()) and _files(run) == before


def test_report_refuses_a_linked_report_folder_and_reads_no_linked_outputs(copy: Path, tmp_path: Path):
    run = copy / "run"
    mine = tmp_path / "my_paper"
    mine.mkdir()
    (mine / "report.md").write_text("my own report\n")
    (run / "report").symlink_to(mine, target_is_directory=True)
    result = runner.invoke(app, ["report", str(run), "--quiet"])
    assert result.exit_code == EXIT_RUN_FOLDER, result.output
    assert "symbolic link" in result.output and "--out" in " ".join(result.output.split())
    assert _files(mine) == ["report.md"] and (mine / "report.md").read_text() == "my own report\n"
    (run / "report").unlink()
    shutil.move(str(run / "outputs"), tmp_path / "outputs_copy")
    (run / "outputs").symlink_to(tmp_path / "outputs_copy", target_is_directory=True)
    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "rep"), "--quiet"])
    assert result.exit_code == EXIT_RUN_FOLDER and "outputs" in result.output, result.output


def test_a_linked_report_md_is_replaced_not_written_through(copy: Path, tmp_path: Path):
    run = copy / "run"
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    (run / "report").mkdir()
    (run / "report" / "report.md").symlink_to(notes)
    result = runner.invoke(app, ["report", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    assert notes.read_text() == "my notes\n" and not (run / "report" / "report.md").is_symlink()
