// TensorBoard event files: CRC-32C, TFRecord framing and the few `Event` fields a run writes.
#include "ouroboros/run/tensorboard.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <optional>

#include "ouroboros/core/errors.h"

namespace ouroboros {

namespace {

constexpr std::array<uint32_t, 256> crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected
    table[i] = c;
  }
  return table;
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

// Protocol buffer wire format: a field's key is (number << 3) | wire type.
enum Wire { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  for (; v >= 0x80; v >>= 7) out += static_cast<char>((v & 0x7f) | 0x80);
  out += static_cast<char>(v);
}

void put_key(std::string& out, int field, Wire wire) {
  put_varint(out, static_cast<uint64_t>(field) << 3 | wire);
}

void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_key(out, field, kBytes);
  put_varint(out, bytes.size());
  out += bytes;
}

// Event fields 1 and 2, the head of every event. Step 0 is left out, as protobuf leaves out a
// proto3 field at its default, so the bytes are the ones protobuf itself writes.
std::string event_head(double wall_time, int64_t step) {
  std::string e;
  uint64_t bits = 0;
  std::memcpy(&bits, &wall_time, sizeof bits);
  put_key(e, 1, kFixed64);
  put_le(e, bits, 8);
  if (step != 0) {
    put_key(e, 2, kVarint);
    put_varint(e, static_cast<uint64_t>(step));  // int64: negatives take ten bytes, as in protobuf
  }
  return e;
}

bool get_varint(const std::string& in, size_t& at, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && at < in.size(); shift += 7) {
    const auto b = static_cast<unsigned char>(in[at++]);
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

uint64_t get_le(const std::string& in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(in[at + i]);
  return v;
}

// The step of an encoded Event (0 when field 2 is absent, its default); none if the bytes are
// not a protocol buffer message.
std::optional<int64_t> event_step(const std::string& event) {
  int64_t step = 0;
  for (size_t at = 0; at < event.size();) {
    uint64_t key = 0, n = 0;
    if (!get_varint(event, at, key)) return std::nullopt;
    const uint64_t wire = key & 7;
    if (wire == kVarint) {
      if (!get_varint(event, at, n)) return std::nullopt;
      if (key >> 3 == 2) step = static_cast<int64_t>(n);
      continue;
    }
    if (wire == kFixed64) {
      n = 8;
    } else if (wire == kFixed32) {
      n = 4;
    } else if (wire != kBytes || !get_varint(event, at, n)) {
      return std::nullopt;
    }
    if (n > event.size() - at) return std::nullopt;
    at += n;
  }
  return step;
}

constexpr const char* kPrefix = "events.out.tfevents.";

// The <seconds> of an event file's name; 0 if it has none.
int64_t seconds_of(const std::string& filename) {
  long long s = 0;
  return std::sscanf(filename.c_str() + std::strlen(kPrefix), "%lld", &s) == 1 ? s : 0;
}

std::string read_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(const std::string& bytes) {
  static constexpr std::array<uint32_t, 256> table = crc32c_table();
  uint32_t c = 0xffffffffu;
  for (unsigned char b : bytes) c = table[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

uint32_t masked_crc32c(const std::string& bytes) {
  const uint32_t c = crc32c(bytes);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string tf_record(const std::string& payload) {
  std::string length;
  put_le(length, payload.size(), 8);
  std::string record = length;
  put_le(record, masked_crc32c(length), 4);
  record += payload;
  put_le(record, masked_crc32c(payload), 4);
  return record;
}

std::vector<std::string> tf_records(const std::string& bytes) {
  std::vector<std::string> payloads;
  for (size_t at = 0; bytes.size() - at >= 16;) {
    const std::string length = bytes.substr(at, 8);
    const uint64_t n = get_le(bytes, at, 8);
    if (get_le(bytes, at + 8, 4) != masked_crc32c(length) || n > bytes.size() - at - 16) break;
    std::string payload = bytes.substr(at + 12, n);
    if (get_le(bytes, at + 12 + n, 4) != masked_crc32c(payload)) break;
    payloads.push_back(std::move(payload));
    at += 16 + n;
  }
  return payloads;
}

std::string file_version_event(double wall_time) {
  std::string e = event_head(wall_time, 0);
  put_bytes(e, 3, "brain.Event:2");
  return e;
}

std::string scalars_event(double wall_time, int64_t step, const std::vector<Scalar>& values) {
  std::string summary;
  for (const Scalar& s : values) {
    std::string value;
    put_bytes(value, 1, s.tag);
    uint32_t bits = 0;
    std::memcpy(&bits, &s.value, sizeof bits);
    put_key(value, 2, kFixed32);
    put_le(value, bits, 4);
    put_bytes(summary, 1, value);  // Summary.value, repeated
  }
  std::string e = event_head(wall_time, step);
  put_bytes(e, 5, summary);
  return e;
}

std::string session_start_event(double wall_time, int64_t step) {
  std::string session_log;
  put_key(session_log, 1, kVarint);
  put_varint(session_log, 1);  // SessionLog.status START
  std::string e = event_head(wall_time, step);
  put_bytes(e, 7, session_log);
  return e;
}

bool is_event_file(const std::string& filename) { return filename.rfind(kPrefix, 0) == 0; }

bool holds_events(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (is_event_file(e.path().filename().string()) && tf_records(read_file(e.path())).size() > 1) {
      return true;
    }
  }
  return false;
}

std::set<std::string> event_file_runs(const std::string& dir) {
  std::set<std::string> runs;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!is_event_file(name) || tf_records(read_file(e.path())).size() <= 1) continue;
    // Without an id the name ends in the writer's file count, never 16 characters long.
    const std::string last = name.substr(name.rfind('.') + 1);
    const bool id =
        last.size() == 16 && last.find_first_not_of("0123456789abcdef") == std::string::npos;
    runs.insert(id ? last : "");
  }
  return runs;
}

void remove_event_files(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (is_event_file(e.path().filename().string())) std::filesystem::remove(e.path(), ec);
  }
}

