// label: unit
// TensorBoard event files: CRC-32C against published check values, TFRecord framing and Event
// encodings byte for byte against what TensorBoard's own writer (record_writer.py and protobuf)
// produces for the same input, and the event file's name, order and records.
#include "ouroboros/run/tensorboard.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "test_util.h"

namespace ouroboros {
namespace {

namespace fs = std::filesystem;
using ouroboros_test::read_bytes;
using ouroboros_test::TempDir;

std::string from_hex(const std::string& hex) {
  std::string bytes;
  for (size_t i = 0; i < hex.size(); i += 2) {
    bytes += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return bytes;
}

// The payloads of a file's TFRecords; every byte of the file is in one of them.
std::vector<std::string> read_records(const fs::path& file) {
  const std::string bytes = read_bytes(file);
  const std::vector<std::string> payloads = tf_records(bytes);
  std::string framed;
  for (const std::string& p : payloads) framed += tf_record(p);
  EXPECT_EQ(framed, bytes) << file;
  return payloads;
}

TEST(TensorBoard, Crc32cCheckValues) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);  // the CRC catalogue's check value
  EXPECT_EQ(crc32c(""), 0u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);    // RFC 3720, B.4
  EXPECT_EQ(crc32c(std::string(32, '\xff')), 0x62A8AB43u);  // RFC 3720, B.4
  EXPECT_EQ(masked_crc32c("123456789"), 0xC78AB0E5u);       // ((c >> 15) | (c << 17)) + 0xa282ead8
}

TEST(TensorBoard, RecordFramingMatchesTensorBoardsRecordWriter) {
  // record_writer.py on b"hello": length 5, masked CRCs of the length and of the bytes.
  EXPECT_EQ(tf_record("hello"), from_hex("0500000000000000eab2043e68656c6c6fbb1f1c19"));
}

// The expected bytes are event_pb2.Event(...).SerializeToString() for the same fields.
TEST(TensorBoard, RecordsReadBackUpToADamagedOrCutOne) {
  const std::string a = tf_record("first"), b = tf_record(std::string(300, 'x'));
  EXPECT_EQ(tf_records(a + b), (std::vector<std::string>{"first", std::string(300, 'x')}));
  EXPECT_EQ(tf_records(a + b.substr(0, 100)), std::vector<std::string>{"first"});  // cut
  std::string damaged = a + b;
  damaged[a.size() + 20] ^= 1;  // a payload byte
  EXPECT_EQ(tf_records(damaged), std::vector<std::string>{"first"});
  damaged = a + b;
  damaged[a.size() + 1] ^= 1;  // a length byte
  EXPECT_EQ(tf_records(damaged), std::vector<std::string>{"first"});
  EXPECT_TRUE(tf_records("").empty());
}

TEST(TensorBoard, EventsEncodeAsProtobufDoes) {
  EXPECT_EQ(file_version_event(1.5), from_hex("09000000000000f83f1a0d627261696e2e4576656e743a32"));
  EXPECT_EQ(scalars_event(1.5, 3, {{"a", 1.0f}, {"train/loss", -2.25f}}),
            from_hex("09000000000000f83f10032a1d0a080a0161150000803f0a110a0a747261696e2f6c6f737315"
                     "000010c0"));
  EXPECT_EQ(session_start_event(1.5, 300), from_hex("09000000000000f83f10ac023a020801"));
}

TEST(TensorBoard, WriterNamesItsFileAndFlushesEveryEvent) {
  TempDir dir;
  EventFileWriter w(dir.path().string());
  const std::string name = fs::path(w.path()).filename().string();
  EXPECT_TRUE(std::regex_match(name, std::regex(R"(events\.out\.tfevents\.\d{10}\..+\.\d+\.\d+)")))
      << name;
  EXPECT_TRUE(is_event_file(name));
  EXPECT_FALSE(is_event_file("metrics.jsonl"));
  w.scalars(7, {{"valid/loss", 2.5f}});
  w.session_start(8);
  // Read while the writer is still open: what a live TensorBoard, or a killed run, leaves.
  const std::vector<std::string> records = read_records(w.path());
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].substr(9), file_version_event(0).substr(9));  // past the wall time
  EXPECT_EQ(records[1].substr(9), scalars_event(0, 7, {{"valid/loss", 2.5f}}).substr(9));
  EXPECT_EQ(records[2].substr(9), session_start_event(0, 8).substr(9));
}

// TensorBoard reads a directory's event files in name order: a second file sorts after the
// first even within the same second, and after a file stamped in the future.
TEST(TensorBoard, NewFileSortsAfterTheFilesThere) {
  TempDir dir;
  const EventFileWriter first(dir.path().string());
  const EventFileWriter second(dir.path().string());
  EXPECT_LT(first.path(), second.path());
  const fs::path future = dir.path() / "events.out.tfevents.9000000000.host.1.0";
  std::ofstream(future).put('\0');
  const EventFileWriter third(dir.path().string());
  EXPECT_EQ(fs::path(third.path()).filename().string().substr(20, 11), "9000000001.");
}

// A resumed run's directory: each file keeps its events up to the checkpoint's step, and a
// record cut by a kill goes; files with nothing past it stay as they are.
TEST(TensorBoard, KeepEventsUpToDropsLaterStepsAndACutTail) {
  TempDir dir;
  std::string killed_path, earlier_path;
  {
    EventFileWriter earlier(dir.path().string());
    earlier.scalars(1, {{"train/loss", 4.0f}});
    earlier_path = earlier.path();
    EventFileWriter killed(dir.path().string());
    for (int64_t step = 2; step <= 5; ++step) killed.scalars(step, {{"train/loss", 1.0f * step}});
    killed_path = killed.path();
  }
  std::ofstream(killed_path, std::ios::app) << tf_record(scalars_event(0, 6, {})).substr(0, 20);
  const std::string earlier_bytes = read_bytes(earlier_path);
  dir.write("notes.txt", "not an event file");

  keep_events_up_to(dir.path().string(), 3);
  EXPECT_EQ(read_bytes(earlier_path), earlier_bytes);
  const std::vector<std::string> kept = read_records(killed_path);
  ASSERT_EQ(kept.size(), 3u);  // file_version, steps 2 and 3
  EXPECT_EQ(kept[1].substr(9), scalars_event(0, 2, {{"train/loss", 2.0f}}).substr(9));
  EXPECT_EQ(kept[2].substr(9), scalars_event(0, 3, {{"train/loss", 3.0f}}).substr(9));
  EXPECT_EQ(read_bytes(dir.path() / "notes.txt"), "not an event file");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 3);

  remove_event_files(dir.path().string());
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

}  // namespace
}  // namespace ouroboros
