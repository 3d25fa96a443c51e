"""What every stage of a run takes: its plan, its data, its ledger and keys, and its timings.

The stage modules (:mod:`harness.stage_features`, ``stage_train``, ``stage_masks``,
``stage_outputs``, ``stage_evaluate``) are functions of one :class:`StageContext`, so that each
holds one stage's body and none holds another's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dfb_ood.harness import distributed
from dfb_ood.harness.cached import FeatureCache
from dfb_ood.harness.ledger import StageLedger
from dfb_ood.harness.plan import RunPlan
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.rundata import RunData
from dfb_ood.harness.stage_keys import StageKeys


@dataclass
class StageContext:
    """One run's parts, shared by its stages; ``timings`` and the evaluation's records grow as they run."""

    plan: RunPlan
    data: RunData
    ledger: StageLedger
    keys: StageKeys
    timings: dict[str, float] = field(default_factory=dict)
    features: FeatureCache | None = None  # the features stage's arrays, once loaded or computed
    search_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    # detectors whose rows this run wrote or dropped (their search record follows the rows)
    evaluated: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, plan: RunPlan, reporter: Reporter) -> StageContext:
        data = RunData(plan, reporter)
        return cls(plan, data, StageLedger(plan.run_dir, data), StageKeys(plan, data))

    @property
    def reporter(self) -> Reporter:
        return self.data.reporter

    @property
    def main(self) -> bool:
        return distributed.is_main()

    @property
    def read_only(self) -> bool:
        return self.data.read_only
