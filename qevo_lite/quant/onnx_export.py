"""The quantized model as a standard file: ONNX with integer weights, run by onnxruntime.

:func:`export_onnx` writes a model whose quantized layers hold their **codes** as integer initializers and
decode them in the graph with ``DequantizeLinear(codes, scale, zero_point)``, so the file stores
``bits``-bit integers, not float weights:

* W2-W4 codes are stored as ONNX ``INT4`` (symmetric grids) or ``UINT4`` (asymmetric), two codes per
  byte (opset 21 or later); W5-W8 codes, or any width at an older opset, in ``INT8`` / ``UINT8`` containers.
* Scales are float32 and zero points of the codes' type: one per output channel (``axis`` = the module
  weight's output-channel dimension: 0, or 1 for a transposed conv) or one per tensor.
* ``DequantizeLinear`` computes ``(codes - zero_point) * scale``: the same float operations as
  :meth:`~qevo_lite.quant.grid.LayerQuant.dequantize`, so the decoded weights are bit-identical to the
  PyTorch model's, and the outputs differ only by the two runtimes' float summation order.

The graph itself comes from ``torch.onnx.export`` of the decoded model (the torch.export-based exporter; the
TorchScript one if that fails, and the result says so). Each quantized layer's weight initializer is found by
its parameter name, else by its exact value (or, for a 2-D weight, its transpose); a layer found neither way,
or whose per-channel scales ONNX's per-axis form cannot hold (a grouped transposed conv), stays float32 in the
file, and :class:`OnnxExport` lists it with the reason. Activations stay float (weight-only quantization,
as everywhere in this package).

Needs the ``export`` extra: ``pip install "qevo-lite[export]"`` (onnx, onnxruntime, onnxscript).
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .grid import LayerQuant, QuantState
from .layout import from_rows, is_transposed

INT4_OPSET = 21   # the first opset whose DequantizeLinear takes 4-bit integers


def _onnx():
    try:
        import onnx
    except ImportError as e:   # pragma: no cover - depends on the environment
        raise ImportError('ONNX export needs the onnx package: pip install "qevo-lite[export]"') from e
    return onnx


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        bytes: its size on disk.
        opset: the ONNX opset of the graph.
        exporter: ``"dynamo"`` (torch.export-based) or ``"torchscript"`` (the fallback).
        integer_layers: ``{layer: ONNX element type of its codes}``, e.g. ``{"features.0": "INT4"}``.
        float_layers: ``{layer: why it stayed float32}`` for quantized layers the file keeps in float.
    """

    path: Path
    bytes: int
    opset: int
    exporter: str
    integer_layers: dict = field(default_factory=dict)
    float_layers: dict = field(default_factory=dict)

    def __str__(self) -> str:
        kinds = sorted(set(self.integer_layers.values()))
        text = (f"{self.path.name}: {self.bytes:,} bytes, opset {self.opset}, {len(self.integer_layers)} layers "
                f"with integer weights ({', '.join(kinds) or 'none'})")
        if self.float_layers:
            text += f"; left in float32: {self.float_layers}"
        return text


def _torch_export(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> str:
    """Export ``model`` (eval mode) to ``path`` with a dynamic batch dimension; returns the exporter used."""
    kwargs = dict(input_names=["input"], output_names=["output"])
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), opset_version=max(opset, 18), dynamo=True,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
                              external_data=False, **kwargs)
        return "dynamo"
    except Exception as first:   # noqa: BLE001 - any failure of torch.export: try the tracing exporter
        reason = f"{type(first).__name__}: {str(first).splitlines()[0][:200]}"
    warnings.warn(f"torch.onnx's torch.export-based exporter failed ({reason}); using the TorchScript exporter.",
                  stacklevel=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), opset_version=min(opset, 20), dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **kwargs)
    return "torchscript"


def _exported(model: nn.Module, example: torch.Tensor, opset: int):
    """``(ModelProto at ``opset``, exporter)`` of ``model``, without the exporter's per-node debug metadata
    (source lines and FX node text: a third of a small model's file)."""
    onnx = _onnx()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        exporter = _torch_export(model, example, raw, opset)
        proto = onnx.load(str(raw))
    for node in proto.graph.node:
        del node.metadata_props[:]
    current = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if current != opset:
        proto = onnx.version_converter.convert_version(proto, opset)
    return proto, exporter


def _element_type(lq: LayerQuant, bits: int, opset: int) -> tuple[int, str, bool]:
    """``(ONNX TensorProto type, its name, packed two per byte?)`` for a layer's codes: signed types for
    symmetric grids (``qmin < 0``), unsigned for asymmetric ones; 4-bit from opset 21 at W2-W4."""
    onnx = _onnx()
    signed = lq.qmin < 0
    if bits <= 4 and opset >= INT4_OPSET:
        return (onnx.TensorProto.INT4, "INT4", True) if signed else (onnx.TensorProto.UINT4, "UINT4", True)
    return (onnx.TensorProto.INT8, "INT8", False) if signed else (onnx.TensorProto.UINT8, "UINT8", False)


