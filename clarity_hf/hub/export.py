# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Writing a Hub model repo folder ([`save_for_hub`]) and uploading exactly what it wrote ([`push_to_hub`]).

The export writes into a fresh folder and records every file it wrote in a manifest (`MANIFEST_NAME`, not
uploaded); the upload sends those files and nothing else: never a file added to the folder afterwards (a stray
`.env`), a dotfile, a symbolic link or a pickle.

`auto_map`, `custom_pipelines` and the Hub code files are written by the classes' own `save_pretrained` (any saved
folder is complete: `ClarityForMultiLabelLocalization` and `ClarityImageProcessor` are registered for the auto
classes where they are defined); the export copies the package's Hub code files ([`HUB_CODE_FILES`]) over them once,
so that the repo holds one consistent set.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi

from .. import __version__
from ..files import PathOutsideFolderError, confined_path
from ..loading import PICKLE_SUFFIXES, UnsafeCheckpointError, check_safetensors_only, pickle_files
from ..pipeline_clarity import ClarityLocalizationPipeline
from ..visualization import decode_for_display
from .cards import load_results, render_model_card

__all__ = [
    "HUB_CODE_FILES",
    "MANIFEST_NAME",
    "ExportError",
    "describe_folder",
    "exported_files",
    "push_to_hub",
    "save_for_hub",
]

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The files a Hub repo needs to run with trust_remote_code; each imports only torch / transformers / numpy / PIL
# and its siblings, relatively.
HUB_CODE_FILES = (
    "configuration_clarity.py",
    "modeling_clarity.py",
    "image_processing_clarity.py",
    "pipeline_clarity.py",
    "xray_io.py",
    "heatmaps.py",
)
MANIFEST_NAME = ".clarity_hf_export.json"
LISTED_BUT_NOT_OURS = "listed by the export but missing, not a regular file or a symbolic link; export again"


class ExportError(ValueError):
    """The export folder cannot be written or uploaded safely (not fresh, or changed since the export)."""


def _read_manifest(folder: Path) -> list[str] | None:
    path = folder / MANIFEST_NAME
    if not path.is_file() or path.is_symlink():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ExportError(f"{path}: not a readable export manifest ({err})") from err
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise ExportError(f"{path}: not a readable export manifest (files is not a list of paths)")
    return files


def _prepare_folder(folder: Path, overwrite: bool) -> None:
    """A fresh folder: created, empty, a previous export of ours (its files are removed) or, with `overwrite`,
    emptied."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ExportError(f"{folder}: not a directory")
    folder.mkdir(parents=True, exist_ok=True)
    present = sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink()
    )
    if not present:
        return
    if overwrite:
        for child in folder.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        return
    previous = _read_manifest(folder)
    unknown = sorted(set(present) - set(previous or []) - {MANIFEST_NAME})
    if previous is None or unknown:
        listed = ", ".join(unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise ExportError(
            f"{folder}: not empty ({listed or ', '.join(present[:10])}); the export writes into a fresh folder. "
            "Choose an empty or new folder, or pass overwrite=True to empty this one first."
        )
    # Only files this export can prove it wrote are removed: every entry is checked before anything is deleted.
    removable = [path for path in (_listed_file(folder, name) for name in sorted(set(previous))) if path]
    for path in removable:
        path.unlink(missing_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    for directory in sorted(
        (p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True
    ):
        if not any(directory.iterdir()):
            directory.rmdir()


def _listed_file(folder: Path, name: str) -> Path | None:
    """The file a manifest entry names, proven to be one the export wrote: a relative path inside `folder`
    ([`confined_path`]) with no symbolic link on its way, a regular file (None when it is gone). Anything else is an
    [`ExportError`]: the manifest was not written by clarity_hf or the folder was changed since."""
    parts = Path(name).parts
    if not Path(name).is_absolute() and any(
        folder.joinpath(*parts[: i + 1]).is_symlink() for i in range(len(parts))
    ):
        raise ExportError(f"{folder / name}: {LISTED_BUT_NOT_OURS}")
    try:
        path = confined_path(folder, name, f"{folder / MANIFEST_NAME}: entry")
    except PathOutsideFolderError as err:
        raise ExportError(f"{err}: this manifest was not written by clarity_hf's export") from err
    if not path.exists():
        return None
    if not path.is_file():
        raise ExportError(f"{path}: {LISTED_BUT_NOT_OURS}")
    return path


def _write_examples(
    pipe: ClarityLocalizationPipeline, example_images: Iterable[str | Path], folder: Path
) -> list[dict[str, Any]]:
    outputs = []
    for index, source in enumerate(example_images):
        source = Path(source)
        image = decode_for_display(pipe.image_processor, source)
        relative = f"examples/{index:02d}_{source.stem}.png"
        (folder / "examples").mkdir(exist_ok=True)
        image.save(folder / relative)
        prediction = pipe(str(source), return_heatmaps=False)
        outputs.append({"path": relative, "title": source.stem, "scores": prediction["scores"]})
    return outputs


def save_for_hub(
    model,
    processor,
    save_directory: str | Path,
    results: str | Path | Mapping[str, Any] | None = None,
    example_images: Sequence[str | Path] = (),
    repo_id: str | None = None,
    model_name: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write a complete Hub model repo into `save_directory` and return the files written.

    Writes `config.json` (every `auto_map` entry plus `custom_pipelines` for `chest-xray-localization` and
    `image-classification`),
    `model.safetensors`, the Hub code files ([`HUB_CODE_FILES`]), `preprocessor_config.json` (with
    `AutoImageProcessor` in its `auto_map`), `README.md` (the model card, from `results`: the evaluation report of
    `clarity_hf.evaluation.report`, reading its `model_name` entry, default the first), `eval_results.json` (a copy of
    the report) and `examples/*.png` with the model's predictions on them as the card's widget outputs, and the
    manifest of those files. Never writes a pickle file.

    The folder must be new, empty or a previous export (whose files are replaced); anything else is refused
    ([`ExportError`]) unless `overwrite=True`, which empties it first.
    """
    folder = Path(save_directory)
    results = load_results(results)
    _prepare_folder(folder, overwrite)

    model.save_pretrained(folder)
    if not (folder / "model.safetensors").is_file():
        raise RuntimeError(f"{folder}: save_pretrained did not write model.safetensors")
    processor.save_pretrained(folder)
    # save_pretrained copies the classes' own modules; the package's files are copied over them once, so that the
    # repo holds one consistent set, the pipeline included.
    for name in HUB_CODE_FILES:
        shutil.copyfile(PACKAGE_DIR / name, folder / name)

    example_outputs = []
    if example_images:
        was_training = model.training
        model.eval()
        pipe = ClarityLocalizationPipeline(model=model, image_processor=processor, device=model.device)
        example_outputs = _write_examples(pipe, example_images, folder)
        model.train(was_training)
    if results is not None:
        (folder / "eval_results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    card = render_model_card(
        model.config, results, repo_id=repo_id, model_name=model_name, example_outputs=example_outputs
    )
    card.save(folder / "README.md")
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    manifest = {"clarity_hf_version": __version__, "files": written}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return [folder / name for name in written]


