"""Running the frozen backbone fast.

On CPU the backbone runs through ONNX Runtime: exported once with the TorchScript-based exporter
(dynamic batch axis) and cached under the feature cache (without one, in the private per-user
cache folder), keyed by architecture, backbone weights and input size, with its SHA-256 beside
it: an export that fails the check is made again before use. On CUDA it runs eagerly in
channels_last with autocast. Both return the pooled pre-logit features as float32 numpy, and the
ONNX path matches eager PyTorch to float tolerance.

`RUNTIMES` maps a runtime's name to its runner factory. torch and ONNX Runtime are imported when
a runner is made, not when this module loads, so `TrainConfig` checks its `runtime` against this
very dict without loading either.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from classification.digest import bytes_digest, record, recorded
from classification.fileio import atomic_path, user_cache_dir
from classification.registry import check_name

if TYPE_CHECKING:
    import torch
    from torch import nn

_logger = logging.getLogger(__name__)

Runner = Callable[["torch.Tensor"], np.ndarray]


def resolve_runtime(runtime: str, device: str) -> str:
    """`auto` becomes onnx on CPU and torch on CUDA; an unknown name is an `InputError`."""
    check_name("runtime", runtime, ("auto", *RUNTIMES))
    if runtime == "auto":
        return "torch" if device.startswith("cuda") else "onnx"
    return runtime


def make_runner(model: nn.Module, size: int, runtime: str, device: str,
                cache_root: Path | None, tail_blocks: int = 0) -> Runner:
    """A function from a batch (B, 3, size, size) to flattened frozen-part outputs (B, D) numpy."""
    factory = RUNTIMES[resolve_runtime(runtime, device)]
    return factory(model.eval(), size, device, cache_root, tail_blocks)


def _onnx(model: nn.Module, size: int, device: str, cache_root: Path | None, tail_blocks: int) -> Runner:
    """ONNX Runtime on the CPU, from the export cached under `cache_root` (made once)."""
    from classification.models import frozen_part

    return onnx_file_runner(frozen_part(model, tail_blocks), size, onnx_path(model, size, cache_root, tail_blocks))


def _torch(model: nn.Module, size: int, device: str, cache_root: Path | None, tail_blocks: int) -> Runner:
    """Eager PyTorch on `device`."""
    from classification.models import frozen_part

    return torch_runner(frozen_part(model, tail_blocks), device)


RUNTIMES = {"onnx": _onnx, "torch": _torch}


def torch_runner(part: nn.Module, device: str) -> Runner:
    """Run `part` eagerly (channels_last; autocast on CUDA) and return flattened float32 numpy."""
    import torch

    cuda = device.startswith("cuda")
    part = part.to(device=device, memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> np.ndarray:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=cuda):
            out = part(x)
        return out.float().reshape(len(out), -1).cpu().numpy()

    return run


def onnx_file_runner(part: nn.Module, size: int, path: Path) -> Runner:
    """Run `part` through ONNX Runtime on the CPU from `path`, exporting it there first if it is
    missing, and once more if it fails its checksum (or has none) or does not load. `path` must
    name `part`'s weights (a hash), since an export that passes its check is trusted."""
    session = open_session(path, lambda p: export_onnx(part, size, p))
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> np.ndarray:
        out = session.run(None, {name: x.numpy()})[0]
        return out.reshape(len(out), -1)

    return run


def open_session(path: Path, export: Callable[[Path], None]):
    """An ONNX Runtime CPU session on the cached export at `path`, exporting it first (`export(path)`)
    when absent, and once more (one warning) when it fails its checksum, has none, or does not load."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(_checked_export(path, export), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # checked, yet unusable (an export from another onnxruntime): once more
        _logger.warning("cached ONNX model %s is unusable (%s); exporting again", path, e)
        return ort.InferenceSession(_export_bytes(path, export), opts, providers=["CPUExecutionProvider"])


def _checked_export(path: Path, export: Callable[[Path], None]) -> bytes:
    """The export's bytes, checked against the digest recorded with it; a missing, damaged or
    unrecorded export is made again (one warning). The bytes checked are the bytes loaded."""
    if not path.is_file():
        return _export_bytes(path, export)
    data, expected = path.read_bytes(), recorded(path)
    if expected is not None and bytes_digest(data) == expected:
        return data
    why = "has no recorded checksum" if expected is None else "fails its checksum (damaged)"
    _logger.warning("cached ONNX model %s %s; exporting again", path, why)
    return _export_bytes(path, export)


def _export_bytes(path: Path, export: Callable[[Path], None]) -> bytes:
    export(path)
    return path.read_bytes()


def cache_root_or_user(cache_root: Path | None) -> Path:
    """The cache folder asked for, else the user's private one (never a shared, guessable path)."""
    return Path(cache_root) if cache_root is not None else user_cache_dir()


def onnx_path(model: nn.Module, size: int, cache_root: Path | None, tail_blocks: int = 0) -> Path:
    from classification.models import backbone_id

    root = cache_root_or_user(cache_root)
    arch = model.pretrained_cfg.get("architecture", type(model).__name__)
    cut = f"-cut{tail_blocks}" if tail_blocks else ""
    return root / "onnx" / f"{arch}-{backbone_id(model, tail_blocks)}-{size}{cut}.onnx"


def export_onnx(part: nn.Module, size: int, path: Path, dynamic_size: bool = False) -> None:
    """Export the frozen part (image -> features or maps) with a dynamic batch axis, atomically,
    and record its digest beside it (NAME.onnx.sha256).

    `dynamic_size` also leaves height and width free (fully convolutional models, such as a UNet
    whose input sides are multiples of its stride)."""
    import torch

    _logger.info("exporting %s to ONNX (once per model and input size)", path.name)
    dummy = torch.zeros(2, 3, size, size)
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(part.eval().cpu(), (dummy,), str(tmp), dynamo=False,
                          input_names=["images"], output_names=["features"], opset_version=17,
                          dynamic_axes={"images": axes, "features": axes if dynamic_size else {0: "batch"}})
    record(path)
