// Byte, char (UTF-8 code points) and word (whitespace, <eos> per line) tokenizers, and the
// Tokenizer face of the bpe and unigram ones (subword.cpp) and of gpt2 (gpt2.cpp): vocabularies
// built from training text, read from a file or restored from a checkpoint, encoding and decoding.
#include "ouroboros/data/tokenizer.h"

#include <algorithm>
#include <string_view>
#include <unordered_set>

#include "data_detail.h"
#include "gpt2_detail.h"
#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {

constexpr const char* kUnk = "<unk>";
constexpr const char* kEos = "<eos>";
constexpr const char* kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD, how char decodes <unk>

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

// Bytes in the UTF-8 character starting at text[pos]. A byte that does not start a complete
// sequence counts as one symbol on its own, so any byte string tokenizes and round-trips.
size_t utf8_char_length(std::string_view text, size_t pos) {
  unsigned char lead = static_cast<unsigned char>(text[pos]);
  size_t len = lead < 0x80           ? 1
               : (lead >> 5) == 0x6  ? 2
               : (lead >> 4) == 0xE  ? 3
               : (lead >> 3) == 0x1E ? 4
                                     : 1;
  if (pos + len > text.size()) return 1;
  for (size_t k = 1; k < len; ++k)
    if (!detail::is_continuation_byte(text[pos + k])) return 1;
  return len;
}

// Calls emit(word) for each whitespace-separated word and emit("<eos>") at the end of each line,
// WikiText style; a last line without '\n' still ends in <eos>.
template <typename Emit>
void for_each_word(const std::string& text, Emit&& emit) {
  const std::string_view eos(kEos);
  size_t pos = 0;
  while (pos < text.size()) {
    size_t line_end = std::min(text.find('\n', pos), text.size());
    size_t i = pos;
    while (i < line_end) {
      while (i < line_end && is_blank(text[i])) ++i;
      size_t start = i;
      while (i < line_end && !is_blank(text[i])) ++i;
      if (i > start) emit(std::string_view(text.data() + start, i - start));
    }
    emit(eos);
    pos = line_end + 1;
  }
}

// The characters of text sorted by code point, then <unk>.
std::vector<std::string> char_vocab(const std::string& train_text) {
  bool ascii_seen[128] = {};  // most text is ASCII; a table beats hashing 10^8 one-byte strings
  std::unordered_set<std::string_view> others;
  std::string_view text(train_text);
  for (size_t pos = 0; pos < text.size();) {
    unsigned char b = static_cast<unsigned char>(text[pos]);
    size_t len = b < 0x80 ? 1 : utf8_char_length(text, pos);
    if (b < 0x80)
      ascii_seen[b] = true;
    else
      others.insert(text.substr(pos, len));
    pos += len;
  }
  std::vector<std::string> vocab(others.begin(), others.end());
  for (int b = 0; b < 128; ++b)
    if (ascii_seen[b]) vocab.push_back(std::string(1, static_cast<char>(b)));
  // Byte-wise order of UTF-8 strings is code point order (std::string compares bytes unsigned).
  std::sort(vocab.begin(), vocab.end());
  vocab.push_back(kUnk);
  return vocab;
}

// The words of text (with <eos>, <unk> always present) by descending count, ties alphabetical.
std::vector<std::string> word_vocab(const std::string& train_text) {
  std::unordered_map<std::string_view, int64_t> counts;
  for_each_word(train_text, [&](std::string_view w) { ++counts[w]; });
  counts.emplace(kEos, 0);
  counts.emplace(kUnk, 0);
  std::vector<std::pair<std::string_view, int64_t>> sorted(counts.begin(), counts.end());
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  std::vector<std::string> vocab;
  vocab.reserve(sorted.size());
  for (const auto& entry : sorted) vocab.emplace_back(entry.first);
  return vocab;
}

}  // namespace

void detail::check_tokenizer_kind(const std::string& kind) {
  if (kind != "byte" && kind != "char" && kind != "word" && kind != "gpt2" &&
      !detail::is_subword_kind(kind))
    throw DataError("unknown tokenizer '" + kind + "'",
                    "valid tokenizers: byte, char, word, bpe, unigram, gpt2");
}

// ---- Tokenizer ----------------------------------------------------------------------------

Tokenizer Tokenizer::byte_level() {
  Tokenizer tok;
  tok.kind_ = "byte";
  for (int b = 0; b < 256; ++b) tok.vocab_.push_back(std::string(1, static_cast<char>(b)));
  return tok;
}

Tokenizer Tokenizer::build(const std::string& kind, const std::string& train_text,
                           int64_t vocab_size) {
  detail::check_tokenizer_kind(kind);
  if (kind == "byte") return byte_level();
  if (kind == "gpt2")
    throw DataError("a gpt2 tokenizer is read from a file, not learned from text",
                    "pass --tokenizer-file PATH (tokenizer.json, or a directory with vocab.json + "
                    "merges.txt)");
  if (detail::is_subword_kind(kind)) {
    Tokenizer tok;
    tok.kind_ = kind;
    tok.subword_ = detail::SubwordModel::train(kind, train_text, vocab_size);
    tok.vocab_ = tok.subword_->pieces();
    tok.unk_ = tok.subword_->unk_id();
    return tok;
  }
  return from_vocab(kind, kind == "char" ? char_vocab(train_text) : word_vocab(train_text));
}

