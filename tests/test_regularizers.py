"""Sparse-view regularisers: the distortion loss and coarse-to-fine hash grids."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers_pipeline import make_nadir_dataset
from mega_nerf.config import parse, train_parser
from mega_nerf.errors import UserError
from mega_nerf.fields.encodings import HashGridEncoding
from mega_nerf.render.volume import distortion_loss
from mega_nerf.training.coarse_to_fine import active_levels, hash_encodings
from mega_nerf.training.trainer import Trainer


def test_distortion_loss_matches_the_pairwise_sum():
    torch.manual_seed(0)
    z = torch.sort(torch.rand(5, 12), -1).values
    w = torch.rand(5, 12) / 12
    pairwise = (w[:, :, None] * w[:, None, :] * (z[:, :, None] - z[:, None, :]).abs()).sum((1, 2))
    assert torch.allclose(distortion_loss(z, w), pairwise, atol=1e-6)


def test_distortion_loss_prefers_weight_in_one_place():
    z = torch.linspace(0, 1, 10)[None]
    compact = torch.zeros(1, 10)
    compact[0, 4] = 1.0
    spread = torch.full((1, 10), 0.1)
    two_layers = torch.zeros(1, 10)
    two_layers[0, [1, 8]] = 0.5
    assert float(distortion_loss(z, compact)) == 0.0
    assert 0 < float(distortion_loss(z, spread)) < float(distortion_loss(z, two_layers))


def test_active_levels_grow_from_the_start_levels_to_all():
    assert active_levels(0.0, 16, 4, 0.5) == 4
    assert active_levels(0.25, 16, 4, 0.5) == pytest.approx(10)
    assert active_levels(0.5, 16, 4, 0.5) == 16 and active_levels(0.9, 16, 4, 0.5) == 16
    assert active_levels(0.0, 16, 4, 0.0) == 16  # off


def test_hash_grid_with_fewer_levels_zeroes_the_finer_features():
    torch.manual_seed(0)
    encoding = HashGridEncoding(levels=6, features_per_level=2, log2_table_size=10, base_resolution=4,
                                max_resolution=64)
    torch.nn.init.uniform_(encoding.embeddings, -1, 1)
    x = torch.rand(50, 3)
    full = encoding(x)
    encoding.set_active_levels(2.5)
    partial = encoding(x)
    assert torch.equal(partial[:, :4], full[:, :4])  # levels 0 and 1
    assert torch.allclose(partial[:, 4:6], 0.5 * full[:, 4:6])  # level 2 half faded in
    assert not bool(partial[:, 6:].any())
    encoding.set_active_levels(6)
    assert torch.equal(encoding(x), full)


TINY = ["--batch_size", "64", "--coarse_samples", "8", "--fine_samples", "8", "--hash_levels", "6",
        "--hash_log2_size", "10", "--hash_max_resolution", "64", "--layer_dim", "16", "--num_chunks", "2",
        "--num_threads", "1", "--log_interval", "2", "--appearance_dim", "8", "--train_iterations", "6",
        "--ckpt_interval", "6"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    return make_nadir_dataset(tmp_path_factory.mktemp("regularizers") / "dataset", n_images=4, W=16, H=12)


def _args(dataset, exp: Path, extra: list[str]):
    return parse(train_parser(), ["--config_file", str(dataset["config"]), "--exp_name", str(exp), "--dataset_path",
                                  str(dataset["path"]), "--chunk_paths", str(exp.parent / "chunks"), *TINY, *extra])


def test_training_applies_both_regularisers(dataset, tmp_path, monkeypatch):
    seen = []
    original = HashGridEncoding.set_active_levels

    def record(self, active):
        seen.append(active)
        original(self, active)

    monkeypatch.setattr(HashGridEncoding, "set_active_levels", record)
    trainer = Trainer(_args(dataset, tmp_path / "exp", ["--distortion_loss_weight", "0.01", "--coarse_to_fine",
                                                        "0.5", "--coarse_to_fine_levels", "2"]))
    trainer.train()
    per_step = seen[::len(hash_encodings(trainer.model))]
    assert per_step[0] == 2 and per_step[-1] == 6 and per_step == sorted(per_step)  # 2 levels, then all
    assert float(trainer.regularizer_parts["distortion"]) > 0
    assert trainer.regularizer_parts["hash_levels"] == 6


def test_coarse_to_fine_needs_a_hash_grid(dataset, tmp_path):
    with pytest.raises(UserError, match="no hash grid"):
        Trainer(_args(dataset, tmp_path / "vm", ["--model_type", "vm", "--vm_resolution", "8", "--coarse_to_fine",
                                                 "0.5"]))


def test_regulariser_flags_are_checked(dataset, tmp_path):
    for flags, message in ((["--distortion_loss_weight", "-1"], "distortion_loss_weight"),
                           (["--coarse_to_fine", "1.5"], "coarse_to_fine"),
                           (["--coarse_to_fine_levels", "0"], "coarse_to_fine_levels")):
        with pytest.raises(UserError, match=message):
            _args(dataset, tmp_path / "x", flags)
