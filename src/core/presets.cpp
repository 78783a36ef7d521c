// The presets: Transformer-XL base configurations as in the paper's scripts (run_enwik8_base.sh,
// run_text8_base.sh, run_wt103_base.sh), and demo-xl.
#include "ouroboros/core/presets.h"

#include "ouroboros/core/errors.h"

namespace ouroboros {
namespace {

// Adam (0.9, 0.999, 1e-8), lr 2.5e-4 with cosine decay to 0 and no warm-up, clip 0.25.
void paper_optimizer(Config& c) {
  c.train.optimizer = OptimizerKind::kAdam;
  c.train.beta1 = 0.9;
  c.train.beta2 = 0.999;
  c.train.eps = 1e-8;
  c.train.lr = 2.5e-4;
  c.train.min_lr = 0.0;
  c.train.warmup_steps = 0;
  c.train.schedule = LrSchedule::kCosine;
  c.train.grad_clip = 0.25;
  c.train.weight_decay = 0.0;
}

// 12 layers, d_model 512, 8 heads of 64, inner 2048, tgt_len = mem_len = 512; evaluation with
// tgt_len 80, mem_len 2100, clamp_len 820, same_length.
void character_base(Config& c) {
  c.model.model = ModelKind::kTransformerXl;
  c.model.n_layer = 12;
  c.model.n_embd = 512;
  c.model.n_head = 8;
  c.model.d_inner = 2048;
  c.model.dropout = 0.1;
  c.model.attn_dropout = 0.0;
  c.model.pre_lnorm = 0;
  c.model.block_size = 512;
  c.model.mem_len = 512;
  c.model.clamp_len = 0;
  c.model.same_length = 0;
  c.model.eval_tgt_len = 80;
  c.model.eval_mem_len = 2100;
  c.model.eval_clamp_len = 820;
  c.model.eval_same_length = 1;
  c.train.batch_size = 22;
  c.train.steps = 400000;
  c.train.eval_interval = 4000;
  c.train.eval_batches = 50;
  c.train.log_interval = 200;
  paper_optimizer(c);
}

void enwik8_base(Config& c) {
  character_base(c);
  c.data.format = DataFormat::kEnwik8;
  c.data.tokenizer = TokenizerChoice::kByte;
}

void text8_base(Config& c) {
  character_base(c);
  c.data.format = DataFormat::kText8;
  c.data.tokenizer = TokenizerChoice::kChar;
}

// 16 layers, d_model 410, 10 heads of 41, inner 2100, tgt_len = mem_len = 150, adaptive softmax
// (cutoffs 20000, 40000, 200000, div_val 1) tied to the adaptive input; evaluation with tgt_len
// 64, mem_len 640, clamp_len 400, same_length.
void wt103_base(Config& c) {
  c.model.model = ModelKind::kTransformerXl;
  c.model.n_layer = 16;
  c.model.n_embd = 410;
  c.model.n_head = 10;
  c.model.d_inner = 2100;
  c.model.dropout = 0.1;
  c.model.attn_dropout = 0.0;
  c.model.pre_lnorm = 0;
  c.model.block_size = 150;
  c.model.mem_len = 150;
  c.model.clamp_len = 0;
  c.model.same_length = 0;
  c.model.eval_tgt_len = 64;
  c.model.eval_mem_len = 640;
  c.model.eval_clamp_len = 400;
  c.model.eval_same_length = 1;
  c.model.adaptive_cutoffs = "20000,40000,200000";
  c.model.div_val = 1;
  c.data.format = DataFormat::kWikitext103;
  c.data.tokenizer = TokenizerChoice::kWord;
  c.train.batch_size = 60;
  c.train.steps = 200000;
  c.train.eval_interval = 4000;
  c.train.eval_batches = 50;
  c.train.log_interval = 200;
  paper_optimizer(c);
}

// A small Transformer-XL on the fortunes corpus, byte level, trained with Ouroboros (K = 3 on 2
// workers); a few minutes on 2 cores.
void demo_xl(Config& c) {
  c.model.model = ModelKind::kTransformerXl;
  c.model.n_layer = 4;
  c.model.n_embd = 128;
  c.model.n_head = 4;
  c.model.d_inner = 512;
  c.model.dropout = 0.1;
  c.model.block_size = 64;
  c.model.mem_len = 64;
  c.model.eval_tgt_len = 64;
  c.model.eval_mem_len = 128;
  c.model.eval_same_length = 1;
  c.data.format = DataFormat::kFortunes;
  c.data.tokenizer = TokenizerChoice::kByte;
  c.train.batch_size = 16;
  c.train.steps = 600;
  c.train.optimizer = OptimizerKind::kAdam;
  c.train.lr = 1e-3;
  c.train.min_lr = 1e-4;
  c.train.warmup_steps = 200;
  c.train.schedule = LrSchedule::kCosine;
  c.train.grad_clip = 0.25;
  c.train.eval_interval = 200;
  c.train.eval_batches = 20;
  c.train.log_interval = 50;
  c.train.out_dir = "runs/demo-xl";
  c.engine.modules = 3;
  c.engine.partition = "auto";
}

}  // namespace

const std::vector<Preset>& presets() {
  static const std::vector<Preset> all = {
      {"enwik8-base", "Transformer-XL base on enwik8 (12L, 512 wide, 41M parameters)", enwik8_base},
      {"text8-base", "Transformer-XL base on text8 (12L, 512 wide)", text8_base},
      {"wt103-base", "Transformer-XL base on WikiText-103 (16L, 410 wide, adaptive softmax)",
       wt103_base},
      {"demo-xl", "small Transformer-XL on the fortunes demo corpus, K = 3 (minutes)", demo_xl},
  };
  return all;
}

std::string preset_list() {
  std::string s;
  for (const auto& p : presets()) s += (s.empty() ? "" : " | ") + p.name;
  return s;
}

void apply_preset(const std::string& name, Config& cfg) {
  for (const auto& p : presets()) {
    if (p.name == name) {
      p.apply(cfg);
      return;
    }
  }
  throw ConfigError("unknown preset '" + name + "'", "use one of " + preset_list());
}

Config benchmark_config() {
  Config c;
  c.model.n_layer = 6;
  c.model.n_head = 4;
  c.model.n_embd = 256;
  c.model.block_size = 128;
  c.model.vocab_size = 256;
  c.train.batch_size = 8;
  c.engine.modules = 3;
  return c;
}

}  // namespace ouroboros
