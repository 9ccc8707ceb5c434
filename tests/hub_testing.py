# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Test helpers for the Hub export: a tiny exported model, an evaluation JSON, and a loopback stand-in for the few
Hub API endpoints that `HfApi.create_repo` / `create_branch` / `create_commit` call: it records every request and
keeps the committed files in memory."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from clarity_hf.hub.reload_check import fresh_process_env


class HubStandIn:
    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        self.repos: dict[str, dict] = {}
        self.commits: list[dict] = []
        self.branches: list[tuple[str, str]] = []
        self.validated_yaml: list[dict] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self):
                stand_in.requests.append(("GET", self.path))
                self._reply(404, {"error": f"not implemented: GET {self.path}"})

            def do_POST(self):
                stand_in.requests.append(("POST", self.path))
                body = self._body()
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    data = json.loads(body)
                    repo = (
                        f"{data.get('organization') or 'user'}/{data['name']}"
                        if "/" not in data["name"]
                        else data["name"]
                    )
                    stand_in.repos[repo] = {**data, "authorization": self.headers.get("authorization")}
                    return self._reply(200, {"url": f"http://{self.headers['Host']}/{repo}", "name": repo})
                if path == "/api/validate-yaml":
                    stand_in.validated_yaml.append(json.loads(body))
                    return self._reply(200, {"errors": [], "warnings": []})
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path)
                if match:
                    files = json.loads(body)["files"]
                    return self._reply(
                        200,
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                for f in files
                            ]
                        },
                    )
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/branch/(.+)", path)
                if match:
                    stand_in.branches.append((match.group(1), match.group(2)))
                    return self._reply(200, {})
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path)
                if match:
                    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                    header = next(item["value"] for item in lines if item["key"] == "header")
                    files = {
                        item["value"]["path"]: base64.b64decode(item["value"]["content"])
                        for item in lines
                        if item["key"] == "file"
                    }
                    query = self.path.split("?", 1)[1] if "?" in self.path else ""
                    stand_in.commits.append(
                        {
                            "repo": match.group(1),
                            "revision": match.group(2),
                            "header": header,
                            "files": files,
                            "query": query,
                            "other_keys": [i["key"] for i in lines if i["key"] not in ("header", "file")],
                        }
                    )
                    host = self.headers["Host"]
                    return self._reply(
                        200,
                        {
                            "commitUrl": f"http://{host}/{match.group(1)}/commit/{'0' * 40}",
                            "commitOid": "0" * 40,
                            "pullRequestUrl": f"http://{host}/{match.group(1)}/discussions/1"
                            if "create_pr=1" in query
                            else None,
                        },
                    )
                return self._reply(404, {"error": f"not implemented: POST {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------------- tiny export
REPO_ROOT = Path(__file__).resolve().parents[1]


def run_without_clarity_hf(script: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `script` (which starts with `clarity_hf.hub.reload_check.WITHOUT_CLARITY_HF`) in a new Python process that
    cannot import the local clarity_hf (no PYTHONPATH, no user site), offline, with its own remote-code module cache
    beside the script; asserts that it succeeded and returns the completed process."""
    work = Path(script).parent
    env = {**fresh_process_env(work / "modules"), "PYTHONNOUSERSITE": "1"}
    run = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return run


def load_space_app(model_folder: Path, module_name: str = "clarity_space_app"):
    """space/app.py as a module, with `model_folder` set as its model."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / "space" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.set_model(model_folder)
    return module


def real_fixtures() -> dict[str, Path]:
    """The real chest X-rays shipped in tests/fixtures: one NIH PNG (512 x 512) and one DICOM."""
    root = REPO_ROOT / "tests" / "fixtures"
    return {"png": root / "00000001_000.png", "dicom": root / "siim_pneumothorax_example.dcm"}


def make_results(seed: int = 0, synthetic_only: bool = True, model_name: str = "clarity-tiny-test") -> dict:
    """An evaluation report built by `clarity_hf.evaluation.report.build_report`, with random, non-round figures, so
    that a card that reproduces them cannot have typed them: the classification is `compute_auroc` on random scores
    and labels (a real AurocResult); the localization a TuningResult-shaped dict with random accuracy tables (the
    report keeps its `eval` half). A second model entry ("other-model") holds different numbers, so a card that
    reads the wrong entry fails."""
    from clarity_hf import NIH_BOXED_PATHOLOGIES, NIH_PATHOLOGIES
    from clarity_hf.evaluation.classification import compute_auroc
    from clarity_hf.evaluation.report import build_report, evaluation_metadata

    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(250, 350))

    def classification():
        labels = rng.random((n_images, len(NIH_PATHOLOGIES))) < rng.uniform(0.05, 0.4, len(NIH_PATHOLOGIES))
        scores = labels * rng.uniform(0.2, 1.5, len(NIH_PATHOLOGIES)) + rng.normal(size=labels.shape)
        return compute_auroc(scores, labels, class_names=NIH_PATHOLOGIES, n_bootstrap=50, seed=seed)

    def table(thresholds):
        values = {
            name: sorted(rng.uniform(0, 1, len(thresholds)).tolist(), reverse=True)
            for name in NIH_BOXED_PATHOLOGIES
        }
        macro = np.mean(list(values.values()), axis=0).tolist()
        return {"thresholds": thresholds, "per_class": values, "macro": macro}

    def localization(split):
        return {
            "split": split,
            "classes": list(NIH_BOXED_PATHOLOGIES),
            "heatmap_thresholds": {name: [0.45] for name in NIH_BOXED_PATHOLOGIES},
            "n_images": 40,
            "n_gt_boxes": {name: 5 for name in NIH_BOXED_PATHOLOGIES},
            "n_predicted_boxes": 77,
            "iou": table([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]),
            "iobb": table([0.1, 0.25, 0.5, 0.75, 0.9]),
            "false_positives": {
                "criterion": "IoU <= 0.1",
                "per_image": float(rng.uniform(0, 3)),
                "per_class": {name: float(rng.uniform(0, 1)) for name in NIH_BOXED_PATHOLOGIES},
                "total": 9,
            },
        }

    tuned = {
        "objective": "mean_iou_accuracy",
        "per_class": False,
        "grid": [0.3, 0.45, 0.6],
        "tune_split": "tune",
        "eval_split": "eval",
        "thresholds": {name: 0.45 for name in NIH_BOXED_PATHOLOGIES},
        "objective_values": {name: rng.uniform(0, 1, 3).tolist() for name in NIH_BOXED_PATHOLOGIES},
        "tune": localization("tune"),
        "eval": localization("eval"),
    }
    metadata = {
        "training": {
            "synthetic_only": synthetic_only,
            "dataset_name": "clarity_hf synthetic chest X-rays" if synthetic_only else "NIH ChestX-ray14",
            "dataset_id": None,
            "base_model": None,
            "description": "A few steps on the CPU, for tests.",
            "recipe": {"optimizer": "AdamW", "learning_rate": float(rng.uniform(1e-4, 1e-3)), "epochs": 1},
        },
        # an NIH ChestX-ray14 official-test evaluation: the card may show the published rows beside it
        "evaluation": evaluation_metadata(
            "NIH ChestX-ray14", "test", n_images, NIH_PATHOLOGIES, "32 x 32", split_source="official lists"
        ),
    }
    models = {
        model_name: {"classification": classification(), "localization": tuned, "notes": "tests"},
        "other-model": {"classification": classification(), "localization": localization("eval")},
    }
    return build_report(models, title="test report", metadata=metadata)


def make_tiny_export(folder: Path, results: dict | None, example_images=()) -> tuple[list[Path], object]:
    """Export a random clarity-tiny model (seeded) with the ClarityImageProcessor at 64 px into `folder`."""
    import torch

    from clarity_hf import ClarityConfig, ClarityForMultiLabelLocalization
    from clarity_hf.hub import save_for_hub
    from clarity_hf.image_processing_clarity import ClarityImageProcessor

    torch.manual_seed(0)
    model = ClarityForMultiLabelLocalization(ClarityConfig.from_preset("clarity-tiny")).eval()
    processor = ClarityImageProcessor(size=64)
    files = save_for_hub(
        model,
        processor,
        folder,
        results=results,
        example_images=example_images,
        repo_id="test-org/clarity-tiny",
    )
    return files, model
