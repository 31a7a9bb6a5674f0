"""Training: sampler, losses, schedule, and end-to-end runs through the real CLI (loss, checkpoints, resume, DDP)."""

from __future__ import annotations

import copy
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from train_fixtures import TINY_MODEL_OVERRIDES, TINY_SIZES, build_tree, read_metrics_csv, run_cli, train_module_args

from crossview import train as train_module
from crossview.checkpoints import load_checkpoint
from crossview.config import DEFAULT_CONFIG
from crossview.errors import ConfigError
from crossview.train import (
    ContrastiveLoss,
    GeoBatchSampler,
    false_negative_mask,
    hilbert_index,
    lr_factor,
    shard,
    split_cities,
    step_seed,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# ---- Hilbert curve and sampler -----------------------------------------------------------------------------


def test_hilbert_index_is_a_bijection_whose_consecutive_cells_touch():
    order = 4
    side = 1 << order
    x, y = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    d = hilbert_index(x.ravel(), y.ravel(), order=order)
    assert sorted(d.tolist()) == list(range(side * side))
    by_position = np.argsort(d)
    path = np.column_stack([x.ravel()[by_position], y.ravel()[by_position]])
    steps = np.abs(np.diff(path, axis=0)).sum(axis=1)
    assert (steps == 1).all()  # every step along the curve moves to a 4-neighbour


def _grid_points(per_city: int = 100, cities: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Panoramas on 10 x 10 grids 20 m apart in two cities, one positive tile per 2 x 2 block (shared tiles)."""
    lat, lon, group, tiles = [], [], [], []
    side = int(math.sqrt(per_city))
    for c in range(cities):
        lat0, lon0 = 40.0 + 5 * c, -74.0 + 5 * c
        for i in range(side):
            for j in range(side):
                lat.append(lat0 + i * 20 / 111_000)
                lon.append(lon0 + j * 20 / (111_000 * math.cos(math.radians(lat0))))
                group.append(f"city{c}")
                tiles.append(f"c{c}_{i // 2}_{j // 2}")
    return np.array(lat), np.array(lon), np.array(group), np.array(tiles)


def _spread_m(batch: list[int], lat: np.ndarray, lon: np.ndarray) -> float:
    y = np.radians(lat[batch]) * 6_371_000
    x = np.radians(lon[batch]) * 6_371_000 * np.cos(np.radians(lat[batch]))
    return float(np.mean(np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])))


@pytest.mark.parametrize("mode", ["gps", "random"])
def test_sampler_batches_are_a_function_of_seed_and_epoch(mode):
    lat, lon, group, tiles = _grid_points()
    sampler = GeoBatchSampler(lat, lon, group, tiles, batch_size=8, mode=mode, seed=3)
    again = GeoBatchSampler(lat, lon, group, tiles, batch_size=8, mode=mode, seed=3)
    assert len(sampler) == 200 // 8
    assert sampler.batches(0) == again.batches(0)
    assert sampler.batches(0) != sampler.batches(1)
    assert GeoBatchSampler(lat, lon, group, tiles, batch_size=8, mode=mode, seed=4).batches(0) != sampler.batches(0)
    for epoch in range(3):
        batches = sampler.batches(epoch)
        assert all(len(b) == 8 for b in batches)
        flat = [i for b in batches for i in b]
        assert len(set(flat)) == len(flat)  # no panorama twice in an epoch
        for batch in batches:  # 4 panoramas share each tile: a batch still never holds a tile twice
            assert len({tiles[i] for i in batch}) == len(batch)


def test_gps_batches_hold_geographic_neighbours():
    lat, lon, group, tiles = _grid_points()
    gps = GeoBatchSampler(lat, lon, group, tiles, batch_size=8, mode="gps", seed=0)
    shuffled = GeoBatchSampler(lat, lon, group, tiles, batch_size=8, mode="random", seed=0)
    for epoch in range(3):
        gps_spread = np.median([_spread_m(b, lat, lon) for b in gps.batches(epoch)])
        random_spread = np.median([_spread_m(b, lat, lon) for b in shuffled.batches(epoch)])
        assert gps_spread < 150.0  # neighbours: 8 points of a 20 m grid lie within ~100 m
        assert random_spread > 1000 * gps_spread  # random batches mix the cities, hundreds of km apart
        batches = gps.batches(epoch)
        mixed = sum(len({group[i] for i in b}) > 1 for b in batches)
        assert mixed <= len(batches) // 5  # only the leftovers at the end of each city mix


def test_sampler_refuses_a_batch_larger_than_the_data():
    lat, lon, group, tiles = _grid_points(per_city=4, cities=1)
    with pytest.raises(ConfigError, match="more than the 4 training panoramas"):
        GeoBatchSampler(lat, lon, group, tiles, batch_size=8)


def test_shards_partition_a_global_batch():
    batch = list(range(10, 22))
    shards = [shard(batch, rank, 3) for rank in range(3)]
    assert [i for s in shards for i in s] == batch and all(len(s) == 4 for s in shards)


def test_split_cities_of_a_synthetic_world(tmp_path):
    for city in ("Delta", "Alpha", "Charlie", "Bravo", "Echo"):
        (tmp_path / "splits" / city).mkdir(parents=True)
    assert split_cities(tmp_path, "same", train=True) == ["Alpha", "Bravo", "Charlie", "Delta", "Echo"]
    assert split_cities(tmp_path, "cross", train=True) == ["Alpha", "Bravo", "Charlie"]
    assert split_cities(tmp_path, "cross", train=False) == ["Delta", "Echo"]
    assert split_cities(tmp_path, "cross", train=False, cities=["Alpha"]) == ["Alpha"]
    for city in ("NewYork", "Seattle", "SanFrancisco", "Chicago"):
        (tmp_path / "splits" / city).mkdir()
    assert split_cities(tmp_path, "cross", train=True) == ["NewYork", "Seattle"]  # VIGOR's cross-area split
    assert split_cities(tmp_path, "cross", train=False) == ["SanFrancisco", "Chicago"]


# ---- losses ------------------------------------------------------------------------------------------------


def test_false_negative_mask():
    positives = ["t0", "t1", "t0", "t2"]
    tiles = [["t0", "t1", "t5", "t6"], ["t1", "t7", "t8", "t9"], ["t0", "t3", "t4", "t2"], ["t2", "t0", "t1", "t3"]]
    same_tile = false_negative_mask(positives, tiles, semi_positives=False)
    expected = np.zeros((4, 4), dtype=bool)
    expected[0, 2] = expected[2, 0] = True  # panoramas 0 and 2 share positive tile t0
    np.testing.assert_array_equal(same_tile.numpy(), expected)
    with_semi = false_negative_mask(positives, tiles, semi_positives=True).numpy()
    expected[0, 1] = True  # t1 holds panorama 0 as a semi-positive
    expected[2, 3] = True  # t2 holds panorama 2
    expected[3, 0] = expected[3, 1] = expected[3, 2] = True  # t0 (columns 0 and 2) and t1 hold panorama 3
    np.testing.assert_array_equal(with_semi, expected)
    assert not with_semi.diagonal().any()


def _reference_infonce(scores: np.ndarray, scale: float, mask: np.ndarray) -> float:
    """Direct evaluation in float64: mean of -log softmax of the positives over rows and over columns."""
    logits = np.where(mask, -np.inf, scores * scale)
    rows = [-(logits[i, i] - np.log(np.exp(logits[i]).sum())) for i in range(len(scores))]
    cols = [-(logits[j, j] - np.log(np.exp(logits[:, j]).sum())) for j in range(len(scores))]
    return 0.5 * (np.mean(rows) + np.mean(cols))


def test_infonce_matches_the_formula_and_ignores_masked_pairs():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(5, 5, generator=generator) * 2 - 1
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[1, 3] = mask[4, 0] = True
    loss = ContrastiveLoss("infonce", temperature=0.1)
    value = loss(scores, mask)
    assert value.item() == pytest.approx(_reference_infonce(scores.double().numpy(), 10.0, mask.numpy()), rel=1e-5)
    changed = scores.clone()
    changed[1, 3], changed[4, 0] = 1.0, 1.0  # masked pairs may score anything
    assert loss(changed, mask).item() == pytest.approx(value.item(), rel=1e-6)


def test_temperature_is_learnable_and_clamped():
    loss = ContrastiveLoss("infonce", temperature=0.07, max_logit_scale=100.0)
    scores = torch.eye(4) * 0.5 + 0.1
    loss(scores).backward()
    assert loss.log_scale.grad is not None and loss.log_scale.grad.item() != 0.0
    assert loss.temperature == pytest.approx(0.07)
    with torch.no_grad():
        loss.log_scale.fill_(math.log(1000.0))
    assert loss.temperature == pytest.approx(0.01)  # 1 / max_logit_scale
    fixed = ContrastiveLoss("infonce", temperature=0.07, learn_temperature=False)
    assert not fixed.log_scale.requires_grad


def test_triplet_loss_is_safas_weighted_soft_margin():
    generator = torch.Generator().manual_seed(1)
    scores = torch.rand(4, 4, generator=generator) * 2 - 1
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 2] = True
    alpha = 10.0
    distance = 2.0 - 2.0 * scores.double().numpy()
    terms = []
    for i in range(4):
        for j in range(4):
            if i != j and not mask[i, j]:
                terms.append(np.log1p(np.exp(alpha * (distance[i, i] - distance[i, j]))))  # ground anchor i
                terms.append(np.log1p(np.exp(alpha * (distance[j, j] - distance[i, j]))))  # aerial anchor j
    expected = np.sum(terms) / (len(terms) / 2) / 2
    value = ContrastiveLoss("triplet", triplet_alpha=alpha)(scores, mask)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_lr_schedule_warms_up_linearly_then_follows_a_cosine():
    kwargs = {"total_steps": 110, "warmup_steps": 10, "min_ratio": 0.1}
    assert [lr_factor(s, **kwargs) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert lr_factor(9, **kwargs) == pytest.approx(1.0)
    assert lr_factor(10, **kwargs) == pytest.approx(1.0)  # start of the cosine
    assert lr_factor(60, **kwargs) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, **kwargs) == pytest.approx(0.1)
    assert lr_factor(0, total_steps=5, warmup_steps=0, min_ratio=0.0) == pytest.approx(1.0)


def test_step_seeds_differ_by_step_and_rank():
    seeds = {step_seed(0, step, rank) for step in range(50) for rank in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(0, 7, 1) == step_seed(0, 7, 1)


# ---- end to end through the command line -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vigor")
    build_tree(root)  # 3 cities x 3 training panoramas
    return root


BASE = [*TINY_MODEL_OVERRIDES, "train.batch_size=4", "optim.warmup_steps=2", "log.every_steps=1"]


def _train(tree: Path, out: Path, *extra: str) -> int:
    return run_cli(["train", "--data", str(tree), "--out", str(out), "--device", "cpu", *extra])


def test_cli_training_lowers_the_loss_and_writes_a_loadable_checkpoint(tree, tmp_path, capsys):
    out = tmp_path / "run"
    options = [*BASE, "train.epochs=10", "optim.lr=1e-3", "sampler.mode=random", "train.keep_checkpoints=2"]
    assert _train(tree, out, *options) == 0
    assert "finished at step 20" in capsys.readouterr().out
    rows = read_metrics_csv(out / "metrics.csv")
    assert [row["step"] for row in rows] == list(range(1, 21))  # 9 panoramas // 4 = 2 steps per epoch
    losses = np.array([row["loss"] for row in rows])
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < 0.6 * losses[:5].mean(), losses
    assert rows[0]["lr"] == pytest.approx(0.5e-3) and rows[1]["lr"] == pytest.approx(1e-3)  # warm-up
    assert rows[-1]["lr"] < 0.01e-3  # cosine decay to 0
    assert all(row["pairs_per_s"] > 0 and 0 < row["temperature"] < 1 for row in rows)
    assert sorted(p.name for p in out.glob("*.pt")) == ["epoch-009.pt", "epoch-010.pt", "last.pt"]

    checkpoint = load_checkpoint(out / "last.pt")
    saved_config = yaml.safe_load((out / "config.yaml").read_text())
    assert checkpoint.config == saved_config  # the resolved config, saved with the checkpoint
    assert saved_config["train"]["epochs"] == 10 and saved_config["optim"]["lr"] == 1e-3
    assert saved_config["loss"] == DEFAULT_CONFIG["loss"]
    assert checkpoint.state["epoch"] == 10 and checkpoint.state["global_step"] == 20
    assert checkpoint.metrics["train_loss"] == pytest.approx(losses[-20:].mean(), rel=1e-4)
    model = checkpoint.build_model()
    assert model.config["pano_width"] == 64 and model.config["name"] == "safa-resnet18-lite"
    assert load_checkpoint(out / "epoch-010.pt").sha256 == checkpoint.sha256  # the epoch copy of last.pt


def _parameters(path: Path) -> dict[str, torch.Tensor]:
    checkpoint = load_checkpoint(path)
    return {**checkpoint.state_dict, **{f"loss.{k}": v for k, v in checkpoint.state["loss"].items()}}


def test_resume_continues_bit_for_bit_and_refuses_a_different_config(tree, tmp_path, monkeypatch, capsys):
    """4 steps straight == 1 step, interrupted by SIGTERM, + resume to step 3 (--max-steps) + resume to the end."""
    options = [*BASE, "train.epochs=2", "optim.lr=1e-3", "train.keep_checkpoints=0"]  # gps batches
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert _train(tree, straight, *options) == 0

    original_step = train_module.Trainer._optimizer_step

    def step_then_sigterm(self):
        original_step(self)
        os.kill(os.getpid(), signal.SIGTERM)  # as from a job scheduler; the handler asks the loop to stop

    monkeypatch.setattr(train_module.Trainer, "_optimizer_step", step_then_sigterm)
    assert _train(tree, pieces, *options) == 130
    monkeypatch.undo()
    assert "--resume" in capsys.readouterr().err
    state = load_checkpoint(pieces / "last.pt").state
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 1, 1)

    assert _train(tree, pieces, *options) == 2  # the folder holds a run: --resume is required
    assert "add --resume" in capsys.readouterr().err
    changed = [*BASE, "train.epochs=2", "optim.lr=2e-3", "train.keep_checkpoints=0"]
    assert _train(tree, pieces, "--resume", *changed) == 2
    error = capsys.readouterr().err
    assert "configuration differs" in error and "optim.lr (0.001 -> 0.002)" in error

    assert _train(tree, pieces, "--resume", "--max-steps", "3", *options) == 0  # same config: accepted
    state = load_checkpoint(pieces / "last.pt").state
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 1, 3)  # mid-epoch again
    assert _train(tree, pieces, "--resume") == 0  # no options: the checkpoint's config

    expected, actual = _parameters(straight / "last.pt"), _parameters(pieces / "last.pt")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    straight_rows = read_metrics_csv(straight / "metrics.csv")
    piece_rows = read_metrics_csv(pieces / "metrics.csv")
    assert [r["step"] for r in piece_rows] == [1, 2, 3, 4]
    assert [r["loss"] for r in piece_rows] == [r["loss"] for r in straight_rows]


def test_cli_options_and_errors(tree, tmp_path, capsys):
    assert run_cli(["train", "--data", str(tree), "--print-config", "optim.lr=3e-4", "--split", "cross"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 3e-4 and printed["data"]["split"] == "cross"
    assert _train(tree, tmp_path / "a", "optim.lrr=1") == 2
    assert "unknown configuration key 'optim.lrr'" in capsys.readouterr().err
    assert _train(tree, tmp_path / "b", "--resume") == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert _train(tree, tmp_path / "c", *TINY_MODEL_OVERRIDES, "model.colour=blue") == 2
    assert "colour" in capsys.readouterr().err  # the encoder checks the open model section
    assert _train(tree, tmp_path / "d", *BASE, "train.batch_size=64") == 2
    assert "more than the 9 training panoramas" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_unknown_heading_triplet_run_with_accumulation(tree, tmp_path):
    """Rolled panoramas (orientation-aware scores), SAFA's triplet loss, 2 micro-batches per optimizer step."""
    out = tmp_path / "run"
    options = [*BASE, "data.random_roll=true", "data.augment=true", "loss.type=triplet", "optim.accumulate=2"]
    assert _train(tree, out, *options, "train.epochs=2", "train.keep_checkpoints=0") == 0
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint.state["steps_per_epoch"] == 1  # 2 batches of 4 per epoch, accumulated into one step
    assert checkpoint.state["global_step"] == 2
    rows = read_metrics_csv(out / "metrics.csv")
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    assert checkpoint.state["loss"]["log_scale"].item() == pytest.approx(math.log(1 / 0.07))  # fixed for triplet


def test_ddp_two_cpu_processes_with_gloo(tree, tmp_path):
    """torchrun with 2 processes (gloo): both take their share of each batch; rank 0 writes the checkpoint."""
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [*train_module_args(), "--data", str(tree), "--out", str(out), "--device", "cpu", "--max-steps", "2"]
    command += [*TINY_MODEL_OVERRIDES, "train.batch_size=2", "log.every_steps=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("stopped at step 2") == 1  # only rank 0 reports
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint.state["world_size"] == 2 and checkpoint.state["global_step"] == 2
    assert checkpoint.state["steps_per_epoch"] == 2  # 9 panoramas // (2 per process x 2 processes)
    rows = read_metrics_csv(out / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    assert all(torch.isfinite(v).all() for v in checkpoint.state_dict.values() if v.is_floating_point())


def test_orientation_and_heading_terms_train_the_column_features():
    """orientation_weight/heading_weight add the azimuth losses: they raise the loss and reach the column heads,
    which the descriptor loss alone never trains."""
    from crossview.encoders import get_model
    from crossview.train import ContrastiveLoss, TrainStep

    torch.manual_seed(0)
    model = get_model("safa-resnet18-lite", **TINY_SIZES)
    pano = torch.rand(3, 3, model.config["pano_height"], model.config["pano_width"])
    aerial = torch.rand(3, 3, model.config["aerial_size"], model.config["aerial_size"])
    mask = torch.zeros(3, 3, dtype=torch.bool)
    plain = TrainStep(model, ContrastiveLoss(), unknown_heading=False)
    joint = TrainStep(model, ContrastiveLoss(), unknown_heading=False, orientation_weight=1.0, heading_weight=0.5)
    plain_loss = plain(pano, aerial, mask)
    plain_loss.backward()
    assert all(p.grad is None for p in model.ground_columns.parameters())
    model.zero_grad(set_to_none=True)
    joint_loss = joint(pano, aerial, mask, torch.tensor([0.0, 90.0, 200.0]))
    joint_loss.backward()
    assert joint_loss.item() > plain_loss.item()
    for head in (model.ground_columns, model.aerial_columns):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_init_from_starts_a_run_from_a_checkpoints_weights(tree, tmp_path):
    """Fine-tuning: ``train.init_from`` loads the weights (and nothing else); a different architecture is refused."""
    from crossview.train import build_model

    first = tmp_path / "first"
    options = [*BASE, "train.epochs=1", "train.keep_checkpoints=0", "data.photometric=true", "data.flip=true"]
    assert _train(tree, first, *options) == 0
    source = load_checkpoint(first / "last.pt")
    config = copy.deepcopy(source.config)
    config["train"]["init_from"] = str(first / "last.pt")
    config["seed"] = source.config["seed"] + 1  # a different random initialisation is overwritten
    started = build_model(config).state_dict()
    assert all(torch.equal(started[key], value) for key, value in source.state_dict.items())
    config["model"]["pano_width"] = config["model"]["polar_width"] = 128
    with pytest.raises(ConfigError, match=r"init_from.*pano_width"):
        build_model(config)
    second = tmp_path / "second"
    assert _train(tree, second, *options, f"train.init_from={first / 'last.pt'}") == 0
    assert load_checkpoint(second / "last.pt").config["train"]["init_from"] == str(first / "last.pt")
    # init_partial: another model (an OSM one) takes every tensor of equal name and shape, the rest is its own.
    config["train"]["init_partial"] = True
    config["model"] = {**source.config["model"], "name": "safa-resnet18-lite-osm"}
    osm = build_model(config).state_dict()
    taken = [k for k, v in source.state_dict.items() if k in osm and osm[k].shape == v.shape]
    assert any(k.startswith("ground_backbone") for k in taken) and any(k.startswith("aerial_decoder") for k in taken)
    assert all(torch.equal(osm[k], source.state_dict[k]) for k in taken)
    assert any(k.startswith("map_input") for k in osm) and len(taken) < len(osm)


# ---- OSM class tiles (data.map=osm) --------------------------------------------------------------------------


def _with_osm_tiles(tree: Path, out: Path) -> Path:
    """A copy of the tree whose cities also have osm/ tiles: class indices quantised from the aerial tiles'
    colours, so that every tile is distinct (what the loss can learn) and within crossview's legend."""
    import json
    import shutil

    from PIL import Image

    from crossview.data.vigor import class_tile_png_bytes
    from crossview.maps.osm import BAND_NAMES, CLASS_NAMES

    shutil.copytree(tree, out)
    legend = json.dumps({band: list(CLASS_NAMES[band]) for band in BAND_NAMES})
    for satellite in out.glob("*/satellite"):
        (satellite.parent / "osm").mkdir()
        for path in satellite.iterdir():
            rgb = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
            classes = np.stack([rgb[0] // 37, rgb[1] // 26, (rgb[2] > 127) * 3]).astype(np.uint8)
            (satellite.parent / "osm" / path.name).write_bytes(class_tile_png_bytes(classes, legend))
    return out


def test_cli_training_on_osm_tiles_lowers_the_loss(tree, tmp_path, capsys):
    import json

    from crossview.encoders import check_map_modality
    from crossview.maps.osm import CLASS_NAMES

    osm_tree = _with_osm_tiles(tree, tmp_path / "osm-tree")
    out = tmp_path / "osm-run"
    options = [*BASE, "model.name=safa-resnet18-lite-osm", "data.map=osm", "train.epochs=8", "optim.lr=1e-3"]
    assert _train(osm_tree, out, *options, "sampler.mode=random", "train.keep_checkpoints=0") == 0
    assert "finished at step 16" in capsys.readouterr().out
    losses = np.array([row["loss"] for row in read_metrics_csv(out / "metrics.csv")])
    assert np.isfinite(losses).all()
    assert losses[-4:].mean() < 0.7 * losses[:4].mean(), losses
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint.config["data"]["map"] == "osm"
    model = checkpoint.build_model()
    assert model.config["map_modality"] == "osm" and model.config["osm_classes"]["ways"] == list(CLASS_NAMES["ways"])
    check_map_modality(model.config, {"CLASSES": json.dumps(model.config["osm_classes"])})  # its own legend


def test_a_model_and_data_map_of_different_kinds_are_refused(tree, tmp_path, capsys):
    osm_tree = _with_osm_tiles(tree, tmp_path / "osm-tree")
    assert _train(osm_tree, tmp_path / "a", *BASE, "data.map=osm") == 2  # aerial model, OSM tiles
    error = capsys.readouterr().err.strip()
    assert "model safa-resnet18-lite expects aerial RGB maps; data.map=osm gives OSM class rasters" in error
    assert "\n" not in error
    assert _train(osm_tree, tmp_path / "b", *BASE, "model.name=safa-resnet18-lite-osm") == 2  # default: satellite
    assert "(use data.map=osm)" in capsys.readouterr().err
    assert _train(tree, tmp_path / "c", *BASE, "model.name=safa-resnet18-lite-osm", "data.map=osm") == 1  # I/O
    assert "python -m crossview.data.synth.osmtiles" in capsys.readouterr().err  # no osm/ folder yet
    assert _train(tree, tmp_path / "d", *BASE, "data.map=lidar") == 2
    assert "data.map='lidar'" in capsys.readouterr().err


def test_trainable_prefixes_freeze_the_rest_and_its_statistics(tree, tmp_path):
    first = tmp_path / "first"
    assert _train(tree, first, *BASE, "train.epochs=1", "train.keep_checkpoints=0") == 0
    second = tmp_path / "second"
    options = [
        *BASE,
        "train.epochs=2",
        "train.keep_checkpoints=0",
        "loss.refine_weight=1.0",
        "loss.dense_weight=1.0",
        "loss.dense_pinhole_weight=1.0",
    ]
    trainable = "train.trainable=[ground_decoder,aerial_decoder]"
    assert _train(tree, second, *options, trainable, f"train.init_from={first / 'last.pt'}") == 0
    before, after = load_checkpoint(first / "last.pt").state_dict, load_checkpoint(second / "last.pt").state_dict
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(key.startswith(("ground_decoder", "aerial_decoder")) for key in changed), changed
    assert _train(tree, tmp_path / "bad", *options, "train.trainable=[nothing_here]") == 2
