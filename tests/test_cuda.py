"""The CUDA path: bf16 autocast, torch.compile, fused SGD, channels_last, the on-device
augmentation, deterministic resume, and the host synchronisations of the training loop.

Tests marked ``cuda`` need a CUDA GPU and are skipped without one (``make gpu-check`` runs them:
``pytest -m cuda``); the rest exercise on the CPU every piece of that path that torch runs there
(bf16 autocast with our custom autograd Functions, fused SGD where this torch fuses on the CPU,
channels_last, a compiled step of a tiny model, the per-step host reads of the loop).

Tolerances (bf16 keeps 8 bits of mantissa, so a similarity s/tau = z.z/0.1 of bf16 embeddings is
off by about 0.004 x 10 in the logits): loss values under bf16 autocast within 2% of fp32, their
gradients at cosine similarity > 0.99 and relative L2 error < 0.08; compiled losses within 1e-5
(values) and 1e-4 (gradients) of eager fp32; fused SGD within 1e-6 (CPU) / 1e-5 (CUDA) of plain
SGD after 5 steps; CUDA augmentation against CPU: the same views (the random parameters are drawn
on the CPU from the same generator) to a mean absolute difference < 2e-3, per-channel means and
standard deviations within 2e-3, histograms within 1% of the samples.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sincere.augment import TwoViewAugment
from sincere.config import load_config
from sincere.data import write_random_cifar
from sincere.losses import LOSSES, build_loss
from sincere.optim import fused_sgd_supported
from tests.helpers import DIGITS

ROOT = Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()
needs_cuda = [pytest.mark.cuda,
              pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (make gpu-check)")]
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
# every loss once (simclr is infonce's other name), and the chunked forms
LOSS_CASES = [(name, {}) for name in LOSSES if name != "simclr"] + [
    (name, {"chunk_size": 24}) for name in ("sincere", "infonce", "supcon")]
LOSS_IDS = [name + ("-chunked" if kw else "") for name, kw in LOSS_CASES]


def tiny_cifar(root) -> list[str]:
    """Overrides for a tiny CUDA run on a CIFAR-format archive the test writes (no scikit-learn,
    which a GPU machine's pre-installed stack may lack): 100 training images, 5 steps of 20."""
    write_random_cifar(root, archive=True)
    return ["dataset=cifar10", f"data.root={root}", "model.arch=resnet18", "model.width=8",
            "model.proj_dim=32", "batch_size=20", "optim.lr=0.1", "optim.warmup_epochs=1",
            "data.num_workers=0", "knn_k=5", "device=cuda", "data.pipeline=device",
            "tensorboard.projector_images=0", "monitor.gradient_batches=1",
            "monitor.heldout_batches=1"]


def cuda_test(fn):
    for mark in reversed(needs_cuda):
        fn = mark(fn)
    return fn


def loss_case(device, seed=0, n_images=48, dim_in=32, dim=64, n_classes=6):
    """A linear layer embedding random inputs (so autocast computes the embeddings in bf16, as
    the model does in training) and the labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_images * 2, dim_in, generator=g).to(device)
    layer = nn.Linear(dim_in, dim).to(device)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(dim, dim_in, generator=g) / dim_in ** 0.5)
    labels = torch.randint(0, n_classes, (n_images,), generator=g).to(device)
    return x, layer, labels


def loss_and_grad(loss_fn, x, layer, labels, autocast=False):
    layer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=autocast):
        h = layer(x)                                 # bf16 under autocast
        # normalised in fp32 and handed to the loss in the layer's dtype (CUDA's autocast runs
        # norm in fp32, which would otherwise promote the embeddings back to fp32)
        z = F.normalize(h.float(), dim=-1).to(h.dtype).view(len(labels), 2, -1)
        if autocast:
            assert z.dtype == torch.bfloat16
        loss = loss_fn(z, labels)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    loss.backward()
    return loss.detach().float(), layer.weight.grad.detach().float().clone()


def assert_grads_close(a, b, cos_min=0.99, rel_max=0.08):
    cos = F.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
    rel = ((a - b).norm() / b.norm()).item()
    assert cos > cos_min and rel < rel_max, (cos, rel)


# ---------------------------------------------------------------------------------------------
# Losses: fp32, bf16 autocast (our custom autograd Functions), compiled
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, options", LOSS_CASES, ids=LOSS_IDS)
def test_loss_under_bf16_autocast_matches_fp32(device, name, options):
    """The custom autograd Functions under autocast: bf16 embeddings in, an fp32 loss out (the
    Functions compute in fp32 with autocast off), values and gradients close to fp32's."""
    x, layer, labels = loss_case(device)
    loss_fn = build_loss(name, **options)
    ref, ref_grad = loss_and_grad(loss_fn, x, layer, labels)
    low, low_grad = loss_and_grad(loss_fn, x, layer, labels, autocast=True)
    assert torch.isfinite(low) and torch.isfinite(low_grad).all()
    assert low.item() == pytest.approx(ref.item(), rel=0.02)
    assert_grads_close(low_grad, ref_grad)


@pytest.mark.parametrize("name", ["sincere", "supcon"])
def test_loss_gradient_of_bf16_features_is_bf16(name):
    """autograd hands the bf16 features a bf16 gradient (the Function's fp32 gradient cast
    back), finite."""
    z = F.normalize(torch.randn(16, 2, 32), dim=-1).bfloat16().requires_grad_()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = build_loss(name)(z, torch.arange(16) % 4)
    loss.backward()
    assert loss.dtype == torch.float32
    assert z.grad.dtype == torch.bfloat16 and torch.isfinite(z.grad.float()).all()


@cuda_test
@pytest.mark.parametrize("name, options", LOSS_CASES, ids=LOSS_IDS)
def test_compiled_loss_matches_eager_on_cuda(name, options):
    """torch.compile of each loss (graph breaks around the custom Functions are allowed) gives
    eager fp32's value and gradient."""
    x, layer, labels = loss_case("cuda")
    loss_fn = build_loss(name, **options)
    ref, ref_grad = loss_and_grad(loss_fn, x, layer, labels)
    compiled = torch.compile(loss_fn)
    value, grad = loss_and_grad(compiled, x, layer, labels)
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)
    value, grad = loss_and_grad(compiled, x, layer, labels, autocast=True)
    assert value.item() == pytest.approx(ref.item(), rel=0.02)
    assert_grads_close(grad, ref_grad)


