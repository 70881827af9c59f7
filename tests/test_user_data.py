"""``qv.quantize`` takes data as PyTorch users have it (DataLoader, Dataset, pair, tensor) and refuses bad data
with messages that say what to pass instead, before any method runs; the user's model is never modified."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import qevo_lite as qv


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5)).eval()


def _data(n=80):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 5, (n,), generator=g)


@pytest.mark.parametrize("wrap", ["loader", "dataset", "inputs_loader"])
def test_a_loader_or_dataset_gives_the_same_codes_and_report_as_tensors(wrap):
    model, (x, y) = _net(), _data()
    kw = dict(bits=2, method="gptq", samples=32, progress=False)
    if wrap == "inputs_loader":     # a loader of inputs alone: the float model's outputs become the targets
        ref, ref_report = qv.quantize(model, x, **kw)
        got, report = qv.quantize(model, DataLoader(x, batch_size=24), **kw)
    else:
        ref, ref_report = qv.quantize(model, (x, y), test=(x[:20], y[:20]), **kw)
        ds = TensorDataset(x, y)
        data = DataLoader(ds, batch_size=24) if wrap == "loader" else ds
        got, report = qv.quantize(model, data, test=DataLoader(TensorDataset(x[:20], y[:20]), batch_size=7), **kw)
        assert report.test == pytest.approx(ref_report.test)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), got.state_dict().values()))
    assert report.search == pytest.approx(ref_report.search) and report.moved == ref_report.moved


def test_the_users_model_is_not_modified():
    model, (x, y) = _net(), _data()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qv.quantize(model, (x, y), bits=2, method="es", samples=32, budget=4, progress=False)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model[1], nn.BatchNorm2d)                      # BN folded in a copy, not here


BAD = [
    ("empty tensor", lambda x, y: (x[:0],), {}, ValueError, "holds no samples"),
    ("empty loader", lambda x, y: (DataLoader(TensorDataset(x[:0], y[:0])),), {}, ValueError, "holds no samples"),
    ("samples=0", lambda x, y: ((x, y),), {"samples": 0}, ValueError, "samples must be an integer >= 1"),
    ("unknown loss", lambda x, y: ((x, y),), {"loss": "l1"}, ValueError, "Unknown loss 'l1'"),
    ("fewer labels", lambda x, y: ((x, y[:10]),), {}, ValueError, "80 inputs but 10 targets"),
    ("labels out of range", lambda x, y: ((x, y + 3),), {}, ValueError, r"must lie in \[0, 4\]"),
    ("float labels", lambda x, y: ((x, y.float()),), {}, ValueError, "one integer class index per sample"),
    ("NaN inputs", lambda x, y: ((x.masked_fill(x > 2, float("nan")), y),), {}, ValueError, "NaN or inf"),
    ("inf in test", lambda x, y: ((x, y),), {"test": None}, ValueError, "test's inputs hold"),
    ("integer inputs", lambda x, y: ((x.long(), y),), {}, TypeError, "floating-point inputs"),
    ("a dict", lambda x, y: ({"x": x},), {}, TypeError, "must be a qv.Split"),
]


@pytest.mark.parametrize("case,args,kw,error,match", BAD, ids=[b[0] for b in BAD])
def test_bad_data_gets_a_clear_error_before_any_method_runs(case, args, kw, error, match):
    model, (x, y) = _net(), _data()
    if case == "inf in test":
        kw = {"test": (x.clone().fill_(float("inf")), y)}
    with pytest.raises(error, match=match):
        qv.quantize(model, *args(x, y), bits=2, method="rtn", progress=False, **kw)
