// label: distributed
// The transport of --backend nccl (PairTransport: one group per directed pair, header then
// payload, read in the sender's order), run here over Gloo pair groups on the CPU: messages asked
// for in another order than sent arrive intact, both directions at once, any dtype and shape; a
// silent peer ends the wait within the timeout with the lost rank named; headers round-trip; and
// --backend is refused where it cannot take effect. tests/dist/nccl_test.cpp runs it over NCCL.
#include <gtest/gtest.h>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <chrono>
#include <thread>

#include "dist_util.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/dist/context.h"
#include "ouroboros/dist/pair_transport.h"
#include "ouroboros/run/train.h"
#include "test_util.h"

using namespace ouroboros;
using namespace ouroboros_test;

namespace {

DistEnv rank_of_two(int64_t rank, int port) {
  DistEnv e;
  e.rank = rank;
  e.world_size = 2;
  e.master_port = port;
  return e;
}

// Gloo groups made the way NCCL's are (two ranks per directed pair, no tags used).
GroupMaker gloo_pairs(DistContext& ctx) {
  GroupMaker m;
  m.timeout = ctx.timeout();
  m.make = [&ctx](const std::string& name, int64_t rank, int64_t size) {
    return ctx.gloo_group("test-pairs/" + name, rank, size);
  };
  return m;
}

// Runs body(rank, transport) on ranks 0 and 1 (threads, each with its own context) and returns
// each rank's error ("" when none).
std::vector<std::string> on_two_ranks(double timeout,
                                      const std::function<void(int64_t, PairTransport&)>& body) {
  Config cfg = tiny_config(3);
  cfg.dist.timeout = timeout;
  cfg.train.device = "cpu";
  const int port = free_port();
  std::vector<std::string> errors(2);
  auto run = [&](int64_t rank) {
    try {
      DistContext ctx(rank_of_two(rank, port), cfg);
      PairGroups groups(gloo_pairs(ctx), rank, ring_layout(rank, 2, 1));
      {
        PairTransport transport(ctx, groups);
        body(rank, transport);
      }
      ctx.finish();
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(rank)] = e.what();
    }
  };
  std::thread one(run, 1);
  run(0);
  one.join();
  return errors;
}

at::Tensor message(int64_t seed, at::IntArrayRef shape, at::ScalarType dtype = at::kFloat) {
  return at::arange(seed, seed + c10::multiply_integers(shape), at::kDouble)
      .reshape(shape)
      .to(dtype);
}

TEST(PairTransport, MessagesArriveWhateverOrderTheyAreAskedIn) {
  // Ouroboros K = 3 traffic between workers 0 and 1, both ways at once: A_1 and E_2 one way,
  // A_2 and E_1 the other, several batches in flight, asked for in reverse order.
  const std::vector<MessageKey> keys01 = {{true, 2, 0}, {false, 1, 1}, {false, 1, 2}};
  const std::vector<MessageKey> keys10 = {{false, 2, 0}, {true, 1, 0}, {false, 2, 1}};
  auto payload = [](const MessageKey& k) {
    const int64_t seed = k.tag();
    if (k.batch == 2) return message(seed, {2, 3, 4}, at::kBFloat16);  // another dtype
    return message(seed, {2, 5, 4 + k.boundary});                      // shapes differ by key
  };
  std::vector<std::vector<at::Tensor>> got(2);
  const auto errors = on_two_ranks(20, [&](int64_t rank, PairTransport& t) {
    const auto& mine = rank == 0 ? keys01 : keys10;
    const auto& theirs = rank == 0 ? keys10 : keys01;
    for (const auto& k : mine) t.send(1 - rank, k, payload(k));
    for (auto k = theirs.rbegin(); k != theirs.rend(); ++k) {
      got[static_cast<size_t>(rank)].push_back(t.recv(1 - rank, *k, payload(*k).sizes()));
    }
    t.flush();
    EXPECT_EQ(t.stats().messages, 3);
  });
  EXPECT_EQ(errors, std::vector<std::string>(2, ""));
  for (int64_t rank = 0; rank < 2; ++rank) {
    const auto& theirs = rank == 0 ? keys10 : keys01;
    ASSERT_EQ(got[static_cast<size_t>(rank)].size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      const at::Tensor want = payload(theirs[2 - i]);
      const at::Tensor& have = got[static_cast<size_t>(rank)][i];
      EXPECT_EQ(have.scalar_type(), want.scalar_type()) << theirs[2 - i].to_string();
      EXPECT_TRUE(at::equal(have, want)) << "rank " << rank << ": " << theirs[2 - i].to_string();
    }
  }
}

