# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""CLARiTy demo Space: upload a chest X-ray (PNG, JPEG or DICOM), see the 14 pathology scores and a class heatmap
with its boxes. Research use only; not for clinical use.

    python space/app.py --model path/to/exported_folder_or_hub_id   # serves on http://127.0.0.1:7860

The model comes from `--model`, else the `CLARITY_MODEL` environment variable (a folder or a Hub id); it is loaded
with `clarity_hf.hub.load_for_inference` (safetensors only, no code from the repo executed).
"""

from __future__ import annotations

import argparse
import os

# clarity_hf is installed (the Space's requirements.txt; `pip install -e .` in a checkout), never put on sys.path here.
from clarity_hf.hub import load_for_inference
from clarity_hf.image_processing_clarity import score_function
from clarity_hf.pipeline_clarity import model_labels
from clarity_hf.visualization import decode_for_display, overlay_heatmap

DEFAULT_MODEL_ENV = "CLARITY_MODEL"
DISCLAIMER = (
    "**Research demo only: NOT for clinical use.** Scores and heatmaps can be wrong and must not inform any "
    "diagnosis or treatment."
)
_PIPELINE = None


def set_model(model: str | os.PathLike) -> None:
    """Load the model (folder or Hub id) used by [`predict`]."""
    global _PIPELINE
    _PIPELINE = load_for_inference(model)


def get_pipeline():
    if _PIPELINE is None:
        model = os.environ.get(DEFAULT_MODEL_ENV)
        if not model:
            raise RuntimeError(
                f"no model: pass --model or set {DEFAULT_MODEL_ENV} to a model folder or Hub id"
            )
        set_model(model)
    return _PIPELINE


def class_names() -> list[str]:
    return model_labels(get_pipeline().model.config)


def score_description() -> str:
    """What the scores are, from the model's problem_type (the pipeline computes them that way)."""
    name = score_function(get_pipeline().model.config.problem_type)
    return {"sigmoid": "sigmoid probabilities", "softmax": "softmax probabilities"}.get(name, "model outputs")


def predict(image_path: str | None, class_name: str, threshold: float):
    """One X-ray -> ({pathology: score by the model's problem_type}, overlay of `class_name`'s heatmap and boxes at the image's original
    size, the boxes of that class as a list of {"label", "score", "box"}). `threshold` is the heatmap threshold
    (on the [0, 1]-normalised heatmap) that turns the map into boxes."""
    if not image_path:
        raise ValueError("upload a PNG, JPEG or DICOM chest X-ray first")
    pipe = get_pipeline()
    names = class_names()
    if class_name not in names:
        raise ValueError(f"unknown class {class_name!r}; choose one of {names}")
    result = pipe(str(image_path), threshold=0.0, heatmap_threshold=float(threshold), classes=[class_name])
    image = decode_for_display(pipe.image_processor, str(image_path))
    overlay = overlay_heatmap(image, result["heatmaps"][names.index(class_name)], result["boxes"])
    return result["scores"], overlay, result["boxes"]


def build_demo():
    import gradio as gr

    names = class_names()
    default_class = "Cardiomegaly" if "Cardiomegaly" in names else names[0]
    with gr.Blocks(title="CLARiTy chest X-ray localization (research demo)") as demo:
        gr.Markdown("# CLARiTy: chest X-ray pathology scores and heatmaps\n\n" + DISCLAIMER)
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Chest X-ray (PNG, JPEG or DICOM)", type="filepath")
                class_name = gr.Dropdown(choices=names, value=default_class, label="Heatmap class")
                threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Heatmap threshold for boxes")
                button = gr.Button("Run", variant="primary")
            with gr.Column():
                scores = gr.Label(num_top_classes=len(names), label=f"Scores ({score_description()})")
        overlay = gr.Image(type="pil", label="Heatmap overlay with boxes (original size)")
        boxes = gr.JSON(label="Boxes")
        inputs, outputs = [upload, class_name, threshold], [scores, overlay, boxes]
        button.click(predict, inputs, outputs, api_name="predict")
        class_name.change(predict, inputs, outputs, api_name=False)
        threshold.release(predict, inputs, outputs, api_name=False)
    return demo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="CLARiTy demo Space")
    parser.add_argument("--model", default=os.environ.get(DEFAULT_MODEL_ENV), help="model folder or Hub id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    if not args.model:
        parser.error(f"pass --model or set {DEFAULT_MODEL_ENV}")
    set_model(args.model)
    build_demo().launch(server_name=args.host, server_port=args.port, share=False)


if __name__ == "__main__":
    main()
