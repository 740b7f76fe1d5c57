"""DDP on CPU (gloo, 2 processes): loss, gradients and BatchNorm statistics equal one process's
on the union batch, SIGReg included, and the equality breaks if SIGReg or BatchNorm are per rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.test_train import TINY, BatchedMovingSquare
from worldmodel import ModelConfig, TrainConfig
from worldmodel.model import JEPA
from worldmodel.regularizers import set_regularizer_step

WORLD = 2
CFG = dict(TINY, context=2, pred_steps=2, rollout_weight=1.0, sigreg_weight=1.0)
BATCH = 16  # the union batch; 8 windows per rank
#: the variants each rank runs: (name, SIGReg synchronised, BatchNorm over the union batch)
VARIANTS = [("ddp", True, True), ("sigreg_per_rank", False, True), ("batchnorm_per_rank", True, False)]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ds = BatchedMovingSquare(BATCH, n=4, seed=3)
    return ds.pixels, ds.actions


def _step(model: torch.nn.Module, runner: torch.nn.Module, pixels: torch.Tensor, actions: torch.Tensor) -> dict:
    """One forward/backward with the regularisers' projections of (seed 5, step 0)."""
    set_regularizer_step(model, 5, 0)
    losses = runner(pixels, actions)
    losses["loss"].backward()
    bn = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    return {"losses": {k: v.item() for k, v in losses.items()},
            "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, "bn": bn}


def _worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from worldmodel.distributed import convert_batchnorm
    from worldmodel.train import LossModule

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    pixels, actions = _batch()
    shard = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    results = {}
    for name, sync_sigreg, sync_bn in VARIANTS:
        torch.manual_seed(0)
        model = JEPA(ModelConfig(**CFG))
        model.sigreg.sync = sync_sigreg
        if sync_bn:
            model = convert_batchnorm(model)
        ddp = DistributedDataParallel(LossModule(model), broadcast_buffers=False)
        results[name] = _step(model, ddp, pixels[shard], actions[shard])
    torch.save(results, f"{out}.{rank}")
    dist.destroy_process_group()


def _close(a: dict, b: dict) -> bool:
    return all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def test_two_process_gradients_equal_one_process_on_the_union_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path / "res")), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"res.{r}") for r in range(WORLD)]

    torch.manual_seed(0)
    model = JEPA(ModelConfig(**CFG))
    single = _step(model, model.loss, *_batch())

    got = ranks[0]["ddp"]
    # every rank ends with the same (all-reduced) gradients and BatchNorm statistics
    assert _close(got["grads"], ranks[1]["ddp"]["grads"]) and _close(got["bn"], ranks[1]["ddp"]["bn"])
    # SIGReg (a statistic of the union batch) is the same on both ranks and equals one process's
    for r in range(WORLD):
        assert ranks[r]["ddp"]["losses"]["sigreg_loss"] == pytest.approx(single["losses"]["sigreg_loss"], rel=1e-5)
    # per-sample mean losses: the mean over ranks of the per-rank means is the union-batch mean
    for key in ("loss", "pred_loss", "rollout_loss"):
        mean = sum(ranks[r]["ddp"]["losses"][key] for r in range(WORLD)) / WORLD
        assert mean == pytest.approx(single["losses"][key], rel=1e-5), key
    assert set(got["grads"]) == set(single["grads"])
    for k in single["grads"]:
        torch.testing.assert_close(got["grads"][k], single["grads"][k], rtol=1e-4, atol=1e-6, msg=k)
    for k in single["bn"]:
        torch.testing.assert_close(got["bn"][k], single["bn"][k], rtol=1e-5, atol=1e-6, msg=k)

    # SIGReg per rank (no all-reduce of its characteristic function): loss and gradients differ
    per_rank = ranks[0]["sigreg_per_rank"]
    assert per_rank["losses"]["sigreg_loss"] != pytest.approx(single["losses"]["sigreg_loss"], rel=1e-3)
    assert not _close(per_rank["grads"], single["grads"])
    # BatchNorm per rank: the statistics and gradients differ
    bn_per_rank = ranks[0]["batchnorm_per_rank"]
    assert not _close(bn_per_rank["bn"], single["bn"]) and not _close(bn_per_rank["grads"], single["grads"])


def _train_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from worldmodel.train import train

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    train(ModelConfig(**CFG), _train_cfg(out), BatchedMovingSquare(64, n=4))
    dist.destroy_process_group()


def _train_cfg(out: str) -> TrainConfig:
    return TrainConfig(out=out, steps=3, batch_size=BATCH, lr=1e-3, warmup_steps=0, log_every=1, ckpt_every=3,
                       val_every=0, device="cpu", progress=False, tensorboard=False)


def _losses(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in m.items() if k not in ("seconds", "samples_per_s")} for m in lines]


@pytest.mark.slow
def test_two_process_training_logs_what_one_process_logs(tmp_path):
    """`train` in 2 gloo processes: the union batches, hence the logged losses, of one process;
    only rank 0 writes, and train_config.json records the world size."""
    from worldmodel.train import train

    ddp_run, one_run = tmp_path / "ddp", tmp_path / "one"
    mp.spawn(_train_worker, args=(str(tmp_path / "store"), str(ddp_run)), nprocs=WORLD, join=True)
    torch.manual_seed(0)
    train(ModelConfig(**CFG), _train_cfg(str(one_run)), BatchedMovingSquare(64, n=4))
    got, want = _losses(ddp_run), _losses(one_run)
    assert [m["step"] for m in got] == [1, 2, 3]
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-6), (g["step"], k)
    assert json.loads((ddp_run / "train_config.json").read_text())["world_size"] == WORLD
    assert json.loads((one_run / "train_config.json").read_text())["world_size"] == 1
