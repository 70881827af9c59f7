"""``qv.quantize``: one call on a user's own model (nested modules, a functional forward, grouped and
transposed convs, batch-norm) with labelled data or inputs alone, every method, and an honest report."""
import pytest
import torch
from torch import nn

import qevo_lite as qv


class Custom(nn.Module):
    """Nested blocks, BN, a grouped conv, a transposed conv, a functional skip, a Bilinear left in float."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.ModuleDict({"grouped": nn.Conv2d(8, 8, 3, padding=1, groups=4),
                                    "up": nn.ConvTranspose2d(8, 4, 2, stride=2)})
        self.head = nn.Linear(4 * 4 * 4, 10)
        self.mix = nn.Bilinear(10, 10, 10)

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(h + self.block["grouped"](h))
        h = nn.functional.avg_pool2d(self.block["up"](h), 4)
        z = self.head(h.flatten(1))
        return z + 0.1 * self.mix(z, z)


def test_every_method_on_a_custom_model_with_inputs_alone():
    torch.manual_seed(0)
    model = Custom().eval()
    x = torch.randn(96, 1, 8, 8)
    losses = {}
    for method in qv.methods.method_names():
        with pytest.warns(UserWarning, match="mix"):
            qmodel, report = qv.quantize(model, x, bits=3, method=method, samples=64, budget=16, adaround_steps=200,
                                         progress=False)
        assert report.left_in_float == ["mix"] and report.method == method
        assert report.packed_bytes < report.float_bytes
        assert set(report.search) == {"loss"}                      # inputs alone: MSE to the float outputs
        losses[method] = report.search["loss"]
        assert report.rtn_search["loss"] == pytest.approx(losses["rtn"])
        # the returned model decodes codes on the grid: its grouped conv has at most 2^3 levels per channel
        w = qmodel.get_submodule("block.grouped").weight.detach()
        assert all(len(torch.unique(w[c])) <= 8 for c in range(8))
        if method == "rtn":
            assert report.moved == 0
        else:
            assert report.moved > 0
    assert all(losses[m] < losses["rtn"] for m in ("gptq", "adaround", "brecq", "es"))


def test_labelled_data_reports_accuracy_and_the_held_out_split(tiny_vgg, digits):
    qmodel, report = qv.quantize(tiny_vgg, digits.search, bits=2, method="es", test=digits.test, samples=64,
                                 budget=16, progress=False)
    assert set(report.test) == {"loss", "accuracy"} and set(report.rtn_test) == {"loss", "accuracy"}
    assert report.search["loss"] < report.rtn_search["loss"]
    assert report.test["accuracy"] == pytest.approx(qv.evaluate(qmodel, digits.test)["accuracy"])
    assert "held-out" in str(report) and "smaller" in str(report)
    with pytest.raises(ValueError, match="Unknown method"):
        qv.quantize(tiny_vgg, digits.search, method="magic")


def test_a_fisher_weighted_es_on_a_custom_model_with_inputs_alone():
    """The ES with its local fitness weighted by the loss's squared gradients runs on a user's model through
    ``qv.quantize`` (inputs alone: the loss is the MSE to the float outputs) and lowers the search loss."""
    torch.manual_seed(0)
    model = Custom().eval()
    x = torch.randn(96, 1, 8, 8)
    config = qv.methods.EvolutionConfig(qv.methods.QuadraticLocal(samples=64, generations=200, weighting="fisher"),
                                        qv.methods.GlobalStage(budget=8))
    with pytest.warns(UserWarning, match="mix"):
        _, report = qv.quantize(model, x, bits=3, method=config, progress=False)
    assert report.moved > 0 and report.search["loss"] < report.rtn_search["loss"]
