"""The results registry: one small JSON record per reported run in results/, and the tables made from the records.

  # a finished run's workdir -> results/NAME.json (no checkpoints: the metrics, curve and conditions only)
  python scripts/results_table.py record --workdir=DIR --name=multi30k/strong --page=docs/results/multi30k.md \
      --title='strong: bi-LSTM, Luong + input feeding' --metric=test/bleu_lc --anchor='OpenNMT-py 38.4' \
      --command='python -m s2s_jax.main --config=experiments/multi30k/strong.py --workdir=DIR' [--summary]
  # a speed script's --json output -> a record of "kind": "speed" (--columns: KEY or KEY=HEADER, KEY dotted)
  python scripts/results_table.py speed --json=OUT.json --name=speed/compile_default --page=docs/speed.md \
      --title='...' --command='...' [--rows=rows|rows.0:3] [--columns=label=start,wall_s=wall s] \
      [--commit=... --date=... --machine=...  (where the JSON lacks them)] [--dot_peak_gflops=...]
  python scripts/results_table.py tables [--check]  # rewrite README.md's and docs/' tables (--check: only compare)
  python scripts/results_table.py plots [--out=DIR]  # scripts/results_plots.py: bar charts, learning curves

A table is generated between two markers in a Markdown file: `<!-- results:summary -->` (the records marked
`summary`: the README's table), `<!-- results:page -->` (the result records whose `page` is this file) or
`<!-- results:speed=NAME -->` (the rows of speed record NAME), closed by `<!-- /results -->`. What lies between the
markers is the generator's: a hand edit there fails the fast test (tests/results_table_test.py). A record written from
numbers published before the registry (run folder gone) carries `"source": "README before the registry"` and is
replaced the next time the run is made. results/blind/ holds translations, not records, and is ignored.
"""

import glob
import json
import os
import sys
from typing import Any

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(_REPO, 'results')
SOURCES = ('run', 'README before the registry')


def _read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _machine(prov: dict[str, Any]) -> str:
  devices = prov.get('devices') or []
  accel = [d for d in devices if not d.startswith('TFRT_CPU') and 'cpu' not in d.lower()]
  if accel:
    return f'{len(accel)} x {accel[0].split("(")[0]}'
  return f'{prov.get("cpu") or "CPU"}, {prov.get("cpu_count")} cores'


def _metrics(workdir: str) -> tuple[dict[str, float], dict[str, str]]:
  """Scalars and signatures of every eval_SPLIT[.TAG].json, as 'SPLIT[.TAG]/NAME'."""
  metrics, signatures = {}, {}
  for path in sorted(glob.glob(os.path.join(workdir, 'eval_*.json'))):
    prefix = os.path.basename(path)[len('eval_') : -len('.json')]
    for key, value in _read_json(path).items():
      if key.endswith('_signature'):
        signatures[f'{prefix}/{key}'] = value
      elif isinstance(value, (int, float)) and not isinstance(value, bool):
        metrics[f'{prefix}/{key}'] = value
  return metrics, signatures


def _records(path: str) -> list[dict[str, Any]]:
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def record_from_workdir(
  workdir: str, name: str, page: str, title: str, metric: str, anchor: str | None, command: str, summary: bool = False
) -> dict[str, Any]:
  """The record of a finished run: its conditions (provenance.json), configuration, metrics and validation curve."""
  for needed in ('provenance.json', 'config.json', 'metrics.jsonl'):
    if not os.path.exists(os.path.join(workdir, needed)):
      raise app.UsageError(f'{workdir} has no {needed}: give the workdir of a run (s2s_jax.main).')
  prov, config = _read_json(os.path.join(workdir, 'provenance.json')), _read_json(os.path.join(workdir, 'config.json'))
  metrics, signatures = _metrics(workdir)
  if metric not in metrics:
    raise app.UsageError(f'{workdir} has no {metric}; its metrics: {", ".join(sorted(metrics)) or "none"}.')
  lines = _records(os.path.join(workdir, 'metrics.jsonl'))
  eval_key = 'eval/' + metric.split('/', 1)[1]
  starts = prov.get('starts') or []
  return {
    'kind': 'result',
    'name': name,
    'page': page,
    'title': title,
    'summary': summary,
    'data': config['data']['name'],
    'metric': metric,
    'anchor': _parse_anchor(anchor),
    'command': command,
    'commit': (prov.get('git_sha') or '')[:7] + ('+dirty' if prov.get('git_dirty') else ''),
    'date': (starts[0]['utc'] if starts else '')[:10],
    'machine': _machine(prov),
    'dot_peak_gflops': starts[0].get('dot_peak_gflops') if starts else None,
    'wall_s': max((r['wall_s'] for r in lines if 'wall_s' in r), default=None),
    'resumes': max(len(starts) - 1, 0),
    'metrics': metrics,
    'signatures': signatures,
    'curve': [[r['step'], r.get('wall_s'), r[eval_key]] for r in lines if eval_key in r],
    'source': 'run',
  }