def exported_files(folder: str | Path) -> list[str]:
    """The files [`push_to_hub`] uploads from an export folder: those of its manifest, each checked to be a regular
    file inside the folder (no symbolic link anywhere on its path, no dotfile, no pickle). Raises [`ExportError`]
    for a folder without a manifest or with a listed file missing or replaced by a link."""
    folder = Path(folder)
    names = _read_manifest(folder)
    if names is None:
        raise ExportError(
            f"{folder}: no export manifest ({MANIFEST_NAME}); only a folder written by clarity_hf.hub.save_for_hub "
            "is uploaded (export it first)"
        )
    for name in names:
        parts = Path(name).parts
        if (
            not parts
            or Path(name).is_absolute()
            or ".." in parts
            or any(part.startswith(".") for part in parts)
            or name.lower().endswith(PICKLE_SUFFIXES)
        ):
            raise ExportError(f"{folder}: the manifest lists {name!r}, which is never uploaded")
        if _listed_file(folder, name) is None:
            raise ExportError(f"{folder / name}: {LISTED_BUT_NOT_OURS}")
    return sorted(names)


def describe_folder(folder: str | Path) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of every file that [`push_to_hub`] would upload, sorted by path."""
    folder = Path(folder)
    return [(name, (folder / name).stat().st_size) for name in exported_files(folder)]


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload CLARiTy model",
    create_pr: bool = False,
    endpoint: str | None = None,
):
    """Create `repo_id` (if needed) and upload the files that [`save_for_hub`] wrote into `folder` (its manifest:
    nothing else in the folder is sent); returns the `CommitInfo`.

    `revision` names the branch to commit to (created from main when it does not exist yet); `create_pr` opens a
    pull request instead of committing directly. `endpoint` defaults to `HF_ENDPOINT` / huggingface.co. A folder
    with a pickle file, without safetensors weights or without a manifest is refused before anything is sent.
    """
    folder = check_safetensors_only(folder)
    pickles = pickle_files(folder)
    if pickles:
        raise UnsafeCheckpointError(
            f"{folder}: refusing to upload pickle file(s) {pickles}; publish safetensors only"
        )
    names = exported_files(folder)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=os.fspath(folder / name)) for name in names
    ]
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    if revision is not None and revision != "main" and not create_pr:
        api.create_branch(repo_id=repo_id, branch=revision, repo_type="model", exist_ok=True)
    return api.create_commit(
        repo_id=repo_id,
        operations=operations,
        repo_type="model",
        revision=revision,
        commit_message=commit_message,
        create_pr=create_pr,
    )
