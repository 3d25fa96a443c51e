"""Our detectors inside OpenOOD v1.5's own ``Evaluator``, and OpenOOD's ``best.ckpt`` in our loader.

Three checks, no download, CPU only (about 30 s on 2 cores, half of it importing OpenOOD):

1. A tiny CIFAR-10-shaped OpenOOD data root is written to a temporary folder, laid out as
   OpenOOD's ``data_setup`` / ``get_id_ood_dataloader`` read it (``benchmark_imglist/cifar10/*.txt``,
   ``images_classic/<dataset>/``), so OpenOOD finds every set and downloads nothing.
2. For each detector, OpenOOD's ``Evaluator`` runs it through ``openood_postprocessor(detector)``
   on a small OpenOOD-style network (``net(x, return_feature=True)``, ``get_fc()``): K logits for
   the plain detectors, K+1 (last = background) for the ``_dfbz`` ones. Every number in its table
   is recomputed with ``harness.metrics`` (OpenOOD's FPR convention, trapezoid AUPR) from the
   scores the Evaluator holds, and those scores are recomputed from the network's logits with
   plain torch on images decoded here, not through OpenOOD's loaders.
3. OpenOOD's ``ResNet18_32x32`` (random weights, random BatchNorm statistics) is saved as
   ``best.ckpt`` the way OpenOOD's recorder saves it (``torch.save`` of the plain state dict),
   loaded with ``create_network("resnet18_32x32", 10, weights=...)``, and both networks' logits
   and features are compared on a random batch.

The record goes to ``docs/results/openood_interop.json`` (atomic write).

OpenOOD is not on PyPI and its package imports far more than the evaluator needs. The setup this
record was made with (the commit is not inside an exported tree, so pass it)::

    git --git-dir=<mirror of Jingkang50/OpenOOD> archive HEAD | tar -x -C /tmp/openood_src
    pip install --no-deps --target /tmp/openood_deps numpy==1.26.4 "pandas>=2.2,<3" pytz \\
        opencv-python-headless==4.11.0.86 imgaug six faiss-cpu diffdist "statsmodels<0.15" patsy \\
        gdown requests urllib3 certifi charset-normalizer beautifulsoup4 soupsieve \\
        foolbox eagerpy GitPython gitdb smmap
    pip install --no-deps --target /tmp/ood_build "Cython<3.1"
    PYTHONPATH=/tmp/ood_build:/tmp/openood_deps pip install --no-build-isolation --no-deps \\
        --target /tmp/openood_deps libmr
    PYTHONPATH=.:/tmp/openood_src:/tmp/openood_deps python benchmarks/openood_interop.py \\
        --openood-commit <sha>

NumPy < 2 is needed because OpenOOD imports imgaug 0.4.0 (the last release), which reads
``np.sctypes``; pandas < 3 and OpenCV 4.11 are the newest that accept NumPy 1.26. The other
packages are what ``from openood.evaluation_api import Evaluator`` imports on its way (libmr for
OpenMax, statsmodels for AdaScale, foolbox for the attack datasets, gdown for downloads).
"""

from __future__ import annotations

import os

# Sleeping OpenMP waits, set before torch loads its runtime (see harness/__init__.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import importlib.metadata
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_config import ROOT, code_version, machine_environment  # benchmarks/ is the script's folder
from torch import nn

from dfb_ood.harness.io import write_json
from dfb_ood.harness.metrics import aupr_in, aupr_out, auroc, fpr_at_tpr, id_accuracy
from dfb_ood.networks import create_network
from dfb_ood.postprocessors.openood_adapter import openood_base_postprocessor, openood_postprocessor
from dfb_ood.postprocessors.registry import create

NUM_CLASSES = 10
# CIFAR-10's normalisation in OpenOOD's default test preprocessor (pre_size = img_size = 32).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# OpenOOD's Evaluator table: our metric functions for each of its columns (it reports percent).
COLUMNS = ("FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT")
# (imglist file stem, image folder under images_classic/, images, is ID, brightness shift). The
# OOD sets differ from ID by a mean-brightness shift of various sizes, so their metrics differ.
SETS = (
    ("train_cifar10", "cifar10/train", 100, True, 0),
    ("val_cifar10", "cifar10/val", 60, True, 0),
    ("test_cifar10", "cifar10/test", 100, True, 0),
    ("test_cifar10c", "cifar10c/test", 10, True, 0),
    ("val_tin", "tin/val", 40, False, 25),
    ("test_cifar100", "cifar100/test", 60, False, 10),
    ("test_tin", "tin/test", 60, False, 25),
    ("test_mnist", "mnist/test", 60, False, -70),
    ("test_svhn", "svhn/test", 60, False, -30),
    ("test_texture", "texture/test", 60, False, 45),
    ("test_places365", "places365/test", 60, False, 70),
)
# Evaluator rows -> the imglist whose scores they are.
OOD_ROWS = {
    "near": {"cifar100": "test_cifar100", "tin": "test_tin"},
    "far": {
        "mnist": "test_mnist",
        "svhn": "test_svhn",
        "texture": "test_texture",
        "places365": "test_places365",
    },
}
# Detector -> background column or not (a DFB net has K+1 logits, the last one background).
DETECTORS = {"msp": False, "energy": False, "knn": False, "msp_dfbz": True, "energy_dfbz": True}