def _parse_anchor(text: str | None) -> dict[str, Any] | None:
  if not text:
    return None
  label, _, value = text.rpartition(' ')
  try:
    return {'label': label, 'value': float(value)}
  except ValueError:
    raise app.UsageError(f"--anchor={text!r}: give 'WHO VALUE', e.g. 'OpenNMT-py 38.4'.") from None


def _cell(row: Any, key: str) -> Any:
  """row[key], where a dotted key reads into nested objects ('cold.to_training_s')."""
  for part in key.split('.'):
    row = row.get(part) if isinstance(row, dict) else None
  return row


def _rows_at(result: Any, rows_at: str, path: str) -> list[dict[str, Any]]:
  """The rows at a dotted path: a list (a last part 'A:B' slices it) or one object (one row)."""
  rows = result
  try:
    for part in rows_at.split('.') if rows_at else []:
      if ':' in part and isinstance(rows, list):
        start, stop = part.split(':')
        rows = rows[int(start or 0) : int(stop) if stop else None]
      else:
        rows = rows[int(part)] if isinstance(rows, list) else rows[part]
  except (KeyError, IndexError, ValueError, TypeError):
    raise app.UsageError(f'{path} has nothing at --rows={rows_at!r}.') from None
  rows = [rows] if isinstance(rows, dict) else rows
  if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows) or not rows:
    raise app.UsageError(f'{path}: {rows_at!r} is not an object or a non-empty list of rows (objects).')
  return rows


def speed_record(
  path: str, name: str, page: str, title: str, command: str, rows_at: str, columns, meta: dict | None = None
) -> dict[str, Any]:
  """A speed script's --json output as a record: its rows (see _rows_at) and the columns shown, each 'KEY' or
  'KEY=HEADER' (a dotted KEY reads into nested objects). commit, date, machine and dot_peak_gflops come from
  `meta` where given there, else from the JSON (its `jnp_dot_gflops` is a `jnp.dot` peak)."""
  result = _read_json(path)
  rows = _rows_at(result, rows_at, path)
  keys = [c.split('=', 1)[0] for c in columns] if columns else list(rows[0])
  headers = [c.split('=', 1)[-1] for c in columns] if columns else keys
  if unknown := [k for k in keys if all(_cell(r, k) is None for r in rows)]:
    raise app.UsageError(f'{path}: no row has {", ".join(unknown)}; the first has {", ".join(rows[0])}.')
  info = result if isinstance(result, dict) else {}
  given = {k: v for k, v in (meta or {}).items() if v is not None}
  conditions = {k: given.get(k, info.get(k)) for k in ('commit', 'date', 'machine')}
  if missing := [k for k, v in conditions.items() if not v]:
    raise app.UsageError(f'{path} does not say its {", ".join(missing)}: give --{" --".join(missing)}.')
  return {
    'kind': 'speed',
    'name': name,
    'page': page,
    'title': title,
    'command': command,
    **conditions,
    'dot_peak_gflops': given.get('dot_peak_gflops', info.get('dot_peak_gflops', info.get('jnp_dot_gflops'))),
    'columns': headers,
    'rows': [{h: _cell(r, k) for k, h in zip(keys, headers)} for r in rows],
    'source': 'run',
  }


