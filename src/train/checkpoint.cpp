// Checkpoints in torch.save's zip format (torch::pickle_save), so Python reads them directly: what
// a file, shard and manifest hold, and the checks on reading it back.
#include "ouroboros/train/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include "checkpoint_detail.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/train/method.h"

namespace ouroboros {
namespace {

using c10::impl::GenericDict;
using namespace checkpoint_detail;

template <typename F>
auto field(const std::string& path, const char* what, F&& get) {
  try {
    return get();
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception&) {  // c10::Error of a wrong type, a number that does not parse
    throw CheckpointError("checkpoint " + path + " has no valid '" + what + "' entry",
                          kDamagedHint);
  }
}

// Strings as bytes: a uint8 tensor of their concatenation and an int64 tensor of the n + 1 offsets.
// Pickled text must be UTF-8 for Python to read it, and byte and char vocabularies hold single
// bytes that are not (torch.load failed on every byte-level checkpoint).
std::pair<Tensor, Tensor> pack_strings(const std::vector<std::string>& strings) {
  std::vector<int64_t> offsets{0};
  std::string all;
  for (const auto& s : strings) {
    all += s;
    offsets.push_back(static_cast<int64_t>(all.size()));
  }
  Tensor bytes = torch::empty({static_cast<int64_t>(all.size())}, torch::kUInt8);
  if (!all.empty()) std::memcpy(bytes.data_ptr(), all.data(), all.size());
  return {bytes, torch::tensor(offsets, torch::kInt64)};
}

std::vector<std::string> unpack_strings(const std::string& path, const Tensor& bytes,
                                        const Tensor& offsets) {
  check_layout(path, "tokenizer.vocab_bytes", bytes);
  check_layout(path, "tokenizer.vocab_offsets", offsets);
  if (bytes.scalar_type() != torch::kUInt8 || offsets.scalar_type() != torch::kInt64 ||
      bytes.dim() != 1 || offsets.dim() != 1 || offsets.numel() < 1) {
    throw std::runtime_error("vocabulary tensors of the wrong type");
  }
  const auto* o = offsets.data_ptr<int64_t>();
  const auto* b = reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>());
  std::vector<std::string> out;
  for (int64_t i = 0; i + 1 < offsets.numel(); ++i) {
    if (o[i] < 0 || o[i + 1] < o[i] || o[i + 1] > bytes.numel()) {
      throw std::runtime_error("vocabulary offsets out of range");
    }
    out.emplace_back(b + o[i], static_cast<size_t>(o[i + 1] - o[i]));
  }
  return out;
}

// A bpe, unigram or gpt2 tokenizer from its serialized model (tokenizer.model, uint8:
// sentencepiece's ModelProto, gpt2's tokenizer.json), which must give the saved vocabulary. Each
// failure is one CheckpointError line.
Tokenizer modelled_tokenizer(const std::string& path, const std::string& kind, const GenericDict& t,
                             const std::vector<std::string>& vocab) {
  const std::string what = "checkpoint " + path + " has a " + kind + " tokenizer ";
  const std::string model = kind == "gpt2" ? "tokenizer.json" : "sentencepiece model";
  if (!t.contains("model") || !t.at("model").isTensor()) {
    throw CheckpointError(what + "without its " + model + " (tokenizer.model)", kDamagedHint);
  }
  const Tensor bytes = t.at("model").toTensor();
  check_layout(path, "tokenizer.model", bytes);
  if (bytes.scalar_type() != torch::kUInt8 || bytes.dim() != 1) {
    throw CheckpointError(what + "whose " + model + " is not a uint8 vector", kDamagedHint);
  }
  const std::string proto(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()),
                          static_cast<size_t>(bytes.numel()));
  Tokenizer tok;
  try {
    tok = Tokenizer::from_model(kind, proto);
  } catch (const DataError& e) {
    throw CheckpointError(what + "that does not load: " + e.what());
  }
  if (tok.vocab() != vocab) {
    throw CheckpointError(what + "whose " + model + " does not match its vocabulary", kDamagedHint);
  }
  return tok;
}

}  // namespace

