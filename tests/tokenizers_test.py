"""Tests of the tokenizers of s2s_jax.data.vocab: reserved ids, moses, sentencepiece, imported token files.

The sentencepiece corpus is written here (200 sentences), so nothing needs ../shared/data; the checks on real
corpora (multi30k, the Stanford IWSLT vocabulary) skip where it is absent and fail where S2S_REQUIRE_DATA=1.
"""

import base64
import gzip
import itertools
import json
import os

from absl.testing import absltest
from absl.testing import parameterized
from hypothesis import given
from hypothesis import strategies as st
import numpy as np
import shared_data

from s2s_jax.data import BOS_ID
from s2s_jax.data import EOS_ID
from s2s_jax.data import PAD_ID
from s2s_jax.data import SPECIAL_TOKENS
from s2s_jax.data import UNK_ID
from s2s_jax.data import frontend
from s2s_jax.data import vocab as vocab_lib

_SUBJECTS = (
  'A man',
  'Two young women',
  'A little girl',
  'An old dog',
  'Three children',
  'A woman in a red coat',
  'The boys',
  'A street vendor',
)
_VERBS = ('is walking', 'are playing', 'sits', 'waits', 'runs')
_PLACES = (
  'near many bushes.',
  'on the beach!',
  'in front of a café, smiling.',
  "outside the man's house.",
  'under a big (green) umbrella?',
)
# 8 x 5 x 5 = 200 sentences.
_SENTENCES = [f'{s} {v} {p}' for s, v, p in itertools.product(_SUBJECTS, _VERBS, _PLACES)]
_WORDS = sorted({w for s in _SENTENCES for w in s.split()})
_SPM_SIZE = 64  # the unigram trainer supports at most 74 pieces on _SENTENCES

# Normal punctuation: moses tokenises and detokenises these back exactly.
_ENGLISH = (
  'Two young, White males are outside near many bushes.',
  "A man's dog isn't running (it's tired).",
  'She said "hello" to the children.',
  'It costs $5.50 & more...',
  'Is this the 3rd time? Yes: 100%!',
  'Mr. Smith, e.g. the doctor, waits - then leaves.',
)
_GERMAN = ('Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.', 'Ein Mann, z.B. ein Arzt, sitzt dort.')


def _build(kind: str, texts=tuple(_SENTENCES), **kw) -> vocab_lib.Vocab:
  if kind == 'sentencepiece':
    kw.setdefault('max_size', _SPM_SIZE)
  if kind == 'moses':
    kw.setdefault('lang', 'en')
  return vocab_lib.build(texts, kind, **kw)


