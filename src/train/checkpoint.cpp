// Checkpoint files in torch.save's zip format (torch::pickle_save), so Python reads them directly.
#include "ouroboros/train/checkpoint.h"

#include <cstdio>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <tuple>

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <torch/csrc/jit/serialization/unpickler.h>

#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"
#include "ouroboros/train/method.h"

namespace ouroboros {
namespace {

using c10::impl::GenericDict;

GenericDict new_dict() { return GenericDict(c10::StringType::get(), c10::AnyType::get()); }

template <typename F>
auto field(const std::string& path, const char* what, F&& get) {
  try {
    return get();
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception&) {  // c10::Error of a wrong type, a number that does not parse
    throw CheckpointError("checkpoint " + path + " has no valid '" + what + "' entry",
                          "it was not written by ouroboros or is damaged");
  }
}

// Bytes of a file for the zip reader, every read clamped to the end: libtorch 1.13's own vector
// reader copies whole requests, so a truncated file read past its buffer (found by ASan).
class BoundedReader final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BoundedReader(std::vector<char> bytes) : bytes_(std::move(bytes)) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= bytes_.size()) return 0;
    const size_t count = std::min<size_t>(n, bytes_.size() - static_cast<size_t>(pos));
    std::memcpy(buf, bytes_.data() + pos, count);
    return count;
  }

 private:
  std::vector<char> bytes_;
};

uint32_t le32(const std::vector<char>& b, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + static_cast<size_t>(i)]);
  return v;
}
uint32_t le16(const std::vector<char>& b, size_t at) {
  return static_cast<uint32_t>(static_cast<unsigned char>(b[at])) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[at + 1])) << 8);
}

// The zip's central directory, checked against the file before libtorch allocates what it
// claims: a damaged size field would otherwise ask for gigabytes (found by fuzzing). Returns ""
// when every entry fits the file (or the archive is zip64, whose sizes this does not read),
// else what is wrong. A file without a directory is left to libtorch to refuse.
std::string zip_directory_problem(const std::vector<char>& b) {
  const size_t n = b.size();
  if (n < 22) return "";
  size_t eocd = std::string::npos;
  for (size_t at = n - 22 + 1; at-- > (n > 22 + 65535 ? n - 22 - 65535 : 0);) {
    if (le32(b, at) == 0x06054b50) {
      eocd = at;
      break;
    }
  }
  if (eocd == std::string::npos) return "";
  const uint32_t entries = le16(b, eocd + 10), cd_size = le32(b, eocd + 12),
                 cd_offset = le32(b, eocd + 16);
  if (cd_offset == 0xffffffffu || entries == 0xffffu) return "";  // zip64
  if (static_cast<uint64_t>(cd_offset) + cd_size > eocd) return "its zip directory lies outside it";
  size_t at = cd_offset;
  for (uint32_t e = 0; e < entries; ++e) {
    if (at + 46 > eocd || le32(b, at) != 0x02014b50) return "its zip directory is damaged";
    const uint32_t method = le16(b, at + 10), packed = le32(b, at + 20), size = le32(b, at + 24);
    const uint32_t local = le32(b, at + 42);
    if (size != 0xffffffffu && packed != 0xffffffffu) {
      // Stored entries hold their size in the file; deflate expands at most ~1032x.
      const uint64_t most = method == 0 ? n : static_cast<uint64_t>(n) * 1032;
      if (packed > n || size > most || local >= n) return "an entry claims more bytes than it has";
    }
    at += 46 + le16(b, at + 28) + le16(b, at + 30) + le16(b, at + 32);
  }
  return "";
}

// A tensor as save_checkpoint writes it: contiguous and within its storage. A damaged size or
// stride field (a zero stride over a huge shape, say) would otherwise be materialised by the
// first copy, gigabytes from a few kilobytes (found by fuzzing).
void check_layout(const std::string& path, const std::string& name, const Tensor& t) {
  const bool fits = t.is_contiguous() && t.has_storage() &&
                    (t.storage_offset() + t.numel()) * static_cast<int64_t>(t.element_size()) <=
                        static_cast<int64_t>(t.storage().nbytes());
  if (!fits) {
    throw CheckpointError("checkpoint " + path + " is damaged: tensor " + name +
                              " does not fit its stored data",
                          "restore the file from a copy or start a fresh run");
  }
}