# ---------------------------------------------------------------------------------------------
# Optimizer, memory format
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_fused_sgd_matches_plain_sgd(device):
    if not fused_sgd_supported(device):
        pytest.skip(f"torch {torch.__version__} has no fused SGD on {device}")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).to(device)
    nets = {"plain": net, "fused": copy.deepcopy(net)}
    optims = {k: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4,
                                 **({"fused": True} if k == "fused" else {"foreach": False}))
              for k, m in nets.items()}
    x = torch.randn(64, 16, device=device)
    for _ in range(5):
        for k, m in nets.items():
            optims[k].zero_grad()
            m(x).square().mean().backward()
            optims[k].step()
    tol = 1e-6 if device == "cpu" else 1e-5
    for a, b in zip(nets["plain"].parameters(), nets["fused"].parameters()):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_model_matches_contiguous(device, monkeypatch):
    from sincere.models import ContrastiveModel
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)    # both in true fp32
    torch.manual_seed(0)
    model = ContrastiveModel("resnet18", 8, 3, 16).to(device).eval()
    x = torch.randn(4, 3, 16, 16, device=device)
    ref = model(x)
    model_cl = model.to(memory_format=torch.channels_last)
    out = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_batch_source_gives_channels_last_views(tmp_path):
    from sincere.distributed import DistEnv
    from sincere.loaders import batch_source
    from sincere.pretrain import set_up
    c = load_config(None, DIGITS + ["data.pipeline=device", "threads=1",
                                    f"run_dir={tmp_path / 'r'}"])
    run = set_up(c, DistEnv(device=torch.device("cpu")))
    x, _ = next(batch_source(run.data, c, 0, run.env, channels_last=True,
                             pipeline=run.pipeline))
    assert x.is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------
# A compiled training step (CPU: time-bounded, in a child process)
# ---------------------------------------------------------------------------------------------