Tokenizer Tokenizer::from_model(const std::string& kind, const std::string& model_proto) {
  detail::check_tokenizer_kind(kind);
  Tokenizer tok;
  tok.kind_ = kind;
  if (kind == "gpt2") {
    tok.gpt2_ = detail::gpt2_from_tokenizer_json(model_proto, "the saved gpt2 model");
    tok.vocab_ = tok.gpt2_->tokens();
    return tok;
  }
  if (!detail::is_subword_kind(kind))
    throw DataError("a " + kind + " tokenizer has no serialized model",
                    "rebuild it with Tokenizer::from_vocab");
  tok.subword_ = detail::SubwordModel::load(kind, model_proto);
  tok.vocab_ = tok.subword_->pieces();
  tok.unk_ = tok.subword_->unk_id();
  return tok;
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  Tokenizer tok;
  tok.kind_ = "gpt2";
  tok.gpt2_ = detail::load_gpt2(path);
  tok.vocab_ = tok.gpt2_->tokens();
  return tok;
}

bool Tokenizer::subword_available(std::string* why) {
  try {
    detail::check_subword_request("bpe", 1);
    return true;
  } catch (const DataError& e) {
    if (why) *why = e.what();
    return false;
  }
}

const std::string& Tokenizer::model_proto() const {
  static const std::string none;
  return subword_ ? subword_->proto() : gpt2_ ? gpt2_->tokenizer_json() : none;
}

Tokenizer Tokenizer::from_vocab(const std::string& kind, const std::vector<std::string>& vocab) {
  detail::check_tokenizer_kind(kind);
  if (detail::is_subword_kind(kind) || kind == "gpt2")
    throw DataError("a " + kind +
                        " tokenizer is rebuilt from its serialized model, not its "
                        "vocabulary",
                    "use Tokenizer::from_model with the saved model");
  const std::string hint = "the checkpoint's vocabulary is damaged or from another program";
  if (kind == "byte") {
    // Only the size is checked: the symbols are fixed, and a JSON round trip may mangle the
    // 128 one-byte strings that are not valid UTF-8.
    if (vocab.size() != 256)
      throw DataError(
          "byte vocabulary has " + std::to_string(vocab.size()) + " entries, expected 256", hint);
    return byte_level();
  }
  Tokenizer tok;
  tok.kind_ = kind;
  tok.vocab_ = vocab;
  if (kind == "char") {
    if (vocab.empty() || vocab.back() != kUnk)
      throw DataError("char vocabulary must end with <unk>", hint);
    for (size_t i = 0; i + 1 < vocab.size(); ++i)
      if (vocab[i].empty() || utf8_char_length(vocab[i], 0) != vocab[i].size())
        throw DataError("char vocabulary entry " + std::to_string(i) + " '" + vocab[i] +
                            "' is not one character",
                        hint);
  }
  tok.index_vocab();
  if (tok.index_.size() != vocab.size())
    throw DataError(kind + " vocabulary has duplicate entries", hint);
  if (kind == "word" && (tok.eos_ < 0 || tok.unk_ < 0))
    throw DataError("word vocabulary must contain <eos> and <unk>", hint);
  return tok;
}

void Tokenizer::index_vocab() {
  index_.clear();
  index_.reserve(vocab_.size());
  for (size_t i = 0; i < vocab_.size(); ++i) index_.emplace(vocab_[i], static_cast<int32_t>(i));
  auto find = [&](const char* s) {
    auto it = index_.find(s);
    return it == index_.end() ? -1 : it->second;
  };
  // In a char vocabulary <unk> is the last entry; it never collides with a one-character symbol.
  unk_ = kind_ == "char" ? static_cast<int32_t>(vocab_.size()) - 1 : find(kUnk);
  eos_ = kind_ == "word" ? find(kEos) : -1;
  if (kind_ == "char") {
    ascii_ids_.assign(128, unk_);
    for (int b = 0; b < 128; ++b) {
      auto it = index_.find(std::string(1, static_cast<char>(b)));
      if (it != index_.end()) ascii_ids_[b] = it->second;
    }
  }
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(vocab_.size()); }

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  if (kind_ == "byte") {
    ids.resize(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  if (subword_) return subword_->encode(text);
  if (gpt2_) return gpt2_->encode(text);
  std::string key;  // reused so lookups of short symbols do not allocate
  auto lookup = [&](std::string_view symbol) {
    key.assign(symbol.data(), symbol.size());
    auto it = index_.find(key);
    return it == index_.end() ? unk_ : it->second;
  };
  if (kind_ == "char") {
    ids.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
      unsigned char b = static_cast<unsigned char>(text[pos]);
      size_t len = b < 0x80 ? 1 : utf8_char_length(text, pos);
      ids.push_back(b < 0x80 ? ascii_ids_[b] : lookup(std::string_view(text).substr(pos, len)));
      pos += len;
    }
  } else {
    ids.reserve(text.size() / 5);
    for_each_word(text, [&](std::string_view w) { ids.push_back(lookup(w)); });
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      throw DataError("token id " + std::to_string(id) + " is outside the " + kind_ +
                          " vocabulary of " + std::to_string(vocab_size()),
                      "the ids come from a different tokenizer");
    if (subword_) {
      // The pieces' text rather than sentencepiece's Decode, which turns byte pieces that are not
      // UTF-8 into U+FFFD: so every byte string that was encoded comes back.
      text += subword_->surfaces()[static_cast<size_t>(id)];
    } else if (gpt2_) {
      text += gpt2_->surfaces()[static_cast<size_t>(id)];
    } else if (kind_ == "char" && id == unk_) {
      text += kReplacementChar;
    } else if (kind_ == "word") {
      if (id == eos_) {
        text += '\n';
        continue;
      }
      if (!text.empty() && text.back() != '\n') text += ' ';
      text += vocab_[id];
    } else {
      text += vocab_[id];
    }
  }
  return text;
}

int64_t Tokenizer::count_unknown(const std::vector<int32_t>& ids) const {
  if (unk_ < 0) return 0;
  int64_t n = 0;
  for (int32_t id : ids) n += id == unk_;
  return n;
}

}  // namespace ouroboros
