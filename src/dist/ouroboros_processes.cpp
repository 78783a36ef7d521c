// The Ouroboros engine with one worker per process: ticks walked on the shared pipeline clock,
// the gradient all-reduce across rings, and rank 0's view of ring 0's whole state.
#include "ouroboros/dist/ouroboros_processes.h"

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <chrono>
#include <map>
#include <memory>

#include "dist_detail.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/core/system.h"

namespace ouroboros {

using namespace dist_detail;

OuroborosProcesses::OuroborosProcesses(const LanguageModel& model, ParamSet params,
                                       const Config& cfg, DistContext& ctx)
    : ProcessMethod(model, std::move(params), cfg, ctx), clock_(cfg) {
  worker_ = std::make_unique<Worker>(model_, plan_, ctx_.worker(), params_, cfg_, *transport_);
  if (ctx_.replicas() > 1) {
    worker_->set_before_update([this](const ParamSet& p) { average_gradients(p); });
  }
  // Ring r's module k draws its dropout masks from generator r*K + k (ring 0's are a single
  // ring's; with K = 1, replica r's is the threaded data-parallel replica's, r + 1).
  const int64_t K = plan_.partition.K;
  for (int64_t k : worker_->modules()) {
    worker_->generator(k).set_state(
        training_context(cfg.train.seed, ctx_.ring() * K + k).generator->get_state());
  }
}

OuroborosProcesses::~OuroborosProcesses() = default;

void OuroborosProcesses::average_gradients(const ParamSet& params) {
  std::vector<Tensor> grads;
  for (const auto& p : params.tensors()) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return;  // the pipeline is not full yet, in every ring alike
  const auto start = std::chrono::steady_clock::now();
  std::vector<Tensor> flat_parts;
  for (const auto& g : grads) flat_parts.push_back(g.reshape({-1}));
  // NCCL reduces the gradients where they are; Gloo reduces host memory.
  PairGroups* nccl = ctx_.nccl();
  std::vector<at::Tensor> buf{nccl ? torch::cat(flat_parts) : torch::cat(flat_parts).cpu()};
  try {
    CommGroup& group = nccl ? nccl->rings() : *ctx_.replica_group();
    group.allreduce(buf)->wait(ctx_.wait_limit());
  } catch (const std::exception& e) {
    if (nccl) nccl->mark_aborted();
    throw TransportError(ctx_.lost_peer(-1, std::string("gradient all-reduce: ") + e.what()),
                         ctx_.resume_hint());
  }
  buf[0].div_(static_cast<double>(ctx_.replicas()));
  int64_t offset = 0;
  torch::NoGradGuard no_grad;
  for (auto& g : grads) {
    g.copy_(buf[0].narrow(0, offset, g.numel()).view(g.sizes()));
    offset += g.numel();
  }
  allreduce_ns_ +=
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count();
}

void OuroborosProcesses::run_job(const ClockJob& job, const BatchFn* batch, const LossFn* on_loss) {
  ctx_.open_job(jobs_);  // rank 0 may have been evaluating
  if (job.drain) fault_point("drain");
  for (int64_t t = job.first; t < job.first + job.count; ++t) {
    if (t == 0) fault_point("first-tick");
    const TickWindow win = clock_.window(job, t);
    transport_->begin_tick(t);
    ++ticks_run_;
    worker_->run_tick(win.synchronous ? plan_.synchronous : plan_.delayed, win, batch, on_loss);
  }
  // A run's last messages are received in the next job's first tick; after a drain none is left.
  if (job.drain) transport_->flush();
  clock_.finished(job);
  end_job();
}

void OuroborosProcesses::run(int64_t first, int64_t count, const BatchFn& batch,
                             const LossFn& on_loss) {
  pipeline_saved_ = false;
  const ClockJob job = clock_.run(first, count);
  const int64_t B = cfg_.train.batch_size, R = ctx_.replicas(), ring = ctx_.ring();
  // A tick's batch has R*B rows; ring r trains on rows [rB, (r+1)B).
  const BatchFn shard = [&](int64_t t) {
    Batch b = batch(t);
    if (R == 1) return b;
    return Batch{b.first.narrow(0, ring * B, B).contiguous(),
                 b.second.narrow(0, ring * B, B).contiguous()};
  };
  // The reported loss is the mean over the rings (the loss of the whole R*B batch).
  const LossFn mean_loss = [&](int64_t t, double loss) {
    if (R > 1) {
      std::vector<at::Tensor> v{torch::full({1}, loss, torch::kFloat64)};
      try {
        ctx_.replica_group()->allreduce(v)->wait(ctx_.wait_limit());
      } catch (const std::exception& e) {
        throw TransportError(ctx_.lost_peer(-1, std::string("loss all-reduce: ") + e.what()),
                             ctx_.resume_hint());
      }
      loss = v[0].item<double>() / static_cast<double>(R);
    }
    on_loss(t, loss);
  };
  run_job(job, &shard, &mean_loss);
}

// Every rank counts the same jobs, so a drain with nothing in flight is still one.
void OuroborosProcesses::drain() {
  pipeline_saved_ = false;
  run_job(clock_.drain(), nullptr, nullptr);
}

std::string OuroborosProcesses::describe() const {
  return plan_.summary() + processes_line(std::to_string(ctx_.replicas()) + " ring(s) of " +
                                          std::to_string(ctx_.workers_per_ring()) + " worker(s)");
}

void OuroborosProcesses::end_job() { ++jobs_; }

const ParamSet& OuroborosProcesses::own_params() const { return worker_->params(); }

MethodState OuroborosProcesses::own_state() const {
  MethodState mine;
  mine.generators.resize(static_cast<size_t>(plan_.partition.K));
  worker_->collect_state(mine);
  return mine;
}

MethodState OuroborosProcesses::state() const {
  const int64_t K = plan_.partition.K;
  const MethodState mine = own_state();
  MethodState s = peers_state();
  merge_optimizer_state(s.optimizer, mine.optimizer);
  for (int64_t k : worker_->modules()) {
    s.generators[static_cast<size_t>(ctx_.ring() * K + k - 1)] =
        mine.generators[static_cast<size_t>(k - 1)];
  }
  s.memory = mine.memory;
  return s;
}

std::optional<CheckpointShard> OuroborosProcesses::shard() const {
  pipeline_saved_ = true;
  CheckpointShard out;
  out.rank = ctx_.rank();
  out.world = ctx_.world_size();
  const MethodState s = own_state();
  // Each ring its own rows' memories and its own dropout generators (load_checkpoint joins
  // them in ring order); the rings hold the same weights and optimizer state.
  out.memory = s.memory;
  for (int64_t k : worker_->modules()) out.generators[k] = s.generators[static_cast<size_t>(k - 1)];
  if (ctx_.ring() == 0) {
    out.model = worker_->params();
    out.optimizer = s.optimizer;
  }
  out.pipeline = worker_->save_pipeline(clock_.next_tick());
  out.pipeline_start = clock_.pipeline_start();
  return out;
}

void OuroborosProcesses::restore(const MethodState& given, int64_t tick) {
  const int64_t K = plan_.partition.K, R = ctx_.replicas();
  check_generator_count(given, static_cast<size_t>(K * R),
                        R > 1 ? "modules in all rings" : "modules");
  MethodState s = given;  // this ring's generators, as the worker counts them
  s.generators.assign(given.generators.begin() + ctx_.ring() * K,
                      given.generators.begin() + (ctx_.ring() + 1) * K);
  if (ctx_.replicas() > 1) {  // memories of the whole tick's batch: this ring's rows
    const int64_t B = cfg_.train.batch_size;
    for (auto& [layer, t] : s.memory) {
      if (t.size(0) != B * ctx_.replicas()) {
        throw CheckpointError("the checkpoint's memory of layer " + std::to_string(layer) +
                                  " has " + std::to_string(t.size(0)) + " rows, this run " +
                                  std::to_string(B * ctx_.replicas()) +
                                  " (--replicas times "
                                  "--batch-size)",
                              "resume with the batch size and replicas that wrote it");
      }
      t = t.narrow(0, ctx_.ring() * B, B).contiguous();
    }
  }
  worker_->restore_state(s);
  peers_.optimizer = c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
  merge_optimizer_state(peers_.optimizer, s.optimizer);
  peers_.generators = s.generators;
  if (!s.pipeline.saved()) {
    clock_.resume(tick);
    return;
  }
  const std::vector<WorkerInFlight>& workers = s.pipeline.workers;
  if (static_cast<int64_t>(workers.size()) != ctx_.world_size()) {
    throw CheckpointError("the checkpoint's pipeline has " + std::to_string(workers.size()) +
                              " workers, this run " + std::to_string(ctx_.world_size()) +
                              " processes",
                          "resume with the --modules, --partition and --replicas that wrote it");
  }
  clock_.resume(tick, s.pipeline.start);
  worker_->restore_pipeline(workers[static_cast<size_t>(ctx_.rank())]);
}

}  // namespace ouroboros
