"""clarity_hf: the CLARiTy chest X-ray model as a native Hugging Face model.

Importing the package registers CLARiTy with the transformers auto classes, so that local folders load with
`AutoModel.from_pretrained(path)` without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForObjectDetection,
)

from .configuration_clarity import CLARITY_PRESETS, NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES, ClarityConfig
from .image_processing_clarity import ClarityImageProcessor
from .modeling_clarity import (
    ClarityForMultiLabelLocalization,
    ClarityModel,
    ClarityModelOutput,
    ClarityMultiLabelLocalizationOutput,
    ClarityPreTrainedModel,
)

__version__ = "0.1.0"


def _register_auto_classes() -> None:
    AutoConfig.register("clarity", ClarityConfig, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForImageClassification, AutoModelForObjectDetection):
        auto_class.register(ClarityConfig, ClarityForMultiLabelLocalization, exist_ok=True)
    AutoImageProcessor.register(
        ClarityConfig, slow_image_processor_class=ClarityImageProcessor, exist_ok=True
    )


_register_auto_classes()

__all__ = [
    "ClarityConfig",
    "ClarityForMultiLabelLocalization",
    "ClarityImageProcessor",
    "ClarityModel",
    "ClarityModelOutput",
    "ClarityMultiLabelLocalizationOutput",
    "ClarityPreTrainedModel",
    "CLARITY_PRESETS",
    "NIH_PATHOLOGIES",
    "NIH_BOXED_PATHOLOGIES",
]
