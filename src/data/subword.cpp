// The bpe and unigram tokenizers: sentencepiece models trained on the training split, loaded from
// the sentencepiece module (subword_module.cpp) at run time, and the text handling around them
// that makes decoding return any byte string exactly.
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <system_error>
#include <thread>

#include "data_detail.h"
#include "ouroboros/core/errors.h"
#include "subword_detail.h"

// The sanitizer runtimes abort on dlopen with RTLD_DEEPBIND, without which the module's protobuf
// would meet libtorch's; there the subword tokenizers are off.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define OUROBOROS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define OUROBOROS_SANITIZED 1
#endif
#endif

namespace ouroboros::detail {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581, sentencepiece's space
constexpr const char* kReplacementChar = "\xEF\xBF\xBD";   // U+FFFD, what <unk> decodes to
// Text goes to sentencepiece in runs of at most this many bytes: the trainer skips sentences
// longer than its max_sentence_length (4192), and shorter runs keep encoding's memory small.
constexpr size_t kMaxRunBytes = 4096;
// The trainer reads at most this many sentences (sentencepiece warns past 10^6 that training
// slows down); a larger split contributes evenly spaced ones, so every part of it is seen.
constexpr size_t kMaxTrainSentences = 1000000;
// Encoding uses up to this many threads, each with at least kMinBytesPerThread of text.
constexpr size_t kMaxEncodeThreads = 8;
constexpr size_t kMinBytesPerThread = 256 * 1024;

// Walks text as sentencepiece can take it: run(view) for text without line ends, cut into runs
// of at most kMaxRunBytes; newline() for each '\n'; raw(byte) for each byte sentencepiece would
// change (invalid UTF-8, and U+2581, which it decodes as a space). A run is cut before a space
// where it has one: no piece holds a space past its first character, so such cuts leave the
// encoding exactly as sentencepiece gives it for the whole line.
template <typename Run, typename Newline, typename Raw>
void for_each_segment(std::string_view text, Run&& run, Newline&& newline, Raw&& raw) {
  size_t start = 0;
  auto flush = [&](size_t end) {
    while (start < end) {
      size_t cut = end;
      if (end - start > kMaxRunBytes) {
        cut = start + kMaxRunBytes;
        while (cut > start && is_continuation_byte(text[cut])) --cut;
        const size_t space = text.substr(start, cut - start).rfind(' ');
        if (space != std::string_view::npos && space > 0) cut = start + space;
      }
      run(text.substr(start, cut - start));
      start = cut;
    }
  };
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      flush(i);
      newline();
      start = ++i;
    } else if (c < 0x80) {
      ++i;
    } else {
      const size_t n = valid_char_length(text, i);
      if (n == 0 || text.substr(i, n) == kSpaceSymbol) {
        flush(i);
        for (size_t k = 0; k < std::max<size_t>(n, 1); ++k) raw(text[i + k]);
        i += std::max<size_t>(n, 1);
        start = i;
      } else {
        i += n;
      }
    }
  }
  flush(text.size());
}

// The module, loaded once, or why it is not there.
struct Module {
  const SubwordApi* api = nullptr;
  std::string what, hint;
};

#if !defined(OUROBOROS_SANITIZED) && defined(OUROBOROS_SUBWORD_MODULE)
constexpr const char* kModuleName = "libouroboros_subword.so";

// The module next to the running program (an installed or copied build), else where this build
// put it.
Module load_module() {
  Module m;
  std::vector<fs::path> candidates;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(exe.parent_path() / kModuleName);
  candidates.emplace_back(OUROBOROS_SUBWORD_MODULE);
  std::string problem = "not found at " + candidates.back().string();
  for (const fs::path& path : candidates) {
    if (!fs::exists(path, ec)) continue;
    // RTLD_LOCAL keeps the module's protobuf out of libtorch's sight, RTLD_DEEPBIND keeps
    // libtorch's out of the module's. The module is never unloaded.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle) {
      problem = dlerror();
      break;
    }
    using Entry = const SubwordApi* (*)();
    auto entry = reinterpret_cast<Entry>(dlsym(handle, "ouroboros_subword_api"));
    const SubwordApi* api = entry ? entry() : nullptr;
    if (!api || api->abi_version != kSubwordAbiVersion) {
      problem = path.string() + " is from another ouroboros build";
      break;
    }
    m.api = api;
    return m;
  }
  m.what = "whose module did not load (" + problem + ")";
  m.hint =
      "rebuild ouroboros, which puts " + std::string(kModuleName) + " next to the ouroboros binary";
  return m;
}
#else
Module load_module() {
  Module m;
#if defined(OUROBOROS_SANITIZED)
  m.what = "which is off in sanitizer builds (their runtimes refuse the RTLD_DEEPBIND it needs)";
  m.hint = "use a build without sanitizers for bpe and unigram";
#else
  m.what = "which this build lacks";
  m.hint = "install libsentencepiece-dev (scripts/install-deps.sh) and reconfigure";
#endif
  return m;
}
#endif