class EveryKindTest(parameterized.TestCase):
  @parameterized.parameters(*vocab_lib.TOKENIZERS)
  def test_reserved_ids_and_interface(self, kind):
    v = _build(kind)
    self.assertEqual(v.tokens[:4], list(SPECIAL_TOKENS))
    self.assertEqual((PAD_ID, UNK_ID, BOS_ID, EOS_ID), (0, 1, 2, 3))
    self.assertLen(v, len(v.tokens))
    self.assertLen(set(v.tokens), len(v))
    self.assertEqual(v.kind, kind)
    self.assertFalse(v.lowercase)
    for text in _SENTENCES[:20] + ['<s> a </s> <pad> <unk>', '']:
      ids = v.encode(text)
      self.assertTrue(all(isinstance(i, int) for i in ids))
      self.assertTrue(all(i == UNK_ID or 4 <= i < len(v) for i in ids), msg=f'{kind}: control id in {ids}')
      self.assertTrue(all(isinstance(t, str) for t in v.tokenize(text)))

  @parameterized.parameters(*vocab_lib.TOKENIZERS)
  def test_special_token_text_is_unk(self, kind):
    v = _build(kind)
    ids = v.encode('A man </s> waits <pad> <s>.')
    self.assertNotIn(PAD_ID, ids)
    self.assertNotIn(BOS_ID, ids)
    self.assertNotIn(EOS_ID, ids)
    if kind in ('word', 'sentencepiece'):  # char and moses split the literals into characters (unknown here)
      self.assertEqual(ids.count(UNK_ID), 3)
    self.assertIn('waits', v.decode(ids))  # decoding does not stop at the literal </s>

  @parameterized.parameters(*vocab_lib.TOKENIZERS)
  def test_decode_stops_at_eos_and_drops_pad_and_bos(self, kind):
    v = _build(kind)
    a, b = v.encode('A man')[:2] if kind != 'char' else v.encode('Am')
    expected = v.decode([a, b])
    self.assertEqual(v.decode([BOS_ID, a, PAD_ID, b, EOS_ID, a, a]), expected)
    self.assertEqual(v.decode(np.asarray([a, b, EOS_ID, PAD_ID], np.int32)), expected)
    self.assertEqual(v.decode([EOS_ID, a]), '')
    self.assertEqual(v.decode([PAD_ID, BOS_ID]), '')
    self.assertEqual(v.decode([a, len(v) + 7]), v.decode([a, UNK_ID]))  # out of range shows as UNK
    self.assertIn('<unk>', v.decode([a, UNK_ID]))
    self.assertIn('<unk>', v.decode([a, UNK_ID], detokenize=False))

  @parameterized.parameters(*vocab_lib.TOKENIZERS)
  def test_decode_without_detokenizing_joins_tokens_with_spaces(self, kind):
    v = _build(kind)
    for text in _SENTENCES[::17]:
      tokens = v.tokenize(text)
      joined = ''.join(tokens) if kind == 'char' else ' '.join(tokens)  # char / word: the same either way
      self.assertEqual(v.decode(v.encode(text), detokenize=False), joined)
      if kind in ('char', 'word'):
        self.assertEqual(v.decode(v.encode(text), detokenize=True), joined)

  @parameterized.parameters(*vocab_lib.TOKENIZERS)
  def test_round_trip_of_the_training_sentences(self, kind):
    v = _build(kind)
    for text in _SENTENCES:
      self.assertEqual(v.decode(v.encode(text)), text)

  @parameterized.parameters(*vocab_lib.TOKENIZERS)
  def test_lowercase(self, kind):
    v = _build(kind, lowercase=True)
    self.assertTrue(v.lowercase)
    self.assertEqual(v.encode('TWO YOUNG Women'), v.encode('two young women'))
    self.assertEqual(v.decode(v.encode('Two young women')), 'two young women')
    self.assertNotEqual(v.sha256(), _build(kind).sha256())

  @parameterized.parameters(*vocab_lib.TOKENIZERS)
  def test_save_load_and_sha256(self, kind):
    v = _build(kind, lowercase=kind == 'moses')
    path = os.path.join(self.create_tempdir().full_path, 'vocab.tgt.json')
    v.save(path)
    for loaded in (vocab_lib.load(path), frontend.load(path)):  # (a text dataset's source side is its vocabulary)
      self.assertEqual(loaded, v)
      self.assertIs(type(loaded), type(v))
      self.assertEqual(loaded.sha256(), v.sha256())
      self.assertEqual(loaded.settings(), v.settings())
      self.assertEqual(loaded.tokens, v.tokens)
      self.assertEqual(loaded.encode(_SENTENCES[3]), v.encode(_SENTENCES[3]))
    self.assertEqual(_build(kind, lowercase=kind == 'moses').sha256(), v.sha256())  # rebuilt: the same hash
    with open(path, encoding='utf-8') as f:
      self.assertEqual(json.load(f)['kind'], kind)

  @parameterized.parameters(*vocab_lib.TOKENIZERS)
  def test_settings_match_what_a_config_asks_for(self, kind):
    # The pipeline passes every data setting, whichever the tokenizer; those a kind does not use are ignored.
    v = _build(kind, lang='de', model_type='bpe', max_size=_SPM_SIZE if kind == 'sentencepiece' else 0)
    want = vocab_lib.settings(kind, lowercase=False, lang='de', model_type='bpe')
    self.assertEqual(v.settings(), want)
    self.assertNotEqual(v.settings(), vocab_lib.settings(kind, lowercase=True, lang='de', model_type='bpe'))
    self.assertEqual(want['lang'] == 'de', kind == 'moses')
    self.assertEqual(want['model_type'] == 'bpe', kind == 'sentencepiece')

  def test_unknown_tokenizer(self):
    with self.assertRaisesRegex(ValueError, 'sentencepiece'):
      vocab_lib.build(['a'], 'bpe')


