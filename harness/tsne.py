"""A t-SNE of pooled features, the K-class classifier beside the DFB net (the paper's Fig. 5).

Everything comes from a finished run's cached outputs, ``outputs/<classifier|dfb>/<set>/<array>.npy``
(stage 4 of ``harness bench``: the pooled, pre-head features of every set); nothing is computed
with a network. The points are a bounded sample (:func:`draw_sample`): at most ``sample`` ID test
images, spread evenly over the classes, and at most ``sample`` OOD test images per group (near,
far), spread evenly over the group's sets, drawn with ``numpy.random.default_rng(seed)``. Both
panels embed the same images, so they differ only in the network.

Each image's feature vector is L2-normalised (divided by its Euclidean norm) before the
embedding, so that t-SNE compares directions (cosine geometry) and the two networks' different
feature scales do not matter. The embedding is scikit-learn's ``TSNE`` (two dimensions,
``init="pca"``, ``learning_rate="auto"``, perplexity ``min(30, (n - 1) / 3)`` for ``n`` points,
``random_state=seed``): for a fixed seed the same machine gives the same figure. With a PCA start the
optimisation has no random part left, so the seed in effect chooses the sample. The embedding runs
on one thread (its result would otherwise depend on the number of cores).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfb_ood.errors import InputError, MissingInputError
from dfb_ood.harness.errors import RunFolderError

#: ID test images in the embedding, and OOD images per group (near, far): ``--sample``'s default.
#: About 900 points per network: some 5 s per panel on one CPU core.
DEFAULT_SAMPLE = 300
#: scikit-learn's default perplexity, lowered to ``(n - 1) / 3`` for a sample of ``n < 91`` points.
PERPLEXITY = 30.0
#: The two panels: network (the run's ``outputs/`` folder) and its title (``k``: the ID classes).
PANELS: tuple[tuple[str, str], ...] = (
    ("classifier", "K-class classifier (K = {k})"),
    ("dfb", "DFB net (K+1 = {k1} outputs)"),
)
GROUPS = ("near", "far")
PREPROCESSING = {"features": "L2-normalised pooled features", "logits": "raw logits"}
#: ``space="auto"``: the pooled features, unless both networks have the same ones (a frozen backbone
#: shared by the classifier and the DFB net, as in the ``frozen`` recipe: the two panels would be one
#: picture twice); then the logits, where the DFB net's background logit makes the difference.
SPACES = ("auto", "features", "logits")


def check_space(space: str) -> None:
    """Refuse a ``--space`` value that is none of ``SPACES``."""
    if space not in SPACES:
        raise InputError(f"--space {space!r}: choose one of {', '.join(SPACES)}")


@dataclass
class FeatureSets:
    """The pooled features the figure reads: ID test (with its labels) and OOD test sets, per network.

    Arrays may be read-only memory maps of the run's ``.npy`` files: only the sampled rows are read.
    """

    class_names: tuple[str, ...]
    labels: np.ndarray  # ID test labels (N,)
    test: dict[str, np.ndarray]  # network -> ID test features (N, D)
    ood: dict[str, dict[str, np.ndarray]]  # network -> OOD set -> features (N_set, D)
    groups: dict[str, str]  # OOD set -> "near" | "far", near sets first
    label: str  # "benchmark / network / seed s": which run the footnote names
    test_logits: dict[str, np.ndarray] = field(default_factory=dict)  # network -> (N, C)
    ood_logits: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def shared_features(self) -> bool:
        """Whether both networks' pooled features are the same arrays (a shared frozen backbone)."""
        networks = [network for network, _ in PANELS]
        first, *others = networks
        return all(
            np.array_equal(self.test[first], self.test[other])
            and all(np.array_equal(self.ood[first][n], self.ood[other][n]) for n in self.groups)
            for other in others
        )

    def space(self, space: str) -> str:
        """The space ``space`` ("auto", "features" or "logits") resolves to (see ``SPACES``)."""
        check_space(space)
        if space == "auto":
            return "logits" if self.shared_features() else "features"
        return space