// Every tensor in a nested value (dicts, lists, tuples), with the key of the innermost dict
// entry holding it (`name` outside any).
template <typename F>
void for_each_tensor(const c10::IValue& v, const std::string& name, F&& visit) {
  if (v.isTensor()) visit(name, v.toTensor());
  if (v.isGenericDict()) {
    for (const auto& item : v.toGenericDict()) {
      for_each_tensor(item.value(), item.key().isString() ? item.key().toStringRef() : name, visit);
    }
  }
  if (v.isList()) {
    for (const c10::IValue& x : v.toListRef()) for_each_tensor(x, name, visit);
  }
  if (v.isTuple()) {
    for (const c10::IValue& x : v.toTupleRef().elements()) for_each_tensor(x, name, visit);
  }
}

// A copy of a nested value's dicts, lists and tuples with every tensor on the CPU (.cpu() of a
// CPU tensor is the tensor itself).
c10::IValue copied_to_cpu(const c10::IValue& v) {
  if (v.isTensor()) return v.toTensor().cpu();
  if (v.isGenericDict()) {
    const GenericDict d = v.toGenericDict();
    GenericDict out(d.keyType(), d.valueType());
    for (const auto& item : d) out.insert(item.key(), copied_to_cpu(item.value()));
    return out;
  }
  if (v.isList()) {
    const c10::impl::GenericList l = v.toList();
    c10::impl::GenericList out(l.elementType());
    for (const c10::IValue& x : l) out.push_back(copied_to_cpu(x));
    return out;
  }
  if (v.isTuple()) {
    std::vector<c10::IValue> items;
    for (const c10::IValue& x : v.toTupleRef().elements()) items.push_back(copied_to_cpu(x));
    return c10::ivalue::Tuple::create(std::move(items));
  }
  return v;
}

// The value with every tensor on the CPU, so a checkpoint of a GPU run loads anywhere: the value
// itself when all are there already (one walk), else a copy.
c10::IValue on_cpu(const c10::IValue& v) {
  bool all_cpu = true;
  for_each_tensor(v, "", [&](const std::string&, const Tensor& t) { all_cpu = all_cpu && t.is_cpu(); });
  return all_cpu ? v : copied_to_cpu(v);
}

// torch.save's bytes of a checkpoint dict, its tensors on the CPU.
std::vector<char> pickled(const GenericDict& d) { return torch::pickle_save(on_cpu(c10::IValue(d))); }

// Every tensor of a nested dict of tensors and lists (optimizer state, pipeline).
void check_layouts(const std::string& path, const std::string& name, const c10::IValue& v) {
  for_each_tensor(v, name, [&](const std::string& n, const Tensor& t) { check_layout(path, n, t); });
}
void check_layouts(const std::string& path, const c10::impl::GenericDict& d) {
  check_layouts(path, "optimizer", c10::IValue(d));
}

