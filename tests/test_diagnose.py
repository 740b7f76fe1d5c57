"""``wm diagnose``'s metrics against known answers, and its bad-input errors.

Known answers (the Done-when of issue #12, deliverable 5):
- RankMe of isotropic Gaussian embeddings (N x D) is ~D and of rank-k ones ~k. The sample
  singular values of an N x D Gaussian matrix spread around sqrt(N) by about sqrt(D/N)
  (Marchenko-Pastur), which lowers exp(entropy) by about D/(8N) relatively: 0.1% for
  N = 8192, D = 64. The tests allow 1% (seeds differ, and a wrong normalisation such as
  squared singular values, the eigenvalues, loses 4x as much, still inside: an exact
  two-value spectrum, where the two definitions give 1.75 vs 1.38, catches that one).
- The probe's held-out R^2 is ~1 for embeddings that are a linear map of the state and
  <= 0.1 for noise; it is scored on other episodes than it was fitted on.
- Surprise is higher on teleports than on real transitions for a trained model (slow test).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks.diagnose import (
    DIAGNOSTICS_FILE, SURPRISE_FILE, EpisodeEmbeddings, _split_episodes, angle_probe, diagnose, probe_r2,
    run_diagnose, summary_lines, surprise_summary, variance_note,
)
from worldmodel.diagnostics import auroc, heldout_r2, rankme, straightness

CONTRACT_KEYS = {"rankme", "probe_r2", "open_loop_mse", "surprise_ratio", "straightness"}


# --------------------------------------------------------------------------- RankMe
@pytest.mark.parametrize("seed", [0, 1])
def test_rankme_of_isotropic_gaussian_is_its_dimension(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = 64
    z = rng.standard_normal((8192, d))
    for value in (rankme(z), rankme(z, center=True), rankme(3.0 * z)):  # scale-free
        assert 0.99 * d <= value <= d, value


@pytest.mark.parametrize("k", [1, 4, 16])
def test_rankme_of_rank_k_embeddings_is_k(k: int) -> None:
    rng = np.random.default_rng(k)
    q, _ = np.linalg.qr(rng.standard_normal((64, k)))  # (64, k) orthonormal columns
    z = rng.standard_normal((8192, k)) @ q.T  # rank k in 64 dimensions
    assert abs(rankme(z) - k) <= 0.01 * k, rankme(z)


def test_rankme_matches_the_formula_on_an_exact_spectrum() -> None:
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((100, 2)))
    v, _ = np.linalg.qr(rng.standard_normal((10, 2)))
    z = u @ np.diag([3.0, 1.0]) @ v.T  # singular values exactly 3 and 1
    p = np.array([0.75, 0.25])
    assert rankme(z, eps=0.0) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-9)  # 1.7548, not 1.38
    assert rankme(np.ones((50, 8))) == pytest.approx(1.0, abs=1e-3)  # collapsed: one direction


def test_rankme_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        rankme(np.zeros(5))
    with pytest.raises(ValueError, match="non-finite"):
        rankme(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="all zeros"):
        rankme(np.zeros((4, 3)))


# --------------------------------------------------------------------------- probe
def _random_walks(n_eps: int, length: int, rng: np.random.Generator) -> list[np.ndarray]:
    """(length, 2) state trajectories: random walks in the unit square."""
    return [np.clip(rng.uniform(0, 1, 2) + np.cumsum(rng.normal(0, 0.03, (length, 2)), 0), 0, 1) for _ in range(n_eps)]


def test_probe_r2_is_one_for_a_linear_map_of_the_state_and_zero_for_noise() -> None:
    rng = np.random.default_rng(0)
    states = _random_walks(20, 50, rng)
    m = rng.standard_normal((2, 32))
    fit, score = states[:14], states[14:]  # by episode
    fy, sy = np.concatenate(fit), np.concatenate(score)
    linear = probe_r2(fy @ m + 0.001 * rng.standard_normal((len(fy), 32)), fy,
                      sy @ m + 0.001 * rng.standard_normal((len(sy), 32)), sy)
    assert linear["r2"] > 0.99 and all(v > 0.99 for v in linear["r2_per_dim"])
    assert (linear["fit_frames"], linear["score_frames"]) == (700, 300)
    noise = probe_r2(rng.standard_normal((len(fy), 32)), fy, rng.standard_normal((len(sy), 32)), sy)
    assert noise["r2"] <= 0.1, noise


def _angle_data(n: int, m: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, 16) embeddings ``(x, y, cos, sin) @ m`` + noise, holding an angle's (cos, sin) and a
    position linearly, and the (n, 3) goal layouts (x, y, angle wrapped to [-pi, pi)) they encode."""
    theta = rng.uniform(-np.pi, np.pi, n)
    xy = rng.uniform(0, 1, (n, 2))
    feats = np.column_stack([xy, np.cos(theta), np.sin(theta)])
    emb = feats @ m + 0.001 * rng.standard_normal((n, m.shape[1]))
    return emb, np.column_stack([xy, theta])


