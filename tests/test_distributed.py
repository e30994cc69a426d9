"""Multi-process training on the CPU: two gloo processes, spawned with torchrun's environment
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT on 127.0.0.1), against one process on
the concatenated batch.

BatchNorm: torch's SyncBatchNorm runs on CUDA only, so the parameter-gradient checks put the model
in eval mode (BatchNorm normalises with its running statistics, per sample, as a single process
would); in training mode each rank's BatchNorm uses its own batch statistics, which no
single-process run reproduces. Everything runs in float64 so "equal" means equal to ~1e-12.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from sincere import distributed
from sincere.checkpoint import load_checkpoint
from sincere.config import ConfigError, load_config
from sincere.distributed import DistEnv, DistributedError
from sincere.losses import InfoNCELoss, SINCERELoss, SupConLoss
from sincere.models import ContrastiveModel, ProjectionHead
from sincere.pretrain import pretrain, step_values, training_loss
from tests.helpers import DIGITS

ROOT = Path(__file__).resolve().parents[1]
# two-process and torchrun runs: minutes; `make test-fast` leaves them out
pytestmark = pytest.mark.slow
WORLD = 2
N_IMAGES, N_VIEWS, DIM = 8, 2, 16            # the global batch: 8 images x 2 views


# ---------------------------------------------------------------------------------------------
# Launching two processes the way torchrun does
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_PORTS: list[int] = []       # in a worker: free ports for its successive process groups


def _fresh_group_port() -> None:
    """Point MASTER_PORT at a port no earlier process group of this launch used. Every rank
    calls it in the same order, so they agree; a group that reused the last one's port could
    meet that group's store (and its stale addresses) while another rank still tears it down."""
    os.environ["MASTER_PORT"] = str(_PORTS.pop(0))


def _entry(rank: int, fn, ports: list[int], report: str, args: tuple) -> None:
    _PORTS[:] = ports
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    _fresh_group_port()
    torch.set_num_threads(1)
    try:
        fn(rank, *args)
    except BaseException:                 # keep every rank's traceback, not only the first
        import traceback
        Path(report, f"rank{rank}.txt").write_text(traceback.format_exc())
        raise


def launch(fn, *args, timeout: float = 300.0) -> None:
    """Run ``fn(rank, *args)`` in WORLD spawned processes; fail (not hang) past ``timeout``.
    A failure reports the traceback of every rank that raised (a rank that dies makes the
    others fail at their next collective, which says little by itself)."""
    import tempfile
    report = tempfile.mkdtemp(prefix="ranks-")
    ports = []
    while len(ports) < 12:
        port = _free_port()
        if port not in ports:
            ports.append(port)
    ctx = mp.start_processes(_entry, args=(fn, ports, report, args), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    if p.is_alive():
                        p.terminate()
                pytest.fail(f"distributed workers still running after {timeout:.0f} s")
    except mp.ProcessRaisedException as err:
        ranks = "\n".join(f"--- {f.name}\n{f.read_text()}"
                          for f in sorted(Path(report).glob("rank*.txt")))
        pytest.fail(f"a distributed worker failed: {err}\n{ranks}")


# ---------------------------------------------------------------------------------------------
# (a)-(c): the gathered loss and its gradients against one process
# ---------------------------------------------------------------------------------------------


def _batch():
    g = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(N_IMAGES, N_VIEWS, DIM, generator=g,
                                       dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 1, 2, 0, 1, 1, 2, 0])   # classes span both ranks' halves
    images = torch.randn(N_IMAGES * N_VIEWS, 1, 8, 8, generator=g, dtype=torch.float64)
    return features, labels, images


