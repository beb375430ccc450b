"""Lead baselines of a summarization dataset, scored by the code that scores the models (`evaluation.score`).

  python scripts/lead_baseline.py --config=experiments/summarization/aeslc.py --split=test --json=/tmp/lead.json

Baselines: `lead_sentence` (the source's first sentence: text up to the first `.`, `!` or `?` followed by a space)
and `lead_<N>` (the first N whitespace words) for every N of --num_words. They are scored against the split's
references (AESLC test: the three annotated subject lines; ROUGE averaged over references, and the best reference
in the `_max` keys), exactly as `evaluate` scores a model on the same split. Nothing is trained or tokenised.

With several references per example (AESLC test), `human` is the agreement of the annotators: each annotator's
subject lines scored against the other annotators' (one fewer reference than a system gets), averaged over the
annotators: what a system that wrote like one more annotator would score, a ceiling of the metric on this data.
"""

import json

from absl import app
from absl import flags
from ml_collections import config_flags

from s2s_jax import config_checks
from s2s_jax import decode
from s2s_jax import evaluation
from s2s_jax.data import corpora
from s2s_jax.data import pipeline
from s2s_jax.data import registry

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment file of the dataset.')
_SPLIT = flags.DEFINE_string('split', 'test', 'Split to score.')
_NUM_WORDS = flags.DEFINE_list('num_words', ['5', '8', '12'], 'Lengths of the first-N-words baselines.')
_JSON = flags.DEFINE_string('json', None, 'Write {baseline: scores} here.')
flags.mark_flags_as_required(['config'])


def main(argv):
  del argv
  config = _CONFIG.value
  config_checks.validate(config)
  pipeline.resolve_paths(config.data)
  dataset = registry.of(config.data)
  if dataset.source != 'text':
    raise app.UsageError(f'data.name={config.data.name!r} is not a corpus with raw text; nothing to baseline.')
  pairs = corpora.require_split(dataset, corpora.load_pairs(dataset, config.data), _SPLIT.value, config.data)
  refs = corpora.load_references(dataset, config.data).get(_SPLIT.value) or [[target for _, target in pairs]]
  sources = [source for source, _ in pairs]
  lengths = [len(s.split()) for s in sources]
  options = decode.DecodeOptions(beam_size=1, length_alpha=0.0)  # scored text is not decoded: no search
  results = {}
  for name, hyps in evaluation.lead_baselines(sources, [int(n) for n in _NUM_WORDS.value]).items():
    result = evaluation.score(
      hyps, refs, lengths, config.eval.scores, options, seconds=0.0, step=0, lang=config.data.target_lang
    )
    results[name] = {k: v for k, v in result.items() if not isinstance(v, list)}
    shown = ', '.join(
      f'{k}={v:.2f}'
      for k, v in results[name].items()
      if k.startswith(('rouge', 'bleu', 'len_ratio')) and isinstance(v, float)
    )
    print(f'{name}: {shown}')
  if len(refs) > 1:
    per_annotator = [
      evaluation.score(
        refs[k], refs[:k] + refs[k + 1 :], lengths, config.eval.scores, options, 0.0, 0, lang=config.data.target_lang
      )
      for k in range(len(refs))
    ]
    results['human'] = {
      key: sum(r[key] for r in per_annotator) / len(per_annotator)
      for key, value in per_annotator[0].items()
      if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    shown = ', '.join(f'{k}={v:.2f}' for k, v in results['human'].items() if k.startswith(('rouge', 'len_ratio')))
    print(f'human (each of {len(refs)} annotators against the other {len(refs) - 1}, averaged): {shown}')
  print(f'({len(sources)} examples of {config.data.name}/{_SPLIT.value}, {len(refs)} reference(s) each)')
  if _JSON.value:
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(
        {'split': _SPLIT.value, 'num_examples': len(sources), 'num_references': len(refs), **results}, f, indent=2
      )


if __name__ == '__main__':
  app.run(main)
