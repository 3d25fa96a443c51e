"""The adapter inside the real OpenOOD v1.5: its Evaluator, its MSP, its ResNet18_32x32 and best.ckpt.

Skipped unless OpenOOD imports. It is not on PyPI: put its source folder (the one that holds
``openood/``) and its import-time dependencies on PYTHONPATH, e.g.
``PYTHONPATH=.:/tmp/openood_src:/tmp/openood_deps``; ``benchmarks/openood_interop.py`` lists the
packages (NumPy < 2 among them: OpenOOD imports imgaug 0.4.0).

Nothing is downloaded: each test writes a CIFAR-10-shaped OpenOOD data root of tiny PNGs, laid out
as OpenOOD's ``data_setup`` / ``get_id_ood_dataloader`` read it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dfb_ood.harness.metrics import aupr_in, aupr_out, auroc, fpr_at_tpr, id_accuracy
from dfb_ood.networks import create_network
from dfb_ood.postprocessors import openood_adapter
from dfb_ood.postprocessors.openood_adapter import (
    OpenOODPostprocessor,
    openood_base_postprocessor,
    openood_postprocessor,
)
from dfb_ood.postprocessors.registry import create

try:
    BasePostprocessor = openood_base_postprocessor()
    from openood.evaluation_api import Evaluator
    from openood.networks.resnet18_32x32 import ResNet18_32x32
except ImportError as err:
    pytest.skip(f"OpenOOD v1.5 is not importable: {err}", allow_module_level=True)

K = 10  # cifar10, as OpenOOD's DATA_INFO says
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # OpenOOD's CIFAR-10 test normalisation
# imglist stem -> (folder under images_classic/, images, ID or not, brightness shift of the set)
SETS = {
    "train_cifar10": ("cifar10/train", 20, True, 0),
    "val_cifar10": ("cifar10/val", 20, True, 0),
    "test_cifar10": ("cifar10/test", 30, True, 0),
    "test_cifar10c": ("cifar10c/test", 2, True, 0),
    "val_tin": ("tin/val", 10, False, 25),
    "test_cifar100": ("cifar100/test", 15, False, 10),
    "test_tin": ("tin/test", 15, False, 25),
    "test_mnist": ("mnist/test", 15, False, -70),
    "test_svhn": ("svhn/test", 15, False, -30),
    "test_texture": ("texture/test", 15, False, 45),
    "test_places365": ("places365/test", 15, False, 70),
}
ROWS = {
    "near": {"cifar100": "test_cifar100", "tin": "test_tin"},
    "far": {
        "mnist": "test_mnist",
        "svhn": "test_svhn",
        "texture": "test_texture",
        "places365": "test_places365",
    },
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("openood_data")
    rng = np.random.default_rng(0)
    (root / "benchmark_imglist" / "cifar10").mkdir(parents=True)
    paths = {}
    for stem, (folder, count, is_id, shift) in SETS.items():
        (root / "images_classic" / folder).mkdir(parents=True, exist_ok=True)
        lines, paths[stem] = [], []
        for i in range(count):
            label = i % K if is_id else -1
            tint = np.array([label % 3, (label // 3) % 3, label % 2]) * 25.0 if is_id else 0.0
            pixels = rng.normal(120 + shift + rng.normal(0, 30) + tint, 35, size=(32, 32, 3))
            path = root / "images_classic" / folder / f"{i:03d}.png"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
            lines.append(f"{folder}/{path.name} {label}")
            paths[stem].append(path)
        (root / "benchmark_imglist" / "cifar10" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return root, paths


class OpenOODStyleNet(nn.Module):
    """OpenOOD's network interface (``return_feature``, ``get_fc``) on one conv and a linear head."""

    def __init__(self, outputs: int, background_bias: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, outputs)
        with torch.no_grad():
            self.fc.bias[-1] += background_bias

    def forward(self, x, return_feature=False):
        feature = F.relu(self.conv(x)).mean(dim=(2, 3))
        logits = self.fc(feature)
        return (logits, feature) if return_feature else logits

    def get_fc(self):
        return self.fc.weight.detach().numpy(), self.fc.bias.detach().numpy()


