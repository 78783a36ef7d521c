// Corpora (text, enwik8, text8, wikitext103, fortunes), byte/char/word tokenizers, 90/5/5 splits,
// random training batches and sequential evaluation windows.
#include "ouroboros/data.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <unordered_set>

#include "ouroboros/errors.h"

namespace ouroboros {
namespace fs = std::filesystem;

namespace {

constexpr const char* kUnk = "<unk>";
constexpr const char* kEos = "<eos>";
constexpr const char* kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD, how char decodes <unk>
constexpr const char* kWhitespace = " \t\n\r\v\f";
// enwik8 and text8 are defined by their first 10^8 bytes, split 90M/5M/5M (Mahoney; Al-Rfou et al.).
constexpr size_t kHutterBytes = 100000000, kHutterTrain = 90000000, kHutterValid = 5000000;

// ---- Small helpers ------------------------------------------------------------------------

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }
bool is_continuation_byte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }
bool is_whitespace_only(const std::string& text) {
  return text.find_first_not_of(kWhitespace) == std::string::npos;
}

// Bytes in the UTF-8 character starting at text[pos]. A byte that does not start a complete
// sequence counts as one symbol on its own, so any byte string tokenizes and round-trips.
size_t utf8_char_length(std::string_view text, size_t pos) {
  unsigned char lead = static_cast<unsigned char>(text[pos]);
  size_t len = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3
             : (lead >> 3) == 0x1E ? 4 : 1;
  if (pos + len > text.size()) return 1;
  for (size_t k = 1; k < len; ++k)
    if (!is_continuation_byte(text[pos + k])) return 1;
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
    if (b < 0x80) ascii_seen[b] = true;
    else others.insert(text.substr(pos, len));
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

std::string format_bytes(size_t bytes) {
  char buf[32];
  if (bytes < 1000) std::snprintf(buf, sizeof buf, "%zu B", bytes);
  else if (bytes < 1000000) std::snprintf(buf, sizeof buf, "%.1f kB", bytes / 1e3);
  else std::snprintf(buf, sizeof buf, "%.1f MB", bytes / 1e6);
  return buf;
}

std::string count_files(size_t n) { return std::to_string(n) + (n == 1 ? " file" : " files"); }

void check_tokenizer_kind(const std::string& kind) {
  if (kind != "byte" && kind != "char" && kind != "word")
    throw DataError("unknown tokenizer '" + kind + "'", "valid tokenizers: byte, char, word");
}

void check_block_size(int64_t block_size) {
  if (block_size < 1)
    throw DataError("block size must be at least 1, got " + std::to_string(block_size),
                    "set --block-size to a positive number of tokens");
}

// ---- Reading files ------------------------------------------------------------------------

// Reads `length` bytes at `offset` in one go (enwik8 is 100 MB; no line-by-line streams).
std::string read_range(const fs::path& path, size_t offset, size_t length) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot open " + path.string(), "check the file's permissions");
  std::string data(length, '\0');
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(data.data(), static_cast<std::streamsize>(length));
  if (static_cast<size_t>(in.gcount()) != length)
    throw DataError("could not read " + std::to_string(length) + " bytes at offset " +
                    std::to_string(offset) + " of " + path.string(),
                    "the file may have changed while it was read");
  return data;
}

std::string read_file(const fs::path& path) { return read_range(path, 0, fs::file_size(path)); }

