"""Compact export of a :class:`~qevo_lite.quant.QuantState`: codes bit-packed at ``bits`` bits each.

File layout (little-endian):

``b"QEVO1"`` | uint32 header length | JSON header | payload

The header lists, per layer, the codes' shape, grid and the byte offsets of its
packed codes (``ceil(n * bits / 8)`` bytes), float32 scales, int16 zero points and,
if given, its float32 bias. The codes are in the rows layout of :mod:`qevo_lite.quant.layout`
(output channel first: for a transposed conv that is not its module's weight shape; a
state loaded back is applied with :meth:`QuantState.apply`, which converts). Nothing is
compressed, so the file size is the real storage cost of the quantized weights.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .grid import LayerQuant, QuantConfig, QuantState

MAGIC = b"QEVO1"


def pack_codes(codes: torch.Tensor, qmin: int, bits: int) -> bytes:
    """Pack integer codes (any shape, values ``qmin..qmin+2^bits-1``) into ``ceil(n*bits/8)`` bytes."""
    u = (codes.reshape(-1).to(torch.int32) - qmin).numpy().astype(np.uint8)
    planes = np.unpackbits(u[:, None], axis=1)[:, 8 - bits:]  # (n, bits), most significant first
    return np.packbits(planes.reshape(-1)).tobytes()


def unpack_codes(data: bytes, n: int, qmin: int, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: int16 tensor (n,)."""
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: n * bits].reshape(n, bits)
    full = np.zeros((n, 8), dtype=np.uint8)
    full[:, 8 - bits:] = planes
    return torch.from_numpy(np.packbits(full, axis=1).reshape(-1).astype(np.int16)) + qmin


def save_state(state: QuantState, path: str | Path, model: nn.Module | None = None) -> int:
    """Write ``state`` (and the biases of ``model``'s quantized layers, if given) to ``path``.

    Returns the file size in bytes.
    """
    bits = state.config.bits
    header = {"config": {"bits": bits, "scheme": state.config.scheme,
                         "granularity": state.config.granularity, "scale_rule": state.config.scale_rule},
              "layers": {}}
    chunks, offset = [], 0

    def add(raw: bytes) -> list:
        nonlocal offset
        chunks.append(raw)
        offset += len(raw)
        return [offset - len(raw), len(raw)]

    for name, lq in state.layers.items():
        entry = {"shape": list(lq.codes.shape), "qmin": lq.qmin, "qmax": lq.qmax,
                 "codes": add(pack_codes(lq.codes, lq.qmin, bits)),
                 "scale": add(lq.scale.numpy().astype("<f4").tobytes()),
                 "zero_point": add(lq.zero_point.numpy().astype("<i2").tobytes())}
        bias = model.get_submodule(name).bias if model is not None else None
        if bias is not None:
            entry["bias"] = add(bias.detach().cpu().numpy().astype("<f4").tobytes())
        header["layers"][name] = entry
    head = json.dumps(header).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<I", len(head)) + head + b"".join(chunks))
    return path.stat().st_size


def load_state(path: str | Path) -> tuple[QuantState, dict[str, torch.Tensor]]:
    """Read a file written by :func:`save_state`: ``(state, biases by layer name)``."""
    raw = Path(path).read_bytes()
    if raw[:5] != MAGIC:
        raise ValueError(f"{path} is not a qevo-lite quantized-state file.")
    (n_head,) = struct.unpack("<I", raw[5:9])
    header = json.loads(raw[9:9 + n_head])
    payload = memoryview(raw)[9 + n_head:]
    cfg = QuantConfig(**header["config"])
    state, biases = QuantState(cfg), {}
    get = lambda span: bytes(payload[span[0]:span[0] + span[1]])  # noqa: E731
    for name, e in header["layers"].items():
        n = int(np.prod(e["shape"]))
        codes = unpack_codes(get(e["codes"]), n, e["qmin"], cfg.bits).reshape(e["shape"])
        scale = torch.from_numpy(np.frombuffer(get(e["scale"]), dtype="<f4").copy())
        zp = torch.from_numpy(np.frombuffer(get(e["zero_point"]), dtype="<i2").copy())
        state.layers[name] = LayerQuant(codes, scale, zp, e["qmin"], e["qmax"])
        if "bias" in e:
            biases[name] = torch.from_numpy(np.frombuffer(get(e["bias"]), dtype="<f4").copy())
    return state, biases


def float_size_bytes(state: QuantState) -> int:
    """Bytes the same weights take as float32 (for the size comparison)."""
    return 4 * state.num_weights
