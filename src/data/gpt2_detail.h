// GPT-2's byte-level BPE, the model behind the gpt2 tokenizer: read from Hugging Face's files
// (gpt2_load.cpp) and applied exactly as GPT-2 and the `tokenizers` library apply it (gpt2.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ouroboros::detail {

// A token of tokenizer.json's added_tokens ("<|endoftext|>"): found in text before pre-tokenization
// and encoded as its id, as `tokenizers` does.
struct Gpt2AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = true;
  bool normalized = false;
};

struct WordCache;

// The character GPT-2's bytes_to_unicode gives byte b, as UTF-8: printable Latin-1 bytes stand for
// themselves, the others for U+0100 onwards ("Ġ" is the space).
std::string gpt2_byte_char(unsigned char b);

class Gpt2Bpe {
 public:
  using Merge = std::pair<std::string, std::string>;
  // vocab: model token -> id; merges by rank; added tokens (ids may repeat a vocab entry's). The
  // ids together must be 0..n-1. Throws DataError naming `source` for anything that does not fit.
  Gpt2Bpe(const std::unordered_map<std::string, int32_t>& vocab, std::vector<Merge> merges,
          std::vector<Gpt2AddedToken> added, const std::string& source);
  ~Gpt2Bpe();
  Gpt2Bpe(const Gpt2Bpe&) = delete;
  Gpt2Bpe& operator=(const Gpt2Bpe&) = delete;

  // The tokens by id, as vocab.json spells them.
  const std::vector<std::string>& tokens() const { return tokens_; }
  // The bytes each id decodes to; decoding is their concatenation.
  const std::vector<std::string>& surfaces() const { return surfaces_; }
  // A tokenizer.json that `tokenizers` loads and gpt2_from_tokenizer_json reads back to this model.
  const std::string& tokenizer_json() const { return tokenizer_json_; }
  std::vector<int32_t> encode(std::string_view text) const;

 private:
  struct Pattern;
  // Compiles GPT-2's pattern (gpt2.cpp).
  void init_pattern();
  // Fills surfaces_ from tokens_.
  void index_surfaces();
  // Appends the ids of text without added tokens: pre-tokens by GPT-2's pattern, each merged.
  void encode_plain(std::string_view text, WordCache& cache, std::vector<int32_t>& ids) const;
  // Appends the ids of one pre-token, merging its bytes' pairs lowest rank first.
  void merge_word(std::string_view word, std::vector<int32_t>& ids) const;
  // A tokenizer.json of this model with these merges (gpt2_load.cpp).
  std::string serialize(const std::vector<Merge>& merges) const;

  std::vector<std::string> tokens_, surfaces_;
  std::unordered_map<std::string, int32_t> model_vocab_;
  std::vector<Gpt2AddedToken> added_;
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_ranks_;
  std::array<int32_t, 256> byte_ids_{};
  std::shared_ptr<const Pattern> pattern_;  // shared: its type is complete in gpt2.cpp only
  std::string tokenizer_json_;
};

// Reads a tokenizer.json's text; refuses, in one line, a tokenizer that is not byte-level BPE.
std::shared_ptr<const Gpt2Bpe> gpt2_from_tokenizer_json(const std::string& text,
                                                        const std::string& source);
// Reads GPT-2's original pair of files, vocab.json and merges.txt.
std::shared_ptr<const Gpt2Bpe> gpt2_from_vocab_merges(const std::string& vocab_json,
                                                      const std::string& merges_txt,
                                                      const std::string& source);
// A tokenizer.json file, or a directory holding one or vocab.json + merges.txt.
std::shared_ptr<const Gpt2Bpe> load_gpt2(const std::string& path);

}  // namespace ouroboros::detail
