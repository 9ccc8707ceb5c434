"""transformers' own common model and config tests (`ModelTesterMixin`, `ConfigTester`) run against CLARiTy, the
way transformers tests ViT.

transformers' `tests/` folder is not in its wheel. Point `TRANSFORMERS_TESTS_DIR` at the `tests` folder of the
installed version's source, e.g.

    pip download --no-deps --no-binary :all: transformers==$(python -c "import transformers as t; print(t.__version__)")
    tar xzf transformers-*.tar.gz  # then TRANSFORMERS_TESTS_DIR=$PWD/transformers-<version>/tests

The source distribution lacks three helper modules that the common files import (the generation and export mixins
and the shared config kwargs): they are replaced by empty stand-ins here, so the generation and `torch.export`
mixins do not run (CLARiTy does not generate; tests/test_modeling_conformance.py covers torch.export). Skipped
without that folder or without the `parameterized` package transformers' tests need.
"""

import importlib
import importlib.util
import os
import shutil
import sys
import unittest
from pathlib import Path
from unittest import mock

import pytest

TESTS_DIR = os.environ.get("TRANSFORMERS_TESTS_DIR")
REASON = "set TRANSFORMERS_TESTS_DIR to transformers' source tests/ folder (not shipped in the wheel)"
if not TESTS_DIR or not (Path(TESTS_DIR) / "test_modeling_common.py").is_file():
    pytest.skip(REASON, allow_module_level=True)
pytest.importorskip("parameterized", reason="transformers' common tests need the `parameterized` package")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers.models.auto import modeling_auto  # noqa: E402

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization, ClarityModel  # noqa: E402

# Values that differ from PretrainedConfig's defaults (as transformers' tests/utils/test_configuration_utils.py).
CONFIG_COMMON_KWARGS = """
config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "tie_word_embeddings": False,
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
"""
STAND_INS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": CONFIG_COMMON_KWARGS,
}


def _import_common_tests(workdir: Path):
    """Copy the two common files into a fresh package (the helpers they import relatively beside them)."""
    package = workdir / "transformers_common_tests"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("test_modeling_common.py", "test_configuration_common.py"):
        shutil.copy(Path(TESTS_DIR) / name, package / name)
    for relative, text in STAND_INS.items():
        target = package / relative
        target.parent.mkdir(exist_ok=True)
        (target.parent / "__init__.py").write_text("")
        source = Path(TESTS_DIR) / relative
        if source.is_file():
            shutil.copy(source, target)
        else:
            target.write_text(text)
    # The package is registered from its folder (no sys.path entry); its modules then import relatively beside it.
    spec = importlib.util.spec_from_file_location(
        package.name, package / "__init__.py", submodule_search_locations=[str(package)]
    )
    sys.modules[package.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules[package.name])
    modeling = importlib.import_module("transformers_common_tests.test_modeling_common")
    configuration = importlib.import_module("transformers_common_tests.test_configuration_common")
    return modeling, configuration


_WORKDIR = Path(__import__("tempfile").mkdtemp(prefix="clarity-common-tests-"))
try:
    _modeling, _configuration = _import_common_tests(_WORKDIR)
except Exception as error:  # an incompatible transformers checkout
    pytest.skip(f"transformers' common tests do not import here: {error!r}", allow_module_level=True)
ModelTesterMixin = _modeling.ModelTesterMixin
floats_tensor = _modeling.floats_tensor
ConfigTester = _configuration.ConfigTester


class ClarityModelTester:
    def __init__(
        self,
        parent,
        batch_size=3,
        image_size=32,
        patch_size=8,
        num_channels=3,
        is_training=True,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=3,
    ):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.is_training = is_training
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_labels = num_labels
        # the sequence: one class token per label, then the patches
        self.seq_length = num_labels + (image_size // patch_size) ** 2

    def get_config(self) -> ClarityConfig:
        return ClarityConfig(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            num_attention_map_layers=1,
            foreground_hidden_size=8,
            anatomical_prior_size=8,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}


class ClarityCommonTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (ClarityModel, ClarityForMultiLabelLocalization)
    test_resize_embeddings = False
    test_torch_exportable = False  # the export mixin is a stand-in; torch.export is tested in its own file

    def setUp(self):
        # An in-tree model's base class is listed in MODEL_MAPPING_NAMES, which the common tests read to tell a base
        # model (no loss, skipped by the training tests) from a model with a head; registering with AutoModel does
        # not list it there.
        patch = mock.patch.dict(modeling_auto.MODEL_MAPPING_NAMES, {"clarity": "ClarityModel"})
        patch.start()
        self.addCleanup(patch.stop)
        self.model_tester = ClarityModelTester(self)
        # ViT's test passes hidden_size=37; ClarityConfig refuses a width its 6 default heads do not divide.
        self.config_tester = ConfigTester(
            self, config_class=ClarityConfig, has_text_modality=False, hidden_size=32, num_attention_heads=4
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class is ClarityForMultiLabelLocalization:
            # multi-hot targets, the default problem_type's labels
            inputs_dict["labels"] = torch.zeros(self.model_tester.batch_size, self.model_tester.num_labels)
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model_get_set_embeddings(self):
        # As transformers' vision models (ViT) override it: the input embedding is a patch projection, not a table.
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), nn.Module)
            output_embeddings = model.get_output_embeddings()
            self.assertTrue(output_embeddings is None or isinstance(output_embeddings, nn.Linear))
