"""What a detector name means for a run, worked out once: its base, its DFB variant, its networks.

A name such as ``vim_dfbz`` says which base detector scores the foreground, which DFB fusion (if
any) adds the background logit, and so which network's cached outputs it reads. The pipeline,
the search and the evaluation all ask these questions of the same name; a :class:`DetectorSpec`
answers them from one parse instead of each splitting the name again.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfb_ood.postprocessors import registry

CLASSIFIER, DFB = "classifier", "dfb"


@dataclass(frozen=True)
class DetectorSpec:
    """One requested detector: ``name`` as requested, ``base`` and ``variant`` (``"_dfb"``,
    ``"_dfbz"`` or ``None``), and ``foreground``: which network a DFB variant's foreground score
    comes from (``"dfb"``, or ``"classifier"`` with the DFB net's background logit attached)."""

    name: str
    base: str
    variant: str | None
    foreground: str = DFB

    @classmethod
    def of(cls, name: str, foreground: str = DFB) -> DetectorSpec:
        """The spec of ``name``; ``foreground`` applies to DFB variants only (others read one network)."""
        base, variant = registry.split_variant(name)
        return cls(name=name, base=base, variant=variant, foreground=foreground if variant else DFB)

    @property
    def native_network(self) -> str:
        """The network the name itself implies: the DFB net for DFB variants and ``bg``."""
        return DFB if self.variant is not None or self.base in registry.STANDALONE else CLASSIFIER

    @property
    def from_classifier(self) -> bool:
        """A DFB variant scoring the classifier's foreground (``--foreground classifier``)."""
        return self.variant is not None and self.foreground == CLASSIFIER

    @property
    def network(self) -> str:
        """The network whose outputs the detector scores (the foreground's, for a DFB variant)."""
        return CLASSIFIER if self.from_classifier else self.native_network

    @property
    def networks(self) -> tuple[str, ...]:
        """Every network whose outputs the detector needs, its scoring network first."""
        return (CLASSIFIER, DFB) if self.from_classifier else (self.network,)

    @property
    def label(self) -> str:
        """How results name the network(s): ``classifier``, ``dfb`` or ``classifier+dfb``."""
        return f"{CLASSIFIER}+{DFB}" if self.from_classifier else self.network

    @property
    def overrides(self) -> dict[str, object]:
        """The detector settings the spec implies beyond the configured defaults."""
        return {"foreground": CLASSIFIER} if self.from_classifier else {}


def network_of(detector: str) -> str:
    """Which network's outputs a detector reads by its name: ``"classifier"`` or ``"dfb"``."""
    return DetectorSpec.of(detector).native_network
