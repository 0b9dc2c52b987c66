"""Video files: mp4 / gif round trips through vid2world_jax.video_io (the one reader/writer of the project)."""

import numpy as np
import pytest

from vid2world_jax import video_io


def _smooth_clip(t, h, w):
  """Moving colour ramps (with sharp wrap-around edges): a lossy codec keeps them above 30 dB."""
  yy, xx = np.mgrid[:h, :w]
  return np.stack([np.stack([(xx * 5 + i * 9) % 256, (yy * 7 + i * 3) % 256, ((xx + yy) * 3 + i) % 256], -1)
                   for i in range(t)]).astype(np.uint8)


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.mark.parametrize("shape", [(7, 32, 48), (5, 33, 47), (1, 16, 16)])
def test_video_mp4_round_trip_keeps_shape_and_quality(tmp_path, shape):
  frames = _smooth_clip(*shape)
  frames[-1] = frames[0]   # a repeated frame must still be its own frame
  path = video_io.write_video(tmp_path / "clip.mp4", frames, fps=5)
  back = video_io.read_video(path)
  assert back.shape == frames.shape and back.dtype == np.uint8
  assert _psnr(back, frames) > 30.0, _psnr(back, frames)   # 4:2:0 chroma on sharp colour edges: ~34 dB
  for i in range(shape[0]):   # no frame shifted or dropped: each frame is closest to its own original
    dist = [np.mean((back[i].astype(float) - f) ** 2) for f in frames]
    assert dist[i] == min(dist), (i, dist)


def test_video_mp4_lossless_quality_is_exact_in_444(tmp_path):
  frames = _smooth_clip(3, 9, 11)   # odd size -> yuv444p; CRF 0 is lossless up to the RGB<->YUV rounding
  back = video_io.read_video(video_io.write_video(tmp_path / "x.mp4", frames, quality=0))
  assert back.shape == frames.shape
  assert _psnr(back, frames) > 45.0


def test_video_gif_round_trip_is_palette_exact(tmp_path):
  rng = np.random.default_rng(0)
  palette = rng.integers(0, 256, (40, 3)).astype(np.uint8)
  frames = palette[rng.integers(0, 40, (6, 10, 12))]
  frames[3] = frames[2]
  frames[4] = frames[2]   # identical consecutive frames are kept (Pillow's writer would merge them)
  back = video_io.read_video(video_io.write_video(tmp_path / "x.gif", frames, fps=3))
  assert back.shape == frames.shape
  assert np.abs(back.astype(int) - frames).max() <= 1   # <= 256 colours: exact up to the palette's rounding


def test_video_gif_many_colours_is_palette_bounded(tmp_path):
  frames = _smooth_clip(4, 24, 24)
  back = video_io.read_video(video_io.write_video(tmp_path / "x.gif", frames))
  assert back.shape == frames.shape
  assert _psnr(back, frames) > 25.0


def test_video_errors_are_one_line(tmp_path):
  with pytest.raises(ValueError, match="can only write"):
    video_io.write_video(tmp_path / "x.avi", np.zeros((2, 4, 4, 3), np.uint8))
  with pytest.raises(ValueError, match="uint8"):
    video_io.write_video(tmp_path / "x.mp4", np.zeros((2, 4, 4, 3), np.float32))
  with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
    video_io.write_video(tmp_path / "x.mp4", np.zeros((4, 4, 3), np.uint8))
  with pytest.raises(FileNotFoundError):
    video_io.read_video(tmp_path / "missing.mp4")
  with pytest.raises(ValueError, match="unsupported video type"):
    video_io.read_video(tmp_path / "x.tiff")


def test_video_rollout_cli_writes_mp4_and_reads_mp4_context(tmp_path):
  """The rollout CLI's --out=x.mp4 (a TypeError before) and an mp4 --context."""
  from vid2world_jax.inference import rollout_cli
  frames = np.stack([_smooth_clip(4, 16, 16)] * 2)   # batch of 2, tiled side by side
  rollout_cli.write_output(str(tmp_path / "out.mp4"), frames, np.zeros(1))
  assert video_io.read_video(tmp_path / "out.mp4").shape == (4, 16, 32, 3)
  video_io.write_video(tmp_path / "ctx.mp4", frames[0])
  ctx = rollout_cli.read_context(str(tmp_path / "ctx.mp4"))
  assert ctx.shape == (1, 4, 16, 16, 3) and _psnr(ctx[0], frames[0]) > 35.0


def test_video_io_quiet_console_after_jax_started(tmp_path, capfd):
  """Writing the report's GIFs after JAX started prints nothing: no fork warning, no ffmpeg palette chatter."""
  import warnings  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  jax.devices()   # JAX installs its at-fork warning when its backend starts
  frames = np.random.default_rng(0).integers(0, 3, (6, 24, 24, 3)).astype(np.uint8)   # near-duplicate colours
  frames[:, :4, :4] = [218, 76, 50]
  capfd.readouterr()
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    back = video_io.read_video(video_io.write_video(tmp_path / "clip.gif", frames, fps=4))
    video_io.read_video(video_io.write_video(tmp_path / "clip.mp4", frames, fps=4))
  assert back.shape == frames.shape
  assert not [w for w in caught if "fork" in str(w.message)], [str(w.message) for w in caught]
  out, err = capfd.readouterr()
  assert "Duped color" not in err and "Parsed_" not in err, err