COMPILED_STEP = textwrap.dedent("""
    import json, sys, time, torch
    from torch import nn
    import torch.nn.functional as F
    from sincere.losses import build_loss
    from sincere.pretrain import train_step
    torch.set_num_threads(1)
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 16)
        def forward(self, x):
            h = F.relu(self.bn(self.conv(x))).mean((2, 3))
            return F.normalize(self.fc(h), dim=1)

    backend = sys.argv[1]
    x = torch.randn(32, 1, 8, 8)
    labels = torch.arange(16) % 4
    losses = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        model = Tiny()
        step_model = torch.compile(model, backend=backend) if mode == "compiled" else model
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        t0 = time.perf_counter()
        losses[mode] = [train_step(step_model, build_loss("sincere"), opt, sched, x, labels,
                                   2)[0].item() for _ in range(3)]
        losses[mode + "_s"] = time.perf_counter() - t0
    print(json.dumps(losses))
""")


@pytest.mark.slow
def test_compiled_train_step_of_a_tiny_model():
    """``train_step`` with a torch.compile'd tiny conv net (as ``compile=true`` wraps the model)
    gives eager's losses over 3 steps, in a child process bounded to 120 s (skipped, with the
    reason, when the machine is too slow to finish in time). The backend is ``aot_eager``
    (TorchDynamo's graph capture and AOTAutograd's joint forward/backward graph, no code
    generation): inductor's C++ code generation of even a tiny graph takes minutes on CI's two
    cores. SINCERE_TEST_INDUCTOR=1 uses inductor, as ``compile=true`` does (it needs a C
    compiler); the CUDA tests compile with inductor."""
    backend = "inductor" if os.environ.get("SINCERE_TEST_INDUCTOR") else "aot_eager"
    if backend == "inductor" and not (shutil.which("cc") or shutil.which("c++")):
        pytest.skip("torch.compile's inductor on the CPU needs a C/C++ compiler")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", TORCHINDUCTOR_COMPILE_THREADS="1")
    try:
        out = subprocess.run([sys.executable, "-c", COMPILED_STEP, backend], capture_output=True,
                             text=True, timeout=120, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"the compiled step ({backend}) took over 120 s on this machine")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["compiled"] == pytest.approx(result["eager"], rel=1e-4, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Host reads (synchronisations on CUDA) of the training loop
# ---------------------------------------------------------------------------------------------

HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")


class HostReads:
    """Counts the Python-level reads of tensor values (each one a host synchronisation when the
    tensor is on a GPU), with the file:line that made them, and whether the batch source (the
    data pipeline) or the loop made them."""

    def __init__(self, monkeypatch):
        import traceback
        self.reads, self.phase, self.marks = [], "outside", []

        def wrap(name, original):
            def counted(tensor, *args, **kwargs):
                frame = traceback.extract_stack(limit=2)[0]
                self.reads.append((self.phase, name, f"{Path(frame.filename).name}:"
                                   f"{frame.lineno}"))
                return original(tensor, *args, **kwargs)
            return counted

        for name in HOST_READS:
            if hasattr(torch.Tensor, name):
                monkeypatch.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))

        import sincere.pretrain as P
        real_source, real_epoch = P.batch_source, P.train_epoch

        def source(*args, **kwargs):
            inner = real_source(*args, **kwargs)
            while True:
                self.phase = "data"
                try:
                    item = next(inner)
                except StopIteration:
                    self.phase = "loop"
                    return
                self.phase = "loop"
                yield item

        def epoch(*args, **kwargs):
            self.phase = "loop"
            try:
                return real_epoch(*args, **kwargs)
            finally:
                self.phase = "outside"

        monkeypatch.setattr(P, "batch_source", source)
        monkeypatch.setattr(P, "train_epoch", epoch)

    def on_step(self, epoch, step):
        self.marks.append(len(self.reads))

    def per_step(self) -> list[Counter]:
        """Reads of the loop (not the data pipeline) between one step's end and the next's."""
        out = []
        for a, b in zip(self.marks, self.marks[1:]):
            out.append(Counter((name, where) for phase, name, where in self.reads[a:b]
                               if phase == "loop"))
        return out


