"""What several test files share: the subprocess environment and runner, the tiny training config, a workdir of a
randomly initialised tiny model, and the step-by-step decoding reference.

Subprocesses (python -m s2s_jax.main, scripts/*.py) get their own device count plus the test session's compile
options (S2S_TEST_XLA_FLAGS, set in conftest.py), JAX on CPU, and the repository on PYTHONPATH.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import optax

from s2s_jax import checkpointing
from s2s_jax import config_lib
from s2s_jax import fileio
from s2s_jax import models
from s2s_jax import seq2seq_config
from s2s_jax import steps
from s2s_jax import workdir as workdir_lib
from s2s_jax.data import BOS_ID

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def xla_flags(devices: int = 1) -> str:
  return f'--xla_force_host_platform_device_count={devices} {os.environ.get("S2S_TEST_XLA_FLAGS", "")}'.strip()


def env(devices: int = 1, repo_on_path: bool = True, **extra: str) -> dict[str, str]:
  """os.environ for a subprocess test: `devices` CPU devices, the session's XLA options, JAX on CPU and (unless
  `repo_on_path` is False) the repository on PYTHONPATH; `extra` variables on top."""
  out = dict(os.environ, XLA_FLAGS=xla_flags(devices), JAX_PLATFORMS='cpu', **extra)
  if repo_on_path:
    out['PYTHONPATH'] = os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')]))
  return out


def run(
  *args: str,
  devices: int = 1,
  cwd: str = ROOT,
  stdin: str | None = None,
  timeout: float = 600,
  repo_on_path: bool = True,
  **extra_env: str,
) -> subprocess.CompletedProcess:
  """`python ARGS...` (e.g. '-m', 's2s_jax.main', flags, or a script path) with env(); output captured as text."""
  return subprocess.run(
    [sys.executable, *args],
    cwd=cwd,
    env=env(devices, repo_on_path, **extra_env),
    input=stdin,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )


def tiny_config(data_dir: str, constant_lr: bool = False, **overrides):
  """experiments/default.py at size=tiny preparing into `data_dir`, with top-level overrides; `constant_lr` so that a
  shorter first part of a resumed run has the same learning rates."""
  sys.path.insert(0, ROOT)
  from experiments import default  # pylint: disable=g-import-not-at-top

  config = default.get_config('size=tiny')
  config.data.data_dir = data_dir
  if constant_lr:
    config.optim.schedule = 'constant'
  for k, v in overrides.items():
    config[k] = v
  return config


def random_workdir(workdir: str, data_dir: str, seed: int = 0, steps_=(1,), config=None, **data_overrides) -> str:
  """A workdir as translate / evaluate read it (config.json, vocabularies, best/<step>/ parameters) of the tiny
  default model (or of `config`), randomly initialised from `seed` instead of trained (seconds instead of a training
  run); the data config takes `data_overrides` (e.g. reverse_source=True). Every step of `steps_` saves the same
  parameters."""
  if config is None:
    config = tiny_config(data_dir)
  config.data.data_dir = data_dir
  config.data.update(data_overrides)
  config = workdir_lib.resolve_config(config)
  from s2s_jax.data import pipeline  # pylint: disable=g-import-not-at-top

  os.makedirs(workdir, exist_ok=True)
  data = pipeline.prepare(config.data, vocab_dir=workdir)
  workdir_lib.set_data_fields(config, data)
  fileio.write_json(os.path.join(workdir, 'config.json'), config_lib.to_dict(config), indent=2, sort_keys=True)
  model = models.Seq2Seq(config_lib.model_config(config))
  state = steps.create_train_state(jax.random.PRNGKey(seed), model, optax.sgd(0.1), data.src_len, data.tgt_len)
  for step in steps_:
    checkpointing.save_params(os.path.join(workdir, 'best'), step, state.params)
  return workdir


def step_by_step(model, variables, inputs, mask, targets):
  """A manual loop of decode_step calls fed the reference tokens: (logits [B, T, V], the last decoder state)."""
  memory, state = model.apply(variables, inputs, mask, method=models.Seq2Seq.encode)
  ids, outs = jnp.full((inputs.shape[0],), BOS_ID, jnp.int32), []
  for t in range(targets.shape[1]):
    logits, state = model.apply(variables, ids, state, memory, method=models.Seq2Seq.decode_step)
    outs.append(logits)
    ids = targets[:, t]
  return jnp.stack(outs, axis=1), state


def small_state(lr=0.1):
  """The train state of a tiny Luong model (source length 5, target length 4) under SGD."""
  model = models.Seq2Seq(
    seq2seq_config.Seq2SeqConfig(
      src_vocab_size=9, tgt_vocab_size=9, embed_dim=4, hidden_dim=8, attention='luong', max_src_len=5
    )
  )
  return steps.create_train_state(jax.random.PRNGKey(0), model, optax.sgd(lr), 5, 4)
