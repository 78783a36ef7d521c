// TensorBoard event files, written by hand: TFRecord framing around `Event` protocol buffers
// (tensorboard/compat/proto/event.proto) encoded field by field, so no protobuf is needed.
#pragma once

#include <cstdint>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace ouroboros {

// CRC-32C (Castagnoli), as TFRecord framing uses it: crc32c("123456789") = 0xE3069283.
uint32_t crc32c(const std::string& bytes);
// TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const std::string& bytes);
// One TFRecord: uint64 length, masked CRC of those 8 bytes, the payload, masked CRC of the
// payload; integers little-endian.
std::string tf_record(const std::string& payload);
// The payloads of the whole, undamaged records at the start of `bytes`: a record cut short (a
// run killed mid-write) or failing a CRC ends them.
std::vector<std::string> tf_records(const std::string& bytes);

struct Scalar {
  std::string tag;
  float value = 0.0f;  // Summary.Value.simple_value is a float
};

// Encoded `Event` messages. wall_time is in seconds since the epoch.
// The first event of every file: file_version "brain.Event:2".
std::string file_version_event(double wall_time);
// Event{step, summary: Summary{value: [{tag, simple_value}, ...]}}.
std::string scalars_event(double wall_time, int64_t step, const std::vector<Scalar>& values);
// Event{step, session_log: SessionLog{status: START}}: TensorBoard drops the data this run's
// files hold at `step` and later (a restart from a checkpoint recomputes it).
std::string session_start_event(double wall_time, int64_t step);

// Whether a file name is an event file's, events.out.tfevents.<seconds>.<host>.<pid>.<n>, and
// then .<run> (the writer's run id) where the run had one.
bool is_event_file(const std::string& filename);
// Whether a directory's event files hold any event besides their file_version: the curves of
// a run, not only the opening of one killed before its first record.
bool holds_events(const std::string& dir);
// The run ids in the names of a directory's event files that hold events ("" for a name
// without one).
std::set<std::string> event_file_runs(const std::string& dir);
// Removes the event files in a directory.
void remove_event_files(const std::string& dir);
// Rewrites the event files in a directory without their events past `step` (and without a
// damaged tail), each replaced in one rename.
void keep_events_up_to(const std::string& dir, int64_t step);

// A new event file in a directory, named to sort after the event files already there:
// TensorBoard reads a directory's files in name order, so a resumed run's file must come after
// the file of the run it continues, even when both start within one second. Every write is
// flushed, so a live TensorBoard sees it and a killed run leaves a readable file.
class EventFileWriter {
 public:
  // `run`: the id that ends the file's name (none when "").
  explicit EventFileWriter(const std::string& dir, const std::string& run = "");
  void scalars(int64_t step, const std::vector<Scalar>& values);
  void session_start(int64_t step);
  const std::string& path() const { return path_; }

 private:
  void write(const std::string& event);
  std::string path_;
  std::ofstream out_;
};

}  // namespace ouroboros
