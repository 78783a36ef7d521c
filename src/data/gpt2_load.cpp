// Reading and writing GPT-2's byte-level BPE in Hugging Face's formats: tokenizer.json, and the
// original vocab.json + merges.txt; what is not byte-level BPE is refused in one line.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "gpt2_detail.h"
#include "ouroboros/core/errors.h"

namespace ouroboros::detail {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kEndOfText = "<|endoftext|>";
const std::string kKindHint =
    "gpt2 reads byte-level BPE tokenizers (GPT-2's): a BPE model with the ByteLevel "
    "pre-tokenizer and decoder";

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw DataError("cannot read tokenizer file " + path.string(),
                    "check --tokenizer-file: a tokenizer.json, or a directory with vocab.json + "
                    "merges.txt");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw DataError(source + " is not valid JSON: " + e.what(),
                    "use an unchanged tokenizer file from Hugging Face");
  }
}

// The string value of j[key], or fallback when it is absent or null.
std::string string_or(const json& j, const char* key, const std::string& fallback) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  return j.at(key).get<std::string>();
}

bool flag_or(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  return j.at(key).get<bool>();
}

// Refuses, naming the part, what GPT-2's tokenizer would not do: a normalizer, another
// pre-tokenizer or decoder, options that change pre-tokenization or merging.
void check_byte_level(const json& root, const std::string& source) {
  auto refuse = [&](const std::string& what) {
    throw DataError(source + " is not a GPT-2 style tokenizer: " + what, kKindHint);
  };
  const json& model = root.at("model");
  const std::string type = string_or(model, "type", "");
  if (type != "BPE") refuse("its model is " + (type.empty() ? "untyped" : type) + ", not BPE");
  if (!string_or(model, "continuing_subword_prefix", "").empty() ||
      !string_or(model, "end_of_word_suffix", "").empty())
    refuse("its BPE model has a subword prefix or suffix");
  if (!model.value("dropout", json()).is_null() && model.at("dropout").get<double>() != 0.0)
    refuse("its BPE model has dropout");
  if (flag_or(model, "ignore_merges", false)) refuse("its BPE model ignores merges");
  if (!root.value("normalizer", json()).is_null()) refuse("it has a normalizer");
  const json pre = root.value("pre_tokenizer", json());
  if (pre.is_null() || string_or(pre, "type", "") != "ByteLevel")
    refuse("its pre-tokenizer is not ByteLevel");
  if (flag_or(pre, "add_prefix_space", false)) refuse("its pre-tokenizer adds a prefix space");
  if (!flag_or(pre, "use_regex", true)) refuse("its pre-tokenizer does not use GPT-2's pattern");
  const json decoder = root.value("decoder", json());
  if (decoder.is_null() || string_or(decoder, "type", "") != "ByteLevel")
    refuse("its decoder is not ByteLevel");
}

std::vector<Gpt2Bpe::Merge> tokenizer_json_merges(const json& merges, const std::string& source) {
  std::vector<Gpt2Bpe::Merge> out;
  out.reserve(merges.size());
  for (const json& m : merges) {
    if (m.is_string()) {  // "a b", as tokenizers before 0.21 write them
      const std::string line = m.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        throw DataError(source + " has a merge that is not two tokens: '" + line + "'",
                        "use an unchanged tokenizer file from Hugging Face");
      out.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else {  // ["a", "b"], as later versions write them
      out.emplace_back(m.at(0).get<std::string>(), m.at(1).get<std::string>());
    }
  }
  return out;
}

}  // namespace