// Files under dir, recursively, in sorted path order. Hidden entries (and hidden folders'
// contents) are skipped. With follow_symlinks false, links are skipped rather than read.
std::vector<fs::path> list_files(const fs::path& dir, bool follow_symlinks) {
  std::vector<fs::path> files;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
       ++it) {
    if (it->path().filename().string().rfind('.', 0) == 0) {
      it.disable_recursion_pending();
      continue;
    }
    fs::file_status status = follow_symlinks ? it->status() : it->symlink_status();
    if (fs::is_regular_file(status)) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string concatenate_files(const std::vector<fs::path>& files) {
  size_t total = 0;
  for (const auto& f : files) total += fs::file_size(f);
  std::string text;
  text.reserve(total);
  for (const auto& f : files) text += read_file(f);
  return text;
}

// ---- Corpus formats -----------------------------------------------------------------------

void require_exists(const fs::path& path) {
  if (!fs::exists(path))
    throw DataError("corpus not found: " + path.string(),
                    "check --data; --format text reads a file or a directory of text files");
}

void require_nonempty(const std::string& text, const fs::path& path) {
  if (is_whitespace_only(text))
    throw DataError("corpus is empty: " + path.string(),
                    "point --data at a file or directory that holds text");
}

TextSplits load_text(const fs::path& path) {
  require_exists(path);
  std::vector<fs::path> files =
      fs::is_directory(path) ? list_files(path, true) : std::vector<fs::path>{path};
  std::string text = concatenate_files(files);
  require_nonempty(text, path);
  TextSplits splits = split_90_5_5(text);
  splits.description = "text: " + count_files(files.size()) + ", " + format_bytes(text.size()) +
                       ", split 90/5/5 by bytes";
  return splits;
}

TextSplits load_hutter(const fs::path& path, const std::string& format) {
  require_exists(path);
  if (!fs::is_regular_file(path))
    throw DataError(format + " needs a file, got a directory: " + path.string(),
                    "point --data at the " + format + " file, or use --format text");
  size_t size = fs::file_size(path);
  if (size < kHutterBytes)
    throw DataError(format + " file " + path.string() + " has " + std::to_string(size) +
                        " bytes; enwik8 and text8 need the standard 100,000,000-byte file",
                    "use --format text for other files");
  TextSplits splits;
  splits.train = read_range(path, 0, kHutterTrain);
  splits.valid = read_range(path, kHutterTrain, kHutterValid);
  splits.test = read_range(path, kHutterTrain + kHutterValid, kHutterValid);
  splits.description = format + ": " + format_bytes(kHutterBytes) +
                       " (first 10^8 bytes), standard split 90M/5M/5M bytes";
  return splits;
}

TextSplits load_wikitext103(const fs::path& dir) {
  require_exists(dir);
  auto read_split = [&](const char* name) {
    fs::path file = dir / name;
    if (!fs::is_regular_file(file))
      throw DataError("wikitext103 file missing: " + file.string(),
                      "a wikitext103 directory holds wiki.train.tokens, wiki.valid.tokens and "
                      "wiki.test.tokens; use --format text for other corpora");
    return read_file(file);
  };
  TextSplits splits;
  splits.train = read_split("wiki.train.tokens");
  splits.valid = read_split("wiki.valid.tokens");
  splits.test = read_split("wiki.test.tokens");
  require_nonempty(splits.train + splits.valid + splits.test, dir);
  size_t bytes = splits.train.size() + splits.valid.size() + splits.test.size();
  splits.description = "wikitext103: 3 files, " + format_bytes(bytes) + ", standard splits";
  return splits;
}

// Appends text without its "%" lines, which only separate fortunes in the fortune(6) format.
void append_without_separators(const std::string& text, std::string& out) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t newline = text.find('\n', pos);
    size_t next = newline == std::string::npos ? text.size() : newline + 1;
    size_t content_end = newline == std::string::npos ? text.size() : newline;
    if (text.compare(pos, content_end - pos, "%") != 0) out.append(text, pos, next - pos);
    pos = next;
  }
}

