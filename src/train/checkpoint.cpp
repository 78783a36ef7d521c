// Checkpoint files in torch.save's zip format (torch::pickle_save), so Python reads them directly.
#include "ouroboros/train/checkpoint.h"

#include <cstdio>
#include <unistd.h>

#include <atomic>
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

int64_t tensor_checksum(const Tensor& t) {
  const Tensor c = t.detach().contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  uint64_t h = 1469598103934665603ULL;  // FNV-1a, 64 bit
  for (size_t i = 0, n = c.nbytes(); i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return static_cast<int64_t>(h);
}

void save_checkpoint(const std::string& path, const Checkpoint& ck) {
  GenericDict model = new_dict();
  GenericDict checksums = new_dict();
  for (size_t i = 0; i < ck.model.size(); ++i) {
    model.insert(ck.model.names()[i], ck.model.tensors()[i].detach().clone());
    checksums.insert("model." + ck.model.names()[i], tensor_checksum(ck.model.tensors()[i]));
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
  d.insert("checksums", checksums);
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
  // A name of this process and call alone, so concurrent writers never share a temporary file.
  static std::atomic<int64_t> counter{0};
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  // Written, flushed to the disk, then renamed: a crash leaves the old checkpoint or the new one.
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  bool ok = f && std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() &&
            std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  if (f) ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw CheckpointError("could not write checkpoint " + tmp, "check disk space and --out-dir");
  }
  std::filesystem::rename(tmp, path);
}

Checkpoint load_checkpoint(const std::string& path) {
  if (std::filesystem::is_directory(path)) {
    throw CheckpointError("checkpoint " + path + " is a directory",
                          "give the checkpoint file, e.g. " +
                              (std::filesystem::path(path) / "ckpt.pt").string());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError("checkpoint not found: " + path, "check the checkpoint's path");
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
  if (d.contains("checksums")) {  // written since checksums exist; older files load unchecked
    GenericDict sums = field(path, "checksums", [&] { return d.at("checksums").toGenericDict(); });
    for (size_t i = 0; i < ck.model.size(); ++i) {
      const std::string key = "model." + ck.model.names()[i];
      if (!sums.contains(key) || sums.at(key).toInt() != tensor_checksum(ck.model.tensors()[i])) {
        throw CheckpointError("checkpoint " + path + " is damaged: tensor " + ck.model.names()[i] +
                                  " does not match its checksum",
                              "restore the file from a copy or start a fresh run");
      }
    }
  }
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
