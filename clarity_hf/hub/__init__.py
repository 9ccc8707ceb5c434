# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Publishing CLARiTy on the Hugging Face Hub.

- [`load_for_inference`] and the other model-folder checks are re-exported from `clarity_hf.loading`, which lives
  below evaluation and inference so that they can load a folder without importing the Hub layer.
- `export`: the Hub repo folder ([`save_for_hub`]) and its upload ([`push_to_hub`]).
- `cards`: the model card and the dataset card, from measured results and the templates in `templates/`.
- `dataset_upload`: a built data set to the Hub as Parquet with its card ([`push_dataset_to_hub`]).
- `reload_check`: an exported folder reloaded in a fresh process where clarity_hf cannot be imported, compared
  with a reference (the demo's and the rehearsal's check).
"""

from ..loading import (
    PICKLE_SUFFIXES,
    InvalidModelFolderError,
    UnsafeCheckpointError,
    UntrustedModelFolderError,
    check_safetensors_only,
    load_for_inference,
    load_model_strictly,
    resolve_model_folder,
)
from .cards import load_results, make_dataset_card, render_dataset_card, render_model_card, select_model
from .dataset_upload import push_dataset_to_hub
from .export import (
    HUB_CODE_FILES,
    MANIFEST_NAME,
    ExportError,
    describe_folder,
    exported_files,
    push_to_hub,
    save_for_hub,
)

__all__ = [
    "HUB_CODE_FILES",
    "MANIFEST_NAME",
    "PICKLE_SUFFIXES",
    "ExportError",
    "InvalidModelFolderError",
    "UnsafeCheckpointError",
    "UntrustedModelFolderError",
    "check_safetensors_only",
    "describe_folder",
    "exported_files",
    "load_for_inference",
    "load_model_strictly",
    "load_results",
    "make_dataset_card",
    "push_dataset_to_hub",
    "push_to_hub",
    "render_dataset_card",
    "render_model_card",
    "resolve_model_folder",
    "save_for_hub",
    "select_model",
]
