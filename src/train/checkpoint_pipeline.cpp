// The batches in flight (train/pipeline_state.h) as a checkpoint file holds them: plain
// dictionaries and lists that Python's torch.load reads (docs/CHECKPOINTS.md).
//   pipeline: {"start": int, "workers": [worker, ...]}
//   worker:   {"modules": {"k": [batch, ...]}, "targets": {"batch": T}, "mailbox": [message, ...],
//              "sent": [message with "peer" and "recv_tick", ...]}
//   batch:    {"batch", "snapshot", "weights": [T, ...], "input", "generator", "memory": {"l": T}}
//   message:  {"error", "boundary", "batch", "tensor"}, and "micro" for a micro-batch's
#include "checkpoint_detail.h"

#include <string>

namespace ouroboros::checkpoint_detail {
namespace {

using c10::impl::GenericDict;
using c10::impl::GenericList;

GenericDict tensor_dict(const std::map<int64_t, at::Tensor>& tensors) {
  GenericDict d = new_dict();
  for (const auto& [key, t] : tensors) d.insert(std::to_string(key), t);
  return d;
}

std::map<int64_t, at::Tensor> tensors_of(const GenericDict& d) {
  std::map<int64_t, at::Tensor> out;
  for (const auto& item : d) out[std::stoll(item.key().toStringRef())] = item.value().toTensor();
  return out;
}

GenericDict message_dict(const PendingMessage& m, bool sent) {
  GenericDict d = new_dict();
  d.insert("error", m.error);
  d.insert("boundary", m.boundary);
  d.insert("batch", m.batch);
  if (m.micro > 0) d.insert("micro", m.micro);
  d.insert("tensor", m.tensor);
  if (sent) {
    d.insert("peer", m.peer);
    d.insert("recv_tick", m.recv_tick);
  }
  return d;
}

PendingMessage message_of(const GenericDict& d, bool sent) {
  PendingMessage m;
  m.error = d.at("error").toBool();
  m.boundary = d.at("boundary").toInt();
  m.batch = d.at("batch").toInt();
  m.micro = d.contains("micro") ? d.at("micro").toInt() : 0;
  m.tensor = d.at("tensor").toTensor();
  if (sent) {
    m.peer = d.at("peer").toInt();
    m.recv_tick = d.at("recv_tick").toInt();
  }
  return m;
}

GenericDict batch_dict(const BatchInFlight& b) {
  GenericDict r = new_dict();
  r.insert("batch", b.batch);
  r.insert("snapshot", b.snapshot);
  GenericList weights(c10::TensorType::get());
  for (const at::Tensor& t : b.weights) weights.push_back(t);
  r.insert("weights", weights);
  r.insert("input", b.input);
  r.insert("generator", b.generator);
  r.insert("memory", tensor_dict(b.memory));
  return r;
}

BatchInFlight batch_of(const GenericDict& r) {
  BatchInFlight b;
  b.batch = r.at("batch").toInt();
  b.snapshot = r.at("snapshot").toBool();
  if (b.snapshot) b.weights = r.at("weights").toTensorVector();
  b.input = r.at("input").toTensor();
  b.generator = r.at("generator").toTensor();
  b.memory = tensors_of(r.at("memory").toGenericDict());
  return b;
}

}  // namespace

GenericDict new_dict() { return GenericDict(c10::StringType::get(), c10::AnyType::get()); }

GenericDict worker_dict(const WorkerInFlight& w) {
  GenericDict out = new_dict();
  GenericDict modules = new_dict();
  for (const auto& [k, batches] : w.modules) {
    GenericList records(c10::AnyType::get());
    for (const BatchInFlight& b : batches) records.push_back(batch_dict(b));
    modules.insert(std::to_string(k), records);
  }
  out.insert("modules", modules);
  out.insert("targets", tensor_dict(w.targets));
  GenericList mailbox(c10::AnyType::get());
  for (const PendingMessage& m : w.mailbox) mailbox.push_back(message_dict(m, false));
  out.insert("mailbox", mailbox);
  GenericList sent(c10::AnyType::get());
  for (const PendingMessage& m : w.sent) sent.push_back(message_dict(m, true));
  out.insert("sent", sent);
  return out;
}

WorkerInFlight worker_of(const GenericDict& d) {
  WorkerInFlight w;
  for (const auto& item : d.at("modules").toGenericDict()) {
    std::vector<BatchInFlight>& batches = w.modules[std::stoll(item.key().toStringRef())];
    for (const c10::IValue& r : item.value().toListRef()) {
      batches.push_back(batch_of(r.toGenericDict()));
    }
  }
  w.targets = tensors_of(d.at("targets").toGenericDict());
  for (const c10::IValue& m : d.at("mailbox").toListRef()) {
    w.mailbox.push_back(message_of(m.toGenericDict(), false));
  }
  for (const c10::IValue& m : d.at("sent").toListRef()) {
    w.sent.push_back(message_of(m.toGenericDict(), true));
  }
  return w;
}

GenericDict pipeline_dict(const PipelineState& p) {
  GenericDict out = new_dict();
  if (!p.saved()) return out;
  out.insert("start", p.start);
  GenericList workers(c10::AnyType::get());
  for (const WorkerInFlight& w : p.workers) workers.push_back(worker_dict(w));
  out.insert("workers", workers);
  return out;
}

PipelineState pipeline_of(const GenericDict& d) {
  PipelineState p;
  if (!d.contains("workers")) return p;
  p.start = d.at("start").toInt();
  for (const c10::IValue& w : d.at("workers").toListRef()) {
    p.workers.push_back(worker_of(w.toGenericDict()));
  }
  return p;
}

}  // namespace ouroboros::checkpoint_detail