class MosesTest(parameterized.TestCase):
  def test_english_sentence(self):
    v = _build('moses')
    self.assertEqual(
      v.tokenize('Two young, White males are outside near many bushes.'),
      ['Two', 'young', ',', 'White', 'males', 'are', 'outside', 'near', 'many', 'bushes', '.'],
    )
    self.assertEqual(v.tokenize("A man's dog isn't here."), ['A', 'man', "'s", 'dog', 'isn', "'t", 'here', '.'])
    self.assertEqual(v.tokenize('Mr. Smith, e.g. the doctor.'), ['Mr.', 'Smith', ',', 'e.g.', 'the', 'doctor', '.'])
    self.assertEqual(v.tokenize('It costs $5.50 & more...'), ['It', 'costs', '$', '5.50', '&', 'more', '...'])

  def test_german_sentence(self):
    v = vocab_lib.build(_GERMAN, 'moses', lang='de')
    self.assertEqual(v.lang, 'de')
    self.assertEqual(
      v.tokenize(_GERMAN[0]),
      ['Zwei', 'junge', 'weiße', 'Männer', 'sind', 'im', 'Freien', 'in', 'der', 'Nähe', 'vieler', 'Büsche', '.'],
    )
    self.assertEqual(v.tokenize(_GERMAN[1]), ['Ein', 'Mann', ',', 'z.B.', 'ein', 'Arzt', ',', 'sitzt', 'dort', '.'])
    # The punctuation normaliser rewrites typographic quotes before tokenising.
    self.assertEqual(v.tokenize('Er sagt „Hallo“.'), ['Er', 'sagt', '"', 'Hallo', '"', '.'])

  @parameterized.parameters(*[('en', s) for s in _ENGLISH], *[('de', s) for s in _GERMAN])
  def test_detokenize_round_trip(self, lang, text):
    v = vocab_lib.build([text], 'moses', lang=lang)
    self.assertEqual(v.decode(v.encode(text)), text)
    self.assertEqual(v.decode(v.encode(text), detokenize=False), ' '.join(v.tokenize(text)))

  def test_lowercase_tokens(self):
    v = vocab_lib.build(_ENGLISH, 'moses', lang='en', lowercase=True)
    self.assertEqual(v.tokenize("A Man's DOG."), ['a', 'man', "'s", 'dog', '.'])
    self.assertNotIn('Two', v.tokens)
    self.assertIn('two', v.tokens)

  def test_min_count_max_size_and_frequency_order(self):
    v = vocab_lib.build(['a b, b.', 'b, c'], 'moses', lang='en')
    self.assertEqual(v.tokens[4:], ['b', ',', '.', 'a', 'c'])  # b:3 ',':2, then ties alphabetically
    self.assertEqual(vocab_lib.build(['a b, b.', 'b, c'], 'moses', lang='en', min_count=2).tokens[4:], ['b', ','])
    self.assertEqual(vocab_lib.build(['a b, b.', 'b, c'], 'moses', lang='en', max_size=5).tokens[4:], ['b'])

  def test_language_is_stored(self):
    v = vocab_lib.build(_GERMAN, 'moses', lang='de')
    self.assertEqual(v.to_dict()['lang'], 'de')
    self.assertNotEqual(v, vocab_lib.build(_GERMAN, 'moses', lang='en'))
    self.assertNotEqual(v.sha256(), vocab_lib.build(_GERMAN, 'moses', lang='en').sha256())
    path = os.path.join(self.create_tempdir().full_path, 'vocab.src.json')
    v.save(path)
    self.assertEqual(vocab_lib.load(path).lang, 'de')

  @given(st.lists(st.sampled_from([w for w in _WORDS if w.isalpha()]), min_size=1, max_size=12))
  def test_known_words_never_unk(self, words):
    v = _build('moses')
    text = ' '.join(words)
    self.assertNotIn(UNK_ID, v.encode(text))
    self.assertEqual(v.decode(v.encode(text), detokenize=False), ' '.join(v.tokenize(text)))


