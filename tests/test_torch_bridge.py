"""fastconv.torch: the autograd Function and the nn.Module, against PyTorch itself."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from helpers import assert_close  # noqa: E402

import fastconv.torch as fct  # noqa: E402
from fastconv._spec import same_padding  # noqa: E402

# (N, C, H, W), K, kernel, stride, padding, dilation, groups, bias, padding_mode
GEOMETRIES = [
    pytest.param((2, 3, 7, 6), 4, (3, 3), 1, "valid", 1, 1, True, "zeros", id="valid-s1"),
    pytest.param((2, 3, 7, 6), 4, (3, 2), 2, "same", 1, 1, True, "zeros", id="same-s2-asym"),
    pytest.param((2, 4, 6, 7), 6, (3, 3), 2, "valid", 1, 2, False, "zeros", id="valid-s2-g2-nobias"),
    pytest.param((1, 4, 8, 8), 4, (3, 3), 1, "same", 2, 2, False, "zeros", id="same-dil2-g2-nobias"),
    pytest.param((3, 2, 5, 5), 3, (4, 4), 3, "same", 1, 1, True, "zeros", id="same-s3-even-kernel"),
    pytest.param((2, 2, 6, 5), 3, (3, 3), 1, (1, 2, 0, 1), 1, 1, True, "reflect", id="pad4-reflect"),
    pytest.param((2, 2, 5, 6), 2, (3, 3), 2, 1, 1, 2, True, "circular", id="pad1-circular-g2"),
    pytest.param((1, 3, 6, 6), 2, (2, 3), 1, (2, 1), 1, 1, False, "replicate", id="pad-hw-replicate"),
]
PARAMS = "shape, k, kernel, stride, padding, dilation, groups, bias, padding_mode"


def _pad4(padding, x_hw, kernel, stride, dilation):
    """(top, bottom, left, right), worked out here rather than by fastconv."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return (
            *same_padding(x_hw[0], kernel[0], stride, dilation),
            *same_padding(x_hw[1], kernel[1], stride, dilation),
        )
    if isinstance(padding, int):
        return (padding,) * 4
    return (padding[0], padding[0], padding[1], padding[1]) if len(padding) == 2 else tuple(padding)


def _reference(x, w, b, stride, padding, dilation, groups, padding_mode="zeros"):
    """PyTorch's conv2d on the input padded by F.pad (which takes any mode and asymmetric amounts)."""
    top, bottom, left, right = _pad4(padding, x.shape[-2:], w.shape[2:], stride, dilation)
    mode = "constant" if padding_mode == "zeros" else padding_mode
    x = F.pad(x, (left, right, top, bottom), mode=mode)
    return F.conv2d(x, w, b, stride=stride, dilation=dilation, groups=groups)