// Walks the opcodes of torch's pickle (protocol 2) and returns what is impossible in it: a memo
// index past the opcodes read so far, or a string longer than the rest. libtorch's unpickler
// grows its memo to any index it is given, so one damaged index asks for tens of gigabytes
// (found by fuzzing). An opcode this walk does not know ends it; the unpickler judges the rest.
std::string pickle_problem(const char* data, size_t n) {
  size_t at = 0, ops = 0;
  auto need = [&](size_t k) { return at + k <= n; };
  auto u32 = [&](size_t from) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(data[from + static_cast<size_t>(i)]);
    return static_cast<uint64_t>(v);
  };
  while (at < n) {
    const unsigned char op = static_cast<unsigned char>(data[at++]);
    ++ops;
    switch (op) {
      case '.': return "";  // STOP
      case 0x80: case 'K': case 'h': at += 1; break;  // PROTO, BININT1, BINGET
      case 'M': at += 2; break;                       // BININT2
      case 'J': case 'j': at += 4; break;             // BININT, LONG_BINGET
      case 'G': at += 8; break;                       // BINFLOAT
      case 'q':                                       // BINPUT
        if (!need(1)) return "it ends inside an opcode";
        if (static_cast<unsigned char>(data[at]) > ops) return "a memo index is out of range";
        at += 1;
        break;
      case 'r':  // LONG_BINPUT
        if (!need(4)) return "it ends inside an opcode";
        if (u32(at) > ops) return "a memo index is out of range";
        at += 4;
        break;
      case 'X': case 'B':  // BINUNICODE, BINBYTES
        if (!need(4) || u32(at) > n - at - 4) return "a string is longer than the data";
        at += 4 + u32(at);
        break;
      case 'C': case 0x8a:  // SHORT_BINBYTES, LONG1
        if (!need(1)) return "it ends inside an opcode";
        at += 1 + static_cast<unsigned char>(data[at]);
        break;
      case 'c':  // GLOBAL module\nname\n
        for (int lines = 0; lines < 2; ++lines) {
          while (at < n && data[at] != '\n') ++at;
          ++at;
        }
        break;
      case '}': case ']': case ')': case '(': case 'N': case 't': case 0x85: case 0x86:
      case 0x87: case 'u': case 's': case 'e': case 'a': case 'R': case 'b': case 'Q':
      case 0x88: case 0x89:
        break;
      default:
        return "";
    }
  }
  return at > n ? "it ends inside an opcode" : "";
}

// torch::pickle_load on a bounded reader, after the checks above (libtorch's
// readArchiveAndTensors, with the size of each storage's record kept). The unpickler sizes a
// storage by the element count its pickle claims, not by the record it reads, so a damaged count
// or record name made a storage larger than its bytes (found by fuzzing): each storage must fit
// the record it came from.
c10::IValue read_pickle(std::vector<char> bytes) {
  caffe2::serialize::PyTorchStreamReader reader(std::make_shared<BoundedReader>(std::move(bytes)));
  // Not a structured binding: C++17 lambdas cannot capture one.
  std::tuple<at::DataPtr, size_t> record = reader.getRecord("data.pkl");
  const char* data = static_cast<const char*>(std::get<0>(record).get());
  const size_t pickle_size = std::get<1>(record);
  const std::string problem = pickle_problem(data, pickle_size);
  if (!problem.empty()) throw std::runtime_error("its pickle is damaged: " + problem);
  size_t at = 0;
  auto read = [&](char* buffer, size_t len) -> size_t {
    len = std::min(pickle_size - at, len);
    std::memcpy(buffer, data + at, len);
    at += len;
    return len;
  };
  std::map<const void*, size_t> record_bytes;
  auto read_record = [&](const std::string& name) {
    auto [ptr, size] = reader.getRecord("data/" + name);
    record_bytes[ptr.get()] = size;
    return std::move(ptr);
  };
  torch::jit::Unpickler unpickler(read, nullptr, nullptr, read_record, c10::nullopt);
  unpickler.set_version(reader.version());
  c10::IValue root = unpickler.parse_ivalue();
  for_each_tensor(root, "", [&](const std::string&, const Tensor& t) {
    if (!t.has_storage() || t.storage().nbytes() == 0) return;
    const auto found = record_bytes.find(t.storage().data_ptr().get());
    if (found == record_bytes.end() || found->second < t.storage().nbytes()) {
      throw std::runtime_error("a tensor's storage is larger than its record");
    }
  });
  return root;
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

// A bpe or unigram tokenizer from its sentencepiece model (tokenizer.model, uint8), which must
// give the saved vocabulary. Each failure is one CheckpointError line.
Tokenizer subword_tokenizer(const std::string& path, const std::string& kind, const GenericDict& t,
                            const std::vector<std::string>& vocab) {
  const std::string what = "checkpoint " + path + " has a " + kind + " tokenizer ";
  if (!t.contains("model") || !t.at("model").isTensor()) {
    throw CheckpointError(what + "without its sentencepiece model (tokenizer.model)",
                          "it was not written by ouroboros or is damaged");
  }
  const Tensor bytes = t.at("model").toTensor();
  check_layout(path, "tokenizer.model", bytes);
  if (bytes.scalar_type() != torch::kUInt8 || bytes.dim() != 1) {
    throw CheckpointError(what + "whose sentencepiece model is not a uint8 vector",
                          "it was not written by ouroboros or is damaged");
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
    throw CheckpointError(what + "whose sentencepiece model does not match its vocabulary",
                          "it was not written by ouroboros or is damaged");
  }
  return tok;
}

// Written to a temporary file of this process, flushed to the disk, then renamed: a crash leaves
// the old file or the new one, and concurrent writers never share a temporary name. Returns the
// bytes written.
int64_t write_atomically(const std::string& path, const std::vector<char>& bytes) {
  std::filesystem::path target(path);
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path());
  static std::atomic<int64_t> counter{0};
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  const size_t half = bytes.size() / 2;
  bool ok = f && std::fwrite(bytes.data(), 1, half, f) == half;
  if (ok) fault_point("checkpoint-write");  // tests kill the writer here, mid-file
  ok = ok && std::fwrite(bytes.data() + half, 1, bytes.size() - half, f) == bytes.size() - half &&
       std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  if (f) ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw CheckpointError("could not write checkpoint " + tmp, "check disk space and --out-dir");
  }
  std::filesystem::rename(tmp, path);
  return static_cast<int64_t>(bytes.size());
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
  for (const auto& [layer, t] : memory) m.insert("layers." + std::to_string(layer), t.detach().clone());
  d.insert("memory", m);
}