def _model():
    """A small encoder with BatchNorm (eval mode, non-trivial running statistics) and the
    projection head, in float64 (the ResNet's float64 convolutions are slow on the CPU)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), ProjectionHead(8, 8)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


LOSSES = {"sincere": SINCERELoss, "supcon": SupConLoss, "infonce": InfoNCELoss}
PER_RANK = N_IMAGES // WORLD


def _worker(rank: int, root: str) -> None:
    """Everything the two processes do, in one launch (each launch costs seconds of imports):
    the gradient checks, then the pretraining runs."""
    (Path(root) / "math").mkdir(exist_ok=True)
    _math_worker(rank, str(Path(root) / "math"))
    _pretrain_worker(rank, root)


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-processes")
    launch(_worker, str(root))
    return root


def _math_worker(rank: int, out: str) -> None:
    with distributed.process_group("gloo", "cpu") as env:
        assert env.owns_group and env.world_size == WORLD and env.rank == rank
        assert distributed.is_distributed() and distributed.is_main() == (rank == 0)
        with distributed.process_group("gloo", "cpu") as inner:   # a caller's group: reused
            assert not inner.owns_group and (inner.rank, inner.world_size) == (rank, WORLD)
        assert torch.distributed.is_initialized()                 # ... and left alone
        features, labels, images = _batch()
        mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        result = {}
        # (a) the loss on the gathered batch, gradients to this rank's embeddings
        for name, cls in LOSSES.items():
            local = features[mine].clone().requires_grad_(True)
            loss, seen, seen_labels = training_loss(cls(), local, labels[mine], True)
            loss.backward()
            result[name] = {"loss": loss.detach(), "grad": local.grad, "seen": seen.detach(),
                            "labels": seen_labels}
        # (b) DDP parameter gradients with the global loss, (c) with the per-GPU loss
        model = _model()
        ddp = distributed.wrap_ddp(model, env)
        rows = slice(rank * PER_RANK * N_VIEWS, (rank + 1) * PER_RANK * N_VIEWS)
        for scope in ("global", "per_gpu"):
            model.zero_grad(set_to_none=True)
            z = ddp(images[rows]).view(PER_RANK, N_VIEWS, -1)
            loss, seen, seen_labels = training_loss(SINCERELoss(), z, labels[mine],
                                                    scope == "global")
            loss.backward()
            logged = dict(zip(["loss", "supcon"], step_values(
                loss, seen, seen_labels, {"supcon": SupConLoss()}, env,
                per_rank=scope == "per_gpu").tolist()))
            result[f"ddp_{scope}"] = {
                "loss": loss.detach(), "logged": logged,
                "grads": {n: p.grad.clone() for n, p in model.named_parameters()}}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    assert not torch.distributed.is_initialized()          # torn down on exit


@pytest.fixture(scope="module")
def math_results(spawned):
    return [torch.load(spawned / "math" / f"rank{r}.pt", weights_only=False)
            for r in range(WORLD)]


@pytest.mark.parametrize("name", list(LOSSES))
def test_gathered_loss_and_embedding_gradients_match_one_process(math_results, name):
    """Every rank sees the whole batch in rank order and computes the single-process loss; the
    gradient reaching its own embeddings is world_size times the single-process one (the
    all_reduce sums the identical copies' gradients; DDP's average divides by world_size)."""
    features, labels, _ = _batch()
    full = features.clone().requires_grad_(True)
    single = LOSSES[name]()(full, labels)
    single.backward()
    for rank, result in enumerate(math_results):
        r = result[name]
        assert torch.equal(r["seen"], features) and torch.equal(r["labels"], labels)
        torch.testing.assert_close(r["loss"], single.detach(), rtol=0, atol=1e-12)
        mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        torch.testing.assert_close(r["grad"], WORLD * full.grad[mine], rtol=0, atol=1e-12)
        assert r["grad"].abs().max() > 1e-3                   # a real gradient, not zeros


def _single_param_grads(loss_of_batch):
    model = _model()
    _, labels, images = _batch()
    z = model(images).view(N_IMAGES, N_VIEWS, -1)
    loss = loss_of_batch(z, labels)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def test_ddp_parameter_gradients_equal_one_process_on_the_concatenated_batch(math_results):
    single_loss, single = _single_param_grads(SINCERELoss())
    for result in math_results:
        r = result["ddp_global"]
        torch.testing.assert_close(r["loss"], single_loss, rtol=0, atol=1e-12)
        assert r["logged"]["loss"] == pytest.approx(single_loss.item(), abs=1e-12)
        assert set(r["grads"]) == set(single)
        for name, grad in single.items():
            torch.testing.assert_close(r["grads"][name], grad, rtol=1e-9, atol=1e-12, msg=name)
    # the check can fail: the gradients are not all zero
    assert max(g.abs().max().item() for g in single.values()) > 1e-3


def test_per_gpu_loss_is_the_mean_of_per_rank_losses(math_results):
    """distributed.loss_scope=per_gpu: each rank's loss on its own 4 images; the logged value and
    the DDP-averaged gradients are those of the mean of the two halves' losses, which differs
    from the global loss (a sample never meets the other rank's samples)."""
    loss_fn = SINCERELoss()
    halves = lambda z, y: (loss_fn(z[:PER_RANK], y[:PER_RANK])          # noqa: E731
                           + loss_fn(z[PER_RANK:], y[PER_RANK:])) / 2
    mean_loss, expected = _single_param_grads(halves)
    global_loss, global_grads = _single_param_grads(loss_fn)
    assert abs(mean_loss - global_loss) > 1e-3
    for rank, result in enumerate(math_results):
        r = result["ddp_per_gpu"]
        own = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        model = _model()
        _, labels, images = _batch()
        with torch.no_grad():
            z = model(images).view(N_IMAGES, N_VIEWS, -1)
        torch.testing.assert_close(r["loss"], loss_fn(z[own], labels[own]), rtol=0, atol=1e-12)
        assert r["logged"]["loss"] == pytest.approx(mean_loss.item(), abs=1e-12)
        assert r["logged"]["supcon"] == pytest.approx(
            (SupConLoss()(z[:PER_RANK], labels[:PER_RANK])
             + SupConLoss()(z[PER_RANK:], labels[PER_RANK:])).item() / 2, abs=1e-12)
        for name, grad in expected.items():
            torch.testing.assert_close(r["grads"][name], grad, rtol=1e-9, atol=1e-12, msg=name)
        assert any((r["grads"][n] - global_grads[n]).abs().max() > 1e-6 for n in expected)


# ---------------------------------------------------------------------------------------------
# (d): pretrain() under two processes: rank 0 writes, resume works, checkpoints interchange
# ---------------------------------------------------------------------------------------------

E2E = DIGITS + ["data.subset=128", "batch_size=32", "epochs=2", "knn_every=0",
                "deterministic=true", "threads=1", "checkpoint_every=1", "device=cpu",
                "distributed.timeout_min=5"]          # 4 steps per epoch, 16 images per rank


class Killed(Exception):
    pass


def _pretrain_worker(rank: int, root: str) -> None:
    root = Path(root)
    errors = {}
    for bad in (["batch_size=33"], ["distributed.sync_bn=true"]):
        _fresh_group_port()
        try:
            pretrain(load_config(None, E2E + bad + [f"run_dir={root / 'bad'}"]),
                     progress=False)
        except (ConfigError, DistributedError) as err:
            errors[bad[0]] = f"{type(err).__name__}: {err}"
    _fresh_group_port()
    pretrain(load_config(None, E2E + [f"run_dir={root / 'full'}"]), progress=False)

    def kill_mid_epoch_2(epoch, step):
        if epoch == 1 and step == 6:
            raise Killed

    _fresh_group_port()
    try:
        pretrain(load_config(None, E2E + [f"run_dir={root / 'resumed'}"]), progress=False,
                 on_step=kill_mid_epoch_2)
    except Killed:
        errors["killed_at_epoch"] = load_checkpoint(
            root / "resumed" / "checkpoints" / "last.pt")["epoch"]
    _fresh_group_port()
    pretrain(load_config(None, E2E + [f"run_dir={root / 'resumed'}", "resume=true"]),
             progress=False)
    (root / f"errors{rank}.json").write_text(json.dumps(errors))


@pytest.fixture(scope="module")
def e2e_runs(spawned):
    return spawned


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_process_pretrain_writes_once_from_rank_0(e2e_runs):
    run = e2e_runs / "full"
    lines = _metrics(run)
    assert [m["epoch"] for m in lines] == [1, 2] and [m["step"] for m in lines] == [4, 8]
    for m in lines:         # the monitors saw the global batch the loss was trained on
        assert m["loss"] == pytest.approx(m["loss_sincere"], rel=1e-6)
        assert m["loss_sincere"] <= m["loss_supcon"]
    assert "knn_top1" in lines[-1] and 0 <= lines[-1]["knn_top1"] <= 1
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1   # one writer: rank 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_0001.pt", "epoch_0002.pt", "last.pt"]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])
    ContrastiveModel("resnet18", 8, 1, 32).load_state_dict(state["model"])   # plain model
    ranks = state["rng_ranks"]
    assert len(ranks) == WORLD and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])


