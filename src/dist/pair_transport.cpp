// The Transport over one group per directed pair (NCCL between GPUs): header-then-payload
// messages read in the sender's order, and the NCCL groups where the build has them.
#ifdef OUROBOROS_WITH_NCCL  // with USE_C10D_NCCL (CMakeLists.txt)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include "ouroboros/dist/pair_transport.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <exception>
#include <limits>
#include <set>
#include <stdexcept>

#include "dist_detail.h"
#include "ouroboros/core/errors.h"
#include "ouroboros/dist/context.h"

namespace ouroboros {

using namespace dist_detail;

#ifdef OUROBOROS_WITH_NCCL
bool nccl_built() { return true; }

GroupMaker nccl_groups(c10::intrusive_ptr<c10d::Store> store, const c10::Device& device,
                       std::chrono::milliseconds timeout) {
  GroupMaker m;
  m.device = device;
  m.timeout = timeout;
  m.make = [store, timeout](const std::string& name, int64_t rank, int64_t size) {
    auto options = c10d::ProcessGroupNCCL::Options::create();
    // NCCL's watchdog ends a process whose operation outlives this; the transport's own wait
    // (the context's wait limit) reports the lost rank first.
    options->timeout = timeout + std::chrono::seconds(30);
    return c10::intrusive_ptr<CommGroup>(c10::make_intrusive<c10d::ProcessGroupNCCL>(
        c10::make_intrusive<c10d::PrefixStore>("nccl/" + name, store), static_cast<int>(rank),
        static_cast<int>(size), options));
  };
  m.close = [](CommGroup& g, bool aborted) {
    if (aborted) {
      g.abort();
    } else {
      g.shutdown();
    }
  };
  return m;
}
#else
bool nccl_built() { return false; }

GroupMaker nccl_groups(c10::intrusive_ptr<c10d::Store>, const c10::Device&,
                       std::chrono::milliseconds) {
  // resolve_backend refuses --backend nccl in this build before any group is made.
  throw std::logic_error("nccl_groups in a build without NCCL");
}
#endif

GroupLayout ring_layout(int64_t rank, int64_t workers, int64_t rings) {
  GroupLayout layout;
  layout.worker = rank % workers;
  layout.ring = rank / workers;
  layout.rings = rings;
  const int64_t first = layout.ring * workers;
  std::set<std::pair<int64_t, int64_t>> pairs;
  for (int64_t w = 0; w < workers; ++w) {
    const int64_t a = first + w, b = first + (w + 1) % workers;
    if (a == b) continue;
    pairs.insert({a, b});
    pairs.insert({b, a});
  }
  layout.pairs.assign(pairs.begin(), pairs.end());
  return layout;
}

PairGroups::PairGroups(GroupMaker maker, int64_t rank, const GroupLayout& layout)
    : maker_(std::move(maker)), rank_(rank) {
  const auto options = torch::dtype(torch::kFloat).device(maker_.device);
  for (const auto& [src, dst] : layout.pairs) {
    if (src != rank_ && dst != rank_) continue;
    auto g = maker_.make("pair/" + std::to_string(src) + ">" + std::to_string(dst),
                         rank_ == src ? 0 : 1, 2);
    std::vector<at::Tensor> one{torch::ones({1}, options)};
    (rank_ == src ? g->send(one, 1, 0) : g->recv(one, 0, 0))->wait(maker_.timeout);
    pairs_[{src, dst}] = g;
  }
  if (layout.rings > 1) {
    rings_ = maker_.make("rings/" + std::to_string(layout.worker), layout.ring, layout.rings);
    std::vector<at::Tensor> one{torch::ones({1}, options)};
    rings_->allreduce(one)->wait(maker_.timeout);
  }
}

PairGroups::~PairGroups() {
  if (!maker_.close) return;
  if (std::uncaught_exceptions() > 0) aborted_ = true;  // a failure is on its way out
  auto close = [&](CommGroup& g) {
    try {
      maker_.close(g, aborted_);
    } catch (const std::exception&) {
      // closing after a failure: the failure is what gets reported
    }
  };
  for (auto& [_, g] : pairs_) close(*g);
  if (rings_) close(*rings_);
}

CommGroup& PairGroups::pair(int64_t src, int64_t dst) {
  auto it = pairs_.find({src, dst});
  if (it == pairs_.end()) {
    throw TransportError("rank " + std::to_string(rank_) + " has no group for messages from rank " +
                         std::to_string(src) + " to rank " + std::to_string(dst) +
                         " (only between ring neighbours)");
  }
  return *it->second;
}

CommGroup& PairGroups::rings() {
  if (!rings_) throw TransportError("rank " + std::to_string(rank_) + " is in one ring only");
  return *rings_;
}

PairTransport::PairTransport(DistContext& ctx, PairGroups& groups)
    // A lost send aborts the groups, so they are torn down with abort(), not shutdown().
    : ProcessTransport(ctx, [&groups] { groups.mark_aborted(); }), groups_(groups) {}

PairTransport::~PairTransport() = default;

torch::Tensor PairTransport::header(int64_t tag, const torch::Tensor& t) {
  if (t.dim() > kMaxDims) {
    throw TransportError("a message of " + std::to_string(t.dim()) + " dimensions; at most " +
                         std::to_string(kMaxDims) + " fit a header");
  }
  std::vector<int64_t> h(kHeaderLength, 0);
  h[0] = tag;
  h[1] = static_cast<int64_t>(t.scalar_type());
  h[2] = t.dim();
  for (int64_t d = 0; d < t.dim(); ++d) h[static_cast<size_t>(3 + d)] = t.size(d);
  return torch::tensor(h, torch::kInt64);
}

PairTransport::Described PairTransport::describe(const torch::Tensor& header) {
  const torch::Tensor h = header.to(torch::kCPU).contiguous();
  const int64_t* v = h.data_ptr<int64_t>();
  if (h.numel() != kHeaderLength || h.scalar_type() != torch::kInt64 || v[2] < 0 ||
      v[2] > kMaxDims || v[1] < 0 || v[1] >= static_cast<int64_t>(at::ScalarType::NumOptions)) {
    throw TransportError("a message header that is not one (" + std::to_string(h.numel()) +
                         " values): the peers' message order disagrees");
  }
  Described d{v[0], static_cast<at::ScalarType>(v[1]), {}};
  for (int64_t i = 0; i < v[2]; ++i) d.sizes.push_back(v[3 + i]);
  return d;
}

void PairTransport::lost(int64_t peer, const std::string& what) {
  groups_.mark_aborted();
  throw TransportError(ctx_.lost_peer(peer, what), ctx_.resume_hint());
}

void PairTransport::send(int64_t dst, const MessageKey& key, const torch::Tensor& t) {
  check_not_aborted();
  const int64_t peer = global_rank(dst);
  const c10::Device device = ctx_.device();
  std::vector<at::Tensor> head{header(key.tag(), t).to(device)};
  std::vector<at::Tensor> body{t.to(device).contiguous()};
  stats_.messages += 1;
  stats_.bytes += static_cast<int64_t>(t.numel() * t.element_size());
  try {
    CommGroup& g = groups_.pair(ctx_.rank(), peer);
    sends_->add(tick_, peer, g.send(head, 1, 0), head);
    sends_->add(tick_, peer, g.send(body, 1, 0), body);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    lost(peer, "sending " + key.to_string() + ": " + first_line(e.what()));
  }
}

std::pair<int64_t, torch::Tensor> PairTransport::receive_next(int64_t peer,
                                                              const MessageKey& wanted) {
  CommGroup& g = groups_.pair(peer, ctx_.rank());
  const c10::Device device = ctx_.device();
  std::vector<at::Tensor> head{
      torch::empty({kHeaderLength}, torch::dtype(torch::kInt64).device(device))};
  try {
    g.recv(head, 0, 0)->wait(ctx_.wait_limit());
  } catch (const std::exception& e) {
    lost(peer, "waiting for " + wanted.to_string() + ": " + first_line(e.what()));
  }
  const Described d = describe(head[0]);
  std::vector<at::Tensor> body{torch::empty(d.sizes, torch::dtype(d.dtype).device(device))};
  try {
    g.recv(body, 0, 0)->wait(ctx_.wait_limit());
  } catch (const std::exception& e) {
    lost(peer, "waiting for " + wanted.to_string() + ": " + first_line(e.what()));
  }
  return {d.tag, body[0]};
}

torch::Tensor PairTransport::recv(int64_t src, const MessageKey& key, at::IntArrayRef shape) {
  check_not_aborted();
  const int64_t peer = global_rank(src);
  const auto start = std::chrono::steady_clock::now();
  auto& early = early_[peer];
  torch::Tensor t;
  if (auto it = early.find(key.tag()); it != early.end()) {
    t = it->second;
    early.erase(it);
  }
  while (!t.defined()) {
    auto [tag, payload] = receive_next(peer, key);
    if (tag == key.tag()) {
      t = payload;
    } else {
      early[tag] = payload;
    }
  }
  stats_.wait_ns +=
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count();
  if (t.sizes() != shape) {
    throw TransportError("rank " + std::to_string(ctx_.rank()) + ": " + key.to_string() +
                         " arrived with shape " + c10::str(t.sizes()) + ", expected " +
                         c10::str(shape));
  }
  return t;
}

}  // namespace ouroboros
