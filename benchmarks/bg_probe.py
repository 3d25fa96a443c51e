"""What the DFB net's background logit measures on a dark-background benchmark, under two kinds of masks.

Why: on ``fmnist_mini`` the background score is a weaker detector with masks that localise the
garments (recipe ``frozen``) than with the coarse masks of the cached 4x4 maps (``frozen-4x4``).
Fashion-MNIST's background is uniform black, so the obvious explanation is that localising masks
teach the background class "dark, empty pixels" (which MNIST digits and glyphs, white on black,
have more of than garments). This script tests that against finished runs, reading only their
cached outputs and images (nothing is recomputed): per set (ID test, each OOD test set), the mean
share of dark pixels (below ``--dark`` of 255), the mean background logit, and the Spearman
correlation between the two over the set's images (None where the dark share is constant). If the
explanation held, the background logit would rise with the dark share, within sets and across them.

Writes ``docs/results/bg_probe.json``.

    python benchmarks/bg_probe.py runs/docs/mini_seeds/run/seed0 runs/docs/mini_4x4/run/seed0
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from tiny_config import code_version, machine_environment  # benchmarks/ is the script's folder

from dfb_ood.harness.evaluate import DFB
from dfb_ood.harness.io import write_json
from dfb_ood.harness.report import open_run

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "results" / "bg_probe.json"


def probe(run_dir: Path, dark: int) -> dict[str, Any]:
    view = open_run(run_dir)
    outputs = view.outputs[DFB]
    background = view.nets[DFB].num_classes  # the DFB net's last logit: class K
    sets: dict[str, Any] = {}
    for name, set_outputs in {"test": outputs.test, **outputs.ood}.items():
        images, _ = view.pipeline.arrays(name)
        share = (images.float().mean(dim=1) < dark).float().mean(dim=(1, 2)).numpy()
        logit = np.asarray(set_outputs.logits, dtype=np.float64)[:, background]
        rho = float(spearmanr(share, logit).statistic) if np.ptp(share) > 0 else None
        sets[name] = {
            "group": "id" if name == "test" else outputs.groups.get(name, "far"),
            "images": int(len(logit)),
            "dark_share": round(float(share.mean()), 4),
            "bg_logit": round(float(logit.mean()), 3),
            "spearman": None if rho is None else round(rho, 3),
        }
    recipe = view.pipeline.recipe.name
    print(f"{run_dir} (recipe {recipe}):")
    for name, row in sets.items():
        print(
            f"  {name:10s} dark {row['dark_share']:6.1%}  bg logit {row['bg_logit']:7.2f}  "
            "spearman(dark, bg) " + ("-" if row["spearman"] is None else f"{row['spearman']:+.2f}")
        )
    return {"run": str(run_dir), "recipe": recipe, "sets": sets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders (one seed each)")
    parser.add_argument("--dark", type=int, default=13, help="a pixel is dark below this (of 255)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    entries = [probe(run, args.dark) for run in args.runs]
    record = {
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code": code_version(),
        "machine": machine_environment(),
        "dark_level": args.dark,
        "entries": {entry["recipe"]: entry for entry in entries},
    }
    write_json(args.json, record)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
