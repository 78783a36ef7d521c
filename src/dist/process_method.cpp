// What the methods with one worker per process share: the transport of the run's backend, the
// peers' state, collecting ring 0's weights at rank 0, and evaluation batches through ring 0.
#include "ouroboros/dist/process_method.h"

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <chrono>
#include <map>
#include <memory>

#include "dist_detail.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"
#include "ouroboros/dist/c10d_transport.h"
#include "ouroboros/dist/pair_transport.h"
#include "ouroboros/engine/worker.h"

namespace ouroboros {

using namespace dist_detail;

ProcessMethod::ProcessMethod(const LanguageModel& model, ParamSet params, const Config& cfg,
                             DistContext& ctx)
    : model_(model),
      cfg_(cfg),
      ctx_(ctx),
      params_(std::move(params)),
      plan_(make_plan(cfg, model.cost_model(cfg.train.batch_size))),
      transport_(ctx.nccl() ? std::unique_ptr<ProcessTransport>(
                                  std::make_unique<PairTransport>(ctx, *ctx.nccl()))
                            : std::make_unique<C10dTransport>(ctx)) {
  for (int64_t g = 1; g <= plan_.partition.K * ctx_.replicas(); ++g) {
    peers_.generators.push_back(training_context(cfg.train.seed, g).generator->get_state());
  }
}

MethodState ProcessMethod::peers_state() const {
  MethodState s = peers_;
  s.optimizer = c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
  merge_optimizer_state(s.optimizer, peers_.optimizer);
  return s;
}

ProcessMethod::~ProcessMethod() {
  if (pipeline_saved_) transport_->release_sends();
  if (!sink_) return;
  const TransportStats& st = transport_->stats();
  sink_->messages = st.messages;
  sink_->bytes = st.bytes;
  sink_->wait_s = static_cast<double>(st.wait_ns) * 1e-9;
  sink_->allreduce_s = static_cast<double>(allreduce_ns_) * 1e-9;
  sink_->ticks = ticks_run_;
}

std::string ProcessMethod::processes_line(const std::string& layout) const {
  return "processes: " + std::to_string(ctx_.world_size()) + " (" + layout + "), c10d " +
         name_of(ctx_.backend()) + ", store " + ctx_.env().master_addr + ":" +
         std::to_string(ctx_.env().master_port) + "\n";
}

void ProcessMethod::collect_params() {
  if (ctx_.ring() != 0 || ctx_.workers_per_ring() == 1) return;
  constexpr int kTag = 0xff;
  torch::NoGradGuard no_grad;
  const auto flat = [](const ParamSet& p) {
    std::vector<Tensor> parts;
    for (const Tensor& t : p.tensors()) parts.push_back(t.detach().reshape({-1}));
    return torch::cat(parts).cpu();  // Gloo carries host memory
  };
  try {
    if (!ctx_.is_lead()) {
      std::vector<at::Tensor> v{flat(own_params())};
      ctx_.world().send(v, 0, kTag)->wait(ctx_.wait_limit());
      return;
    }
    for (int64_t w = 1; w < ctx_.workers_per_ring(); ++w) {
      const ParamSet theirs =
          params_.subset(worker_param_names(model_, plan_.partition, params_, w));
      std::vector<at::Tensor> v{torch::empty({theirs.numel()})};
      ctx_.world().recv(v, static_cast<int>(w), kTag)->wait(ctx_.wait_limit());
      int64_t offset = 0;
      for (const Tensor& t : theirs.tensors()) {
        t.detach().copy_(v[0].narrow(0, offset, t.numel()).view(t.sizes()));
        offset += t.numel();
      }
    }
  } catch (const std::exception& e) {
    throw TransportError(
        ctx_.lost_peer(ctx_.is_lead() ? -1 : 0, std::string("collecting the weights: ") + e.what()),
        ctx_.resume_hint());
  }
}

std::optional<LossSumFn> ProcessMethod::ring_loss_sum() {
  if (ctx_.ring() != 0 || ctx_.workers_per_ring() == 1) return std::nullopt;
  struct Modules {  // this worker's modules: weights and evaluation contexts (memories)
    std::map<int64_t, ParamSet> params;
    std::map<int64_t, ForwardContext> contexts;
    int64_t batch = 0;
  };
  auto mine = std::make_shared<Modules>();
  const Partition& part = plan_.partition;
  for (int64_t k : part.modules_of_worker(ctx_.worker())) {
    mine->params[k] = own_params().subset(model_.module_param_names(part.module(k)));
    mine->contexts[k].sum_loss = part.module(k).head;
  }
  return LossSumFn([this, mine](const Tensor& x, const Tensor& y, ForwardContext& loop) {
    const Partition& part = plan_.partition;
    const int64_t K = part.K, w = ctx_.worker();
    const std::vector<int64_t> shape = {x.size(0), x.size(1), cfg_.model.n_embd};
    const int64_t b = mine->batch++;
    const auto key = [b](int64_t boundary) { return MessageKey{true, boundary, b}; };
    const auto forward = [&](int64_t k, const Tensor& input, const Tensor& targets) {
      ForwardContext& c = mine->contexts.at(k);
      c.lengths = loop.lengths;
      return model_.forward_module(mine->params.at(k), part.module(k), input, targets, c);
    };
    if (w == 0) {
      transport_->send(module_worker(K, 2), key(1), forward(1, x, Tensor()));
      return forward(K, transport_->recv(module_worker(K, K - 1), key(K - 1), shape), y);
    }
    const int64_t k = w + 1;  // the middle module this worker holds
    transport_->send(
        module_worker(K, k + 1), key(k),
        forward(k, transport_->recv(module_worker(K, k - 1), key(k - 1), shape), Tensor()));
    return torch::zeros({}, torch::kFloat64);  // the lead's result is the one reported
  });
}

}  // namespace ouroboros