@dataclass(frozen=True)
class Sample:
    """The rows drawn: of ID test, and of each OOD set (sorted indices into that set)."""

    test: np.ndarray
    ood: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class TsneFigure:
    """What a drawn figure shows: the sample's sizes, the perplexity, and how long it took."""

    path: Path
    counts: dict[str, int]  # "ID test", "near", "far" -> points
    perplexity: float
    seconds: float
    sample: Sample = field(repr=False)
    embeddings: dict[str, np.ndarray] = field(repr=False)  # network -> (n, 2): ID test, then OOD sets


# ------------------------------------------------------------------------------------------ sample
def check_sample_size(size: int) -> None:
    """Refuse a sample that cannot make a figure (fewer than two ID test points)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2:
        raise InputError(
            f"--sample {size}: the t-SNE needs at least 2 images per group (ID test, near, far); give e.g. "
            f"--sample {DEFAULT_SAMPLE} (the default)"
        )


def _even_quota(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """How many rows of each stratum: as equal as the strata's sizes allow, ``size`` in all.

    Strata too small for an equal share give all their rows and the rest is shared among the
    others; what an equal split leaves over goes to strata drawn by ``rng``.
    """
    quota = np.zeros_like(counts)
    left = int(size)
    while left > 0:
        active = np.flatnonzero(counts - quota > 0)
        share = left // active.size
        if share == 0:
            quota[rng.choice(active, size=left, replace=False)] += 1
            break
        added = np.minimum(counts[active] - quota[active], share)
        quota[active] += added
        left -= int(added.sum())
    return quota


def stratified_sample(strata: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``size`` rows, spread evenly over the distinct values of ``strata``.

    Every row when there are no more than ``size``; otherwise each stratum gets an equal share
    (all its rows when it has fewer, see :func:`_even_quota`), drawn without replacement.
    """
    strata = np.asarray(strata)
    if strata.shape[0] <= size:
        return np.arange(strata.shape[0])
    _, inverse = np.unique(strata, return_inverse=True)
    quota = _even_quota(np.bincount(inverse), size, rng)
    chosen = [
        rng.choice(np.flatnonzero(inverse == stratum), size=int(count), replace=False)
        for stratum, count in enumerate(quota)
        if count
    ]
    return np.sort(np.concatenate(chosen))


def draw_sample(
    labels: np.ndarray,
    ood_sizes: Mapping[str, int],
    groups: Mapping[str, str],
    size: int = DEFAULT_SAMPLE,
    seed: int = 0,
) -> Sample:
    """At most ``size`` ID test rows (even over classes) and ``size`` OOD rows per group (even over sets).

    ``ood_sizes`` maps each OOD set to its number of images, ``groups`` each set to near or far.
    One ``numpy.random.default_rng(seed)`` draws everything, ID test first, then near, then far:
    the same arguments give the same rows.
    """
    check_sample_size(size)
    rng = np.random.default_rng(seed)
    test = stratified_sample(np.asarray(labels), size, rng)
    ood: dict[str, np.ndarray] = {}
    for group in GROUPS:
        names = [name for name in ood_sizes if groups[name] == group]
        if not names:
            continue
        sizes = [int(ood_sizes[name]) for name in names]
        strata = np.repeat(np.arange(len(names)), sizes)
        rows = stratified_sample(strata, size, rng)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        for index, name in enumerate(names):
            ood[name] = rows[strata[rows] == index] - offsets[index]
    return Sample(test=test, ood=ood)


# ------------------------------------------------------------------------------------------ embedding
def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Each row divided by its Euclidean norm (float64; an all-zero row stays zero)."""
    array = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.maximum(norms, np.finfo(np.float64).tiny)


def perplexity_for(points: int) -> float:
    """scikit-learn's default perplexity (30), bounded to ``(n - 1) / 3`` for a small sample."""
    return float(min(PERPLEXITY, (points - 1) / 3))


