"""A saved folder loads through the auto classes, locally and as remote code in a fresh process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForObjectDetection

from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization, ClarityImageProcessor
from clarity_hf.hub.reload_check import WITHOUT_CLARITY_HF
from clarity_hf.modeling_clarity import CLARITY_AUTO_MAP

NIH_PNG = Path(__file__).resolve().parent / "fixtures" / "00000001_000.png"

REMOTE_LOAD = WITHOUT_CLARITY_HF + textwrap.dedent(
    """
    try:
        import clarity_hf  # noqa: F401
        raise AssertionError("clarity_hf must not be importable here")
    except ImportError:
        pass
    import torch
    from transformers import AutoImageProcessor, AutoModel
    folder, out, image = sys.argv[1], sys.argv[2], sys.argv[3]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    pixel_values = torch.load(folder + "/pixel_values.pt")
    with torch.no_grad():
        output = model(pixel_values)
        processed = processor(image, return_tensors="pt")["pixel_values"]
        heatmaps = processor.post_process_heatmaps(model(processed), target_sizes=[(512, 512)])[0]
    torch.save(
        {
            "logits": output.logits,
            "heatmaps": output.heatmaps,
            "class": type(model).__name__,
            "processor": type(processor).__name__,
            "processed": processed,
            "image_heatmaps": heatmaps,
        },
        out,
    )
    model.save_pretrained(folder + "/resaved")
    """
)


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def saved_tiny_model(tmp_path: Path) -> tuple[ClarityForMultiLabelLocalization, Path, torch.Tensor]:
    torch.manual_seed(0)
    model = ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).eval()
    folder = tmp_path / "clarity-tiny"
    model.save_pretrained(folder)
    processor = ClarityImageProcessor(size={"height": 64, "width": 64})
    processor.register_for_auto_class("AutoImageProcessor")  # as save_for_hub does
    processor.save_pretrained(folder)
    pixel_values = torch.randn(2, 3, 64, 64)
    torch.save(pixel_values, folder / "pixel_values.pt")
    return model, folder, pixel_values


def test_saved_folder_layout(tmp_path):
    _, folder, _ = saved_tiny_model(tmp_path)
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "configuration_clarity.py",
        "modeling_clarity.py",
        "image_processing_clarity.py",
        "xray_io.py",
        "heatmaps.py",
        "preprocessor_config.json",
    } <= names
    processor_config = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor_config["auto_map"] == {
        "AutoImageProcessor": "image_processing_clarity.ClarityImageProcessor"
    }
    assert not any(name.endswith(".bin") for name in names)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == CLARITY_AUTO_MAP
    assert config["model_type"] == "clarity" and config["problem_type"] == "multi_label_classification"
    assert [config["id2label"][str(i)] for i in range(14)][:2] == ["Atelectasis", "Cardiomegaly"]
    assert "anatomical_prior" in load_file(folder / "model.safetensors")


def test_local_auto_classes_resolve_without_remote_code(tmp_path):
    model, folder, pixel_values = saved_tiny_model(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(folder), ClarityConfig)
    for auto_class in (AutoModel, AutoModelForImageClassification, AutoModelForObjectDetection):
        loaded = auto_class.from_pretrained(folder).eval()
        assert isinstance(loaded, ClarityForMultiLabelLocalization)
        with torch.no_grad():
            assert torch.equal(loaded(pixel_values).logits, model(pixel_values).logits)


def test_remote_code_load_in_fresh_process_is_bit_identical(tmp_path):
    model, folder, pixel_values = saved_tiny_model(tmp_path)
    script = tmp_path / "remote_load.py"
    script.write_text(REMOTE_LOAD)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    result_file = tmp_path / "remote.pt"
    subprocess.run(
        [sys.executable, str(script), str(folder), str(result_file), str(NIH_PNG)],
        cwd=workdir,
        env=clean_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    remote = torch.load(result_file)
    assert remote["class"] == "ClarityForMultiLabelLocalization"
    with torch.no_grad():
        local = model(pixel_values)
    assert torch.equal(remote["logits"], local.logits)
    assert torch.equal(remote["heatmaps"], local.heatmaps)
    # the remote processor gives the same pixels as the package's, and heatmaps come back at the image size
    assert remote["processor"] == "ClarityImageProcessor"
    local_pixels = ClarityImageProcessor.from_pretrained(folder)(str(NIH_PNG), return_tensors="pt")[
        "pixel_values"
    ]
    assert torch.equal(remote["processed"], local_pixels)
    assert remote["image_heatmaps"].shape == (14, 512, 512)
    # save -> load -> save gives bit-identical weights
    first = load_file(folder / "model.safetensors")
    second = load_file(folder / "resaved" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    resaved_config = json.loads((folder / "resaved" / "config.json").read_text())
    assert resaved_config["auto_map"] == CLARITY_AUTO_MAP