def _int_tensor(name: str, values: np.ndarray, kind, packed4: bool):
    """An integer initializer; 4-bit values are packed two per byte, the first in the low nibble (ONNX's
    layout for INT4/UINT4)."""
    onnx = _onnx()
    flat = values.reshape(-1).astype(np.int64)
    if packed4:
        nib = (flat & 0xF).astype(np.uint8)
        if len(nib) % 2:
            nib = np.append(nib, np.uint8(0))
        raw = (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()
    else:
        raw = flat.astype(np.int8 if kind == onnx.TensorProto.INT8 else np.uint8).tobytes()
    t = onnx.TensorProto()
    t.name, t.data_type, t.raw_data = name, kind, raw
    t.dims.extend(values.shape)
    return t


def _find_weight(inits: dict, name: str, weight: np.ndarray):
    """``(initializer name, transposed?)`` of a layer's weight in the exported graph, or ``None``."""
    onnx = _onnx()
    candidate = inits.get(f"{name}.weight")
    if candidate is not None and np.array_equal(onnx.numpy_helper.to_array(candidate), weight):
        return candidate.name, False
    for init in inits.values():
        if tuple(init.dims) == weight.shape and np.array_equal(onnx.numpy_helper.to_array(init), weight):
            return init.name, False
        if weight.ndim == 2 and tuple(init.dims) == weight.shape[::-1] and np.array_equal(
                onnx.numpy_helper.to_array(init), weight.T):
            return init.name, True
    return None


def _integer_weights(model_proto, qmodel: nn.Module, state: QuantState, opset: int) -> tuple[dict, dict]:
    """Replace each quantized layer's float weight initializer by codes + ``DequantizeLinear`` (in place)."""
    onnx = _onnx()
    graph = model_proto.graph
    inits = {i.name: i for i in graph.initializer}
    per_tensor = state.config.granularity == "per_tensor"
    done, left, nodes = {}, {}, []
    for name, lq in state.layers.items():
        module = qmodel.get_submodule(name)
        if is_transposed(module) and getattr(module, "groups", 1) > 1 and not per_tensor:
            left[name] = "a grouped transposed conv's per-channel scales are not one ONNX axis"
            continue
        weight = module.weight.detach().cpu().numpy()
        found = _find_weight(inits, name, weight)
        if found is None:
            left[name] = "its weight is not an initializer of the exported graph (changed by the exporter)"
            continue
        init_name, transposed = found
        codes = from_rows(lq.codes, module).cpu().numpy()
        axis = 1 if is_transposed(module) else 0
        if transposed:
            codes, axis = codes.T, 1 - axis
        kind, kind_name, packed4 = _element_type(lq, state.config.bits, opset)
        shape = () if per_tensor else (len(lq.scale),)
        scale = lq.scale.numpy().astype(np.float32).reshape(shape)
        zp = lq.zero_point.numpy().reshape(shape)
        graph.initializer.remove(inits.pop(init_name))
        graph.initializer.extend([_int_tensor(f"{init_name}_codes", codes, kind, packed4),
                                  onnx.numpy_helper.from_array(scale, f"{init_name}_scale"),
                                  _int_tensor(f"{init_name}_zero_point", zp, kind, packed4)])
        attrs = {} if per_tensor else {"axis": axis}
        nodes.append(onnx.helper.make_node("DequantizeLinear", [f"{init_name}_codes", f"{init_name}_scale",
                                                                f"{init_name}_zero_point"], [init_name],
                                           name=f"{init_name}_dequantize", **attrs))
        done[name] = kind_name
    for node in reversed(nodes):   # decoders first: the graph stays topologically sorted
        graph.node.insert(0, node)
    return done, left


def export_onnx(model: nn.Module, state: QuantState, example: torch.Tensor, path, opset: int = INT4_OPSET,
                check: bool = True) -> OnnxExport:
    """Write ``state`` applied to ``model`` as an ONNX file with integer weights (see the module docstring).

    Args:
        model: the float model the state was made from, batch-norm folded as the state expects (not modified).
        state: the quantized state (codes, scales, zero points per layer).
        example: one input batch (N, ...) on the model's device; the batch dimension is exported as dynamic.
        path: where to write the ``.onnx`` file (parent folders are made).
        opset: ONNX opset; 21 or later stores W2-W4 codes as 4-bit integers, earlier ones in 8-bit containers.
        check: run ``onnx.checker`` on the result.
    Returns: an :class:`OnnxExport` (size on disk, which layers hold integers, which stayed float and why).
    """
    onnx = _onnx()
    if opset < 13:
        raise ValueError(f"opset {opset} has no per-axis DequantizeLinear; use 13 or later (21 for 4-bit types).")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    qmodel = state.to_model(model).eval()
    proto, exporter = _exported(qmodel, example, opset)
    done, left = _integer_weights(proto, qmodel, state, opset)
    if check:
        onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return OnnxExport(path, path.stat().st_size, opset, exporter, done, left)


def export_float_onnx(model: nn.Module, example: torch.Tensor, path, opset: int = INT4_OPSET) -> int:
    """Write the float model as ONNX (the size to compare with); returns the file size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _onnx().save(_exported(model.eval(), example, opset)[0], str(path))
    return path.stat().st_size


def run_onnx(path, inputs: torch.Tensor) -> torch.Tensor:
    """Run an exported model with onnxruntime on the CPU: ``inputs`` (N, ...) -> the first output as a tensor."""
    try:
        import onnxruntime as ort
    except ImportError as e:   # pragma: no cover - depends on the environment
        raise ImportError('Running ONNX models needs onnxruntime: pip install "qevo-lite[export]"') from e
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: inputs.detach().cpu().float().numpy()})[0])
