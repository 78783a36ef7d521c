// Helpers shared by dataset.cpp, tokenizer.cpp, subword.cpp and gpt2.cpp (not part of the public
// API).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ouroboros::detail {

// True for the bytes 10xxxxxx that continue a UTF-8 character.
inline bool is_continuation_byte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Bytes of the valid UTF-8 character at text[i] (RFC 3629: no overlong forms, no surrogates,
// nothing above U+10FFFF), or 0. sentencepiece turns anything else into U+FFFD;
// PCRE2 refuses it.
inline size_t valid_char_length(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[i + k]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return 1;
  size_t n;
  uint32_t cp, min;
  if ((lead & 0xE0) == 0xC0)
    n = 2, cp = lead & 0x1F, min = 0x80;
  else if ((lead & 0xF0) == 0xE0)
    n = 3, cp = lead & 0x0F, min = 0x800;
  else if ((lead & 0xF8) == 0xF0)
    n = 4, cp = lead & 0x07, min = 0x10000;
  else
    return 0;
  if (i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if (!is_continuation_byte(text[i + k])) return 0;
    cp = (cp << 6) | (byte(k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

// Throws DataError unless kind is byte, char, word, bpe, unigram or gpt2.
void check_tokenizer_kind(const std::string& kind);

// bpe and unigram: subword vocabularies learned by sentencepiece.
inline bool is_subword_kind(const std::string& kind) { return kind == "bpe" || kind == "unigram"; }

// Throws DataError unless a bpe or unigram tokenizer can be built here: sentencepiece is in the
// build and loads, and vocab_size is a usable request (> 0). Cheap; call it before reading text.
void check_subword_request(const std::string& kind, int64_t vocab_size);

struct SubwordApi;

// A trained sentencepiece model of kind bpe or unigram: its serialized proto, its pieces, and
// encoding. Immutable, so tokenizers share it.
class SubwordModel {
 public:
  // Trains on the training text (throws DataError for a vocabulary size the text cannot give).
  static std::shared_ptr<const SubwordModel> train(const std::string& kind, const std::string& text,
                                                   int64_t vocab_size);
  // Restores from a serialized model (throws DataError when it does not parse).
  static std::shared_ptr<const SubwordModel> load(const std::string& kind,
                                                  const std::string& proto);
  ~SubwordModel();
  SubwordModel(const SubwordModel&) = delete;
  SubwordModel& operator=(const SubwordModel&) = delete;

  const std::string& proto() const { return proto_; }
  // The pieces by id, as sentencepiece spells them (U+2581 for a space, "<0x41>" for a byte).
  const std::vector<std::string>& pieces() const { return pieces_; }
  // The text each id stands for: the piece with U+2581 as a space, a byte piece's byte, U+FFFD for
  // <unk>, nothing for control pieces. Decoding is their concatenation.
  const std::vector<std::string>& surfaces() const { return surfaces_; }
  int32_t unk_id() const { return unk_id_; }
  std::vector<int32_t> encode(const std::string& text) const;

 private:
  SubwordModel(const SubwordApi* api, void* handle, std::string proto);

  const SubwordApi* api_;
  void* handle_;
  std::string proto_;
  std::vector<std::string> pieces_, surfaces_;
  int32_t unk_id_ = -1, newline_id_ = -1;
  std::array<int32_t, 256> byte_ids_{};
};

}  // namespace ouroboros::detail
