"""WordPiece tokenisation with aggregated-word slots (docs/interfaces.md §2).

Built on the Rust `tokenizers` library directly (fast, thread-parallel `encode_batch`).
`transformers.BertTokenizerFast(vocab_file=...)` is deliberately not used: in transformers 5
it silently ignores the file.

    tok = load_tokenizer("path/to/vocab.txt" | "tokenizer.json" | model dir | cached hub name,
                         max_length=112, lower_case=False)
    tok.encode_batch(["no acute process", ...])
    # {"input_ids", "attention_mask", "word_ids"}: int32 [N, max_length]

Word slots: the pre-tokenizer's words (BERT basic tokenisation: whitespace and punctuation
splits) of the kept tokens are numbered 0, 1, … in order; every piece of a word carries its
word's slot, `[SEP]` carries the slot after the last kept word, `[CLS]` and `[PAD]` carry -1.
With `L = max_length` the slots lie in `[0, L-1)`: the `L-1` slot axis of `word_emb`.
`word_starts` / `whitespace_word_slots` map characters / whitespace words of the text to
slots, which is how the input pipeline points regions at the words of their sentences.
"""
from __future__ import annotations

import collections
import heapq
import logging
import os
from typing import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_PREFIX = "##"


class Tokenizer:
  """A BERT-style WordPiece tokenizer producing fixed-length ids, masks and word slots.

  Attributes:
    max_length: `L`, the padded/truncated length including `[CLS]` and `[SEP]`.
    vocab_size: number of ids (the text model's embedding table needs at least this many).
    pad_id, cls_id, sep_id, unk_id: ids of the special tokens.
  """

  def __init__(self, backend: tokenizers.Tokenizer, max_length: int, source: str = ""):
    if max_length < 2:
      raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
    self.source = source
    self.max_length = int(max_length)
    vocab = backend.get_vocab(with_added_tokens=True)
    for token in ("[PAD]", "[CLS]", "[SEP]", "[UNK]"):
      if token not in vocab:
        raise ValueError(f"tokenizer {source!r}: the vocabulary has no {token} token "
                         "(a BERT-style WordPiece vocabulary is expected)")
    self.pad_id, self.cls_id = vocab["[PAD]"], vocab["[CLS]"]
    self.sep_id, self.unk_id = vocab["[SEP]"], vocab["[UNK]"]
    self.vocab_size = int(backend.get_vocab_size(with_added_tokens=True))
    backend = tokenizers.Tokenizer.from_str(backend.to_str())  # a private copy we may configure
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)])
    backend.enable_truncation(max_length=self.max_length)
    backend.enable_padding(length=self.max_length, pad_id=self.pad_id, pad_token="[PAD]")
    self._backend = backend

  @property
  def backend(self) -> tokenizers.Tokenizer:
    """The configured `tokenizers.Tokenizer` (truncation + padding to `max_length`)."""
    return self._backend

  def id_to_token(self, token_id: int) -> str | None:
    return self._backend.id_to_token(int(token_id))

  def tokenize(self, text: str) -> list[str]:
    """The word pieces of `text` (no special tokens, no truncation)."""
    return self._backend.encode(text, add_special_tokens=False).tokens

  def _encode(self, texts: Sequence[str]) -> list:
    if isinstance(texts, str):
      raise TypeError("encode_batch expects a sequence of strings, got one string")
    texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]
    return self._backend.encode_batch(texts)

  def encode_batch(self, texts: Sequence[str], return_word_starts: bool = False
                   ) -> dict[str, np.ndarray]:
    """Tokenise a batch of texts.

    Args:
      texts: `N` strings (bytes are decoded as UTF-8).
      return_word_starts: also return `word_starts`.
    Returns:
      dict with `input_ids`, `attention_mask`, `word_ids`: int32 `[N, L]`
      (`[CLS] … [SEP] [PAD]…`, truncated to `L`); with `return_word_starts`, also
      `word_starts` int32 `[N, L-1]`: the character offset in the text where slot `w`'s word
      begins, -1 for the `[SEP]` slot and unused slots.
    """
    encodings = self._encode(texts)
    n, length = len(encodings), self.max_length
    if n == 0:
      empty = np.zeros((0, length), np.int32)
      out = {"input_ids": empty, "attention_mask": empty, "word_ids": empty}
      if return_word_starts:
        out["word_starts"] = np.zeros((0, length - 1), np.int32)
      return out
    ids = np.asarray([e.ids for e in encodings], np.int32)
    mask = np.asarray([e.attention_mask for e in encodings], np.int32)
    raw_words = np.asarray([[-1 if w is None else w for w in e.word_ids] for e in encodings],
                           np.int64)
    # A new word starts where the pre-tokenizer word index changes (special tokens: -1).
    prev = np.concatenate([np.full((n, 1), -1, np.int64), raw_words[:, :-1]], axis=1)
    starts = (raw_words >= 0) & (raw_words != prev)
    slot = np.cumsum(starts, axis=1) - 1
    word_ids = np.where(raw_words >= 0, slot, -1)
    num_words = starts.sum(axis=1)
    sep_pos = mask.sum(axis=1) - 1                      # [SEP] is the last real token
    word_ids[np.arange(n), sep_pos] = num_words
    out = {"input_ids": ids, "attention_mask": mask, "word_ids": word_ids.astype(np.int32)}
    if return_word_starts:
      offsets = np.asarray([[o[0] for o in e.offsets] for e in encodings], np.int64)
      word_starts = np.full((n, length - 1), -1, np.int32)
      rows, cols = np.nonzero(starts)
      word_starts[rows, slot[rows, cols]] = offsets[rows, cols]
      out["word_starts"] = word_starts
    return out

  def whitespace_word_slots(self, texts: Sequence[str]) -> list[np.ndarray]:
    """For each text, the slot of each of its whitespace-separated words.

    Returns:
      a list of `N` int32 arrays `[W_i]` (`W_i = len(texts[i].split())`): the slot of the
      word's first piece, or -1 when the word was truncated away (or produced no token).
    """
    texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]
    starts = self.encode_batch(texts, return_word_starts=True)["word_starts"]
    result = []
    for text, row in zip(texts, starts):
      char_starts, pos = [], 0
      for word in text.split():
        pos = text.index(word, pos)
        char_starts.append(pos)
        pos += len(word)
      lookup = {int(c): s for s, c in enumerate(row) if c >= 0}
      result.append(np.asarray([lookup.get(c, -1) for c in char_starts], np.int32))
    return result


