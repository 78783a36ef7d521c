// Corpora (text, enwik8, text8, wikitext103, fortunes), 90/5/5 splits, tokenized datasets,
// random training batches and sequential evaluation windows. Tokenizers are in tokenizer.cpp.
#include "ouroboros/data/dataset.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "data_detail.h"
#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace fs = std::filesystem;

namespace {

constexpr const char* kWhitespace = " \t\n\r\v\f";
// enwik8 and text8 are defined by their first 10^8 bytes, split 90M/5M/5M (Mahoney; Al-Rfou et
// al.).
constexpr size_t kHutterBytes = 100000000, kHutterTrain = 90000000, kHutterValid = 5000000;

// ---- Small helpers ------------------------------------------------------------------------

bool is_whitespace_only(const std::string& text) {
  return text.find_first_not_of(kWhitespace) == std::string::npos;
}

std::string format_bytes(size_t bytes) {
  char buf[32];
  if (bytes < 1000)
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  else if (bytes < 1000000)
    std::snprintf(buf, sizeof buf, "%.1f kB", bytes / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.1f MB", bytes / 1e6);
  return buf;
}

std::string count_files(size_t n) { return std::to_string(n) + (n == 1 ? " file" : " files"); }

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

// What a training run writes (checkpoints, metrics, the lock), never corpus text.
bool is_run_output(const fs::path& file) {
  const std::string name = file.filename().string();
  return name == "metrics.jsonl" || file.extension() == ".pt" ||
         name.find(".pt.tmp") != std::string::npos;
}

// Binary content: a NUL byte in the first 8 KiB (as git and grep decide).
bool looks_binary(const fs::path& file) {
  const size_t n = static_cast<size_t>(std::min<uintmax_t>(fs::file_size(file), 8192));
  const std::string head = read_range(file, 0, n);
  return head.find('\0') != std::string::npos;
}

// "a.txt, b.txt, c.txt and 4 more", paths relative to dir.
std::string name_files(const std::vector<fs::path>& files, const fs::path& dir) {
  std::string out;
  const size_t shown = std::min<size_t>(files.size(), 3);
  for (size_t i = 0; i < shown; ++i) {
    out += (i ? ", " : "") + fs::relative(files[i], dir).string();
  }
  if (files.size() > shown) out += " and " + std::to_string(files.size() - shown) + " more";
  return out;
}

TextSplits load_text(const fs::path& path) {
  require_exists(path);
  std::vector<fs::path> files;
  size_t skipped = 0;
  if (fs::is_directory(path)) {
    // A directory contributes its text files only: binaries and a run's own outputs (an out-dir
    // inside the data directory) would otherwise become training text.
    for (const auto& f : list_files(path, true)) {
      if (is_run_output(f) || looks_binary(f)) {
        ++skipped;
      } else {
        files.push_back(f);
      }
    }
  } else {
    files.push_back(path);
  }
  std::string text = concatenate_files(files);
  require_nonempty(text, path);
  TextSplits splits = split_90_5_5(text);
  splits.description = "text: " + count_files(files.size()) + ", " + format_bytes(text.size()) +
                       ", split 90/5/5 by bytes";
  if (fs::is_directory(path)) {
    splits.description += "; read " + name_files(files, path);
    if (skipped > 0) {
      splits.description += "; skipped " + count_files(skipped) + " (binary or run outputs)";
    }
  }
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
  const std::string hint =
      "install the fortunes and fortunes-min packages "
      "(apt-get install fortunes fortunes-min)";
  if (!fs::is_directory(dir))
    throw DataError("fortunes directory not found: " + dir.string(), hint);
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
  splits.description = "fortunes: " + count_files(files.size()) + ", " + format_bytes(text.size()) +
                       ", split 90/5/5 by bytes";
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
  data.description =
      splits.description + "; " + tok.kind() + " tokenizer, vocab " +
      std::to_string(tok.vocab_size()) + "; tokens train " + std::to_string(data.train.size()) +
      ", valid " + std::to_string(data.valid.size()) + ", test " + std::to_string(data.test.size());
  return data;
}

}  // namespace

// ---- Corpora and splits -------------------------------------------------------------------

TextSplits split_90_5_5(const std::string& text) {
  const size_t n = text.size();
  // Integer arithmetic gives the exact floor of 0.90 n and 0.95 n.
  auto cut_at = [&](size_t cut) {
    while (cut < n && detail::is_continuation_byte(text[cut])) ++cut;
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
                     const std::string& tokenizer_kind, int64_t vocab_size,
                     const std::string& tokenizer_file) {
  std::string resolved = resolve_format(path, format);
  if (!tokenizer_file.empty()) {
    if (tokenizer_kind != "auto" && tokenizer_kind != "gpt2")
      throw DataError("a tokenizer file is given but the tokenizer is " + tokenizer_kind,
                      "drop --tokenizer-file, or use --tokenizer gpt2 (or auto)");
    // Before reading a large corpus.
    Tokenizer tok = Tokenizer::from_file(tokenizer_file);
    return encode_splits(load_text_splits(path, resolved), tok);
  }
  std::string kind = tokenizer_kind == "auto" ? default_tokenizer(resolved) : tokenizer_kind;
  // Before reading a large corpus.
  detail::check_tokenizer_kind(kind);
  if (kind == "gpt2")
    throw DataError("tokenizer gpt2 needs a tokenizer file",
                    "pass --tokenizer-file PATH (tokenizer.json, or a directory with vocab.json + "
                    "merges.txt)");
  if (detail::is_subword_kind(kind)) detail::check_subword_request(kind, vocab_size);
  TextSplits splits = load_text_splits(path, resolved);
  Tokenizer tok = Tokenizer::build(kind, splits.train, vocab_size);
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
  torch::Tensor x = torch::empty({B, T}, torch::kInt64);              // [B, T]
  torch::Tensor y = torch::empty({B, T}, torch::kInt64);              // [B, T]
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
                        std::to_string(available) + " windows of " + std::to_string(tokens.size()) +
                        " tokens at block size " + std::to_string(T),
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