def test_angle_probe_reads_an_angle_across_its_wrap_where_the_wrapped_value_cannot() -> None:
    rng = np.random.default_rng(0)
    m = rng.standard_normal((4, 16))
    (fx, fg), (sx, sg) = _angle_data(2000, m, rng), _angle_data(500, m, rng)
    wrapped = probe_r2(fx, fg, sx, sg)["r2_per_dim"]
    assert wrapped[0] > 0.99 and wrapped[1] > 0.99 and wrapped[2] < 0.8  # the wrap hides a perfectly readable angle
    angles = angle_probe(fx, fg, sx, sg, (2,))
    assert angles["angle_dims"] == [2] and angles["targets"] == ["cos 2", "sin 2"]
    assert all(v > 0.99 for v in angles["r2_per_dim"]) and angles["r2"] > 0.99
    noise = angle_probe(rng.standard_normal(fx.shape), fg, rng.standard_normal(sx.shape), sg, (2,))
    assert noise["r2"] <= 0.1, noise  # nothing of the angle: nothing read
    for bad in ((), (3,), (-1,)):
        with pytest.raises(ValueError, match="angle_dims"):
            angle_probe(fx, fg, sx, sg, bad)


def test_envs_name_the_angles_of_their_goal_layout() -> None:
    import envs

    dims = {env_id: envs.make(env_id, resolution=16).unwrapped.goal_angle_dims
            for env_id in ("wm/TwoRoom-v0", "wm/PushT-v0", "wm/Reacher-v0")}
    assert dims == {"wm/TwoRoom-v0": (), "wm/PushT-v0": (2,), "wm/Reacher-v0": (0, 1)}


def test_heldout_r2_reference_values() -> None:
    y = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    assert heldout_r2(y, y) == [1.0, None]  # a constant column has no R^2
    mean = np.tile(y.mean(0), (4, 1))
    assert heldout_r2(y, mean)[0] == pytest.approx(0.0)
    assert heldout_r2(y, mean + [1.0, 0.0])[0] == pytest.approx(1 - 9 / 5)  # SS_res 9 vs SS_tot 5: negative
    with pytest.raises(ValueError, match="shape"):
        heldout_r2(y, y[:, :1])


def test_probe_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        probe_r2(np.zeros((1, 3)), np.zeros((1, 2)), np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="do not match"):
        probe_r2(np.zeros((4, 3)), np.zeros((5, 2)), np.zeros((5, 3)), np.zeros((5, 2)))


# --------------------------------------------------------------------------- straightness, auroc
def test_straightness_reference_values() -> None:
    t = np.arange(10.0)[:, None]
    line = t * np.array([[1.0, 2.0, -1.0]]) + 5.0
    assert straightness([line]) == (pytest.approx(1.0), 8, 0)
    zigzag = np.stack([t[:, 0], (-1.0) ** t[:, 0]], 1) * [0.0, 1.0]  # back and forth on one axis
    assert straightness([zigzag])[0] == pytest.approx(-1.0)
    still = np.concatenate([line[:3], np.repeat(line[3:4], 3, 0), line[4:]])  # stands still for two steps
    value, pairs, skipped = straightness([still])
    assert value == pytest.approx(1.0) and skipped == 3 and pairs + skipped == len(still) - 2
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.standard_normal((4000, 16)), 0)  # independent steps: orthogonal on average
    assert abs(straightness([walk])[0]) < 0.05
    assert straightness([line[:2]]) == (None, 0, 0)


