"""Translates the blind Multi30k test sets (../shared/blind/, sources only) with one model and records how.

  python scripts/translate_blind.py --workdir=/work/runs/m30k_strong --name=strong_mle_beam5 [-- translate flags]

For each set (test2017_flickr, test2017_mscoco) runs `python -m s2s_jax.translate --workdir=W --checkpoint=C
--input=<blind source> --output=results/blind/<name>.<set>.en [flags after --]`, checks that the output has exactly
as many newline-terminated lines as the source, and writes results/blind/<name>.<set>.json beside it: the command,
the commit, the checkpoint (spec, step, parameter sha256), the line count and the seconds it took. The references
are kept outside the project; the outputs are scored there.
"""

import os
import subprocess
import sys
import time

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from s2s_jax import checkpointing
from s2s_jax import fileio
from s2s_jax import provenance

# pylint: enable=g-import-not-at-top,wrong-import-position

SETS = {'test2017_flickr': 'multi30k_test2017_flickr.de', 'test2017_mscoco': 'multi30k_test2017_mscoco.de'}
_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run.')
_NAME = flags.DEFINE_string('name', None, 'The model name in the output files: results/blind/<name>.<set>.en.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', 'As translate --checkpoint.')
_BLIND_DIR = flags.DEFINE_string(
  'blind_dir', os.path.join(os.path.dirname(_REPO), 'shared', 'blind'), 'The folder of the blind sources.'
)
_OUT_DIR = flags.DEFINE_string('out_dir', os.path.join(_REPO, 'results', 'blind'), 'Where the outputs go.')
flags.mark_flags_as_required(['workdir', 'name'])


def main(argv):
  extra = list(argv[1:])
  params, step = checkpointing.restore_params(_WORKDIR.value, _CHECKPOINT.value)
  os.makedirs(_OUT_DIR.value, exist_ok=True)
  for set_name, file_name in SETS.items():
    source = os.path.join(_BLIND_DIR.value, file_name)
    out = os.path.join(_OUT_DIR.value, f'{_NAME.value}.{set_name}.en')
    command = [
      sys.executable, '-m', 's2s_jax.translate', f'--workdir={_WORKDIR.value}', f'--checkpoint={_CHECKPOINT.value}',
      f'--input={source}', f'--output={out}', *extra,
    ]  # fmt: skip
    start = time.time()
    subprocess.run(command, check=True, cwd=_REPO)
    seconds = time.time() - start
    with open(source, encoding='utf-8') as f:
      want = sum(1 for _ in f)
    with open(out, encoding='utf-8') as f:
      text = f.read()
    lines = text.count('\n')
    if lines != want or not text.endswith('\n'):
      raise ValueError(f'{out}: {lines} lines (newline-terminated: {text.endswith(chr(10))}), the source has {want}.')
    record = {
      'command': ' '.join(['python'] + command[1:]),
      'commit': provenance.git_sha(),
      'workdir': os.path.abspath(_WORKDIR.value),
      'checkpoint': {'spec': _CHECKPOINT.value, 'step': step, 'params_sha256': checkpointing.params_sha256(params)},
      'source': f'shared/blind/{file_name}',
      'lines': lines,
      'seconds': round(seconds, 1),
      'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
    }
    fileio.write_json(out[: -len('.en')] + '.json', record, indent=2, sort_keys=True)
    print(f'{out}: {lines} lines in {seconds:.1f} s')


if __name__ == '__main__':
  app.run(main)