// What a single file and a manifest share: format, config, tokenizer, step, sampler state.
GenericDict header_dict(const Checkpoint& ck) {
  GenericDict tokenizer = new_dict();
  tokenizer.insert("kind", ck.tokenizer.kind());
  auto [vocab_bytes, vocab_offsets] = pack_strings(ck.tokenizer.vocab());
  tokenizer.insert("vocab_bytes", vocab_bytes);
  tokenizer.insert("vocab_offsets", vocab_offsets);
  if (!ck.tokenizer.model_proto().empty()) {  // bpe, unigram: the sentencepiece ModelProto
    const std::string& proto = ck.tokenizer.model_proto();
    Tensor model_bytes = torch::empty({static_cast<int64_t>(proto.size())}, torch::kUInt8);
    std::memcpy(model_bytes.data_ptr(), proto.data(), proto.size());
    tokenizer.insert("model", model_bytes);
  }
  GenericDict d = new_dict();
  d.insert("format_version", kCheckpointFormatVersion);
  d.insert("config", ck.config.to_json().dump());
  d.insert("tokenizer", tokenizer);
  d.insert("step", ck.step);
  return d;
}

// A checkpoint file's top-level dict, with one CheckpointError line for whatever is wrong.
GenericDict read_dict(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(what + " not found: " + path, "check the checkpoint's path");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string problem = zip_directory_problem(bytes);
  if (!problem.empty()) {
    throw CheckpointError(what + " " + path + " is corrupt: " + problem,
                          "use a file written by `ouroboros train`");
  }
  c10::IValue root;
  try {
    root = read_pickle(std::move(bytes));
  } catch (const std::exception&) {
    throw CheckpointError(what + " " + path + " is corrupt or not a checkpoint",
                          "use a file written by `ouroboros train`");
  }
  if (!root.isGenericDict()) {
    throw CheckpointError(what + " " + path + " is not a dict", "use a file written by ouroboros");
  }
  GenericDict d = root.toGenericDict();
  const int64_t version = field(path, "format_version", [&] { return d.at("format_version").toInt(); });
  if (version < 1 || version > kCheckpointFormatVersion) {
    throw CheckpointError(what + " " + path + " has format_version " + std::to_string(version) +
                              ", this build reads 1 to " + std::to_string(kCheckpointFormatVersion),
                          "use the ouroboros version that wrote it");
  }
  return d;
}