def test_auroc_reference_values() -> None:
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auroc(np.array([0.0]), np.array([1.0])) == 0.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5  # ties count half
    assert auroc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5


# --------------------------------------------------------------------------- a stub model on the contract
class LinearWorld(torch.nn.Module):
    """A world model on the contract whose latent is a linear map of a point's position and whose
    rollout is the true dynamics: position += sum of the block's raw actions. ``encode`` reads the
    position from the bright pixel of the frame (row, column) / size, so a dataset of such frames
    works end to end; `synthetic_episodes` builds encoded episodes directly."""

    def __init__(self, m: np.ndarray, frameskip: int = 2, context: int = 1, image_size: int = 16):
        super().__init__()
        self.m = torch.as_tensor(m, dtype=torch.float32)  # (2, D)
        d = self.m.shape[1]
        self.config = SimpleNamespace(
            image_size=image_size, in_channels=3, action_dim=2, frameskip=frameskip, block_dim=2 * frameskip,
            context=context, pred_steps=1, window=context + 1, embed_dim=d, family="linear-stub",
            to_dict=lambda: {"family": "linear-stub", "embed_dim": d})
        self.calls = 0

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = pixels.shape
        flat = pixels[:, :, 0].reshape(b, t, h * w).float().argmax(-1)
        pos = torch.stack([flat // w, flat % w], -1).float() / h
        return pos @ self.m

    def predict(self, emb: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return emb + actions.view(*actions.shape[:2], -1, 2).sum(2) @ self.m

    def rollout(self, emb: torch.Tensor, actions: torch.Tensor, past_actions: torch.Tensor | None = None) -> torch.Tensor:
        self.calls += 1
        moves = actions.view(*actions.shape[:3], -1, 2).sum(3).cumsum(2) @ self.m  # (B, S, H, D)
        return emb[:, None, -1:] + moves


def synthetic_episodes(model: LinearWorld, n_eps: int = 12, length: int = 25, noise: float = 0.002,
                       seed: int = 0) -> list[EpisodeEmbeddings]:
    """Episodes moving in a straight line each (a constant raw action), encoded by ``model.m`` + noise."""
    rng = np.random.default_rng(seed)
    m = model.m.numpy().astype(np.float64)
    f = model.config.frameskip
    eps = []
    for i in range(n_eps):
        a = np.tile(rng.uniform(-0.02, 0.02, 2), (length, 1))  # (T, 2) raw actions, last row unused
        state = rng.uniform(0.2, 0.8, 2) + np.concatenate([np.zeros((1, 2)), np.cumsum(a[:-1], 0)])
        emb = (state @ m + noise * rng.standard_normal((length, m.shape[1]))).astype(np.float32)
        blocks = np.stack([a[s : s + f].ravel() for s in range(length - f)]).astype(np.float32)
        eps.append(EpisodeEmbeddings(100 + i, emb, state, blocks, goal=None))
    return eps


def test_diagnose_known_answers_with_a_stub_model_on_the_contract() -> None:
    rng = np.random.default_rng(0)
    model = LinearWorld(rng.standard_normal((2, 8)), frameskip=2, context=2)
    eps = synthetic_episodes(model)
    metrics, errors = diagnose(model, eps, steps=4, seed=0)
    assert CONTRACT_KEYS <= set(metrics)
    assert metrics["probe_r2"] > 0.99  # a linear map of the state
    assert 1.0 <= metrics["rankme"] <= 3.0  # two state dimensions + a little noise
    assert len(metrics["open_loop_mse"]) == 4
    assert max(metrics["open_loop_mse"]) < 0.05  # the stub's rollout is the true dynamics: noise only
    ol = metrics["details"]["open_loop"]
    assert all(c > 3 * m for c, m in zip(ol["copy_baseline"], metrics["open_loop_mse"]))
    kinds = metrics["surprise_ratio_by_kind"]
    assert set(kinds) == {"teleport", "frozen", "swapped_actions"}
    assert kinds["teleport"] > 10 and kinds["frozen"] > 2 and kinds["swapped_actions"] > 2
    assert metrics["surprise_ratio"] == pytest.approx(np.mean(list(kinds.values())))  # the documented aggregation
    assert metrics["straightness"] > 0.9  # straight lines
    assert metrics["details"]["straightness"]["state_straightness"] == pytest.approx(1.0)
    probe = metrics["details"]["probe"]
    assert not set(probe["fit_episode_ids"]) & set(probe["score_episode_ids"])
    assert sorted(probe["fit_episode_ids"] + probe["score_episode_ids"]) == [ep.episode_id for ep in eps]
    assert len(errors["normal"]) == metrics["details"]["surprise"]["transitions"] > 0
    # the same seed, the same figures
    again, _ = diagnose(model, eps, steps=4, seed=0)
    assert json.dumps(again, sort_keys=True) == json.dumps(metrics, sort_keys=True)


def test_near_constant_dimensions_are_counted_and_named_in_a_note() -> None:
    """A dimension the frames barely move (a spatial embedding's wall cell) is counted, and the note
    says the normalised errors are dominated by it; none in an embedding without one."""
    rng = np.random.default_rng(0)
    m = rng.standard_normal((2, 8))
    model = LinearWorld(m)
    metrics, _ = diagnose(model, synthetic_episodes(model), steps=2, seed=0)
    assert metrics["details"]["variance"]["near_constant_dims"] == 0
    assert variance_note(metrics["details"]) is None
    m[:, 5] = 0.0  # dimensions 5 and 6 are the noise alone: variance ~4e-6 against ~0.05
    m[:, 6] = 0.0
    model = LinearWorld(m)
    metrics, _ = diagnose(model, synthetic_episodes(model), steps=2, seed=0)
    assert metrics["details"]["variance"]["near_constant_dims"] == 2
    note = variance_note(metrics["details"])
    assert note is not None and note.startswith("2 of 8 embedding dimensions") and "open_loop_mse_raw" in note
    # why it matters: the noise-only dimensions alone lift the normalised error far above the raw one's scale
    assert metrics["open_loop_mse"][0] > 0.1


def test_probe_is_scored_on_other_episodes_than_it_was_fitted_on() -> None:
    """Embeddings that only tell episodes apart (one-hot id) and a state constant per episode:
    a by-frame split would score ~1 (each episode seen in fitting); by episode, nothing carries over."""
    rng = np.random.default_rng(0)
    model = LinearWorld(np.zeros((2, 16)), frameskip=1)
    eps = []
    for i in range(16):
        state = np.tile(rng.uniform(0, 1, 2), (20, 1))
        emb = (np.eye(16)[i] + 0.01 * rng.standard_normal((20, 16))).astype(np.float32)
        eps.append(EpisodeEmbeddings(i, emb, state, np.zeros((19, 2), np.float32)))
    metrics, _ = diagnose(model, eps, steps=1, seed=0)
    assert metrics["probe_r2"] < 0.1


def test_split_episodes() -> None:
    rng = np.random.default_rng(0)
    fit, score = _split_episodes(list(range(10)), rng)
    assert len(fit) == 7 and len(score) == 3 and sorted(fit + score) == list(range(10))
    assert _split_episodes([4, 9], rng) in (([4], [9]), ([9], [4]))


def test_surprise_summary_aggregation_and_collapse() -> None:
    errors = {"normal": np.array([1.0, 1.0]), "teleport": np.array([4.0, 6.0]), "frozen": np.array([1.0, 1.0]),
              "swapped_actions": np.array([2.0, 2.0])}
    s = surprise_summary(errors)
    assert s["kinds"]["teleport"]["ratio"] == 5.0 and s["kinds"]["frozen"]["ratio"] == 1.0
    assert s["surprise_ratio"] == pytest.approx((5.0 + 1.0 + 2.0) / 3)
    assert s["kinds"]["teleport"]["auroc"] == 1.0 and s["kinds"]["frozen"]["auroc"] == 0.5
    with pytest.raises(ValueError, match="collapsed"):
        surprise_summary({**errors, "normal": np.zeros(2)})


def test_diagnose_bad_input() -> None:
    model = LinearWorld(np.eye(2), frameskip=2)
    eps = synthetic_episodes(model, n_eps=3, length=9)
    with pytest.raises(ValueError, match="at least 2 held-out episodes"):
        diagnose(model, eps[:1])
    with pytest.raises(ValueError, match="steps=0"):
        diagnose(model, eps, steps=0)
    with pytest.raises(ValueError, match=r"at most --steps 4"):  # 9 frames, context 1, blocks of 2: 4 steps
        diagnose(model, eps, steps=5)


# --------------------------------------------------------------------------- end to end on a real dataset
def _dot_frames(states: np.ndarray, size: int) -> np.ndarray:
    """(T, size, size, 3) uint8 frames with one bright pixel at the state's (row, column) * size."""
    frames = np.zeros((len(states), size, size, 3), np.uint8)
    rc = np.clip((states * size).astype(int), 0, size - 1)
    frames[np.arange(len(states)), rc[:, 0], rc[:, 1]] = 255
    return frames


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """TwoRoom data at 32x32 (train + held-out), a 2-step checkpoint trained on it, a PushT dataset."""
    from data.collect import collect
    from tests.cli_helpers import train_tiny

    root = tmp_path_factory.mktemp("diagnose")
    collect("wm/TwoRoom-v0", 4, root / "train.lance", seed=0, resolution=32, max_steps=20)
    collect("wm/TwoRoom-v0", 4, root / "heldout.lance", seed=5000, resolution=32, max_steps=20)
    collect("wm/TwoRoom-v0", 1, root / "one.lance", seed=6000, resolution=32, max_steps=20)
    collect("wm/TwoRoom-v0", 2, root / "large.lance", seed=7000, resolution=64, max_steps=10)
    collect("wm/PushT-v0", 2, root / "pusht.lance", seed=0, resolution=32, max_steps=20, policy="random")
    train_tiny(root / "train.lance", root / "ckpt", steps=2)
    return SimpleNamespace(root=root, ckpt=root / "ckpt", heldout=root / "heldout.lance")


def test_run_diagnose_writes_the_json_the_jsonl_and_the_plots(tiny) -> None:
    out = tiny.root / "out"
    result = run_diagnose(tiny.ckpt, tiny.heldout, out, steps=2, seed=3)
    on_disk = json.loads((out / DIAGNOSTICS_FILE).read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert CONTRACT_KEYS <= set(result) and len(result["open_loop_mse"]) == 2
    assert result["env_id"] == "wm/TwoRoom-v0" and result["episode_ids"] == [0, 1, 2, 3]
    assert result["checkpoint"] == str(tiny.ckpt) and result["dataset"] == str(tiny.heldout)
    assert result["train_overlap_pairs"] == 0 and result["family"] == "lewm"
    goal = result["details"]["probe"]["goal"]
    assert goal["goal_is_state"] is True and result["probe_r2_goal"] == result["probe_r2"]  # TwoRoom's goal is its state
    rows = (out / SURPRISE_FILE).read_text().splitlines()
    assert len(rows) == result["details"]["surprise"]["transitions"]
    assert set(json.loads(rows[0])) == {"episode_id", "step", "normal", "teleport", "frozen", "swapped_actions"}
    for png in ("open_loop.png", "surprise.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(line.startswith("surprise_ratio") for line in summary_lines(result))
    fewer = run_diagnose(tiny.ckpt, tiny.heldout, tiny.root / "out2", episodes=2, steps=1, seed=3)
    assert len(fewer["episode_ids"]) == 2 and set(fewer["episode_ids"]) <= set(result["episode_ids"])


def test_run_diagnose_with_a_stub_encoder_that_is_a_linear_map_of_the_state(tiny, tmp_path) -> None:
    """The whole pipeline (dataset -> encode -> probe) with an encoder that reads the position
    of a dot drawn at the recorded state: the held-out probe recovers the state."""
    path = _dot_dataset(tmp_path / "dots.lance", n_eps=10, length=30, size=32)
    rng = np.random.default_rng(0)
    model = LinearWorld(rng.standard_normal((2, 6)), frameskip=2, image_size=32)
    result = run_diagnose(tiny.ckpt, path, tmp_path / "out", steps=3, model=model)
    assert result["probe_r2"] > 0.98, result["details"]["probe"]
    assert model.calls > 0 and len(result["open_loop_mse"]) == 3


def test_run_diagnose_notes_near_constant_dimensions(tiny, tmp_path) -> None:
    """wm diagnose's result (and its printed summary) carries the near-constant note when the
    embedding has a dimension that never moves, and not when it has none."""
    path = _dot_dataset(tmp_path / "dots.lance", n_eps=6, length=20, size=32)
    m = np.random.default_rng(0).standard_normal((2, 6))
    plain = run_diagnose(tiny.ckpt, path, tmp_path / "plain", steps=2, model=LinearWorld(m, frameskip=2, image_size=32))
    assert not any("embedding dimensions vary less than" in n for n in plain["notes"])
    m[:, 3] = 0.0  # dimension 3 never moves
    result = run_diagnose(tiny.ckpt, path, tmp_path / "out", steps=2, model=LinearWorld(m, frameskip=2, image_size=32))
    assert result["details"]["variance"]["near_constant_dims"] == 1
    assert any(n.startswith("1 of 6 embedding dimensions vary less than") for n in result["notes"]), result["notes"]
    assert any(line.startswith("note: 1 of 6 embedding dimensions") for line in summary_lines(result))
    saved = json.loads((tmp_path / "out" / DIAGNOSTICS_FILE).read_text())
    assert saved["notes"] == result["notes"]


def _dot_dataset(path: Path, n_eps: int, length: int, size: int) -> Path:
    """A TwoRoom-labelled dataset whose frames are one bright dot at the (random-walk) state."""
    from data.writer import EpisodeWriter

    rng = np.random.default_rng(1)
    with EpisodeWriter(path, codec="raw", env_id="wm/TwoRoom-v0") as w:
        for i in range(n_eps):
            states = _random_walks(1, length, rng)[0]
            frames = _dot_frames(states, size)
            for t in range(length):
                w.add_step(frames[t], states[t], rng.uniform(-1, 1, 2).astype(np.float32) if t < length - 1 else None)
            w.save_episode(seed=10_000 + i, policy="dots")
    return path


def test_run_diagnose_probes_pusht_angle_as_cos_and_sin(tiny, tmp_path) -> None:
    """On PushT (goal: block x, y, angle) the details hold the angle read as (cos, sin) and the
    summary prints it."""
    from worldmodel import ModelConfig, TrainConfig
    from worldmodel.train import train

    pusht = tiny.root / "pusht.lance"
    mc = ModelConfig(image_size=32, action_dim=2, frameskip=2, context=1, pred_steps=1, embed_dim=8, encoder_width=4,
                     projector_hidden=16, predictor_width=16, predictor_depth=1, predictor_heads=2, sigreg_projections=16)
    train(mc, TrainConfig(data=str(pusht), out=str(tmp_path / "ckpt"), steps=1, batch_size=4, warmup_steps=1,
                          val_every=1000, ckpt_every=1, device="cpu", progress=False))
    result = run_diagnose(tmp_path / "ckpt", pusht, tmp_path / "out", steps=1, allow_train_episodes=True)
    goal = result["details"]["probe"]["goal"]
    assert goal["goal_is_state"] is False and len(goal["r2_per_dim"]) == 3
    assert goal["angles"]["angle_dims"] == [2] and goal["angles"]["targets"] == ["cos 2", "sin 2"]
    assert len(goal["angles"]["r2_per_dim"]) == 2
    assert "angles as (cos, sin) [cos 2 " in summary_lines(result)[2]


def test_run_diagnose_bad_input_is_named(tiny) -> None:
    out = tiny.root / "bad"
    with pytest.raises(ValueError, match="missing-ckpt"):
        run_diagnose(tiny.root / "missing-ckpt", tiny.heldout, out)
    with pytest.raises(FileNotFoundError, match="missing.lance"):
        run_diagnose(tiny.ckpt, tiny.root / "missing.lance", out)
    with pytest.raises(ValueError, match=r"wm/TwoRoom-v0 data .* wm/PushT-v0"):
        run_diagnose(tiny.ckpt, tiny.root / "pusht.lance", out)
    with pytest.raises(ValueError, match=r"\(64, 64, 3\) frames .* image_size=32"):
        run_diagnose(tiny.ckpt, tiny.root / "large.lance", out)
    with pytest.raises(ValueError, match="1 episode"):
        run_diagnose(tiny.ckpt, tiny.root / "one.lance", out)
    with pytest.raises(ValueError, match="episodes=1"):
        run_diagnose(tiny.ckpt, tiny.heldout, out, episodes=1)
    with pytest.raises(ValueError, match="trained or validated on"):
        run_diagnose(tiny.ckpt, tiny.root / "train.lance", out)
    allowed = run_diagnose(tiny.ckpt, tiny.root / "train.lance", out, allow_train_episodes=True, steps=1)
    assert allowed["allow_train_episodes"] is True and allowed["train_overlap_pairs"] == 4


# --------------------------------------------------------------------------- a trained model (slow)
@pytest.mark.slow
def test_a_trained_model_is_surprised_by_teleports(tmp_path) -> None:
    """Train a small model for 300 steps on TwoRoom (expert + random episodes at 32x32) and diagnose
    it on held-out expert episodes: teleported next frames cost far more than the real ones."""
    from data.collect import collect
    from worldmodel import ModelConfig, TrainConfig
    from worldmodel.train import train

    torch.set_num_threads(1)
    collect("wm/TwoRoom-v0", 24, tmp_path / "train.lance", seed=0, resolution=32)
    collect("wm/TwoRoom-v0", 16, tmp_path / "train.lance", seed=100, resolution=32, policy="random", max_steps=40)
    collect("wm/TwoRoom-v0", 8, tmp_path / "heldout.lance", seed=5000, resolution=32)
    mc = ModelConfig(image_size=32, action_dim=2, frameskip=2, context=1, pred_steps=2, embed_dim=16, encoder_width=8,
                     projector_hidden=32, predictor_width=32, predictor_depth=1, predictor_heads=2, sigreg_projections=64)
    tc = TrainConfig(data=str(tmp_path / "train.lance"), out=str(tmp_path / "ckpt"), steps=300, batch_size=32, lr=3e-3,
                     warmup_steps=10, val_every=1000, ckpt_every=300, device="cpu", progress=False, cache=True)
    train(mc, tc)
    result = run_diagnose(tmp_path / "ckpt", tmp_path / "heldout.lance", tmp_path / "diag", steps=3)
    teleport = result["details"]["surprise"]["kinds"]["teleport"]
    assert teleport["ratio"] > 5 and teleport["auroc"] > 0.9, result["details"]["surprise"]
    assert result["probe_r2"] > 0.8  # and the state is linearly readable from the embeddings


def test_ridge_fit_dual_form_equals_the_primal() -> None:
    """More embedding dimensions than frames (flattened patch tokens): the (N, N) dual system
    gives the weights the (D, D) primal one does."""
    from benchmarks.state_probe import ridge_fit

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 80)) + 2.0, rng.standard_normal((30, 3))
    w, b, r2 = ridge_fit(x, y, ridge=1e-2)  # D > N: dual
    xc, yc = x - x.mean(0), y - y.mean(0)
    lam = 1e-2 * np.trace(xc.T @ xc) / 80
    w_primal = np.linalg.solve(xc.T @ xc + lam * np.eye(80), xc.T @ yc)
    np.testing.assert_allclose(w, w_primal, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b, y.mean(0) - x.mean(0) @ w_primal, rtol=1e-6, atol=1e-9)
    assert all(0.5 < v <= 1.0 for v in r2)  # 80 free dimensions fit 30 rows closely in sample