def embed(features: np.ndarray, seed: int = 0, normalise: bool = True) -> np.ndarray:
    """A 2-D t-SNE of features (n, D) -> (n, 2), L2-normalised first unless ``normalise`` is False (for
    logits, whose scale is what energy-type detectors read); see the module docstring for the settings."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    points = np.asarray(features).shape[0]
    if points < 3:
        raise InputError(f"a t-SNE needs at least 3 points, got {points}")
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity_for(points),
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    # One OpenMP thread: the Barnes-Hut gradient sums over threads, so their number would change
    # the last bits (and, t-SNE being chaotic, the picture), and busy-waiting threads on a loaded
    # machine made a 12-point embedding take seconds.
    with threadpool_limits(limits=1, user_api="openmp"):
        points_in = l2_normalise(features) if normalise else np.asarray(features, dtype=np.float64)
        return np.asarray(tsne.fit_transform(points_in), dtype=np.float64)


# ------------------------------------------------------------------------------------------ reading
def _outputs_hint(run_dir: Path, network: str) -> str:
    if network == "dfb":
        return (
            f"`harness bench --out {run_dir} --post energy_dfb` (any DFB detector) trains the DFB net "
            "and writes them"
        )
    return f"`harness bench --out {run_dir}` writes them"


def _read_features(
    run_dir: Path, network: str, names: Sequence[str], stages: Mapping[str, Any]
) -> dict[str, dict[str, np.ndarray]]:
    """Each set's cached ``features`` and ``labels`` of one network, checked against stages.json."""
    from dfb_ood.harness.array_folder import map_arrays
    from dfb_ood.harness.io import own_folder
    from dfb_ood.harness.names import join_inside
    from dfb_ood.harness.runfolder import damaged

    record = stages.get(f"outputs_{network}") or {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    folder = own_folder(run_dir, f"outputs/{network}", create=False) or run_dir / "outputs" / network
    for name in names:
        path = join_inside(folder, name, what="set folder")
        if not os.path.lexists(path):
            raise MissingInputError(
                f"{path} is missing: this run has no cached {network} outputs of {name!r}; "
                + _outputs_hint(run_dir, network)
            )
        problems = damaged(run_dir, record.get("files"), [path])
        if problems:
            raise RunFolderError(
                f"{run_dir}: {'; '.join(problems)}; re-run the `harness bench` command that made this "
                "run (its options are in run.json) to recompute it"
            )
        data = map_arrays(path)
        if data.get("features") is None or data.get("labels") is None:
            raise RunFolderError(f"{path} holds no pooled features; re-run `harness bench --out {run_dir}`")
        arrays[name] = data
    return arrays


def read_features(run_dir: str | Path, sets: Sequence[str] | None = None) -> FeatureSets:
    """The pooled features of a finished run's ID test and OOD test sets, both networks.

    ``sets`` names the OOD test sets to read (default: every near and far set of the run's
    benchmark). Reads under the run's shared lock (a running ``bench`` is never read half-way)
    and refuses outputs whose bytes differ from the checksums in ``stages.json``.
    """
    from dfb_ood.harness.data.benchmark import load_benchmark
    from dfb_ood.harness.io import READ_FIX, READ_WAIT_S, read_json, read_lock
    from dfb_ood.harness.runfolder import read_record, recorded_settings

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise MissingInputError(
            f"{run_dir} does not exist: give a run folder written by `harness bench --out RUN`"
        )
    if not run_dir.is_dir():
        raise RunFolderError(
            f"{run_dir} is a file, not a run folder: give the folder `harness bench --out` wrote"
        )
    record = read_record(run_dir)
    if record is None:
        if (run_dir / "run.json").exists():
            raise RunFolderError(f"{run_dir / 'run.json'} is not a harness run record: not a run folder")
        raise MissingInputError(f"{run_dir} has no run.json; run `harness bench --out {run_dir}` first")
    settings = recorded_settings(record, run_dir)  # a relative benchmark path: from where bench ran
    if not settings.get("benchmark"):
        raise RunFolderError(f"{run_dir / 'run.json'} records no benchmark (settings.benchmark)")
    try:
        benchmark = load_benchmark(
            settings["benchmark"],
            Path(settings["data_root"]) if settings.get("data_root") else None,
            classes=settings.get("classes"),
            class_seed=settings.get("class_seed"),
        )
    except (FileNotFoundError, ValueError) as error:
        kind = FileNotFoundError if isinstance(error, FileNotFoundError) else ValueError
        raise kind(
            f"{run_dir}: cannot read the run's benchmark definition ({error}); the figure needs its "
            "class names and OOD groups"
        ) from None
    recorded = (record.get("benchmark") or {}).get("num_classes")
    if recorded is not None and recorded != benchmark.num_classes:
        raise RunFolderError(
            f"{run_dir}: the run has {recorded} ID classes but its benchmark definition "
            f"{settings['benchmark']} now has {benchmark.num_classes}; restore the definition the run used"
        )
    groups = {name: "near" for name in benchmark.near} | {name: "far" for name in benchmark.far}
    if sets:
        unknown = [name for name in sets if name not in groups]
        if unknown:
            raise InputError(
                f"--sets {', '.join(unknown)}: not an OOD test set of this run; it has {', '.join(groups)}"
            )
        groups = {name: group for name, group in groups.items() if name in sets}
    if not groups:
        raise InputError(
            f"{run_dir}: its benchmark {benchmark.name} has no near- or far-OOD test set to show"
        )
    names = ["test", *groups]
    with read_lock(run_dir, wait_s=READ_WAIT_S, fix=READ_FIX):
        stages_path = run_dir / "stages.json"
        stages = read_json(stages_path, follow_symlinks=False) if stages_path.is_file() else {}
        read = {network: _read_features(run_dir, network, names, stages) for network, _ in PANELS}
    labels = np.asarray(read["classifier"]["test"]["labels"])
    for network, arrays in read.items():
        if not np.array_equal(np.asarray(arrays["test"]["labels"]), labels):
            raise RunFolderError(
                f"{run_dir}: the {network} outputs of 'test' are not of the same images as the classifier's; "
                f"re-run `harness bench --out {run_dir}`"
            )
    network = record.get("network") or settings.get("network") or "?"
    return FeatureSets(
        class_names=tuple(benchmark.class_names),
        labels=labels,
        test={network_: arrays["test"]["features"] for network_, arrays in read.items()},
        ood={network_: {n: arrays[n]["features"] for n in groups} for network_, arrays in read.items()},
        groups=groups,
        label=f"{benchmark.name} / {network} / seed {settings.get('seed', '?')}",
        test_logits={network_: arrays["test"]["logits"] for network_, arrays in read.items()},
        ood_logits={network_: {n: arrays[n]["logits"] for n in groups} for network_, arrays in read.items()},
    )


# ------------------------------------------------------------------------------------------ figure
def draw_tsne(
    features: FeatureSets,
    path: str | Path,
    *,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    space: str = "auto",
) -> TsneFigure:
    """Sample, embed each network's features (or logits: ``space``, see ``SPACES``) and draw the two
    panels into ``path`` (format by its ending)."""
    from dfb_ood.harness import plots

    path = Path(path)
    plots.figure_format_of(path)
    space = features.space(space)
    shared = features.shared_features()
    started = time.perf_counter()
    ood_sizes = {name: int(features.ood["classifier"][name].shape[0]) for name in features.groups}
    drawn = draw_sample(features.labels, ood_sizes, features.groups, sample, seed)
    id_rows = drawn.test
    classes = np.concatenate(
        [np.asarray(features.labels)[id_rows], np.full(sum(r.size for r in drawn.ood.values()), -1)]
    ).astype(np.int64)
    kinds = np.concatenate(
        [
            np.full(id_rows.size, "id"),
            *[np.full(rows.size, features.groups[n]) for n, rows in drawn.ood.items()],
        ]
    )
    k = len(features.class_names)
    embeddings: dict[str, np.ndarray] = {}
    panels: dict[str, np.ndarray] = {}
    test, ood = (
        (features.test, features.ood) if space == "features" else (features.test_logits, features.ood_logits)
    )
    for network, title in PANELS:
        rows = [np.asarray(test[network][id_rows])]
        rows += [np.asarray(ood[network][name][r]) for name, r in drawn.ood.items()]
        stacked = np.concatenate(rows)
        embeddings[network] = embed(stacked, seed, normalise=space == "features")
        what = "pooled features" if space == "features" else "logits"
        panels[f"{title.format(k=k, k1=k + 1)}\n{stacked.shape[1]} {what}"] = embeddings[network]
    counts = {"ID test": int(id_rows.size)}
    legend = {}
    for group in GROUPS:
        members = [n for n in drawn.ood if features.groups[n] == group]
        if members:
            counts[group] = int(sum(drawn.ood[n].size for n in members))
            legend[group] = f"{group}-OOD: {', '.join(members)} (n={counts[group]})"
    perplexity = perplexity_for(int(classes.size))
    plots.tsne_panels(
        panels,
        classes,
        kinds,
        features.class_names,
        legend,
        path,
        title=(
            f"t-SNE of {'pooled features' if space == 'features' else 'logits'}: ID test images coloured "
            "by class, OOD test images grey/black"
            + (
                "\n(both networks share one frozen backbone: their pooled features are identical)"
                if shared
                else ""
            )
        ),
        footnote=footnote(features.label, counts, perplexity, seed, space),
    )
    return TsneFigure(path, counts, perplexity, time.perf_counter() - started, drawn, embeddings)


def footnote(
    label: str, counts: Mapping[str, int], perplexity: float, seed: int, space: str = "features"
) -> str:
    """The line under the figure: the run, the preprocessing, the sample and the t-SNE settings."""
    sample = " + ".join(f"{count} {name}" for name, count in counts.items())
    return (
        f"run {label}  ·  scikit-learn t-SNE of {PREPROCESSING[space]} (cached outputs, same images in both "
        f"panels): {sample}, stratified; init pca, perplexity {perplexity:.3g}, seed {seed}"
    )


def write_tsne_figure(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    sample: int = DEFAULT_SAMPLE,
    seed: int = 0,
    sets: Sequence[str] | None = None,
    space: str = "auto",
) -> TsneFigure:
    """``harness figure tsne``: read a finished run's cached features and draw the figure into ``out``.

    ``out`` defaults to ``RUN/report/tsne.<format>``, the format of the report already there (else
    PNG), where ``harness report`` puts the same figure. The file is replaced by one rename, so a
    symbolic link at ``out`` is replaced rather than written through; a ``report`` folder that is
    itself a link is refused.
    """
    from dfb_ood.harness import plots

    run_dir = Path(run_dir)
    check_sample_size(sample)
    if out is None:
        from dfb_ood.harness.io import own_folder
        from dfb_ood.harness.report_markdown import recorded_figure_format

        folder = run_dir / "report"
        # a link or a file in its place is refused (harness writes figures into a plain folder only)
        own_folder(run_dir, "report", create=False, hint=", or pass --out to write the figure elsewhere")

        out = folder / f"tsne.{recorded_figure_format(folder) or 'png'}"
    out = Path(out)
    plots.figure_format_of(out)  # a bad ending fails before the run is read
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give the figure's file name, e.g. {out / 'tsne.png'}")
    check_space(space)  # before the run is read
    features = read_features(run_dir, sets)
    return draw_tsne(features, out, sample=sample, seed=seed, space=space)
