// GPT-2's byte-level BPE encoding: added tokens, pre-tokenization by GPT-2's pattern (PCRE2),
// bytes as characters, merges lowest rank first, and the bytes each id decodes to.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <functional>
#include <queue>

#include "data_detail.h"
#include "gpt2_detail.h"
#include "ouroboros/core/errors.h"

namespace ouroboros::detail {
namespace {

// GPT-2's pre-tokenizer (encoder.py, and `tokenizers`' ByteLevel with use_regex). In UCP mode
// PCRE2's \s is the Z categories and \t\n\v\f\r, which is what `tokenizers` treats as space (not
// U+0085, nor U+001C..U+001F).
constexpr const char* kPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Pre-tokens up to this many bytes are cached per encode call: short words repeat, long runs
// rarely do. The cache stops growing at kMaxCachedWords.
constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCachedWords = size_t{1} << 20;

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// bytes_to_unicode's code point for each byte.
std::array<uint32_t, 256> byte_code_points() {
  std::array<uint32_t, 256> cps{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    cps[b] = printable ? b : next++;
  }
  return cps;
}

// The bytes a token stands for: each character through the inverse of bytes_to_unicode, or, when
// one of its characters is not in the map (an added token such as "<|endoftext|>" may be), its
// own UTF-8, as `tokenizers`' ByteLevel decoder does.
std::string token_bytes(const std::string& token) {
  static const std::vector<int> byte_of = [] {
    std::vector<int> inverse(324, -1);  // the map's code points are below 256 + 68
    const std::array<uint32_t, 256> cps = byte_code_points();
    for (int b = 0; b < 256; ++b) inverse[cps[b]] = b;
    return inverse;
  }();
  std::string out;
  for (size_t i = 0; i < token.size();) {
    const size_t n = valid_char_length(token, i);
    if (n == 0) return token;
    const uint32_t lead_bits[] = {0, 0x7F, 0x1F, 0x0F, 0x07};
    uint32_t cp = static_cast<unsigned char>(token[i]) & lead_bits[n];
    for (size_t k = 1; k < n; ++k)
      cp = (cp << 6) | (static_cast<unsigned char>(token[i + k]) & 0x3F);
    if (cp >= byte_of.size() || byte_of[cp] < 0) return token;
    out += static_cast<char>(byte_of[cp]);
    i += n;
  }
  return out;
}

}  // namespace

// Pre-tokens already merged in one encode call, keyed by their bytes in the caller's text.
struct WordCache {
  std::unordered_map<std::string_view, std::pair<size_t, size_t>> words;  // -> (start, count)
  std::vector<int32_t> ids;
};

std::string gpt2_byte_char(unsigned char b) {
  static const std::array<uint32_t, 256> cps = byte_code_points();
  std::string out;
  append_utf8(out, cps[b]);
  return out;
}

// The compiled pattern. pcre2_match may share it between threads; each call brings its match
// data.
struct Gpt2Bpe::Pattern {
  pcre2_code* code = nullptr;
  ~Pattern() { pcre2_code_free(code); }
};

Gpt2Bpe::~Gpt2Bpe() = default;

void Gpt2Bpe::init_pattern() {
  auto pattern = std::make_shared<Pattern>();
  int error = 0;
  PCRE2_SIZE offset = 0;
  pattern->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                                PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (pattern->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    throw DataError(
        std::string("PCRE2 refuses GPT-2's pattern: ") + reinterpret_cast<const char*>(message),
        "install a PCRE2 built with Unicode support (libpcre2-dev)");
  }
  // Where the JIT is missing the interpreter matches alike, only slower.
  pcre2_jit_compile(pattern->code, PCRE2_JIT_COMPLETE);
  pattern_ = std::move(pattern);
}

std::vector<int32_t> Gpt2Bpe::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  WordCache cache;
  // Added tokens first, leftmost and then longest, as `tokenizers` splits them off.
  std::vector<size_t> next(added_.size());
  for (size_t k = 0; k < added_.size(); ++k) next[k] = text.find(added_[k].content);
  size_t pos = 0;
  while (true) {
    size_t best = added_.size();
    for (size_t k = 0; k < added_.size(); ++k) {
      if (next[k] < pos) next[k] = text.find(added_[k].content, pos);
      if (next[k] == std::string_view::npos) continue;
      if (best == added_.size() || next[k] < next[best] ||
          (next[k] == next[best] && added_[k].content.size() > added_[best].content.size()))
        best = k;
    }
    if (best == added_.size()) break;
    encode_plain(text.substr(pos, next[best] - pos), cache, ids);
    ids.push_back(added_[best].id);
    pos = next[best] + added_[best].content.size();
  }
  encode_plain(text.substr(pos), cache, ids);
  return ids;
}

