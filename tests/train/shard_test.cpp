// label: unit
// Sharded checkpoints: shards and a manifest merge into the checkpoint a single file holds; a
// missing, foreign, mixed or damaged shard is one line naming the file; a new manifest retires
// the shards of the one before.
#include <gtest/gtest.h>

#include <filesystem>

#include "checkpoint_util.h"
#include "test_util.h"

namespace ouroboros {
namespace {

namespace fs = std::filesystem;
using ouroboros_test::read_bytes;
using ouroboros_test::TempDir;

// make_checkpoint() cut into two ranks' shards of a K = 3 run: rank 0 the first half of the
// tensors and modules 1 and 3, rank 1 the rest and module 2.
std::vector<CheckpointShard> cut(const Checkpoint& ck, int64_t id) {
  std::vector<CheckpointShard> s(2);
  const size_t half = ck.model.size() / 2;
  for (int64_t r = 0; r < 2; ++r) {
    s[r].id = id;
    s[r].rank = r;
    s[r].world = 2;
  }
  for (size_t i = 0; i < ck.model.size(); ++i) {
    CheckpointShard& mine = s[i < half ? 0 : 1];
    const std::string& name = ck.model.names()[i];
    mine.model.add(name, ck.model.tensors()[i]);
    if (ck.optimizer.contains(name)) mine.optimizer.insert(name, ck.optimizer.at(name));
  }
  s[0].generators = {{1, ck.generator_states[0]}, {3, ck.generator_states[2]}};
  s[1].generators = {{2, ck.generator_states[1]}};
  return s;
}

Checkpoint three_modules() {
  Checkpoint ck = make_checkpoint();
  ck.config.engine.modules = 3;
  ck.generator_states.push_back(make_generator(5).get_state());
  return ck;
}

void write_sharded(const fs::path& dir, const Checkpoint& ck, int64_t id) {
  for (const CheckpointShard& s : cut(ck, id)) save_shard(dir.string(), s);
  save_manifest(dir.string(), ck, id, 2, ck.model.names());
}

TEST(ShardTest, ShardsMergeIntoTheSingleFileCheckpoint) {
  TempDir dir;
  const Checkpoint ck = three_modules();
  const fs::path sharded = dir.path() / "ckpt";
  write_sharded(sharded, ck, 41);
  EXPECT_TRUE(is_sharded_checkpoint(sharded.string()));
  save_checkpoint((dir.path() / "one.pt").string(), ck);

  const Checkpoint a = load_checkpoint(sharded.string());
  const Checkpoint b = load_checkpoint((dir.path() / "one.pt").string());
  ASSERT_EQ(a.model.names(), b.model.names());  // the model's order, not the shards'
  for (size_t i = 0; i < b.model.size(); ++i) {
    EXPECT_TRUE(torch::equal(a.model.at(b.model.names()[i]), b.model.tensors()[i]));
  }
  ASSERT_EQ(a.optimizer.size(), b.optimizer.size());
  ASSERT_EQ(a.generator_states.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_TRUE(torch::equal(a.generator_states[k], b.generator_states[k])) << k;
  }
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.sampler_state, b.sampler_state);
  EXPECT_EQ(a.tokenizer.vocab(), b.tokenizer.vocab());
  EXPECT_EQ(a.config.to_json(), b.config.to_json());
  EXPECT_FALSE(a.pipeline.saved());  // drained shards: no pipeline
}

// The manifest carries the run's id, as a single file does.
TEST(ShardTest, TheManifestCarriesTheRunId) {
  TempDir dir;
  Checkpoint ck = three_modules();
  ck.run = "00000000000000ff";
  const fs::path sharded = dir.path() / "ckpt";
  write_sharded(sharded, ck, 41);
  EXPECT_EQ(checkpoint_run(sharded.string()), "00000000000000ff");
  EXPECT_EQ(load_checkpoint(sharded.string()).run, "00000000000000ff");
}

TEST(ShardTest, ANewManifestRetiresTheShardsOfTheLastOne) {
  TempDir dir;
  const fs::path sharded = dir.path() / "ckpt";
  Checkpoint ck = three_modules();
  write_sharded(sharded, ck, 1);
  ck.step = 7;
  write_sharded(sharded, ck, 2);
  EXPECT_FALSE(fs::exists(fs::path(shard_path(sharded.string(), 1, 0)).parent_path()));
  EXPECT_TRUE(fs::exists(shard_path(sharded.string(), 2, 1)));
  EXPECT_EQ(load_checkpoint(sharded.string()).step, 7);
}

TEST(ShardTest, BrokenShardsAreOneLineNamingTheFile) {
  TempDir dir;
  const fs::path sharded = dir.path() / "ckpt";
  const Checkpoint ck = three_modules();
  write_sharded(sharded, ck, 5);
  const std::string s1 = shard_path(sharded.string(), 5, 1);
  const std::string keep = read_bytes(s1);

  fs::remove(s1);
  std::string e = checkpoint_error([&] { load_checkpoint(sharded.string()); });
  EXPECT_NE(e.find("missing shard " + s1), std::string::npos) << e;
  EXPECT_NE(e.find("rank 1 of 2"), std::string::npos) << e;

  write_bytes(s1, keep.substr(0, keep.size() / 2));  // truncated
  e = checkpoint_error([&] { load_checkpoint(sharded.string()); });
  EXPECT_NE(e.find(s1), std::string::npos) << e;
  EXPECT_NE(e.find("corrupt"), std::string::npos) << e;

  // A shard of another checkpoint copied in.
  const fs::path other = dir.path() / "other";
  write_sharded(other, ck, 6);
  fs::copy_file(shard_path(other.string(), 6, 1), s1, fs::copy_options::overwrite_existing);
  e = checkpoint_error([&] { load_checkpoint(sharded.string()); });
  EXPECT_NE(e.find("belongs to another checkpoint"), std::string::npos) << e;
  EXPECT_NE(e.find(s1), std::string::npos) << e;

  // Rank 0's shard where rank 1's belongs.
  fs::copy_file(shard_path(sharded.string(), 5, 0), s1, fs::copy_options::overwrite_existing);
  e = checkpoint_error([&] { load_checkpoint(sharded.string()); });
  EXPECT_NE(e.find("rank 0, the manifest's is"), std::string::npos) << e;

  write_bytes(s1, keep);  // restored, it loads again
  EXPECT_NO_THROW(load_checkpoint(sharded.string()));

  write_bytes(sharded / "manifest.pt", "not a checkpoint at all");
  e = checkpoint_error([&] { load_checkpoint(sharded.string()); });
  EXPECT_NE(e.find("manifest"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;

  fs::remove(sharded / "manifest.pt");
  e = checkpoint_error([&] { load_checkpoint(sharded.string()); });
  EXPECT_NE(e.find("a directory without manifest.pt"), std::string::npos) << e;
}

}  // namespace
}  // namespace ouroboros