const Module& module() {
  static const Module m = load_module();
  return m;
}

const SubwordApi& api_for(const std::string& kind) {
  const Module& m = module();
  if (!m.api) throw DataError("tokenizer " + kind + " needs sentencepiece, " + m.what, m.hint);
  return *m.api;
}

// The first number after `marker` in sentencepiece's message, or -1.
int64_t number_after(const std::string& message, const std::string& marker) {
  const size_t at = message.find(marker);
  if (at == std::string::npos) return -1;
  size_t i = at + marker.size();
  int64_t n = -1;
  while (i < message.size() && message[i] >= '0' && message[i] <= '9' && n < INT32_MAX) {
    n = (n < 0 ? 0 : n * 10) + (message[i++] - '0');
  }
  return n;
}

// One line for a failed training: a vocabulary the text cannot fill or cannot hold, else
// sentencepiece's own message.
DataError training_error(const std::string& kind, int64_t vocab_size, const std::string& message) {
  const std::string asked = kind + " vocabulary of " + std::to_string(vocab_size) + " pieces";
  if (message.find("Vocabulary size too high") != std::string::npos ||
      message.find("Vocabulary size is too high") != std::string::npos) {
    const int64_t most = number_after(message, "<= ");
    if (most > 0) {
      return DataError(
          asked + " is more than the training text supports (at most " + std::to_string(most) + ")",
          "lower --vocab-size to " + std::to_string(most) + " or less");
    }
    return DataError(asked + " is more than the training text supports",
                     "lower --vocab-size or use more text");
  }
  if (message.find("Vocabulary size is smaller than required_chars") != std::string::npos) {
    const int64_t least = number_after(message, " vs ");
    const std::string need = least > 0 ? "at least " + std::to_string(least) : "more";
    return DataError(asked +
                         " is too small: the 256 byte pieces, <unk>, the line end and the "
                         "text's characters need " +
                         need,
                     "raise --vocab-size to " + need);
  }
  return DataError("sentencepiece could not train the " + kind + " tokenizer: " + message,
                   "check the training text and --vocab-size");
}

}  // namespace

void check_subword_request(const std::string& kind, int64_t vocab_size) {
  api_for(kind);
  if (vocab_size <= 0) {
    throw DataError("tokenizer " + kind + " needs a vocabulary size",
                    "pass --vocab-size N, e.g. --vocab-size 4000");
  }
  if (vocab_size > INT32_MAX) {
    throw DataError("vocabulary size " + std::to_string(vocab_size) + " is past what " + kind +
                        " can learn (" + std::to_string(INT32_MAX) + ")",
                    "lower --vocab-size");
  }
}

std::shared_ptr<const SubwordModel> SubwordModel::train(const std::string& kind,
                                                        const std::string& text,
                                                        int64_t vocab_size) {
  check_subword_request(kind, vocab_size);
  // The sentences are the training text's lines (runs of them, for long lines), without the
  // bytes sentencepiece would change: encoding passes those on as byte pieces.
  std::vector<std::string_view> sentences;
  for_each_segment(
      text, [&](std::string_view run) { sentences.push_back(run); }, [] {}, [](char) {});
  if (sentences.empty()) {
    throw DataError("the training split has no text to learn " + kind + " pieces from",
                    "use more text or another --tokenizer");
  }
  if (sentences.size() > kMaxTrainSentences) {
    std::vector<std::string_view> spaced(kMaxTrainSentences);
    for (size_t j = 0; j < kMaxTrainSentences; ++j) {
      spaced[j] = sentences[j * sentences.size() / kMaxTrainSentences];
    }
    sentences.swap(spaced);
  }
  std::string proto;
  const std::string error =
      api_for(kind).train(kind, static_cast<int32_t>(vocab_size), sentences, &proto);
  if (!error.empty()) throw training_error(kind, vocab_size, error);
  return load(kind, proto);
}