void Gpt2Bpe::encode_plain(std::string_view text, WordCache& cache,
                           std::vector<int32_t>& ids) const {
  auto word = [&](std::string_view w) {
    if (w.size() > kMaxCachedWordBytes) return merge_word(w, ids);
    auto it = cache.words.find(w);
    if (it == cache.words.end()) {
      const size_t start = ids.size();
      merge_word(w, ids);
      if (cache.words.size() < kMaxCachedWords) {
        cache.words.emplace(w, std::make_pair(cache.ids.size(), ids.size() - start));
        cache.ids.insert(cache.ids.end(), ids.begin() + static_cast<std::ptrdiff_t>(start),
                         ids.end());
      }
      return;
    }
    const auto first = cache.ids.begin() + static_cast<std::ptrdiff_t>(it->second.first);
    ids.insert(ids.end(), first, first + static_cast<std::ptrdiff_t>(it->second.second));
  };
  // PCRE2 matches valid UTF-8 only: each run of it goes through the pattern, each byte that is
  // not part of a valid character is a pre-token of its own (its byte's token).
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(pattern_->code, nullptr);
  std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> release(match,
                                                                         pcre2_match_data_free);
  // Every character starts a match of some alternative (letters, numbers, space, anything else),
  // so each match starts where the last one ended and the matches tile the run. (PCRE2_ANCHORED
  // would say so, but takes the JIT off.)
  auto run = [&](std::string_view s) {
    for (size_t at = 0; at < s.size();) {
      const int rc = pcre2_match(pattern_->code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(),
                                 at, PCRE2_NO_UTF_CHECK, match, nullptr);
      if (rc < 0)
        throw DataError("PCRE2 failed on GPT-2's pattern (error " + std::to_string(rc) + ")",
                        "report the text that caused it");
      const PCRE2_SIZE end = pcre2_get_ovector_pointer(match)[1];
      word(s.substr(at, end - at));
      at = end;
    }
  };
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const size_t n = static_cast<unsigned char>(text[i]) < 0x80 ? 1 : valid_char_length(text, i);
    if (n > 0) {
      i += n;
      continue;
    }
    run(text.substr(start, i - start));
    word(text.substr(i, 1));
    start = ++i;
  }
  run(text.substr(start));
}

void Gpt2Bpe::merge_word(std::string_view word, std::vector<int32_t>& ids) const {
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  const int32_t n = static_cast<int32_t>(word.size());
  std::vector<Symbol> symbols(word.size());
  for (int32_t i = 0; i < n; ++i)
    symbols[i] = {byte_ids_[static_cast<unsigned char>(word[i])], i - 1, i + 1 < n ? i + 1 : -1,
                  true};
  // (rank, position, merged id), lowest rank first and leftmost among equals: the order of
  // `tokenizers`' BPE (GPT-2's encoder.py agrees on every merge table learned by BPE training).
  using Candidate = std::array<int32_t, 3>;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto offer = [&](int32_t left) {
    if (left < 0 || symbols[left].next < 0) return;
    const auto it = merge_ranks_.find(pair_key(symbols[left].id, symbols[symbols[left].next].id));
    if (it != merge_ranks_.end()) queue.push({it->second.first, left, it->second.second});
  };
  for (int32_t i = 0; i + 1 < n; ++i) offer(i);
  while (!queue.empty()) {
    const auto [rank, left, merged] = queue.top();
    queue.pop();
    Symbol& s = symbols[left];
    if (!s.alive || s.next < 0) continue;
    // Stale when either side has changed since the candidate was offered.
    const auto it = merge_ranks_.find(pair_key(s.id, symbols[s.next].id));
    if (it == merge_ranks_.end() || it->second.second != merged) continue;
    Symbol& right = symbols[s.next];
    right.alive = false;
    s.id = merged;
    s.next = right.next;
    if (s.next >= 0) symbols[s.next].prev = left;
    offer(s.prev);
    offer(left);
  }
  for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

void Gpt2Bpe::index_surfaces() {
  surfaces_.clear();
  surfaces_.reserve(tokens_.size());
  for (const std::string& token : tokens_) surfaces_.push_back(token_bytes(token));
}

}  // namespace ouroboros::detail
