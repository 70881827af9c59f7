"""Data streamed from a DataLoader or Dataset: the same numbers as the same data as tensors, for every method,
whatever the loader's batch size; the methods that sum over images (GPTQ, the ES's local stage) never hold a
layer's inputs for all images; a loader that would give other images on each pass is refused."""
import weakref

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import qevo_lite as qv
from qevo_lite.core.streaming import BATCH, StreamedSplit, first_inputs, in_memory, input_batches
from qevo_lite.evaluators import quadratic
from qevo_lite.evaluators.quadratic import LayerQuadratic
from qevo_lite.methods import method_names
from qevo_lite.quant.grid import QuantConfig, quantize_model
from qevo_lite.rounding import layers as layer_walk

N = BATCH + 44          # more than one batch of every pass


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, padding=1, groups=3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 6 * 6, 5)).eval()


def _data(n=N):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_every_pass_gives_the_same_fixed_batches_whatever_the_loaders_batch_size():
    x, y = _data()
    split = StreamedSplit(DataLoader(TensorDataset(x, y), batch_size=37))
    assert len(split) == N and split.labelled
    sizes = [len(bx) for bx, _ in split.batches()]
    assert sizes == [BATCH, N - BATCH]
    got = torch.cat([bx for bx, _ in split.batches()])
    assert torch.equal(got, x) and torch.equal(torch.cat([by for _, by in split.batches()]), y)
    assert [len(bx) for bx, _ in split.batches(100, size=40)] == [40, 40, 20]
    head = in_memory(split, 50)
    assert torch.equal(head.x, x[:50]) and torch.equal(head.y, y[:50])
    assert torch.equal(torch.cat(list(input_batches(first_inputs(split, 70), 32))), x[:70])


def test_inputs_alone_get_targets_per_batch():
    x, _ = _data()
    calls = []
    split = StreamedSplit(TensorDataset(x), targets_of=lambda b: calls.append(len(b)) or b.sum((1, 2, 3)))
    assert not split.labelled
    assert torch.allclose(in_memory(split).y, x.sum((1, 2, 3)))
    assert sum(calls) == N
    assert torch.equal(torch.cat(list(input_batches(first_inputs(split)))), x)
    assert sum(calls) == N, "the layer walk's input batches made targets (a float forward) they do not use"


def test_a_shuffling_loader_and_mixed_batches_are_refused():
    x, y = _data()
    with pytest.raises(ValueError, match="shuffle=False"):
        StreamedSplit(DataLoader(TensorDataset(x, y), shuffle=True))

    class Mixed(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return (x[i], y[i]) if i < 2 else x[i]
    with pytest.raises(ValueError, match="some batches have targets"):
        StreamedSplit(DataLoader(Mixed(), batch_size=2))
    bad = x.clone()
    bad[N - 1, 0, 0, 0] = float("nan")      # in the last batch: the checking pass reads every batch
    with pytest.raises(ValueError, match="NaN or inf"):
        StreamedSplit(DataLoader(TensorDataset(bad, y), batch_size=64))


@pytest.mark.parametrize("method", method_names())
def test_every_method_gives_the_same_codes_from_a_loader_as_from_tensors(method):
    model, (x, y) = _net(), _data()
    kw = dict(bits=2, method=method, samples=N - 20, budget=6, adaround_steps=20, progress=False)
    ref, ref_report = qv.quantize(model, (x, y), test=(x[:30], y[:30]), **kw)
    got, report = qv.quantize(model, DataLoader(TensorDataset(x, y), batch_size=29),
                              test=DataLoader(TensorDataset(x[:30], y[:30]), batch_size=7), **kw)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), got.state_dict().values()))
    assert report.search == pytest.approx(ref_report.search) and report.test == pytest.approx(ref_report.test)
    assert report.moved == ref_report.moved and report.scale_rule == ref_report.scale_rule


@pytest.mark.parametrize("method", ["gptq", "es"])
def test_the_summing_methods_never_hold_a_layers_inputs_for_all_images(method, monkeypatch):
    """GPTQ's Hessians and the ES's quadratic forms are summed batch by batch: neither asks for a layer's whole
    inputs, and every layer input they see is one batch of at most BATCH images."""
    seen = []
    real = layer_walk.layer_io_batches

    def watched(*args, **kw):
        for inputs, targets in real(*args, **kw):
            seen.append(len(inputs))
            yield inputs, targets

    def whole(self):
        raise AssertionError("a summing method asked for a layer's inputs for all images")
    monkeypatch.setattr(layer_walk, "layer_io_batches", watched)
    monkeypatch.setattr(layer_walk.LayerIO, "whole", whole)
    model, (x, y) = _net(), _data()
    qv.quantize(model, DataLoader(TensorDataset(x, y), batch_size=50), bits=2, method=method, samples=N, budget=0,
                progress=False)
    assert seen and max(seen) <= BATCH and sum(seen) % N == 0


@pytest.mark.parametrize("method", ["gptq", "es"])
def test_no_earlier_batch_of_layer_inputs_is_alive_while_the_next_is_read(method, monkeypatch):
    """Memory is one batch of layer inputs, not two: whenever the loader is asked for images, every layer input
    and target handed out before has been dropped (by the walk, the re-cutting and the method summing them)."""
    handed_out = []
    real = layer_walk.layer_io_batches

    def watched(*args, **kw):
        for inputs, targets in real(*args, **kw):
            handed_out.extend(weakref.ref(t) for t in (inputs, targets) if t is not None)
            yield inputs, targets
            del inputs, targets
    monkeypatch.setattr(layer_walk, "layer_io_batches", watched)
    monkeypatch.setattr(quadratic, "UNFOLDED_PER_CHUNK", 2 ** 11)   # chunks of a few images, as at 224 x 224
    n = 3 * BATCH                           # three pieces of every pass: reads between them
    x, y = _data(n)
    reads = []

    class Images(IterableDataset):
        def __iter__(self):
            for i in range(0, n, 50):
                alive = sum(r() is not None for r in handed_out)
                assert alive == 0, f"{alive} earlier layer inputs/targets alive while the next images are read"
                reads.append(i)
                yield x[i:i + 50], y[i:i + 50]
    qv.quantize(_net(), DataLoader(Images(), batch_size=None), bits=2, method=method, samples=n, budget=0,
                progress=False)
    assert handed_out and len(reads) > 3 * len(range(0, n, 50))   # several passes, each checked at every read


def test_a_streamed_quadratic_form_equals_the_whole_one_with_fisher_weights():
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    lq = quantize_model(nn.Sequential(conv), QuantConfig(3)).layers["0"]
    x = torch.randn(50, 3, 5, 5)
    with torch.no_grad():
        yt = conv(x) + 0.01 * torch.randn(50, 4, 5, 5)
    for weights in (None, torch.rand(50, 5, 5), torch.rand(50, 4, 5, 5)):
        whole = LayerQuadratic(conv, lq, x, yt, chunk=8, weights=weights)
        parts = [(x[i:i + 13], yt[i:i + 13]) for i in range(0, 50, 13)]
        streamed = LayerQuadratic.streamed(conv, lq, parts, chunk=8, weights=weights)
        assert torch.equal(whole.h, streamed.h) and torch.equal(whole.g, streamed.g)
        assert whole.error == streamed.error
    with pytest.raises(ValueError, match="weights cover 40 images"):
        LayerQuadratic.streamed(conv, lq, parts, chunk=8, weights=torch.rand(40, 5, 5))
