"""Running the frozen backbone fast.

On CPU the backbone runs through ONNX Runtime: exported once with the TorchScript-based exporter
(dynamic batch axis) and cached under the feature cache, keyed by architecture, backbone weights
and input size. On CUDA it runs eagerly in channels_last with autocast. Both return the pooled
pre-logit features as float32 numpy, and the ONNX path matches eager PyTorch to float tolerance.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from classification.config import RUNTIMES
from classification.fileio import atomic_path
from classification.models import backbone_features, backbone_id, split_model

_logger = logging.getLogger(__name__)

Runner = Callable[[torch.Tensor], np.ndarray]


def resolve_runtime(runtime: str, device: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if runtime == "auto":
        return "torch" if device.startswith("cuda") else "onnx"
    return runtime


class _Features(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return backbone_features(self.model, x)


def frozen_part(model: nn.Module, tail_blocks: int = 0) -> nn.Module:
    """What runs once per (image, view): the whole backbone to pooled features, or the trunk
    before the last `tail_blocks` blocks."""
    return split_model(model, tail_blocks)[0] if tail_blocks else _Features(model)


def make_runner(model: nn.Module, size: int, runtime: str, device: str,
                cache_root: Path | None, tail_blocks: int = 0) -> Runner:
    """A function from a batch (B, 3, size, size) to flattened frozen-part outputs (B, D) numpy."""
    runtime = resolve_runtime(runtime, device)
    model = model.eval()
    if runtime == "onnx":
        return _onnx_runner(model, size, cache_root, tail_blocks)
    return torch_runner(frozen_part(model, tail_blocks), device)


def torch_runner(part: nn.Module, device: str) -> Runner:
    """Run `part` eagerly (channels_last; autocast on CUDA) and return flattened float32 numpy."""
    cuda = device.startswith("cuda")
    part = part.to(device=device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> np.ndarray:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
            out = part(x)
        return out.float().reshape(len(out), -1).cpu().numpy()

    return run


def _onnx_runner(model: nn.Module, size: int, cache_root: Path | None, tail_blocks: int) -> Runner:
    path = onnx_path(model, size, cache_root, tail_blocks)
    return onnx_file_runner(frozen_part(model, tail_blocks), size, path)


def onnx_file_runner(part: nn.Module, size: int, path: Path) -> Runner:
    """Run `part` (one input, one output with a batch axis) through ONNX Runtime on the CPU from
    `path`, exporting it there first if it is missing, and once more if the file is damaged.
    `path` must name `part`'s weights (a hash), since an existing file is trusted."""
    import onnxruntime as ort

    if not path.is_file():
        export_onnx(part, size, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # a damaged export: rebuild it once
        _logger.warning("cached ONNX model %s is unusable (%s); exporting again", path, e)
        export_onnx(part, size, path)
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> np.ndarray:
        out = session.run(None, {name: x.numpy()})[0]
        return out.reshape(len(out), -1)

    return run


def onnx_path(model: nn.Module, size: int, cache_root: Path | None, tail_blocks: int = 0) -> Path:
    root = Path(cache_root) if cache_root is not None else Path(os.environ.get("TMPDIR", "/tmp")) / "autolabel"
    arch = model.pretrained_cfg.get("architecture", type(model).__name__)
    cut = f"-cut{tail_blocks}" if tail_blocks else ""
    return root / "onnx" / f"{arch}-{backbone_id(model, tail_blocks)}-{size}{cut}.onnx"


def export_onnx(part: nn.Module, size: int, path: Path) -> None:
    """Export the frozen part (image -> features or maps) with a dynamic batch axis, atomically."""
    _logger.info("exporting %s to ONNX (once per backbone and input size)", path.name)
    dummy = torch.zeros(2, 3, size, size)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(part.eval().cpu(), (dummy,), str(tmp), dynamo=False,
                          input_names=["images"], output_names=["features"], opset_version=17,
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}})
