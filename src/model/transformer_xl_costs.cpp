// What Transformer-XL costs, for the planner, the benchmarks and the memory estimate: its weight
// count, the forward cost of its pieces and the FLOPs of a training step.
#include "ouroboros/model/transformer_xl.h"

namespace ouroboros {

// The embedding (adaptive: each cluster's table and its projection when narrower than C), per layer
// the biases 2HD, qkv 3HD C, r_net HD C, o_net C HD, two LayerNorms 4C and the feed-forward
// 2 Di C + Di + C, then the softmax bias V (adaptive: plus the cluster head).
int64_t TransformerXL::param_count() const {
  const int64_t C = cfg_.n_embd, V = cfg_.vocab_size, L = cfg_.n_layer, Di = d_inner();
  const int64_t HD = (C / cfg_.n_head) * cfg_.n_head;
  int64_t n = 0;
  if (adaptive()) {
    for (size_t c = 0; c + 1 < bounds_.size(); ++c) {
      const int64_t d = cluster_dim(c);
      n += (bounds_[c + 1] - bounds_[c]) * d + (d != C ? C * d : 0);
    }
    const int64_t clusters = static_cast<int64_t>(bounds_.size()) - 2;
    n += clusters * cluster_dim(0) + clusters;
  } else {
    n += V * C;
  }
  n += L * (2 * HD + 3 * HD * C + HD * C + C * HD + 4 * C + 2 * Di * C + Di + C);
  return n + V;
}

namespace {

// Matmul FLOPs of the pieces of one forward on B segments of T tokens with a full memory.
struct XLForwardFlops {
  double block = 0.0;  // one layer
  double head = 0.0;   // output projection(s)
};

XLForwardFlops xl_forward_flops(const TransformerXL& m, int64_t batch_size) {
  const ModelConfig& c = m.config();
  const double B = static_cast<double>(batch_size), Q = static_cast<double>(c.block_size),
               C = static_cast<double>(c.n_embd), D = static_cast<double>(m.d_inner()),
               K = static_cast<double>(c.mem_len + c.block_size);
  XLForwardFlops f;
  f.block = 2.0 * B * K * C * 3.0 * C     // qkv_net on memory + segment
            + 2.0 * K * C * C             // r_net on the encodings (once per batch)
            + 3.0 * 2.0 * B * Q * K * C   // content scores, position scores, prob . v
            + 2.0 * B * Q * C * C         // o_net
            + 2.0 * 2.0 * B * Q * C * D;  // feed-forward
  // The adaptive head scores cluster 0 plus one entry per tail cluster for every token, and each
  // tail only for its own tokens; the full head is every token against V.
  const auto& b = m.bounds();
  const double V = static_cast<double>(c.vocab_size), N = B * Q;
  f.head = m.adaptive() ? 2.0 * N * C * static_cast<double>(b[1] + b.size() - 2) : 2.0 * N * C * V;
  return f;
}

}  // namespace

CostModel TransformerXL::cost_model(int64_t batch_size) const {
  const XLForwardFlops f = xl_forward_flops(*this, batch_size);
  const double B = static_cast<double>(batch_size), Q = static_cast<double>(cfg_.block_size),
               C = static_cast<double>(cfg_.n_embd), D = static_cast<double>(d_inner()),
               K = static_cast<double>(cfg_.mem_len + cfg_.block_size),
               H = static_cast<double>(cfg_.n_head), V = static_cast<double>(cfg_.vocab_size),
               N = B * Q;
  // Score tensors [B, H, Q, K]: two matmul outputs, the add, rel_shift's pad and copy, the mask,
  // softmax and its dropout, about 8 passes; per token LayerNorms, ReLU, residuals and dropouts.
  const double block_elementwise = B * H * Q * K * 8.0 + N * C * 20.0 + N * D * 3.0;
  CostModel cost;
  cost.block_forward.assign(
      static_cast<size_t>(cfg_.n_layer),
      f.block / kMatmulFlopsPerSecond + block_elementwise / kElementwisePerSecond);
  cost.embed_forward = N * C * 3.0 / kElementwisePerSecond;
  cost.head_forward = f.head / kMatmulFlopsPerSecond +
                      (N * (adaptive() ? static_cast<double>(bounds_[1]) : V) * 6.0 + N * C * 8.0) /
                          kElementwisePerSecond;
  cost.backward_ratio = 1.5;
  const double layer_params = 4.0 * C * C + 2.0 * C * D;
  cost.update_per_block = layer_params * 10.0 / kElementwisePerSecond;
  cost.update_embed_head = V * C * 10.0 / kElementwisePerSecond;
  // q, k, v, r_net and o_net (C x C each, for n_head * d_head = C), the feed-forward's two.
  cost.newton_schulz_per_block =
      (5 * newton_schulz_flops(C, C) + 2 * newton_schulz_flops(D, C)) / kMatmulFlopsPerSecond;
  return cost;
}

double TransformerXL::train_step_flops(int64_t batch_size) const {
  const XLForwardFlops f = xl_forward_flops(*this, batch_size);
  return 3.0 * (static_cast<double>(cfg_.n_layer) * f.block + f.head);
}

}  // namespace ouroboros