class SentencePieceTest(parameterized.TestCase):
  @parameterized.parameters('unigram', 'bpe')
  def test_trains_the_requested_size(self, model_type):
    v = _build('sentencepiece', model_type=model_type)
    self.assertIsInstance(v, vocab_lib.SentencePieceVocab)
    self.assertIsInstance(v, vocab_lib.Vocab)
    self.assertLen(v, _SPM_SIZE)
    self.assertEqual(v.model_type, model_type)
    self.assertIn('▁', v.tokens)
    self.assertLen(_build('sentencepiece', model_type=model_type, max_size=50), 50)

  @parameterized.parameters('unigram', 'bpe')
  def test_training_is_deterministic(self, model_type):
    first = _build('sentencepiece', model_type=model_type)
    second = _build('sentencepiece', texts=iter(list(_SENTENCES)), model_type=model_type)  # one pass is enough
    self.assertEqual(first.model, second.model)  # byte-identical models
    self.assertEqual(first.sha256(), second.sha256())
    self.assertNotEqual(first.sha256(), _build('sentencepiece', model_type=model_type, max_size=50).sha256())

  def test_model_types_differ(self):
    self.assertNotEqual(_build('sentencepiece').sha256(), _build('sentencepiece', model_type='bpe').sha256())

  @parameterized.parameters('unigram', 'bpe')
  def test_pieces_and_ids(self, model_type):
    v = _build('sentencepiece', model_type=model_type)
    text = _SENTENCES[0]
    self.assertEqual(v.tokenize(text), [v.tokens[i] for i in v.encode(text)])
    self.assertEqual(''.join(v.tokenize(text)).replace('▁', ' ').strip(), text)
    self.assertEqual(v.decode(v.encode(text), detokenize=False), ' '.join(v.tokenize(text)))

  @parameterized.parameters('unigram', 'bpe')
  def test_special_token_text_and_unknown_characters(self, model_type):
    v = _build('sentencepiece', model_type=model_type)
    ids = v.encode('A man </s> runs<pad>.')
    self.assertEqual(ids.count(UNK_ID), 2)
    self.assertEqual(v.decode(ids), 'A man <unk> runs<unk>.')  # spacing around the literal is kept
    self.assertEqual(v.decode(v.encode('A 日本 dog')), 'A <unk> dog')  # characters never seen in training

  @parameterized.parameters('unigram', 'bpe')
  def test_special_token_text_is_unk_even_with_known_characters(self, model_type):
    texts = _SENTENCES + ['A sign says <s> and </s>, <pad> <unk>.', 'The <tag> is </tag> here.', 'pads unknown']
    v = vocab_lib.build(texts, 'sentencepiece', max_size=_SPM_SIZE, model_type=model_type)
    self.assertEqual(v.decode(v.encode('The <tag> is </tag>')), 'The <tag> is </tag>')  # '<', '/', '>' are known
    self.assertEqual(v.decode(v.encode('A <s> and </s>, <pad>')), 'A <unk> and <unk>, <unk>')
    self.assertEqual(v.encode('<pad><unk>'), v.encode('<pad>'))  # like unknown characters, a run is one UNK
    self.assertNotIn('</s>', v.tokens[4:])
    self.assertEqual(v.encode('a <A> </A>').count(UNK_ID), 0)  # only the exact literals are special
    lower = vocab_lib.build(texts, 'sentencepiece', max_size=_SPM_SIZE, model_type=model_type, lowercase=True)
    self.assertEqual(lower.encode('a </S>'), lower.encode('a </s>'))
    self.assertEqual(lower.encode('a </s>').count(UNK_ID), 1)

  @given(st.lists(st.sampled_from(_WORDS), min_size=0, max_size=12))
  def test_round_trip_of_new_sentences(self, words):
    v = _build('sentencepiece', model_type='bpe')
    text = ' '.join(words)
    self.assertNotIn(UNK_ID, v.encode(text))
    self.assertEqual(v.decode(v.encode(text)), text)  # identity normalisation: exact

  def test_max_size_is_required(self):
    for max_size in (0, -5):
      with self.assertRaisesRegex(ValueError, 'max_vocab_size'):
        vocab_lib.build(_SENTENCES, 'sentencepiece', max_size=max_size)

  def test_too_large_a_size_says_to_lower_it(self):
    with self.assertRaisesRegex(ValueError, r'(?s)lower data\.max_vocab_size.*Vocabulary size too high \(5000\)'):
      vocab_lib.build(_SENTENCES, 'sentencepiece', max_size=5000)

  def test_too_small_a_size_says_to_raise_it(self):
    with self.assertRaisesRegex(ValueError, r'raise data\.max_vocab_size'):
      vocab_lib.build(_SENTENCES, 'sentencepiece', max_size=10)

  def test_no_text(self):
    with self.assertRaisesRegex(ValueError, 'no training text'):
      vocab_lib.build(['', ''], 'sentencepiece', max_size=10)

  def test_unknown_model_type(self):
    with self.assertRaisesRegex(ValueError, 'unigram'):
      vocab_lib.build(_SENTENCES, 'sentencepiece', max_size=_SPM_SIZE, model_type='word')

  def test_model_is_in_the_json_file(self):
    v = _build('sentencepiece')
    path = os.path.join(self.create_tempdir().full_path, 'vocab.src.json')
    v.save(path)
    with open(path, encoding='utf-8') as f:
      d = json.load(f)
    self.assertEqual(base64.b64decode(d['model']), v.model)
    self.assertEqual((d['kind'], d['lowercase'], d['model_type']), ('sentencepiece', False, 'unigram'))
    d['model'] = base64.b64encode(b'not a model').decode()
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(d, f)
    with self.assertRaisesRegex(ValueError, 'vocab.src.json'):
      vocab_lib.load(path)

  def test_multi30k_first_lines(self):
    path = shared_data.require(self, 'multi30k', 'task1', 'raw', 'train.en.gz')
    with gzip.open(path, 'rt', encoding='utf-8') as f:
      texts = [line.rstrip('\n') for line, _ in zip(f, range(200))]
    for model_type in vocab_lib.SPM_MODEL_TYPES:
      v = vocab_lib.build(texts, 'sentencepiece', max_size=300, model_type=model_type)
      self.assertLen(v, 300)
      self.assertEqual([v.decode(v.encode(t)) for t in texts], texts)
      self.assertEqual(v.model, vocab_lib.build(texts, 'sentencepiece', max_size=300, model_type=model_type).model)