def check_record(rec: dict[str, Any], where: str) -> None:
  needed = {'kind', 'name', 'page', 'title', 'command', 'commit', 'date', 'machine', 'dot_peak_gflops', 'source'}
  needed |= (
    {'metric', 'metrics', 'anchor', 'wall_s', 'resumes', 'curve', 'data'} if rec.get('kind') == 'result' else set()
  )
  needed |= {'columns', 'rows'} if rec.get('kind') == 'speed' else set()
  if rec.get('kind') not in ('result', 'speed'):
    raise ValueError(f'{where}: "kind" must be "result" or "speed", not {rec.get("kind")!r}')
  if missing := sorted(needed - set(rec)):
    raise ValueError(f'{where}: missing {", ".join(missing)}')
  if rec['source'] not in SOURCES:
    raise ValueError(f'{where}: "source" must be one of {SOURCES}')
  if rec['kind'] == 'result' and rec['metric'] not in rec['metrics']:
    raise ValueError(f'{where}: its metric {rec["metric"]} is not among its metrics')


def load_records(folder: str = RESULTS) -> list[dict[str, Any]]:
  """Every record under results/ (results/blind/ holds translations and is skipped), checked, sorted by name."""
  records = []
  for path in sorted(glob.glob(os.path.join(folder, '**', '*.json'), recursive=True)):
    if os.path.relpath(path, folder).split(os.sep)[0] == 'blind':
      continue
    rec = _read_json(path)
    check_record(rec, path)
    if os.path.relpath(path, folder) != rec['name'] + '.json':
      raise ValueError(f'{path}: its name is {rec["name"]!r}; the file must be results/{rec["name"]}.json')
    records.append(rec)
  return sorted(records, key=lambda r: r['name'])


def _num(value: Any) -> str:
  if isinstance(value, float):
    if abs(value) < 1:  # 0.958, 0.079, 0.80: up to three decimals, at least two
      text = f'{value:.3f}'
      return text[:-1] if text.endswith('0') else text
    return f'{value:,.2f}' if abs(value) < 1000 else f'{value:,.0f}'
  if isinstance(value, int) and not isinstance(value, bool):
    return f'{value:,}'
  return '' if value is None else str(value).replace('|', '\\|')


def _wall(seconds: float | None) -> str:
  if seconds is None:
    return 'n/a'
  return f'{seconds:.0f} s' if seconds < 120 else f'{seconds / 60:.1f} min'


def _conditions(rec: dict[str, Any]) -> str:
  peak = rec.get('dot_peak_gflops')  # GFLOP/s, or [low, high] over a measurement's rounds
  peak = '-'.join(f'{p:.0f}' for p in peak) if isinstance(peak, list) else peak and f'{peak:.0f}'
  return f'{rec["machine"]}' + (f', `jnp.dot` {peak} GFLOP/s' if peak else '')


def _result_rows(records: list[dict[str, Any]], md_dir: str, link: bool) -> list[str]:
  out = [
    '| experiment | data | metric | published | ours | wall time | hardware | commit, date |',
    '|---|---|---|---:|---:|---:|---|---|',
  ]
  for r in records:
    page = os.path.relpath(os.path.join(_REPO, r['page']), md_dir)
    name = f'[{r["title"]}]({page})' if link else r['title']
    anchor = f'{r["anchor"]["label"]} {_num(r["anchor"]["value"])}' if r['anchor'] else '—'
    source = '' if r['source'] == 'run' else ' (published before the registry)'
    resumed = f', resumed {r["resumes"]}x' if r['resumes'] else ''
    out.append(
      f'| {name} | {r["data"]} | `{r["metric"]}` | {anchor} | **{_num(r["metrics"][r["metric"]])}** | '
      f'{_wall(r["wall_s"])}{resumed} | {_conditions(r)} | {r["commit"]}, {r["date"]}{source} |'
    )
  return out


# Settings and counts an eval file records beside its scores: not repeated below a table (they stay in the record).
_NOT_SCORES = ('beam_size', 'checkpoint_step', 'length_alpha', 'num_sentences', 'seed', 'decode_s')


