"""ONNX export with integer weights, checked by a second runtime (onnxruntime): same outputs as the PyTorch
fake-quantized model on inputs the export never saw, integer codes in the file, a file that really is smaller,
and an honest list of what stayed float."""
import numpy as np
import onnx
import pytest
import torch
from torch import nn

import qevo_lite as qv
from qevo_lite.quant.onnx_export import export_float_onnx, export_onnx, run_onnx

TOL = 1e-4


class Mixed(nn.Module):
    """A conv, a depthwise conv, a transposed conv, a grouped transposed conv, a bias-free linear and a
    functional forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.up_grouped = nn.ConvTranspose2d(4, 4, 1, groups=2)
        self.head = nn.Linear(4 * 16 * 16, 10, bias=False)

    def forward(self, x):
        h = nn.functional.relu(self.conv(x))
        h = h + self.depthwise(h)
        h = self.up_grouped(self.up(h))
        return self.head(torch.flatten(h, 1))


@pytest.fixture(scope="module")
def mixed():
    torch.manual_seed(0)
    return Mixed().eval(), torch.randn(3, 1, 8, 8), torch.randn(17, 1, 8, 8)   # model, example, held-out


@pytest.mark.parametrize("bits,scheme,granularity,kind", [
    (2, "symmetric", "per_channel", "INT4"), (3, "asymmetric", "per_channel", "UINT4"),
    (6, "symmetric", "per_tensor", "INT8"), (4, "asymmetric", "per_tensor", "UINT4")])
def test_onnxruntime_matches_the_fake_quantized_model(mixed, tmp_path, bits, scheme, granularity, kind):
    model, example, held_out = mixed
    state = qv.quantize_model(model, bits=bits, scheme=scheme, granularity=granularity)
    out = export_onnx(model, state, example, tmp_path / "model.onnx")
    expected = {"conv", "depthwise", "up", "head"} | ({"up_grouped"} if granularity == "per_tensor" else set())
    assert set(out.integer_layers) == expected and set(out.integer_layers.values()) == {kind}
    if granularity == "per_channel":   # one axis cannot hold a grouped transposed conv's per-channel scales
        assert set(out.float_layers) == {"up_grouped"} and "grouped transposed" in out.float_layers["up_grouped"]
    got = run_onnx(out.path, held_out)                     # another batch size: the batch is dynamic
    want = state.to_model(model)(held_out).detach()
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= TOL


def test_the_file_holds_the_codes_and_is_smaller(mixed, tmp_path):
    model, example, _ = mixed
    state = qv.quantize_model(model, bits=2)
    out = export_onnx(model, state, example, tmp_path / "w2.onnx")
    proto = onnx.load(str(out.path))
    inits = {i.name: i for i in proto.graph.initializer}
    codes = inits["head.weight_codes"]
    assert codes.data_type == onnx.TensorProto.INT4 and len(codes.raw_data) == 10 * 4 * 16 * 16 // 2
    assert "head.weight" not in inits                       # the float weight is gone: decoded in the graph
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 4 and all(n.output[0].endswith(".weight") for n in dq)
    # the codes in the file are the state's codes (low nibble first, two's complement)
    raw = np.frombuffer(codes.raw_data, dtype=np.uint8)
    nibbles = np.stack([raw & 0xF, raw >> 4], axis=1).reshape(-1).astype(np.int16)
    decoded = np.where(nibbles >= 8, nibbles - 16, nibbles)
    assert np.array_equal(decoded, state.layers["head"].codes.reshape(-1).numpy())
    float_bytes = export_float_onnx(model, example, tmp_path / "fp32.onnx")
    assert out.bytes < float_bytes / 4                      # 2-bit codes in 4-bit containers: about 8x on weights


def test_an_older_opset_stores_8_bit_containers(mixed, tmp_path):
    model, example, held_out = mixed
    state = qv.quantize_model(model, bits=2, granularity="per_tensor")
    out = export_onnx(model, state, example, tmp_path / "opset20.onnx", opset=20)
    assert out.opset == 20 and set(out.integer_layers.values()) == {"INT8"}
    assert (run_onnx(out.path, held_out) - state.to_model(model)(held_out).detach()).abs().max() <= TOL
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, state, example, tmp_path / "old.onnx", opset=10)


class Branchy(nn.Module):
    """A forward with Python control flow on a tensor's value: torch.export cannot capture it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = self.a(x)
        if float(h.sum()) > -1e9:
            h = torch.relu(h)
        return self.b(h)


def test_the_tracing_exporter_takes_over_and_says_so(tmp_path):
    torch.manual_seed(1)
    model = Branchy().eval()
    state = qv.quantize_model(model, bits=3)
    with pytest.warns(UserWarning, match="TorchScript exporter"):
        out = export_onnx(model, state, torch.randn(2, 6), tmp_path / "branchy.onnx")
    assert out.exporter == "torchscript" and set(out.integer_layers) == {"a", "b"}
    x = torch.randn(9, 6)
    assert (run_onnx(out.path, x) - state.to_model(model)(x).detach()).abs().max() <= TOL


def test_quantize_writes_the_onnx_file_and_reports_its_size(tiny_vgg, digits, tmp_path):
    path = tmp_path / "out" / "tiny.onnx"
    qmodel, report = qv.quantize(tiny_vgg, digits.search, bits=2, method="rtn", progress=False, onnx=path)
    assert path.exists() and report.onnx.path == path and report.onnx.bytes == path.stat().st_size
    assert report.onnx.bytes < report.onnx_float_bytes and "ONNX" in str(report)
    x = digits.test.x[:50]
    assert (run_onnx(path, x) - qmodel(x).detach()).abs().max() <= TOL
