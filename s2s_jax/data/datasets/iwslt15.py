"""IWSLT'15 English-Vietnamese (Stanford NMT version): train 133,317 / tst2012 1,553 / tst2013 1,268 TED lines.
Raw files {train,tst2012,tst2013}.{en,vi} -> train (only if both train files exist) / validation / test. The
Stanford site publishes no checksums: the files' sha256 are only recorded (in the prepared dataset's manifest and
so in every run's provenance.json)."""

from s2s_jax.data.datasets import family
from s2s_jax.data.datasets import spec

_URL = 'https://nlp.stanford.edu/projects/nmt/data/iwslt15.en-vi/'
_RAW = {'train': 'train', 'validation': 'tst2012', 'test': 'tst2013'}
_LANGUAGES = ('en', 'vi')

SPEC = family.corpus(
  name='iwslt15',
  read=family.read_aligned,
  needs=(spec.LANGS,),
  folder='iwslt15_en_vi',
  languages=_LANGUAGES,
  raw={split: stem + '.{lang}' for split, stem in _RAW.items()},
  optional_splits=('train',),
  url=_URL,
  downloads={f'{stem}.{lang}': spec.Download(f'{_URL}{stem}.{lang}') for stem in _RAW.values() for lang in _LANGUAGES},
)
