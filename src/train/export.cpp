// Hugging Face export: GPT-2 config, safetensors weights in the Conv1D layout, and tokenizer.json.
#include "ouroboros/train/export.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {

namespace fs = std::filesystem;

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's byte-to-character table (bytes_to_unicode): printable Latin-1 bytes stand for
// themselves, the other 68 for code points from 256 up, in byte order.
std::vector<std::string> byte_level_symbols() {
  std::vector<std::string> out(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    out[b] = utf8(printable ? b : next++);
  }
  return out;
}

bool valid_utf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();  // nlohmann refuses invalid UTF-8 when dumping
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

nlohmann::json special_token(int64_t id, const std::string& content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

nlohmann::json bpe_model(const nlohmann::json& vocab, const nlohmann::json& unk) {
  return {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", unk},
          {"continuing_subword_prefix", nullptr},
          {"end_of_word_suffix", nullptr},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"ignore_merges", false},
          {"vocab", vocab},
          {"merges", nlohmann::json::array()}};
}

// Hugging Face's names of one model tensor, and whether it is a Conv1D weight ([in, out]).
std::pair<std::string, bool> hf_name(const std::string& name) {
  const bool conv1d =
      name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0 &&
      (name.find(".c_attn.") != std::string::npos || name.find(".c_proj.") != std::string::npos ||
       name.find(".c_fc.") != std::string::npos);
  return {"transformer." + name, conv1d};
}

void write_json(const fs::path& path, const nlohmann::json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  if (!out) throw Error("could not write " + path.string(), "check the --out directory");
}

}  // namespace

