"""ODIN (Liang et al., ICLR 2018): temperature-scaled max softmax of a slightly perturbed input.

The perturbation needs gradients through the network, so unlike the other detectors ODIN cannot
work on cached outputs alone: the pipeline calls :meth:`ODIN.infer` per batch to produce the logits,
then :meth:`ODIN.score` on them. With ``noise == 0`` (the DFB release's setting) plain logits suffice
and :attr:`needs_network` is False.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import log_softmax
from dfb_ood.postprocessors.base import FusionKind, NetworkPassDetector, Outputs


class ODIN(NetworkPassDetector):
    """Score = ``max_c softmax(logits / T)_c`` of the logits it is given (those of the perturbed input).

    The input step is ``x' = x - noise * sign(-grad_x log max_c softmax(f(x) / T)_c) / std_c``, i.e. a
    step that raises the network's confidence, with the sign divided per channel by the
    normalisation std so that ``noise`` is measured in un-normalised pixel units (as OpenOOD does).
    Two details differ from OpenOOD's code on purpose:

    - ``torch.sign`` leaves inputs with an exactly zero gradient unperturbed, where OpenOOD's
      ``ge(grad, 0)`` pushes them by +noise; a zero gradient carries no direction. (pytorch-ood also
      uses ``sign``.)
    - The loss is summed over the batch, not averaged: the sign is the same, but per-sample
      gradients cannot underflow to zero for large batches at large T, and each sample's step does
      not depend on which batch it came in.
    """

    name: ClassVar[str] = "odin"
    fusion_kind: ClassVar[FusionKind] = "softmax"
    wiring: ClassVar[tuple[str, ...]] = ("input_std",)  # the pipeline's, from the benchmark's normalisation

    def __init__(
        self,
        temperature: float = 1000.0,
        noise: float = 0.0014,
        input_std: tuple[float, ...] = (1.0, 1.0, 1.0),
    ) -> None:
        if not temperature > 0:
            raise InputError(f"ODIN temperature must be positive, got {temperature}")
        if not (np.isfinite(noise) and noise >= 0):
            raise InputError(f"ODIN noise must be a finite value >= 0, got {noise}")
        std = tuple(float(s) for s in np.atleast_1d(np.asarray(input_std, dtype=np.float64)))
        if len(std) == 0 or not all(np.isfinite(s) and s > 0 for s in std):
            raise InputError(f"ODIN input_std must hold positive per-channel stds, got {input_std}")
        self.temperature = float(temperature)
        self.noise = float(noise)
        self.input_std = std

    @property
    def needs_network(self) -> bool:
        """Only a non-zero perturbation needs gradients, hence its own forward passes."""
        return self.noise != 0

    def _score(self, outputs: Outputs) -> np.ndarray:
        return np.exp(np.max(log_softmax(outputs.logits, self.temperature), axis=1))

    def perturb(
        self, network: torch.nn.Module, images: torch.Tensor, num_classes: int | None = None
    ) -> torch.Tensor:
        """The perturbed input ``x'`` (detached, same shape, dtype and device as ``images``)."""
        return self._perturb(network, images, num_classes)[0]

    def infer(
        self, network: torch.nn.Module, images: torch.Tensor, num_classes: int | None = None
    ) -> torch.Tensor:
        """Logits of the perturbed input, detached, with as many columns as the network outputs.

        With ``num_classes = K`` the gradient sees only the first K logits, and only those columns
        come from the perturbed input; columns >= K (the DFB background logit) are the clean
        image's, so the perturbation, tuned to raise class confidence, cannot shift the background
        score. The network's mode is left as it is and its parameters collect no gradients.
        """
        if num_classes is not None and num_classes < 1:
            raise InputError(f"num_classes must be a positive number of classes, got {num_classes}")
        if self.noise == 0:
            with torch.no_grad():
                logits = network(images)
            self._check_columns(logits, num_classes)
            return logits.detach()
        x_hat, clean = self._perturb(network, images, num_classes)
        with torch.no_grad():
            perturbed = network(x_hat).detach()
        if num_classes is None:
            return perturbed
        return torch.cat([perturbed[:, :num_classes], clean[:, num_classes:]], dim=1)

    def _perturb(
        self, network: torch.nn.Module, images: torch.Tensor, num_classes: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x', detached clean logits of x); the clean logits come free with the gradient pass."""
        # Callers may hold inference mode or no_grad (evaluation loops do); the input gradient needs
        # neither, and inference tensors cannot enter autograd, hence the clone.
        with torch.inference_mode(False), torch.enable_grad():
            x = images.clone() if torch.is_inference(images) else images.detach()
            x = x.detach().requires_grad_(True)
            logits = network(x)
            self._check_columns(logits, num_classes)
            head = logits if num_classes is None else logits[:, :num_classes]
            # -log max softmax(f(x)/T) is the cross-entropy with the predicted class
            loss = -torch.log_softmax(head / self.temperature, dim=1).max(dim=1).values.sum()
            (grad,) = torch.autograd.grad(loss, x)
        step = torch.sign(grad) / self._std_like(x)
        x_hat = x.detach() - self.noise * step
        return x_hat, logits.detach()

    def _std_like(self, x: torch.Tensor) -> torch.Tensor | float:
        if len(set(self.input_std)) == 1:
            return self.input_std[0]
        if x.ndim < 2 or x.shape[1] != len(self.input_std):
            raise InputError(
                f"ODIN input_std has {len(self.input_std)} channel(s) but the images have shape "
                f"{tuple(x.shape)} (channels are dim 1)"
            )
        std = torch.tensor(self.input_std, dtype=x.dtype, device=x.device)
        return std.view(1, -1, *([1] * (x.ndim - 2)))

    @staticmethod
    def _check_columns(logits: torch.Tensor, num_classes: int | None) -> None:
        if logits.ndim != 2:
            raise InputError(f"ODIN expects (N, C) logits from the network, got shape {tuple(logits.shape)}")
        if num_classes is not None and num_classes > logits.shape[1]:
            raise InputError(f"num_classes={num_classes} but the network outputs {logits.shape[1]} logits")
