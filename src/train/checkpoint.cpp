// Checkpoint files in torch.save's zip format (torch::pickle_save), so Python reads them directly.
#include "ouroboros/train/checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {

using c10::impl::GenericDict;

GenericDict new_dict() { return GenericDict(c10::StringType::get(), c10::AnyType::get()); }

template <typename F>
auto field(const std::string& path, const char* what, F&& get) {
  try {
    return get();
  } catch (const c10::Error&) {
    throw CheckpointError("checkpoint " + path + " has no valid '" + what + "' entry",
                          "it was not written by ouroboros or is damaged");
  }
}

}  // namespace

void save_checkpoint(const std::string& path, const Checkpoint& ck) {
  GenericDict model = new_dict();
  for (size_t i = 0; i < ck.model.size(); ++i) {
    model.insert(ck.model.names()[i], ck.model.tensors()[i].detach().clone());
  }
  GenericDict tokenizer = new_dict();
  tokenizer.insert("kind", ck.tokenizer.kind());
  c10::List<std::string> vocab;
  for (const auto& s : ck.tokenizer.vocab()) vocab.push_back(s);
  tokenizer.insert("vocab", vocab);
  GenericDict rng = new_dict();
  rng.insert("sampler", static_cast<int64_t>(ck.sampler_state));
  c10::List<Tensor> gens;
  for (const auto& g : ck.generator_states) gens.push_back(g);
  rng.insert("dropout", gens);

  GenericDict d = new_dict();
  d.insert("format_version", kCheckpointFormatVersion);
  d.insert("model", model);
  d.insert("optimizer", ck.optimizer);
  d.insert("config", ck.config.to_json().dump());
  d.insert("tokenizer", tokenizer);
  d.insert("step", ck.step);
  d.insert("rng", rng);
  if (!ck.memory.empty()) {  // recurrent models only: "layers.i" -> [B, M, C]
    GenericDict memory = new_dict();
    for (const auto& [layer, t] : ck.memory) {
      memory.insert("layers." + std::to_string(layer), t.detach().clone());
    }
    d.insert("memory", memory);
  }

  std::vector<char> bytes = torch::pickle_save(c10::IValue(d));
  std::filesystem::path target(path);
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) throw CheckpointError("could not write checkpoint " + tmp, "check disk space");
  }
  std::filesystem::rename(tmp, path);
}

Checkpoint load_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError("checkpoint not found: " + path, "check the --checkpoint path");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  c10::IValue root;
  try {
    root = torch::pickle_load(bytes);
  } catch (const std::exception&) {
    throw CheckpointError("checkpoint " + path + " is corrupt or not a checkpoint",
                          "use a file written by `ouroboros train`");
  }
  if (!root.isGenericDict()) {
    throw CheckpointError("checkpoint " + path + " is not a dict", "use a file written by ouroboros");
  }
  GenericDict d = root.toGenericDict();
  int64_t version = field(path, "format_version", [&] { return d.at("format_version").toInt(); });
  if (version != kCheckpointFormatVersion) {
    throw CheckpointError("checkpoint " + path + " has format_version " + std::to_string(version) +
                              ", this build reads " + std::to_string(kCheckpointFormatVersion),
                          "use the ouroboros version that wrote it");
  }
  Checkpoint ck;
  std::string config_text = field(path, "config", [&] { return d.at("config").toStringRef(); });
  try {
    ck.config.merge_json(nlohmann::json::parse(config_text));
  } catch (const std::exception& e) {
    throw CheckpointError("checkpoint " + path + " has an unreadable config: " + e.what());
  }
  field(path, "model", [&] {
    for (const auto& item : d.at("model").toGenericDict()) {
      ck.model.add(item.key().toStringRef(), item.value().toTensor());
    }
    return 0;
  });
  ck.optimizer = field(path, "optimizer", [&] { return d.at("optimizer").toGenericDict(); });
  ck.step = field(path, "step", [&] { return d.at("step").toInt(); });
  field(path, "tokenizer", [&] {
    GenericDict t = d.at("tokenizer").toGenericDict();
    std::vector<std::string> vocab;
    for (const auto& s : t.at("vocab").toListRef()) vocab.push_back(s.toStringRef());
    ck.tokenizer = Tokenizer::from_vocab(t.at("kind").toStringRef(), vocab);
    return 0;
  });
  field(path, "rng", [&] {
    GenericDict r = d.at("rng").toGenericDict();
    ck.sampler_state = static_cast<uint64_t>(r.at("sampler").toInt());
    for (const auto& g : r.at("dropout").toListRef()) ck.generator_states.push_back(g.toTensor());
    return 0;
  });
  if (d.contains("memory")) {
    field(path, "memory", [&] {
      for (const auto& item : d.at("memory").toGenericDict()) {
        const std::string& key = item.key().toStringRef();
        ck.memory[std::stoll(key.substr(key.find('.') + 1))] = item.value().toTensor();
      }
      return 0;
    });
  }
  return ck;
}

void check_compatible(const Checkpoint& ck, const ModelConfig& model, const Tokenizer& tok,
                      const std::string& path) {
  const ModelConfig& m = ck.config.model;
  auto differs = [&](const char* key, int64_t a, int64_t b) {
    if (a != b) {
      throw CheckpointError("checkpoint " + path + " has " + key + " " + std::to_string(a) +
                                " but the run asks for " + std::to_string(b),
                            "drop the conflicting flag or start a fresh run");
    }
  };
  differs("n_layer", m.n_layer, model.n_layer);
  differs("n_head", m.n_head, model.n_head);
  differs("n_embd", m.n_embd, model.n_embd);
  differs("block_size", m.block_size, model.block_size);
  differs("vocab_size", m.vocab_size, model.vocab_size);
  if (m.model != model.model) {
    throw CheckpointError("checkpoint " + path + " holds a " + m.model + " model but the run asks for " +
                              model.model, "drop --model or start a fresh run");
  }
  if (ck.tokenizer.kind() != tok.kind() || ck.tokenizer.vocab() != tok.vocab()) {
    throw CheckpointError("checkpoint " + path + " was trained with another vocabulary (" +
                              ck.tokenizer.kind() + ", " +
                              std::to_string(ck.tokenizer.vocab_size()) + " symbols)",
                          "use the same --data, --format and --tokenizer as the run that wrote it");
  }
}

}  // namespace ouroboros
