import json
import shutil

import pytest
import torch

from qevo_lite.cli import main
from qevo_lite.tasks import classification
from qevo_lite.core.registry import sha256_of
from qevo_lite.tasks import load_pretrained, train_checkpoint


@pytest.fixture()
def fast_recipe(monkeypatch):
    """Retraining inside load_pretrained uses the registry's recipe: make it one epoch."""
    monkeypatch.setitem(classification.RECIPES, ("vgg_small", "digits"), {"epochs": 1, "lr": 3e-3})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """One checkpoint trained for one epoch on digits, shared by the tests (each works on a copy)."""
    directory = tmp_path_factory.mktemp("checkpoints")
    model, entry = train_checkpoint("vgg_small", "digits", epochs=1, splits=digits, directory=directory,
                                    progress=False)
    return directory, model, entry


@pytest.fixture()
def saved(trained, tmp_path, fast_recipe):
    directory, model, entry = trained
    for f in directory.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path, model, entry


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_checkpoint_writes_file_and_manifest(saved):
    directory, _, entry = saved
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["vgg_small-digits"] == entry
    assert entry["sha256"] == sha256_of(directory / entry["file"])
    assert entry["epochs"] == 1 and entry["dataset"] == "digits" and 0 <= entry["fp32_test_accuracy"] <= 1


def test_load_verifies_and_uses_weights_only(saved, monkeypatch, capsys):
    directory, model, _ = saved
    seen = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    loaded, entry = load_pretrained("vgg_small", "digits", directory=directory)
    assert seen == [True]
    assert _same_weights(loaded, model) and not loaded.training
    assert capsys.readouterr().out == ""  # nothing retrained


def test_corrupted_checkpoint_is_detected_and_retrained(saved, digits, capsys):
    directory, model, entry = saved
    path = directory / entry["file"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert sha256_of(path) != entry["sha256"]

    loaded, new_entry = load_pretrained("vgg_small", "digits", directory=directory, splits=digits)
    out = capsys.readouterr().out
    assert "does not match the sha256" in out and "training it now" in out
    # the retrained file now matches its (updated) manifest, and loads without retraining
    assert new_entry["sha256"] == sha256_of(path)
    assert json.loads((directory / "manifest.json").read_text())["vgg_small-digits"]["sha256"] == new_entry["sha256"]
    again, _ = load_pretrained("vgg_small", "digits", directory=directory)
    assert capsys.readouterr().out == ""
    assert _same_weights(again, loaded)


def test_corrupted_checkpoint_without_retraining_raises(saved):
    directory, _, entry = saved
    (directory / entry["file"]).write_bytes(b"not a checkpoint")
    with pytest.raises(FileNotFoundError, match="does not match the sha256.*qevo train --model vgg_small --dataset digits"):
        load_pretrained("vgg_small", "digits", directory=directory, train_if_missing=False)


def test_missing_checkpoint_without_retraining_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint vgg_small-digits.pt"):
        load_pretrained("vgg_small", "digits", directory=tmp_path, train_if_missing=False)


@pytest.mark.parametrize("arch", ["vgg_small", "resnet_small"])
def test_committed_checkpoints_match_their_manifest(arch):
    model, entry = load_pretrained(arch, "fashion_mnist", train_if_missing=False)
    assert entry["arch"] == arch and not model.training


def test_corrupt_manifest_says_which_file_and_how_to_recover(saved):
    directory, _, _ = saved
    (directory / "manifest.json").write_text('{"vgg_small-digits": {"file": ')
    with pytest.raises(ValueError) as err:
        load_pretrained("vgg_small", "digits", directory=directory, train_if_missing=False)
    text = str(err.value)
    assert str(directory / "manifest.json") in text and "not valid JSON" in text and "git checkout" in text


def test_train_rejects_an_unknown_model_listing_every_task(capsys):
    assert main(["train", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'nope'" in err
    for arch in ("vgg_small", "det_vgg_small", "conv_autoencoder"):
        assert arch in err
