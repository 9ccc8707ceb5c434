"""clarity_hf: the CLARiTy chest X-ray model as a native Hugging Face model."""

from .configuration_clarity import CLARITY_PRESETS, NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES, ClarityConfig

__version__ = "0.1.0"

__all__ = ["ClarityConfig", "CLARITY_PRESETS", "NIH_PATHOLOGIES", "NIH_BOXED_PATHOLOGIES"]
