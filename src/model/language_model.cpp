// What every model shares: the named weight set, dropout generators, and the model factory.
#include "ouroboros/model/language_model.h"

#include <stdexcept>

#include "ouroboros/core/errors.h"
#include "ouroboros/model/gpt.h"
#include "ouroboros/model/transformer_xl.h"

namespace ouroboros {

void ParamSet::add(const std::string& name, Tensor t) {
  if (contains(name)) throw Error("duplicate parameter " + name);
  index_[name] = names_.size();
  names_.push_back(name);
  tensors_.push_back(std::move(t));
}

size_t ParamSet::index(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("no parameter named " + name);
  return it->second;
}

const Tensor& ParamSet::at(const std::string& name) const { return tensors_[index(name)]; }

Tensor& ParamSet::at(const std::string& name) {
  return const_cast<Tensor&>(static_cast<const ParamSet&>(*this).at(name));
}

int64_t ParamSet::numel() const {
  int64_t n = 0;
  for (const auto& t : tensors_) n += t.numel();
  return n;
}

ParamSet ParamSet::subset(const std::vector<std::string>& names) const {
  ParamSet s;
  for (const auto& n : names) s.add(n, at(n));
  return s;
}

ParamSet ParamSet::snapshot() const {
  ParamSet s;
  for (size_t i = 0; i < names_.size(); ++i) {
    s.add(names_[i], tensors_[i].detach().clone().requires_grad_(true));
  }
  return s;
}

ParamSet ParamSet::to(const c10::Device& device) const {
  bool there = true;
  for (const auto& t : tensors_) there = there && t.device() == device;
  if (there) return *this;
  ParamSet s;
  for (size_t i = 0; i < names_.size(); ++i) {
    s.add(names_[i], tensors_[i].detach().to(device).requires_grad_(true));
  }
  return s;
}

Tensor on_device_of(const ParamSet& p, const Tensor& t) {
  if (!t.defined() || p.size() == 0) return t;
  return t.to(p.tensors().front().device());
}

Tensor dropout_mask(const Tensor& x, double keep, const c10::optional<at::Generator>& gen) {
  if (x.is_cpu()) return at::empty_like(x).bernoulli_(keep, gen);
  return at::empty_like(x, x.options().device(at::kCPU)).bernoulli_(keep, gen).to(x.device());
}

at::Generator make_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

std::unique_ptr<LanguageModel> make_model(const ModelConfig& cfg) {
  switch (cfg.model) {
    case ModelKind::kGpt:
      return std::make_unique<GPT>(cfg);
    case ModelKind::kTransformerXl:
      return std::make_unique<TransformerXL>(cfg);
  }
  throw std::logic_error("make_model: a model kind without a class");
}

}  // namespace ouroboros
