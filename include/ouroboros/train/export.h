// Export of a checkpoint to the Hugging Face layout: a directory that
// transformers.GPT2LMHeadModel.from_pretrained loads, with the tokenizer in the `tokenizers` format
// where the vocabulary can be expressed in it.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ouroboros/data/tokenizer.h"
#include "ouroboros/train/checkpoint.h"

namespace ouroboros {

struct ExportResult {
  std::vector<std::string> files;  // written, relative to the directory
  std::string tokenizer_note;      // how the tokenizer was written, or why it was not
};

// Writes config.json, model.safetensors (GPT-2 names, Conv1D layout: the transpose of
// torch.nn.Linear's) and the tokenizer files (tokenizer.json, tokenizer_config.json) into dir,
// which must be empty or absent unless overwrite. Throws ConfigError for a model without a GPT-2
// form.
ExportResult export_huggingface(const Checkpoint& ck, const std::string& dir, bool overwrite);

// The tokenizer as a `tokenizers` tokenizer.json object: byte vocabularies as byte-level BPE
// without merges (ids = byte values), char vocabularies as BPE without merges over code points,
// word vocabularies as WordLevel with line ends read as <eos>, gpt2 as the tokenizer.json it
// keeps. Null for kinds it cannot express.
nlohmann::json hf_tokenizer_json(const Tokenizer& tok);

// A safetensors file of float32 tensors under the given names, in that order.
void write_safetensors(const std::string& path, const std::vector<std::string>& names,
                       const std::vector<Tensor>& tensors);

}  // namespace ouroboros
