// Corpora, train/valid/test splits, training batches and evaluation windows.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "ouroboros/data/tokenizer.h"

namespace ouroboros {

// The three raw text splits of a corpus, before tokenization.
struct TextSplits {
  std::string train, valid, test;
  std::string description;  // one line for the log, e.g. "text: 3 files, 90/5/5 split, 2.7 MB"
};

// Reads a corpus. format: text | enwik8 | text8 | wikitext103 | fortunes | auto.
// "auto" picks fortunes for the path "fortunes" when no such file exists (the default),
// wikitext103 for a directory holding wiki.train.tokens, else text.
// Throws DataError for a missing path or an empty corpus.
TextSplits load_text_splits(const std::string& path, const std::string& format);
// The tokenizer kind a format uses by default: enwik8 -> byte, text8 -> char,
// wikitext103 -> word, text and fortunes -> char.
std::string default_tokenizer(const std::string& format);
// Cuts text at 90% and 95% of its bytes (moved forward to the next UTF-8 character start).
TextSplits split_90_5_5(const std::string& text);

// A tokenized corpus ready for training and evaluation.
struct Dataset {
  Tokenizer tokenizer;
  std::vector<int32_t> train, valid, test;
  std::string description;
  const std::vector<int32_t>& split(const std::string& name) const;  // train | valid | test
};
// vocab_size: the number of pieces a bpe or unigram tokenizer learns (model.vocab_size, > 0
// there); the other tokenizers take their size from the text and ignore it. tokenizer_file: the
// gpt2 tokenizer's file (Tokenizer::from_file), which tokenizer_kind "auto" then means; other
// kinds refuse one.
Dataset load_dataset(const std::string& path, const std::string& format,
                     const std::string& tokenizer_kind, int64_t vocab_size = 0,
                     const std::string& tokenizer_file = "");
// Uses an existing tokenizer (from a checkpoint) instead of building one.
Dataset load_dataset(const std::string& path, const std::string& format, const Tokenizer& tok);

// Deterministic 64-bit generator (splitmix64); its whole state is one integer, so it checkpoints.
struct SplitMix64 {
  uint64_t state;
  uint64_t next();
};

// Random training windows: x = s[i, i+T), y = s[i+1, i+T+1) with i uniform in [0, N-T-1].
class BatchSampler {
 public:
  BatchSampler(const std::vector<int32_t>& tokens, int64_t block_size, int64_t batch_size,
               uint64_t seed);
  // x, y: [B, T] int64
  std::pair<torch::Tensor, torch::Tensor> next();
  uint64_t state() const { return rng_.state; }
  void set_state(uint64_t s) { rng_.state = s; }

 private:
  const std::vector<int32_t>& tokens_;
  int64_t block_size_, batch_size_;
  SplitMix64 rng_;
};

// Evaluation windows j = 0, 1, ...: inputs x[jT, jT+T), targets x[jT+1, jT+T+1), while
// jT+T+1 <= N. Returns the number of windows.
int64_t num_eval_windows(int64_t num_tokens, int64_t block_size);
// Windows [first, first+count) stacked as x, y: [count, T] int64.
std::pair<torch::Tensor, torch::Tensor> eval_windows(const std::vector<int32_t>& tokens,
                                                     int64_t block_size, int64_t first,
                                                     int64_t count);

}  // namespace ouroboros
