"""The chunked (memory-bounded) path of SINCERELoss, SupConLoss and InfoNCELoss against the dense
path (itself checked against the equation references in test_losses.py) and against Eq. 12 / Eq. 3
directly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sincere import InfoNCELoss, SINCERELoss, SupConLoss, build_loss
from tests.reference import reference_loss

TAU = 0.1
LOSSES = {"sincere": SINCERELoss, "supcon": SupConLoss, "infonce": InfoNCELoss}

# name -> (n_images, n_views, labels); n = n_images * n_views
STRUCTURES = {
    "all labels distinct": (13, 2, list(range(13))),
    "2 classes": (12, 2, [0, 1] * 6),
    "many classes": (15, 2, [i % 6 for i in range(15)]),
    "singletons without positives": (14, 1, [0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
    "3 views": (7, 3, [4, 1, 4, 2, 1, 4, 9]),
    "1 view, one big class": (11, 1, [0] * 8 + [1, 2, 2]),
}


def inputs(n_images, n_views, labels, dtype=torch.float64, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(n_images, n_views, dim, generator=g, dtype=dtype), dim=-1)
    if n_views == 1:
        features = features[:, 0]
    return features, torch.tensor(labels)


def value_and_grad(loss_fn, features, labels):
    x = features.clone().requires_grad_()
    loss = loss_fn(x, labels)
    (upstream,) = torch.autograd.grad(loss, x, torch.ones_like(loss) if loss.ndim else None)
    return loss.detach(), upstream


def tolerances(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("name", LOSSES)
def test_chunked_equals_dense(name, structure, dtype):
    n_images, n_views, labels = STRUCTURES[structure]
    if name == "infonce" and n_views == 1:
        pytest.skip("InfoNCE needs two or more views (it ignores labels)")
    features, labels = inputs(n_images, n_views, labels, dtype)
    n = n_images * n_views
    expected, expected_grad = value_and_grad(LOSSES[name](TAU), features, labels)
    assert expected_grad.abs().max() > 0 or name != "supcon"
    for chunk in (1, 7, n - 1, n, n + 5):
        loss, grad = value_and_grad(LOSSES[name](TAU, chunk_size=chunk), features, labels)
        assert loss.dtype == expected.dtype
        torch.testing.assert_close(loss, expected, **tolerances(dtype), msg=f"chunk {chunk}")
        torch.testing.assert_close(grad, expected_grad, **tolerances(dtype), msg=f"chunk {chunk}")


@pytest.mark.parametrize("name", ["sincere", "supcon"])
def test_chunked_matches_equation_reference(name):
    """Independent of the dense path: Eq. 12 (SINCERE) / Eq. 3 (SupCon) by explicit loops."""
    features, labels = inputs(9, 2, [0, 1, 2, 0, 1, 2, 0, 0, 3])
    x = features.clone().requires_grad_()
    loss = LOSSES[name](TAU, chunk_size=4)(x, labels)
    loss.backward()
    ref_in = features.clone().requires_grad_()
    z = ref_in.transpose(0, 1).reshape(18, -1)
    kind = {"kind": "supcon"} if name == "supcon" else {}
    expected = reference_loss(z, labels.tolist() * 2, TAU, **kind)
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, ref_in.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_reduction_none(name):
    features, labels = inputs(*STRUCTURES["singletons without positives"])
    cases = [torch.stack([features, features.roll(1, 0)], 1)]
    if name != "infonce":                       # InfoNCE needs two or more views
        cases.append(features)
    for view_features in cases:
        dense = LOSSES[name](TAU, reduction="none")(view_features, labels)
        chunked = LOSSES[name](TAU, reduction="none", chunk_size=3)(view_features, labels)
        assert chunked.shape == dense.shape == view_features.shape[:-1]
        torch.testing.assert_close(chunked, dense, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_larger_batch_fp32(name):
    labels = torch.randint(0, 10, (200,), generator=torch.Generator().manual_seed(1)).tolist()
    features, labels = inputs(200, 2, labels, dtype=torch.float32, dim=32)
    expected, expected_grad = value_and_grad(LOSSES[name](TAU), features, labels)
    loss, grad = value_and_grad(LOSSES[name](TAU, chunk_size=96), features, labels)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5,
                               atol=1e-5 * float(expected_grad.abs().max()))


@pytest.mark.parametrize("name", LOSSES)
def test_gradcheck_chunked_backward(name):
    features, labels = inputs(5, 2, [0, 1, 0, 2, 1], dim=4, seed=3)
    loss_fn = LOSSES[name](0.5, reduction="none", chunk_size=3)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, labels),
                                    (features.clone().requires_grad_(),))


@pytest.mark.parametrize("name", LOSSES)
def test_temperature_001_is_finite_and_matches_dense(name):
    """fp32 chunked against the fp64 dense path at tau = 0.01. Similarities are ~1/tau = 100, so
    fp32 rounding of s alone is ~1e-5: the tolerances scale with 1/tau."""
    g = torch.Generator().manual_seed(0)
    d = F.normalize(torch.randn(64, generator=g), dim=0)
    cases = {
        # random 256-d embeddings: every e^{s - max|z|^2/tau} underflows in fp32
        "random": F.normalize(torch.randn(12, 2, 256, generator=g), dim=-1),
        "collapsed": d.expand(16, 2, 64).clone(),
        "antipodal": torch.stack([d, -d]).repeat(8, 1).view(8, 2, 64),
        "classes collapsed, apart": torch.cat([d.expand(8, 2, 64), -d.expand(8, 2, 64)]),
    }
    for case, features in cases.items():
        labels = torch.arange(features.shape[0]) % 3
        loss, grad = value_and_grad(LOSSES[name](0.01, chunk_size=5), features, labels)
        assert loss.dtype == torch.float32
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), case
        expected, expected_grad = value_and_grad(LOSSES[name](0.01), features.double(), labels)
        torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-4, msg=case)
        torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-4, msg=case)


@pytest.mark.parametrize("name", ["sincere", "supcon"])
def test_zero_positive_batch_and_single_class(name):
    features, _ = inputs(6, 1, [0] * 6, dtype=torch.float32)
    x = features.clone().requires_grad_()
    loss = LOSSES[name](chunk_size=4)(x, torch.arange(6))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    # one class: SINCERE has no negatives (loss 0, no NaN), SupCon equals its dense value
    features, labels = inputs(8, 2, [3] * 8, dtype=torch.float32)
    loss, grad = value_and_grad(LOSSES[name](chunk_size=5), features, labels)
    expected, expected_grad = value_and_grad(LOSSES[name](), features, labels)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", LOSSES)
def test_half_input_computes_in_fp32(name, dtype):
    features, labels = inputs(16, 2, [i % 4 for i in range(16)], dtype=torch.float32, dim=16)
    x = features.to(dtype).requires_grad_()
    loss = LOSSES[name](chunk_size=6)(x, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, LOSSES[name]()(x.detach().float(), labels))
    loss.backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert LOSSES[name](chunk_size=6)(features, labels).dtype == torch.float32


@pytest.mark.parametrize("name", LOSSES)
def test_second_backward_with_retained_graph_is_identical(name):
    features, labels = inputs(10, 2, [i % 3 for i in range(10)], dtype=torch.float32)
    x = features.clone().requires_grad_()
    loss = LOSSES[name](chunk_size=7)(x, labels)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    assert torch.equal(first, second)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self.largest = max(self.largest, leaf.numel())
        return out


@pytest.mark.parametrize("name", LOSSES)
def test_chunked_never_forms_an_n_by_n_tensor(name):
    """Every tensor made in forward and backward has at most chunk x n elements (the similarity
    block); the dense path, for contrast, does form n x n."""
    n_images, chunk = 30, 8
    features, labels = inputs(n_images, 2, [i % 10 for i in range(n_images)],
                              dtype=torch.float32, dim=8)
    n = 2 * n_images
    sizes = {}
    for key, loss_fn in (("dense", LOSSES[name]()), ("chunked", LOSSES[name](chunk_size=chunk))):
        x = features.clone().requires_grad_()
        with _LargestTensor() as record:
            loss_fn(x, labels).backward()
        sizes[key] = record.largest
    assert sizes["dense"] >= n * n
    assert sizes["chunked"] <= chunk * n


@pytest.mark.parametrize("bad", [0, -3, 2.5, "64", True, [8]])
def test_bad_chunk_size_is_a_clear_error(bad):
    for cls in LOSSES.values():
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            cls(chunk_size=bad)
    with pytest.raises(ValueError, match="chunk_size"):
        build_loss("sincere", chunk_size=bad)


def test_factory_and_repr():
    loss_fn = build_loss("supcon", chunk_size=512, temperature=0.2)
    assert isinstance(loss_fn, SupConLoss) and loss_fn.chunk_size == 512
    assert "chunk_size=512" in repr(loss_fn)
    assert build_loss("simclr", chunk_size=torch.tensor(8)).chunk_size == 8
    assert SINCERELoss().chunk_size is None and "chunk_size" not in repr(SINCERELoss())
    with pytest.raises(ValueError, match="unknown option"):
        build_loss("hscl", chunk_size=8)       # the hard-negative losses have no chunked path
