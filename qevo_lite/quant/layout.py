"""Which layers are quantized, and the one weight layout the rest of the package sees.

Quantized layers: ``nn.Linear``, ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d`` (grouped and
depthwise too). The scale is per *output channel*, so every quantized weight is handled in the
**rows layout**: dimension 0 is the output channel, dimension 1 the input channel (of its group),
then the kernel. For Linear and (non-transposed) convs that is the module's weight itself,
``(C_out, C_in/groups, *k)``. A transposed conv stores its weight as ``(C_in, C_out/groups, *k)``:
its output channel is dimension 1, per group. :func:`to_rows` turns such a weight into
``(C_out, C_in/groups, *k)`` (group ``gi``'s output channel ``j``, global ``gi * C_out/groups + j``,
gets ``weight[gi*C_in/groups:(gi+1)*C_in/groups, j]``) and :func:`from_rows` turns it back; both
are exact (a permutation) and depend only on the module's type and ``groups``, never on its
channel counts, so they apply to any tensor laid out like the weight.

Codes, float weights and decoded weights of a :class:`~qevo_lite.quant.grid.LayerQuant` are in the
rows layout; only code that writes into a module's weight converts (:func:`from_rows`, or
:func:`weight_positions` for single entries).
"""
from __future__ import annotations

import torch
from torch import nn

QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
               nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def is_transposed(module: nn.Module) -> bool:
    """Whether ``module`` is a transposed conv (its weight's output channel is dimension 1)."""
    return isinstance(module, TRANSPOSED)


def _groups(shape, module: nn.Module, dim: int) -> int:
    g = int(getattr(module, "groups", 1))
    if len(shape) < 2 or shape[dim] % g:
        raise ValueError(f"A {type(module).__name__} weight with groups={g} cannot have shape {tuple(shape)}.")
    return g


def to_rows(weight: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``weight`` (laid out like ``module.weight``) in the rows layout: dimension 0 = output channel.

    The tensor itself for Linear and convs; for a transposed conv, ``(C_in, C_out/g, *k)`` becomes
    ``(C_out, C_in/g, *k)`` (a copy). Depends only on the module's type and ``groups``."""
    if not is_transposed(module):
        return weight
    g = _groups(weight.shape, module, 0)
    c_in, c_out_g, k = weight.shape[0], weight.shape[1], tuple(weight.shape[2:])
    return weight.reshape(g, c_in // g, c_out_g, *k).transpose(1, 2).reshape(g * c_out_g, c_in // g, *k)


def from_rows(rows: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Inverse of :func:`to_rows`: a rows-layout tensor laid out like ``module.weight``."""
    if not is_transposed(module):
        return rows
    g = _groups(rows.shape, module, 0)
    c_out, c_in_g, k = rows.shape[0], rows.shape[1], tuple(rows.shape[2:])
    return rows.reshape(g, c_out // g, c_in_g, *k).transpose(1, 2).reshape(g * c_in_g, c_out // g, *k)


def rows_shape(shape, module: nn.Module) -> tuple:
    """The shape :func:`to_rows` gives a weight of ``shape``."""
    shape = tuple(shape)
    if not is_transposed(module):
        return shape
    g = _groups(shape, module, 0)
    return (g * shape[1], shape[0] // g) + shape[2:]


def weight_positions(flat: torch.Tensor, shape, module: nn.Module) -> tuple:
    """Where the rows-layout entries at flat indices ``flat`` sit in a module weight of ``shape``:
    an index tuple for ``weight[...]`` / ``weight.index_put_`` (any memory layout)."""
    if not is_transposed(module):
        return torch.unravel_index(flat, tuple(shape))
    rshape = rows_shape(shape, module)
    c, i, *k = torch.unravel_index(flat, rshape)
    c_out_g, c_in_g = rshape[0] // int(module.groups), rshape[1]
    return (c // c_out_g * c_in_g + i, c % c_out_g, *k)
