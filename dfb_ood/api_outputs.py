"""The Python API's forward pass: a user's torch classifier and DataLoader in, :class:`Outputs` out.

Why its own module: every detector reads :class:`~dfb_ood.postprocessors.base.Outputs` (logits,
pooled features, labels, the linear head), and a user's model is not one of this project's
networks. The features are taken as the input of the model's final ``nn.Linear`` (a forward hook,
so the model runs exactly as its author wrote it), or from a callable ``images -> (features,
logits)`` with the head given explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from dfb_ood.errors import InputError
from dfb_ood.postprocessors.base import Outputs

#: The attribute names searched, in order, for a model's final linear layer.
HEAD_NAMES: tuple[str, ...] = ("fc", "head", "classifier", "linear", "last_linear")

ForwardFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def default_device() -> torch.device:
    """CUDA when a GPU is present, else the CPU.

    Returns:
        The device :func:`collect_outputs` uses when none is given.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def find_head(model: torch.nn.Module) -> torch.nn.Linear:
    """The final linear layer of a classifier, the head whose input is the pooled feature.

    Searched in this order: an attribute named one of :data:`HEAD_NAMES` that is an ``nn.Linear``
    (or an ``nn.Sequential`` ending in one, as torchvision's ``classifier``), then the model's last
    ``nn.Linear`` module.

    Args:
        model: a torch classifier.

    Returns:
        The ``nn.Linear`` whose output is the model's logits.

    Raises:
        InputError: the model holds no ``nn.Linear`` layer.
    """
    for name in HEAD_NAMES:
        layer = getattr(model, name, None)
        if isinstance(layer, torch.nn.Sequential) and len(layer) and isinstance(layer[-1], torch.nn.Linear):
            layer = layer[-1]
        if isinstance(layer, torch.nn.Linear):
            return layer
    linears = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    if not linears:
        raise InputError(
            f"{type(model).__name__} has no nn.Linear head (looked for {', '.join(HEAD_NAMES)} and any "
            "nn.Linear); pass forward=images -> (features, logits) and head=(weight, bias) instead"
        )
    return linears[-1]


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``images`` or ``(images, labels, ...)`` from one DataLoader batch."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, Sequence) and batch and isinstance(batch[0], torch.Tensor):
        labels = batch[1] if len(batch) > 1 else None
        return batch[0], torch.as_tensor(labels) if labels is not None else None
    raise InputError(
        f"a DataLoader batch must be a tensor of images or (images, labels), got {type(batch).__name__}"
    )


def _as_array(value: Any) -> np.ndarray:
    return value.detach().float().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _head_arrays(head: tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    weight, bias = head
    return _as_array(weight), _as_array(bias)


def collect_outputs(
    model: torch.nn.Module | ForwardFn,
    loader: Iterable[Any],
    *,
    head: tuple[Any, Any] | None = None,
    device: str | torch.device | None = None,
    ood: bool = False,
) -> Outputs:
    """Run a classifier over a DataLoader and return what every detector reads.

    Two kinds of model are accepted. A ``torch.nn.Module`` whose logits come out of a final
    ``nn.Linear`` (found by :func:`find_head`): the features are that layer's input, captured by a
    forward hook, and the head is that layer's weight and bias. Or a callable ``images ->
    (features, logits)`` with ``head=(weight, bias)`` given explicitly. The module is moved to
    ``device`` and run in eval mode under ``torch.inference_mode``; its training mode is restored
    afterwards.

    Args:
        model: an ``nn.Module`` classifier, or a callable ``images -> (features, logits)``.
        loader: an iterable of batches (a ``DataLoader``), each ``images`` or ``(images, labels, ...)``.
            Images must be ready for the model (transformed and normalised).
        head: ``(weight (C, D), bias (C,))``, tensors or arrays; required with a callable, optional
            with a module (the found head's by default).
        device: where the model runs; CUDA when present, else the CPU.
        ood: the loader is an OOD set: labels are recorded as -1 whatever the loader yields.

    Returns:
        :class:`~dfb_ood.postprocessors.base.Outputs` with logits (N, C), features (N, D), labels
        (N,) when the loader yields them (or -1 for ``ood``), and the head.

    Raises:
        InputError: no head can be found or given, a batch has an unexpected form, or the loader is empty.
    """
    device = torch.device(device) if device is not None else default_device()
    module = model if isinstance(model, torch.nn.Module) else None
    captured: list[torch.Tensor] = []
    hook = None
    if module is not None and head is None:
        layer = find_head(module)
        head = (layer.weight, layer.bias if layer.bias is not None else torch.zeros(layer.out_features))
        hook = layer.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    elif module is None and head is None:
        raise InputError("collect_outputs with a callable needs head=(weight, bias) of its linear head")
    training = module.training if module is not None else False
    logits_parts, feature_parts, label_parts = [], [], []
    try:
        if module is not None:
            module.to(device).eval()
        with torch.inference_mode():
            for batch in loader:
                images, labels = _split_batch(batch)
                result = model(images.to(device))
                if hook is not None:
                    if not captured:
                        name = type(model).__name__
                        raise InputError(f"{name}'s head was not called; pass head=(weight, bias)")
                    logits, features = result, captured[-1]  # the last call made the logits
                    captured.clear()
                else:
                    features, logits = result
                logits_parts.append(logits.detach().float().flatten(1).cpu().numpy())
                feature_parts.append(features.detach().float().flatten(1).cpu().numpy())
                if labels is not None:
                    label_parts.append(labels.cpu().numpy())
    finally:
        if hook is not None:
            hook.remove()
        if module is not None:
            module.train(training)
    if not logits_parts:
        raise InputError("the DataLoader yielded no batches; check its dataset")
    n = sum(len(part) for part in logits_parts)
    labels_array = None
    if ood:
        labels_array = np.full(n, -1, dtype=np.int64)
    elif label_parts and len(label_parts) == len(logits_parts):
        labels_array = np.concatenate(label_parts).astype(np.int64)
    weight, bias = _head_arrays(head)
    return Outputs(
        logits=np.concatenate(logits_parts),
        features=np.concatenate(feature_parts),
        labels=labels_array,
        weight=weight,
        bias=bias,
    )
