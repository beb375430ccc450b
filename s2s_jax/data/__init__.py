"""Data: token ids, vocabularies, generated tasks, TFDS builders and the grain input pipeline."""

# Every vocabulary in the project uses these ids (CONVENTIONS §4).
PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
SPECIAL_TOKENS = ('<pad>', '<unk>', '<s>', '</s>')
# The words of the digit datasets' transcripts and captions (fsdd, digits_captions).
DIGIT_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
