"""AESLC (Zhang and Tetreault 2019): Enron email bodies -> subject lines. enron_subject_line.tar.gz (train/, dev/)
-> train 14,436 emails (about 5% held out as validation by `aeslc_split`) / test = the dev set (1,960 emails, each
with 3 annotated subject lines).

Records: source (the body), target (the email's own subject line: teacher-forced loss and perplexity) and
references (the annotated subject lines joined by newlines; empty in train / validation), which ROUGE scores
against. The blind test set of the paper is not read even when present.
"""

import hashlib
import os
import re
import tarfile

from absl import logging

from s2s_jax.data.datasets import family

ARCHIVE = 'enron_subject_line.tar.gz'
_URL = 'https://github.com/ryanzhumich/AESLC (enron_subject_line/, packed as enron_subject_line.tar.gz)'


def aeslc_split(stem: str) -> str:
  """The split of an AESLC training email from its file stem (e.g. 'allen-p_inbox_29'): the first 8 bytes of
  sha256(stem), big-endian, mod 100 below 5 -> validation (about 5%, held out from train), else train."""
  bucket = int.from_bytes(hashlib.sha256(stem.encode('utf-8')).digest()[:8], 'big') % 100
  return 'validation' if bucket < 5 else 'train'


def parse_aeslc(text: str, name: str = '') -> dict[str, object]:
  """One AESLC `.subject` file -> {'source': body, 'target': @subject, 'references': [@ann0, @ann1, ...]}.

  The body is everything before the first `@subject` line; each section's lines are joined with single spaces.
  """
  sections, current = {'body': []}, 'body'
  for line in text.split('\n'):  # lines end at \n only, as in raw_files.read_lines
    marker = line.strip()
    if re.fullmatch(r'@(subject|ann\d+)', marker):
      current = marker[1:]
      sections[current] = []
    else:
      sections[current].append(line)
  if 'subject' not in sections:
    raise ValueError(f'{name}: no @subject line (not an AESLC .subject file?).')
  join = lambda lines: ' '.join(' '.join(lines).split())
  annotations = sorted((k for k in sections if k.startswith('ann')), key=lambda k: int(k[3:]))
  return {
    'source': join(sections['body']),
    'target': join(sections['subject']),
    'references': [join(sections[k]) for k in annotations],
  }


def _read(config) -> dict[str, dict[str, list[str]]]:
  path = os.path.join(config.raw_dir, ARCHIVE)
  splits = {s: {'references': [], 'source': [], 'target': []} for s in ('train', 'validation', 'test')}
  try:
    with tarfile.open(path, 'r:gz') as tar:
      members = sorted((m for m in tar if m.isfile() and m.name.endswith('.subject')), key=lambda m: m.name)
      for member in members:
        folder = os.path.basename(os.path.dirname(member.name))
        if folder not in ('train', 'dev'):
          continue
        stem = os.path.basename(member.name)[: -len('.subject')]
        try:
          text = tar.extractfile(member).read().decode('utf-8')
        except UnicodeDecodeError as e:
          raise ValueError(f'{path}: {member.name} is not UTF-8 ({e.reason}).') from None
        record = parse_aeslc(text, f'{path}: {member.name}')
        split = splits['test' if folder == 'dev' else aeslc_split(stem)]
        split['source'].append(record['source'])
        split['target'].append(record['target'])
        split['references'].append('\n'.join(record['references']) if folder == 'dev' else '')
  except (tarfile.TarError, OSError, EOFError) as e:
    raise ValueError(f'{path}: cannot read the archive ({e}).') from e
  for name in [s for s, cols in splits.items() if not cols['source']]:
    logging.warning('%s: no email falls into split %r; it is left out.', path, name)
    del splits[name]
  return splits


SPEC = family.corpus(
  name='aeslc',
  read=_read,
  folder='aeslc',
  raw={split: ARCHIVE for split in ('train', 'validation', 'test')},
  url=_URL,
  no_download=f'get enron_subject_line/ from {_URL}, pack it as {ARCHIVE} (tar czf) and put it in data.manual_dir.',
  features=('source', 'target'),
  references='references',
)