def test_two_process_bad_settings_are_clear_errors(e2e_runs):
    for rank in range(WORLD):
        errors = json.loads((e2e_runs / f"errors{rank}.json").read_text())
        assert "batch_size=33 is the global batch" in errors["batch_size=33"]
        assert "multiple of 2" in errors["batch_size=33"]
        assert "sync_bn=true needs CUDA" in errors["distributed.sync_bn=true"]
        assert errors["killed_at_epoch"] == 1


def test_two_process_resume_matches_uninterrupted_run(e2e_runs):
    full, resumed = e2e_runs / "full", e2e_runs / "resumed"
    assert [m["loss"] for m in _metrics(resumed)] == [m["loss"] for m in _metrics(full)]
    a = load_checkpoint(full / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def _rank_env(rank: int, port: int) -> dict:
    """The environment torchrun gives rank ``rank`` of WORLD (static rendezvous on 127.0.0.1)."""
    return {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p)}


def _ranks(args: list[str], port: int, driver: tuple[str, ...] = ()) -> list[subprocess.Popen]:
    """Both ranks of ``scripts/pretrain.py ARGS`` as subprocesses (through tests/cli_driver.py
    with ``driver`` options, which may hold ``{rank}``)."""
    return [subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "cli_driver.py"),
         *(a.format(rank=rank) for a in driver), "scripts/pretrain.py", *args, "--quiet"],
        cwd=ROOT, env=_rank_env(rank, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for rank in range(WORLD)]


