// The sentencepiece module: training and encoding for the bpe and unigram tokenizers, built as a
// shared object of its own (libouroboros_subword.so) that links sentencepiece and never libtorch.
// libsentencepiece carries a private protobuf whose symbols clash with libtorch's libprotobuf in
// one symbol namespace (the program crashes before main), so the data layer loads this module
// with RTLD_LOCAL | RTLD_DEEPBIND (subword.cpp) and calls it through SubwordApi only.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "subword_detail.h"

namespace {

using ouroboros::detail::SubwordApi;

// The sentences, one at a time, as the trainer reads them.
class SentenceViews final : public sentencepiece::SentenceIterator {
 public:
  explicit SentenceViews(const std::vector<std::string_view>& sentences) : sentences_(sentences) {
    load();
  }
  bool done() const override { return next_ > sentences_.size(); }
  void Next() override { load(); }
  const std::string& value() const override { return current_; }
  sentencepiece::util::Status status() const override { return sentencepiece::util::Status(); }

 private:
  void load() {
    if (next_ < sentences_.size())
      current_.assign(sentences_[next_].data(), sentences_[next_].size());
    ++next_;
  }
  const std::vector<std::string_view>& sentences_;
  size_t next_ = 0;
  std::string current_;
};

std::string train(const std::string& model_type, int32_t vocab_size,
                  const std::vector<std::string_view>& sentences, std::string* proto) {
  // Every option that shapes the model is spelled out, so the result depends on the text and
  // vocab_size alone: one thread (the EM sums of unigram depend on the split between threads),
  // every sentence read in order (the caller bounds their number), no self-test sample.
  const std::unordered_map<std::string, std::string> options = {
      {"model_type", model_type},
      {"vocab_size", std::to_string(vocab_size)},
      {"num_threads", "1"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"self_test_sample_size", "0"},
      {"character_coverage", "0.9995"},
      {"max_sentence_length", "4192"},
      {"hard_vocab_limit", "true"},
      // Text is kept as it is, so decoding returns it byte for byte: no normalization, no
      // dummy space before the text, runs of spaces kept (a space is still written U+2581).
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"remove_extra_whitespaces", "false"},
      // Characters outside the vocabulary become their UTF-8 bytes, so every text encodes.
      {"byte_fallback", "true"},
      // The sentences are lines; a line end is a piece of its own.
      {"user_defined_symbols", "\n"},
      {"unk_id", "0"},
      {"bos_id", "-1"},
      {"eos_id", "-1"},
      {"pad_id", "-1"},
      {"minloglevel", "2"},  // training progress would flood the run's log
  };
  sentencepiece::SetRandomGeneratorSeed(1);  // nothing above samples; fixed all the same
  SentenceViews iterator(sentences);
  const sentencepiece::util::Status status =
      sentencepiece::SentencePieceTrainer::Train(options, &iterator, proto);
  return status.ok() ? std::string() : std::string(status.message());
}

void* load(const std::string& proto, std::string* error) {
  auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const sentencepiece::util::Status status = processor->LoadFromSerializedProto(proto);
  if (!status.ok()) {
    *error = status.message();
    return nullptr;
  }
  return processor.release();
}

void release(void* model) { delete static_cast<sentencepiece::SentencePieceProcessor*>(model); }

void pieces(const void* model, std::vector<std::string>* out, std::vector<int8_t>* types) {
  const auto& sp = *static_cast<const sentencepiece::SentencePieceProcessor*>(model);
  const int n = sp.GetPieceSize();
  out->clear();
  types->clear();
  for (int id = 0; id < n; ++id) {
    out->push_back(sp.IdToPiece(id));
    types->push_back(sp.IsByte(id)      ? ouroboros::detail::kPieceByte
                     : sp.IsUnknown(id) ? ouroboros::detail::kPieceUnknown
                     : sp.IsControl(id) ? ouroboros::detail::kPieceControl
                                        : ouroboros::detail::kPieceNormal);
  }
}

std::string encode(const void* model, std::string_view text, std::vector<int32_t>* ids) {
  const auto& sp = *static_cast<const sentencepiece::SentencePieceProcessor*>(model);
  std::vector<int> out;
  const sentencepiece::util::Status status = sp.Encode(text, &out);
  if (!status.ok()) return status.message();
  ids->insert(ids->end(), out.begin(), out.end());
  return "";
}

const SubwordApi kApi = {
    ouroboros::detail::kSubwordAbiVersion, train, load, release, pieces, encode};

}  // namespace

extern "C" __attribute__((visibility("default"))) const SubwordApi* ouroboros_subword_api() {
  return &kApi;
}