def _bert_backend(vocab_path: str, lower_case: bool) -> tokenizers.Tokenizer:
  """A BERT WordPiece pipeline (normaliser, pre-tokenizer, model) over a vocab.txt."""
  vocab = {}
  with open(vocab_path, encoding="utf-8") as f:
    for line in f:
      token = line.rstrip("\n").rstrip("\r")
      if token and token not in vocab:
        vocab[token] = len(vocab)
  if not vocab:
    raise ValueError(f"{vocab_path}: empty vocabulary file (one token per line expected)")
  backend = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]",
                                                  max_input_chars_per_word=100))
  backend.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lower_case)
  backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  backend.decoder = decoders.WordPiece(prefix=_PREFIX)
  return backend


def _from_dir(path: str, lower_case: bool) -> tuple[tokenizers.Tokenizer, str]:
  tok_json = os.path.join(path, "tokenizer.json")
  vocab_txt = os.path.join(path, "vocab.txt")
  if os.path.isfile(tok_json):
    return tokenizers.Tokenizer.from_file(tok_json), tok_json
  if os.path.isfile(vocab_txt):
    return _bert_backend(vocab_txt, lower_case), vocab_txt
  raise FileNotFoundError(f"tokenizer directory {path} has neither tokenizer.json nor vocab.txt")


def load_tokenizer(path_or_name: str, max_length: int, lower_case: bool) -> Tokenizer:
  """Load a WordPiece tokenizer, offline.

  Args:
    path_or_name: a `vocab.txt` (BERT normaliser/pre-tokenizer built around it), a
      `tokenizer.json`, a local model directory holding either, or a Hugging Face hub name
      already in the local cache (nothing is downloaded).
    max_length: `L`, padded/truncated length including `[CLS]`/`[SEP]`.
    lower_case: lower-case in the normaliser; applies when building from a vocab.txt (a
      tokenizer.json keeps its own normaliser).
  Returns:
    a `Tokenizer`.
  """
  path = os.path.expanduser(str(path_or_name))
  if not path:
    raise ValueError("load_tokenizer: empty tokenizer path/name")
  if os.path.isdir(path):
    backend, source = _from_dir(path, lower_case)
  elif os.path.isfile(path):
    if path.endswith(".json"):
      try:
        backend = tokenizers.Tokenizer.from_file(path)
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f"{path}: not a tokenizers tokenizer.json ({e})") from e
    else:
      backend = _bert_backend(path, lower_case)
    source = path
  elif path.startswith(("/", ".", "~")) or path.endswith((".txt", ".json")):
    raise FileNotFoundError(f"tokenizer file or directory {path} does not exist")
  else:
    try:
      import huggingface_hub  # pylint: disable=import-outside-toplevel
      snapshot = huggingface_hub.snapshot_download(repo_id=path, local_files_only=True)
    except Exception as e:  # pylint: disable=broad-except
      raise FileNotFoundError(
          f"tokenizer {path_or_name!r} is neither a local file/directory nor a hub model in the "
          f"local Hugging Face cache (offline; nothing is downloaded). Download it once with "
          f"`huggingface-cli download {path_or_name}` or pass a vocab.txt / model directory. "
          f"({type(e).__name__}: {e})") from e
    backend, source = _from_dir(snapshot, lower_case)
  normalizer = backend.normalizer
  file_lower = getattr(normalizer, "lowercase", None)
  if file_lower is not None and bool(file_lower) != bool(lower_case):
    logger.warning("tokenizer %s lower-cases=%s but lower_case=%s was asked; keeping the file's "
                   "normaliser", source, file_lower, lower_case)
  return Tokenizer(backend, max_length, source=source)