int64_t tensor_checksum(const Tensor& t) {
  const Tensor c = t.detach().contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  uint64_t h = 1469598103934665603ULL;  // FNV-1a, 64 bit
  for (size_t i = 0, n = c.nbytes(); i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return static_cast<int64_t>(h);
}

namespace {

// The model tensors and their checksums, as a file or a shard holds them.
void insert_model(GenericDict& d, const ParamSet& model) {
  GenericDict tensors = new_dict();
  GenericDict checksums = new_dict();
  for (size_t i = 0; i < model.size(); ++i) {
    tensors.insert(model.names()[i], model.tensors()[i].detach().clone());
    checksums.insert("model." + model.names()[i], tensor_checksum(model.tensors()[i]));
  }
  d.insert("model", tensors);
  d.insert("checksums", checksums);
}

void insert_memory(GenericDict& d, const std::map<int64_t, Tensor>& memory) {
  if (memory.empty()) return;  // recurrent models only: "layers.i" -> [B, M, C]
  GenericDict m = new_dict();
  for (const auto& [layer, t] : memory)
    m.insert("layers." + std::to_string(layer), t.detach().clone());
  d.insert("memory", m);
}

// What a single file and a manifest share: format, config, tokenizer, step, sampler state.
GenericDict header_dict(const Checkpoint& ck) {
  GenericDict tokenizer = new_dict();
  tokenizer.insert("kind", ck.tokenizer.kind());
  auto [vocab_bytes, vocab_offsets] = pack_strings(ck.tokenizer.vocab());
  tokenizer.insert("vocab_bytes", vocab_bytes);
  tokenizer.insert("vocab_offsets", vocab_offsets);
  if (!ck.tokenizer.model_proto().empty()) {  // bpe, unigram, gpt2: the serialized model
    const std::string& proto = ck.tokenizer.model_proto();
    Tensor model_bytes = torch::empty({static_cast<int64_t>(proto.size())}, torch::kUInt8);
    std::memcpy(model_bytes.data_ptr(), proto.data(), proto.size());
    tokenizer.insert("model", model_bytes);
  }
  GenericDict d = new_dict();
  d.insert("format_version", kCheckpointFormatVersion);
  if (!ck.run.empty()) d.insert("run", ck.run);
  d.insert("config", ck.config.to_json().dump());
  d.insert("tokenizer", tokenizer);
  d.insert("step", ck.step);
  return d;
}

// A checkpoint file's top-level dict, with one CheckpointError line for whatever is wrong.
GenericDict read_dict(const std::string& path, const std::string& what) {
  const c10::IValue root = read_torch_file(path, what);
  if (!root.isGenericDict()) {
    throw CheckpointError(what + " " + path + " is not a dict", "use a file written by ouroboros");
  }
  GenericDict d = root.toGenericDict();
  const int64_t version =
      field(path, "format_version", [&] { return d.at("format_version").toInt(); });
  if (version < 1 || version > kCheckpointFormatVersion) {
    throw CheckpointError(what + " " + path + " has format_version " + std::to_string(version) +
                              ", this build reads 1 to " + std::to_string(kCheckpointFormatVersion),
                          "use the ouroboros version that wrote it");
  }
  return d;
}

// The run id, 16 hex digits: it names files in the out-dir (event files), so nothing else.
std::string run_of(const std::string& path, const GenericDict& d) {
  const std::string run = field(path, "run", [&] { return d.at("run").toStringRef(); });
  if (run.size() != 16 || run.find_first_not_of("0123456789abcdef") != std::string::npos) {
    throw CheckpointError("checkpoint " + path + " has no valid 'run' entry", kDamagedHint);
  }
  return run;
}

void read_header(const std::string& path, const GenericDict& d, Checkpoint& ck) {
  const int64_t version = d.at("format_version").toInt();
  if (d.contains("run")) ck.run = run_of(path, d);
  std::string config_text = field(path, "config", [&] { return d.at("config").toStringRef(); });
  try {
    ck.config = checkpoint_config(nlohmann::json::parse(config_text));
  } catch (const std::exception& e) {
    throw CheckpointError("checkpoint " + path + " has an unreadable config: " + e.what());
  }
  // Before format 3, engine.micro_batches (always written, 4 by default) applied to GPipe only:
  // Ouroboros ran whole batches, and the other methods ignored it.
  if (version < 3 && resolved_mode(ck.config.engine) != Mode::kGPipe) {
    ck.config.engine.micro_batches = resolved_mode(ck.config.engine) == Mode::kOuroboros ? 1 : 0;
  }
  ck.step = field(path, "step", [&] { return d.at("step").toInt(); });
  field(path, "tokenizer", [&] {
    GenericDict t = d.at("tokenizer").toGenericDict();
    std::vector<std::string> vocab;
    if (version >= 2) {
      vocab =
          unpack_strings(path, t.at("vocab_bytes").toTensor(), t.at("vocab_offsets").toTensor());
    } else {  // format 1 pickled the symbols as text
      for (const auto& s : t.at("vocab").toListRef()) vocab.push_back(s.toStringRef());
    }
    const std::string kind = t.at("kind").toStringRef();
    if (kind == "bpe" || kind == "unigram" || kind == "gpt2") {
      ck.tokenizer = modelled_tokenizer(path, kind, t, vocab);
    } else {
      ck.tokenizer = Tokenizer::from_vocab(kind, vocab);
    }
    return 0;
  });
}

// The model tensors (added to `into`), checked against their checksums.
void read_model(const std::string& path, const GenericDict& d, ParamSet& into) {
  ParamSet mine;
  field(path, "model", [&] {
    for (const auto& item : d.at("model").toGenericDict()) {
      check_layout(path, item.key().toStringRef(), item.value().toTensor());
      mine.add(item.key().toStringRef(), item.value().toTensor());
    }
    return 0;
  });
  if (d.contains("checksums")) {  // written since checksums exist; older files load unchecked
    GenericDict sums = field(path, "checksums", [&] { return d.at("checksums").toGenericDict(); });
    for (size_t i = 0; i < mine.size(); ++i) {
      const std::string key = "model." + mine.names()[i];
      if (!sums.contains(key) || sums.at(key).toInt() != tensor_checksum(mine.tensors()[i])) {
        throw CheckpointError("checkpoint " + path + " is damaged: tensor " + mine.names()[i] +
                                  " does not match its checksum",
                              "restore the file from a copy or start a fresh run");
      }
    }
  }
  for (size_t i = 0; i < mine.size(); ++i) into.add(mine.names()[i], mine.tensors()[i]);
}

GenericDict read_optimizer(const std::string& path, const GenericDict& d) {
  GenericDict opt = field(path, "optimizer", [&] { return d.at("optimizer").toGenericDict(); });
  field(path, "optimizer", [&] {
    check_layouts(path, "optimizer", c10::IValue(opt));
    return 0;
  });
  return opt;
}

void read_memory(const std::string& path, const GenericDict& d, std::map<int64_t, Tensor>& into) {
  if (!d.contains("memory")) return;
  field(path, "memory", [&] {
    for (const auto& item : d.at("memory").toGenericDict()) {
      const std::string& key = item.key().toStringRef();
      check_layout(path, key, item.value().toTensor());
      into[std::stoll(key.substr(key.find('.') + 1))] = item.value().toTensor();
    }
    return 0;
  });
}

// The batches in flight a single file holds (none saved when it was drained).
PipelineState read_pipeline(const std::string& path, const GenericDict& d) {
  if (!d.contains("pipeline")) return {};
  return field(path, "pipeline", [&] {
    const GenericDict p = d.at("pipeline").toGenericDict();
    check_layouts(path, "pipeline", c10::IValue(p));
    return pipeline_of(p);
  });
}

// A shard's worker's share of them (none when its method saves none).
std::optional<WorkerInFlight> read_worker_pipeline(const std::string& path, const GenericDict& d) {
  if (!d.contains("pipeline")) return std::nullopt;
  return field(path, "pipeline", [&] {
    const GenericDict p = d.at("pipeline").toGenericDict();
    check_layouts(path, "pipeline", c10::IValue(p));
    return worker_of(p);
  });
}

constexpr const char* kManifest = "manifest.pt";

std::string hex_id(int64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

// What a multi-process run's manifest says of its shards.
struct Manifest {
  std::string path;
  std::vector<std::string> names;  // the model's tensors in order
  int64_t id = 0, world = 0, pipeline_start = 0;
  int64_t modules = 0, per_ring = 0;  // K, and the workers of one ring
};

Manifest read_manifest(const std::string& dir, Checkpoint& ck) {
  Manifest m;
  m.path = (std::filesystem::path(dir) / kManifest).string();
  const GenericDict d = read_dict(m.path, "checkpoint manifest");
  read_header(m.path, d, ck);
  field(m.path, "shards", [&] {
    const GenericDict s = d.at("shards").toGenericDict();
    for (const auto& n : s.at("names").toListRef()) m.names.push_back(n.toStringRef());
    m.id = s.at("id").toInt();
    m.world = s.at("world").toInt();
    m.pipeline_start = s.at("pipeline_start").toInt();
    ck.sampler_state = static_cast<uint64_t>(s.at("sampler").toInt());
    return 0;
  });
  if (m.world < 1 || m.world > 65536) {
    throw CheckpointError(
        "checkpoint manifest " + m.path + " names " + std::to_string(m.world) + " shards",
        kDamagedHint);
  }
  m.modules = ck.config.engine.modules;
  if (m.modules < 1 || m.modules > 65536) {
    throw CheckpointError(
        "checkpoint manifest " + m.path + " has " + std::to_string(m.modules) + " modules",
        kDamagedHint);
  }
  // Every ring's workers save the memories of their layers, rows [rB, (r+1)B) of the whole
  // tick's batch (concatenated in ring order they are the memories of one ring of R*B rows),
  // and their modules' dropout generators (ring r's module k is generator r*K + k).
  m.per_ring = m.modules == 1 ? 1 : m.modules - 1;
  const int64_t rings = m.world / m.per_ring;
  if (rings * m.per_ring != m.world || rings != ck.config.dist.replicas) {
    throw CheckpointError("checkpoint manifest " + m.path + " names " + std::to_string(m.world) +
                              " shards for " + std::to_string(ck.config.dist.replicas) +
                              " ring(s) of " + std::to_string(m.per_ring) + " worker(s)",
                          kDamagedHint);
  }
  return m;
}

// The shards read so far, before they are put in the model's and the rings' order.
struct ShardParts {
  std::map<int64_t, std::vector<Tensor>> ring_memory;    // layer -> each ring's rows
  std::vector<std::optional<WorkerInFlight>> pipelines;  // per rank
};

// Shard r: checked to be the manifest's, its tensors added to ck and parts.
void read_shard(const std::string& dir, const Manifest& m, int64_t r, Checkpoint& ck,
                ShardParts& parts) {
  const std::string path = shard_path(dir, m.id, r);
  if (!std::filesystem::exists(path)) {
    throw CheckpointError("checkpoint " + dir + " is missing shard " + path + " (rank " +
                              std::to_string(r) + " of " + std::to_string(m.world) + ")",
                          "copy the whole checkpoint directory, or resume from another one");
  }
  const GenericDict d = read_dict(path, "checkpoint shard");
  field(path, "shard", [&] {
    const GenericDict s = d.at("shard").toGenericDict();
    if (s.at("id").toInt() != m.id || s.at("rank").toInt() != r) {
      throw CheckpointError("checkpoint shard " + path + " belongs to another checkpoint (" +
                                hex_id(s.at("id").toInt()) + " rank " +
                                std::to_string(s.at("rank").toInt()) + ", the manifest's is " +
                                hex_id(m.id) + " rank " + std::to_string(r) + ")",
                            "do not mix the files of two checkpoints; copy the whole directory");
    }
    return 0;
  });
  read_model(path, d, ck.model);
  merge_optimizer_state(ck.optimizer, read_optimizer(path, d));
  field(path, "generators", [&] {
    for (const auto& item : d.at("generators").toGenericDict()) {
      const int64_t k = std::stoll(item.key().toStringRef());
      if (k < 1 || k > m.modules) throw std::out_of_range("module");
      check_layout(path, "generators", item.value().toTensor());
      ck.generator_states[static_cast<size_t>((r / m.per_ring) * m.modules + k - 1)] =
          item.value().toTensor();
    }
    return 0;
  });
  std::map<int64_t, Tensor> memory;
  read_memory(path, d, memory);
  for (auto& [layer, t] : memory) {
    std::vector<Tensor>& rings = parts.ring_memory[layer];
    if (static_cast<int64_t>(rings.size()) != r / m.per_ring) {
      throw CheckpointError("checkpoint shard " + path + " holds the memory of layer " +
                                std::to_string(layer) + " out of ring order",
                            kDamagedHint);
    }
    rings.push_back(t);
  }
  parts.pipelines.push_back(read_worker_pipeline(path, d));
}

// The shards' parts in the order a single file holds them, each checked to be complete.
void join_shards(const std::string& dir, const Manifest& m, ShardParts& parts, Checkpoint& ck) {
  ParamSet merged;  // in the model's order, as a single file holds it
  for (const auto& n : m.names) {
    if (!ck.model.contains(n)) {
      throw CheckpointError("checkpoint " + dir + " holds no tensor " + n + " in any shard",
                            kDamagedHint);
    }
    merged.add(n, ck.model.at(n));
  }
  if (merged.size() != ck.model.size()) {
    throw CheckpointError("checkpoint " + dir + "'s shards hold tensors its manifest does not name",
                          kDamagedHint);
  }
  ck.model = std::move(merged);
  for (auto& [layer, rings] : parts.ring_memory) {
    ck.memory[layer] = rings.size() == 1 ? rings[0] : torch::cat(rings, 0);
  }
  const int64_t K = m.modules;
  for (size_t k = 0; k < ck.generator_states.size(); ++k) {
    if (!ck.generator_states[k].defined()) {
      throw CheckpointError("checkpoint " + dir + " holds no dropout state of module " +
                                std::to_string(static_cast<int64_t>(k) % K + 1) + " of ring " +
                                std::to_string(static_cast<int64_t>(k) / K),
                            kDamagedHint);
    }
  }
  size_t with_pipeline = 0;
  for (const auto& p : parts.pipelines) with_pipeline += p.has_value() ? 1 : 0;
  if (with_pipeline == 0) return;
  if (with_pipeline != parts.pipelines.size()) {
    throw CheckpointError("checkpoint " + dir + " holds the batches in flight of " +
                              std::to_string(with_pipeline) + " of its " +
                              std::to_string(parts.pipelines.size()) + " shards",
                          kDamagedHint);
  }
  ck.pipeline.start = m.pipeline_start;
  for (auto& p : parts.pipelines) ck.pipeline.workers.push_back(std::move(*p));
}

// A directory written by a multi-process run: its manifest and every shard it names, merged.
Checkpoint load_sharded(const std::string& dir) {
  Checkpoint ck;
  const Manifest m = read_manifest(dir, ck);
  ck.generator_states.resize(static_cast<size_t>(m.modules * (m.world / m.per_ring)));
  ShardParts parts;
  for (int64_t r = 0; r < m.world; ++r) read_shard(dir, m, r, ck, parts);
  join_shards(dir, m, parts, ck);
  return ck;
}

}  // namespace

int64_t save_checkpoint(const std::string& path, const Checkpoint& ck) {
  GenericDict d = header_dict(ck);
  insert_model(d, ck.model);
  d.insert("optimizer", ck.optimizer);
  GenericDict rng = new_dict();
  rng.insert("sampler", static_cast<int64_t>(ck.sampler_state));
  c10::List<Tensor> gens;
  for (const auto& g : ck.generator_states) gens.push_back(g);
  rng.insert("dropout", gens);
  d.insert("rng", rng);
  if (ck.pipeline.saved()) d.insert("pipeline", pipeline_dict(ck.pipeline));
  insert_memory(d, ck.memory);
  return write_atomically(path, pickled(d));
}

std::string shard_path(const std::string& dir, int64_t id, int64_t rank) {
  return (std::filesystem::path(dir) / hex_id(id) / ("rank-" + std::to_string(rank) + ".pt"))
      .string();
}

bool is_sharded_checkpoint(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(std::filesystem::path(path) / kManifest, ec);
}

int64_t save_shard(const std::string& dir, const CheckpointShard& s) {
  GenericDict d = new_dict();
  d.insert("format_version", kCheckpointFormatVersion);
  GenericDict who = new_dict();
  who.insert("id", s.id);
  who.insert("rank", s.rank);
  who.insert("world", s.world);
  d.insert("shard", who);
  insert_model(d, s.model);
  d.insert("optimizer", s.optimizer);
  GenericDict gens = new_dict();
  for (const auto& [k, g] : s.generators) gens.insert(std::to_string(k), g);
  d.insert("generators", gens);
  if (s.pipeline) d.insert("pipeline", worker_dict(*s.pipeline));
  insert_memory(d, s.memory);
  return write_atomically(shard_path(dir, s.id, s.rank), pickled(d));
}

int64_t save_manifest(const std::string& dir, const Checkpoint& meta, int64_t id, int64_t world,
                      const std::vector<std::string>& names) {
  GenericDict d = header_dict(meta);
  GenericDict shards = new_dict();
  shards.insert("id", id);
  shards.insert("world", world);
  shards.insert("sampler", static_cast<int64_t>(meta.sampler_state));
  shards.insert("pipeline_start", meta.pipeline.start);
  c10::impl::GenericList files(c10::StringType::get());
  for (int64_t r = 0; r < world; ++r) {
    files.push_back(std::filesystem::relative(shard_path(dir, id, r), dir).string());
  }
  shards.insert("files", files);
  c10::impl::GenericList order(c10::StringType::get());
  for (const auto& n : names) order.push_back(n);
  shards.insert("names", order);
  d.insert("shards", shards);
  const int64_t bytes =
      write_atomically((std::filesystem::path(dir) / kManifest).string(), pickled(d));
  // The manifest names this checkpoint now: the shards of earlier ones (and the temporary
  // files of writers that died) go.
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name != hex_id(id) && name.size() == 16) {
      std::filesystem::remove_all(e.path(), ec);
    } else if (name.rfind(std::string(kManifest) + ".tmp.", 0) == 0) {
      std::filesystem::remove(e.path(), ec);
    }
  }
  return bytes;
}

