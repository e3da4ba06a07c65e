#!/usr/bin/env python3
"""Writes the tiny tokenizer folders used by tests/SparseTune.Tests/Tokenization/TokenizerTests.cs.

Standard library only; run from this folder: python3 generate.py
Everything here is written by hand (no training, no downloads); the outputs are committed.
"""
import json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))

def write(rel, data, binary=False):
    path = os.path.join(HERE, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if binary else "w", encoding=None if binary else "utf-8", newline=None if binary else "\n") as f:
        f.write(data)

def dump(obj):
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"

# ---------------------------------------------------------------- byte-level BPE (GPT-2 / RoBERTa)
def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table, in GPT-2's vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]

BYTE_SYMBOLS = [c for _, c in bytes_to_unicode()]  # index == GPT-2 id of that byte symbol

# Hand-written merges, highest priority first. "Ġ" (U+0120) is the byte-level symbol for a space, "Ċ" (U+010A) for "\n".
MERGES = [
    "Ġ t", "h e", "Ġt he", "i n", "in g", "l l", "e ll", "H ell", "Hell o", "o r",
    "Ġ w", "Ġw or", "Ġwor l", "Ġworl d", "Ġ p", "l a", "Ġp la", "Ġpla y", "Ġplay ing", "a t",
    "Ġ c", "Ġc at", "Ġ s", "Ġs at", "Ġ o", "Ġo n", "Ġ m", "Ġm at", "' s", "t he",
    "Ġ d", "o g", "Ġd og", "Ċ Ċ", "Ġ Ġ", "e r",
]

def bpe_vocab(prefix_tokens, suffix_tokens):
    vocab = {}
    for t in prefix_tokens + BYTE_SYMBOLS + [m.replace(" ", "") for m in MERGES] + suffix_tokens:
        assert t not in vocab, t
        vocab[t] = len(vocab)
    return vocab

gpt2_vocab = bpe_vocab([], ["<|endoftext|>"])
gpt2_merges = "#version: 0.2\n" + "\n".join(MERGES) + "\n"
write("gpt2-bpe/vocab.json", dump(gpt2_vocab))
write("gpt2-bpe/merges.txt", gpt2_merges)
write("gpt2-bpe/config.json", dump({"model_type": "gpt2", "vocab_size": len(gpt2_vocab)}))

roberta_vocab = bpe_vocab(["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"])
write("roberta-bpe/vocab.json", dump(roberta_vocab))
write("roberta-bpe/merges.txt", gpt2_merges)
write("roberta-bpe/config.json", dump({"model_type": "roberta", "vocab_size": len(roberta_vocab), "pad_token_id": 1}))

def byte_level_tokenizer_json(vocab, merges, added, post_processor):
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": vocab[t], "content": t, "single_word": False, "lstrip": t == "<mask>", "rstrip": False,
             "normalized": False, "special": True} for t in added],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }

# GPT-2 flavour: merges as "a b" strings (tokenizers < 0.20 format).
write("gpt2-tokenizer-json/tokenizer.json", dump(byte_level_tokenizer_json(
    gpt2_vocab, MERGES, ["<|endoftext|>"],
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True})))
# RoBERTa flavour: merges as ["a", "b"] pairs (tokenizers >= 0.20 format) and a RobertaProcessing post-processor.
write("roberta-tokenizer-json/tokenizer.json", dump(byte_level_tokenizer_json(
    roberta_vocab, [m.split(" ") for m in MERGES], ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0], "trim_offsets": True, "add_prefix_space": False})))

