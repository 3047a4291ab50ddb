"""The shipped toy model's acceptance checks (toy/dragon_toy/check.py) and that those checks can fail."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "toy"))
from dragon_toy import check, scenes  # noqa: E402
from dragon_toy import model as toy_model  # noqa: E402

SEEDS = [1000, 1001, 1002, 1003]


@pytest.fixture(scope="module", autouse=True)
def _comfyui(comfy):
    """The toy UNet is ComfyUI's UNetModel class: import ComfyUI first (CPU, in-process)."""


@pytest.fixture(scope="module")
def unet():
    return toy_model.load_unet()


@pytest.fixture(scope="module")
def sources() -> torch.Tensor:
    return torch.stack([scenes.make_case("move", s).source for s in SEEDS]) * 2 - 1


def test_ddim_timesteps_are_sd_s():
    assert check.ddim_timesteps(50)[:2] == [981, 961] and check.ddim_timesteps(50)[-1] == 1
    assert len(check.ddim_timesteps(25)) == 25


def test_shipped_model_reconstructs_from_its_inverted_noise(unet, sources):
    """Deterministic DDIM inversion + sampling gives the scenes back (the figures of how Gaussian
    that noise is, and of the copy test, are in train_log.txt / scripts/check_toy.py)."""
    x_t = check.invert(unet, sources, 50)  # the workflows' steps (the v model gives 30.6 dB at 25)
    assert 0.8 < check.noise_stats(x_t, sources).std < 1.25
    assert check.psnr(check.sample(unet, x_t, 50), sources) > 32.0


def _norm(z: torch.Tensor) -> torch.Tensor:
    return (z - z.mean()) / z.std()


def test_noise_check_tells_white_noise_from_structured_noise(sources):
    g = torch.Generator().manual_seed(0)
    white = torch.randn(sources.shape, generator=g)
    assert check.noise_stats(white, sources).gaussian_enough()
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    structured = {
        # what undertrained models leave: the scene still visible in x_T
        "leaky": sources * 0.8 + 0.6 * white,
        "smooth": torch.nn.functional.avg_pool2d(white, 3, 1, 1),
        "checkerboard": white + 0.8 * ((xx + yy) % 2 * 2 - 1),
        # rings around an object (oscillating: small plain correlations) ...
        "rings": white + 2.0 * torch.cos(1.6 * torch.hypot(xx - 12, yy - 18)) * (torch.hypot(xx - 12, yy - 18) < 9),
        # ... and a bright frame at the border
        "frame": white * (1 + 1.0 * ((xx < 2) | (xx > 29) | (yy < 2) | (yy > 29))),
    }
    for name, z in structured.items():
        assert not check.noise_stats(_norm(z), sources).gaussian_enough(), name


def test_untrained_model_fails_the_reconstruction_check(sources):
    """An untrained UNet predicts zero noise: DDIM 'inversion' then just rescales the image, so
    the inverted noise is the image itself and the Gaussian check must say so."""
    x_t = check.invert(toy_model.build_unet().eval(), sources[:2], 10)
    assert not check.noise_stats(x_t, sources[:2]).gaussian_enough()


def test_feature_similarity_is_a_similarity(unet):
    sims = check.feature_similarity(unet, SEEDS[:2], [1, 3])
    assert set(sims) == {1, 3} and all(0.0 <= v <= 1.0 for v in sims.values())