def _pretokenized_words(texts: Iterable[str], lowercase: bool) -> collections.Counter:
  backend = _bert_backend_from_vocab({"[UNK]": 0}, lowercase)
  counts: collections.Counter = collections.Counter()
  for text in texts:
    text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    normalized = backend.normalizer.normalize_str(text)
    counts.update(w for w, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))
  return counts


def _bert_backend_from_vocab(vocab: dict, lowercase: bool) -> tokenizers.Tokenizer:
  backend = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
  backend.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
  backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  return backend


def build_wordpiece_vocab(texts: Iterable[str], vocab_size: int, path: str,
                          lowercase: bool = True) -> str:
  """Train a WordPiece vocabulary on `texts` and write it as a vocab.txt.

  The words are those of the BERT normaliser + pre-tokenizer (the `tokenizers` components
  `load_tokenizer` uses). The vocabulary is learnt like the `tokenizers` WordPiece trainer
  (BPE merges over the word counts, continuation pieces prefixed `##`, the character
  alphabet first) but with a fixed tie-break — highest pair count, then the
  lexicographically smallest pair — because the Rust trainer's order of equal-count merges
  follows hash-map iteration and changes from run to run. The result is a pure function of
  the text multiset.

  Args:
    texts: training texts (e.g. the train split's captions).
    vocab_size: target size including the 5 special tokens; fewer tokens are written if the
      corpus runs out of merges.
    path: the vocab.txt to write (parent directories are created).
    lowercase: lower-case before counting (must match `load_tokenizer(lower_case=...)`).
  Returns:
    `path`.
  """
  counts = _pretokenized_words(texts, lowercase)
  if not counts:
    raise ValueError(f"build_wordpiece_vocab({path}): no words in the training texts")
  words = []   # [symbols, count]
  alphabet: collections.Counter = collections.Counter()
  for word in sorted(counts):
    symbols = [word[0]] + [_PREFIX + c for c in word[1:]]
    words.append([symbols, counts[word]])
    for s in symbols:
      alphabet[s] += counts[word]
  vocab = list(SPECIAL_TOKENS) + sorted(alphabet)
  if len(vocab) > vocab_size:
    raise ValueError(f"build_wordpiece_vocab: vocab_size={vocab_size} is smaller than the "
                     f"{len(vocab)} special tokens + characters of the corpus")
  known = set(vocab)
  pair_counts: collections.Counter = collections.Counter()
  where: dict = collections.defaultdict(set)
  for wi, (symbols, count) in enumerate(words):
    for a, b in zip(symbols, symbols[1:]):
      pair_counts[(a, b)] += count
      where[(a, b)].add(wi)
  heap = [(-c, p) for p, c in pair_counts.items()]
  heapq.heapify(heap)
  while len(vocab) < vocab_size and heap:
    neg, pair = heapq.heappop(heap)
    if pair_counts.get(pair, 0) != -neg or -neg <= 0:
      continue  # stale entry
    a, b = pair
    merged = a + (b[len(_PREFIX):] if b.startswith(_PREFIX) else b)
    if merged not in known:
      known.add(merged)
      vocab.append(merged)
    changed = collections.Counter()
    for wi in sorted(where.pop(pair, ())):
      symbols, count = words[wi]
      for x, y in zip(symbols, symbols[1:]):
        changed[(x, y)] -= count
      new, i = [], 0
      while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
          new.append(merged)
          i += 2
        else:
          new.append(symbols[i])
          i += 1
      words[wi][0] = new
      for x, y in zip(new, new[1:]):
        changed[(x, y)] += count
        where[(x, y)].add(wi)
    for p, delta in changed.items():
      if delta:
        pair_counts[p] += delta
        heapq.heappush(heap, (-pair_counts[p], p))
    pair_counts.pop(pair, None)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  os.replace(tmp, path)
  logger.info("wrote a %d-token WordPiece vocabulary to %s", len(vocab), path)
  return path


def vocab_from_file(path: str) -> list[str]:
  """The tokens of a vocab.txt in id order."""
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.rstrip("\n")]


__all__ = ["Tokenizer", "load_tokenizer", "build_wordpiece_vocab", "vocab_from_file",
           "SPECIAL_TOKENS"]