void read_header(const std::string& path, const GenericDict& d, Checkpoint& ck) {
  const int64_t version = d.at("format_version").toInt();
  std::string config_text = field(path, "config", [&] { return d.at("config").toStringRef(); });
  try {
    ck.config.merge_json(nlohmann::json::parse(config_text));
  } catch (const std::exception& e) {
    throw CheckpointError("checkpoint " + path + " has an unreadable config: " + e.what());
  }
  ck.step = field(path, "step", [&] { return d.at("step").toInt(); });
  field(path, "tokenizer", [&] {
    GenericDict t = d.at("tokenizer").toGenericDict();
    std::vector<std::string> vocab;
    if (version >= 2) {
      vocab = unpack_strings(path, t.at("vocab_bytes").toTensor(), t.at("vocab_offsets").toTensor());
    } else {  // format 1 pickled the symbols as text
      for (const auto& s : t.at("vocab").toListRef()) vocab.push_back(s.toStringRef());
    }
    const std::string kind = t.at("kind").toStringRef();
    if (kind == "bpe" || kind == "unigram") {
      ck.tokenizer = subword_tokenizer(path, kind, t, vocab);
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
    check_layouts(path, opt);
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

// The batches in flight a file or shard holds (empty when drained).
GenericDict read_pipeline(const std::string& path, const GenericDict& d) {
  if (!d.contains("pipeline")) return new_dict();
  GenericDict p = field(path, "pipeline", [&] { return d.at("pipeline").toGenericDict(); });
  check_layouts(path, "pipeline", c10::IValue(p));
  return p;
}

constexpr const char* kManifest = "manifest.pt";

std::string hex_id(int64_t id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

// A directory written by a multi-process run: its manifest and every shard it names, merged.
Checkpoint load_sharded(const std::string& dir) {
  const std::string manifest = (std::filesystem::path(dir) / kManifest).string();
  const GenericDict m = read_dict(manifest, "checkpoint manifest");
  Checkpoint ck;
  read_header(manifest, m, ck);
  int64_t id = 0, world = 0, start = 0;
  std::vector<std::string> names;
  field(manifest, "shards", [&] {
    const GenericDict s = m.at("shards").toGenericDict();
    for (const auto& n : s.at("names").toListRef()) names.push_back(n.toStringRef());
    id = s.at("id").toInt();
    world = s.at("world").toInt();
    start = s.at("pipeline_start").toInt();
    ck.sampler_state = static_cast<uint64_t>(s.at("sampler").toInt());
    return 0;
  });
  if (world < 1 || world > 65536) {
    throw CheckpointError("checkpoint manifest " + manifest + " names " + std::to_string(world) +
                              " shards", "it was not written by ouroboros or is damaged");
  }
  const int64_t K = ck.config.engine.modules;
  if (K < 1 || K > 65536) {
    throw CheckpointError("checkpoint manifest " + manifest + " has " + std::to_string(K) +
                          " modules", "it was not written by ouroboros or is damaged");
  }
  // Every ring's workers save the memories of their layers, rows [rB, (r+1)B) of the whole
  // tick's batch (concatenated in ring order they are the memories of one ring of R*B rows),
  // and their modules' dropout generators (ring r's module k is generator r*K + k).
  const int64_t per_ring = K == 1 ? 1 : K - 1;
  const int64_t rings = world / per_ring;
  if (rings * per_ring != world || rings != ck.config.dist.replicas) {
    throw CheckpointError("checkpoint manifest " + manifest + " names " + std::to_string(world) +
                              " shards for " + std::to_string(ck.config.dist.replicas) +
                              " ring(s) of " + std::to_string(per_ring) + " worker(s)",
                          "it was not written by ouroboros or is damaged");
  }
  ck.generator_states.resize(static_cast<size_t>(K * rings));
  c10::impl::GenericList workers(c10::AnyType::get());
  bool in_flight = false;
  std::map<int64_t, std::vector<Tensor>> ring_memory;
  for (int64_t r = 0; r < world; ++r) {
    const std::string path = shard_path(dir, id, r);
    if (!std::filesystem::exists(path)) {
      throw CheckpointError("checkpoint " + dir + " is missing shard " + path + " (rank " +
                                std::to_string(r) + " of " + std::to_string(world) + ")",
                            "copy the whole checkpoint directory, or resume from another one");
    }
    const GenericDict d = read_dict(path, "checkpoint shard");
    field(path, "shard", [&] {
      const GenericDict s = d.at("shard").toGenericDict();
      if (s.at("id").toInt() != id || s.at("rank").toInt() != r) {
        throw CheckpointError("checkpoint shard " + path + " belongs to another checkpoint (" +
                                  hex_id(s.at("id").toInt()) + " rank " +
                                  std::to_string(s.at("rank").toInt()) + ", the manifest's is " +
                                  hex_id(id) + " rank " + std::to_string(r) + ")",
                              "do not mix the files of two checkpoints; copy the whole directory");
      }
      return 0;
    });
    read_model(path, d, ck.model);
    merge_optimizer_state(ck.optimizer, read_optimizer(path, d));
    field(path, "generators", [&] {
      for (const auto& item : d.at("generators").toGenericDict()) {
        const int64_t k = std::stoll(item.key().toStringRef());
        if (k < 1 || k > K) throw std::out_of_range("module");
        check_layout(path, "generators", item.value().toTensor());
        ck.generator_states[static_cast<size_t>((r / per_ring) * K + k - 1)] =
            item.value().toTensor();
      }
      return 0;
    });
    std::map<int64_t, Tensor> memory;
    read_memory(path, d, memory);
    for (auto& [layer, t] : memory) {
      std::vector<Tensor>& rings = ring_memory[layer];
      if (static_cast<int64_t>(rings.size()) != r / per_ring) {
        throw CheckpointError("checkpoint shard " + path + " holds the memory of layer " +
                                  std::to_string(layer) + " out of ring order",
                              "it was not written by ouroboros or is damaged");
      }
      rings.push_back(t);
    }
    if (d.contains("pipeline")) in_flight = true;
    workers.push_back(read_pipeline(path, d));
  }
  ParamSet merged;  // in the model's order, as a single file holds it
  for (const auto& n : names) {
    if (!ck.model.contains(n)) {
      throw CheckpointError("checkpoint " + dir + " holds no tensor " + n + " in any shard",
                            "it was not written by ouroboros or is damaged");
    }
    merged.add(n, ck.model.at(n));
  }
  if (merged.size() != ck.model.size()) {
    throw CheckpointError("checkpoint " + dir + "'s shards hold tensors its manifest does not name",
                          "it was not written by ouroboros or is damaged");
  }
  ck.model = std::move(merged);
  for (auto& [layer, rings] : ring_memory) {
    ck.memory[layer] = rings.size() == 1 ? rings[0] : torch::cat(rings, 0);
  }
  for (size_t k = 0; k < ck.generator_states.size(); ++k) {
    if (!ck.generator_states[k].defined()) {
      throw CheckpointError("checkpoint " + dir + " holds no dropout state of module " +
                                std::to_string(static_cast<int64_t>(k) % K + 1) + " of ring " +
                                std::to_string(static_cast<int64_t>(k) / K),
                            "it was not written by ouroboros or is damaged");
    }
  }
  if (in_flight) {
    ck.pipeline.insert("start", start);
    ck.pipeline.insert("workers", workers);
  }
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
  if (!ck.pipeline.empty()) d.insert("pipeline", ck.pipeline);
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
  if (!s.pipeline.empty()) d.insert("pipeline", s.pipeline);
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
  shards.insert("pipeline_start",
                meta.pipeline.contains("start") ? meta.pipeline.at("start").toInt() : int64_t{0});
  c10::impl::GenericList files(c10::StringType::get());
  for (int64_t r = 0; r < world; ++r) {
    files.push_back(std::filesystem::relative(shard_path(dir, id, r), dir).string());
  }
  shards.insert("files", files);
  c10::impl::GenericList order(c10::StringType::get());
  for (const auto& n : names) order.push_back(n);
  shards.insert("names", order);
  d.insert("shards", shards);
  const int64_t bytes = write_atomically((std::filesystem::path(dir) / kManifest).string(),
                                         pickled(d));
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
    throw CheckpointError("checkpoint " + path + " holds a " + m.model + " model but the run asks for " +
                              model.model, "drop --model or start a fresh run");
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
