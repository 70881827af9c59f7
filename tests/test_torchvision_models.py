"""torchvision's classifiers and a detector through ``qv.quantize`` and ``qevo quantize``, offline: untrained
weights (``weights=None``, nothing downloaded) and generated images at a reduced resolution. The methods'
output error to the float model is still a meaningful comparison, and the ONNX file is checked by onnxruntime."""
import numpy as np
import pytest
import torch
from PIL import Image

import qevo_lite as qv
from qevo_lite.cli import main
from qevo_lite.torchvision_models import (DetectorHeadOutputs, batchnorm_statistics_from, image_folder,
                                          torchvision_model)

SIDE = 64


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An ImageFolder of generated RGB images: 2 classes x 10 (smooth random fields, 80 x 96 pixels)."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for c in ("n01440764", "n01443537"):
        (root / c).mkdir()
        for i in range(10):
            small = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
            Image.fromarray(small).resize((96, 80), Image.BILINEAR).save(root / c / f"img_{i}.png")
    return root


def test_image_folder_is_resized_normalised_and_limited(folder):
    data = image_folder(folder, SIDE, limit=7)
    x, y = data[0]
    assert len(data) == 7 and x.shape == (3, SIDE, SIDE) and y in (0, 1)
    assert x.min() < -0.5 and x.max() > 0.5          # normalised with ImageNet's mean and std
    with pytest.raises(FileNotFoundError, match="class sub-folders"):
        image_folder(folder / "missing")


def test_unknown_models_and_bad_options_are_refused():
    with pytest.raises(ValueError, match="Unknown torchvision model"):
        torchvision_model("torchvision:resnet19")
    with pytest.raises(ValueError, match="weights=None"):
        torchvision_model("resnet18", weights="DEFAULT", num_classes=10)


def test_untrained_batchnorm_gets_the_statistics_of_real_inputs(folder):
    torch.manual_seed(0)
    model = torchvision_model("mobilenet_v2", num_classes=10)
    x = torch.stack([image_folder(folder, SIDE)[i][0] for i in range(16)])
    with torch.no_grad():
        before = model(x).std().item()
        after = batchnorm_statistics_from(model, x)(x).std().item()
    assert before < 1e-6 < 0.01 < after and not model.training   # vanishing outputs -> a trained scale


def test_a_classifier_through_every_method(folder):
    """MobileNetV2 (depthwise convs, 53 layers): each method quantizes every layer; the ES lowers the output
    error it is given to fit (16 images: it overfits them, see the README)."""
    torch.manual_seed(0)
    model = torchvision_model("torchvision:mobilenet_v2", num_classes=10)
    x = torch.stack([image_folder(folder, SIDE)[i][0] for i in range(20)])
    batchnorm_statistics_from(model, x[:16])
    short_es = qv.methods.EvolutionConfig(qv.methods.QuadraticLocal(samples=16, generations=40, patience=10),
                                          qv.methods.GlobalStage(budget=4))   # the default ES takes minutes here
    reports = {}
    for name, method in (("rtn", "rtn"), ("gptq", "gptq"), ("es", short_es)):
        _, reports[name] = qv.quantize(model, x[:16], bits=4, method=method, test=x[16:], samples=16, budget=4,
                                       progress=False)
        assert not reports[name].left_in_float and reports[name].weights > 2 * 10 ** 6
        assert all(torch.isfinite(torch.tensor(v)) for v in reports[name].test.values())
    assert reports["es"].search["loss"] < reports["rtn"].search["loss"] / 10
    assert reports["gptq"].moved > 0 and reports["es"].moved > 0


def test_a_detector_is_quantized_through_its_head_outputs(folder, tmp_path):
    torch.manual_seed(0)
    model = torchvision_model("torchvision:ssdlite320_mobilenet_v3_large")
    assert isinstance(model, DetectorHeadOutputs)
    x = torch.stack([image_folder(folder, SIDE)[i][0] for i in range(16)])
    batchnorm_statistics_from(model, x[:12])
    out = model(x)
    assert out.ndim == 2 and out.shape[0] == 16 and out.std() > 0.01
    qmodel, rtn = qv.quantize(model, x[:12], bits=4, method="rtn", progress=False, onnx=tmp_path / "ssd.onnx")
    assert rtn.weights > 10 ** 6 and not rtn.left_in_float and not rtn.onnx.float_layers
    with torch.no_grad():
        want = qmodel(x[12:])
    assert (qv.run_onnx(tmp_path / "ssd.onnx", x[12:]) - want).abs().max() <= 1e-4 * max(1.0, want.abs().max())


def test_the_command_writes_an_onnx_file_onnxruntime_agrees_with(folder, tmp_path, capsys):
    out = tmp_path / "r18.onnx"
    rc = main(["--threads", "2", "quantize", "--model", "torchvision:resnet18", "--weights", "none", "--data",
               str(folder), "--images", "12", "--resolution", str(SIDE), "--bits", "4", "--method", "rtn",
               "--samples", "12", "--no-progress", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and out.exists() and "ONNX" in text and "12 images" in text
    torch.manual_seed(0)
    x = torch.stack([image_folder(folder, SIDE)[i][0] for i in range(12, 16)])
    got = qv.run_onnx(out, x)
    assert got.shape == (4, 1000) and torch.isfinite(got).all()
    assert main(["quantize", "--model", "torchvision:resnet18", "--weights", "none", "--data", str(folder),
                 "--out", str(tmp_path / "r18.pt")]) == 2          # not an ONNX path: a one-line error
    assert "ONNX file" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["resnet50"])   # "vgg16_bn" passes too, in about two minutes: not in CI
def test_the_large_classifiers_pass_through_nearest_rounding(folder, name):
    """ResNet-50 (25.6 M weights) through ``qv.quantize`` with RTN (VGG-16-BN, 138 M, the same; the other
    methods' per-layer statistics of VGG-16's 25,088-input classifier layer alone would be 2.5 GB: see the README)."""
    torch.manual_seed(0)
    model = torchvision_model(f"torchvision:{name}", num_classes=10)
    x = torch.stack([image_folder(folder, SIDE)[i][0] for i in range(8)])
    batchnorm_statistics_from(model, x)
    qmodel, report = qv.quantize(model, x, bits=4, method="rtn", progress=False)
    assert not report.left_in_float and report.weights > 2 * 10 ** 7 and report.packed_bytes < report.float_bytes / 7
    with torch.no_grad():
        assert torch.isfinite(qmodel(x)).all()
