"""Reference encodings for tests/data/gpt2_test.cpp, from Hugging Face's `tokenizers`.

train DIR: trains a byte-level BPE (GPT-2's kind) on a multilingual text made from the words of
  DIR/texts.json, saves it as DIR/tokenizer.json and as DIR/pair/vocab.json + merges.txt, and
  writes DIR/expected.json: each text's ids and their decoding, the vocabulary size and the number
  of merges.
encode TOKENIZER_JSON TEXTS_JSON OUT_JSON: the same for an existing tokenizer.json.
"""
import json
import os
import random
import sys

from tokenizers import ByteLevelBPETokenizer, Tokenizer


def reference(tok, texts):
    ids = [tok.encode(t).ids for t in texts]
    return {
        "ids": ids,
        "decoded": [tok.decode(i, skip_special_tokens=False) for i in ids],
        "vocab_size": tok.get_vocab_size(),
    }


def train(d):
    with open(os.path.join(d, "texts.json"), encoding="utf-8") as f:
        texts = json.load(f)
    rng = random.Random(5)
    words = [w for t in texts for w in t.split(" ") if w]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(4000)]
    lines += texts * 3
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(lines, vocab_size=1000, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tok.save(os.path.join(d, "tokenizer.json"))
    os.makedirs(os.path.join(d, "pair"), exist_ok=True)
    tok.save_model(os.path.join(d, "pair"))
    ref = reference(Tokenizer.from_file(os.path.join(d, "tokenizer.json")), texts)
    with open(os.path.join(d, "tokenizer.json"), encoding="utf-8") as f:
        ref["merges"] = len(json.load(f)["model"]["merges"])
    with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f)


def encode(tokenizer_json, texts_json, out_json):
    with open(texts_json, encoding="utf-8") as f:
        texts = json.load(f)
    with open(out_json, "w", encoding="utf-8") as f:
        json.dump(reference(Tokenizer.from_file(tokenizer_json), texts), f)


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(sys.argv[2])
    else:
        encode(*sys.argv[2:5])