Gpt2Bpe::Gpt2Bpe(const std::unordered_map<std::string, int32_t>& vocab, std::vector<Merge> merges,
                 std::vector<Gpt2AddedToken> added, const std::string& source)
    : model_vocab_(vocab), added_(std::move(added)) {
  const std::string hint = "use an unchanged tokenizer file from Hugging Face";
  // Every id from 0 to n - 1 names one token; an added token may repeat a vocabulary entry.
  size_t n = vocab.size();
  for (const auto& a : added_) {
    if (a.id < 0 || static_cast<size_t>(a.id) >= vocab.size() + added_.size())
      throw DataError(source + " gives the added token '" + a.content + "' the id " +
                          std::to_string(a.id) + ", past every other token's",
                      hint);
    n = std::max(n, static_cast<size_t>(a.id) + 1);
  }
  tokens_.assign(n, std::string());
  std::vector<bool> seen(n, false);
  auto place = [&](int32_t id, const std::string& token) {
    if (id < 0 || static_cast<size_t>(id) >= n)
      throw DataError(source + " gives token '" + token + "' the id " + std::to_string(id) +
                          ", outside 0.." + std::to_string(n - 1),
                      hint);
    if (seen[id] && tokens_[id] != token)
      throw DataError(source + " gives the id " + std::to_string(id) + " to both '" + tokens_[id] +
                          "' and '" + token + "'",
                      hint);
    tokens_[id] = token;
    seen[id] = true;
  };
  for (const auto& [token, id] : vocab) place(id, token);
  for (const auto& a : added_) {
    if (a.content.empty()) throw DataError(source + " has an empty added token", hint);
    place(a.id, a.content);
  }
  const auto gap = std::find(seen.begin(), seen.end(), false);
  if (gap != seen.end())
    throw DataError(source + " has no token with id " + std::to_string(gap - seen.begin()),
                    "gpt2 needs the ids 0..n-1 without gaps");
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab.find(gpt2_byte_char(static_cast<unsigned char>(b)));
    if (it == vocab.end())
      throw DataError(source + " has no token for the byte " + std::to_string(b),
                      "gpt2 needs all 256 byte tokens (the ByteLevel alphabet), so that every "
                      "text has an encoding");
    byte_ids_[b] = it->second;
  }
  // A pair listed twice keeps its last rank, as `tokenizers` builds its table.
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const auto l = vocab.find(left), r = vocab.find(right), m = vocab.find(left + right);
    if (l == vocab.end() || r == vocab.end() || m == vocab.end())
      throw DataError(source + " has the merge '" + left + " " + right +
                          "' of tokens that are not in its vocabulary",
                      hint);
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(l->second)) << 32) |
                         static_cast<uint32_t>(r->second);
    merge_ranks_[key] = {static_cast<int32_t>(rank), m->second};
  }
  init_pattern();
  index_surfaces();
  tokenizer_json_ = serialize(merges);
}

std::string Gpt2Bpe::serialize(const std::vector<Merge>& merges) const {
  json vocab = json::object();
  for (const auto& [token, id] : model_vocab_) vocab[token] = id;
  json merge_list = json::array();
  for (const auto& [left, right] : merges) merge_list.push_back(left + " " + right);
  json added = json::array();
  for (const auto& a : added_)
    added.push_back({{"id", a.id},
                     {"content", a.content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", a.normalized},
                     {"special", a.special}});
  // GPT-2's own settings (Hugging Face's gpt2/tokenizer.json).
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", true},
                           {"use_regex", true}};
  const json root = {{"version", "1.0"},
                     {"truncation", nullptr},
                     {"padding", nullptr},
                     {"added_tokens", added},
                     {"normalizer", nullptr},
                     {"pre_tokenizer", byte_level},
                     {"post_processor", byte_level},
                     {"decoder", byte_level},
                     {"model",
                      {{"type", "BPE"},
                       {"dropout", nullptr},
                       {"unk_token", nullptr},
                       {"continuing_subword_prefix", nullptr},
                       {"end_of_word_suffix", nullptr},
                       {"fuse_unk", false},
                       {"byte_fallback", false},
                       {"ignore_merges", false},
                       {"vocab", vocab},
                       {"merges", merge_list}}}};
  return root.dump();
}