def _commands(records: list[dict[str, Any]]) -> list[str]:
  """Below a page's table, a line per record: the command that made it and its other scores (those of `evaluate`'s
  tagged re-evaluations, e.g. `test.mbrchrf.seed0/*`, stay in the record: the page that reports them shows them)."""
  out = []
  for r in records:
    others = ', '.join(
      f'`{k}` {_num(v)}'
      for k, v in sorted(r['metrics'].items())
      if k != r['metric'] and '.' not in k.split('/')[0] and k.split('/')[-1] not in _NOT_SCORES
    )
    out.append(f'- {r["title"]}: `{r["command"]}`' + (f'; also {others}.' if others else '.'))
  return out


def _speed_rows(rec: dict[str, Any]) -> list[str]:
  cols = rec['columns']
  out = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
  out += ['| ' + ' | '.join(_num(row.get(c)) for c in cols) + ' |' for row in rec['rows']]
  source = '' if rec['source'] == 'run' else '; published before the registry'
  out.append(f'\n{rec["title"]}: `{rec["command"]}` ({rec["commit"]}, {rec["date"]}, {_conditions(rec)}{source}).')
  return out


def render(spec: str, md_path: str, records: list[dict[str, Any]]) -> list[str]:
  """The table of one marker (`summary`, `page` or `speed=NAME`) in the Markdown file md_path."""
  md_dir = os.path.dirname(os.path.abspath(md_path))
  rel = os.path.relpath(os.path.abspath(md_path), _REPO)
  results = [r for r in records if r['kind'] == 'result']
  if spec == 'summary':
    return _result_rows([r for r in results if r['summary']], md_dir, link=True)
  if spec == 'page':
    mine = [r for r in results if r['page'] == rel]
    return _result_rows(mine, md_dir, link=False) + ([''] + _commands(mine) if mine else [])
  if spec.startswith('speed='):
    found = [r for r in records if r['kind'] == 'speed' and r['name'] == spec[len('speed=') :]]
    if not found:
      raise ValueError(f'{md_path}: no speed record named {spec[len("speed=") :]!r} in results/')
    return _speed_rows(found[0])
  raise ValueError(f"{md_path}: unknown table {spec!r} (give 'summary', 'page' or 'speed=NAME')")


_OPEN, _CLOSE = '<!-- results:', '<!-- /results -->'


def regenerate(text: str, md_path: str, records: list[dict[str, Any]]) -> str:
  """The file's text with every generated table rebuilt from the records."""
  out, lines, i = [], text.split('\n'), 0
  while i < len(lines):
    line = lines[i]
    out.append(line)
    i += 1
    if line.startswith(_OPEN):
      spec = line[len(_OPEN) :].removesuffix('-->').strip()
      end = next((j for j in range(i, len(lines)) if lines[j].startswith(_CLOSE)), None)
      if end is None:
        raise ValueError(f'{md_path}: {line} has no closing {_CLOSE}')
      out += render(spec, md_path, records) + [_CLOSE]
      i = end + 1
  return '\n'.join(out)


def markdown_files() -> list[str]:
  return [os.path.join(_REPO, 'README.md')] + sorted(
    glob.glob(os.path.join(_REPO, 'docs', '**', '*.md'), recursive=True)
  )


def stale_tables(records: list[dict[str, Any]] | None = None) -> list[str]:
  """The Markdown files whose generated tables differ from what the records generate."""
  records = load_records() if records is None else records
  stale = []
  for path in markdown_files():
    with open(path, encoding='utf-8') as f:
      text = f.read()
    if regenerate(text, path, records) != text:
      stale.append(os.path.relpath(path, _REPO))
  return stale


def write_tables() -> list[str]:
  records, changed = load_records(), []
  for path in markdown_files():
    with open(path, encoding='utf-8') as f:
      text = f.read()
    new = regenerate(text, path, records)
    if new != text:
      with open(path, 'w', encoding='utf-8') as f:
        f.write(new)
      changed.append(os.path.relpath(path, _REPO))
  return changed


def _write_record(rec: dict[str, Any]) -> None:
  check_record(rec, rec['name'])
  path = os.path.join(RESULTS, rec['name'] + '.json')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(rec, f, indent=1, sort_keys=True, ensure_ascii=False)
    f.write('\n')
  print(f'wrote {os.path.relpath(path, _REPO)}')