def logits_of(net: nn.Module, paths: list[Path]) -> torch.Tensor:
    """Float64 logits of images decoded here with PIL (not through OpenOOD's loaders)."""
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in paths]) / 255.0
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(
        STD
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        return net(x).double()


def zscored_energy_plus_background(logits: dict[str, torch.Tensor], bg_column: int) -> dict[str, np.ndarray]:
    """energy_dfbz written out: z(logsumexp of the K class logits) + z(background), stats on ID-val."""
    classes = [c for c in range(K + 1) if c != bg_column]
    fg = {s: torch.logsumexp(v[:, classes], dim=1) for s, v in logits.items()}
    bg = {s: v[:, bg_column] for s, v in logits.items()}
    f_mu, f_sd = fg["val_cifar10"].mean(), fg["val_cifar10"].std(unbiased=False)
    b_mu, b_sd = bg["val_cifar10"].mean(), bg["val_cifar10"].std(unbiased=False)
    return {s: ((fg[s] - f_mu) / f_sd + (bg[s] - b_mu) / b_sd).numpy() for s in logits}


def run_evaluator(net: nn.Module, name: str, root: Path):
    """OpenOOD's Evaluator with our detector ``name``; returns it, its table and the ID test (pred, label)."""
    postprocessor = openood_postprocessor(create(name))
    evaluator = Evaluator(
        net, id_name="cifar10", data_root=str(root), postprocessor=postprocessor, batch_size=8, num_workers=0
    )
    # eval_acc moves batches with .cuda(); hand it the ID test predictions instead, as it caches its own.
    pred, _, label = postprocessor.inference(net, evaluator.dataloader_dict["id"]["test"])
    evaluator.scores["id_preds"] = torch.from_numpy(pred)
    evaluator.scores["id_labels"] = torch.from_numpy(label)
    return evaluator, evaluator.eval_ood(progress=False), pred, label


def test_evaluator_refuses_the_plain_adapter_and_accepts_the_native_one(tmp_path):
    net = OpenOODStyleNet(K)
    with pytest.raises(TypeError, match="BasePostprocessor"):
        Evaluator(
            net, id_name="cifar10", data_root=str(tmp_path), postprocessor=OpenOODPostprocessor(create("msp"))
        )
    native = openood_postprocessor(create("energy_dfbz"))
    assert isinstance(native, BasePostprocessor) and isinstance(native, OpenOODPostprocessor)
    assert native.background and native.config is None and not native.APS_mode
    assert type(native) is openood_adapter.NativeOpenOODPostprocessor
    assert type(pickle.loads(pickle.dumps(native))) is type(native)


@pytest.mark.parametrize("name", ["msp", "energy", "energy_dfbz"])
def test_evaluator_numbers_equal_our_metrics_on_the_scores_it_holds(data_root, name):
    root, paths = data_root
    dfb = name.endswith("_dfbz")
    net = OpenOODStyleNet(K + dfb, background_bias=8.0 if dfb else 0.0).eval()
    evaluator, table, pred, label = run_evaluator(net, name, root)

    id_conf = evaluator.scores["id"]["test"][1]
    held = {"test_cifar10": id_conf}
    flipped_gap = 0.0
    for split, rows in ROWS.items():
        means = []
        for row, stem in rows.items():
            held[stem] = ood_conf = evaluator.scores["ood"][split][row][1]
            ours = [
                fpr_at_tpr(id_conf, ood_conf, 0.95, convention="openood"),
                auroc(id_conf, ood_conf),
                aupr_in(id_conf, ood_conf, method="trapezoid"),
                aupr_out(id_conf, ood_conf, method="trapezoid"),
            ]
            theirs = table.loc[row, ["FPR@95", "AUROC", "AUPR_IN", "AUPR_OUT"]].to_numpy(dtype=float) / 100
            np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-12, err_msg=f"{name} on {row}")
            flipped_gap = max(flipped_gap, abs(theirs[1] - (1 - ours[1])))
            means.append(ours)
        np.testing.assert_allclose(
            table.loc[f"{split}ood"].iloc[:4] / 100, np.mean(means, axis=0), atol=1e-12
        )
    # OpenOOD ranks higher conf as ID, as we do: had it flipped, AUROC would read 1 - ours.
    assert flipped_gap > 0.05
    assert np.allclose(table["ACC"], 100 * id_accuracy(pred, label))

    # The scores themselves, against the network's logits on images decoded here.
    logits = {stem: logits_of(net, paths[stem]) for stem in held}
    if name == "msp":
        expected = {s: v.softmax(dim=1).max(dim=1).values.numpy() for s, v in logits.items()}
        base = BasePostprocessor(None)  # OpenOOD's own MSP: softmax max over the logits
        their_msp = [base.postprocess(net, b["data"])[1] for b in evaluator.dataloader_dict["id"]["test"]]
        np.testing.assert_allclose(id_conf, torch.cat(their_msp).numpy(), rtol=1e-6, atol=1e-7)
    elif name == "energy":
        expected = {s: torch.logsumexp(v, dim=1).numpy() for s, v in logits.items()}
    else:
        logits["val_cifar10"] = logits_of(net, paths["val_cifar10"])
        expected = zscored_energy_plus_background(logits, bg_column=K)
        wrong = zscored_energy_plus_background(logits, bg_column=0)  # e.g. background taken as first logit
        assert max(np.max(np.abs(held[s] - wrong[s])) for s in held) > 0.1
        assert (logits["test_cifar10"].argmax(dim=1) == K).all()  # the background logit dominates...
        assert pred.max() < K  # ...yet predictions are over the K classes only
    for stem, conf in held.items():
        np.testing.assert_allclose(conf, expected[stem], rtol=1e-4, atol=1e-4, err_msg=f"{name} on {stem}")


def test_openood_best_ckpt_loads_into_our_resnet18_32x32(tmp_path):
    torch.manual_seed(1)
    theirs = ResNet18_32x32(num_classes=K)
    with torch.no_grad():  # eval-mode BatchNorm that is not the identity, so a swapped statistic shows
        for module in theirs.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    theirs.eval()
    path = tmp_path / "best.ckpt"
    torch.save(theirs.state_dict(), path)  # what OpenOOD's BaseRecorder.save_model writes
    ours = create_network("resnet18_32x32", K, weights=path, load_head="require").eval()
    dfb = create_network("resnet18_32x32", K, background=True, weights=path).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        their_logits, their_features = theirs(x, return_feature=True)
        fmap = ours.forward_features(x)
        torch.testing.assert_close(ours.forward_head(fmap), their_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            ours.forward_head(fmap, pre_logits=True), their_features, rtol=1e-5, atol=1e-5
        )
        dfb_logits = dfb(x)
    torch.testing.assert_close(dfb_logits[:, :K], their_logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(dfb_logits[:, K], torch.zeros(4))  # a K-class head fills the K rows; background 0