class TokenFileTest(parameterized.TestCase):
  def _write(self, lines) -> str:
    path = os.path.join(self.create_tempdir().full_path, 'vocab.en')
    with open(path, 'w', encoding='utf-8', newline='') as f:
      f.write(''.join(lines))
    return path

  def test_stanford_vocab_is_remapped(self):
    path = self._write(['<unk>\n', '<s>\n', '</s>\n', 'Rachel\n', ':\n', 'The\n', 'science\n', 'behind\n'])
    v = vocab_lib.from_token_file(path, 'word')
    self.assertEqual(v.tokens, [*SPECIAL_TOKENS, 'Rachel', ':', 'The', 'science', 'behind'])
    self.assertEqual(v.encode('The science behind Rachel'), [6, 7, 8, 4])  # file line k is id k + 1 here
    self.assertEqual(v.encode('<unk> </s> unseen'), [UNK_ID] * 3)
    self.assertEqual(v.decode([6, 7, EOS_ID, 8]), 'The science')

  def test_specials_anywhere_blank_lines_repeats_and_crlf(self):
    path = self._write(['a\r\n', '<pad>\r\n', '\r\n', 'b\r\n', '</s>\r\n', 'a\r\n', 'c'])
    self.assertEqual(vocab_lib.from_token_file(path, 'word').tokens, [*SPECIAL_TOKENS, 'a', 'b', 'c'])

  def test_lowercase_and_moses(self):
    path = self._write(['<unk>\n', 'The\n', 'the\n', "'s\n", 'man\n', '.\n'])
    v = vocab_lib.from_token_file(path, 'moses', lowercase=True, lang='en')
    self.assertEqual(v.tokens[4:], ['the', "'s", 'man', '.'])
    self.assertEqual((v.kind, v.lang, v.lowercase), ('moses', 'en', True))
    self.assertEqual(v.decode(v.encode("The man's.")), "the man's.")

  def test_not_for_sentencepiece(self):
    with self.assertRaisesRegex(ValueError, 'sentencepiece'):
      vocab_lib.from_token_file(self._write(['a\n']), 'sentencepiece')

  def test_the_stanford_iwslt15_file(self):
    path = shared_data.require(self, 'iwslt15_en_vi', 'vocab.en')
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
    self.assertEqual(lines[:3], ['<unk>', '<s>', '</s>'])
    v = vocab_lib.from_token_file(path, 'word')
    self.assertEqual(v.tokens[:4], list(SPECIAL_TOKENS))
    self.assertEqual(v.tokens[4:], [t for t in dict.fromkeys(lines) if t and t not in SPECIAL_TOKENS])
    self.assertEqual(v.tokens[4], lines[3])


if __name__ == '__main__':
  absltest.main()
