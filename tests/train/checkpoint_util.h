// What the checkpoint tests share: a checkpoint as training writes it, and the message of a
// CheckpointError.
#pragma once

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "ouroboros/core/errors.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/train/checkpoint.h"
#include "ouroboros/train/optim.h"

namespace ouroboros {

inline void write_bytes(const std::filesystem::path& file, const std::string& bytes) {
  std::ofstream(file, std::ios::binary) << bytes;
}

// A checkpoint as training writes it: a tiny model after two Adam steps, a char vocabulary.
inline Checkpoint make_checkpoint() {
  Checkpoint ck;
  ck.config.model.n_layer = 2;
  ck.config.model.n_head = 2;
  ck.config.model.n_embd = 8;
  ck.config.model.block_size = 6;
  ck.config.train.optimizer = OptimizerKind::kAdam;
  ck.config.train.lr = 0.003;
  ck.config.data.data = "some/corpus.txt";
  ck.tokenizer = Tokenizer::build("char", "hello world, héllo");
  ck.config.model.vocab_size = ck.tokenizer.vocab_size();
  GPT model(ck.config.model);
  ParamSet params = model.init_params(5);
  Optimizer opt(ck.config.train, params);
  ForwardContext ctx;
  const Tensor x = torch::tensor({1, 2, 3, 4, 5, 6}, torch::kInt64).view({1, 6});
  for (int i = 0; i < 2; ++i) {
    model.loss(params, x, x.roll(1, 1), ctx).backward();
    opt.step(0.003);
    opt.zero_grad();
  }
  for (size_t i = 0; i < params.size(); ++i) {
    ck.model.add(params.names()[i], params.tensors()[i].detach().clone());
  }
  ck.optimizer = opt.state_dict();
  ck.step = 2;
  ck.sampler_state = 0xF00DFACECAFEBEEFULL;  // above 2^63: stored as int64, must come back
  ck.generator_states = {make_generator(3).get_state(), make_generator(4).get_state()};
  return ck;
}

inline std::string checkpoint_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return "(no CheckpointError)";
}

}  // namespace ouroboros
