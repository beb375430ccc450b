"""Figures: attention heatmaps of one decoded sentence."""
from collections.abc import Sequence
import textwrap

import numpy as np


def save_attention_heatmap(path: str, attention_TxS: np.ndarray, source: Sequence[str], target: Sequence[str],
                           title: str = '') -> None:
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