def main(argv):
  if len(argv) != 2 or argv[1] not in ('record', 'speed', 'tables', 'plots'):
    raise app.UsageError('give one command: record, speed, tables or plots')
  command = argv[1]
  if command in ('record', 'speed'):
    for flag in (_NAME, _PAGE, _TITLE, _COMMAND) + ((_WORKDIR,) if command == 'record' else (_JSON,)):
      if not flag.value:
        raise app.UsageError(f'{command} needs --{flag.name}')
  if command == 'record':
    _write_record(
      record_from_workdir(
        _WORKDIR.value,
        _NAME.value,
        _PAGE.value,
        _TITLE.value,
        _METRIC.value,
        _ANCHOR.value,
        _COMMAND.value,
        _SUMMARY.value,
      )
    )
  elif command == 'speed':
    meta = dict(commit=_COMMIT.value, date=_DATE.value, machine=_MACHINE.value, dot_peak_gflops=_DOT_PEAK.value)
    _write_record(
      speed_record(
        _JSON.value, _NAME.value, _PAGE.value, _TITLE.value, _COMMAND.value, _ROWS.value, _COLUMNS.value, meta
      )
    )
  elif command == 'plots':
    import results_plots  # pylint: disable=g-import-not-at-top  (matplotlib only where plots are drawn)

    written, notes = results_plots.write_plots(load_records(), _OUT.value or _REPO)
    print('\n'.join(notes + [f'wrote {path}' for path in written]) or 'No record has a plot.')
  elif _CHECK.value:
    if stale := stale_tables():
      print(f'Tables differ from results/ in: {", ".join(stale)}. Run python scripts/results_table.py tables.')
      sys.exit(1)
    print('Every generated table matches results/.')
  else:
    changed = write_tables()
    print(f'Rewrote the tables of: {", ".join(changed)}' if changed else 'Every table was current.')


if __name__ == '__main__':  # flags only when run: importing this module defines none (absl's flags are global)
  _WORKDIR = flags.DEFINE_string('workdir', None, 'record: the finished run.')
  _JSON = flags.DEFINE_string('json', None, 'speed: the --json output of a speed script.')
  _NAME = flags.DEFINE_string('name', None, 'record/speed: the record name (results/NAME.json), e.g. multi30k/strong.')
  _PAGE = flags.DEFINE_string('page', None, 'record/speed: the docs page that shows it (path from the repository).')
  _TITLE = flags.DEFINE_string('title', None, 'record/speed: what the row is (model, data), in a few words.')
  _METRIC = flags.DEFINE_string('metric', 'test/bleu', 'record: the headline metric, SPLIT/NAME of eval_SPLIT.json.')
  _ANCHOR = flags.DEFINE_string('anchor', None, "record: the published anchor, 'WHO VALUE', e.g. 'OpenNMT-py 38.4'.")
  _COMMAND = flags.DEFINE_string('command', None, 'record/speed: the command that made it.')
  _SUMMARY = flags.DEFINE_bool('summary', False, "record: a row of the README's results table.")
  _ROWS = flags.DEFINE_string('rows', 'rows', 'speed: where the rows are in the JSON (dotted; A:B slices a list).')
  _COLUMNS = flags.DEFINE_list('columns', None, "speed: the columns, KEY or KEY=HEADER (default: the first row's).")
  _CHECK = flags.DEFINE_bool('check', False, 'tables: change nothing; exit 1 where a table differs from the records.')
  _COMMIT = flags.DEFINE_string('commit', None, 'speed: the measured commit, where the JSON has no "commit".')
  _DATE = flags.DEFINE_string('date', None, 'speed: the day measured (YYYY-MM-DD), where the JSON has no "date".')
  _MACHINE = flags.DEFINE_string('machine', None, 'speed: e.g. "AMD EPYC, 2 cores", where the JSON has none.')
  _DOT_PEAK = flags.DEFINE_float('dot_peak_gflops', None, "speed: the `jnp.dot` peak that day (default: the JSON's).")
  _OUT = flags.DEFINE_string('out', None, 'plots: the folder the plots go under (default: the repository).')
  app.run(main)