std::shared_ptr<const Gpt2Bpe> gpt2_from_tokenizer_json(const std::string& text,
                                                        const std::string& source) {
  const json root = parse_json(text, source);
  try {
    if (!root.is_object() || !root.contains("model"))
      throw DataError(source + " is not a tokenizer.json (it has no model)",
                      "pass a tokenizer.json, or a directory with vocab.json + merges.txt");
    check_byte_level(root, source);
    const json& model = root.at("model");
    std::unordered_map<std::string, int32_t> vocab;
    for (const auto& [token, id] : model.at("vocab").items()) vocab[token] = id.get<int32_t>();
    std::vector<Gpt2AddedToken> added;
    for (const json& a : root.value("added_tokens", json::array())) {
      // Stripping or whole-word matching would change where an added token is found.
      if (flag_or(a, "lstrip", false) || flag_or(a, "rstrip", false) ||
          flag_or(a, "single_word", false))
        throw DataError(source + " has the added token '" + a.at("content").get<std::string>() +
                            "' with lstrip, rstrip or single_word, which gpt2 does not do",
                        kKindHint);
      added.push_back({a.at("id").get<int32_t>(), a.at("content").get<std::string>(),
                       flag_or(a, "special", false), flag_or(a, "normalized", false)});
    }
    return std::make_shared<const Gpt2Bpe>(
        vocab, tokenizer_json_merges(model.value("merges", json::array()), source),
        std::move(added), source);
  } catch (const json::exception& e) {
    throw DataError(source + " is damaged: " + e.what(),
                    "use an unchanged tokenizer file from Hugging Face");
  }
}

std::shared_ptr<const Gpt2Bpe> gpt2_from_vocab_merges(const std::string& vocab_json,
                                                      const std::string& merges_txt,
                                                      const std::string& source) {
  const json root = parse_json(vocab_json, source + " (vocab.json)");
  std::unordered_map<std::string, int32_t> vocab;
  try {
    for (const auto& [token, id] : root.items()) vocab[token] = id.get<int32_t>();
  } catch (const json::exception& e) {
    throw DataError(source + " has a vocab.json that is not {token: id}: " + e.what(),
                    "use GPT-2's vocab.json");
  }
  std::vector<Gpt2Bpe::Merge> merges;
  std::istringstream lines(merges_txt);
  std::string line;
  bool first = true;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (first && line.rfind("#version", 0) == 0) continue;
    first = false;
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      throw DataError(source + " has a merges.txt line that is not two tokens: '" + line + "'",
                      "use GPT-2's merges.txt");
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  // These files carry no added tokens; transformers' GPT2Tokenizer makes <|endoftext|> one
  // (its bos, eos and unk), so it is found in text here too.
  std::vector<Gpt2AddedToken> added;
  const auto eot = vocab.find(kEndOfText);
  if (eot != vocab.end()) added.push_back({eot->second, kEndOfText, true, false});
  return std::make_shared<const Gpt2Bpe>(vocab, std::move(merges), std::move(added), source);
}

std::shared_ptr<const Gpt2Bpe> load_gpt2(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "tokenizer.json", ec))
      return gpt2_from_tokenizer_json(read_file(p / "tokenizer.json"),
                                      "tokenizer file " + (p / "tokenizer.json").string());
    if (fs::exists(p / "vocab.json", ec) && fs::exists(p / "merges.txt", ec))
      return gpt2_from_vocab_merges(read_file(p / "vocab.json"), read_file(p / "merges.txt"),
                                    "tokenizer directory " + path);
    throw DataError(
        "tokenizer directory " + path + " holds neither tokenizer.json nor vocab.json + merges.txt",
        "pass the directory of a Hugging Face GPT-2 tokenizer");
  }
  if (!fs::exists(p, ec))
    throw DataError("tokenizer file " + path + " does not exist",
                    "check --tokenizer-file: a tokenizer.json, or a directory with vocab.json + "
                    "merges.txt");
  return gpt2_from_tokenizer_json(read_file(p), "tokenizer file " + path);
}

}  // namespace ouroboros::detail