nlohmann::json hf_tokenizer_json(const Tokenizer& tok) {
  const std::vector<std::string>& vocab = tok.vocab();
  nlohmann::json j = {{"version", "1.0"},          {"truncation", nullptr},
                      {"padding", nullptr},        {"added_tokens", nlohmann::json::array()},
                      {"normalizer", nullptr},     {"pre_tokenizer", nullptr},
                      {"post_processor", nullptr}, {"decoder", nullptr}};
  // gpt2 keeps its tokenizer.json as its model.
  if (tok.kind() == "gpt2") return nlohmann::json::parse(tok.model_proto());
  nlohmann::json ids = nlohmann::json::object();
  if (tok.kind() == "byte") {
    const std::vector<std::string> symbols = byte_level_symbols();
    for (int64_t b = 0; b < 256; ++b) ids[symbols[static_cast<size_t>(b)]] = b;
    const nlohmann::json byte_level = {{"type", "ByteLevel"},
                                       {"add_prefix_space", false},
                                       {"trim_offsets", false},
                                       {"use_regex", false}};
    j["pre_tokenizer"] = byte_level;
    j["decoder"] = byte_level;
    j["model"] = bpe_model(ids, nullptr);
    return j;
  }
  // Symbols that are not UTF-8 (stray bytes the char tokenizer keeps as symbols, or words made
  // of them) cannot occur in a Python string: they keep their ids under a placeholder name.
  for (size_t i = 0; i < vocab.size(); ++i) {
    const std::string name =
        valid_utf8(vocab[i]) ? vocab[i] : "<invalid-utf8-" + std::to_string(i) + ">";
    ids[name] = static_cast<int64_t>(i);
  }
  if (tok.unk_id() >= 0) j["added_tokens"].push_back(special_token(tok.unk_id(), "<unk>"));
  if (tok.kind() == "char") {
    j["decoder"] = {{"type", "Fuse"}};
    j["model"] = bpe_model(ids, "<unk>");
    return j;
  }
  if (tok.kind() == "word") {
    // Line ends become the <eos> word; decoding glues "\n" to the word before it.
    j["normalizer"] = {
        {"type", "Replace"}, {"pattern", {{"String", "\n"}}}, {"content", " <eos> "}};
    j["pre_tokenizer"] = {{"type", "WhitespaceSplit"}};
    j["decoder"] = {
        {"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "<eos>"}}}, {"content", "##\n"}},
          {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", false}}}}};
    j["model"] = {{"type", "WordLevel"}, {"vocab", ids}, {"unk_token", "<unk>"}};
    return j;
  }
  return nullptr;
}

void write_safetensors(const std::string& path, const std::vector<std::string>& names,
                       const std::vector<Tensor>& tensors) {
  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  std::vector<Tensor> data;
  int64_t offset = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    Tensor t = tensors[i].detach().to(torch::kFloat32).contiguous();
    const int64_t bytes = t.numel() * 4;
    header[names[i]] = {
        {"dtype", "F32"}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = text.size();
  unsigned char size[8];
  for (int b = 0; b < 8; ++b) size[b] = static_cast<unsigned char>(n >> (8 * b));  // little endian
  out.write(reinterpret_cast<const char*>(size), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const Tensor& t : data) {
    out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * 4));
  }
  if (!out) throw Error("could not write " + path, "check disk space and the --out directory");
}

ExportResult export_huggingface(const Checkpoint& ck, const std::string& dir, bool overwrite) {
  const ModelConfig& m = ck.config.model;
  if (m.model != ModelKind::kGpt) {
    throw ConfigError(
        std::string("export --format hf: a ") + name_of(m.model) + " model has no GPT-2 form",
        "export a checkpoint of --model gpt");
  }
  const fs::path out(dir);
  if (fs::exists(out) && !fs::is_directory(out)) {
    throw ConfigError("export: " + dir + " is a file", "give a directory with --out");
  }
  if (fs::exists(out) && !fs::is_empty(out) && !overwrite) {
    throw ConfigError("export: " + dir + " is not empty",
                      "give a new directory with --out, or --overwrite to replace its files");
  }
  fs::create_directories(out);
  ExportResult result;

  std::vector<std::string> names;
  std::vector<Tensor> tensors;
  for (size_t i = 0; i < ck.model.size(); ++i) {
    auto [name, conv1d] = hf_name(ck.model.names()[i]);
    names.push_back(name);
    tensors.push_back(conv1d ? ck.model.tensors()[i].t() : ck.model.tensors()[i]);
  }
  write_safetensors((out / "model.safetensors").string(), names, tensors);
  result.files.push_back("model.safetensors");

  const bool word = ck.tokenizer.kind() == "word";
  // gpt2's <|endoftext|> is GPT-2's bos and eos, where the vocabulary has it.
  const std::string end_of_text = "<|endoftext|>";
  const bool gpt2_eos = ck.tokenizer.kind() == "gpt2" &&
                        std::find(ck.tokenizer.vocab().begin(), ck.tokenizer.vocab().end(),
                                  end_of_text) != ck.tokenizer.vocab().end();
  const nlohmann::json eos = word       ? nlohmann::json(ck.tokenizer.encode("\n").at(0))
                             : gpt2_eos ? nlohmann::json(ck.tokenizer.encode(end_of_text).at(0))
                                        : nlohmann::json(nullptr);
  write_json(out / "config.json",
             {{"architectures", {"GPT2LMHeadModel"}},
              {"model_type", "gpt2"},
              {"vocab_size", m.vocab_size},
              {"n_positions", m.block_size},
              {"n_ctx", m.block_size},
              {"n_embd", m.n_embd},
              {"n_layer", m.n_layer},
              {"n_head", m.n_head},
              {"n_inner", nullptr},
              {"activation_function", "gelu_new"},  // the tanh approximation, as trained
              {"resid_pdrop", m.dropout},
              {"embd_pdrop", m.dropout},
              {"attn_pdrop", m.dropout},
              {"layer_norm_epsilon", 1e-5},
              {"initializer_range", 0.02},
              {"scale_attn_weights", true},
              {"tie_word_embeddings", true},
              {"bos_token_id", eos},
              {"eos_token_id", eos},
              {"torch_dtype", "float32"}});
  result.files.push_back("config.json");

  const nlohmann::json tok = hf_tokenizer_json(ck.tokenizer);
  if (tok.is_null()) {
    result.tokenizer_note = "no tokenizer.json: a " + ck.tokenizer.kind() +
                            " vocabulary has no tokenizer.json form here";
    if (!ck.tokenizer.model_proto().empty()) {  // bpe, unigram: the sentencepiece model itself
      std::ofstream(out / "sentencepiece.model", std::ios::binary) << ck.tokenizer.model_proto();
      result.files.push_back("sentencepiece.model");
      result.tokenizer_note += "; sentencepiece.model holds the tokenizer (ids as in ouroboros)";
    }
    return result;
  }
  write_json(out / "tokenizer.json", tok);
  nlohmann::json config = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                           {"model_max_length", m.block_size},
                           {"clean_up_tokenization_spaces", false}};
  if (ck.tokenizer.unk_id() >= 0) config["unk_token"] = "<unk>";
  if (word) config["eos_token"] = "<eos>";
  if (gpt2_eos) config["bos_token"] = config["eos_token"] = end_of_text;
  write_json(out / "tokenizer_config.json", config);
  result.files.push_back("tokenizer.json");
  result.files.push_back("tokenizer_config.json");
  result.tokenizer_note = ck.tokenizer.kind() + " tokenizer as tokenizer.json";
  if (word) result.tokenizer_note += " (decoding puts a space after each line end)";
  return result;
}

}  // namespace ouroboros
