# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""The crash-safe result tables of an archive run.

Rows arrive per batch and go to one part file per batch under `OUT/.parts/` (named by run, process and number, so
the processes of a sharded run never write the same file), each written to a temporary name,
fsync'd and renamed, so a part is either complete or absent (a SIGKILL at any moment loses at most the batch in
flight, never half a row). At the end (and at the start of a rerun) the parts and any earlier tables are compacted
into `predictions.csv` and `errors.csv` (and `.parquet` twins when asked): rows keyed by path, each path once,
sorted by path, written atomically the same way. A rerun reads the tables and the parts to know which images are
done, so it never computes or writes a row twice.

Paths are text as `os.fsdecode` gives it: a file name that is not UTF-8 (`caf\xe9.png` from an old PACS export)
holds surrogate escapes, which round-trip everywhere: the CSV tables hold the name's own bytes (read them with
`encoding="utf-8", errors="surrogateescape"`, pandas: `encoding_errors="surrogateescape"`), the part files escape
them in JSON, and the parquet tables keep `path` as binary (the exact bytes; `os.fsdecode` gives the text back).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..files import UnusableFileError, atomic_write_bytes

__all__ = ["ResultStore", "atomic_write_bytes", "ERROR_COLUMNS", "text_bytes"]

ERROR_COLUMNS = ("path", "reason")
PREDICTIONS = "predictions"
ERRORS = "errors"


def _csv_bytes(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text_bytes(buffer.getvalue())


def text_bytes(text: str) -> bytes:
    """UTF-8, with the surrogate escapes of a non-UTF-8 file name written back as its own bytes."""
    return text.encode("utf-8", "surrogateescape")


def _unusable(path: Path, problem: str) -> UnusableFileError:
    return UnusableFileError(
        f"{path}: {problem}; it was not written by clarity-predict as it is now (edited or damaged?): use another "
        "--output-dir, or --overwrite to discard the folder's results and start again"
    )


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
        self._part_stem: str | None = None  # see start_run
        self._part_count = 0

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
        try:
            with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
                reader = csv.reader(handle)
                found = next(reader, None)
                if found is None:
                    return {}
                if list(found) != list(header):
                    raise _unusable(path, f"its columns {found[:20]} differ from this run's {list(header)}")
                rows = {}
                for row in reader:
                    if len(row) == len(header):  # a torn last line (from an editor or a full disk) is ignored
                        rows.setdefault(row[0], row)
                return rows
        except (csv.Error, OSError) as err:
            raise _unusable(path, f"cannot be read as a table ({type(err).__name__}: {err})") from err

    def load(self) -> None:
        """Read the tables and the part files of earlier runs (parts are newer than the tables, and read oldest
        first, so a retried file's latest record wins)."""
        self.rows = self._read_csv(self.predictions_csv, self.columns)
        self.errors = self._read_csv(self.errors_csv, ERROR_COLUMNS)
        for part in self._parts():
            self._read_part(part)

    def remove_stale(self) -> None:
        """Drop the temporary files a crash left behind (only while no process of this run writes)."""
        if self.parts_dir.is_dir():
            for stale in self.parts_dir.glob(".*.tmp-*"):
                stale.unlink(missing_ok=True)

    def _parts(self) -> list[Path]:
        """Part files, oldest first: `part-RUN-PROCESS-NUMBER.jsonl` sort by their numbers (a part of an older
        release, `part-NUMBER.jsonl`, as run 0)."""
        if not self.parts_dir.is_dir():
            return []

        def key(path: Path) -> tuple[int, ...]:
            fields = path.stem.split("-")[1:]
            numbers = tuple(int(f) for f in fields) if all(f.isdigit() for f in fields) else (-1,)
            return (0, 0, *numbers) if len(numbers) == 1 else numbers

        return sorted(self.parts_dir.glob("part-*.jsonl"), key=key)

    def start_run(self, run: int, process: int = 0) -> None:
        """This process's parts of run `run` are `part-<run>-<process>-<n>.jsonl`: processes never write the same
        name, and a later run's parts sort after an earlier one's."""
        self._part_stem = f"part-{int(run):06d}-{int(process):04d}"
        self._part_count = 0

    def next_run(self) -> int:
        """1 + the newest run number among the part files (1 when there are none)."""
        newest = 0
        for part in self._parts():
            fields = part.stem.split("-")
            if len(fields) == 4 and fields[1].isdigit():
                newest = max(newest, int(fields[1]))
        return newest + 1

    def _read_part(self, part: Path) -> None:
        try:
            records = [
                json.loads(line) for line in part.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
            for record in records:
                width = len(self.columns) if record["kind"] == "row" else len(ERROR_COLUMNS)
                if record["kind"] not in ("row", "error") or len(record["cells"]) != width:
                    raise ValueError(f"a record of kind {record['kind']!r} with {len(record['cells'])} cells")
        except (OSError, ValueError, KeyError, TypeError) as err:  # JSON and UTF-8 errors are ValueErrors
            raise _unusable(part, f"is not a readable part file ({type(err).__name__}: {err})") from err
        for record in records:
            cells = [str(cell) for cell in record["cells"]]
            if record["kind"] == "row":
                self.errors.pop(cells[0], None)  # an error retried successfully
                self.rows.setdefault(cells[0], cells)
            elif cells[0] not in self.rows:
                self.errors[cells[0]] = cells  # a retried error's newer reason

    def done(self) -> set[str]:
        return set(self.rows) | set(self.errors)

    # ------------------------------------------------------------------------------------------------ writing
    def append(self, rows: Sequence[Sequence[str]], errors: Sequence[Sequence[str]]) -> None:
        """Record one batch: a new part file, complete or absent after any crash."""
        if not rows and not errors:
            return
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        if self._part_stem is None:
            self.start_run(self.next_run())
        self._part_count += 1
        lines = [json.dumps({"kind": "row", "cells": list(row)}) for row in rows]
        lines += [json.dumps({"kind": "error", "cells": list(error)}) for error in errors]
        # json.dumps escapes non-ASCII text (surrogate escapes included), so a part file is plain ASCII
        atomic_write_bytes(
            self.parts_dir / f"{self._part_stem}-{self._part_count:08d}.jsonl",
            ("\n".join(lines) + "\n").encode("ascii"),
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
            elif name == "path":  # a file name is bytes; parquet strings must be valid UTF-8
                arrays[name] = pa.array([text_bytes(c) for c in cells], type=pa.binary())
            else:  # messages that quote a non-UTF-8 name show its escapes
                cells = [c.encode("utf-8", "backslashreplace").decode("utf-8") for c in cells]
                arrays[name] = pa.array(cells, type=pa.string())
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table(arrays), sink)
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