std::string checkpoint_run(const std::string& path) {
  const bool sharded = is_sharded_checkpoint(path);
  const std::string file = sharded ? (std::filesystem::path(path) / kManifest).string() : path;
  const GenericDict d = read_dict(file, sharded ? "checkpoint manifest" : "checkpoint");
  return d.contains("run") ? run_of(file, d) : "";
}

std::string checkpoint_dir(const std::string& path) {
  std::filesystem::path at = std::filesystem::path(path).lexically_normal();
  if (!at.has_filename()) at = at.parent_path();  // "runs/x/ckpt/"
  return at.has_parent_path() ? at.parent_path().string() : ".";
}

Checkpoint load_checkpoint(const std::string& path) {
  if (is_sharded_checkpoint(path)) return load_sharded(path);
  if (std::filesystem::is_directory(path)) {
    throw CheckpointError("checkpoint " + path + " is a directory without " + kManifest,
                          "give the checkpoint file, e.g. " +
                              (std::filesystem::path(path) / "ckpt.pt").string() +
                              ", or the directory of a multi-process run's checkpoint");
  }
  const GenericDict d = read_dict(path, "checkpoint");
  Checkpoint ck;
  read_header(path, d, ck);
  read_model(path, d, ck.model);
  ck.optimizer = read_optimizer(path, d);
  field(path, "rng", [&] {
    GenericDict r = d.at("rng").toGenericDict();
    ck.sampler_state = static_cast<uint64_t>(r.at("sampler").toInt());
    for (const auto& g : r.at("dropout").toListRef()) {
      check_layout(path, "rng.dropout", g.toTensor());
      ck.generator_states.push_back(g.toTensor());
    }
    return 0;
  });
  ck.pipeline = read_pipeline(path, d);
  read_memory(path, d, ck.memory);
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
    throw CheckpointError("checkpoint " + path + " holds a " + name_of(m.model) +
                              " model but the run asks for " + name_of(model.model),
                          "drop --model or start a fresh run");
  }
  if (ck.tokenizer.kind() != tok.kind() || ck.tokenizer.vocab() != tok.vocab() ||
      ck.tokenizer.model_proto() != tok.model_proto()) {
    throw CheckpointError("checkpoint " + path + " was trained with another vocabulary (" +
                              ck.tokenizer.kind() + ", " +
                              std::to_string(ck.tokenizer.vocab_size()) + " symbols)",
                          "use the same --data, --format and --tokenizer as the run that wrote it");
  }
}

}  // namespace ouroboros
