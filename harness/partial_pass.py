"""Partial passes over images: the rows a pass has computed so far, kept on disk so a rerun resumes.

Why: a pass over thousands of images (feature extraction, say) killed at 60% used to start
again from row 0. A :class:`PartialPass` keeps the pass's rows in a memory-mapped ``.npy``
beside its final file (``<file>.partial``) and a small progress record (``<file>.partial.json``:
the rows done and a key covering everything the pass was made from). After each completed chunk
(:data:`CHUNK_SECONDS` of work, at a batch boundary) the rows are flushed first and only then the
record, rewritten atomically, claims them; so a record never claims a row that is not on disk.

On a rerun a partial whose record matches the key, shape and dtype resumes at the recorded row;
any other (a changed recipe, another network, a damaged file) is discarded with a one-line note
and never read. The pass's batches are cut from row 0 in steps of the batch size, and a chunk
ends on a batch boundary, so the resumed batches are the ones the uninterrupted pass would have
made: the rows are bit-identical. The caller commits the finished array as before (same file,
same checksum) and then calls :meth:`PartialPass.remove`.

The partial files carry no leading dot, so ``harness.runfolder.remove_temporaries`` keeps them.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np

from dfb_ood.harness.io import write_json
from dfb_ood.harness.progress import Reporter

CHUNK_SECONDS = 5.0  # the most work (seconds) a killed pass loses; a chunk ends at a batch boundary
DATA_SUFFIX = ".partial"
RECORD_SUFFIX = ".partial.json"
FORMAT = 1


class PartialPass:
    """The on-disk rows of one pass that will end as ``target`` (a ``.npy``), resumable by ``key``.

    Args:
        target: the final file the pass's array is committed to (not written here).
        key: everything the rows depend on (stage key, set, batch size, rows range, ...).
        reporter: where the one-line note about a discarded partial goes.
    """

    def __init__(self, target: str | os.PathLike[str], key: str, reporter: Reporter | None = None) -> None:
        self.target = Path(target)
        self.data_path = self.target.with_name(self.target.name + DATA_SUFFIX)
        self.record_path = self.target.with_name(self.target.name + RECORD_SUFFIX)
        self.key = key
        self.reporter = reporter or Reporter(quiet=True)
        self.array: np.ndarray | None = None
        self.rows_done = 0
        self.resumed = 0
        self._last = time.monotonic()
        self._record = self._read_record()

    def _read_record(self) -> dict | None:
        """The matching progress record, or None (a stale or damaged partial is discarded)."""
        if not self.record_path.exists() and not self.data_path.exists():
            return None
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or record.get("format") != FORMAT:
                raise ValueError("not a progress record of this version")
            if record.get("key") != self.key:
                raise ValueError("made from other inputs")
            rows = record.get("rows")
            if not isinstance(rows, int) or rows < 0:
                raise ValueError("no row count")
        except (OSError, ValueError) as error:
            self._discard(error)
            return None
        return record

    def _discard(self, error: Exception) -> None:
        """Remove a partial that cannot be resumed, with a one-line note saying why."""
        note = f"discarded the partial pass {self.data_path} ({error}); computing it again"
        self.reporter.message(note, label="note")
        self.remove()

    def start(self, shape: tuple[int, ...], dtype: np.dtype | str) -> int:
        """Open the rows' array for a pass of ``shape`` and ``dtype``; the row to resume from.

        A recorded partial of another shape or dtype, or whose data file does not read as one, is
        discarded (one note) and the pass starts at row 0 on a new file.
        """
        shape = tuple(int(n) for n in shape)
        dtype = np.dtype(dtype)
        record = self._record
        if record is not None:
            try:
                if record.get("shape") != list(shape) or record.get("dtype") != dtype.str:
                    raise ValueError("another shape or dtype")
                if record["rows"] > shape[0]:
                    raise ValueError("more rows than the pass has")
                array = np.load(self.data_path, mmap_mode="r+", allow_pickle=False)
                if array.shape != shape or array.dtype != dtype:
                    raise ValueError("its data file holds another array")
            except (OSError, ValueError) as error:
                self._discard(error)
            else:
                self.array = array
                self.rows_done = self.resumed = int(record["rows"])
                self._last = time.monotonic()
                return self.rows_done
        self.remove()
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        self.array = np.lib.format.open_memmap(self.data_path, mode="w+", dtype=dtype, shape=shape)
        self.rows_done = self.resumed = 0
        self._write_record(0)
        self._last = time.monotonic()
        return 0

    def recorded_shape(self) -> tuple[int, ...] | None:
        """The shape a matching record gives, so a resumed pass can open its rows before computing any."""
        shape = None if self._record is None else self._record.get("shape")
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            return None
        return tuple(shape)

    def done(self, rows: int, *, force: bool = False) -> None:
        """Rows ``[0, rows)`` are computed; saved (data flushed, then the record) once a chunk is full."""
        if self.array is None:
            raise RuntimeError("PartialPass.done before start")
        if not force and time.monotonic() - self._last < CHUNK_SECONDS:
            return
        if rows == self.rows_done:
            return
        if isinstance(self.array, np.memmap):
            self.array.flush()  # the rows reach the file before the record claims them
        self._write_record(rows)
        self.rows_done = rows
        self._last = time.monotonic()

    def _write_record(self, rows: int) -> None:
        assert self.array is not None
        write_json(
            self.record_path,
            {
                "format": FORMAT,
                "key": self.key,
                "rows": rows,
                "shape": list(self.array.shape),
                "dtype": self.array.dtype.str,
            },
        )

    def result(self) -> np.ndarray:
        """The finished rows, in memory (the partial files may then be removed)."""
        if self.array is None:
            raise RuntimeError("PartialPass.result before start")
        return np.array(self.array)

    def remove(self) -> None:
        """Delete the partial's files (after the pass is committed, or when it is discarded)."""
        self.array = None
        for path in (self.record_path, self.data_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def progress_label(description: str, resumed: int) -> str:
    """The progress line's description: ``features (resumed)`` when the pass resumed mid-way."""
    return f"{description} (resumed)" if resumed else description