def _inputs(shape, k, kernel, groups, bias, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn((k, shape[1] // groups, *kernel), generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(k, generator=g, dtype=dtype, requires_grad=True) if bias else None
    return x, w, b


@pytest.mark.parametrize(PARAMS, GEOMETRIES)
def test_gradcheck_float64(shape, k, kernel, stride, padding, dilation, groups, bias, padding_mode):
    x, w, b = _inputs(shape, k, kernel, groups, bias, torch.float64)
    args = (x, w, b, stride, padding, dilation, groups, padding_mode)
    assert torch.autograd.gradcheck(fct.Conv2dFunction.apply, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(PARAMS, GEOMETRIES)
def test_matches_torch_forward_and_gradients(
    shape, k, kernel, stride, padding, dilation, groups, bias, padding_mode, dtype
):
    x, w, b = _inputs(shape, k, kernel, groups, bias, dtype)
    y = fct.conv2d(x, w, b, stride, padding, dilation, groups, padding_mode)
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    ours = (y, *torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], grad_y))

    y_ref = _reference(x, w, b, stride, padding, dilation, groups, padding_mode)
    theirs = (y_ref, *torch.autograd.grad(y_ref, [t for t in (x, w, b) if t is not None], grad_y))

    for name, a, e in zip(("output", "dL/dx", "dL/dw", "dL/db"), ours, theirs):
        assert a.dtype == dtype, name
        assert_close(a.detach().numpy(), e.detach().numpy(), name)


def test_only_requested_gradients_are_computed(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return backward(*args, **kwargs)

    backward = fct._np_conv2d_backward
    monkeypatch.setattr(fct, "_np_conv2d_backward", spy)
    x, w, b = _inputs((2, 3, 6, 6), 4, (3, 3), 1, True, torch.float64)
    x.requires_grad_(False)  # as for a network's first layer: dL/dx is not computed at all
    b.requires_grad_(False)
    fct.conv2d(x, w, b, 2, "same").sum().backward()
    assert x.grad is None and b.grad is None
    assert w.grad is not None and w.grad.shape == w.shape
    assert calls[0]["need_input_grad"] is False and calls[0]["bias"] is False


def test_unbatched_input_and_non_contiguous_tensors():
    x, w, b = _inputs((1, 3, 9, 9), 4, (3, 3), 1, True, torch.float64)
    xt = x.detach()[0].transpose(1, 2).requires_grad_()  # (C, H, W), not contiguous
    y = fct.conv2d(xt, w, b, 2, "same")
    y_ref = _reference(xt.unsqueeze(0), w, b, 2, "same", 1, 1)[0]
    assert y.shape == y_ref.shape
    assert_close(y.detach().numpy(), y_ref.detach().numpy(), "output")
    (grad,) = torch.autograd.grad(y.square().sum(), xt)
    (grad_ref,) = torch.autograd.grad(y_ref.square().sum(), xt)
    assert_close(grad.numpy(), grad_ref.numpy(), "dL/dx")


def test_double_backward_fails_loudly():
    x, w, b = _inputs((1, 2, 5, 5), 2, (3, 3), 1, True, torch.float64)
    (grad_x,) = torch.autograd.grad(fct.conv2d(x, w, b).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad_x.sum().backward()


def test_mixed_dtypes_are_refused_like_torch():
    x, w, _ = _inputs((1, 2, 5, 5), 2, (3, 3), 1, False, torch.float64)
    with pytest.raises(TypeError, match="weight has dtype torch.float32"):
        fct.conv2d(x, w.float())
    with pytest.raises(TypeError, match="float32 or float64"):
        fct.conv2d(x.half(), w.half())


# -- the Module -----------------------------------------------------------------


def test_module_initialises_like_nn_conv2d():
    torch.manual_seed(3)
    ref = torch.nn.Conv2d(6, 8, (3, 5), groups=2)
    torch.manual_seed(3)
    ours = fct.Conv2d(6, 8, (3, 5), groups=2)
    assert ours.weight.shape == ref.weight.shape == (8, 3, 3, 5)
    assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)
    assert ours.weight.dtype == torch.get_default_dtype()
    assert fct.Conv2d(2, 2, 1, bias=False, dtype=torch.float64).bias is None
    assert set(ours.state_dict()) == set(ref.state_dict())


def test_module_repr_and_arguments():
    conv = fct.Conv2d(4, 8, 3, stride=2, padding="SAME", groups=2, bias=False)
    assert repr(conv) == "Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding='same', groups=2, bias=False)"
    assert conv(torch.randn(10, 4, 7, 7)).shape == (10, 8, 4, 4)  # nn.Conv2d refuses "same" at stride 2
    conv = fct.Conv2d(2, 2, (3, 1), padding=(1, 0), padding_mode="reflect")
    assert repr(conv) == "Conv2d(2, 2, kernel_size=(3, 1), stride=(1, 1), padding=(1, 1, 0, 0), padding_mode='reflect')"
    with pytest.raises(ValueError, match="padding"):
        fct.Conv2d(4, 8, 3, padding="full")
    with pytest.raises(ValueError, match="padding_mode"):
        fct.Conv2d(4, 8, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="groups=3"):
        fct.Conv2d(4, 6, 3, groups=3)
    with pytest.raises(TypeError, match="dtype"):
        fct.Conv2d(4, 6, 3, dtype=torch.float16)


def _model(conv_cls) -> torch.nn.Sequential:
    """Conv -> ReLU -> Conv -> flatten -> Linear, built by the same calls for either class."""
    return torch.nn.Sequential(
        conv_cls(3, 6, 3, padding=1, padding_mode="reflect", dtype=torch.float64),
        torch.nn.ReLU(),
        conv_cls(6, 4, 3, stride=2, padding=0, groups=2, dtype=torch.float64),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 5, dtype=torch.float64),
    )


def test_trains_like_nn_conv2d():
    torch.manual_seed(0)
    ref = _model(torch.nn.Conv2d)
    ours = _model(fct.Conv2d)
    ours.load_state_dict(ref.state_dict())  # same keys and shapes: a twin
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 9, 9, generator=g, dtype=torch.float64)
    target = torch.randint(0, 5, (16,), generator=g)

    losses: dict[str, list[float]] = {}
    for name, model in (("torch", ref), ("fastconv", ours)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses[name] = []
        for _ in range(5):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), target)
            loss.backward()
            opt.step()
            losses[name].append(loss.item())

    assert losses["torch"][-1] < losses["torch"][0]  # it did learn something
    np.testing.assert_allclose(losses["fastconv"], losses["torch"], rtol=1e-5)
    theirs = ref.state_dict()
    for key, value in ours.state_dict().items():
        np.testing.assert_allclose(value.numpy(), theirs[key].numpy(), rtol=1e-5, atol=1e-8, err_msg=key)
