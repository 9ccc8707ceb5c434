"""clarity_hf: the CLARiTy chest X-ray model as a native Hugging Face model.

Importing the package registers CLARiTy with the transformers auto classes, so that local folders load with
`AutoModel.from_pretrained(path)` without `trust_remote_code`, and registers the `chest-xray-localization` pipeline
task, so that `pipeline("chest-xray-localization", model=model, image_processor=processor)` builds the package's
pipeline for an in-memory model. (A saved folder declares its pipelines in `config.json`; loading one by path runs
the folder's copy of the code, with `trust_remote_code=True`.)
"""

import importlib.metadata

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForObjectDetection,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_clarity import CLARITY_PRESETS, NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES, ClarityConfig
from .image_processing_clarity import ClarityImageProcessor
from .modeling_clarity import (
    ClarityForMultiLabelLocalization,
    ClarityModel,
    ClarityModelOutput,
    ClarityMultiLabelLocalizationOutput,
    ClarityPreTrainedModel,
)
from .pipeline_clarity import PIPELINE_TASK, ClarityImageClassificationPipeline, ClarityLocalizationPipeline

try:  # the installed distribution's version (pyproject.toml is its one source)
    __version__ = importlib.metadata.version("clarity_hf")
except importlib.metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"


def _register_auto_classes() -> None:
    AutoConfig.register("clarity", ClarityConfig, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForImageClassification, AutoModelForObjectDetection):
        auto_class.register(ClarityConfig, ClarityForMultiLabelLocalization, exist_ok=True)
    AutoImageProcessor.register(
        ClarityConfig, slow_image_processor_class=ClarityImageProcessor, exist_ok=True
    )
    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK, pipeline_class=ClarityLocalizationPipeline, pt_model=AutoModel, type="image"
    )


_register_auto_classes()

__all__ = [
    "ClarityConfig",
    "ClarityForMultiLabelLocalization",
    "ClarityImageClassificationPipeline",
    "ClarityImageProcessor",
    "ClarityLocalizationPipeline",
    "ClarityModel",
    "ClarityModelOutput",
    "ClarityMultiLabelLocalizationOutput",
    "ClarityPreTrainedModel",
    "CLARITY_PRESETS",
    "NIH_PATHOLOGIES",
    "NIH_BOXED_PATHOLOGIES",
]
