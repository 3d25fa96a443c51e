"""The key of each stage: a hash of everything its artifact depends on, and nothing else.

``stages.json`` records these keys; a stage whose key changed is recomputed, one whose key is
the same is reused. They must stay as they are for run folders made earlier to be recognised,
and they do not depend on the number of processes (a run resumes on any number of devices).
"""

from __future__ import annotations

from dataclasses import asdict

from dfb_ood.harness.detector_spec import CLASSIFIER
from dfb_ood.harness.io import content_hash, file_hash
from dfb_ood.harness.plan import RunPlan, benchmark_key
from dfb_ood.harness.rundata import RunData


class StageKeys:
    """The keys of one run's stages, from its plan and what its sets hold now."""

    def __init__(self, plan: RunPlan, data: RunData) -> None:
        self.plan = plan
        self.data = data

    def benchmark(self) -> str:
        return benchmark_key(self.plan.benchmark)

    def features(self) -> str:
        """What the cached features depend on: the frozen part's weights, the images and their transform."""
        plan = self.plan
        checkpoint = plan.settings.checkpoint
        source = (
            ("checkpoint", file_hash(checkpoint)) if checkpoint else ("pretrained", plan.recipe.pretrained)
        )
        return content_hash(
            "features",
            self.benchmark(),
            self.data.fingerprint("train"),
            plan.network,
            plan.recipe.network_options,
            plan.recipe.trainable,
            source,
            plan.eval_size,
            plan.mean,
            plan.std,
            plan.recipe.flip,
            # a random frozen backbone is drawn from the seed; pretrained weights are not
            None if plan.recipe.pretrained or checkpoint else plan.settings.seed,
        )

    def classifier(self) -> str:
        plan = self.plan
        checkpoint = plan.settings.checkpoint
        source = (
            ("checkpoint", file_hash(checkpoint))
            if checkpoint
            else ("trained", plan.recipe.as_dict(), self.data.fingerprint("train"))
        )
        return content_hash("classifier", self.benchmark(), plan.network, plan.settings.seed, source)

    def masks(self) -> str:
        return content_hash(
            "masks",
            self.classifier(),
            asdict(self.plan.recipe.cam),
            self.plan.eval_size,
            self.data.fingerprint("train"),  # a --checkpoint classifier's key does not hold it
        )

    def dense(self) -> str:
        return content_hash("dense", self.masks(), self.plan.recipe.as_dict(), self.plan.settings.seed)

    def outputs(self, kind: str) -> str:
        net_key = self.classifier() if kind == CLASSIFIER else self.dense()
        # "outputs-format" 2: each set is a folder of .npy files (was one .npz per set); a run folder
        # made before records the old key, so its outputs are recomputed, never looked for in the old files
        format_version = ("outputs-format", 2)
        return content_hash("outputs", kind, net_key, self.benchmark(), self.plan.eval_size, format_version)

    def outputs_set(self, kind: str, set_name: str) -> str:
        """The key of one set's cached pass: the network's outputs key and what the set holds now."""
        return content_hash(self.outputs(kind), set_name, self.data.fingerprint(set_name))