def test_loader_takes_candidate_weights_from_the_environment(tmp_path, monkeypatch):
    """$DRAGON_TOY_WEIGHTS lets the demo/benchmark run a candidate model without replacing the shipped one;
    unset, the shipped weights load; set to a missing file, the error names the variable."""
    from safetensors.torch import save_file

    shipped = toy_model._read(toy_model.WEIGHTS)[0]
    candidate = {k: v + 0.01 for k, v in shipped.items()}
    path = tmp_path / "candidate.safetensors"
    save_file(candidate, str(path))
    key = "out.2.weight"

    monkeypatch.setenv(toy_model.WEIGHTS_ENV, str(path))
    loaded = toy_model.load_model_patcher().model.diffusion_model.state_dict()
    assert torch.equal(loaded[key], candidate[key]) and not torch.equal(loaded[key], shipped[key])
    assert torch.equal(toy_model.load_unet().state_dict()[key], candidate[key])

    monkeypatch.delenv(toy_model.WEIGHTS_ENV)
    assert torch.equal(toy_model.load_model_patcher().model.diffusion_model.state_dict()[key], shipped[key])

    monkeypatch.setenv(toy_model.WEIGHTS_ENV, str(tmp_path / "missing.safetensors"))
    with pytest.raises(FileNotFoundError, match=toy_model.WEIGHTS_ENV):
        toy_model.load_model_patcher()


class _FakeUNet(torch.nn.Module):
    """Output block 0 emits x_t itself: features that follow the noise. Block 1 emits a 9x9 box blur of
    x_t, where the noise averages out and the smooth scene, colour included, stays: features that carry
    the scene."""

    def __init__(self):
        super().__init__()
        self.output_blocks = torch.nn.ModuleList([
            torch.nn.Sequential(torch.nn.Identity()),
            torch.nn.Sequential(torch.nn.AvgPool2d(9, 1, 4, count_include_pad=False)),
        ])

    def forward(self, x, timesteps, context=None):
        for block in self.output_blocks:
            block(x)
        return torch.zeros_like(x)


def test_feature_content_tells_scene_features_from_noise_features():
    fc = check.feature_content(_FakeUNet(), SEEDS[:3], [0, 1])
    for d in (fc.mean_share, fc.noise_similarity, fc.colour_similarity):
        assert all(0.0 <= v <= 1.0 for v in d.values()), d
    assert fc.noise_similarity[1] > fc.noise_similarity[0] + 0.1, fc
    assert fc.colour_similarity[1] < fc.colour_similarity[0] - 0.05, fc
    assert fc.mean_share[0] < 0.2 < fc.mean_share[1]  # x_t is mostly zero-mean noise; its blur mostly the scene's mean


def test_v_prediction_weights_load_as_a_v_model_and_give_the_noise(tmp_path):
    """Weights trained with --prediction v (stored in their metadata) load the way ComfyUI loads an SD2.x-768
    checkpoint, and the checks turn the UNet's v back into the noise; unknown metadata is refused."""
    import comfy.model_sampling
    from safetensors.torch import save_file

    # the shipped weights are v; the same tensors without the metadata (older files) load as eps
    path = tmp_path / "eps.safetensors"
    save_file(toy_model._read(toy_model.WEIGHTS)[0], str(path))
    assert toy_model.prediction(toy_model.WEIGHTS) == "v" and toy_model.prediction(str(path)) == "eps"
    assert isinstance(toy_model.load_model_patcher(toy_model.WEIGHTS).model.model_sampling,
                      comfy.model_sampling.V_PREDICTION)
    assert isinstance(toy_model.load_model_patcher(str(path)).model.model_sampling, comfy.model_sampling.EPS)
    assert toy_model.load_unet(toy_model.WEIGHTS).prediction == "v"
    assert toy_model.load_unet(str(path)).prediction == "eps"

    g = torch.Generator().manual_seed(0)
    x0, eps, t = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1, torch.randn(1, 3, 8, 8, generator=g), 501
    a = float(toy_model.alphas_cumprod()[t])

    class _VUNet(torch.nn.Module):
        prediction = "v"

        def forward(self, x, timesteps, context=None):
            return a ** 0.5 * eps - (1 - a) ** 0.5 * x0

    x_t = a ** 0.5 * x0 + (1 - a) ** 0.5 * eps
    assert torch.allclose(check._eps(_VUNet(), x_t, t), eps, atol=1e-5)

    bad = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(1)}, str(bad), metadata={"prediction": "x0"})
    with pytest.raises(ValueError, match="prediction"):
        toy_model.prediction(str(bad))
