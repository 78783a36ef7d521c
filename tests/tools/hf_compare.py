"""Loads a Hugging Face export with transformers and compares it with ouroboros' own figures.

usage: hf_compare.py EXPORT_DIR REFERENCE.pt
REFERENCE.pt (written by tests/tools/export_test.cpp) holds ids [N, T], ouroboros' logits
[N, T, V], sample_ids [S] and text (the UTF-8 bytes of a text to encode). Prints one JSON object:
the relative logit difference, whether lm_head is tied to wte, the decoded sample (as hex: the
test compares bytes) and the ids transformers' tokenizer gives the text.
"""
import json
import sys

import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

export_dir, reference = sys.argv[1], sys.argv[2]
ref = torch.load(reference)
model = GPT2LMHeadModel.from_pretrained(export_dir).eval()
with torch.no_grad():
    logits = model(ref["ids"]).logits
rel = ((logits - ref["logits"]).abs().max() / ref["logits"].abs().max()).item()
tied = model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
tok = PreTrainedTokenizerFast.from_pretrained(export_dir)
decoded = tok.decode(ref["sample_ids"].tolist())
text = bytes(ref["text"].numpy()).decode("utf-8")
print(json.dumps({"rel": rel, "tied": tied, "decoded": decoded.encode("utf-8").hex(),
                  "ids": tok.encode(text)}))
