"""Training at scale on one process: exact resume, crash-safe checkpoints, gradient
accumulation, bf16 autocast on CPU, TensorBoard, torch.compile."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import worldmodel.checkpoint as ckpt
from tests.test_train import TINY, BatchedMovingSquare
from worldmodel import ModelConfig, TrainConfig, load_checkpoint
from worldmodel.model import JEPA
from worldmodel.train import LossModule, accumulate_gradients, train

TIMING = ("seconds", "samples_per_s")


def cfg(out: Path, **kw) -> TrainConfig:
    base = dict(out=str(out), steps=8, batch_size=8, lr=3e-3, warmup_steps=2, log_every=3, ckpt_every=4,
                val_every=4, val_batches=1, device="cpu", progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kw})


def lines(run: Path) -> list[dict]:
    """metrics.jsonl without the timing fields (which differ from run to run)."""
    out = []
    for text in (run / "metrics.jsonl").read_text().splitlines():
        out.append({k: v for k, v in json.loads(text).items() if k not in TIMING})
    return out


class FailingAt(BatchedMovingSquare):
    """Raises ``error`` when asked for its ``at``-th batch (1-based)."""

    def __init__(self, at: int, error: BaseException, **kw):
        super().__init__(**kw)
        self.at, self.error, self.calls = at, error, 0

    def __getitems__(self, indices: list[int]) -> dict:
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return super().__getitems__(indices)


@pytest.mark.parametrize("error, at", [(KeyboardInterrupt(), 6), (RuntimeError("simulated crash"), 8)])
def test_interrupted_and_resumed_run_logs_what_an_uninterrupted_one_logs(tmp_path, error, at):
    """Interrupted at batch ``at`` (Ctrl-C: a checkpoint at step 5, mid logging interval; a
    crash: the step-4 checkpoint, with lines of steps 5-7 already logged), then rerun: every
    step's line once, equal to an uninterrupted run's, and the same final weights."""
    mcfg = ModelConfig(**TINY)
    val = BatchedMovingSquare(16, seed=1)
    train(mcfg, cfg(tmp_path / "whole"), BatchedMovingSquare(64), val_dataset=val)
    with pytest.raises(type(error)):
        train(mcfg, cfg(tmp_path / "cut"), FailingAt(at, error, num=64), val_dataset=val)
    resumed = train(mcfg, cfg(tmp_path / "cut"), BatchedMovingSquare(64), val_dataset=val)
    assert resumed["start_step"] == (5 if isinstance(error, KeyboardInterrupt) else 4)
    whole, cut = lines(tmp_path / "whole"), lines(tmp_path / "cut")
    assert [m["step"] for m in cut] == [m["step"] for m in whole] == [3, 4, 6, 8, 8]
    assert cut == whole
    a, b = load_checkpoint(tmp_path / "whole").state_dict(), load_checkpoint(tmp_path / "cut").state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)


class Crash(Exception):
    pass


class CrashingOS:
    """``os`` for worldmodel.checkpoint whose replace/rename/rmdir raise ``Crash`` at call ``at``."""

    def __init__(self, counter: list[int], at: int):
        self.counter, self.at = counter, at

    def tick(self) -> None:
        self.counter[0] += 1
        if self.counter[0] == self.at:
            raise Crash(f"crash before file operation {self.at}")

    def __getattr__(self, name: str):
        real = getattr(os, name)
        if name not in ("replace", "rename", "rmdir"):
            return real

        def op(*args, **kwargs):
            self.tick()
            return real(*args, **kwargs)
        return op


def test_checkpoint_interrupted_at_any_file_operation_stays_loadable(tmp_path, monkeypatch):
    """A save crashing before any one of its file writes/moves leaves either the previous step
    or (after the commit point) the new one, complete: loadable, resumable, not mixed."""
    torch.manual_seed(0)
    models = [JEPA(ModelConfig(**TINY)) for _ in range(3)]
    opts = [torch.optim.AdamW(m.parameters()) for m in models]
    for m, o in zip(models, opts):  # an optimizer state to store
        m.loss(*(t[:4] for t in (BatchedMovingSquare(4).pixels, BatchedMovingSquare(4).actions)))["loss"].backward()
        o.step()
    real_write_json, real_write_tensors = ckpt._write_json, ckpt._write_tensors

    def patch(counter: list[int], at: int) -> None:
        fake = CrashingOS(counter, at)
        monkeypatch.setattr(ckpt, "os", fake)

        def write_json(*a, **k):
            fake.tick()
            return real_write_json(*a, **k)

        def write_tensors(*a, **k):
            fake.tick()
            return real_write_tensors(*a, **k)
        monkeypatch.setattr(ckpt, "_write_json", write_json)
        monkeypatch.setattr(ckpt, "_write_tensors", write_tensors)

    count = [0]
    patch(count, at=-1)
    ckpt.save_checkpoint(tmp_path / "probe", models[1], optimizer=opts[1], step=2, train_state={})
    n_ops = count[0]
    monkeypatch.undo()
    assert n_ops >= 8, n_ops

    outcomes = set()
    for at in range(1, n_ops + 1):
        d = tmp_path / f"c{at}"
        ckpt.save_checkpoint(d, models[0], optimizer=opts[0], step=1, train_state={"n": 1})
        patch([0], at)
        with pytest.raises(Crash):
            ckpt.save_checkpoint(d, models[1], optimizer=opts[1], step=2, train_state={"n": 2})
        monkeypatch.undo()
        assert ckpt.has_train_state(d), at
        step = ckpt.read_train_state(d)["step"]
        outcomes.add(step)
        loaded = ckpt.load_checkpoint(d)
        ckpt.load_train_state(d, torch.optim.AdamW(loaded.parameters()))  # consistent: no CheckpointError
        assert ckpt.read_train_state(d)["train_state"] == {"n": step}
        want = models[step - 1].state_dict()
        for k, v in loaded.state_dict().items():
            torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=f"crash at {at}: {k}")
        # the next save completes or discards the interrupted one and leaves a clean folder
        ckpt.save_checkpoint(d, models[2], optimizer=opts[2], step=3, train_state={"n": 3})
        assert ckpt.read_train_state(d)["step"] == 3
        assert sorted(p.name for p in d.iterdir()) == sorted(ckpt.SAVE_ORDER), at
    assert outcomes == {1, 2}  # crashes before the commit keep step 1, after it give step 2


def test_grad_accumulation_equals_one_big_batch_without_batch_statistics():
    """For a loss that is a per-sample mean (no BatchNorm, no SIGReg in the loss), accumulating
    2 micro-batches of 8 gives the gradient of one batch of 16."""
    torch.manual_seed(0)
    model = JEPA(ModelConfig(**{**TINY, "sigreg_weight": 0.0}))
    for name, module in model.named_modules():  # statistics-free: BatchNorm -> identity
        for child_name, child in module.named_children():
            if isinstance(child, torch.nn.BatchNorm1d):
                setattr(module, child_name, torch.nn.Identity())
    ds = BatchedMovingSquare(16, n=2)
    big = [{"pixels": ds.pixels, "actions": ds.actions}]
    small = [{"pixels": ds.pixels[i : i + 8], "actions": ds.actions[i : i + 8]} for i in (0, 8)]
    runner, cpu = LossModule(model), torch.device("cpu")

    def grads(batches: list[dict], accum: int) -> tuple[torch.Tensor, dict]:
        model.zero_grad(set_to_none=True)
        keys: list[str] = []
        values = accumulate_gradients(runner, model, iter(batches), accum, keys, cpu)
        assert keys[:2] == ["loss", "pred_loss"]
        return values, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    v1, g1 = grads(big, 1)
    v2, g2 = grads(small, 2)
    torch.testing.assert_close(v2[:2], v1[:2], rtol=1e-5, atol=1e-6)  # loss, pred_loss
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-4, atol=1e-7, msg=k)


def test_grad_accum_run_counts_samples_and_steps(tmp_path):
    summary = train(ModelConfig(**TINY), cfg(tmp_path / "run", steps=3, grad_accum=2, val_every=0),
                    BatchedMovingSquare(64))
    assert summary["steps"] == 3 and summary["steps_run"] == 3
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["grad_accum"] == 2 and saved["world_size"] == 1
    with pytest.raises(ValueError, match="grad_accum must be >= 1, got 0"):
        TrainConfig(grad_accum=0)


def test_amp_runs_bf16_autocast_on_cpu(tmp_path, monkeypatch):
    """--amp on CPU trains under bfloat16 autocast (the matrix products see bf16), --no-amp and
    the default (unset: CUDA only) do not."""
    seen = []
    real = JEPA.loss

    def spy(self, pixels, actions):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return real(self, pixels, actions)
    monkeypatch.setattr(JEPA, "loss", spy)
    monkeypatch.setattr("worldmodel.train.cpu_has_fast_bf16", lambda: True)  # whatever this machine's CPU is
    for amp, want in ((True, True), (False, False), (None, False)):
        seen.clear()
        summary = train(ModelConfig(**TINY), cfg(tmp_path / f"amp{amp}", steps=2, val_every=0, amp=amp),
                        BatchedMovingSquare(32))
        assert seen and all(s == want for s in seen), amp
        assert summary["amp"] is want
        assert summary["loss"] is not None and summary["loss"] == summary["loss"]  # finite, not NaN


def test_amp_on_a_cpu_without_native_bf16_trains_in_float32_and_says_so(tmp_path, monkeypatch, capsys):
    """An AVX2-only CPU emulates bf16 products ~100x slower than float32 (measured): an amp request
    there trains in float32, says so on stderr and records it in the summary."""
    seen = []
    real = JEPA.loss

    def spy(self, pixels, actions):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(self, pixels, actions)
    monkeypatch.setattr(JEPA, "loss", spy)
    monkeypatch.setattr("worldmodel.train.cpu_has_fast_bf16", lambda: False)
    summary = train(ModelConfig(**TINY), cfg(tmp_path / "amp", steps=2, val_every=0, amp=True), BatchedMovingSquare(32))
    assert seen and not any(seen) and summary["amp"] is False
    assert "no native bf16 matrix products" in capsys.readouterr().err
    saved = json.loads((tmp_path / "amp" / "train_config.json").read_text())
    assert saved["amp"] is True  # the request, as asked; the summary says what ran



def test_tensorboard_events_beside_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(ModelConfig(**TINY), cfg(tmp_path / "run", steps=4, log_every=2, tensorboard=True),
          BatchedMovingSquare(64), val_dataset=BatchedMovingSquare(16, seed=1))
    events = list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(tmp_path / "run"))
    acc.Reload()
    assert {"train/loss", "train/pred_loss", "train/sigreg_loss", "val/pred_loss"} <= set(acc.Tags()["scalars"])
    logged = [m["loss"] for m in lines(tmp_path / "run") if "loss" in m]
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(logged, rel=1e-6)
    train(ModelConfig(**TINY), cfg(tmp_path / "off", steps=2, tensorboard=False), BatchedMovingSquare(64))
    assert not list((tmp_path / "off").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_compile_trains_like_eager(tmp_path):
    """--compile (torch.compile of the loss; compiling takes a minute or more on 2 cores)."""
    eager = train(ModelConfig(**TINY), cfg(tmp_path / "eager", steps=2, val_every=0), BatchedMovingSquare(32))
    compiled = train(ModelConfig(**TINY), cfg(tmp_path / "compiled", steps=2, val_every=0, compile=True),
                     BatchedMovingSquare(32))
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-3)