std::shared_ptr<const SubwordModel> SubwordModel::load(const std::string& kind,
                                                       const std::string& proto) {
  const SubwordApi& api = api_for(kind);
  const std::string hint = "the sentencepiece model is damaged or from another program";
  if (proto.empty()) throw DataError("the " + kind + " tokenizer has no sentencepiece model", hint);
  std::string error;
  void* handle = api.load(proto, &error);
  if (!handle)
    throw DataError("the " + kind + " sentencepiece model does not load: " + error, hint);
  std::shared_ptr<SubwordModel> model(new SubwordModel(&api, handle, proto));
  std::vector<int8_t> types;
  api.pieces(handle, &model->pieces_, &types);
  model->byte_ids_.fill(-1);
  for (size_t id = 0; id < model->pieces_.size(); ++id) {
    const std::string& piece = model->pieces_[id];
    std::string surface;
    if (types[id] == kPieceByte) {
      // "<0xAB>": the byte 0xAB.
      const bool well_formed = piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 &&
                               std::isxdigit(static_cast<unsigned char>(piece[3])) &&
                               std::isxdigit(static_cast<unsigned char>(piece[4])) &&
                               piece[5] == '>';
      const unsigned long b =
          well_formed ? std::strtoul(piece.substr(3, 2).c_str(), nullptr, 16) : 256;
      if (b > 255) {
        throw DataError("the " + kind + " sentencepiece model has a bad byte piece '" + piece + "'",
                        hint);
      }
      model->byte_ids_[b] = static_cast<int32_t>(id);
      surface = std::string(1, static_cast<char>(b));
    } else if (types[id] == kPieceUnknown) {
      model->unk_id_ = static_cast<int32_t>(id);
      surface = kReplacementChar;
    } else if (types[id] == kPieceNormal) {
      for (size_t at = 0; at < piece.size();) {
        if (piece.compare(at, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
          surface += ' ';
          at += kSpaceSymbol.size();
        } else {
          surface += piece[at++];
        }
      }
      if (piece == "\n") model->newline_id_ = static_cast<int32_t>(id);
    }
    model->surfaces_.push_back(surface);
  }
  for (int b = 0; b < 256; ++b) {
    if (model->byte_ids_[b] < 0) {
      throw DataError("the " + kind + " sentencepiece model has no byte fallback pieces", hint);
    }
  }
  if (model->newline_id_ < 0) model->newline_id_ = model->byte_ids_['\n'];
  return model;
}

SubwordModel::SubwordModel(const SubwordApi* api, void* handle, std::string proto)
    : api_(api), handle_(handle), proto_(std::move(proto)) {}

SubwordModel::~SubwordModel() { api_->release(handle_); }

std::vector<int32_t> SubwordModel::encode(const std::string& text) const {
  // sentencepiece encodes about 2 MB/s on one core: a large text is cut after line ends into one
  // part per core, whose ids, a line end being a piece of its own, are the whole text's in order.
  const size_t cores = std::max(1u, std::thread::hardware_concurrency());
  const size_t parts = std::min({cores, kMaxEncodeThreads, text.size() / kMinBytesPerThread + 1});
  std::vector<size_t> bounds{0};
  for (size_t p = 1; p < parts; ++p) {
    const size_t newline = text.find('\n', std::max(bounds.back(), text.size() * p / parts));
    if (newline == std::string::npos) break;
    bounds.push_back(newline + 1);
  }
  bounds.push_back(text.size());
  std::vector<std::vector<int32_t>> ids(bounds.size() - 1);
  std::vector<std::string> errors(ids.size());
  auto encode_part = [&](size_t p) {
    std::vector<int32_t>& out = ids[p];
    out.reserve((bounds[p + 1] - bounds[p]) / 3);
    for_each_segment(
        std::string_view(text).substr(bounds[p], bounds[p + 1] - bounds[p]),
        [&](std::string_view run) {
          std::string e = api_->encode(handle_, run, &out);
          if (!e.empty() && errors[p].empty()) errors[p] = std::move(e);
        },
        [&] { out.push_back(newline_id_); },
        [&](char b) { out.push_back(byte_ids_[static_cast<unsigned char>(b)]); });
  };
  std::vector<std::thread> threads;
  for (size_t p = 1; p < ids.size(); ++p) threads.emplace_back(encode_part, p);
  encode_part(0);
  for (std::thread& t : threads) t.join();
  for (const std::string& e : errors) {
    if (!e.empty()) {
      throw DataError("sentencepiece could not encode the text: " + e,
                      "the tokenizer's model may be damaged; rebuild it from the corpus");
    }
  }
  if (ids.size() == 1) return std::move(ids[0]);
  size_t total = 0;
  for (const auto& part : ids) total += part.size();
  std::vector<int32_t> all;
  all.reserve(total);
  for (const auto& part : ids) all.insert(all.end(), part.begin(), part.end());
  return all;
}

}  // namespace ouroboros::detail