def tiny_run(tmp_path, extra=(), on_step=None):
    from sincere.pretrain import pretrain
    c = load_config(None, DIGITS + ["epochs=2", "data.subset=128", "batch_size=32",
                                    "threads=1", "knn_every=0", "monitor.gradients_every=0",
                                    "monitor.heldout_every=0", "data.pipeline=device",
                                    "tensorboard.projector_images=0",
                                    f"run_dir={tmp_path / 'run'}", *extra])
    return pretrain(c, progress=False, on_step=on_step)


def test_end_of_epoch_reads_are_few(tmp_path, monkeypatch):
    """After the steps, the epoch reads its sums, its non-finite check and TensorBoard's
    per-step buffer back: a handful of reads, whatever the number of steps."""
    import sincere.pretrain as P
    monkeypatch.setattr(P, "PROGRESS_REFRESH_S", 1e9)
    reads = HostReads(monkeypatch)
    tiny_run(tmp_path, ["epochs=1"], on_step=reads.on_step)
    after = Counter(where for phase, _, where in reads.reads[reads.marks[-1]:]
                    if phase == "loop")
    assert all(w.startswith(("pretrain.py", "tensorboard.py")) for w in after), after
    assert sum(after.values()) <= 4, after


def test_training_loop_reads_nothing_back_per_step(tmp_path, monkeypatch):
    """Between steps the loop itself (sincere/pretrain.py, TensorBoard's step buffer, the
    optimizer and schedule) reads no tensor value back; the once-a-second progress read is set
    aside (PROGRESS_REFRESH_S very high). The losses' own reads are counted and pinned: each loss
    call reads its largest class size (the partner table's width) and, for the SINCERE family,
    whether a shared shift underflowed -- on CUDA these are the step's only synchronisations
    (the trained loss and each monitored loss)."""
    import sincere.pretrain as P
    monkeypatch.setattr(P, "PROGRESS_REFRESH_S", 1e9)
    reads = HostReads(monkeypatch)
    tiny_run(tmp_path, on_step=reads.on_step)
    steps = reads.per_step()
    assert len(steps) == 7                                          # 2 epochs x 4 steps, - 1
    within = steps[:3] + steps[4:]                                  # not the epoch boundary
    files = {where.split(":")[0] for step in within for _, where in step}
    assert files <= {"dense.py", "chunked.py"}, within             # sincere/losses/ kernels
    n_losses = 1 + len(load_config(None, DIGITS).monitor.losses)
    for step in within:
        assert step == within[0]
        assert sum(step.values()) <= 2 * n_losses
    loop_reads = [r for r in reads.reads if r[0] == "loop"]
    assert len(loop_reads) < (len(steps) + 1) * 2 * n_losses + 20   # + a few per epoch


def test_the_progress_read_is_seen_when_due(tmp_path, monkeypatch):
    """The counter sees the loop's once-a-second read when it is due every step: the check of
    the test above is not blind."""
    import sincere.pretrain as P
    monkeypatch.setattr(P, "PROGRESS_REFRESH_S", 0.0)
    reads = HostReads(monkeypatch)
    tiny_run(tmp_path, ["epochs=1"], on_step=reads.on_step)
    assert any(where.startswith("pretrain.py") for step in reads.per_step() for _, where in step)


