"""Multi30k task 1 (Elliott et al. 2016): train 29,000 / validation 1,014 / test2016 1,000 image descriptions in
cs, de, en and fr. Raw files task1/raw/{train,val,test_2016_flickr}.{cs,de,en,fr}.gz -> train / validation / test;
the prepared dataset has one Text feature per language of the pair (config `de-en`), so it serves both directions.
"""

import os

from s2s_jax.data.datasets import family
from s2s_jax.data.datasets import spec

_URL = 'https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/'
_RAW = {'train': 'task1/raw/train', 'validation': 'task1/raw/val', 'test': 'task1/raw/test_2016_flickr'}
# sha256 of the official files (repository multi30k/dataset), which do not change upstream.
_SHA256 = {
  'test_2016_flickr.cs.gz': '200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1',
  'test_2016_flickr.de.gz': '9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8',
  'test_2016_flickr.en.gz': '611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9',
  'test_2016_flickr.fr.gz': '6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90',
  'train.cs.gz': 'a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077',
  'train.de.gz': '726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6',
  'train.en.gz': 'd79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f',
  'train.fr.gz': '622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c',
  'val.cs.gz': 'b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc',
  'val.de.gz': 'f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a',
  'val.en.gz': '14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28',
  'val.fr.gz': 'ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9',
}
_LANGUAGES = ('cs', 'de', 'en', 'fr')


def _download(stem: str, lang: str) -> spec.Download:
  name = f'{os.path.basename(stem)}.{lang}.gz'
  return spec.Download(_URL + name, _SHA256[name])


SPEC = family.corpus(
  name='multi30k',
  read=family.read_aligned,
  needs=(spec.LANGS,),
  folder='multi30k',
  languages=_LANGUAGES,
  raw={split: stem + '.{lang}.gz' for split, stem in _RAW.items()},
  url=_URL,
  downloads={f'{stem}.{lang}.gz': _download(stem, lang) for stem in _RAW.values() for lang in _LANGUAGES},
)