def write_data_root(root: Path, seed: int = 0) -> dict[str, list[tuple[Path, int]]]:
    """A CIFAR-10-shaped OpenOOD data root of tiny PNGs; returns each list's (image path, label)."""
    rng = np.random.default_rng(seed)
    lists_dir = root / "benchmark_imglist" / "cifar10"
    lists_dir.mkdir(parents=True)
    written: dict[str, list[tuple[Path, int]]] = {}
    for stem, folder, count, is_id, shift in SETS:
        image_dir = root / "images_classic" / folder
        image_dir.mkdir(parents=True, exist_ok=True)
        lines, entries = [], []
        for index in range(count):
            label = index % NUM_CLASSES if is_id else -1
            # Class-dependent colour (ID) plus a per-image brightness, so sets overlap partly.
            tint = np.array([label % 3, (label // 3) % 3, label % 2], dtype=np.float64) * 25 if is_id else 0
            level = 120 + shift + rng.normal(0, 30)
            pixels = rng.normal(level + tint, 35, size=(32, 32, 3))
            path = image_dir / f"{index:04d}.png"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
            lines.append(f"{folder}/{path.name} {label}")
            entries.append((path, label))
        (lists_dir / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        written[stem] = entries
    return written


class TinyOpenOODNet(nn.Module):
    """OpenOOD's network interface on a 3x3 conv, ReLU, global average pool and a linear head.

    ``background_bias`` is added to the last logit of a DFB net (K+1 outputs), large enough that an
    argmax over all K+1 logits would always pick the background: class predictions must skip it.
    """

    def __init__(self, outputs: int, seed: int = 0, background_bias: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, outputs)
        with torch.no_grad():
            self.fc.bias[-1] += background_bias

    def forward(self, x: torch.Tensor, return_feature: bool = False) -> torch.Tensor | tuple:
        feature = F.relu(self.conv(x)).mean(dim=(2, 3))
        logits = self.fc(feature)
        return (logits, feature) if return_feature else logits

    def get_fc(self) -> tuple[np.ndarray, np.ndarray]:
        return self.fc.weight.detach().cpu().numpy(), self.fc.bias.detach().cpu().numpy()


def decoded_batch(entries: list[tuple[Path, int]]) -> torch.Tensor:
    """The images as OpenOOD's CIFAR-10 test preprocessor should give them, decoded here with PIL."""
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) for path, _ in entries])
    x = torch.from_numpy(pixels / 255.0).permute(0, 3, 1, 2)
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def reference_scores(name: str, net: TinyOpenOODNet, lists: dict[str, list[tuple[Path, int]]]) -> dict:
    """Each list's expected score, from the network's logits in plain torch (not our detectors).

    msp: the max softmax; energy: logsumexp of the logits; ``_dfbz``: the same on the first K logits,
    z-scored with the ID-val mean and (population) standard deviation, plus the background logit
    z-scored the same way. knn is left to the adapter test (its reference is our own knn).
    """
    with torch.no_grad():
        logits = {stem: net(decoded_batch(entries)).double() for stem, entries in lists.items()}

    def base(values: torch.Tensor, base_name: str) -> torch.Tensor:
        if base_name == "msp":
            return values.softmax(dim=1).max(dim=1).values
        return torch.logsumexp(values, dim=1)

    if not name.endswith("_dfbz"):
        return {stem: base(values, name).numpy() for stem, values in logits.items()}
    base_name = name.removesuffix("_dfbz")
    val = logits["val_cifar10"]
    fg_val, bg_val = base(val[:, :NUM_CLASSES], base_name), val[:, NUM_CLASSES]
    stats = (fg_val.mean(), fg_val.std(unbiased=False), bg_val.mean(), bg_val.std(unbiased=False))
    out = {}
    for stem, values in logits.items():
        fg, bg = base(values[:, :NUM_CLASSES], base_name), values[:, NUM_CLASSES]
        out[stem] = ((fg - stats[0]) / stats[1] + (bg - stats[2]) / stats[3]).numpy()
    return out


def our_row(id_conf: np.ndarray, ood_conf: np.ndarray) -> dict[str, float]:
    """Our metrics for one (ID, OOD) pair in OpenOOD's units (percent) and conventions."""
    return {
        "FPR@95": 100 * fpr_at_tpr(id_conf, ood_conf, 0.95, convention="openood"),
        "AUROC": 100 * auroc(id_conf, ood_conf),
        "AUPR_IN": 100 * aupr_in(id_conf, ood_conf, method="trapezoid"),
        "AUPR_OUT": 100 * aupr_out(id_conf, ood_conf, method="trapezoid"),
    }


def run_detector(name: str, background: bool, root: Path, lists: dict) -> dict:
    """OpenOOD's Evaluator on one detector; its table, ours, and the score check."""
    from openood.evaluation_api import Evaluator

    kwargs = {"k": 5} if name == "knn" else {}
    net = TinyOpenOODNet(NUM_CLASSES + int(background), background_bias=8.0 if background else 0.0).eval()
    postprocessor = openood_postprocessor(create(name, **kwargs))
    chatter = io.StringIO()  # OpenOOD prints progress and tables; kept out of this script's output
    with contextlib.redirect_stdout(chatter):
        evaluator = Evaluator(
            net,
            id_name="cifar10",
            data_root=str(root),
            config_root=None,
            postprocessor=postprocessor,
            batch_size=16,
            shuffle=False,
            num_workers=0,
        )
        # Evaluator.eval_acc moves batches with .cuda(); without CUDA, hand it the ID test predictions
        # (our K-class argmax) the way it caches its own, so that eval_ood never needs a GPU.
        pred, _, label = postprocessor.inference(net, evaluator.dataloader_dict["id"]["test"])
        evaluator.scores["id_preds"] = torch.from_numpy(pred)
        evaluator.scores["id_labels"] = torch.from_numpy(label)
        table = evaluator.eval_ood(fsood=False, progress=False)

    id_conf = evaluator.scores["id"]["test"][1]
    ours: dict[str, dict[str, float]] = {}
    held: dict[str, np.ndarray] = {"test_cifar10": id_conf}
    for split, rows in OOD_ROWS.items():
        for row, stem in rows.items():
            held[stem] = evaluator.scores["ood"][split][row][1]
            ours[row] = our_row(id_conf, held[stem])
        mean = {c: float(np.mean([ours[row][c] for row in rows])) for c in COLUMNS}
        ours[f"{split}ood"] = mean
    accuracy = 100 * id_accuracy(pred, label)
    for row in ours:
        ours[row]["ACC"] = accuracy
    theirs = {row: {c: float(table.loc[row, c]) for c in (*COLUMNS, "ACC")} for row in table.index}
    metric_diff = max(abs(theirs[r][c] - ours[r][c]) for r in ours for c in (*COLUMNS, "ACC"))

    record = {
        "background": background,
        "network_outputs": NUM_CLASSES + int(background),
        "openood_table_percent": theirs,
        "our_metrics_percent": ours,
        "max_abs_metric_diff_percent": metric_diff,
        "max_pred_class": int(pred.max()),
    }
    if background:
        with torch.no_grad():
            id_logits = net(decoded_batch(lists["test_cifar10"]))
        # An argmax over all K+1 outputs would predict the background here; ours is over the K classes.
        record["argmax_over_all_outputs_is_background_share"] = float(
            (id_logits.argmax(dim=1) == NUM_CLASSES).double().mean()
        )
    if name != "knn":
        expected = reference_scores(name, net, lists)
        record["max_abs_score_diff_vs_plain_torch"] = max(
            float(np.max(np.abs(held[stem] - expected[stem]))) for stem in held
        )
    if name == "msp":
        # OpenOOD's own BasePostprocessor.postprocess is MSP; compare on one ID test batch.
        base = openood_base_postprocessor()(None)
        batch = next(iter(evaluator.dataloader_dict["id"]["test"]))
        _, openood_conf = base.postprocess(net, batch["data"])
        record["max_abs_diff_vs_openood_msp"] = float(
            np.max(np.abs(openood_conf.numpy() - id_conf[: len(openood_conf)]))
        )
    return record


def check_best_ckpt(folder: Path) -> dict:
    """OpenOOD's ResNet18_32x32 saved as best.ckpt, loaded by our registry; logits and features compared."""
    from openood.networks.resnet18_32x32 import ResNet18_32x32

    torch.manual_seed(1)
    theirs = ResNet18_32x32(num_classes=NUM_CLASSES)
    with torch.no_grad():  # non-trivial eval-mode BatchNorm, so a swapped statistic would show
        for module in theirs.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    theirs.eval()
    path = folder / "best.ckpt"
    torch.save(theirs.state_dict(), path)  # what OpenOOD's BaseRecorder.save_model writes
    ours = create_network("resnet18_32x32", NUM_CLASSES, weights=path, load_head="require").eval()
    dfb = create_network("resnet18_32x32", NUM_CLASSES, background=True, weights=path).eval()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        their_logits, their_features = theirs(x, return_feature=True)
        fmap = ours.forward_features(x)
        our_logits, our_features = ours.forward_head(fmap), ours.forward_head(fmap, pre_logits=True)
        dfb_logits = dfb(x)
    logit_diff = float((their_logits - our_logits).abs().max())
    feature_diff = float((their_features - our_features).abs().max())
    dfb_diff = float((their_logits - dfb_logits[:, :NUM_CLASSES]).abs().max())
    tolerance = 1e-4
    return {
        "openood_class": "openood.networks.resnet18_32x32.ResNet18_32x32",
        "saved_as": "torch.save(net.state_dict(), 'best.ckpt')",
        "loaded_with": "create_network('resnet18_32x32', 10, weights=path, load_head='require')",
        "tensors": len(theirs.state_dict()),
        "max_abs_logit_diff": logit_diff,
        "max_abs_feature_diff": feature_diff,
        "dfb_net_class_logits_max_abs_diff": dfb_diff,
        "dfb_net_background_logit_max_abs": float(dfb_logits[:, NUM_CLASSES].abs().max()),
        "tolerance": tolerance,
        "passed": max(logit_diff, feature_diff, dfb_diff) <= tolerance
        and float(dfb_logits[:, NUM_CLASSES].abs().max()) == 0.0,
    }


def openood_commit(given: str | None) -> tuple[str | None, str]:
    """The OpenOOD commit and where it came from: the argument, $OPENOOD_COMMIT, or its git checkout."""
    if given:
        return given, "--openood-commit"
    if os.environ.get("OPENOOD_COMMIT"):
        return os.environ["OPENOOD_COMMIT"], "OPENOOD_COMMIT"
    import openood

    source = Path(openood.__file__).resolve().parents[1]
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, "unknown"
    return (done.stdout.strip(), f"git checkout at {source}") if done.returncode == 0 else (None, "unknown")


# What the check ran on: ours, then what OpenOOD's import chain needs (see the module docstring).
DISTRIBUTIONS = (
    "numpy",
    "torch",
    "torchvision",
    "scikit-learn",
    "scipy",
    "pandas",
    "pytz",
    "opencv-python-headless",
    "imgaug",
    "six",
    "faiss-cpu",
    "diffdist",
    "statsmodels",
    "patsy",
    "libmr",
    "gdown",
    "requests",
    "foolbox",
    "eagerpy",
    "GitPython",
)


def versions() -> dict[str, str | None]:
    """Installed versions of what the check ran on (None: not installed as a distribution)."""
    found: dict[str, str | None] = {}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openood-commit", help="OpenOOD commit the source on PYTHONPATH was exported from")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "openood_interop.json")
    args = parser.parse_args()
    try:
        openood_base_postprocessor()
    except ImportError as err:
        sys.exit(f"error: {err}")
    commit, commit_source = openood_commit(args.openood_commit)
    started = time.perf_counter()
    detectors = {}
    with tempfile.TemporaryDirectory(prefix="openood_interop_") as tmp:
        root = Path(tmp) / "data"
        lists = write_data_root(root)
        for name, background in DETECTORS.items():
            detectors[name] = run_detector(name, background, root, lists)
            rows = detectors[name]["openood_table_percent"]
            print(
                f"{name:<12} AUROC near {rows['nearood']['AUROC']:6.2f} far {rows['farood']['AUROC']:6.2f}  "
                f"max |OpenOOD - ours| {detectors[name]['max_abs_metric_diff_percent']:.2e} (percent points)"
            )
        ckpt = check_best_ckpt(Path(tmp))
    print(f"best.ckpt: max |logit diff| {ckpt['max_abs_logit_diff']:.2e}, passed {ckpt['passed']}")
    record = {
        "what": "OpenOOD v1.5's Evaluator running our detectors (openood_postprocessor) vs harness.metrics",
        "openood_commit": commit,
        "openood_commit_source": commit_source,
        "data": {
            "id_name": "cifar10",
            "sets": {stem: {"images": count, "id": is_id} for stem, _, count, is_id, _ in SETS},
            "note": "synthetic 32x32 PNGs in OpenOOD's layout; OOD sets differ by a brightness shift",
        },
        "metric_conventions": {
            "FPR@95": "fpr_at_tpr(..., convention='openood')",
            "AUPR_IN": "aupr_in(..., method='trapezoid')",
            "AUPR_OUT": "aupr_out(..., method='trapezoid')",
            "ACC": "eval_acc on ID test predictions given to it (K-class argmax); its own pass calls .cuda()",
        },
        "detectors": detectors,
        "max_abs_metric_diff_percent": max(d["max_abs_metric_diff_percent"] for d in detectors.values()),
        "best_ckpt": ckpt,
        "versions": versions(),
        "environment": machine_environment(),
        "code": code_version(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