@cuda_test
def test_no_synchronisation_per_step_on_cuda_beyond_the_losses(tmp_path, monkeypatch):
    """torch.cuda.set_sync_debug_mode("warn") over a tiny CUDA run on the on-device pipeline,
    the warnings split like the CPU test's reads: the data pipeline synchronises never, the loop
    at most for the losses' own reads (see the CPU test above), the same number every step."""
    import sincere.pretrain as P
    monkeypatch.setattr(P, "PROGRESS_REFRESH_S", 1e9)
    phase, marks, caught_at = ["outside"], [], []
    real_source = P.batch_source

    def source(*args, **kwargs):
        inner = real_source(*args, **kwargs)
        while True:
            phase[0] = "data"
            try:
                item = next(inner)
            except StopIteration:
                return
            finally:
                phase[0] = "loop"
            yield item

    monkeypatch.setattr(P, "batch_source", source)

    def on_step(epoch, step):
        marks.append(len(caught_at))
        if step == 1:
            torch.cuda.set_sync_debug_mode("warn")

    def record(message, category, *args, **kwargs):
        if "synchroniz" in str(message):
            caught_at.append(phase[0])

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record                  # restored by catch_warnings
        try:
            P.pretrain(load_config(None, tiny_cifar(tmp_path / "data") + [
                "epochs=1", "knn_every=0", "monitor.gradients_every=0",
                "monitor.heldout_every=0", f"run_dir={tmp_path / 'run'}"]),
                progress=False, on_step=on_step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    n_losses = 1 + len(load_config(None, DIGITS).monitor.losses)
    steps = [Counter(caught_at[a:b]) for a, b in zip(marks[1:], marks[2:])]
    print("synchronisations per step on CUDA (data pipeline, loop):",
          [(s["data"], s["loop"]) for s in steps])
    assert steps and all(s["data"] == 0 for s in steps), steps
    assert all(s["loop"] == steps[0]["loop"] <= 2 * n_losses for s in steps), steps


# ---------------------------------------------------------------------------------------------
# CUDA only: the on-device augmentation against the CPU's, deterministic resume
# ---------------------------------------------------------------------------------------------


@cuda_test
def test_augmentation_on_cuda_matches_the_cpu():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=g)
    augment = TwoViewAugment(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    cpu = augment(images, torch.Generator().manual_seed(1))
    cuda = augment(images.cuda(), torch.Generator().manual_seed(1)).cpu()
    assert cuda.shape == cpu.shape and cuda.dtype == torch.float32
    assert (cuda - cpu).abs().mean().item() < 2e-3
    dims = (0, 1, 3, 4)
    torch.testing.assert_close(cuda.mean(dims), cpu.mean(dims), atol=2e-3, rtol=0)
    torch.testing.assert_close(cuda.std(dims), cpu.std(dims), atol=2e-3, rtol=0)
    lo, hi = cpu.min().item(), cpu.max().item()
    h_cpu = torch.histc(cpu, 50, lo, hi)
    h_cuda = torch.histc(cuda, 50, lo, hi)
    assert (h_cpu - h_cuda).abs().sum().item() < 0.01 * cpu.numel()


@cuda_test
def test_interrupted_and_resumed_run_matches_uninterrupted_on_cuda(tmp_path):
    from sincere.checkpoint import load_checkpoint
    from sincere.pretrain import pretrain

    class Killed(Exception):
        pass

    common = tiny_cifar(tmp_path / "data") + ["epochs=3", "deterministic=true", "knn_every=0"]
    try:
        full = pretrain(load_config(None, common + [f"run_dir={tmp_path / 'full'}"]),
                        progress=False)
    finally:
        torch.use_deterministic_algorithms(False)

    def kill(epoch, step):
        if epoch == 1 and step == 7:
            raise Killed

    try:
        with pytest.raises(Killed):
            pretrain(load_config(None, common + [f"run_dir={tmp_path / 'resumed'}"]),
                     progress=False, on_step=kill)
        pretrain(load_config(None, common + [f"run_dir={tmp_path / 'resumed'}", "resume=true"]),
                 progress=False)
    finally:
        torch.use_deterministic_algorithms(False)     # set_up turned it on for the process
    a = load_checkpoint(full / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 15
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@cuda_test
def test_a_paper_shaped_step_under_bf16_and_channels_last_on_cuda(tmp_path):
    """set_up on CUDA: fused SGD (where this torch has it), channels_last model, bf16 autocast;
    one train_step of a small batch on the on-device pipeline is finite."""
    from sincere.distributed import DistEnv
    from sincere.loaders import batch_source
    from sincere.pretrain import set_up, train_step
    c = load_config(None, tiny_cifar(tmp_path / "data") + [
        "amp=true", "channels_last=true", f"run_dir={tmp_path / 'r'}"])
    run = set_up(c, DistEnv(device=torch.device("cuda")))
    assert run.channels_last
    assert run.optimizer.defaults.get("fused") == (True if fused_sgd_supported("cuda") else None)
    x, labels = next(batch_source(run.data, c, 0, run.env, True, run.pipeline))
    t0 = time.perf_counter()
    loss, _, _ = train_step(run.train_model, run.loss_fn, run.optimizer, run.scheduler, x,
                            labels, c.n_views, run.autocast())
    assert torch.isfinite(loss).item() and time.perf_counter() - t0 < 60