TextSplits load_fortunes() {
  const char* override_dir = std::getenv("OUROBOROS_FORTUNES_DIR");
  fs::path dir = override_dir ? override_dir : "/usr/share/games/fortunes";
  const std::string hint = "install the fortunes and fortunes-min packages "
                           "(apt-get install fortunes fortunes-min)";
  if (!fs::is_directory(dir)) throw DataError("fortunes directory not found: " + dir.string(), hint);
  std::vector<fs::path> files;
  std::string text;
  for (const auto& file : list_files(dir, false)) {
    std::string name = file.filename().string();
    auto ends_with = [&](const std::string& s) {
      return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    if (ends_with(".dat") || ends_with(".u8")) continue;  // strfile indexes and UTF-8 aliases
    files.push_back(file);
    append_without_separators(read_file(file), text);
  }
  if (is_whitespace_only(text)) throw DataError("no fortunes found in " + dir.string(), hint);
  TextSplits splits = split_90_5_5(text);
  splits.description = "fortunes: " + count_files(files.size()) + ", " +
                       format_bytes(text.size()) + ", split 90/5/5 by bytes";
  return splits;
}

// The concrete format for `format`, resolving "auto" by looking at path: the word "fortunes"
// (the default --data) that names no file means the demo corpus.
std::string resolve_format(const std::string& path, const std::string& format) {
  if (format == "auto") {
    std::error_code ec;  // an unreadable path is reported later as "not found"
    if (path == "fortunes" && !fs::exists(path, ec)) return "fortunes";
    return fs::is_regular_file(fs::path(path) / "wiki.train.tokens", ec) ? "wikitext103" : "text";
  }
  for (const char* known : {"text", "enwik8", "text8", "wikitext103", "fortunes"})
    if (format == known) return format;
  throw DataError("unknown corpus format '" + format + "'",
                  "valid formats: text, enwik8, text8, wikitext103, fortunes, auto");
}

Dataset encode_splits(TextSplits splits, const Tokenizer& tok) {
  Dataset data{tok, {}, {}, {}, ""};
  // Each text is released once encoded: enwik8's splits are large next to their token ids.
  data.train = tok.encode(splits.train);
  std::string().swap(splits.train);
  data.valid = tok.encode(splits.valid);
  data.test = tok.encode(splits.test);
  data.description = splits.description + "; " + tok.kind() + " tokenizer, vocab " +
                     std::to_string(tok.vocab_size()) + "; tokens train " +
                     std::to_string(data.train.size()) + ", valid " +
                     std::to_string(data.valid.size()) + ", test " +
                     std::to_string(data.test.size());
  return data;
}

}  // namespace

// ---- Tokenizer ----------------------------------------------------------------------------

Tokenizer Tokenizer::byte_level() {
  Tokenizer tok;
  tok.kind_ = "byte";
  for (int b = 0; b < 256; ++b) tok.vocab_.push_back(std::string(1, static_cast<char>(b)));
  return tok;
}

Tokenizer Tokenizer::build(const std::string& kind, const std::string& train_text) {
  check_tokenizer_kind(kind);
  if (kind == "byte") return byte_level();
  return from_vocab(kind, kind == "char" ? char_vocab(train_text) : word_vocab(train_text));
}

