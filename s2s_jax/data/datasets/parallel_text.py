"""User-given parallel text: data.files = 'train=a.de,a.en;validation=b.tsv', per split two aligned files (plain or
.gz) or one TSV; records have the features source and target (in the files' order)."""

from s2s_jax.data import raw_files
from s2s_jax.data.datasets import family
from s2s_jax.data.datasets import spec


def _read(config) -> dict[str, dict[str, list[str]]]:
  out = {}
  for split, paths in config.files:
    if len(paths) == 1:
      out[split] = dict(zip(('source', 'target'), raw_files.tsv_fields(paths[0])))
    else:
      out[split] = raw_files.aligned_lines({'source': paths[0], 'target': paths[1]})
  return out


SPEC = family.corpus(
  name='parallel_text',
  read=_read,
  needs=(spec.files_needed("'train=a.de,a.en;validation=b.tsv'"),),
  features=('source', 'target'),
  split_hint=" Add '{split}=SOURCE,TARGET' or '{split}=FILE.tsv' to data.files.",
)