TEST(PairTransport, SilentPeerIsNamedWithinTheTimeout) {
  const auto start = std::chrono::steady_clock::now();
  const auto errors = on_two_ranks(3, [&](int64_t rank, PairTransport& t) {
    if (rank == 0) {
      t.recv(1, MessageKey{false, 2, 0}, {2, 3});  // rank 1 never sends it
    } else {
      std::this_thread::sleep_for(std::chrono::seconds(6));
    }
  });
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(errors[0].find("rank 0: lost rank 1"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("waiting for A2(0)"), std::string::npos) << errors[0];
  EXPECT_LT(took, 12.0);
}

TEST(PairTransport, HeadersRoundTrip) {
  const at::Tensor t = message(1, {3, 1, 7}, at::kBFloat16);
  const at::Tensor h = PairTransport::header(12345, t);
  EXPECT_EQ(h.numel(), PairTransport::kHeaderLength);
  const auto d = PairTransport::describe(h);
  EXPECT_EQ(d.tag, 12345);
  EXPECT_EQ(d.dtype, at::kBFloat16);
  EXPECT_EQ(d.sizes, (std::vector<int64_t>{3, 1, 7}));
  const auto scalar = PairTransport::describe(PairTransport::header(7, at::ones({}, at::kDouble)));
  EXPECT_TRUE(scalar.sizes.empty());
  EXPECT_EQ(scalar.dtype, at::kDouble);
  // A payload read as a header (the peers' orders disagree) is refused, not trusted.
  EXPECT_THROW(PairTransport::describe(at::full({PairTransport::kHeaderLength}, -1, at::kLong)),
               TransportError);
  EXPECT_THROW(PairTransport::header(0, at::zeros(std::vector<int64_t>(9, 1))), TransportError);
}

TEST(PairTransport, BackendIsRefusedWhereItCannotTakeEffect) {
  EXPECT_EQ(resolve_backend(Backend::kAuto, c10::Device(c10::kCPU)), Backend::kGloo);
  EXPECT_EQ(resolve_backend(Backend::kGloo, c10::Device(c10::kCPU)), Backend::kGloo);
  try {
    resolve_backend(Backend::kNccl, c10::Device(c10::kCPU));
    ADD_FAILURE() << "nccl on the CPU was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(nccl_built() ? "trains on the CPU" : "has no NCCL"),
              std::string::npos)
        << e.what();
  }
  // One process: its workers pass messages in memory, so --backend cannot take effect.
  TempDir dir;
  Config cfg = tiny_config(dir.write("corpus.txt", corpus()), 3, "adam");
  cfg.dist.backend = Backend::kGloo;
  cfg.train.out_dir = (dir.path() / "out").string();
  TrainOptions quiet;
  quiet.quiet = true;
  EXPECT_THROW(train(cfg, quiet), ConfigError);
  EXPECT_FALSE(fs::exists(dir.path() / "out"));
  EXPECT_THROW(cfg.set_from_string("dist.backend", "mpi"), ConfigError);
}

}  // namespace

namespace {

TEST(PairTransport, GroupsJoinRingNeighboursBothWays) {
  const GroupLayout two = ring_layout(1, 2, 1);
  EXPECT_EQ(two.pairs, (std::vector<std::pair<int64_t, int64_t>>{{0, 1}, {1, 0}}));
  EXPECT_EQ(two.rings, 1);
  const GroupLayout three = ring_layout(4, 3, 2);  // ring 1 of ranks 3, 4, 5
  EXPECT_EQ(three.ring, 1);
  EXPECT_EQ(three.worker, 1);
  EXPECT_EQ(three.rings, 2);
  EXPECT_EQ(three.pairs, (std::vector<std::pair<int64_t, int64_t>>{
                             {3, 4}, {3, 5}, {4, 3}, {4, 5}, {5, 3}, {5, 4}}));
  EXPECT_TRUE(ring_layout(2, 1, 4).pairs.empty());  // data parallelism: rings of one worker
}

}  // namespace
