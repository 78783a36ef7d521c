// Helpers of the engine tests: a method run tick by tick with the weights and memories recorded
// after every tick (and after the final drain), and the bit-for-bit comparison of two recordings.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ouroboros/core/config.h"
#include "ouroboros/train/method.h"

namespace ouroboros_test {

struct Recording {
  std::vector<std::vector<ouroboros::Tensor>> params_after_tick;  // detached copies
  std::vector<std::map<int64_t, ouroboros::Tensor>> memory;       // segment memories, same ticks
  std::vector<double> losses;
};

// Segment t of B streams of a fixed random text (row b continues row b of segment t-1), so that
// Transformer-XL's memories carry real context.
inline ouroboros::Batch segment(const ouroboros::Config& c, int64_t t) {
  at::Generator g = ouroboros::make_generator(77);
  const int64_t T = c.model.block_size, n = 64 * T;
  ouroboros::Tensor text = at::randint(c.model.vocab_size, {c.train.batch_size, n + 1}, g);
  const int64_t start = (t * T) % n;
  return {text.narrow(1, start, T).contiguous(), text.narrow(1, start + 1, T).contiguous()};
}

// Runs `ticks` ticks one at a time, recording the weights after each, then drains.
inline Recording record(ouroboros::Method& m, const ouroboros::BatchFn& batch, int64_t ticks) {
  Recording r;
  ouroboros::LossFn loss = [&](int64_t, double v) { r.losses.push_back(v); };
  auto snap = [&] {
    std::vector<ouroboros::Tensor> v;
    for (const auto& p : m.params().tensors()) v.push_back(p.detach().clone());
    r.params_after_tick.push_back(v);
    r.memory.push_back(m.state().memory);
  };
  for (int64_t t = 0; t < ticks; ++t) {
    m.run(t, 1, batch, loss);
    snap();
  }
  m.drain();
  snap();
  return r;
}

// Same losses, weights and memories after every tick, to the bit.
inline void expect_identical(const Recording& a, const Recording& b,
                             const std::vector<std::string>& names) {
  ASSERT_EQ(a.losses.size(), b.losses.size());
  for (size_t i = 0; i < a.losses.size(); ++i) {
    EXPECT_EQ(a.losses[i], b.losses[i]) << "loss of tick " << i;
  }
  ASSERT_EQ(a.params_after_tick.size(), b.params_after_tick.size());
  for (size_t t = 0; t < a.params_after_tick.size(); ++t) {
    for (size_t i = 0; i < names.size(); ++i) {
      ASSERT_TRUE(torch::equal(a.params_after_tick[t][i], b.params_after_tick[t][i]))
          << names[i] << " differs after tick " << t;
    }
    ASSERT_EQ(a.memory[t].size(), b.memory[t].size()) << "memories after tick " << t;
    for (const auto& [layer, m] : a.memory[t]) {
      ASSERT_TRUE(b.memory[t].count(layer))
          << "no memory of layer " << layer << " after tick " << t;
      ASSERT_TRUE(torch::equal(m, b.memory[t].at(layer)))
          << "memory of layer " << layer << " differs after tick " << t;
    }
  }
}

}  // namespace ouroboros_test
