# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The crash-safe result tables of an archive run.

Rows arrive per batch and go to one part file per batch under `OUT/.parts/`, each written to a temporary name,
fsync'd and renamed, so a part is either complete or absent (a SIGKILL at any moment loses at most the batch in
flight, never half a row). At the end (and at the start of a rerun) the parts and any earlier tables are compacted
into `predictions.csv` and `errors.csv` (and `.parquet` twins when asked): rows keyed by path, each path once,
sorted by path, written atomically the same way. A rerun reads the tables and the parts to know which images are
done, so it never computes or writes a row twice.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["ResultStore", "atomic_write_bytes", "ERROR_COLUMNS"]

ERROR_COLUMNS = ("path", "reason")
PREDICTIONS = "predictions"
ERRORS = "errors"


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened for fsync
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _csv_bytes(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


class ResultStore:
    """Rows (`columns`, every cell a string) and error records (path, reason) of one output folder."""

    def __init__(
        self,
        output_dir: str | os.PathLike,
        columns: Sequence[str],
        float_columns: Sequence[str] = (),
        int_columns: Sequence[str] = (),
        parquet: bool = False,
    ):
        self.output_dir = Path(output_dir)
        self.columns = list(columns)
        self.float_columns = set(float_columns)
        self.int_columns = set(int_columns)
        self.parquet = parquet
        self.parts_dir = self.output_dir / ".parts"
        self.rows: dict[str, list[str]] = {}
        self.errors: dict[str, list[str]] = {}

    @property
    def predictions_csv(self) -> Path:
        return self.output_dir / f"{PREDICTIONS}.csv"

    @property
    def errors_csv(self) -> Path:
        return self.output_dir / f"{ERRORS}.csv"

    # ------------------------------------------------------------------------------------------------ reading
    def _read_csv(self, path: Path, header: Sequence[str]) -> dict[str, list[str]]:
        if not path.is_file():
            return {}
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            found = next(reader, None)
            if found is None:
                return {}
            if list(found) != list(header):
                raise ValueError(
                    f"{path}: its columns {found} differ from this run's {list(header)}; use another --output-dir "
                    "or --overwrite"
                )
            rows = {}
            for row in reader:
                if len(row) == len(header):  # a torn last line (from an editor or a full disk) is ignored
                    rows.setdefault(row[0], row)
            return rows

    def load(self) -> None:
        """Read the tables and the part files of earlier runs; drop temporary files a crash left behind."""
        self.rows = self._read_csv(self.predictions_csv, self.columns)
        self.errors = self._read_csv(self.errors_csv, ERROR_COLUMNS)
        if self.parts_dir.is_dir():
            for stale in self.parts_dir.glob(".*.tmp-*"):
                stale.unlink(missing_ok=True)
            for part in sorted(self.parts_dir.glob("part-*.jsonl")):
                self._read_part(part)

    def _read_part(self, part: Path) -> None:
        for line in part.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            target = self.rows if record["kind"] == "row" else self.errors
            cells = [str(cell) for cell in record["cells"]]
            if record["kind"] == "row":
                self.errors.pop(cells[0], None)  # an error retried successfully
            target.setdefault(cells[0], cells)

    def done(self) -> set[str]:
        return set(self.rows) | set(self.errors)

    # ------------------------------------------------------------------------------------------------ writing
    def append(self, rows: Sequence[Sequence[str]], errors: Sequence[Sequence[str]]) -> None:
        """Record one batch: a new part file, complete or absent after any crash."""
        if not rows and not errors:
            return
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        number = 1 + max((int(p.stem.split("-")[1]) for p in self.parts_dir.glob("part-*.jsonl")), default=0)
        lines = [json.dumps({"kind": "row", "cells": list(row)}) for row in rows]
        lines += [json.dumps({"kind": "error", "cells": list(error)}) for error in errors]
        atomic_write_bytes(
            self.parts_dir / f"part-{number:08d}.jsonl", ("\n".join(lines) + "\n").encode("utf-8")
        )
        for row in rows:
            self.errors.pop(row[0], None)
            self.rows.setdefault(row[0], list(row))
        for error in errors:
            self.errors.setdefault(error[0], list(error))

    def forget_errors(self, paths: Iterable[str]) -> None:
        """Let these error records be replaced by a retry (the retry's part wins at the next compaction)."""
        for path in paths:
            self.errors.pop(path, None)

    def compact(self) -> None:
        """Write the sorted tables atomically, then delete the part files they now hold."""
        rows = [self.rows[key] for key in sorted(self.rows)]
        errors = [self.errors[key] for key in sorted(self.errors)]
        atomic_write_bytes(self.predictions_csv, _csv_bytes(self.columns, rows))
        atomic_write_bytes(self.errors_csv, _csv_bytes(ERROR_COLUMNS, errors))
        if self.parquet:
            self._write_parquet(self.output_dir / f"{PREDICTIONS}.parquet", self.columns, rows)
            self._write_parquet(self.output_dir / f"{ERRORS}.parquet", ERROR_COLUMNS, errors)
        if self.parts_dir.is_dir():
            for part in self.parts_dir.glob("part-*.jsonl"):
                part.unlink()
            with contextlib.suppress(OSError):
                self.parts_dir.rmdir()

    def _write_parquet(self, path: Path, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as err:  # pragma: no cover - pyarrow comes with datasets
            raise ImportError("--parquet needs pyarrow: `pip install pyarrow`") from err

        arrays = {}
        for index, name in enumerate(columns):
            cells = [row[index] for row in rows]
            if name in self.float_columns:
                arrays[name] = pa.array([float(c) for c in cells], type=pa.float64())
            elif name in self.int_columns:
                arrays[name] = pa.array([int(c) for c in cells], type=pa.int64())
            else:
                arrays[name] = pa.array(cells, type=pa.string())
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table(arrays), sink)
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