def _finish(procs: list[subprocess.Popen], timeout: float = 600.0) -> list[tuple[int, str]]:
    """Wait for every process (kill what is left past ``timeout``): [(status, stderr)]."""
    try:
        return [(p.returncode, err) for p in procs
                for err in [p.communicate(timeout=timeout)[1]]]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_two_process_signal_to_one_rank_stops_both_at_the_same_step(e2e_runs, tmp_path):
    """SIGINT reaches rank 1 only: both ranks agree, stop after the same step of epoch 1, rank 0
    writes the position, both exit 75; two processes resumed with resume=auto end where an
    uninterrupted two-process run ends (same per-epoch losses, same weights)."""
    config = tmp_path / "empty.yaml"
    config.write_text("")
    args = [str(config), *E2E, f"run_dir={tmp_path / 'run'}"]
    procs = _ranks(args, _free_port(), ("--slow-steps", "0.3", "--marker",
                                        str(tmp_path / "marker{rank}")))
    marker = tmp_path / "marker1"
    deadline = time.monotonic() + 600
    try:
        while not (marker.exists() and int(marker.read_text().split()[1]) >= 1):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                [p.communicate() for p in procs if p.poll() is not None]
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGINT)
    finally:
        ended = _finish(procs)
    assert [code for code, _ in ended] == [75, 75], ended
    assert "stopped by SIGINT at step" in ended[0][1] or "another rank" in ended[0][1]
    assert all("Traceback" not in err for _, err in ended)
    steps = [int((tmp_path / f"marker{r}").read_text().split()[1]) for r in range(WORLD)]
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert steps[0] == steps[1] == state["step"] and 1 <= state["step"] < 4    # inside epoch 1
    assert state["position"]["epoch_step"] == state["step"] and len(state["rng_ranks"]) == WORLD

    ended = _finish(_ranks(args + ["resume=auto"], _free_port()))
    assert [code for code, _ in ended] == [0, 0], ended
    reference = e2e_runs / "resumed"                  # = the uninterrupted run (test above)
    assert [m["loss"] for m in _metrics(tmp_path / "run")] == \
        [m["loss"] for m in _metrics(reference)]
    a = load_checkpoint(reference / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_two_nodes_through_the_makefiles_torchrun_give_the_single_process_step(tmp_path):
    """``make pretrain NNODES=2 NODE_RANK=r MASTER_ADDR=... GPUS=1``'s torchrun command (c10d
    rendezvous), run as two "nodes" of one gloo process each on this machine: the step's loss,
    parameter gradients and updated weights are the single-process ones on the whole batch."""
    from tests.multinode_worker import problem, step
    port = _free_port()
    commands = []
    for node in range(2):
        dry = subprocess.run(
            ["make", "-n", "-o", ".venv/.installed", "pretrain", "DATASET=digits", "GPUS=1",
             "NNODES=2", f"NODE_RANK={node}", "MASTER_ADDR=127.0.0.1", f"MASTER_PORT={port}",
             f"RDZV_ID=test-{port}"], cwd=ROOT, capture_output=True, text=True).stdout
        line = next(x for x in dry.splitlines() if "torchrun" in x)
        flags = line.split("torchrun", 1)[1].split("scripts/pretrain.py")[0].split()
        assert f"--rdzv-conf=is_host={1 - node}" in flags and "--rdzv-backend=c10d" in flags
        flags = [f + ",join_timeout=120" if f.startswith("--rdzv-conf") else f for f in flags]
        commands.append([sys.executable, "-m", "torch.distributed.run", *flags,
                         str(ROOT / "tests" / "multinode_worker.py"), str(tmp_path)])
    env = {k: v for k, v in _rank_env(0, port).items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    nodes = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in commands]
    ended = _finish(nodes)
    assert [p.returncode for p in nodes] == [0, 0], [p.communicate() for p in nodes] or ended
    model, images, labels = problem()
    loss, grads = step(model, images, labels, global_loss=False)
    for rank in range(WORLD):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert r["world"] == WORLD
        torch.testing.assert_close(r["loss"], loss, rtol=0, atol=1e-12)
        for name, grad in grads.items():
            torch.testing.assert_close(r["grads"][name], grad, rtol=1e-9, atol=1e-12, msg=name)
        for name, weight in model.state_dict().items():
            torch.testing.assert_close(r["weights"][name], weight, rtol=1e-9, atol=1e-12,
                                       msg=name)
    assert max(g.abs().max().item() for g in grads.values()) > 1e-3


def test_single_process_continues_a_two_process_checkpoint(e2e_runs):
    run = e2e_runs / "full"
    c = load_config(None, [x for x in E2E if not x.startswith("epochs=")]
                    + ["epochs=3", "resume=true", f"run_dir={run}"])
    pretrain(c, progress=False)
    lines = _metrics(run)
    assert [m["epoch"] for m in lines] == [1, 2, 3] and lines[-1]["step"] == 12
    assert "rng_ranks" not in load_checkpoint(run / "checkpoints" / "last.pt")


# ---------------------------------------------------------------------------------------------
# Single-process behaviour and set-up errors (no processes spawned)
# ---------------------------------------------------------------------------------------------


def test_without_torchrun_there_is_no_process_group(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with distributed.process_group("auto", "cpu") as env:
        assert env == DistEnv(device=torch.device("cpu"))
        assert not torch.distributed.is_initialized() and distributed.is_main()
        x = torch.randn(3, 2, requires_grad=True)
        assert distributed.gather_with_grad(x) is x
        assert distributed.all_gather_objects("a") == ["a"]


@pytest.mark.parametrize("env, message", [
    ({"RANK": "0"}, "WORLD_SIZE, LOCAL_RANK not set but RANK is"),
    ({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"}, "must be integers"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "inconsistent torchrun variables"),
])
def test_malformed_torchrun_environment_is_named(monkeypatch, env, message):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(DistributedError, match=message):
        with distributed.process_group("auto", "cpu"):
            pass


def test_backend_choice():
    assert distributed.resolve_backend("auto", torch.device("cpu")) == "gloo"
    assert distributed.resolve_backend("auto", torch.device("cuda", 0)) == "nccl"
    with pytest.raises(DistributedError, match="backend=nccl needs CUDA"):
        distributed.resolve_backend("nccl", torch.device("cpu"))


@pytest.mark.parametrize("override, message", [
    (["distributed.loss_scope=local"], "distributed.loss_scope 'local' unknown"),
    (["distributed.backend=mpi"], "distributed.backend 'mpi' unknown"),
    (["distributed.syncbn=true"], r"unknown config key\(s\) distributed.syncbn.*"
                                  r"distributed.sync_bn"),
    (["compile=maybe"], "compile must be true or false"),
])
def test_distributed_config_keys_are_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, override)
    c = load_config(None, ["distributed.loss_scope=per_gpu", "distributed.sync_bn=true",
                           "compile=true"])
    assert (c.distributed.loss_scope, c.distributed.sync_bn, c.compile) == ("per_gpu", True,
                                                                            True)


def test_unwrap_strips_compile_wrapper():
    model = ContrastiveModel("resnet18", 4, 1, 8)
    compiled = torch.compile(model)             # lazily compiled: nothing runs here
    assert distributed.unwrap(compiled) is model and distributed.unwrap(model) is model


def test_make_pretrain_gpus_launches_torchrun():
    def dry(*args):
        return subprocess.run(["make", "-n", "pretrain", *args],
                              cwd=ROOT, capture_output=True, text=True).stdout
    multi = dry("GPUS=4", "DATASET=cifar10")
    assert "torchrun --standalone --nproc_per_node=4 scripts/pretrain.py " \
           "configs/paper/cifar10.yaml loss=sincere name=cifar10-sincere" in multi
    for single in (dry("DATASET=cifar10"), dry("GPUS=1", "DATASET=cifar10")):
        assert "torchrun" not in single and "python scripts/pretrain.py" in single
