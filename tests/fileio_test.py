"""Files written whole through s2s_jax.fileio: a symlink planted at a temporary name never redirects a write."""

import json
import os
import tempfile

import pytest

from s2s_jax import evaluation
from s2s_jax import fileio
from s2s_jax import workdir as workdir_lib
from s2s_jax import writers
from s2s_jax.data import vocab as vocab_lib


def _plant(tmp_path, names):
  """A symlink at each `name` of tmp_path pointing at its own victim file; returns the victims."""
  victims = []
  for name in names:
    victim = tmp_path / f'victim_{len(victims)}'
    victim.write_text('precious\n')
    os.symlink(victim, tmp_path / name)
    victims.append(victim)
  return victims


def test_writers_never_follow_a_symlink_at_the_old_temporary_names(tmp_path):
  # The names the writers used before (`<path>.tmp`) were predictable: another user could plant a symlink there.
  names = ['eval_test.json.tmp', 'eval_test.hyp.txt.tmp', 'config.json.tmp', 'vocab.tgt.json.tmp', 'metrics.jsonl.tmp']
  victims = _plant(tmp_path, names)
  evaluation.write_eval(str(tmp_path), 'test', {'bleu': 1.0}, ['a', 'b'])
  workdir_lib._write_json(str(tmp_path / 'config.json'), {'x': 1})  # pylint: disable=protected-access
  vocab_lib.build(['a b c'], 'word').save(str(tmp_path / 'vocab.tgt.json'))
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1}\n{"step": 5}\n')
  writers.MetricWriter(str(tmp_path), resume_step=2).close()
  assert [v.read_text() for v in victims] == ['precious\n'] * len(victims)
  assert json.loads((tmp_path / 'eval_test.json').read_text()) == {'bleu': 1.0}
  assert (tmp_path / 'eval_test.hyp.txt').read_text() == 'a\nb\n'
  assert (tmp_path / 'metrics.jsonl').read_text() == '{"step": 1}\n'
  for name in ('eval_test.json', 'config.json', 'vocab.tgt.json', 'metrics.jsonl'):
    assert not os.path.islink(tmp_path / name)
  # Only the planted links are left: no temporary file of the writes.
  assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith('.tmp')) == sorted(names)


def test_a_planted_link_at_the_chosen_temporary_name_is_skipped(tmp_path, monkeypatch):
  # Even if an attacker guessed the random name: mkstemp's O_CREAT | O_EXCL | O_NOFOLLOW refuses an existing name
  # (the link) and draws another.
  (victim,) = _plant(tmp_path, ['.out.json.guessed.tmp'])
  names = iter(['guessed', 'fresh'])
  monkeypatch.setattr(tempfile, '_get_candidate_names', lambda: names)
  fileio.write_json(str(tmp_path / 'out.json'), [1, 2])
  assert victim.read_text() == 'precious\n'
  assert json.loads((tmp_path / 'out.json').read_text()) == [1, 2]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / 'eval_test.json'
  path.write_text('old')
  with pytest.raises(TypeError):
    fileio.write_json(str(path), {'x': object()})
  assert path.read_text() == 'old'
  assert [p.name for p in tmp_path.iterdir()] == ['eval_test.json']


def test_written_files_get_the_umask_permissions_not_0600(tmp_path):
  fileio.write_text(str(tmp_path / 'a.txt'), 'x')
  mask = os.umask(0o022)
  os.umask(mask)
  assert os.stat(tmp_path / 'a.txt').st_mode & 0o777 == 0o666 & ~mask