Tokenizer Tokenizer::from_vocab(const std::string& kind, const std::vector<std::string>& vocab) {
  check_tokenizer_kind(kind);
  const std::string hint = "the checkpoint's vocabulary is damaged or from another program";
  if (kind == "byte") {
    // Only the size is checked: the symbols are fixed, and a JSON round trip may mangle the
    // 128 one-byte strings that are not valid UTF-8.
    if (vocab.size() != 256)
      throw DataError("byte vocabulary has " + std::to_string(vocab.size()) +
                          " entries, expected 256", hint);
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
                            "' is not one character", hint);
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
    if (kind_ == "char" && id == unk_) {
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

// ---- Corpora and splits -------------------------------------------------------------------

TextSplits split_90_5_5(const std::string& text) {
  const size_t n = text.size();
  // Integer arithmetic gives the exact floor of 0.90 n and 0.95 n.
  auto cut_at = [&](size_t cut) {
    while (cut < n && is_continuation_byte(text[cut])) ++cut;
    return cut;
  };
  size_t valid_start = cut_at(n * 9 / 10);
  size_t test_start = std::max(valid_start, cut_at(n * 19 / 20));
  TextSplits splits;
  splits.train = text.substr(0, valid_start);
  splits.valid = text.substr(valid_start, test_start - valid_start);
  splits.test = text.substr(test_start);
  return splits;
}

TextSplits load_text_splits(const std::string& path, const std::string& format) {
  std::string resolved = resolve_format(path, format);
  try {
    if (resolved == "enwik8" || resolved == "text8") return load_hutter(path, resolved);
    if (resolved == "wikitext103") return load_wikitext103(path);
    if (resolved == "fortunes") return load_fortunes();
    return load_text(path);
  } catch (const fs::filesystem_error& e) {
    throw DataError(std::string("cannot read corpus: ") + e.what(),
                    "check that the corpus files are readable");
  }
}

std::string default_tokenizer(const std::string& format) {
  if (format == "enwik8") return "byte";
  if (format == "wikitext103") return "word";
  if (format == "text8" || format == "text" || format == "fortunes" || format == "auto")
    return "char";
  throw DataError("unknown corpus format '" + format + "'",
                  "valid formats: text, enwik8, text8, wikitext103, fortunes, auto");
}

const std::vector<int32_t>& Dataset::split(const std::string& name) const {
  if (name == "train") return train;
  if (name == "valid") return valid;
  if (name == "test") return test;
  throw DataError("unknown split '" + name + "'", "valid splits: train, valid, test");
}

Dataset load_dataset(const std::string& path, const std::string& format,
                     const std::string& tokenizer_kind) {
  std::string resolved = resolve_format(path, format);
  std::string kind = tokenizer_kind == "auto" ? default_tokenizer(resolved) : tokenizer_kind;
  check_tokenizer_kind(kind);  // before reading a large corpus
  TextSplits splits = load_text_splits(path, resolved);
  Tokenizer tok = Tokenizer::build(kind, splits.train);
  return encode_splits(std::move(splits), tok);
}

Dataset load_dataset(const std::string& path, const std::string& format, const Tokenizer& tok) {
  return encode_splits(load_text_splits(path, format), tok);
}

// ---- Batches and evaluation windows -------------------------------------------------------

uint64_t SplitMix64::next() {
  state += 0x9E3779B97F4A7C15ULL;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

BatchSampler::BatchSampler(const std::vector<int32_t>& tokens, int64_t block_size,
                           int64_t batch_size, uint64_t seed)
    : tokens_(tokens), block_size_(block_size), batch_size_(batch_size), rng_{seed} {
  check_block_size(block_size);
  if (batch_size < 1)
    throw DataError("batch size must be at least 1, got " + std::to_string(batch_size),
                    "set --batch-size to a positive number");
  int64_t n = static_cast<int64_t>(tokens.size());
  if (n < block_size + 1)
    throw DataError("corpus split has " + std::to_string(n) +
                        " tokens, fewer than one window of block_size+1 = " +
                        std::to_string(block_size + 1) + " tokens",
                    "lower --block-size or use more text");
}

std::pair<torch::Tensor, torch::Tensor> BatchSampler::next() {
  const int64_t B = batch_size_, T = block_size_;
  const uint64_t starts = tokens_.size() - static_cast<uint64_t>(T);  // i in [0, N-T-1]
  torch::Tensor x = torch::empty({B, T}, torch::kInt64);  // [B, T]
  torch::Tensor y = torch::empty({B, T}, torch::kInt64);  // [B, T]
  int64_t* xp = x.data_ptr<int64_t>();
  int64_t* yp = y.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* window = tokens_.data() + rng_.next() % starts;
    std::copy(window, window + T, xp + b * T);
    std::copy(window + 1, window + T + 1, yp + b * T);
  }
  return {x, y};
}

int64_t num_eval_windows(int64_t num_tokens, int64_t block_size) {
  check_block_size(block_size);
  // Window j needs tokens [jT, jT+T] inclusive: jT + T + 1 <= N.
  return num_tokens < block_size + 1 ? 0 : (num_tokens - block_size - 1) / block_size + 1;
}

std::pair<torch::Tensor, torch::Tensor> eval_windows(const std::vector<int32_t>& tokens,
                                                     int64_t block_size, int64_t first,
                                                     int64_t count) {
  const int64_t T = block_size;
  int64_t available = num_eval_windows(static_cast<int64_t>(tokens.size()), T);
  if (first < 0 || count < 0 || first + count > available)
    throw DataError("evaluation windows [" + std::to_string(first) + ", " +
                        std::to_string(first + count) + ") exceed the " +
                        std::to_string(available) + " windows of " +
                        std::to_string(tokens.size()) + " tokens at block size " +
                        std::to_string(T),
                    "ask for windows below num_eval_windows()");
  torch::Tensor x = torch::empty({count, T}, torch::kInt64);  // [count, T]
  torch::Tensor y = torch::empty({count, T}, torch::kInt64);  // [count, T]
  int64_t* xp = x.data_ptr<int64_t>();
  int64_t* yp = y.data_ptr<int64_t>();
  for (int64_t r = 0; r < count; ++r) {
    const int32_t* window = tokens.data() + (first + r) * T;
    std::copy(window, window + T, xp + r * T);
    std::copy(window + 1, window + T + 1, yp + r * T);
  }
  return {x, y};
}

}  // namespace ouroboros
