// torch.save files for the checkpoint code: bounded reads, checks before libtorch allocates what a
// file claims, atomic writes.
#include "checkpoint_detail.h"

#include <unistd.h>
#include <cstdio>

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

namespace ouroboros::checkpoint_detail {
namespace {

using c10::impl::GenericDict;

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
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(b[at + static_cast<size_t>(i)]);
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
  for_each_tensor(
      v, "", [&](const std::string&, const at::Tensor& t) { all_cpu = all_cpu && t.is_cpu(); });
  return all_cpu ? v : copied_to_cpu(v);
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
    for (int i = 3; i >= 0; --i)
      v = (v << 8) | static_cast<unsigned char>(data[from + static_cast<size_t>(i)]);
    return static_cast<uint64_t>(v);
  };
  while (at < n) {
    const unsigned char op = static_cast<unsigned char>(data[at++]);
    ++ops;
    switch (op) {
      case '.':
        return "";  // STOP
      case 0x80:
      case 'K':
      case 'h':
        at += 1;
        break;  // PROTO, BININT1, BINGET
      case 'M':
        at += 2;
        break;  // BININT2
      case 'J':
      case 'j':
        at += 4;
        break;  // BININT, LONG_BINGET
      case 'G':
        at += 8;
        break;   // BINFLOAT
      case 'q':  // BINPUT
        if (!need(1)) return "it ends inside an opcode";
        if (static_cast<unsigned char>(data[at]) > ops) return "a memo index is out of range";
        at += 1;
        break;
      case 'r':  // LONG_BINPUT
        if (!need(4)) return "it ends inside an opcode";
        if (u32(at) > ops) return "a memo index is out of range";
        at += 4;
        break;
      case 'X':
      case 'B':  // BINUNICODE, BINBYTES
        if (!need(4) || u32(at) > n - at - 4) return "a string is longer than the data";
        at += 4 + u32(at);
        break;
      case 'C':
      case 0x8a:  // SHORT_BINBYTES, LONG1
        if (!need(1)) return "it ends inside an opcode";
        at += 1 + static_cast<unsigned char>(data[at]);
        break;
      case 'c':  // GLOBAL module\nname\n
        for (int lines = 0; lines < 2; ++lines) {
          while (at < n && data[at] != '\n') ++at;
          ++at;
        }
        break;
      case '}':
      case ']':
      case ')':
      case '(':
      case 'N':
      case 't':
      case 0x85:
      case 0x86:
      case 0x87:
      case 'u':
      case 's':
      case 'e':
      case 'a':
      case 'R':
      case 'b':
      case 'Q':
      case 0x88:
      case 0x89:
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
  for_each_tensor(root, "", [&](const std::string&, const at::Tensor& t) {
    if (!t.has_storage() || t.storage().nbytes() == 0) return;
    const auto found = record_bytes.find(t.storage().data_ptr().get());
    if (found == record_bytes.end() || found->second < t.storage().nbytes()) {
      throw std::runtime_error("a tensor's storage is larger than its record");
    }
  });
  return root;
}

}  // namespace

void check_layout(const std::string& path, const std::string& name, const at::Tensor& t) {
  const bool fits = t.is_contiguous() && t.has_storage() &&
                    (t.storage_offset() + t.numel()) * static_cast<int64_t>(t.element_size()) <=
                        static_cast<int64_t>(t.storage().nbytes());
  if (!fits) {
    throw CheckpointError(
        "checkpoint " + path + " is damaged: tensor " + name + " does not fit its stored data",
        "restore the file from a copy or start a fresh run");
  }
}

void check_layouts(const std::string& path, const std::string& name, const c10::IValue& v) {
  for_each_tensor(v, name,
                  [&](const std::string& n, const at::Tensor& t) { check_layout(path, n, t); });
}

std::vector<char> pickled(const c10::IValue& v) { return torch::pickle_save(on_cpu(v)); }

c10::IValue read_torch_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(what + " not found: " + path, "check the checkpoint's path");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string problem = zip_directory_problem(bytes);
  if (!problem.empty()) {
    throw CheckpointError(what + " " + path + " is corrupt: " + problem,
                          "use a file written by `ouroboros train`");
  }
  try {
    return read_pickle(std::move(bytes));
  } catch (const std::exception&) {
    throw CheckpointError(what + " " + path + " is corrupt or not a checkpoint",
                          "use a file written by `ouroboros train`");
  }
}

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

}  // namespace ouroboros::checkpoint_detail