void keep_events_up_to(const std::string& dir, int64_t step) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (is_event_file(e.path().filename().string())) files.push_back(e.path());
  }
  for (const auto& file : files) {
    const std::string bytes = read_file(file);
    std::string kept;
    for (const std::string& event : tf_records(bytes)) {
      const std::optional<int64_t> s = event_step(event);
      if (!s || *s <= step) kept += tf_record(event);
    }
    if (kept == bytes) continue;
    // TensorBoard reads every file whose name holds "tfevents": the new bytes go under another
    // name first.
    const auto tmp = std::filesystem::path(dir) / ".event-file.tmp";
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!(out << kept << std::flush)) {
      throw Error("cannot rewrite TensorBoard event file " + file.string(), "check --out-dir");
    }
    out.close();
    std::filesystem::rename(tmp, file);
  }
}

EventFileWriter::EventFileWriter(const std::string& dir, const std::string& run) {
  int64_t seconds = static_cast<int64_t>(now_seconds());
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (is_event_file(name)) seconds = std::max(seconds, seconds_of(name) + 1);
  }
  static std::atomic<int> files{0};  // of this process
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  char name[512];
  std::snprintf(name, sizeof name, "%s%010lld.%s.%d.%d%s%s", kPrefix,
                static_cast<long long>(seconds), host, static_cast<int>(getpid()), files++,
                run.empty() ? "" : ".", run.c_str());
  path_ = (std::filesystem::path(dir) / name).string();
  out_.open(path_, std::ios::binary);
  if (!out_) throw Error("cannot write TensorBoard event file " + path_, "check --out-dir");
  write(file_version_event(now_seconds()));
}

void EventFileWriter::scalars(int64_t step, const std::vector<Scalar>& values) {
  write(scalars_event(now_seconds(), step, values));
}

void EventFileWriter::session_start(int64_t step) {
  write(session_start_event(now_seconds(), step));
}

void EventFileWriter::write(const std::string& event) { out_ << tf_record(event) << std::flush; }

}  // namespace ouroboros
