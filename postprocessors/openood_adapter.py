"""Use any of our detectors where OpenOOD expects a postprocessor.

OpenOOD's evaluator calls ``setup(net, id_loader_dict, ood_loader_dict)`` once, then
``inference(net, loader)`` per dataset, which calls ``postprocess(net, data) -> (pred, conf)`` per
batch. Its loaders yield dicts with ``data`` and ``label``; its networks return
``(logits, features)`` from ``net(x, return_feature=True)`` and their head from ``net.get_fc()``.
The adapter turns those into :class:`Outputs`, so an OpenOOD user can drop a DFB detector into
their existing evaluation without adopting our pipeline.

OpenOOD v1.5's ``Evaluator`` accepts only instances of its own ``BasePostprocessor``. Importing
OpenOOD drags in its whole package (faiss, OpenCV, imgaug, statsmodels, pandas, foolbox, ...), so
this module never imports it: :class:`OpenOODPostprocessor` is the plain adapter, and
:func:`openood_postprocessor` builds, on first use, a subclass that is both the adapter and an
OpenOOD ``BasePostprocessor`` (also reachable as ``NativeOpenOODPostprocessor`` once OpenOOD is
importable). ``benchmarks/openood_interop.py`` runs the real ``Evaluator`` with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from dfb_ood.errors import InputError, UnknownNameError
from dfb_ood.postprocessors.base import Outputs, Postprocessor
from dfb_ood.postprocessors.dfb import DFBWrapper


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, Mapping):
        return batch["data"], batch.get("label")
    if isinstance(batch, (list, tuple)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def _head(net: nn.Module) -> tuple[np.ndarray, np.ndarray] | None:
    """The last layer's (W, b) from the conventions we know: OpenOOD's get_fc, ours, a plain fc."""
    if hasattr(net, "get_fc"):
        weight, bias = net.get_fc()
        return np.asarray(weight), np.asarray(bias)
    if hasattr(net, "head_weight"):
        return net.head_weight.detach().cpu().numpy(), net.head_bias.detach().cpu().numpy()
    fc = getattr(net, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc.weight.detach().cpu().numpy(), fc.bias.detach().cpu().numpy()
    return None


class OpenOODPostprocessor:
    """Wraps a :class:`Postprocessor` in OpenOOD's postprocessor interface.

    ``background`` says whether the network is a DFB net whose last logit is the background; by
    default it is True exactly for DFB variants whose foreground comes from the DFB net. Predicted
    classes are the argmax over the K class logits only.
    """

    def __init__(self, detector: Postprocessor, background: bool | None = None) -> None:
        self.detector = detector
        if background is None:
            background = isinstance(detector, DFBWrapper) and detector.foreground == "dfb"
        self.background = background
        self.APS_mode = False  # OpenOOD's evaluator reads this attribute: no hyper-parameter sweep here.
        self.hyperparam_search_done = True

    def _forward(self, net: nn.Module, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        wants_features = self.detector.requires_features
        if wants_features:
            try:
                logits, features = net(data, return_feature=True)
                return logits, features
            except TypeError:
                if hasattr(net, "forward_features") and hasattr(net, "forward_head"):
                    fmap = net.forward_features(data)
                    return net.forward_head(fmap), net.forward_head(fmap, pre_logits=True)
                raise TypeError(
                    f"{self.detector.name} needs pooled features, but {type(net).__name__} supports neither "
                    "net(x, return_feature=True) nor forward_features/forward_head"
                ) from None
        return net(data), None

    def _outputs(self, net: nn.Module, data: torch.Tensor, labels: torch.Tensor | None = None) -> Outputs:
        if self.detector.needs_network:
            k = None
            if self.background:
                with torch.no_grad():
                    k = int(net(data[:1]).shape[1]) - 1
            logits, features = self.detector.infer(net, data, num_classes=k), None
        else:
            with torch.no_grad():
                logits, features = self._forward(net, data)
        head = _head(net) if self.detector.requires_head else None
        return Outputs(
            logits=logits.detach().float().cpu().numpy(),
            features=None if features is None else features.detach().float().cpu().numpy(),
            labels=None if labels is None else labels.detach().cpu().numpy(),
            weight=None if head is None else head[0],
            bias=None if head is None else head[1],
            background=self.background,
        )

    def _collect(self, net: nn.Module, loader: Iterable[Any]) -> Outputs:
        parts = [self._outputs(net, *self._to_device(net, batch)) for batch in loader]
        if not parts:
            raise InputError("the data loader yielded no batches")
        has_labels = all(p.labels is not None for p in parts)
        return Outputs(
            logits=np.concatenate([p.logits for p in parts]),
            features=None if parts[0].features is None else np.concatenate([p.features for p in parts]),
            labels=np.concatenate([p.labels for p in parts]) if has_labels else None,
            weight=parts[0].weight,
            bias=parts[0].bias,
            background=self.background,
        )

    @staticmethod
    def _to_device(net: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        data, labels = _unpack(batch)
        param = next(net.parameters(), None)
        device = param.device if param is not None else data.device
        return data.to(device), labels

    def setup(
        self, net: nn.Module, id_loader_dict: Mapping[str, Any], ood_loader_dict: Mapping[str, Any]
    ) -> None:
        """Fit on ID train outputs (plus ID-val and OOD-val outputs when the dicts hold them)."""
        if "train" not in id_loader_dict:
            raise UnknownNameError("id_loader_dict needs a 'train' loader to fit the detector on")
        was_training = net.training
        net.eval()
        try:
            train = self._collect(net, id_loader_dict["train"])
            val = self._collect(net, id_loader_dict["val"]) if "val" in id_loader_dict else None
            ood_val = self._collect(net, ood_loader_dict["val"]) if "val" in ood_loader_dict else None
            self.detector.fit(train, val, ood_val)
        finally:
            net.train(was_training)

    def postprocess(self, net: nn.Module, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted class, confidence) for one batch; confidence is our score (higher = more ID)."""
        outputs = self._outputs(net, data)
        k = outputs.num_classes
        pred = torch.from_numpy(outputs.logits[:, :k].argmax(axis=1))
        conf = torch.from_numpy(self.detector.score(outputs))
        return pred, conf

    def inference(
        self, net: nn.Module, data_loader: Iterable[Any], progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """OpenOOD's (pred, conf, label) arrays over a whole loader; unlabeled batches get label -1."""
        preds, confs, labels = [], [], []
        for batch in data_loader:
            data, label = self._to_device(net, batch)
            pred, conf = self.postprocess(net, data)
            preds.append(pred.numpy())
            confs.append(conf.numpy())
            labels.append(np.full(len(pred), -1) if label is None else label.cpu().numpy())
        if not preds:
            raise InputError("the data loader yielded no batches")
        return np.concatenate(preds).astype(int), np.concatenate(confs), np.concatenate(labels).astype(int)


_OPENOOD_SETUP = (
    "put OpenOOD v1.5's source (the folder that holds openood/) and its import-time dependencies on "
    "PYTHONPATH; the docstring of benchmarks/openood_interop.py lists them"
)


def openood_base_postprocessor() -> type:
    """OpenOOD's ``BasePostprocessor`` class, imported only when asked for.

    Why on demand: ``openood.postprocessors`` imports every OpenOOD method and, through them, a
    dozen heavy packages; users of the plain adapter must not pay for that or fail on it. A failed
    import becomes an ``ImportError`` that says what to install, whatever the package chain raised
    (imgaug 0.4.0, which OpenOOD imports, raises ``AttributeError`` under NumPy 2).
    """
    try:
        from openood.postprocessors import BasePostprocessor
    except ImportError as err:
        raise ImportError(f"cannot import OpenOOD's BasePostprocessor ({err}); {_OPENOOD_SETUP}") from err
    except AttributeError as err:
        raise ImportError(
            f"OpenOOD's imports failed on a dependency's version ({err}); OpenOOD v1.5 imports imgaug 0.4.0, "
            f"which needs NumPy < 2; {_OPENOOD_SETUP}"
        ) from err
    return BasePostprocessor


@lru_cache(maxsize=1)
def _native_class() -> type[OpenOODPostprocessor]:
    """The adapter as a subclass of OpenOOD's ``BasePostprocessor``; built once, when first needed."""
    base = openood_base_postprocessor()

    class NativeOpenOODPostprocessor(OpenOODPostprocessor, base):
        """The adapter as OpenOOD's ``Evaluator`` wants it: an instance of OpenOOD's ``BasePostprocessor``.

        The adapter comes first in the method order, so ``setup`` / ``postprocess`` / ``inference``
        are ours (CPU or GPU alike, gradients allowed for ODIN); OpenOOD's base contributes the type
        and its ``config`` attribute, which is None: our detectors carry their own settings.
        """

        def __init__(self, detector: Postprocessor, background: bool | None = None) -> None:
            base.__init__(self, None)
            OpenOODPostprocessor.__init__(self, detector, background)

    # A module-level name, so that pickle finds the class through __getattr__ below.
    NativeOpenOODPostprocessor.__module__ = __name__
    NativeOpenOODPostprocessor.__qualname__ = NativeOpenOODPostprocessor.__name__
    return NativeOpenOODPostprocessor


def openood_postprocessor(detector: Postprocessor, background: bool | None = None) -> OpenOODPostprocessor:
    """``detector`` wrapped for OpenOOD's ``Evaluator(postprocessor=...)``: an OpenOOD ``BasePostprocessor``.

    Same arguments and behaviour as :class:`OpenOODPostprocessor` (``background`` says whether the
    network's last logit is a DFB background; by default it is for ``*_dfb`` / ``*_dfbz``). Raises
    ``ImportError`` naming what to put on ``PYTHONPATH`` when OpenOOD cannot be imported.

    Without CUDA, note that OpenOOD's ``Evaluator.eval_ood`` also calls ``eval_acc``, which moves
    batches with ``.cuda()`` whatever the postprocessor; set ``evaluator.scores["id_preds"]`` and
    ``["id_labels"]`` (tensors) beforehand, as ``benchmarks/openood_interop.py`` does, and it uses those.
    """
    return _native_class()(detector, background)


def __getattr__(name: str) -> Any:
    """``NativeOpenOODPostprocessor`` on demand (PEP 562), so that it imports OpenOOD only when used."""
    if name == "NativeOpenOODPostprocessor":
        return _native_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
