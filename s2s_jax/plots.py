"""Figures: attention heatmaps of one decoded sentence."""

from collections.abc import Sequence
import textwrap

import numpy as np


def save_attention_heatmap(
  path: str, attention_TxS: np.ndarray, source: Sequence[str], target: Sequence[str], title: str = ''
) -> None:
  """Writes a PNG with one row per target token and one column per source step (darker = more attention)."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  rows, cols = attention_TxS.shape
  fig, ax = plt.subplots(figsize=(min(2 + 0.3 * min(cols, 60), 30), min(1.5 + 0.3 * rows, 30)))
  ax.imshow(attention_TxS, cmap='Greys', vmin=0.0, vmax=1.0, aspect='auto')
  every = -(-cols // 60)  # long sources (audio frames, image cells): every k-th label, at most 60
  ax.set_xticks(range(0, cols, every), [s.replace('$', r'\$') for s in source[::every]], rotation=90, fontsize=8)
  ax.set_yticks(range(rows), [t.replace('$', r'\$') for t in target], fontsize=8)
  ax.set_xlabel('source')
  ax.set_ylabel('output')
  if title:  # wrapped to the figure's width (long sweep variant names were cut off)
    width = fig.get_size_inches()[0]
    ax.set_title(textwrap.fill(title.replace('$', r'\$'), width=max(30, int(width * 11))), fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def save_attention_overlay(
  path: str,
  image_HxWxC: np.ndarray,
  attention_TxS: np.ndarray,
  grid: tuple[int, int],
  target: Sequence[str],
  title: str = '',
) -> None:
  """Writes a PNG with the image once and then once per output token, overlaid with that token's attention.

  `attention_TxS` is over the encoder's grid cells in column-major order (`encoders.GridEncoder`); `grid` is its
  (width, height) in cells, each covering a block of image pixels (brighter = more attention).
  """
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  height, width = image_HxWxC.shape[:2]
  grid_w, grid_h = grid
  image = image_HxWxC[..., 0] if image_HxWxC.shape[-1] == 1 else image_HxWxC
  rows = len(target) + 1
  aspect = height / width
  fig, axes = plt.subplots(rows, 1, figsize=(6, max(1.5, rows * (6 * aspect + 0.35))), squeeze=False)
  for k, ax in enumerate(axes[:, 0]):
    ax.imshow(image, cmap='gray', vmin=0.0, vmax=1.0, extent=(0, width, height, 0))
    if k:
      cells = attention_TxS[k - 1, : grid_w * grid_h].reshape(grid_w, grid_h).T  # [rows, columns] of cells
      ax.imshow(
        cells,
        cmap='jet',
        alpha=0.5,
        vmin=0.0,
        vmax=max(float(cells.max()), 1e-6),
        extent=(0, grid_w * -(-width // grid_w), grid_h * -(-height // grid_h), 0),
        interpolation='nearest',
      )
      ax.set_xlim(0, width)
      ax.set_ylim(height, 0)
    ax.set_title(('image' if not k else target[k - 1]).replace('$', r'\$'), fontsize=8, loc='left')
    ax.set_axis_off()
  if title:
    fig.suptitle(textwrap.fill(title.replace('$', r'\$'), width=60), fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