# ---------------------------------------------------------------- WordPiece (BERT uncased)
WORDPIECE = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "cat", "sat", "on", "mat", "play", "##ing", "##ed", "##s", "hello",
    "world", ".", ",", "!", "?", "un", "##aff", "##able", "run", "##ning",
    "dog", "a", "is", "it", "what", "'", "s", "we", "are", "you",
    "good", "day", "to", "##day", "new", "##er", "##est", "love", "##ly", "time",
]
bert_vocab = {t: i for i, t in enumerate(WORDPIECE)}
write("bert-wordpiece/vocab.txt", "\n".join(WORDPIECE) + "\n")
write("bert-wordpiece/tokenizer_config.json", dump({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
write("bert-wordpiece/config.json", dump({"model_type": "bert", "vocab_size": len(WORDPIECE)}))

write("bert-tokenizer-json/tokenizer.json", dump({
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [
        {"id": bert_vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True} for t in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]],
    "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                   "strip_accents": None, "lowercase": True},
    "pre_tokenizer": {"type": "BertPreTokenizer"},
    "post_processor": {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
        "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                           "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}},
    },
    "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
    "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
              "max_input_chars_per_word": 100, "vocab": bert_vocab},
}))

# ---------------------------------------------------------------- SentencePiece (llama-style BPE, byte fallback)
# ModelProto written field by field (sentencepiece_model.proto):
#   ModelProto:      pieces=1 (SentencePiece), trainer_spec=2, normalizer_spec=3
#   SentencePiece:   piece=1 string, score=2 float, type=3 enum (1 NORMAL, 2 UNKNOWN, 3 CONTROL, 6 BYTE)
#   TrainerSpec:     model_type=3 (2 = BPE), vocab_size=4, byte_fallback=35, unk_id=40, bos_id=41, eos_id=42, pad_id=43
#   NormalizerSpec:  name=1, add_dummy_prefix=3, remove_extra_whitespaces=4, escape_whitespaces=5
def varint(v):
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def key(field, wire):
    return varint((field << 3) | wire)

def f_varint(field, v):
    return key(field, 0) + varint(v)

def f_bytes(field, b):
    return key(field, 2) + varint(len(b)) + b

def f_str(field, s):
    return f_bytes(field, s.encode("utf-8"))

def f_float(field, x):
    return key(field, 5) + struct.pack("<f", x)

# Merged pieces, best first: with the BPE model, SentencePiece repeatedly joins the adjacent pair whose
# concatenation is a piece with the highest score.
SP_MERGED = [
    "▁t", "he", "▁the", "in", "ing", "ll", "ell", "▁H", "▁Hell", "▁Hello",
    "or", "▁w", "▁wor", "▁worl", "▁world", "at", "▁c", "▁cat", "▁s", "▁sat",
    "▁o", "▁on", "▁m", "▁mat", "▁p", "la", "▁pla", "▁play", "▁playing", "▁d",
    "og", "▁dog", "er", "▁a", "is", "▁is",
]
SP_CHARS = ["▁", "e", "t", "a", "o", "n", "i", "s", "h", "l", "r", "d", "g", "c", "m", "p", "w", "y",
            "H", "T", ".", ",", "!"]
sp_pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
sp_pieces += [("<0x%02X>" % b, 0.0, 6) for b in range(256)]
sp_pieces += [(p, -float(i), 1) for i, p in enumerate(SP_MERGED)]
sp_pieces += [(p, -float(len(SP_MERGED) + i), 1) for i, p in enumerate(SP_CHARS)]
assert len({p for p, _, _ in sp_pieces}) == len(sp_pieces)

model = b""
for piece, score, typ in sp_pieces:
    model += f_bytes(1, f_str(1, piece) + f_float(2, score) + f_varint(3, typ))
trainer = (f_varint(3, 2) + f_varint(4, len(sp_pieces)) + f_varint(35, 1)
           + f_varint(40, 0) + f_varint(41, 1) + f_varint(42, 2) + f_varint(43, -1))
model += f_bytes(2, trainer)
model += f_bytes(3, f_str(1, "identity") + f_varint(3, 1) + f_varint(4, 0) + f_varint(5, 1))
write("llama-sentencepiece/tokenizer.model", model, binary=True)
write("llama-sentencepiece/tokenizer_config.json", dump({"add_bos_token": True, "add_eos_token": False,
    "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
    "tokenizer_class": "LlamaTokenizer"}))
write("llama-sentencepiece/config.json", dump({"model_type": "llama", "vocab_size": len(sp_pieces)}))

print("gpt2 vocab", len(gpt2_vocab), "roberta vocab", len(roberta_vocab), "wordpiece", len(WORDPIECE),
      "sentencepiece", len(sp_pieces))
