import numpy as np
import pytest
import torch
from PIL import Image

from core.export import load_latent, save_frames, save_gif, save_latent, save_mp4


def _frames(n=6, size=24):
    return [Image.new("RGB", (size, size), (i * 40 % 256, 100, 200 - i * 30)) for i in range(n)]


def test_latent_roundtrip(tmp_path):
    lat = torch.randn(1, 14, 32)
    p = save_latent(tmp_path / "x.npz", lat, model="stylegan2/ffhq-256", space="w+", psnr=31.5)
    arr, info = load_latent(p)
    assert np.array_equal(arr, lat.numpy())
    assert info["model"] == "stylegan2/ffhq-256" and info["space"] == "w+" and info["psnr"] == 31.5
    # plain arrays only: readable without pickle
    with np.load(p, allow_pickle=False) as z:
        assert set(z.files) == {"latent", "info"}
    assert "noise" not in info and info["noise_maps"] == 0


def test_latent_with_noise_maps_roundtrip(tmp_path):
    lat, maps = torch.randn(2, 10, 8), [torch.randn(2, 1, 4, 4), torch.randn(2, 1, 8, 8)]
    arr, info = load_latent(save_latent(tmp_path / "n.npz", lat, model="m", space="w+", noise=maps))
    assert info["noise_maps"] == 2 and all(np.array_equal(a, m.numpy()) for a, m in zip(info["noise"], maps, strict=True))


def test_load_latent_rejects_foreign_files(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(ValueError, match="not a Latent Lab latent"):
        load_latent(p)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError):
        load_latent(tmp_path / "junk.npz")


def test_gif(tmp_path):
    p = save_gif(_frames(), tmp_path / "a.gif", fps=10, boomerang=True)
    im = Image.open(p)
    assert im.n_frames == 6 + 4  # forward, then back without repeating the ends
    assert im.info["duration"] == 100


def test_mp4(tmp_path):
    import imageio.v2 as imageio

    p = save_mp4(_frames(8, 24), tmp_path / "a.mp4", fps=8)
    reader = imageio.get_reader(p)
    meta = reader.get_meta_data()
    frames = list(reader.iter_data())
    reader.close()
    assert len(frames) == 8
    assert frames[0].shape[0] % 16 == 0 and frames[0].shape[0] >= 256  # upscaled and H.264-friendly
    assert meta["fps"] == pytest.approx(8)
    # colours survive encoding: frame 0 is (0, 100, 200)
    assert np.abs(frames[0][128, 128].astype(int) - [0, 100, 200]).max() < 20


def test_frames(tmp_path):
    paths = save_frames(_frames(3), tmp_path / "f")
    assert [p.name for p in paths] == ["frame_000.png", "frame_001.png", "frame_002.png"]


def test_no_frames(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        save_gif([], tmp_path / "x.gif")
