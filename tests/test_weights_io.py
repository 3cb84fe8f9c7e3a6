"""Weights in and out: state dicts, .npz files, PyTorch and Keras layouts."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import fastconv

CONFIGS = [
    dict(filters=4, kernel_size=3, padding="same", in_channels=2),
    dict(
        filters=6,
        kernel_size=(2, 3),
        stride=(2, 1),
        padding=(1, 2),
        dilation=(1, 2),
        groups=3,
        in_channels=3,
        bias=False,
        dtype="float64",
    ),
    dict(filters=4, kernel_size=3, padding=(0, 1, 2, 1), padding_mode="reflect", in_channels=2),
    dict(filters=2, kernel_size=4, padding="same", padding_mode="circular", in_channels=1, dtype="float64"),
    dict(filters=3, kernel_size=3, stride=2, padding="same", in_channels=2, data_format="NHWC"),
]


def outputs(layer, x):
    y = layer.forward(x)
    grad_w, grad_x = layer.backward(np.ones_like(y))
    return y, grad_w, grad_x, layer.grad_bias


def assert_same_outputs(a, b, x):
    for u, v in zip(outputs(a, x), outputs(b, x)):
        if u is None:
            assert v is None
        else:
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("config", CONFIGS)
def test_save_and_load_round_trip(tmp_path, rng, config):
    layer = fastconv.Conv2D(**config, seed=1)
    path = tmp_path / "layer.npz"
    layer.save(path)
    again = fastconv.Conv2D.load(path)
    assert repr(again) == repr(layer)
    x = rng.standard_normal((2, layer.in_channels, 7, 8))
    if layer.data_format == "NHWC":
        x = x.transpose(0, 2, 3, 1).copy()
    assert_same_outputs(layer, again, x)


def test_state_dict_round_trip_and_errors(rng):
    layer = fastconv.Conv2D(3, 2, in_channels=2, seed=0)
    state = layer.state_dict()
    assert set(state) == {"weight", "bias"}
    state["weight"][...] = 0  # a copy: the layer is unchanged
    assert np.abs(layer.weight).sum() > 0
    other = fastconv.Conv2D(3, 2, in_channels=2, seed=5)
    other.load_state_dict(layer.state_dict())
    assert_same_outputs(layer, other, rng.standard_normal((1, 2, 5, 5)))
    with pytest.raises(ValueError, match=r"state must have the keys \['bias', 'weight'\], got \['weight'\]"):
        other.load_state_dict({"weight": layer.weight})
    with pytest.raises(ValueError, match=r"weight must have shape \(3, 2, 2, 2\)"):
        other.load_state_dict({"weight": np.zeros((3, 2, 3, 3)), "bias": np.zeros(3)})
    assert set(fastconv.Conv2D(3, 2, in_channels=2, bias=False).state_dict()) == {"weight"}
    with pytest.raises(RuntimeError, match="no weights yet"):
        fastconv.Conv2D(3, 2).state_dict()


def write_npz(path, **arrays):
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.write_text("hello"), "not a readable fastconv .npz file"),
        (lambda p: zipfile.ZipFile(p, "w").close(), "not a fastconv layer file"),
        (lambda p: write_npz(p, weight=np.zeros(3)), "no 'config' entry"),
        (lambda p: write_npz(p, config=np.array("{not json")), "corrupt configuration"),
        (lambda p: write_npz(p, config=np.array('{"format": "other"}')), "not a fastconv.Conv2D/1 file"),
        (lambda p: write_npz(p, config=np.array(np.array([1, "x"], dtype=object))), "not a readable fastconv .npz"),
    ],
)
def test_hostile_or_corrupt_files_give_clear_errors(tmp_path, make, message):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(ValueError, match=message):
        fastconv.Conv2D.load(path)


def test_a_file_with_inconsistent_weights_is_refused(tmp_path):
    layer = fastconv.Conv2D(3, 2, in_channels=2, seed=0)
    path = tmp_path / "layer.npz"
    layer.save(path)
    with np.load(path) as data:
        contents = dict(data)
    contents["weight"] = np.zeros((3, 2, 5, 5), np.float32)
    np.savez(path, **contents)
    with pytest.raises(ValueError, match=r"inconsistent layer file \(weight must have shape"):
        fastconv.Conv2D.load(path)
    with pytest.raises(FileNotFoundError):
        fastconv.Conv2D.load(tmp_path / "missing.npz")


TORCH_CONFIGS = [
    dict(in_channels=2, out_channels=4, kernel_size=3, padding=1),
    dict(
        in_channels=4,
        out_channels=6,
        kernel_size=(2, 3),
        stride=(2, 1),
        padding=(1, 0),
        dilation=(1, 2),
        groups=2,
        bias=False,
    ),
    dict(in_channels=3, out_channels=5, kernel_size=4, padding="same"),  # even kernel: extra padding bottom/right
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="replicate"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding="valid", dtype="float64"),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("config", TORCH_CONFIGS)
def test_from_torch_and_to_torch_give_identical_outputs(rng, config):
    torch = pytest.importorskip("torch")
    config = dict(config)
    dtype = getattr(torch, config.pop("dtype", "float32"))
    conv = torch.nn.Conv2d(**config, dtype=dtype)
    layer = fastconv.Conv2D.from_torch(conv)
    x = rng.standard_normal((2, config["in_channels"], 9, 8)).astype(layer.dtype)
    expected = conv(torch.tensor(x)).detach().numpy()
    y = layer.forward(x)
    np.testing.assert_allclose(
        y, expected, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-5 if dtype == torch.float32 else 1e-12
    )
    back = layer.to_torch()
    np.testing.assert_array_equal(back(torch.tensor(x)).detach().numpy(), expected)
    again = fastconv.Conv2D.from_torch(back)
    np.testing.assert_array_equal(again.forward(x), y)


def test_to_torch_refuses_what_pytorch_cannot_express():
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="pads symmetrically"):
        fastconv.Conv2D(2, 3, padding=(0, 1, 1, 1), in_channels=1).to_torch()
    with pytest.raises(ValueError, match='no "same" padding at stride > 1'):
        fastconv.Conv2D(2, 3, stride=2, padding="same", in_channels=1).to_torch()
    with pytest.raises(TypeError, match="expected a torch.nn.Conv2d, got int"):
        fastconv.Conv2D.from_torch(3)


def test_keras_layout_round_trip(rng):
    layer = fastconv.Conv2D(6, (2, 3), stride=2, padding="same", groups=2, in_channels=4, dtype="float64", seed=0)
    kernel, bias = layer.keras_weights()
    assert kernel.shape == (2, 3, 2, 6)  # HWIO
    k, c, r, s = 5, 1, 1, 2
    assert kernel[r, s, c, k] == layer.weight[k, c, r, s]
    again = fastconv.Conv2D.from_keras(
        kernel, bias, strides=2, padding="same", groups=2, dtype="float64", data_format="NCHW"
    )
    assert_same_outputs(layer, again, rng.standard_normal((2, 4, 7, 7)))
    keras_style = fastconv.Conv2D.from_keras(kernel, bias, strides=2, padding="same", groups=2, dtype="float64")
    assert keras_style.data_format == "NHWC"  # Keras' default layout
    x = rng.standard_normal((2, 4, 7, 7))
    np.testing.assert_allclose(
        keras_style.forward(x.transpose(0, 2, 3, 1)), layer.forward(x).transpose(0, 2, 3, 1), rtol=1e-12, atol=1e-12
    )
    with pytest.raises(ValueError, match="kernel must have shape"):
        fastconv.Conv2D.from_keras(np.zeros((3, 3, 2)))
